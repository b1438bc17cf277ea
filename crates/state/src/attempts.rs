//! Attempts: one appended row per try at a task, finished exactly once,
//! leases, and crash recovery for attempts a dead process left running.
//!
//! Leases: a running attempt is held by the process that started it
//! (`lease_owner` = `host:pid:nonce`) until `lease_expires_at`, which that
//! process's heartbeat keeps pushing forward ([`Store::renew_leases`]).
//! Recovery takes over only attempts whose lease expired, or whose owner is
//! this process or a dead predecessor on this host (same host, process gone)
//! — never one a live process still heartbeats.

use crate::Cached;

use crate::codec::{attempt_from_row, insert_event, json_text, ts, ATTEMPT_COLUMNS};
use crate::error::{Result, StateError};
use crate::tasks::{cas_status, require_task};
use crate::Store;
use chrono::{DateTime, Utc};
use orch_core::{Attempt, AttemptKind, AttemptStatus, TaskId, TaskStatus, Usage};
#[cfg(test)]
use orch_protocol::EventKind;
use orch_protocol::{self as protocol, Event};
use rusqlite::{params, Connection, OptionalExtension};

/// The error recorded on attempts found still running after a restart.
pub const INTERRUPTED_ERROR: &str = "process died mid-attempt";

/// How long a lease holds without a heartbeat.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a running engine renews its leases (well inside the TTL, so
/// one slow heartbeat does not lose them).
pub const LEASE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// This process's lease owner: `host:pid:nonce`. The nonce tells this
/// process apart from an earlier one that had the same pid (a container's
/// pid 1 after a restart).
pub fn lease_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's randomness: enough for a nonce.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        format!("{}:{}:{:016x}", host_name(), std::process::id(), h.finish())
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(':', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// True when `owner` is a process that is gone: this process itself (an
/// attempt it no longer works on: recovery runs before any worker starts),
/// an earlier process with this pid on this host, or a process of this host
/// that no longer runs. Owners on other hosts cannot be checked; only their
/// lease's expiry frees their attempts.
fn owner_is_gone(owner: &str) -> bool {
    let me = lease_owner();
    if owner == me {
        return true;
    }
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_nonce), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != host_name() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        // Same pid, other nonce: a predecessor that had our pid.
        return true;
    }
    !process_alive(pid)
}

/// Whether a process with this pid runs on this machine (a zombie does not).
fn process_alive(pid: u32) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        // No procfs: assume alive, so only the lease's expiry frees it.
        return true;
    }
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// What recovery did for a project.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Tasks put back (to pending, or to passed for a cut-off merge).
    pub requeued: Vec<TaskId>,
    /// Tasks left alone because a live lease holds their running attempt:
    /// another process is working on them.
    pub held: Vec<HeldLease>,
}

/// A running attempt another process still holds.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldLease {
    pub task_id: TaskId,
    pub attempt_id: i64,
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// Which candidate of which best-of-N round an attempt is, and its branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateStart<'a> {
    /// From 1.
    pub candidate: u32,
    /// The task's counted attempts before the round, plus one.
    pub round: u32,
    pub branch: &'a str,
}

/// How an attempt ended; written once by `finish_attempt`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFinish {
    pub status: AttemptStatus,
    pub head_commit: Option<String>,
    pub summary: Option<String>,
    pub diff_stat: Option<String>,
    pub usage: Usage,
    pub turns: u32,
    pub verification: Option<serde_json::Value>,
    pub verdict: Option<serde_json::Value>,
    pub audit_path: Option<String>,
    pub error: Option<String>,
    /// Whether a passed or failed outcome adds one to the task's attempt
    /// counter. A round of best-of-N candidates counts once: one of its
    /// rows counts, the others are recorded with `counted = false`.
    pub counted: bool,
    /// A ranked candidate's place in its round (1 = first) and why.
    pub rank: Option<u32>,
    pub rank_reason: Option<String>,
}

impl AttemptFinish {
    /// A finish with the given status and every other field empty.
    pub fn new(status: AttemptStatus) -> Self {
        AttemptFinish {
            status,
            head_commit: None,
            summary: None,
            diff_stat: None,
            usage: Usage::default(),
            turns: 0,
            verification: None,
            verdict: None,
            audit_path: None,
            error: None,
            counted: true,
            rank: None,
            rank_reason: None,
        }
    }
}

/// Whether an attempt that ended this way counts against max_attempts.
fn counts_against_budget(status: AttemptStatus) -> bool {
    matches!(status, AttemptStatus::Passed | AttemptStatus::Failed)
}

fn load_attempt(conn: &Connection, attempt_id: i64) -> Result<Attempt> {
    conn.row_cached(
        &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?1"),
        [attempt_id],
        attempt_from_row,
    )
    .optional()?
    .ok_or_else(|| StateError::NotFound {
        what: format!(
            "no attempt has id {attempt_id}; list a task's attempts with `orch show <task>`"
        ),
    })
}

