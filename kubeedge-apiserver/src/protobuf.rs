//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for `kubectl create <kind>` and `kubectl expose`.
//!
//! The body is the `k8s\0` magic followed by a `runtime.Unknown` message: the type meta and the
//! object's own protobuf bytes. The object is decoded with a field table per message type
//! (field number → JSON name and type, from the published `generated.proto` schemas) into the
//! same JSON the JSON path produces. Only the kinds and fields listed here are known: a body
//! with any other kind or field is refused (415) rather than stored with data missing.

use base64::Engine;
use serde_json::{Map, Value};

/// Why a protobuf body cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error("protobuf body without the k8s envelope")]
    NoEnvelope,
    #[error("malformed protobuf in {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies of {0} are not supported; send json")]
    UnknownKind(String),
    #[error("protobuf field {field} of {message} is not supported; send json")]
    UnknownField { message: &'static str, field: u32 },
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// A non-pointer integer: zero is Go's "unset" and is left out, as JSON's omitempty does.
    Int,
    /// A pointer integer (`*int32`): present means set, zero included.
    OptInt,
    Bool,
    Msg(&'static Msg),
    RepStr,
    RepMsg(&'static Msg),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrStr,
}

struct Msg {
    name: &'static str,
    fields: &'static [(u32, &'static str, Kind)],
}

use Kind::*;

macro_rules! msg {
    ($id:ident, $name:literal, [$( ($n:literal, $json:literal, $kind:expr) ),* $(,)?]) => {
        static $id: Msg = Msg { name: $name, fields: &[ $( ($n, $json, $kind) ),* ] };
    };
}

