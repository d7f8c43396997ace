//! Golden tests over every file in testdata/captures: real traffic between upstream KubeEdge
//! v1.12.1, v1.15.4 and v1.22.2 binaries.

mod common;

use std::collections::{HashMap, HashSet};

use base64::Engine;
use common::{all, compat_of, Dir, WsMessage};
use kubeedge_proto::api::{v1alpha2, v1beta1};
use kubeedge_proto::test_util::go_compact;
use kubeedge_proto::twin::{
    DeviceStateResult, MembershipDetailRequest, MembershipUpdate, TwinUpdate,
};
use kubeedge_proto::{
    ack_mode, ca_hash, AckMode, Content, FrameKind, Group, HubCodec, JoinToken, Jwt, Message,
    Operation, ResourceKind, ResourcePath, ResourceType, Source, TokenError, DEFAULT_PROJECT_ID,
};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

fn decode(m: &WsMessage) -> Message {
    HubCodec::default()
        .decode(FrameKind::Text, m.json.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}: {:?}", m.file, e))
}

/// The keys of a JSON object in document order.
fn keys_in_order(json: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                out.push(k);
            }
            Ok(out)
        }
        fn visit_unit<E>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    (&mut de).deserialize_any(Keys).expect("object")
}

fn member(json: &str, key: &str) -> String {
    let v: HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(json).expect("object");
    v.get(key)
        .map(|r| r.get().to_owned())
        .unwrap_or_else(|| "null".into())
}

#[test]
fn every_capture_file_is_covered() {
    let files = all();
    assert!(
        files.len() >= 70,
        "expected every capture file, found {}",
        files.len()
    );
    for f in &files {
        assert!(
            !f.ws.is_empty() || !f.http.is_empty() || f.handshake,
            "{} yielded nothing to check",
            f.name
        );
    }
    let total: usize = files.iter().map(|f| f.ws.len()).sum();
    assert!(total > 300, "only {total} websocket messages found");
}

#[test]
fn every_ws_message_decodes_and_reencodes_byte_exact() {
    let codec = HubCodec::default();
    let mut checked_length = 0;
    for m in all().iter().flat_map(|f| f.ws.iter()) {
        // As stored (pretty-printed in curated files): decode, and re-encode to equal JSON.
        let msg = decode(m);
        let reencoded = codec.encode(&msg).expect("encode");
        let a: Value = serde_json::from_str(&m.json).expect("capture json");
        let b: Value = serde_json::from_slice(&reencoded).expect("our json");
        assert_eq!(a, b, "{}: re-encoding changed the JSON", m.file);
        // Same keys in the same (Go) order at every level we own.
        let ours = String::from_utf8(reencoded.clone()).expect("utf8");
        assert_eq!(keys_in_order(&m.json), keys_in_order(&ours), "{}", m.file);
        for part in ["header", "route"] {
            assert_eq!(
                keys_in_order(&member(&m.json, part)),
                keys_in_order(&member(&ours, part)),
                "{}: {part} key order",
                m.file
            );
        }
        // Content typing: a string stays a string, an object stays an object.
        assert_eq!(
            a["content"].is_string(),
            msg.content.is_string(),
            "{}: content typing",
            m.file
        );

        // As Go wrote it on the socket: compact JSON plus a newline. Our encoding of the
        // decoded message must be byte-identical, and as long as the recorded frame.
        let wire = format!("{}\n", go_compact(&m.json));
        let from_wire = codec
            .decode(FrameKind::Text, wire.as_bytes())
            .expect("wire decode");
        assert_eq!(from_wire.header, msg.header, "{}", m.file);
        assert_eq!(from_wire.route, msg.route, "{}", m.file);
        assert_eq!(
            String::from_utf8(codec.encode(&from_wire).expect("encode")).expect("utf8"),
            wire,
            "{}: not byte-exact",
            m.file
        );
        if let Some(len) = m.length {
            assert_eq!(
                wire.len(),
                len,
                "{}: frame length differs from upstream's",
                m.file
            );
            checked_length += 1;
        }
        assert!(
            matches!(m.opcode.as_deref(), None | Some("text")),
            "{}: opcode",
            m.file
        );
        // Binary frames carry the same JSON and are accepted too.
        assert_eq!(
            codec
                .decode(FrameKind::Binary, wire.as_bytes())
                .expect("binary"),
            from_wire
        );
    }
    assert!(
        checked_length > 300,
        "frame lengths checked: {checked_length}"
    );
}