fn lease_expiry(from: DateTime<Utc>) -> DateTime<Utc> {
    from + chrono::Duration::from_std(LEASE_TTL).unwrap_or(chrono::Duration::seconds(30))
}

fn elapsed_ms(since: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    u64::try_from((until - since).num_milliseconds()).unwrap_or(0)
}

impl Store {
    /// Appends a running attempt numbered one past the task's last.
    pub fn start_attempt(&self, task: &TaskId, base_commit: &str) -> Result<Attempt> {
        self.start_attempt_of_kind(task, base_commit, AttemptKind::Work)
    }

    /// [`Store::start_attempt`] for an attempt of `kind`; a resolver
    /// attempt is numbered with the task's others but never counts against
    /// max_attempts (see [`Store::finish_attempt`]).
    pub fn start_attempt_of_kind(
        &self,
        task: &TaskId,
        base_commit: &str,
        kind: AttemptKind,
    ) -> Result<Attempt> {
        self.write(|tx| insert_attempt(tx, task, base_commit, kind, None))
    }

    /// A running attempt that is a candidate of a best-of-N round, on its
    /// own branch; numbered with the task's other attempts.
    pub fn start_candidate(
        &self,
        task: &TaskId,
        base_commit: &str,
        slot: &CandidateStart<'_>,
    ) -> Result<Attempt> {
        self.write(|tx| insert_attempt(tx, task, base_commit, AttemptKind::Work, Some(slot)))
    }

    /// Writes an attempt's outcome, once. Passed and failed outcomes of a
    /// work attempt add one to the task's attempt counter in the same
    /// transaction, unless `fin.counted` is false (the other candidates of
    /// a best-of-N round).
    /// Returns the task's attempt count afterwards.
    ///
    /// Usage in `fin` is stored on the attempt only; task totals grow through
    /// `add_task_usage`, so usage is never counted twice.
    ///
    /// A `cancelled` finish of a task that nobody cancelled (the task is not
    /// `cancelled`) was stopped from outside — by shutdown, the patrol or a
    /// takeover — and is recorded as `interrupted`, with the reason given to
    /// [`Store::request_interrupt`] when there was one.
    pub fn finish_attempt(&self, attempt_id: i64, fin: &AttemptFinish) -> Result<u32> {
        if fin.status == AttemptStatus::Running {
            return Err(StateError::Invalid(
                "finish_attempt needs a final status (passed, failed, needs_human, interrupted or error), not running"
                    .into(),
            ));
        }
        let verification = json_text(fin.verification.as_ref())?;
        let verdict = json_text(fin.verdict.as_ref())?;
        self.write(|tx| {
            let attempt = load_attempt(tx, attempt_id)?;
            if attempt.status != AttemptStatus::Running {
                return Err(StateError::AttemptNotRunning {
                    attempt_id,
                    status: attempt.status.as_str().to_string(),
                });
            }
            let owner = require_task(tx, attempt.task_id.as_str())?;
            let (status, error) = if fin.status == AttemptStatus::Cancelled
                && owner.status != TaskStatus::Cancelled
            {
                // While running, `error` holds a requested interrupt's reason.
                (AttemptStatus::Interrupted, attempt.error.clone().or_else(|| fin.error.clone()))
            } else {
                (fin.status, fin.error.clone())
            };
            let finished = Utc::now();
            let n = tx.run_cached(
                "UPDATE attempts SET status = ?1, head_commit = ?2, summary = ?3, diff_stat = ?4,
                        input_tokens = ?5, output_tokens = ?6, cached_tokens = ?7, cost_usd = ?8, turns = ?9,
                        finished_at = ?10, duration_ms = ?11, verification = ?12, verdict = ?13,
                        audit_path = ?14, error = ?15, rank = ?17, rank_reason = ?18
                 WHERE id = ?16 AND status = 'running'",
                params![
                    status.as_str(),
                    fin.head_commit,
                    fin.summary,
                    fin.diff_stat,
                    fin.usage.input_tokens,
                    fin.usage.output_tokens,
                    fin.usage.cached_tokens,
                    fin.usage.cost_usd,
                    fin.turns,
                    ts(finished),
                    elapsed_ms(attempt.started_at, finished),
                    verification,
                    verdict,
                    fin.audit_path,
                    error,
                    attempt_id,
                    fin.rank,
                    fin.rank_reason
                ],
            )?;
            if n != 1 {
                return Err(StateError::AttemptNotRunning { attempt_id, status: "unknown".into() });
            }
            // A resolver attempt works on work that already passed: it
            // never uses up one of the task's max_attempts.
            let task_attempts: u32 = if counts_against_budget(status)
                && attempt.kind == AttemptKind::Work
                && fin.counted
            {
                tx.row_cached(
                    "UPDATE tasks SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1 RETURNING attempts",
                    params![attempt.task_id.as_str(), ts(finished)],
                    |r| r.get(0),
                )?
            } else {
                tx.row_cached("SELECT attempts FROM tasks WHERE id = ?1", [attempt.task_id.as_str()], |r| r.get(0))?
            };
            if status == AttemptStatus::Error {
                tx.run_cached(
                    "UPDATE tasks SET infra_failures = infra_failures + 1 WHERE id = ?1",
                    [attempt.task_id.as_str()],
                )?;
            }
            let task = require_task(tx, attempt.task_id.as_str())?;
            let ev = Event::new(
                &task.project,
                protocol::AttemptFinished {
                    attempt_id,
                    number: attempt.number,
                    status,
                    kind: attempt.kind,
                    turns: fin.turns,
                    input_tokens: fin.usage.input_tokens,
                    output_tokens: fin.usage.output_tokens,
                    cost_usd: fin.usage.cost_usd,
                    error: error.clone(),
                    task_attempts,
                    infra_failures: task.infra_failures,
                },
                match (status, &error) {
                    (AttemptStatus::Interrupted, Some(why)) => format!("attempt {} of task {} finished: interrupted ({why})", attempt.number, task.id),
                    _ => format!("attempt {} of task {} finished: {}", attempt.number, task.id, status.as_str()),
                },
            )
            .task(task.id.as_str());
            insert_event(tx, &ev)?;
            Ok(task_attempts)
        })
    }