msg!(
    OBJECT_META,
    "ObjectMeta",
    [
        (1, "name", Str),
        (2, "generateName", Str),
        (3, "namespace", Str),
        (5, "uid", Str),
        (6, "resourceVersion", Str),
        (7, "generation", Int),
        (8, "creationTimestamp", Time),
        (9, "deletionTimestamp", Time),
        (10, "deletionGracePeriodSeconds", OptInt),
        (11, "labels", MapStr),
        (12, "annotations", MapStr),
        (13, "ownerReferences", RepMsg(&OWNER_REFERENCE)),
        (14, "finalizers", RepStr),
    ]
);
msg!(
    OWNER_REFERENCE,
    "OwnerReference",
    [
        (1, "kind", Str),
        (3, "name", Str),
        (4, "uid", Str),
        (5, "apiVersion", Str),
        (6, "controller", Bool),
        (7, "blockOwnerDeletion", Bool),
    ]
);
msg!(
    LABEL_SELECTOR,
    "LabelSelector",
    [
        (1, "matchLabels", MapStr),
        (2, "matchExpressions", RepMsg(&LABEL_SELECTOR_REQ))
    ]
);
msg!(
    LABEL_SELECTOR_REQ,
    "LabelSelectorRequirement",
    [(1, "key", Str), (2, "operator", Str), (3, "values", RepStr)]
);
msg!(EMPTY, "status", []);
msg!(
    NAMESPACE,
    "Namespace",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&NAMESPACE_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(NAMESPACE_SPEC, "NamespaceSpec", [(1, "finalizers", RepStr)]);
msg!(
    CONFIG_MAP,
    "ConfigMap",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "data", MapStr),
        (3, "binaryData", MapBytes),
        (4, "immutable", Bool)
    ]
);
msg!(
    SECRET,
    "Secret",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "data", MapBytes),
        (3, "type", Str),
        (4, "stringData", MapStr),
        (5, "immutable", Bool),
    ]
);
msg!(
    LOCAL_OBJECT_REFERENCE,
    "LocalObjectReference",
    [(1, "name", Str)]
);
msg!(
    OBJECT_REFERENCE,
    "ObjectReference",
    [
        (1, "kind", Str),
        (2, "namespace", Str),
        (3, "name", Str),
        (4, "uid", Str),
        (5, "apiVersion", Str),
        (6, "resourceVersion", Str),
        (7, "fieldPath", Str),
    ]
);
msg!(
    SERVICE_ACCOUNT,
    "ServiceAccount",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "secrets", RepMsg(&OBJECT_REFERENCE)),
        (3, "imagePullSecrets", RepMsg(&LOCAL_OBJECT_REFERENCE)),
        (4, "automountServiceAccountToken", Bool),
    ]
);
msg!(
    SERVICE,
    "Service",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&SERVICE_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(
    SERVICE_SPEC,
    "ServiceSpec",
    [
        (1, "ports", RepMsg(&SERVICE_PORT)),
        (2, "selector", MapStr),
        (3, "clusterIP", Str),
        (4, "type", Str),
        (5, "externalIPs", RepStr),
        (7, "sessionAffinity", Str),
        (10, "externalName", Str),
        (11, "externalTrafficPolicy", Str),
        (18, "clusterIPs", RepStr),
        (19, "ipFamilies", RepStr),
        (17, "ipFamilyPolicy", Str),
        (22, "internalTrafficPolicy", Str),
    ]
);
msg!(
    SERVICE_PORT,
    "ServicePort",
    [
        (1, "name", Str),
        (2, "protocol", Str),
        (3, "port", Int),
        (4, "targetPort", IntOrStr),
        (5, "nodePort", Int),
        (6, "appProtocol", Str),
    ]
);
msg!(
    DEPLOYMENT,
    "Deployment",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&DEPLOYMENT_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(
    DEPLOYMENT_SPEC,
    "DeploymentSpec",
    [
        (1, "replicas", OptInt),
        (2, "selector", Msg(&LABEL_SELECTOR)),
        (3, "template", Msg(&POD_TEMPLATE_SPEC)),
        (4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        (5, "minReadySeconds", Int),
        (6, "revisionHistoryLimit", OptInt),
        (7, "paused", Bool),
        (9, "progressDeadlineSeconds", OptInt),
    ]
);
msg!(
    DEPLOYMENT_STRATEGY,
    "DeploymentStrategy",
    [(1, "type", Str), (2, "rollingUpdate", Msg(&ROLLING_UPDATE))]
);
msg!(
    ROLLING_UPDATE,
    "RollingUpdateDeployment",
    [(1, "maxUnavailable", IntOrStr), (2, "maxSurge", IntOrStr)]
);
msg!(
    POD_TEMPLATE_SPEC,
    "PodTemplateSpec",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&POD_SPEC))
    ]
);
msg!(
    POD_SPEC,
    "PodSpec",
    [
        (2, "containers", RepMsg(&CONTAINER)),
        (20, "initContainers", RepMsg(&CONTAINER)),
        (3, "restartPolicy", Str),
        (4, "terminationGracePeriodSeconds", OptInt),
        (6, "dnsPolicy", Str),
        (7, "nodeSelector", MapStr),
        (8, "serviceAccountName", Str),
        (10, "nodeName", Str),
        (11, "hostNetwork", Bool),
        (15, "imagePullSecrets", RepMsg(&LOCAL_OBJECT_REFERENCE)),
        (19, "schedulerName", Str),
    ]
);
msg!(
    CONTAINER,
    "Container",
    [
        (1, "name", Str),
        (2, "image", Str),
        (3, "command", RepStr),
        (4, "args", RepStr),
        (5, "workingDir", Str),
        (6, "ports", RepMsg(&CONTAINER_PORT)),
        (7, "env", RepMsg(&ENV_VAR)),
        (8, "resources", Msg(&RESOURCES)),
        (13, "terminationMessagePath", Str),
        (14, "imagePullPolicy", Str),
        (16, "stdin", Bool),
        (17, "stdinOnce", Bool),
        (18, "tty", Bool),
        (20, "terminationMessagePolicy", Str),
    ]
);
msg!(
    CONTAINER_PORT,
    "ContainerPort",
    [
        (1, "name", Str),
        (2, "hostPort", Int),
        (3, "containerPort", Int),
        (4, "protocol", Str),
        (5, "hostIP", Str),
    ]
);
msg!(ENV_VAR, "EnvVar", [(1, "name", Str), (2, "value", Str)]);
msg!(
    RESOURCES,
    "ResourceRequirements",
    [(1, "limits", MapQuantity), (2, "requests", MapQuantity)]
);