#[test]
fn routes_and_resources_classify_as_upstream() {
    for f in all() {
        for m in &f.ws {
            let msg = decode(m);
            let r = &msg.route;
            if let Some(s) = &r.source {
                assert!(
                    !matches!(s, Source::Unknown(_)),
                    "{}: unknown source {s}",
                    m.file
                );
            }
            if let Some(g) = &r.group {
                assert!(
                    !matches!(g, Group::Unknown(_)),
                    "{}: unknown group {g}",
                    m.file
                );
            }
            if let Some(op) = &r.operation {
                // MetaServer Application requests use the literal operation "null".
                assert!(
                    !matches!(op, Operation::Unknown(o) if o != "null"),
                    "{}: unknown operation {op}",
                    m.file
                );
            }
            let path = ResourcePath::parse(&r.resource);
            assert_eq!(
                path.to_string(),
                r.resource,
                "{}: resource round trip",
                m.file
            );
            assert_eq!(
                path.node(),
                None,
                "{}: the wire carries edge views only",
                m.file
            );
            let cloud = path.to_cloud_view("edge-node-1").expect("cloud view");
            assert_eq!(
                cloud.to_string(),
                format!("node/edge-node-1/{}", r.resource)
            );
            assert_eq!(cloud.target_node().as_deref(), Some("edge-node-1"));
            assert_eq!(cloud.to_edge_view(), path);

            // What each captured resource is, as upstream's parsers read it.
            match (r.source_str(), r.operation_str()) {
                ("websocket", "keepalive") => {
                    assert_eq!(path.kind(), &ResourceKind::Other("node".into()))
                }
                ("metaserver", _) => assert_eq!(path.kind(), &ResourceKind::Other("null".into())),
                ("dynamiccontroller", "applicationResponse") => {
                    assert_eq!(
                        path.resource_type(),
                        Some(&ResourceType::Unknown("Application".into()))
                    )
                }
                ("twin", "get") => assert_eq!(path.kind(), &ResourceKind::MembershipDetail),
                ("twin", "update") => assert!(path.device().is_some(), "{}", m.file),
                ("devicecontroller", "update") if r.group == Some(Group::Twin) => assert!(
                    matches!(
                        path.kind(),
                        ResourceKind::Membership | ResourceKind::DeviceTwin { .. }
                    ),
                    "{}",
                    m.file
                ),
                ("devicecontroller", "response") if m.dir == Dir::CloudToEdge => {
                    assert_eq!(path.kind(), &ResourceKind::Twin)
                }
                ("", "") => assert_eq!(r.resource, ""),
                _ => assert!(
                    matches!(
                        path.resource_type(),
                        Some(
                            ResourceType::Pod
                                | ResourceType::ConfigMap
                                | ResourceType::Secret
                                | ResourceType::Device
                                | ResourceType::DeviceModel
                        )
                    ),
                    "{}: {:?}",
                    m.file,
                    r
                ),
            }
        }
    }
}

#[test]
fn ack_mode_matches_what_upstream_edges_acked() {
    let mut classified = 0;
    for f in all() {
        let compat = compat_of(&f.version);
        let msgs: Vec<(Dir, String, Message)> =
            f.ws.iter()
                .map(|m| (m.dir, m.conn.clone(), decode(m)))
                .collect();
        let acked: HashSet<String> = msgs
            .iter()
            .filter(|(d, _, m)| *d == Dir::EdgeToCloud && m.is_ok_response())
            .filter_map(|(_, _, m)| m.parent_id().map(|p| p.to_string()))
            .collect();
        let pushed: HashMap<String, &Message> = msgs
            .iter()
            .filter(|(d, _, _)| *d == Dir::CloudToEdge)
            .map(|(_, _, m)| (m.id().to_string(), m))
            .collect();
        for (dir, _, m) in &msgs {
            if *dir == Dir::CloudToEdge && pushed.contains_key(m.id().as_str()) {
                let expect = if acked.contains(m.id().as_str()) {
                    AckMode::Ack
                } else {
                    AckMode::NoAck
                };
                assert_eq!(
                    ack_mode(m, compat),
                    expect,
                    "{} ({:?}): {:?}",
                    f.name,
                    compat,
                    m.route
                );
                classified += 1;
            }
            // Our ack for a push is the ack the upstream edge sent, except ids and time.
            if *dir == Dir::EdgeToCloud && m.is_ok_response() {
                let Some(push) = m.parent_id().and_then(|p| pushed.get(p.as_str())) else {
                    continue;
                };
                let ours = push.ack();
                assert_eq!(ours.route, m.route, "{}: ack route", f.name);
                assert_eq!(ours.content, m.content, "{}: ack content", f.name);
                assert_eq!(ours.parent_id(), Some(push.id()));
                assert_eq!(ours.header.resource_version, m.header.resource_version);
            }
        }
    }
    assert!(classified > 80, "classified {classified}");
}

