//! [`ClusterDns`]: the cluster's DNS zone on the node, answered from the [`Catalog`], and every
//! other name forwarded to the node's own resolvers.
//!
//! It is what upstream edgemesh-agent's EdgeDNS (a CoreDNS) serves on `edgemesh0`
//! (169.254.96.16:53), the address edge pods get as `clusterDNS`: answers come from the
//! node's store, so they keep coming with the cloud offline, and a name the zone does not have
//! is NXDOMAIN at once (with the zone's SOA, so that resolvers cache the miss). UDP and TCP are
//! served by hickory-server; a malformed packet gets FORMERR or nothing, never a crash.

mod answer;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::catalog::Catalog;
use crate::error::MeshError;
use answer::Outcome;

/// The address upstream edgemesh serves DNS on, on its `edgemesh0` interface.
pub const MESH_DNS_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 96, 16);

/// How long a forwarded query waits for one upstream resolver before trying the next.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster DNS: a hickory-server request handler.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    catalog: Catalog,
    zone: Name,
    upstreams: Vec<SocketAddr>,
}

impl ClusterDns {
    /// Answers `zone` (the cluster domain, `cluster.local`) from `catalog` and forwards other
    /// names to `upstreams` (tried in order).
    pub fn new(
        catalog: Catalog,
        zone: &str,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Self, MeshError> {
        let zone = Name::from_ascii(format!("{}.", zone.trim_end_matches('.')))
            .map_err(|e| MeshError::Config(format!("cluster domain {zone:?}: {e}")))?
            .to_lowercase();
        Ok(Self {
            catalog,
            zone,
            upstreams,
        })
    }

    /// Serves queries on `udp` and `tcp` until `cancel`.
    pub async fn serve(
        self,
        udp: UdpSocket,
        tcp: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), MeshError> {
        let mut server = Server::new(self);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        let stop = server.shutdown_token().clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        });
        server
            .block_until_done()
            .await
            .map_err(|e| MeshError::Io(std::io::Error::other(e.to_string())))
    }

    /// Asks the upstream resolvers, in order, and returns the first answer.
    async fn forward(&self, request: &Request) -> Option<Message> {
        for upstream in &self.upstreams {
            match forward_one(*upstream, request.as_slice(), request.metadata.id).await {
                Ok(m) => return Some(m),
                Err(e) => debug!(%upstream, error = %e, "upstream resolver did not answer"),
            }
        }
        None
    }
}

async fn forward_one(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        // A datagram that is not the answer to this query (a stray, a spoof) is skipped.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id {
                return Ok(m);
            }
        }
    }
}

/// The failure answer for a request that could not be handled.
fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .into()
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let refusal = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => Ok(info),
            Ok(_) => Err(ResponseCode::NotImp),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let info = match refusal {
            Ok(info) => info,
            Err(code) => {
                let msg = builder.error_msg(&request.metadata, code);
                return response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request, code));
            }
        };
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e
        });
        let mut builder = builder;
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let qname = Name::from(info.query.name());
        let snapshot = self.catalog.snapshot();
        let outcome = answer::resolve(&snapshot, &self.zone, &qname, info.query.query_type());
        let (answers, authorities, additionals): (Vec<Record>, Vec<Record>, Vec<Record>) =
            match outcome {
                Outcome::Records {
                    answers,
                    additionals,
                } => {
                    metadata.authoritative = true;
                    let soa = if answers.is_empty() {
                        vec![answer::soa(&self.zone)]
                    } else {
                        Vec::new()
                    };
                    (answers, soa, additionals)
                }
                Outcome::NxDomain => {
                    metadata.authoritative = true;
                    metadata.response_code = ResponseCode::NXDomain;
                    (Vec::new(), vec![answer::soa(&self.zone)], Vec::new())
                }
                Outcome::Forward => match self.forward(request).await {
                    Some(m) => {
                        metadata.response_code = m.metadata.response_code;
                        metadata.authoritative = m.metadata.authoritative;
                        metadata.truncation = m.metadata.truncation;
                        (m.answers, m.authorities, m.additionals)
                    }
                    None => {
                        metadata.response_code = ResponseCode::ServFail;
                        (Vec::new(), Vec::new(), Vec::new())
                    }
                },
            };
        let msg = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                debug!(error = %e, "DNS answer not sent");
                failed(request, ResponseCode::ServFail)
            }
        }
    }
}

/// The `nameserver` addresses of a resolv.conf (port 53), leaving out `skip` (the mesh's own
/// address, which would loop).
pub fn upstreams_from(resolv_conf: &Path, skip: &[std::net::IpAddr]) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(resolv_conf) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<std::net::IpAddr>().ok()
        })
        .filter(|ip| !skip.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