/// The object types a protobuf body may carry.
fn schema(api_version: &str, kind: &str) -> Option<&'static Msg> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Service") => &SERVICE,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        _ => return None,
    })
}

/// A protobuf wire reader.
struct Reader<'a> {
    buf: &'a [u8],
    at: &'static str,
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(ProtoError::Malformed(self.at))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed(self.at))
    }

    /// The next field. Fixed-width wire types appear in none of the known messages.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = u32::try_from(tag >> 3).map_err(|_| ProtoError::Malformed(self.at))?;
        match tag & 7 {
            0 => Ok(Some((field, Wire::Varint(self.varint()?)))),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed(self.at))?;
                if len > self.buf.len() {
                    return Err(ProtoError::Malformed(self.at));
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Ok(Some((field, Wire::Bytes(data))))
            }
            1 | 5 => Err(ProtoError::UnknownField {
                message: self.at,
                field,
            }),
            _ => Err(ProtoError::Malformed(self.at)),
        }
    }
}

fn bytes<'a>(w: Wire<'a>, at: &'static str) -> Result<&'a [u8], ProtoError> {
    match w {
        Wire::Bytes(b) => Ok(b),
        Wire::Varint(_) => Err(ProtoError::Malformed(at)),
    }
}

fn text(w: Wire<'_>, at: &'static str) -> Result<String, ProtoError> {
    String::from_utf8(bytes(w, at)?.to_vec()).map_err(|_| ProtoError::Malformed(at))
}

fn decode_msg(buf: &[u8], msg: &'static Msg) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    let mut r = Reader { buf, at: msg.name };
    while let Some((field, wire)) = r.next()? {
        let Some(&(_, name, kind)) = msg.fields.iter().find(|(n, _, _)| *n == field) else {
            // Go writes every non-pointer field, set or not: an unknown field holding its zero
            // value carries nothing; anything else would be lost, so it is refused.
            match wire {
                Wire::Varint(0) => continue,
                Wire::Bytes([]) => continue,
                _ => {
                    return Err(ProtoError::UnknownField {
                        message: msg.name,
                        field,
                    })
                }
            }
        };
        let at = msg.name;
        match kind {
            Str => {
                let t = text(wire, at)?;
                if !t.is_empty() {
                    out.insert(name.into(), Value::String(t));
                }
            }
            Int | OptInt => match wire {
                // Protobuf int32/int64 are two's complement in a varint.
                Wire::Varint(v) => {
                    if v != 0 || matches!(kind, OptInt) {
                        out.insert(name.into(), Value::from(v as i64));
                    }
                }
                Wire::Bytes(_) => return Err(ProtoError::Malformed(at)),
            },
            Bool => match wire {
                Wire::Varint(v) => {
                    if v != 0 {
                        out.insert(name.into(), Value::Bool(true));
                    }
                }
                Wire::Bytes(_) => return Err(ProtoError::Malformed(at)),
            },
            Msg(m) => {
                out.insert(name.into(), decode_msg(bytes(wire, at)?, m)?);
            }
            RepStr => push(&mut out, name, Value::String(text(wire, at)?)),
            RepMsg(m) => push(&mut out, name, decode_msg(bytes(wire, at)?, m)?),
            MapStr | MapBytes | MapQuantity => {
                let (k, v) = map_entry(bytes(wire, at)?, kind, at)?;
                let entry = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
            }
            Time => {
                let mut t = Reader {
                    buf: bytes(wire, at)?,
                    at,
                };
                let mut secs = 0i64;
                while let Some((f, w)) = t.next()? {
                    if let (1, Wire::Varint(v)) = (f, w) {
                        secs = v as i64;
                    }
                }
                if secs != 0 {
                    let ts = jiff::Timestamp::from_second(secs)
                        .map_err(|_| ProtoError::Malformed(at))?;
                    out.insert(
                        name.into(),
                        Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                }
            }
            IntOrStr => {
                let mut t = Reader {
                    buf: bytes(wire, at)?,
                    at,
                };
                let (mut ty, mut int, mut s) = (0u64, 0i64, String::new());
                while let Some((f, w)) = t.next()? {
                    match (f, w) {
                        (1, Wire::Varint(v)) => ty = v,
                        (2, Wire::Varint(v)) => int = v as i64,
                        (3, w) => s = text(w, at)?,
                        _ => return Err(ProtoError::Malformed(at)),
                    }
                }
                out.insert(
                    name.into(),
                    if ty == 1 {
                        Value::String(s)
                    } else {
                        Value::from(int)
                    },
                );
            }
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: &str, v: Value) {
    let entry = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = entry {
        a.push(v);
    }
}

fn map_entry(buf: &[u8], kind: Kind, at: &'static str) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { buf, at };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while let Some((f, w)) = r.next()? {
        match f {
            1 => key = text(w, at)?,
            2 => {
                value = match kind {
                    MapBytes => Value::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes(w, at)?),
                    ),
                    MapQuantity => {
                        // resource.Quantity { string = 1 }
                        let mut q = Reader {
                            buf: bytes(w, at)?,
                            at,
                        };
                        let mut s = String::new();
                        while let Some((qf, qw)) = q.next()? {
                            if qf == 1 {
                                s = text(qw, at)?;
                            }
                        }
                        Value::String(s)
                    }
                    _ => Value::String(text(w, at)?),
                }
            }
            _ => return Err(ProtoError::Malformed(at)),
        }
    }
    Ok((key, value))
}