#[test]
fn twin_and_device_payloads_round_trip_typed() {
    fn same<T: serde::de::DeserializeOwned + serde::Serialize>(content: &Content, file: &str) {
        let typed: T = content.decode().unwrap_or_else(|e| panic!("{file}: {e}"));
        let back = serde_json::to_value(&typed).expect("encode");
        let orig: Value = serde_json::from_slice(&content.bytes()).expect("json");
        assert_eq!(back, orig, "{file}: {}", std::any::type_name::<T>());
    }
    let mut n = 0;
    for m in all().iter().flat_map(|f| f.ws.iter()) {
        let msg = decode(m);
        let path = ResourcePath::parse(&msg.route.resource);
        match (path.kind(), msg.route.operation_str()) {
            (ResourceKind::Membership, _) => same::<MembershipUpdate>(&msg.content, &m.file),
            (ResourceKind::MembershipDetail, _) => {
                assert!(msg.content.is_string());
                same::<MembershipDetailRequest>(&msg.content, &m.file)
            }
            (ResourceKind::DeviceTwin { .. }, _) => same::<TwinUpdate>(&msg.content, &m.file),
            (ResourceKind::DeviceState { .. }, _) => {
                assert!(
                    msg.content.is_string(),
                    "{}: state content is a string",
                    m.file
                );
                same::<DeviceStateResult>(&msg.content, &m.file)
            }
            (
                ResourceKind::Object {
                    resource_type: ResourceType::Device,
                    ..
                },
                "insert" | "update",
            ) => {
                let api: Value = msg.content.decode().expect("json");
                if api["apiVersion"] == "devices.kubeedge.io/v1beta1" {
                    same::<v1beta1::Device>(&msg.content, &m.file)
                } else {
                    same::<v1alpha2::Device>(&msg.content, &m.file)
                }
            }
            (
                ResourceKind::Object {
                    resource_type: ResourceType::DeviceModel,
                    ..
                },
                "insert" | "update",
            ) => {
                let api: Value = msg.content.decode().expect("json");
                if api["apiVersion"] == "devices.kubeedge.io/v1beta1" {
                    same::<v1beta1::DeviceModel>(&msg.content, &m.file)
                } else {
                    same::<v1alpha2::DeviceModel>(&msg.content, &m.file)
                }
            }
            _ => continue,
        }
        n += 1;
    }
    assert!(n > 30, "typed payloads checked: {n}");
}

#[test]
fn v1alpha2_device_target_node() {
    let f = common::load(&common::captures_dir().join("v1.12.1/19-device-insert-downstream.json"));
    let d: v1alpha2::Device = decode(&f.ws[0]).content.decode().expect("device");
    assert_eq!(d.spec.node_name(), Some("edge-node-1"));
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn bootstrap_ca_csr_cert_and_token() {
    use x509_parser::prelude::*;
    let mut versions = 0;
    for f in all()
        .iter()
        .filter(|f| f.name.ends_with("01-https-get-ca.json"))
    {
        let ca_der = b64(f
            .http
            .iter()
            .find_map(|h| h.payload_b64.as_deref())
            .expect("ca body"));
        let (_, ca) = parse_x509_certificate(&ca_der).expect("ca parses");
        assert!(ca.is_ca(), "{}", f.name);
        assert_eq!(
            ca.subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok()),
            Some("KubeEdge")
        );
        ca.verify_signature(None).expect("self-signed");

        let crt = common::load(
            &common::captures_dir()
                .join(f.name.replace("01-https-get-ca", "02-https-get-edge-crt")),
        );
        let req = crt
            .http
            .iter()
            .find(|h| h.start_line.as_deref() == Some("GET /edge.crt HTTP/1.1"))
            .expect("request");
        let header = |k: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let node = header("NodeName").expect("NodeName header");
        let bodies: Vec<Vec<u8>> = crt
            .http
            .iter()
            .filter_map(|h| h.payload_b64.as_deref())
            .map(b64)
            .collect();
        assert_eq!(bodies.len(), 2, "{}", crt.name);

        // The CSR (request body) parses and is self-consistent.
        let (_, csr) = X509CertificationRequest::from_der(&bodies[0]).expect("csr parses");
        csr.verify_signature().expect("csr signature");
        let csr_cn = csr
            .certification_request_info
            .subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_owned);
        assert!(
            csr_cn.as_deref() == Some("kubeedge.io")
                || csr_cn == Some(format!("system:node:{node}")),
            "{}: csr cn {csr_cn:?}",
            crt.name
        );

        // The signed certificate chains to the captured CA and is a client certificate.
        let (_, cert) = parse_x509_certificate(&bodies[1]).expect("cert parses");
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the captured ca");
        // Upstream copies CN and O from the CSR subject.
        let cn_o = |n: &X509Name<'_>| {
            (
                n.iter_common_name()
                    .next()
                    .and_then(|c| c.as_str().ok())
                    .map(str::to_owned),
                n.iter_organization()
                    .next()
                    .and_then(|c| c.as_str().ok())
                    .map(str::to_owned),
            )
        };
        assert_eq!(
            cn_o(cert.subject()),
            cn_o(&csr.certification_request_info.subject)
        );
        let eku = cert.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth);

        // The bearer JWT from the capture + the captured CA's hash form a valid join token.
        let auth = header("Authorization").expect("Authorization");
        let jwt_text = auth.strip_prefix("Bearer ").expect("bearer");
        let token: JoinToken = format!("{}.{jwt_text}", ca_hash(&ca_der))
            .parse()
            .expect("token parses");
        token.verify_ca(&ca_der).expect("ca hash matches");
        assert!(matches!(
            token.verify_ca(&bodies[1]),
            Err(TokenError::CaHashMismatch { .. })
        ));
        let jwt: Jwt = jwt_text.parse().expect("jwt");
        let claims = jwt.unverified_claims().expect("HS256 with exp");
        // exp = issue time + 2 x tokenRefreshDuration (12 h): one day after the capture.
        let not_before = cert.validity().not_before.timestamp();
        let lifetime = claims.exp - not_before;
        assert!(
            (0..=2 * 24 * 3600).contains(&lifetime),
            "{}: exp {} vs {}",
            f.name,
            claims.exp,
            not_before
        );
        // The CA key is not in the capture: any other key must fail on the signature, not
        // on parsing, which proves the token is well-formed HS256.
        assert_eq!(
            jwt.verify(b"not the ca key", claims.exp - 1),
            Err(TokenError::Signature)
        );
        versions += 1;
    }
    assert_eq!(versions, 3);
}

