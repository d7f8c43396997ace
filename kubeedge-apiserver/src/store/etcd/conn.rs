//! The etcd connection: TLS settings, retrying a request that never reached a member, and
//! how etcd's failures are answered.

use std::time::Duration;

use crate::error::StoreError;

/// TLS to etcd: the CA that signed the members' certificates and, for clusters that ask for
/// one (`--client-cert-auth`), a client certificate and its key. All PEM.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdTls {
    /// The CA (`--etcd-cafile`).
    pub ca_pem: Vec<u8>,
    /// The client certificate and key (`--etcd-certfile`, `--etcd-keyfile`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_cert", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Members signed by the CA `ca_pem`; no client certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            client: None,
        }
    }

    /// Also present this client certificate (PEM) with its key (PEM).
    pub fn with_client(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    pub(super) fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        tls
    }
}

/// Whether a failed request never reached a member (its connection could not be made), so
/// that trying it again, on another member, is safe even for a write.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                && (s.message().contains("connect error")
                    || s.message().contains("error trying to connect"))
        }
        _ => false,
    }
}

/// Runs `call` again (a few times, within about 0.3 s) while it fails without reaching a
/// member: the client's balancer then picks another one, as Go's clientv3 retries on another
/// endpoint, so that a dead member is not seen by the API's clients.
pub(super) async fn unsent_retried<T, F, Fut>(mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut pause = Duration::from_millis(20);
    for _ in 0..4 {
        match call().await {
            Err(e) if never_sent(&e) => {
                tracing::debug!(error = %e, "etcd request not sent; trying another member");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    call().await
}

/// An etcd failure as the API answers it: 503 while etcd cannot serve (no leader, quorum lost,
/// no member reachable), so that clients retry; 500 otherwise.
pub(super) fn etcd(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match &e {
        E::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) =>
        {
            StoreError::Unavailable(format!("etcd cannot serve the request: {}", s.message()))
        }
        E::TransportError(_) | E::IoError(_) => {
            StoreError::Unavailable(format!("etcd is unreachable: {e}"))
        }
        _ => StoreError::Etcd(Box::new(e)),
    }
}
