//! Devices and twins on SQLite, in upstream's `device` and `device_twin` tables
//! (PROTOCOL.md §5.1): values as raw strings, `*_meta` as `{"timestamp":…}` JSON and
//! `*_version` as `{"cloud":N,"edge":M}` JSON, so an upstream edgecore database reads the same.

use std::path::Path;

use kubeedge_proto::twin::{MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata};
use rusqlite::{params, Connection};

use crate::twin::DeviceTwin;

/// Twin store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TwinStoreError {
    /// SQLite refused an operation.
    #[error("twin store operation failed")]
    Sqlite(#[from] rusqlite::Error),
}

/// Where the twin keeps devices; the default implementation is [`SqliteTwinStore`].
pub trait TwinStore: Send + 'static {
    /// Write one device and all its twins (replacing what was stored).
    fn save(&mut self, device: &DeviceTwin) -> Result<(), TwinStoreError>;
    /// Remove a device and its twins.
    fn remove(&mut self, id: &str) -> Result<(), TwinStoreError>;
    /// Every stored device.
    fn load(&self) -> Result<Vec<DeviceTwin>, TwinStoreError>;
}

/// The SQLite twin store.
#[derive(Debug)]
pub struct SqliteTwinStore {
    conn: Connection,
}

impl SqliteTwinStore {
    /// Open (and create the tables in) the database at `path`; edgecore shares its file.
    pub fn open(path: &Path) -> Result<Self, TwinStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// An in-memory store.
    pub fn in_memory() -> Result<Self, TwinStoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, TwinStoreError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS device (
                 id varchar(64) NOT NULL PRIMARY KEY,
                 name varchar(64) NOT NULL DEFAULT '',
                 description varchar(256) NOT NULL DEFAULT '',
                 state varchar(64) NOT NULL DEFAULT '',
                 last_online varchar(64) NOT NULL DEFAULT ''
             );
             CREATE TABLE IF NOT EXISTS device_twin (
                 id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
                 deviceid varchar(64) NOT NULL DEFAULT '',
                 name varchar(64) NOT NULL DEFAULT '',
                 description varchar(256) NOT NULL DEFAULT '',
                 expected text,
                 actual text,
                 expected_meta text,
                 actual_meta text,
                 expected_version text,
                 actual_version text,
                 optional integer NOT NULL DEFAULT 0,
                 attr_type varchar(64) NOT NULL DEFAULT '',
                 metadata text
             );
             CREATE INDEX IF NOT EXISTS device_twin_deviceid ON device_twin (deviceid);",
        )?;
        Ok(Self { conn })
    }
}

fn to_json<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref().and_then(|v| serde_json::to_string(v).ok())
}

fn from_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl TwinStore for SqliteTwinStore {
    fn save(&mut self, d: &DeviceTwin) -> Result<(), TwinStoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO device (id, name, description, state, last_online) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.id, d.name, d.description, d.state, d.last_online],
        )?;
        tx.execute("DELETE FROM device_twin WHERE deviceid = ?1", params![d.id])?;
        for (name, t) in &d.twins {
            tx.execute(
                "INSERT INTO device_twin (deviceid, name, expected, actual, expected_meta, actual_meta,
                     expected_version, actual_version, optional, attr_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    d.id,
                    name,
                    t.expected.as_ref().and_then(|v| v.value.clone()),
                    t.actual.as_ref().and_then(|v| v.value.clone()),
                    to_json(&t.expected.as_ref().and_then(|v| v.metadata)),
                    to_json(&t.actual.as_ref().and_then(|v| v.metadata)),
                    to_json(&t.expected_version),
                    to_json(&t.actual_version),
                    t.optional.unwrap_or(false),
                    t.metadata.as_ref().map(|m| m.value_type.clone()).unwrap_or_default(),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove(&mut self, id: &str) -> Result<(), TwinStoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM device_twin WHERE deviceid = ?1", params![id])?;
        tx.execute("DELETE FROM device WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    fn load(&self) -> Result<Vec<DeviceTwin>, TwinStoreError> {
        let mut devices: Vec<DeviceTwin> = {
            let mut stmt = self.conn.prepare(
                "SELECT id, name, description, state, last_online FROM device ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeviceTwin {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    state: r.get(3)?,
                    last_online: r.get(4)?,
                    twins: Default::default(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut stmt = self.conn.prepare(
            "SELECT deviceid, name, expected, actual, expected_meta, actual_meta, expected_version,
                    actual_version, optional, attr_type FROM device_twin",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let device: String = r.get(0)?;
            let Some(d) = devices.iter_mut().find(|d| d.id == device) else {
                continue;
            };
            let value = |v: Option<String>, m: Option<String>| -> Option<TwinValue> {
                let metadata: Option<ValueMetadata> = from_json(m);
                (v.is_some() || metadata.is_some()).then_some(TwinValue { value: v, metadata })
            };
            let attr_type: String = r.get(9)?;
            let twin = MsgTwin {
                expected: value(r.get(2)?, r.get(4)?),
                actual: value(r.get(3)?, r.get(5)?),
                expected_version: from_json::<TwinVersion>(r.get(6)?),
                actual_version: from_json::<TwinVersion>(r.get(7)?),
                optional: Some(r.get(8)?),
                metadata: (!attr_type.is_empty()).then_some(TypeMetadata {
                    value_type: attr_type,
                }),
            };
            d.twins.insert(r.get(1)?, twin);
        }
        Ok(devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::{Effect, Input, TwinState};
    use kubeedge_proto::twin::{Device, MembershipUpdate};

    fn state_with_device() -> (TwinState, Vec<Effect>) {
        let mut twin = TwinState::new();
        let mut twins = std::collections::BTreeMap::new();
        twins.insert(
            "temp".to_owned(),
            Some(MsgTwin {
                expected: Some(TwinValue {
                    value: Some("21".into()),
                    metadata: Some(ValueMetadata { timestamp: 5 }),
                }),
                expected_version: Some(TwinVersion { cloud: 7, edge: 0 }),
                metadata: Some(TypeMetadata {
                    value_type: "int".into(),
                }),
                optional: Some(false),
                ..MsgTwin::default()
            }),
        );
        let fx = twin.apply(Input::Membership(MembershipUpdate {
            added_devices: Some(vec![Device {
                id: "default/d1".into(),
                name: "d1".into(),
                twin: Some(twins),
                ..Device::default()
            }]),
            ..MembershipUpdate::default()
        }));
        (twin, fx)
    }

    #[test]
    fn devices_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("twin-store-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let (mut twin, fx) = state_with_device();
        let mut store = SqliteTwinStore::open(&dir).unwrap();
        for e in &fx {
            if let Effect::Persist(id) = e {
                store.save(twin.device(id).unwrap()).unwrap();
            }
        }
        twin.apply(Input::EdgeUpdate {
            device: "default/d1".into(),
            payload: br#"{"event_id":"e","twin":{"temp":{"actual":{"value":"20"}}}}"#.to_vec(),
            now_ms: 9,
        });
        store.save(twin.device("default/d1").unwrap()).unwrap();
        drop(store);
        let reopened = SqliteTwinStore::open(&dir).unwrap();
        let loaded = TwinState::from_devices(reopened.load().unwrap());
        assert_eq!(loaded, twin, "the same twin after a restart");
        let mut reopened = reopened;
        reopened.remove("default/d1").unwrap();
        assert!(reopened.load().unwrap().is_empty());
        let _ = std::fs::remove_file(&dir);
    }
}
