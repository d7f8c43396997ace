//! Serving the Router: over TLS with cloudcore's certificate, each call authorized by the API
//! (upstream serves plain HTTP to anyone who reaches the port; [`RouterAuth::None`] keeps
//! that mode for compatibility).
//!
//! The right asked for is `create` on `rules/proxy` (group `rules.kubeedge.io`) named after
//! the Rule, in the Rule's namespace, as for `services/proxy`. A caller shows who it is with a
//! client certificate of the API's client CA (checked first, as kube-apiserver does): the
//! Router asks the API a SubjectAccessReview for that user and its groups. Or it sends
//! `Authorization: Bearer <token>` (a ServiceAccount token, or any token the API accepts): the
//! Router asks the API, with that token, a SelfSubjectAccessReview, so the API authenticates
//! the token and RBAC decides. A call another replica passes on (see `peer`) was authorized
//! there.

use std::sync::Arc;

use http::{Request, StatusCode};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::debug;

use super::{Caller, Router, RouterTls};

/// How the Router authenticates and authorizes its callers.
#[derive(Clone, Default)]
pub enum RouterAuth {
    /// Upstream's plain mode: no authentication, anyone who reaches the port may call.
    #[default]
    None,
    /// Bearer tokens, checked by the API at this address (its URL and CA; the credentials
    /// are replaced by each caller's token).
    Token(Box<kube::Config>),
}

impl std::fmt::Debug for RouterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(c) => write!(f, "Token({})", c.cluster_url),
        }
    }
}

/// Why a call is refused before it is routed.
pub(super) enum Refused {
    Unauthorized,
    Forbidden(String),
    Api(String),
}

impl Refused {
    pub(super) fn status(&self) -> (StatusCode, String) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized".into()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            Self::Api(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot authorize the call: {m}"),
            ),
        }
    }
}

/// Whether the caller (its certificate, else the token in `headers`) may call `rule` in
/// `namespace`; `client` is cloudcore's own, for reviews of certificate users.
pub(super) async fn authorize(
    auth: &RouterAuth,
    client: &kube::Client,
    caller: Option<&Caller>,
    headers: &http::HeaderMap,
    namespace: &str,
    rule: &str,
) -> Result<(), Refused> {
    let RouterAuth::Token(base) = auth else {
        return Ok(());
    };
    let attributes = ResourceAttributes {
        namespace: Some(namespace.to_owned()),
        verb: Some("create".into()),
        group: Some("rules.kubeedge.io".into()),
        resource: Some("rules".into()),
        subresource: Some("proxy".into()),
        name: Some(rule.to_owned()),
        ..Default::default()
    };
    let (status, who) = match caller {
        Some(Caller::Peer) if headers.contains_key(super::FORWARDED) => return Ok(()),
        Some(Caller::User { name, groups }) => {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    resource_attributes: Some(attributes),
                    user: Some(name.clone()),
                    groups: Some(groups.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = Api::<SubjectAccessReview>::all(client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| Refused::Api(e.to_string()))?;
            (
                answer.status.unwrap_or_default(),
                format!("User \"{name}\" "),
            )
        }
        _ => (
            token_review(base, headers, attributes).await?,
            String::new(),
        ),
    };
    if status.allowed {
        return Ok(());
    }
    let mut msg = format!("rules.rules.kubeedge.io \"{rule}\" is forbidden: {who}cannot create resource \"rules/proxy\" in API group \"rules.kubeedge.io\" in the namespace \"{namespace}\"");
    if let Some(r) = status.reason.filter(|r| !r.is_empty()) {
        msg = format!("{msg}: {r}");
    }
    Err(Refused::Forbidden(msg))
}

/// A SelfSubjectAccessReview for `attributes`, asked with the bearer token in `headers`.
async fn token_review(
    base: &kube::Config,
    headers: &http::HeaderMap,
    attributes: ResourceAttributes,
) -> Result<SubjectAccessReviewStatus, Refused> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Refused::Unauthorized)?;
    let mut config = base.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    let client = kube::Client::try_from(config).map_err(|e| Refused::Api(e.to_string()))?;
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 401 => Refused::Unauthorized,
            other => Refused::Api(other.to_string()),
        })?;
    Ok(answer.status.unwrap_or_default())
}

