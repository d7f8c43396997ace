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
