//! The writer thread: batches of writes committed in one transaction (group commit), each
//! stamped with the next resourceVersion and published to watchers after the commit.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::{row_to_stored, Reply, Shared};
use crate::error::StoreError;
use crate::store::{Event, EventType, ObjectKey, Stored, WriteOp};

pub(super) fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<(WriteOp, Reply)>,
    shared: Arc<Shared>,
    mut revision: u64,
    max_batch: usize,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let start_rev = revision;
        let mut outcomes: Vec<Result<Arc<Event>, StoreError>> = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (op, _) in &batch {
                let outcome = apply(&tx, op, revision + 1)?;
                if outcome.is_ok() {
                    revision += 1;
                }
                outcomes.push(outcome.map(Arc::new));
            }
            if revision != start_rev {
                tx.execute(
                    "UPDATE meta SET v = ?1 WHERE k = 'revision'",
                    params![i64::try_from(revision).unwrap_or(i64::MAX)],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = committed {
            tracing::error!(error = %e, "sqlite commit failed");
            revision = start_rev;
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Commit(msg.clone())));
            }
            continue;
        }
        // Publish under the history lock so that subscribers see no gap and no duplicate.
        if let Ok(mut history) = shared.history.lock() {
            for ev in outcomes.iter().flatten() {
                history.push(Arc::clone(ev));
                let _ = shared.feed.send(Arc::clone(ev));
            }
            shared.revision.store(revision, Ordering::SeqCst);
        }
        for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
    tracing::debug!("sqlite writer stopped");
}

fn stamp(value: &mut Value, rv: u64) -> Result<Bytes, StoreError> {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(StoreError::Encode)
}

fn owner_uids(value: &Value) -> Vec<String> {
    value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn load(
    tx: &rusqlite::Transaction<'_>,
    key: &ObjectKey,
) -> rusqlite::Result<Option<Stored>> {
    let row = tx
        .prepare_cached(
            "SELECT rv, value FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?
        .query_row(params![key.resource, key.namespace, key.name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    Ok(row.map(|(rv, v)| row_to_stored(key.clone(), rv, v)))
}

fn put(
    tx: &rusqlite::Transaction<'_>,
    key: &ObjectKey,
    rv: u64,
    raw: &[u8],
    owners: &[String],
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO objects (resource, namespace, name, rv, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        key.resource,
        key.namespace,
        key.name,
        i64::try_from(rv).unwrap_or(i64::MAX),
        raw
    ])?;
    set_owners(tx, key, owners)
}

fn set_owners(
    tx: &rusqlite::Transaction<'_>,
    key: &ObjectKey,
    owners: &[String],
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM owners WHERE resource = ?1 AND namespace = ?2 AND name = ?3")?
        .execute(params![key.resource, key.namespace, key.name])?;
    for uid in owners {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO owners (owner_uid, resource, namespace, name) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![uid, key.resource, key.namespace, key.name])?;
    }
    Ok(())
}

/// Stamp `value` with `rv` and write it; the inner error rejects only this op.
fn write_object(
    tx: &rusqlite::Transaction<'_>,
    key: &ObjectKey,
    rv: u64,
    value: &Value,
) -> rusqlite::Result<Result<Stored, StoreError>> {
    let mut value = value.clone();
    let raw = match stamp(&mut value, rv) {
        Ok(raw) => raw,
        Err(e) => return Ok(Err(e)),
    };
    put(tx, key, rv, &raw, &owner_uids(&value))?;
    Ok(Ok(Stored {
        key: key.clone(),
        rv,
        raw,
    }))
}

/// The stored object, or why the op must be rejected (missing, or a failed precondition).
fn load_expected(
    tx: &rusqlite::Transaction<'_>,
    key: &ObjectKey,
    expected_rv: Option<u64>,
) -> rusqlite::Result<Result<Stored, StoreError>> {
    let Some(prev) = load(tx, key)? else {
        return Ok(Err(StoreError::NotFound(key.clone())));
    };
    match expected_rv {
        Some(expected) if expected != prev.rv => Ok(Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual: prev.rv,
        })),
        _ => Ok(Ok(prev)),
    }
}

/// Applies one op inside the batch transaction. The outer error aborts the whole batch; the
/// inner one rejects only this op (its checks run before any statement that writes).
fn apply(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
    rv: u64,
) -> rusqlite::Result<Result<Event, StoreError>> {
    match op {
        WriteOp::Create { key, value } => {
            if load(tx, key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists(key.clone())));
            }
            Ok(write_object(tx, key, rv, value)?.map(|object| Event {
                kind: EventType::Added,
                object,
                prev: None,
            }))
        }
        WriteOp::Update {
            key,
            value,
            expected_rv,
        } => {
            let prev = match load_expected(tx, key, *expected_rv)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            Ok(write_object(tx, key, rv, value)?.map(|object| Event {
                kind: EventType::Modified,
                object,
                prev: Some(prev),
            }))
        }
        WriteOp::Delete { key, expected_rv } => {
            let prev = match load_expected(tx, key, *expected_rv)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            let mut last: Value = match serde_json::from_slice(&prev.raw) {
                Ok(v) => v,
                Err(source) => {
                    return Ok(Err(StoreError::Corrupt {
                        key: format!("{}/{}/{}", key.resource, key.namespace, key.name),
                        source,
                    }))
                }
            };
            let raw = match stamp(&mut last, rv) {
                Ok(raw) => raw,
                Err(e) => return Ok(Err(e)),
            };
            tx.prepare_cached(
                "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            )?
            .execute(params![key.resource, key.namespace, key.name])?;
            set_owners(tx, key, &[])?;
            Ok(Ok(Event {
                kind: EventType::Deleted,
                object: Stored {
                    key: key.clone(),
                    rv,
                    raw,
                },
                prev: Some(prev),
            }))
        }
    }
}
