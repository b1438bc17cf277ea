//! orch's state: projects, tasks, attempts, events and the baseline cache in
//! one SQLite database under the data directory.
//!
//! Rules the store keeps:
//! - every state change records its event(s) in the same transaction;
//! - events are append-only and attempts are never rewritten once finished
//!   (enforced by triggers, so not even a hand-written UPDATE can do it);
//! - counters and flags change by SQL arithmetic (`attempts = attempts + 1`),
//!   never by writing back a snapshot that may be stale;
//! - claims and status changes are compare-and-set inside IMMEDIATE
//!   transactions, so two orch processes never run the same task;
//! - no secrets: nothing from the environment is stored.
//!
//! The store is synchronous. Each operation is a short transaction, so async
//! callers may call it directly.

mod attempts;
mod baseline;
mod bus;
mod codec;
mod costs;
pub mod dashboard;
mod error;
mod events;
mod interface;
mod plans;
mod projects;
mod refine;
mod requirements;
mod schema;
mod tasks;

pub use attempts::{
    lease_owner, AttemptFinish, CandidateStart, HeldLease, Recovery, LEASE_HEARTBEAT, LEASE_TTL,
};
pub use bus::BUS_CAPACITY;
pub use costs::{CostRow, ModelCall};
pub use error::{Result, StateError};
pub use events::EventFilter;
pub use interface::StateStore;
pub use plans::PlanImport;
pub use projects::ProjectRow;
pub use requirements::{RequirementsFile, RequirementsStatus};
pub use schema::BUSY_TIMEOUT;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Prepared statements kept per connection: every statement the store
/// runs, with room to spare (SQL built per call, with a varying number of
/// placeholders, takes a slot per shape).
const STATEMENT_CACHE: usize = 256;

/// Statements through the connection's prepared-statement cache. The store
/// runs the same few statements thousands of times in a run, and parsing
/// and planning them again each time was a good part of every write.
pub(crate) trait Cached {
    fn run_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize>;
    fn row_cached<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
    /// Whether `sql` returns any row.
    fn exists_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<bool>;
}

impl Cached for Connection {
    fn run_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row_cached<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn exists_cached(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<bool> {
        self.prepare_cached(sql)?.exists(params)
    }
}

/// A handle on the state database. Cheap operations, one connection;
/// share it with `Arc<Store>`. Several handles (or processes) may open the
/// same file: SQLite's locking plus the busy timeout serialises writers.
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    /// Every committed event, live, for in-process followers (progress,
    /// the server's SSE stream).
    bus: bus::Bus,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, creating parent
    /// directories, switching to WAL and applying pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |detail: String| StateError::Open {
            path: path.display().to_string(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                open_err(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// A private database that lives as long as the handle; for tests and
    /// dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::configure(&conn, path.is_some())?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            bus: bus::Bus::default(),
        })
    }

    /// The database file, or None for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version (`PRAGMA user_version`) of the open database.
    pub fn schema_version(&self) -> Result<usize> {
        let conn = self.lock()?;
        schema::user_version(&conn)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StateError::Poisoned)
    }

    /// Runs `f` in an IMMEDIATE transaction: the write lock is taken up
    /// front, so reads inside `f` cannot go stale before its writes, and a
    /// second writer waits (busy timeout) instead of failing mid-way. Any
    /// error rolls everything back.
    /// Writes a consistent copy of the whole database to `path` (which
    /// must not exist), e.g. the state a dry run works on.
    pub fn snapshot_to(&self, path: &Path) -> Result<()> {
        let target = path.to_string_lossy().to_string();
        let conn = self.lock()?;
        conn.run_cached("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let mark = codec::written_mark();
        let done = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StateError::from)
            .and_then(|tx| {
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            });
        let written = codec::take_written(mark);
        let out = done?;
        // After the commit, so followers only ever see durable events.
        self.bus.publish(&conn, written);
        Ok(out)
    }

    /// Runs read-only `f` in a deferred transaction so that multi-statement
    /// reads see one snapshot.
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn open_creates_parent_dirs_uses_wal_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::MIGRATIONS.len());
        assert_eq!(store.path(), Some(path.as_path()));
        {
            let conn = store.lock().unwrap();
            let mode: String = conn
                .row_cached("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = conn
                .row_cached("PRAGMA foreign_keys", [], |r| r.get(0))
                .unwrap();
            assert_eq!(fk, 1);
            let sync: i64 = conn
                .row_cached("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(sync, 1, "synchronous=NORMAL");
            let busy: i64 = conn
                .row_cached("PRAGMA busy_timeout", [], |r| r.get(0))
                .unwrap();
            assert_eq!(busy, 5000);
        }
        store.ensure_project("p", "/repo").unwrap();
        drop(store);

        // Opening again applies nothing twice and keeps the data.
        let again = Store::open(&path).unwrap();
        assert_eq!(again.schema_version().unwrap(), schema::MIGRATIONS.len());
        assert_eq!(again.project("p").unwrap().path, "/repo");
        let third = Store::open(&path).unwrap();
        assert_eq!(third.projects().unwrap().len(), 1);
    }

    #[test]
    fn unopenable_path_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        // A regular file where a directory should be.
        let err = Store::open(&file.join("state.db")).unwrap_err();
        assert!(matches!(err, StateError::Open { .. }), "{err:?}");
        assert!(
            err.to_string().contains("plain-file") && err.to_string().contains("data_dir"),
            "{err}"
        );
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("upgrade orch"), "{err}");
    }

    #[test]
    fn poisoned_lock_is_an_error_not_a_panic() {
        let store = std::sync::Arc::new(Store::open_in_memory().unwrap());
        let s2 = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = s2.conn.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(matches!(store.projects(), Err(StateError::Poisoned)));
    }
}