    /// A task's attempts, by number.
    pub fn attempts(&self, task: &TaskId) -> Result<Vec<Attempt>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY number"
            ))?;
            let rows = st
                .query_map([task.as_str()], attempt_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Pushes the lease of every running attempt this process holds to
    /// now + [`LEASE_TTL`]. Returns how many were renewed.
    pub fn renew_leases(&self) -> Result<usize> {
        let until = ts(lease_expiry(Utc::now()));
        // No event: a heartbeat is not news, and would drown the log.
        self.write(|tx| {
            Ok(tx.run_cached(
                "UPDATE attempts SET lease_expires_at = ?1 WHERE status = 'running' AND lease_owner = ?2",
                params![until, lease_owner()],
            )?)
        })
    }

    /// Asks for the task's running attempt to be interrupted for `reason`
    /// (shutdown, the patrol): the reason is kept on the attempt, and when
    /// the attempt then ends as cancelled it is recorded as `interrupted`
    /// with it (see [`Store::finish_attempt`]). False when no attempt of the
    /// task is running. The first reason given wins.
    pub fn request_interrupt(&self, task: &TaskId, reason: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.run_cached(
                "UPDATE attempts SET error = ?1 WHERE task_id = ?2 AND status = 'running' AND error IS NULL",
                params![reason, task.as_str()],
            )? > 0)
        })
    }

    /// Finishes the task's running attempts as `interrupted` for `reason`
    /// (when the attempt could not finish itself). Interrupted attempts do
    /// not count. Returns how many there were.
    pub fn interrupt_running(&self, task: &TaskId, reason: &str) -> Result<usize> {
        self.write(|tx| {
            let t = require_task(tx, task.as_str())?;
            let running = running_attempts(tx, "a.task_id = ?1", task.as_str())?;
            let at = Utc::now();
            for a in &running {
                interrupt_attempt(tx, &t.project, a, at, reason)?;
            }
            Ok(running.len())
        })
    }

    /// After a crash or a restart: in one transaction, marks interrupted
    /// (not counted against max_attempts) the project's running attempts
    /// whose lease expired or whose owner is gone, puts their tasks and any
    /// other in-flight task back to pending, and merging tasks back to
    /// passed (the merge queue retries them). Attempts a live process still
    /// holds, and their tasks, are left alone. Returns the affected tasks.
    pub fn recover_interrupted(&self, project: &str) -> Result<Vec<TaskId>> {
        Ok(self.recover_expired(project)?.requeued)
    }

    /// [`Store::recover_interrupted`], also telling which tasks a live
    /// lease kept.
    pub fn recover_expired(&self, project: &str) -> Result<Recovery> {
        self.recover_at(project, Utc::now())
    }

    fn recover_at(&self, project: &str, now: DateTime<Utc>) -> Result<Recovery> {
        self.write(|tx| {
            crate::projects::load_project(tx, project)?;
            let mut out = Recovery::default();
            let note = |out: &mut Recovery, id: &TaskId| {
                if !out.requeued.contains(id) {
                    out.requeued.push(id.clone());
                }
            };
            for a in running_attempts(tx, "t.project = ?1", project)? {
                let expired = match (&a.owner, a.expires_at) {
                    (Some(owner), Some(at)) => at <= now || owner_is_gone(owner),
                    // Started before leases existed, or by hand: nobody holds it.
                    _ => true,
                };
                if !expired {
                    out.held.push(HeldLease {
                        task_id: a.attempt.task_id.clone(),
                        attempt_id: a.attempt.id,
                        owner: a.owner.clone().unwrap_or_default(),
                        expires_at: a.expires_at.unwrap_or(now),
                    });
                    continue;
                }
                let why = match &a.owner {
                    Some(owner) if a.expires_at.is_some_and(|at| at <= now) => {
                        format!("{INTERRUPTED_ERROR} (its lease held by {owner} expired)")
                    }
                    Some(owner) if owner == lease_owner() => {
                        format!("{INTERRUPTED_ERROR} (no worker of this process holds it any more)")
                    }
                    Some(owner) => format!("{INTERRUPTED_ERROR} ({owner} is no longer running)"),
                    None => INTERRUPTED_ERROR.to_string(),
                };
                interrupt_attempt(tx, project, &a, now, &why)?;
                note(&mut out, &a.attempt.task_id);
            }

            let in_flight: Vec<String> = {
                let mut st = tx.prepare_cached(
                    "SELECT id FROM tasks WHERE project = ?1
                     AND status IN ('running', 'verifying', 'judging', 'merging') ORDER BY rowid",
                )?;
                let rows = st
                    .query_map([project], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                rows
            };
            for id in in_flight {
                let task = require_task(tx, &id)?;
                if out.held.iter().any(|h| h.task_id == task.id) {
                    continue;
                }
                let to = if task.status == TaskStatus::Merging {
                    TaskStatus::Passed
                } else {
                    TaskStatus::Pending
                };
                let ev = Event::new(
                    project,
                    protocol::Recovered {
                        from: Some(task.status),
                        to: Some(to),
                        ..Default::default()
                    },
                    format!("task {id} was {} when orch stopped; now {to}", task.status),
                )
                .task(id.as_str());
                insert_event(tx, &ev)?;
                cas_status(tx, &task, task.status, to, "recovered after restart")?;
                note(&mut out, &task.id);
            }
            Ok(out)
        })
    }
}

