use super::*;

#[test]
fn key_round_trip_and_errors() {
    for key in [
        "/core/v1/pods/default/null",
        "/core/v1/nodes/null/edge-1",
        "/coordination.k8s.io/v1/leases/kube-node-lease/edge-1",
        "/apps/v1/deployments/null/null",
    ] {
        let k = ApplicationKey::parse(key).expect(key);
        assert_eq!(k.to_string(), key);
    }
    let k = ApplicationKey::parse("/core/v1/pods/default/null").expect("key");
    assert!(k.is_core());
    assert_eq!(k.api_version(), "v1");
    let k = ApplicationKey::parse("/apps/v1/deployments/ns/d").expect("key");
    assert_eq!(k.api_version(), "apps/v1");
    assert_eq!(k.name.as_deref(), Some("d"));
    assert!(matches!(
        ApplicationKey::parse("core/v1/pods/default/null"),
        Err(ApplicationKeyError::NoLeadingSlash(_))
    ));
    assert!(matches!(
        ApplicationKey::parse("/core/v1/pods/default"),
        Err(ApplicationKeyError::SegmentCount { found: 4, .. })
    ));
    assert!(matches!(
        ApplicationKey::parse("/core/v1//default/x"),
        Err(ApplicationKeyError::EmptySegment(_))
    ));
    assert!(ApplicationKey::parse("").is_err());
}

#[test]
fn v1_12_layout_is_exact() {
    let wire = r#"{"ID":"5dbfe7095bdd52a794596bf5309124db93757ffd6d926f48661095b609dbff28","Key":"/core/v1/pods/default/null","Verb":"list","Nodename":"edge-node-1","Status":"InApplying","Reason":"","Option":"e30=","ReqBody":null,"RespBody":null,"Subresource":"","Error":{"ErrStatus":{"metadata":{}}},"Token":""}"#;
    let app: Application = serde_json::from_str(wire).expect("decode");
    assert_eq!(app.verb, ApplicationVerb::List);
    assert_eq!(app.status, ApplicationStatus::InApplying);
    assert_eq!(app.option.as_deref(), Some(&b"{}"[..]));
    assert_eq!(app.timestamp, None);
    assert!(app.error.is_empty());
    assert_eq!(app.identifier(), app.id);
    assert_eq!(serde_json::to_string(&app).expect("encode"), wire);
}

#[test]
fn later_layout_is_exact() {
    let wire = r#"{"ID":"x","Key":"/core/v1/nodes/null/n","Verb":"patch","Nodename":"n","Option":"e30=","ReqBody":null,"Subresource":"status","RespBody":null,"Status":"InApplying","Reason":"","Error":{"ErrStatus":{"metadata":{}}},"Timestamp":"0001-01-01T00:00:00Z"}"#;
    let app: Application = serde_json::from_str(wire).expect("decode");
    assert_eq!(app.timestamp.as_deref(), Some(GO_ZERO_TIME));
    assert_eq!(serde_json::to_string(&app).expect("encode"), wire);
}

#[test]
fn replies_and_errors() {
    let mut app = Application::new("/core/v1/pods/ns/p", ApplicationVerb::Get, "n");
    app.set_option(&serde_json::json!({})).expect("option");
    let app = app.with_identifier();
    let ok = app.approved(Some(b"{\"kind\":\"Pod\"}".to_vec()));
    assert!(ok.is_approved());
    assert_eq!(ok.id, app.id);
    let v: serde_json::Value = ok.resp_body_json().expect("json").expect("some");
    assert_eq!(v["kind"], "Pod");
    let no = app.rejected(StatusError::failure(
        404,
        "NotFound",
        "pods \"p\" not found",
    ));
    assert_eq!(no.status, ApplicationStatus::Rejected);
    assert_eq!(no.reason, "pods \"p\" not found");
    let text = serde_json::to_string(&no.error).expect("encode");
    assert_eq!(
        text,
        r#"{"ErrStatus":{"metadata":{},"status":"Failure","message":"pods \"p\" not found","reason":"NotFound","code":404}}"#
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for bad in [
        r#"{"Option":"not base64!"}"#,
        r#"{"Verb":3}"#,
        r#"[]"#,
        r#"{"Error":"x"}"#,
    ] {
        assert!(serde_json::from_str::<Application>(bad).is_err(), "{bad}");
    }
    // null everywhere is Go's zero value.
    let app: Application = serde_json::from_str(
        r#"{"ID":null,"Key":null,"Verb":null,"Status":null,"Error":null,"Token":null}"#,
    )
    .expect("nulls");
    assert_eq!(app, Application::default());
}

#[test]
fn patch_info_round_trip() {
    let wire = r#"{"Name":"demo-pod","PatchType":"application/merge-patch+json","Data":"e30=","Options":{"kind":"PatchOptions","apiVersion":"meta.k8s.io/v1"},"Subresources":["status"]}"#;
    let p: PatchInfo = serde_json::from_str(wire).expect("decode");
    assert_eq!(p.data.as_deref(), Some(&b"{}"[..]));
    assert_eq!(p.subresources.as_deref(), Some(&["status".to_owned()][..]));
    // Options is a Value (sorted keys), so compare as values.
    let back: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&p).expect("encode")).expect("json");
    let orig: serde_json::Value = serde_json::from_str(wire).expect("json");
    assert_eq!(back, orig);
}
