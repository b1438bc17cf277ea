//! Connection settings and schema migrations.
//!
//! The schema version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes
//! the database from version `i` to `i + 1`; each runs in its own IMMEDIATE
//! transaction that re-reads the version first, so two processes opening a
//! fresh database at the same time apply every migration exactly once.
//! Migrations are only ever appended to this list, never edited.

use crate::Cached;

use crate::error::{Result, StateError};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use std::time::{Duration, Instant};

/// How long a writer waits for another writer before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

const V1: &str = r#"
CREATE TABLE projects (
    name                 TEXT PRIMARY KEY NOT NULL,
    path                 TEXT NOT NULL,
    paused               INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    pause_reason         TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

CREATE TABLE tasks (
    id             TEXT PRIMARY KEY NOT NULL,
    project        TEXT NOT NULL REFERENCES projects(name),
    title          TEXT NOT NULL,
    description    TEXT NOT NULL,
    task_type      TEXT NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    allowed_files  TEXT NOT NULL DEFAULT '[]',
    source         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'verifying', 'judging',
                       'needs_human', 'passed', 'merging', 'merged', 'failed', 'cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    feedback       TEXT,
    question       TEXT,
    answer         TEXT,
    failure_reason TEXT,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX tasks_by_project_status ON tasks(project, status, priority DESC, created_at);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT NOT NULL REFERENCES tasks(id),
    number        INTEGER NOT NULL CHECK (number >= 1),
    status        TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'needs_human',
                      'interrupted', 'error')),
    base_commit   TEXT,
    head_commit   TEXT,
    summary       TEXT,
    diff_stat     TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    turns         INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    duration_ms   INTEGER,
    verification  TEXT,
    verdict       TEXT,
    audit_path    TEXT,
    error         TEXT,
    UNIQUE (task_id, number)
);
-- One row per attempt, never overwritten: the database itself refuses to
-- rewrite a finished attempt or to delete any.
CREATE TRIGGER attempts_finished_are_immutable BEFORE UPDATE ON attempts
    WHEN OLD.status <> 'running'
    BEGIN SELECT RAISE(ABORT, 'attempts are append-only: a finished attempt is never rewritten'); END;
CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts
    BEGIN SELECT RAISE(ABORT, 'attempts are append-only: rows are never deleted'); END;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    project TEXT NOT NULL,
    task_id TEXT,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    data    TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX events_by_project ON events(project, id);
CREATE INDEX events_by_task ON events(task_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: rows are never updated'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only: rows are never deleted'); END;

CREATE TABLE baselines (
    project     TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    command     TEXT NOT NULL,
    value       TEXT NOT NULL,
    computed_at TEXT NOT NULL,
    PRIMARY KEY (project, commit_sha, command)
);
"#;

/// Ordered migrations; index i upgrades user_version i to i + 1.
/// Every model call (planner, worker, judge, …) with its tokens and cost,
/// so spending rolls up per attempt, task, role, project and day.
const V2: &str = r#"
CREATE TABLE model_calls (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    day           TEXT NOT NULL,
    project       TEXT NOT NULL,
    task_id       TEXT,
    attempt_id    INTEGER,
    role          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    duration_ms   INTEGER NOT NULL DEFAULT 0,
    ok            INTEGER NOT NULL CHECK (ok IN (0, 1)),
    error         TEXT
);
CREATE INDEX model_calls_project_day ON model_calls(project, day);
CREATE INDEX model_calls_task ON model_calls(task_id);
CREATE TRIGGER model_calls_append_only_update BEFORE UPDATE ON model_calls
BEGIN SELECT RAISE(ABORT, 'model_calls is append-only'); END;
CREATE TRIGGER model_calls_append_only_delete BEFORE DELETE ON model_calls
BEGIN SELECT RAISE(ABORT, 'model_calls is append-only'); END;
"#;

/// Acceptance tests, infrastructure failures counted apart from attempts
/// (with a backoff), cancelled attempts, and what the planner last saw.
/// SQLite cannot change a CHECK constraint in place, so `attempts` is
/// rebuilt with the same rows and its append-only triggers re-created.
const V3: &str = r#"
ALTER TABLE tasks ADD COLUMN acceptance_tests TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN infra_failures INTEGER NOT NULL DEFAULT 0 CHECK (infra_failures >= 0);
ALTER TABLE tasks ADD COLUMN not_before TEXT;
ALTER TABLE projects ADD COLUMN plan_fingerprint TEXT;
ALTER TABLE projects ADD COLUMN planned_at TEXT;

DROP TRIGGER attempts_finished_are_immutable;
DROP TRIGGER attempts_no_delete;
CREATE TABLE attempts_v3 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT NOT NULL REFERENCES tasks(id),
    number        INTEGER NOT NULL CHECK (number >= 1),
    status        TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'needs_human',
                      'interrupted', 'error', 'cancelled')),
    base_commit   TEXT,
    head_commit   TEXT,
    summary       TEXT,
    diff_stat     TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    turns         INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    duration_ms   INTEGER,
    verification  TEXT,
    verdict       TEXT,
    audit_path    TEXT,
    error         TEXT,
    UNIQUE (task_id, number)
);
INSERT INTO attempts_v3 SELECT id, task_id, number, status, base_commit, head_commit, summary,
    diff_stat, input_tokens, output_tokens, cached_tokens, cost_usd, turns, started_at,
    finished_at, duration_ms, verification, verdict, audit_path, error FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v3 RENAME TO attempts;
CREATE TRIGGER attempts_finished_are_immutable BEFORE UPDATE ON attempts
    WHEN OLD.status <> 'running'
    BEGIN SELECT RAISE(ABORT, 'attempts are append-only: a finished attempt is never rewritten'); END;
