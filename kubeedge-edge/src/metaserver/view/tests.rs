use super::*;
use crate::meta::{MetaOp, MetaRecord, SqliteStore};

/// A view over an in-memory store, fed by hand: each change is written, then applied.
struct Fixture {
    db: MetaDb,
    view: MetaView,
}

impl Fixture {
    fn new() -> Self {
        let db = MetaDb::spawn(SqliteStore::in_memory().expect("store"));
        let view = MetaView::empty(Some(db.clone()));
        Self { db, view }
    }

    async fn put(&self, key: &str, t: &str, v: &str) {
        let rec = MetaRecord {
            key: key.into(),
            resource_type: t.into(),
            value: v.into(),
        };
        self.db
            .apply(vec![MetaOp::Upsert(rec)])
            .await
            .expect("write");
        self.view.apply(&MetaChange {
            key: key.into(),
            resource_type: t.into(),
            value: Some(v.into()),
            last: None,
        });
    }

    async fn delete(&self, key: &str, t: &str, last: &str) {
        self.db
            .apply(vec![MetaOp::Delete { key: key.into() }])
            .await
            .expect("write");
        self.view.apply(&MetaChange {
            key: key.into(),
            resource_type: t.into(),
            value: None,
            last: Some(last.into()),
        });
    }
}

#[tokio::test]
async fn put_modify_delete_and_resume() {
    let f = Fixture::new();
    let view = &f.view;
    let start = view.revision();
    let pod = r#"{"metadata":{"name":"a","resourceVersion":"77"},"spec":{"x":1}}"#;
    f.put("default/pod/a", "pod", pod).await;
    f.put("default/pod/a", "pod", pod).await;
    assert_eq!(view.revision(), start + 1, "a repeat is not a change");
    f.put("default/node/n1", "node", r#"{"metadata":{"name":"n1"}}"#)
        .await;
    f.delete("default/pod/a", "pod", pod).await;
    let got = view
        .get(ObjectKey::new("core/nodes", "", "n1"))
        .await
        .expect("get")
        .expect("node is cluster-scoped");
    let v: Value = serde_json::from_slice(&got.raw).expect("json");
    assert_eq!(v["metadata"]["resourceVersion"], (start + 2).to_string());
    let sub = view.subscribe(Some(start)).expect("subscribe");
    let kinds: Vec<EventType> = sub.backlog.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventType::Added, EventType::Added, EventType::Deleted]
    );
    let deleted: Value = serde_json::from_slice(&sub.backlog[2].object.raw).expect("json");
    assert_eq!(
        deleted["spec"]["x"], 1,
        "the deletion carries the last state"
    );
    assert_eq!(
        deleted["metadata"]["resourceVersion"],
        (start + 3).to_string()
    );
    assert!(matches!(
        view.subscribe(Some(start - 1)),
        Err(StoreError::Gone { .. })
    ));
    assert!(view
        .write(WriteOp::Delete {
            key: got.key,
            expected_rv: None
        })
        .await
        .is_err());
}

#[tokio::test]
async fn list_pages_by_namespace_small_and_large() {
    let f = Fixture::new();
    for (ns, n) in [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1")] {
        f.put(&format!("{ns}/configmap/{n}"), "configmap", "{}")
            .await;
    }
    let view = &f.view;
    let scope = |ns: Option<&str>| Scope {
        resource: "core/configmaps".into(),
        namespace: ns.map(str::to_owned),
    };
    let p = view.list(scope(Some("b")), None, None).await.expect("list");
    assert_eq!(p.items.len(), 2);
    let p1 = view.list(scope(None), None, Some(2)).await.expect("list");
    assert_eq!(p1.items.len(), 2);
    let p2 = view
        .list(scope(None), p1.more_after.clone(), Some(2))
        .await
        .expect("list");
    let names: Vec<String> = p2
        .items
        .iter()
        .map(|s| format!("{}/{}", s.key.namespace, s.key.name))
        .collect();
    assert_eq!(names, ["b/1", "b/2"]);
    let p3 = view
        .list(scope(None), p2.more_after.clone(), Some(2))
        .await
        .expect("list");
    assert_eq!(p3.items.len(), 1);
    assert!(p3.more_after.is_none());
    assert_eq!(view.len("core/configmaps"), 5);
    for i in 0..100 {
        f.put(
            &format!("d/configmap/m{i:03}"),
            "configmap",
            r#"{"data":{"k":"v"}}"#,
        )
        .await;
    }
    let all = view.list(scope(Some("d")), None, None).await.expect("list");
    assert_eq!(all.items.len(), 100, "a large page reads the rows at once");
    let v: Value = serde_json::from_slice(&all.items[5].raw).expect("json");
    assert_eq!(v["metadata"]["name"], "m005");
    assert_eq!(v["data"]["k"], "v");
}