#[test]
fn websocket_handshakes_carry_node_and_project() {
    let mut n = 0;
    for f in all() {
        for h in f.http.iter().filter(|h| {
            h.start_line
                .as_deref()
                .is_some_and(|l| l.ends_with("/events HTTP/1.1"))
        }) {
            let get = |k: &str| {
                h.headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.as_str())
            };
            let node = get("node_id").expect("node_id");
            assert_eq!(get("project_id"), Some(DEFAULT_PROJECT_ID));
            assert_eq!(get("connectionuse"), Some("msg"));
            assert_eq!(
                h.start_line.as_deref(),
                Some(format!("GET /{DEFAULT_PROJECT_ID}/{node}/events HTTP/1.1").as_str())
            );
            n += 1;
        }
    }
    assert!(n >= 6, "handshakes: {n}");
}

/// The vendored copy must stay identical to the shared spec when that is present.
#[test]
fn vendored_captures_match_the_shared_spec() {
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/captures");
    if !shared.is_dir() {
        return;
    }
    for f in common::capture_files() {
        let rel = f.strip_prefix(common::captures_dir()).expect("prefix");
        let theirs = std::fs::read(shared.join(rel))
            .unwrap_or_else(|_| panic!("{} missing upstream", rel.display()));
        assert_eq!(
            std::fs::read(&f).expect("read"),
            theirs,
            "{} differs",
            rel.display()
        );
    }
}

#[test]
fn applications_round_trip_byte_exact_with_upstream_ids() {
    use kubeedge_proto::{Application, ApplicationStatus, ApplicationVerb, PatchInfo};
    let mut seen = HashSet::new();
    for f in all() {
        for m in &f.ws {
            let msg = decode(m);
            let is_app = msg.route.source == Some(Source::MetaServer)
                || msg.route.operation == Some(Operation::ApplicationResponse);
            if !is_app {
                continue;
            }
            let raw = msg.content.raw_json().to_owned();
            let app: Application = msg
                .content
                .decode()
                .unwrap_or_else(|e| panic!("{}: {e}", m.file));
            let again = serde_json::to_string(&app).expect("encode");
            assert_eq!(again, go_compact(&raw), "{}", m.file);
            assert_eq!(app.identifier(), app.id, "{}: upstream id", m.file);
            app.parsed_key()
                .unwrap_or_else(|e| panic!("{}: {e}", m.file));
            match m.dir {
                Dir::EdgeToCloud => assert_eq!(app.status, ApplicationStatus::InApplying),
                Dir::CloudToEdge => assert_eq!(app.status, ApplicationStatus::Approved),
            }
            if app.verb == ApplicationVerb::Patch {
                let p: PatchInfo = app.option_json().expect("patch info").expect("some");
                assert!(p.data.is_some(), "{}", m.file);
            }
            seen.insert((m.version.clone(), app.timestamp.is_some()));
        }
    }
    assert!(seen.contains(&("v1.12.1".to_owned(), false)), "{seen:?}");
    assert!(seen.contains(&("v1.22.2".to_owned(), true)), "{seen:?}");
}
