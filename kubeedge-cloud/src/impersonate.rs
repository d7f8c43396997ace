//! A kube client that acts as an edge node: every request carries `Impersonate-User:
//! system:node:<node>` and `Impersonate-Group: system:nodes`, so that the API server's Node
//! authorizer and NodeRestriction decide what the node's messages may do, as upstream's
//! `impersonationRoundTripper` arranges when `cloudHub.authorization` is on.

use http::HeaderValue;

use crate::certs::node_common_name;

/// `client`, acting as `node`. The embedded API server lets in-process callers impersonate; a
/// real cluster needs the `impersonate` permission on users and groups.
pub(crate) fn as_node(client: &kube::Client, node: &str) -> kube::Client {
    let user = HeaderValue::from_str(&node_common_name(node)).ok();
    let inner = client.clone();
    let svc = tower::service_fn(move |mut req: http::Request<kube::client::Body>| {
        if let Some(u) = &user {
            let h = req.headers_mut();
            h.insert("impersonate-user", u.clone());
            h.insert(
                "impersonate-group",
                HeaderValue::from_static("system:nodes"),
            );
        }
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    kube::Client::new(svc, client.default_namespace())
}
