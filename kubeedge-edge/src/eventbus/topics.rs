//! Topics the cloud asked the event bus to subscribe to, kept in upstream's `sub_topics` table
//! so that they survive a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::EventBusError;

/// The `sub_topics` table (in edgecore's database file, or in memory).
#[derive(Debug, Clone)]
pub struct SubTopics {
    path: Option<PathBuf>,
}

impl SubTopics {
    /// Topics stored in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Self, EventBusError> {
        let s = Self {
            path: Some(path.to_owned()),
        };
        s.conn()?;
        Ok(s)
    }

    /// Topics kept only in memory (for tests and for a disabled store).
    pub fn in_memory() -> Self {
        Self { path: None }
    }

    fn conn(&self) -> Result<Option<Connection>, EventBusError> {
        let Some(p) = &self.path else { return Ok(None) };
        let c = Connection::open(p)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS sub_topics (topic varchar(256) NOT NULL PRIMARY KEY);",
        )?;
        Ok(Some(c))
    }

    /// Every stored topic.
    pub fn load(&self) -> Result<BTreeSet<String>, EventBusError> {
        let Some(c) = self.conn()? else {
            return Ok(BTreeSet::new());
        };
        let mut stmt = c.prepare("SELECT topic FROM sub_topics")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remember `topic`.
    pub fn add(&self, topic: &str) -> Result<(), EventBusError> {
        if let Some(c) = self.conn()? {
            c.execute(
                "INSERT OR IGNORE INTO sub_topics (topic) VALUES (?1)",
                params![topic],
            )?;
        }
        Ok(())
    }

    /// Forget `topic`.
    pub fn remove(&self, topic: &str) -> Result<(), EventBusError> {
        if let Some(c) = self.conn()? {
            c.execute("DELETE FROM sub_topics WHERE topic = ?1", params![topic])?;
        }
        Ok(())
    }
}