impl Router {
    /// Serves the Router on `listener` until `cancel`: over TLS with `tls` (cloudcore's
    /// certificate; each request carries its caller's [`Caller`], when its client certificate
    /// names one, in its extensions), or plain HTTP without.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<RouterTls>,
        cancel: CancellationToken,
    ) {
        let acceptor = tls
            .clone()
            .map(|t| tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)));
        let conns = tokio_util::task::TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                () = cancel.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "router accept failed");
                        continue;
                    }
                },
            };
            let (router, acceptor, cancel) = (self.clone(), acceptor.clone(), cancel.clone());
            let tls = tls.clone();
            conns.spawn(async move {
                let svc = |caller: Option<Caller>| {
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        if let Some(c) = &caller {
                            req.extensions_mut().insert(c.clone());
                        }
                        router.clone().oneshot(req)
                    })
                };
                let timeout = std::time::Duration::from_secs(30);
                let r = match acceptor {
                    Some(a) => match tokio::time::timeout(timeout, a.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let caller = tls
                                .as_ref()
                                .and_then(|t| t.caller(stream.get_ref().1.peer_certificates()));
                            crate::hub::serve_http1(stream, svc(caller), timeout, &cancel).await
                        }
                        _ => {
                            debug!(%peer, "router tls handshake failed");
                            return;
                        }
                    },
                    None => crate::hub::serve_http1(stream, svc(None), timeout, &cancel).await,
                };
                if let Err(e) = r {
                    debug!(%peer, error = %e, "router connection ended");
                }
            });
        }
        conns.close();
        conns.wait().await;
    }
}

/// `modules.router` of cloudcore.yaml, as the Router is started from it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterSettings {
    /// Where to listen (`address`:`port`, `0.0.0.0:9443` by default).
    pub listen: std::net::SocketAddr,
    /// `restTimeout` (60 s by default; upstream's fallback for zero too).
    pub rest_timeout: std::time::Duration,
    /// `insecure: true` (a kubeedge-rs key): serve plain HTTP to anyone, as upstream does.
    pub insecure: bool,
}

impl RouterSettings {
    /// The settings of an enabled `modules.router`; `None` when it is disabled (upstream's
    /// default).
    pub fn from_file(v: &serde_yaml::Value) -> Result<Option<Self>, crate::ControllerError> {
        let get = |k: &str| v.get(k);
        if !get("enable")
            .and_then(serde_yaml::Value::as_bool)
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let address = get("address")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("0.0.0.0");
        let port = get("port")
            .and_then(serde_yaml::Value::as_u64)
            .filter(|p| *p > 0)
            .unwrap_or(9443);
        let port = u16::try_from(port).map_err(|_| {
            crate::ControllerError::Config(format!("modules.router.port {port} is out of range"))
        })?;
        let ip: std::net::IpAddr = address.parse().map_err(|_| {
            crate::ControllerError::Config(format!(
                "modules.router.address {address:?} is not an IP address"
            ))
        })?;
        let secs = get("restTimeout")
            .and_then(serde_yaml::Value::as_u64)
            .filter(|s| *s > 0)
            .unwrap_or(60);
        Ok(Some(Self {
            listen: std::net::SocketAddr::new(ip, port),
            rest_timeout: std::time::Duration::from_secs(secs),
            insecure: get("insecure")
                .and_then(serde_yaml::Value::as_bool)
                .unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_settings_follow_upstream_defaults() {
        let off: serde_yaml::Value =
            serde_yaml::from_str("enable: false\naddress: 0.0.0.0\nport: 9443").expect("yaml");
        assert_eq!(RouterSettings::from_file(&off).expect("ok"), None);
        let on: serde_yaml::Value =
            serde_yaml::from_str("enable: true\nport: 0\nrestTimeout: 0").expect("yaml");
        let s = RouterSettings::from_file(&on)
            .expect("ok")
            .expect("enabled");
        assert_eq!(s.listen, "0.0.0.0:9443".parse().expect("addr"));
        assert_eq!(s.rest_timeout, std::time::Duration::from_secs(60));
        assert!(!s.insecure);
        let bad: serde_yaml::Value =
            serde_yaml::from_str("enable: true\naddress: nowhere").expect("yaml");
        assert!(RouterSettings::from_file(&bad).is_err());
    }
}