CREATE TRIGGER attempts_no_delete BEFORE DELETE ON attempts
    BEGIN SELECT RAISE(ABORT, 'attempts are append-only: rows are never deleted'); END;
"#;

/// Task dependencies and plan-file keys (a re-import adds nothing twice),
/// and leases on running attempts (a heartbeat; recovery takes over only
/// attempts whose lease expired).
const V4: &str = r#"
ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN plan_key TEXT;
CREATE UNIQUE INDEX tasks_by_plan_key ON tasks(project, plan_key) WHERE plan_key IS NOT NULL;
ALTER TABLE attempts ADD COLUMN lease_owner TEXT;
ALTER TABLE attempts ADD COLUMN lease_expires_at TEXT;
"#;

/// Merge-conflict resolver attempts (issue 10 §5): an attempt is the task's
/// work or a resolution of its merge conflict; rows from before are work.
const V5: &str = r#"
ALTER TABLE attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'work' CHECK (kind IN ('work', 'resolve'));
"#;

/// Refinement iterations and their scores (issue 10 §3): a JSON array on
/// the attempt, appended to while the attempt runs.
const V6: &str = r#"
ALTER TABLE attempts ADD COLUMN iterations TEXT NOT NULL DEFAULT '[]';
"#;

/// Best-of-N candidates and their ranking (issue 10 §2): a task may ask
/// for its own number of candidates; an attempt records which candidate of
/// which round, the branch it worked on, and its place in the ranking
/// with the reason (written once, when the attempt finishes).
const V7: &str = r#"
ALTER TABLE tasks ADD COLUMN candidates INTEGER CHECK (candidates IS NULL OR candidates BETWEEN 1 AND 8);
ALTER TABLE attempts ADD COLUMN candidate INTEGER CHECK (candidate IS NULL OR candidate >= 1);
ALTER TABLE attempts ADD COLUMN round INTEGER CHECK (round IS NULL OR round >= 1);
ALTER TABLE attempts ADD COLUMN branch TEXT;
ALTER TABLE attempts ADD COLUMN rank INTEGER CHECK (rank IS NULL OR rank >= 1);
ALTER TABLE attempts ADD COLUMN rank_reason TEXT;
"#;

/// Projects created from a requirements file (issue 10 §4): each file
/// `orch serve` found in its requirements folder, claimed once (by its
/// path) so a restart never makes the same project twice.
const V8: &str = r#"
CREATE TABLE requirements_files (
    path       TEXT PRIMARY KEY NOT NULL,
    sha256     TEXT NOT NULL,
    project    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('started', 'done', 'failed')),
    detail     TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#;

/// A task may name its own worker (`builtin` or an agent CLI); NULL = the
/// project's. Not a CHECK on the names: the kinds are checked where tasks
/// are made and when a row is read, so a new kind needs no table rebuild.
const V9: &str = r#"
ALTER TABLE tasks ADD COLUMN worker TEXT;
"#;

pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// Sets the per-connection pragmas. The busy timeout comes first so that
/// switching to WAL waits for a concurrent opener instead of failing.
pub fn configure(conn: &Connection, file_backed: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file_backed {
        let mode = enable_wal(conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some filesystems (network mounts) cannot do WAL; SQLite then
            // keeps its rollback journal, which is slower but correct.
            tracing::warn!(journal_mode = %mode, "state database is not in WAL mode; concurrent readers will block writers");
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Switches to WAL. SQLite answers a concurrent journal-mode change with
/// SQLITE_BUSY straight away instead of calling the busy handler (it would
/// risk a deadlock), so two processes opening a fresh database at once need
/// this retry loop, bounded by the same busy timeout.
fn enable_wal(conn: &Connection) -> Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut delay = Duration::from_millis(2);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Ok(mode) => return Ok(mode),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub fn user_version(conn: &Connection) -> Result<usize> {
    let v: i64 = conn.row_cached("PRAGMA user_version", [], |row| row.get(0))?;
    usize::try_from(v).map_err(|_| StateError::Corrupt(format!("negative schema version {v}")))
}

/// Applies every migration the database has not seen yet.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = user_version(&tx)?;
        if version > MIGRATIONS.len() {
            return Err(StateError::Corrupt(format!(
                "schema version {version} is newer than this orch understands (latest {})",
                MIGRATIONS.len()
            )));
        }
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
        tracing::debug!(version = version + 1, "applied state database migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by an older orch keeps its rows, and its
    /// append-only guarantees, through the attempts table rebuild.
    #[test]
    fn v2_databases_migrate_with_their_rows_and_triggers() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO projects VALUES ('p', '/r', 0, NULL, 0, 't', 't');
             INSERT INTO tasks (id, project, title, description, task_type, allowed_files, source,
                                status, created_at, updated_at)
                 VALUES ('t1', 'p', 'T', '', 'fix', '[]', 'manual', 'failed', 't', 't');
             INSERT INTO attempts (task_id, number, status, started_at, error)
                 VALUES ('t1', 1, 'error', 't', 'boom');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len());
        let (status, error): (String, String) = conn
            .row_cached(
                "SELECT status, error FROM attempts WHERE task_id = 't1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), error.as_str()), ("error", "boom"));
        let accept: String = conn
            .row_cached(
                "SELECT acceptance_tests FROM tasks WHERE id = 't1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(accept, "[]");
        assert!(conn
            .run_cached("UPDATE attempts SET error = 'x' WHERE task_id = 't1'", [])
            .is_err());
        assert!(conn.run_cached("DELETE FROM attempts", []).is_err());
        conn.run_cached(
            "INSERT INTO attempts (task_id, number, status, started_at) VALUES ('t1', 2, 'cancelled', 't')",
            [],
        )
        .unwrap();
    }
}