/// Appends a running attempt numbered one past the task's last, with its
/// `attempt_started` event, inside `tx`.
fn insert_attempt(
    tx: &Connection,
    task: &TaskId,
    base_commit: &str,
    kind: AttemptKind,
    candidate: Option<&CandidateStart<'_>>,
) -> Result<Attempt> {
    let t = require_task(tx, task.as_str())?;
    // Computed inside the write transaction, so two starters cannot
    // pick the same number (and UNIQUE(task_id, number) backs it up).
    let number: u32 = tx.row_cached(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE task_id = ?1",
        [task.as_str()],
        |r| r.get(0),
    )?;
    let started = Utc::now();
    tx.run_cached(
        "INSERT INTO attempts (task_id, number, status, base_commit, started_at,
                               lease_owner, lease_expires_at, kind, candidate, round, branch)
         VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            task.as_str(),
            number,
            base_commit,
            ts(started),
            lease_owner(),
            ts(lease_expiry(started)),
            kind.as_str(),
            candidate.map(|c| c.candidate),
            candidate.map(|c| c.round),
            candidate.map(|c| c.branch)
        ],
    )?;
    let attempt_id = tx.last_insert_rowid();
    let ev = Event::new(
        &t.project,
        protocol::AttemptStarted {
            attempt_id,
            number,
            base_commit: Some(base_commit.to_string()),
            kind,
        },
        format!("attempt {number} of task {task} started"),
    )
    .task(task.as_str());
    insert_event(tx, &ev)?;
    load_attempt(tx, attempt_id)
}