/// Decode a `k8s\0`-enveloped protobuf object into its JSON form (with apiVersion and kind).
pub(crate) fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let raw = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoEnvelope)?;
    let mut r = Reader {
        buf: raw,
        at: "Unknown",
    };
    let (mut api_version, mut kind, mut object) = (String::new(), String::new(), None);
    while let Some((field, wire)) = r.next()? {
        match field {
            1 => {
                let mut t = Reader {
                    buf: bytes(wire, "TypeMeta")?,
                    at: "TypeMeta",
                };
                while let Some((f, w)) = t.next()? {
                    match f {
                        1 => api_version = text(w, "TypeMeta")?,
                        2 => kind = text(w, "TypeMeta")?,
                        _ => {}
                    }
                }
            }
            2 => object = Some(bytes(wire, "Unknown")?),
            3 | 4 => {}
            _ => return Err(ProtoError::Malformed("Unknown")),
        }
    }
    let msg = schema(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind(format!("{api_version} {kind}")))?;
    let mut v = decode_msg(object.unwrap_or_default(), msg)?;
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut body = b"k8s\0".to_vec();
            body.extend_from_slice(&tail);
            let _ = decode(&body);
        }
    }

    fn field(n: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        let mut tag = u64::from(n) << 3 | u64::from(wire);
        loop {
            let b = (tag & 0x7f) as u8;
            tag >>= 7;
            if tag == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        if wire == 2 {
            out.push(payload.len() as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn configmap_round_trip_and_refusals() {
        let meta = field(1, 2, b"c1");
        let entry = [field(1, 2, b"a"), field(2, 2, b"b")].concat();
        let obj = [field(1, 2, &meta), field(2, 2, &entry)].concat();
        let tm = [field(1, 2, b"v1"), field(2, 2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, 2, &tm), field(2, 2, &obj)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"b"}})
        );
        // An unknown field at its zero value carries nothing; with data it is refused.
        let zero = [field(1, 2, &meta), field(9, 2, b"")].concat();
        let body = [b"k8s\0".to_vec(), field(1, 2, &tm), field(2, 2, &zero)].concat();
        assert!(decode(&body).is_ok());
        let bad = [field(1, 2, &meta), field(9, 2, b"x")].concat();
        let body = [b"k8s\0".to_vec(), field(1, 2, &tm), field(2, 2, &bad)].concat();
        assert!(matches!(
            decode(&body),
            Err(ProtoError::UnknownField { field: 9, .. })
        ));
        assert!(matches!(decode(b"nope"), Err(ProtoError::NoEnvelope)));
        // Truncations of a valid body never panic.
        let good = [b"k8s\0".to_vec(), field(1, 2, &tm), field(2, 2, &obj)].concat();
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(ProtoError::Malformed(_))
        ));
    }
}
