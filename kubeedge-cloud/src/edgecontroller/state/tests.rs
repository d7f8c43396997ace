use super::*;

fn node(name: &str, edge: bool) -> Node {
    let mut labels = serde_json::Map::new();
    if edge {
        labels.insert(EDGE_NODE_LABEL.into(), "".into());
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
        .expect("node")
}

fn pod(name: &str, node: &str, rv: &str, cm: &str) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": rv},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "v", "configMap": {"name": cm}}]}
        }))
        .expect("pod"),
    )
}

fn cm(name: &str, rv: &str) -> Arc<ConfigMap> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": rv},
            "data": {"k": rv}
        }))
        .expect("cm"),
    )
}

fn ops(out: &[Out]) -> Vec<(String, String, String)> {
    out.iter()
        .map(|o| {
            (
                o.node.clone(),
                o.msg.route.operation_str().to_owned(),
                o.msg.route.resource.clone(),
            )
        })
        .collect()
}

#[test]
fn pods_and_their_configmaps_go_only_to_their_node() {
    let mut s = State::default();
    assert!(s.node_applied(&node("e1", true)).is_empty());
    assert!(s.node_applied(&node("e2", true)).is_empty());
    assert!(s.node_applied(&node("cloud", false)).is_empty());
    assert!(
        s.configmap_applied(cm("used", "1")).is_empty(),
        "nobody uses it yet"
    );
    assert!(s.configmap_applied(cm("unused", "1")).is_empty());
    let out = s.pod_applied(pod("p1", "e1", "10", "used"));
    assert_eq!(
        ops(&out),
        vec![
            (
                "e1".into(),
                "update".into(),
                "default/configmap/used".into()
            ),
            ("e1".into(), "insert".into(), "default/pod/p1".into()),
        ]
    );
    assert_eq!(out[1].msg.header.resource_version, "10");
    assert!(
        s.pod_applied(pod("p1", "e1", "10", "used")).is_empty(),
        "same version"
    );
    assert_eq!(
        ops(&s.pod_applied(pod("p1", "e1", "11", "used"))),
        vec![("e1".into(), "update".into(), "default/pod/p1".into())]
    );
    assert!(
        s.pod_applied(pod("p2", "cloud", "12", "unused")).is_empty(),
        "not an edge node"
    );
    assert_eq!(
        ops(&s.configmap_applied(cm("used", "2"))),
        vec![(
            "e1".into(),
            "update".into(),
            "default/configmap/used".into()
        )]
    );
    assert!(
        s.configmap_applied(cm("unused", "2")).is_empty(),
        "only the cloud node uses it"
    );
    assert_eq!(
        ops(&s.pod_deleted(&pod("p1", "e1", "13", "used"))),
        vec![("e1".into(), "delete".into(), "default/pod/p1".into())]
    );
    assert!(
        s.configmap_applied(cm("used", "3")).is_empty(),
        "no user left"
    );
}

#[test]
fn a_node_that_becomes_edge_gets_its_pods_and_objects() {
    let mut s = State::default();
    s.configmap_applied(cm("c", "1"));
    assert!(s.pod_applied(pod("p", "late", "5", "c")).is_empty());
    let out = s.node_applied(&node("late", true));
    let mut got = ops(&out);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("late".into(), "insert".into(), "default/pod/p".into()),
            ("late".into(), "update".into(), "default/configmap/c".into()),
        ]
    );
}

#[test]
fn a_relist_deletes_what_vanished_and_the_resync_waits_for_it() {
    let mut s = State::default();
    s.node_applied(&node("e", true));
    assert!(matches!(
        s.live("e", "pod", Some("default"), "p"),
        Live::NotReady
    ));
    s.relist_begin(Kind::Pods);
    s.pod_applied(pod("p", "e", "1", "c"));
    s.pod_applied(pod("q", "e", "1", "c"));
    s.relist_done(Kind::Pods);
    assert!(matches!(
        s.live("e", "pod", Some("default"), "p"),
        Live::Found { .. }
    ));
    assert!(matches!(
        s.live("e", "pod", Some("default"), "gone"),
        Live::Gone
    ));
    assert!(matches!(
        s.live("other", "pod", Some("default"), "p"),
        Live::NotWanted
    ));
    s.relist_begin(Kind::Pods);
    s.pod_applied(pod("p", "e", "1", "c"));
    let (out, _) = s.relist_done(Kind::Pods);
    assert_eq!(
        ops(&out),
        vec![("e".into(), "delete".into(), "default/pod/q".into())]
    );
}