/// A running attempt with its lease.
struct Leased {
    attempt: Attempt,
    owner: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// Running attempts matching `filter` (over `attempts a JOIN tasks t`, one
/// parameter), oldest first.
fn running_attempts(tx: &Connection, filter: &str, arg: &str) -> Result<Vec<Leased>> {
    let columns = ATTEMPT_COLUMNS
        .split(", ")
        .map(|c| format!("a.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut st = tx.prepare_cached(&format!(
        "SELECT {columns}, a.lease_owner, a.lease_expires_at FROM attempts a JOIN tasks t ON t.id = a.task_id
         WHERE {filter} AND a.status = 'running' ORDER BY a.id"
    ))?;
    let rows = st
        .query_map([arg], |r| {
            let expires: Option<String> = r.get("lease_expires_at")?;
            Ok(Leased {
                attempt: attempt_from_row(r)?,
                owner: r.get("lease_owner")?,
                // An unreadable expiry frees the attempt: nobody can show a live lease.
                expires_at: expires
                    .and_then(|e| DateTime::parse_from_rfc3339(&e).ok())
                    .map(|d| d.with_timezone(&Utc)),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Marks one running attempt interrupted, with its event.
fn interrupt_attempt(
    tx: &Connection,
    project: &str,
    a: &Leased,
    at: DateTime<Utc>,
    why: &str,
) -> Result<()> {
    let a = &a.attempt;
    tx.run_cached(
        "UPDATE attempts SET status = 'interrupted', finished_at = ?1, duration_ms = ?2, error = ?3
         WHERE id = ?4 AND status = 'running'",
        params![ts(at), elapsed_ms(a.started_at, at), why, a.id],
    )?;
    let ev = Event::new(
        project,
        protocol::AttemptInterrupted {
            attempt_id: a.id,
            number: a.number,
            reason: why.to_string(),
            stage: None,
        },
        format!(
            "attempt {} of task {} was interrupted: {why}",
            a.number, a.task_id
        ),
    )
    .task(a.task_id.as_str());
    insert_event(tx, &ev)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventFilter;
    use orch_core::NewTask;

    fn store_with_task() -> (Store, TaskId) {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let t = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        (s, t.id)
    }

    #[test]
    fn a_resolver_attempt_is_numbered_with_the_others_and_never_counted() {
        let (s, id) = store_with_task();
        let work = s.start_attempt(&id, "base").unwrap();
        assert_eq!(work.kind, AttemptKind::Work);
        assert_eq!(
            s.finish_attempt(work.id, &AttemptFinish::new(AttemptStatus::Passed))
                .unwrap(),
            1
        );
        for status in [AttemptStatus::Passed, AttemptStatus::Failed] {
            let r = s
                .start_attempt_of_kind(&id, "main", AttemptKind::Resolve)
                .unwrap();
            assert_eq!(r.kind, AttemptKind::Resolve);
            assert_eq!(
                s.finish_attempt(r.id, &AttemptFinish::new(status)).unwrap(),
                1
            );
        }
        let all = s.attempts(&id).unwrap();
        let kinds: Vec<(u32, AttemptKind)> = all.iter().map(|a| (a.number, a.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, AttemptKind::Work),
                (2, AttemptKind::Resolve),
                (3, AttemptKind::Resolve)
            ]
        );
        assert_eq!(s.task(id.as_str()).unwrap().attempts, 1);
    }

    #[test]
    fn candidates_keep_their_slot_and_rank_and_a_round_counts_once() {
        let (s, id) = store_with_task();
        let slot = |candidate, branch| CandidateStart {
            candidate,
            round: 1,
            branch,
        };
        let a = s
            .start_candidate(&id, "base", &slot(1, "orch/x-c1"))
            .unwrap();
        let b = s
            .start_candidate(&id, "base", &slot(2, "orch/x-c2"))
            .unwrap();
        assert_eq!((a.round, b.round), (Some(1), Some(1)));
        assert_eq!(
            (a.number, a.candidate, b.number, b.candidate),
            (1, Some(1), 2, Some(2))
        );
        assert_eq!(b.branch.as_deref(), Some("orch/x-c2"));
        let mut won = AttemptFinish::new(AttemptStatus::Passed);
        won.rank = Some(1);
        won.rank_reason = Some("smaller and correct".into());
        assert_eq!(s.finish_attempt(b.id, &won).unwrap(), 1);
        let mut lost = AttemptFinish::new(AttemptStatus::Passed);
        lost.counted = false;
        lost.rank = Some(2);
        assert_eq!(
            s.finish_attempt(a.id, &lost).unwrap(),
            1,
            "the round counted once"
        );
        let all = s.attempts(&id).unwrap();
        assert_eq!(all[0].rank, Some(2));
        assert_eq!(all[1].rank, Some(1));
        assert_eq!(all[1].rank_reason.as_deref(), Some("smaller and correct"));
        let lone = s.start_attempt(&id, "base").unwrap();
        assert_eq!(
            (lone.candidate, lone.branch.clone(), lone.rank),
            (None, None, None)
        );
        // A task may ask for its own number of candidates, within bounds.
        let t = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "three".into(),
                candidates: Some(3),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.task(t.id.as_str()).unwrap().candidates, Some(3));
        let err = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "too many".into(),
                candidates: Some(9),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("1 to 8"), "{err}");
    }

    #[test]
    fn attempts_are_numbered_and_finished_once() {
        let (s, id) = store_with_task();
        let a1 = s.start_attempt(&id, "base1").unwrap();
        assert_eq!(a1.number, 1);
        assert_eq!(a1.status, AttemptStatus::Running);
        assert_eq!(a1.base_commit.as_deref(), Some("base1"));

        let mut fin = AttemptFinish::new(AttemptStatus::Failed);
        fin.head_commit = Some("head1".into());
        fin.summary = Some("tried".into());
        fin.usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 1,
            cost_usd: 0.01,
        };
        fin.turns = 4;
        fin.verification = Some(serde_json::json!({"passed": false}));
        fin.verdict = Some(serde_json::json!({"passed": false, "issues": ["x"]}));
        fin.audit_path = Some("audit/t/1.md".into());
        fin.error = Some("tests failed".into());
        assert_eq!(s.finish_attempt(a1.id, &fin).unwrap(), 1);

        // Finishing twice is refused and changes nothing.
        let err = s
            .finish_attempt(a1.id, &AttemptFinish::new(AttemptStatus::Passed))
            .unwrap_err();
        assert!(matches!(err, StateError::AttemptNotRunning { status, .. } if status == "failed"));
        assert!(matches!(
            s.finish_attempt(a1.id + 100, &fin),
            Err(StateError::NotFound { .. })
        ));

        let a2 = s.start_attempt(&id, "base2").unwrap();
        assert_eq!(a2.number, 2);
        assert!(matches!(
            s.finish_attempt(a2.id, &AttemptFinish::new(AttemptStatus::Running)),
            Err(StateError::Invalid(_))
        ));
        // needs_human does not count against the budget.
        assert_eq!(
            s.finish_attempt(a2.id, &AttemptFinish::new(AttemptStatus::NeedsHuman))
                .unwrap(),
            1
        );
        // orch's own failures and cancels do not count either; errors are
        // counted apart, as infrastructure failures.
        let a3 = s.start_attempt(&id, "base3").unwrap();
        assert_eq!(
            s.finish_attempt(a3.id, &AttemptFinish::new(AttemptStatus::Error))
                .unwrap(),
            1
        );
        assert_eq!(s.task(id.as_str()).unwrap().infra_failures, 1);
        let a4 = s.start_attempt(&id, "base3").unwrap();
        assert_eq!(
            s.finish_attempt(a4.id, &AttemptFinish::new(AttemptStatus::Cancelled))
                .unwrap(),
            1
        );
        let a5 = s.start_attempt(&id, "base3").unwrap();
        assert_eq!(
            s.finish_attempt(a5.id, &AttemptFinish::new(AttemptStatus::Passed))
                .unwrap(),
            2
        );
        let t = s.task(id.as_str()).unwrap();
        assert_eq!((t.attempts, t.infra_failures), (2, 1));

        let all = s.attempts(&id).unwrap();
        assert_eq!(
            all.iter().map(|a| a.number).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let first = &all[0];
        assert_eq!(first.status, AttemptStatus::Failed);
        assert_eq!(first.head_commit.as_deref(), Some("head1"));
        assert_eq!(first.turns, 4);
        assert_eq!(first.input_tokens, 10);
        assert_eq!(first.verdict.as_ref().unwrap()["issues"][0], "x");
        assert_eq!(first.error.as_deref(), Some("tests failed"));
        assert!(first.finished_at.is_some() && first.duration_ms.is_some());

        let finished: Vec<_> = s
            .events(&EventFilter {
                task_id: Some(id.0.clone()),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|e| e.kind() == EventKind::AttemptFinished)
            .map(|e| e.data_json()["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            finished,
            // Nobody cancelled the task, so its `cancelled` finish was an
            // interruption from outside (shutdown, patrol).
            vec!["failed", "needs_human", "error", "interrupted", "passed"]
        );
    }

    #[test]
    fn finished_attempts_cannot_be_rewritten_even_by_raw_sql() {
        let (s, id) = store_with_task();
        let a = s.start_attempt(&id, "b").unwrap();
        s.finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Passed))
            .unwrap();
        let conn = s.lock().unwrap();
        let err = conn
            .run_cached(
                "UPDATE attempts SET status = 'failed' WHERE id = ?1",
                [a.id],
            )
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn.run_cached("DELETE FROM attempts", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn start_attempt_on_unknown_task_is_not_found() {
        let (s, _) = store_with_task();
        let err = s
            .start_attempt(&TaskId("ffffffffffff".into()), "b")
            .unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn recovery_interrupts_running_attempts_and_resets_tasks() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        s.ensure_project("q", "/other").unwrap();
        let add = |project: &str, title: &str| {
            s.add_task(&NewTask {
                project: project.into(),
                title: title.into(),
                ..Default::default()
            })
            .unwrap()
            .id
        };
        let running = add("p", "running");
        let verifying = add("p", "verifying");
        let merging = add("p", "merging");
        let pending = add("p", "pending");
        let other = add("q", "other project");
        s.claim_pending("p", 3).unwrap();
        s.claim_pending("q", 1).unwrap();
        assert!(s
            .transition(
                &verifying,
                &[TaskStatus::Running],
                TaskStatus::Verifying,
                ""
            )
            .unwrap());
        assert!(s
            .transition(&merging, &[TaskStatus::Running], TaskStatus::Merging, "")
            .unwrap());

        // One finished attempt that counts, then one left running by a crash.
        let done = s.start_attempt(&running, "b").unwrap();
        s.finish_attempt(done.id, &AttemptFinish::new(AttemptStatus::Failed))
            .unwrap();
        let dead = s.start_attempt(&running, "b").unwrap();
        let other_attempt = s.start_attempt(&other, "b").unwrap();

        let affected = s.recover_interrupted("p").unwrap();
        assert_eq!(
            affected,
            vec![running.clone(), verifying.clone(), merging.clone()]
        );

        let atts = s.attempts(&running).unwrap();
        assert_eq!(
            atts[0].status,
            AttemptStatus::Failed,
            "finished attempts untouched"
        );
        assert_eq!(atts[1].id, dead.id);
        assert_eq!(atts[1].status, AttemptStatus::Interrupted);
        assert!(atts[1]
            .error
            .as_deref()
            .unwrap()
            .starts_with(INTERRUPTED_ERROR));
        assert!(atts[1].finished_at.is_some());

        let t = s.task(running.as_str()).unwrap();
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.attempts, 1, "interrupted attempts do not count");
        assert_eq!(
            s.task(verifying.as_str()).unwrap().status,
            TaskStatus::Pending
        );
        assert_eq!(s.task(merging.as_str()).unwrap().status, TaskStatus::Passed);
        assert_eq!(
            s.task(pending.as_str()).unwrap().status,
            TaskStatus::Pending
        );

        // Other projects are left alone.
        assert_eq!(s.task(other.as_str()).unwrap().status, TaskStatus::Running);
        assert_eq!(s.attempts(&other).unwrap()[0].id, other_attempt.id);
        assert_eq!(
            s.attempts(&other).unwrap()[0].status,
            AttemptStatus::Running
        );

        // Recovery is idempotent.
        assert!(s.recover_interrupted("p").unwrap().is_empty());

        // The next attempt continues the numbering.
        assert_eq!(s.start_attempt(&running, "b").unwrap().number, 3);

        let evs = s
            .events(&EventFilter {
                project: Some("p".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            evs.iter()
                .filter(|e| e.kind() == EventKind::AttemptInterrupted)
                .count(),
            1
        );
        let recovered: Vec<_> = evs
            .iter()
            .filter(|e| e.kind() == EventKind::Recovered)
            .collect();
        assert_eq!(recovered.len(), 3);
        assert!(recovered
            .iter()
            .any(|e| e.data_json()["from"] == "merging" && e.data_json()["to"] == "passed"));
    }

    /// Sets an attempt's lease by hand, as another process would have.
    fn set_lease(s: &Store, attempt: i64, owner: &str, expires: DateTime<Utc>) {
        let conn = s.lock().unwrap();
        conn.run_cached(
            "UPDATE attempts SET lease_owner = ?1, lease_expires_at = ?2 WHERE id = ?3",
            params![owner, ts(expires), attempt],
        )
        .unwrap();
    }

    fn lease_of(s: &Store, attempt: i64) -> (Option<String>, Option<String>) {
        let conn = s.lock().unwrap();
        conn.row_cached(
            "SELECT lease_owner, lease_expires_at FROM attempts WHERE id = ?1",
            [attempt],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    fn two_running_tasks(s: &Store) -> (TaskId, TaskId) {
        let add = |title: &str| {
            s.add_task(&NewTask {
                project: "p".into(),
                title: title.into(),
                ..Default::default()
            })
            .unwrap()
            .id
        };
        let (a, b) = (add("a"), add("b"));
        s.claim_pending("p", 2).unwrap();
        (a, b)
    }

    #[test]
    fn a_new_attempt_is_leased_to_this_process() {
        let (s, id) = store_with_task();
        let before = Utc::now();
        let a = s.start_attempt(&id, "b").unwrap();
        let (owner, expires) = lease_of(&s, a.id);
        assert_eq!(owner.as_deref(), Some(lease_owner()));
        let expires = DateTime::parse_from_rfc3339(&expires.unwrap()).unwrap();
        let ttl = chrono::Duration::from_std(LEASE_TTL).unwrap();
        assert!(expires >= before + ttl && expires <= Utc::now() + ttl);
        let parts: Vec<&str> = lease_owner().rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "host:pid:nonce, got {}", lease_owner());
        assert_eq!(parts[1], std::process::id().to_string());
    }

    #[test]
    fn a_live_lease_is_not_taken_over_and_an_expired_one_is() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let (live, expired) = two_running_tasks(&s);
        let now = Utc::now();
        let a_live = s.start_attempt(&live, "b").unwrap();
        let a_expired = s.start_attempt(&expired, "b").unwrap();
        // Another host: its process cannot be checked, only its lease.
        set_lease(
            &s,
            a_live.id,
            "otherhost:4242:aa",
            now + chrono::Duration::seconds(30),
        );
        set_lease(
            &s,
            a_expired.id,
            "otherhost:4343:bb",
            now - chrono::Duration::seconds(1),
        );

        let r = s.recover_at("p", now).unwrap();
        assert_eq!(r.requeued, vec![expired.clone()]);
        assert_eq!(r.held.len(), 1);
        assert_eq!(r.held[0].task_id, live);
        assert_eq!(r.held[0].attempt_id, a_live.id);
        assert_eq!(r.held[0].owner, "otherhost:4242:aa");

        assert_eq!(s.attempts(&live).unwrap()[0].status, AttemptStatus::Running);
        assert_eq!(s.task(live.as_str()).unwrap().status, TaskStatus::Running);
        let taken = &s.attempts(&expired).unwrap()[0];
        assert_eq!(taken.status, AttemptStatus::Interrupted);
        assert!(
            taken.error.as_deref().unwrap().contains("expired"),
            "{:?}",
            taken.error
        );
        assert_eq!(
            s.task(expired.as_str()).unwrap().status,
            TaskStatus::Pending
        );

        // Once the live lease runs out without a heartbeat, it is taken over.
        let later = now + chrono::Duration::seconds(31);
        let r = s.recover_at("p", later).unwrap();
        assert_eq!(r.requeued, vec![live.clone()]);
        assert!(r.held.is_empty());
        assert_eq!(s.task(live.as_str()).unwrap().status, TaskStatus::Pending);
        assert_eq!(
            s.task(live.as_str()).unwrap().attempts,
            0,
            "interrupted attempts do not count"
        );
    }

    #[test]
    fn a_dead_predecessor_on_this_host_is_taken_over_at_once() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let (dead, alive) = two_running_tasks(&s);
        let now = Utc::now();
        let far = now + chrono::Duration::seconds(30);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let a_dead = s.start_attempt(&dead, "b").unwrap();
        let a_alive = s.start_attempt(&alive, "b").unwrap();
        set_lease(
            &s,
            a_dead.id,
            &format!("{}:{dead_pid}:cc", host_name()),
            far,
        );
        set_lease(
            &s,
            a_alive.id,
            &format!("{}:{}:dd", host_name(), sleeper.id()),
            far,
        );

        let r = s.recover_at("p", now).unwrap();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(r.requeued, vec![dead.clone()]);
        assert_eq!(
            r.held.iter().map(|h| h.task_id.clone()).collect::<Vec<_>>(),
            vec![alive]
        );
        let taken = &s.attempts(&dead).unwrap()[0];
        assert!(
            taken
                .error
                .as_deref()
                .unwrap()
                .contains("no longer running"),
            "{:?}",
            taken.error
        );

        // This process's own attempts (no worker holds them while recovery
        // runs) and an earlier process with this pid are gone too.
        assert!(owner_is_gone(lease_owner()));
        assert!(owner_is_gone(&format!(
            "{}:{}:other-nonce",
            host_name(),
            std::process::id()
        )));
        assert!(!owner_is_gone("not an owner"));
    }

    #[test]
    fn the_heartbeat_renews_only_this_processs_leases() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let (mine, theirs) = two_running_tasks(&s);
        let past = Utc::now() - chrono::Duration::seconds(5);
        let a_mine = s.start_attempt(&mine, "b").unwrap();
        let a_theirs = s.start_attempt(&theirs, "b").unwrap();
        set_lease(&s, a_mine.id, lease_owner(), past);
        set_lease(&s, a_theirs.id, "otherhost:1:ee", past);
        assert_eq!(s.renew_leases().unwrap(), 1);
        let renewed = DateTime::parse_from_rfc3339(&lease_of(&s, a_mine.id).1.unwrap()).unwrap();
        assert!(renewed > Utc::now() + chrono::Duration::seconds(20));
        assert_eq!(lease_of(&s, a_theirs.id).1, Some(ts(past)));
        // Finished attempts are not renewed.
        s.finish_attempt(a_mine.id, &AttemptFinish::new(AttemptStatus::Failed))
            .unwrap();
        assert_eq!(s.renew_leases().unwrap(), 0);
    }

    #[test]
    fn a_requested_interrupt_is_recorded_as_interrupted_and_a_cancel_as_cancelled() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let (stuck, cancelled) = two_running_tasks(&s);
        let a = s.start_attempt(&stuck, "b").unwrap();
        assert!(s
            .request_interrupt(&stuck, "stuck: no event for 2 s")
            .unwrap());
        // The first reason wins.
        assert!(!s.request_interrupt(&stuck, "shutdown").unwrap());
        let mut fin = AttemptFinish::new(AttemptStatus::Cancelled);
        fin.error = Some("cancelled during work".into());
        assert_eq!(s.finish_attempt(a.id, &fin).unwrap(), 0);
        let got = &s.attempts(&stuck).unwrap()[0];
        assert_eq!(got.status, AttemptStatus::Interrupted);
        assert_eq!(got.error.as_deref(), Some("stuck: no event for 2 s"));

        // A person's cancel stays a cancel.
        let b = s.start_attempt(&cancelled, "b").unwrap();
        s.cancel_task(cancelled.as_str()).unwrap();
        s.finish_attempt(b.id, &fin).unwrap();
        assert_eq!(
            s.attempts(&cancelled).unwrap()[0].status,
            AttemptStatus::Cancelled
        );

        // No running attempt: nothing to mark.
        assert!(!s.request_interrupt(&stuck, "x").unwrap());
        let c = s.start_attempt(&stuck, "b").unwrap();
        assert_eq!(
            s.interrupt_running(&stuck, "shutdown: orch is stopping")
                .unwrap(),
            1
        );
        let got = s.attempts(&stuck).unwrap();
        assert_eq!(got[1].id, c.id);
        assert_eq!(got[1].status, AttemptStatus::Interrupted);
        assert_eq!(s.task(stuck.as_str()).unwrap().attempts, 0);
    }
}
