use super::*;
use serde_json::json;

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("core/configmaps", "default", name)
}

#[tokio::test]
async fn cas_and_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("db")).expect("open");
    let a = store
        .write(WriteOp::Create {
            key: key("a"),
            value: json!({"metadata": {"name": "a"}}),
        })
        .await
        .expect("create");
    assert_eq!(a.object.rv, 1);
    let dup = store
        .write(WriteOp::Create {
            key: key("a"),
            value: json!({"metadata": {"name": "a"}}),
        })
        .await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))));
    let stale = store
        .write(WriteOp::Update {
            key: key("a"),
            value: json!({"metadata": {"name": "a"}}),
            expected_rv: Some(7),
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })));
    let b = store
        .write(WriteOp::Update {
            key: key("a"),
            value: json!({"metadata": {"name": "a"}, "data": {"x": "1"}}),
            expected_rv: Some(1),
        })
        .await
        .expect("update");
    assert_eq!(b.object.rv, 2);
    let got = store.get(key("a")).await.expect("get").expect("present");
    assert_eq!(
        got.value().expect("json")["metadata"]["resourceVersion"],
        "2"
    );
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn history_window_and_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SqliteConfig {
        history: 3,
        ..SqliteConfig::default()
    };
    let store = SqliteStore::open_with(dir.path().join("db"), cfg).expect("open");
    for i in 0..5 {
        store
            .write(WriteOp::Create {
                key: key(&format!("o{i}")),
                value: json!({"metadata": {}}),
            })
            .await
            .expect("create");
    }
    let sub = store.subscribe(Some(3)).expect("within window");
    let rvs: Vec<u64> = sub.backlog.iter().map(|e| e.object.rv).collect();
    assert_eq!(rvs, vec![4, 5]);
    assert!(matches!(
        store.subscribe(Some(1)),
        Err(StoreError::Gone { .. })
    ));
}

#[tokio::test]
async fn list_pages_and_dependents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("db")).expect("open");
    for i in 0..5 {
        store
            .write(WriteOp::Create {
                key: key(&format!("o{i}")),
                value: json!({"metadata": {"ownerReferences": [{"uid": "u1"}]}}),
            })
            .await
            .expect("create");
    }
    let scope = Scope {
        resource: "core/configmaps".into(),
        namespace: None,
    };
    let p1 = store
        .list(scope.clone(), None, Some(2))
        .await
        .expect("list");
    assert_eq!(p1.items.len(), 2);
    let p2 = store
        .list(scope.clone(), p1.more_after.clone(), Some(10))
        .await
        .expect("list");
    assert_eq!(p2.items.len(), 3);
    assert!(p2.more_after.is_none());
    assert_eq!(store.dependents("u1".into()).await.expect("deps").len(), 5);
}
