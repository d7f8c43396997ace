//! Built without the feature `embedded`: cloudcore runs against a cluster only.

use anyhow::bail;
use kubeedge_cloud::config::CloudCoreFile;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Args;

/// Never made: there is no embedded cluster in this build.
#[derive(Debug, Clone)]
pub(crate) enum Embedded {}

/// Refuses: this build has no embedded API server or control plane.
pub(crate) async fn start(
    _args: &Args,
    _file: &CloudCoreFile,
    _stream: &kubeedge_cloud::stream::CloudStream,
    _registry: &mut prometheus_client::registry::Registry,
    _tracker: &TaskTracker,
    _cancel: CancellationToken,
) -> anyhow::Result<(kube::Client, Embedded)> {
    bail!(
        "this cloudcore was built without the embedded cluster (cargo feature `embedded`): \
         set kubeAPIConfig.kubeConfig or kubeAPIConfig.master in cloudcore.yaml"
    )
}

/// Nothing to start.
pub(crate) fn start_control_plane(
    _client: kube::Client,
    embedded: &Embedded,
    _tracker: &TaskTracker,
    _cancel: CancellationToken,
) {
    match *embedded {}
}
