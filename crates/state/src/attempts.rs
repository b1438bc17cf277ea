//! Attempts: one appended row per try at a task, finished exactly once, and
//! crash recovery for attempts a dead process left running.

use crate::codec::{attempt_from_row, insert_event, json_text, now, ts, ATTEMPT_COLUMNS};
use crate::error::{Result, StateError};
use crate::tasks::{cas_status, require_task};
use crate::Store;
use chrono::{DateTime, Utc};
use orch_core::{Attempt, AttemptStatus, Event, EventKind, TaskId, TaskStatus, Usage};
use rusqlite::{params, Connection, OptionalExtension};

/// The error recorded on attempts found still running after a restart.
pub const INTERRUPTED_ERROR: &str = "process died mid-attempt";

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
        }
    }
}

/// Whether an attempt that ended this way counts against max_attempts.
fn counts_against_budget(status: AttemptStatus) -> bool {
    matches!(status, AttemptStatus::Passed | AttemptStatus::Failed)
}

fn load_attempt(conn: &Connection, attempt_id: i64) -> Result<Attempt> {
    conn.query_row(
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

fn elapsed_ms(since: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    u64::try_from((until - since).num_milliseconds()).unwrap_or(0)
}

impl Store {
    /// Appends a running attempt numbered one past the task's last.
    pub fn start_attempt(&self, task: &TaskId, base_commit: &str) -> Result<Attempt> {
        self.write(|tx| {
            let t = require_task(tx, task.as_str())?;
            // Computed inside the write transaction, so two starters cannot
            // pick the same number (and UNIQUE(task_id, number) backs it up).
            let number: u32 = tx.query_row(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE task_id = ?1",
                [task.as_str()],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO attempts (task_id, number, status, base_commit, started_at)
                 VALUES (?1, ?2, 'running', ?3, ?4)",
                params![task.as_str(), number, base_commit, now()],
            )?;
            let attempt_id = tx.last_insert_rowid();
            let ev = Event::new(
                &t.project,
                EventKind::AttemptStarted,
                format!("attempt {number} of task {task} started"),
            )
            .task(task.as_str())
            .data(serde_json::json!({
                "attempt_id": attempt_id,
                "number": number,
                "base_commit": base_commit,
            }));
            insert_event(tx, &ev)?;
            load_attempt(tx, attempt_id)
        })
    }

    /// Writes an attempt's outcome, once. Passed, failed and error outcomes
    /// add one to the task's attempt counter in the same transaction.
    /// Returns the task's attempt count afterwards.
    ///
    /// Usage in `fin` is stored on the attempt only; task totals grow through
    /// `add_task_usage`, so usage is never counted twice.
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
            let finished = Utc::now();
            let n = tx.execute(
                "UPDATE attempts SET status = ?1, head_commit = ?2, summary = ?3, diff_stat = ?4,
                        input_tokens = ?5, output_tokens = ?6, cached_tokens = ?7, cost_usd = ?8, turns = ?9,
                        finished_at = ?10, duration_ms = ?11, verification = ?12, verdict = ?13,
                        audit_path = ?14, error = ?15
                 WHERE id = ?16 AND status = 'running'",
                params![
                    fin.status.as_str(),
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
                    fin.error,
                    attempt_id
                ],
            )?;
            if n != 1 {
                return Err(StateError::AttemptNotRunning { attempt_id, status: "unknown".into() });
            }
            let task_attempts: u32 = if counts_against_budget(fin.status) {
                tx.query_row(
                    "UPDATE tasks SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1 RETURNING attempts",
                    params![attempt.task_id.as_str(), ts(finished)],
                    |r| r.get(0),
                )?
            } else {
                tx.query_row("SELECT attempts FROM tasks WHERE id = ?1", [attempt.task_id.as_str()], |r| r.get(0))?
            };
            if fin.status == AttemptStatus::Error {
                tx.execute(
                    "UPDATE tasks SET infra_failures = infra_failures + 1 WHERE id = ?1",
                    [attempt.task_id.as_str()],
                )?;
            }
            let task = require_task(tx, attempt.task_id.as_str())?;
            let ev = Event::new(
                &task.project,
                EventKind::AttemptFinished,
                format!("attempt {} of task {} finished: {}", attempt.number, task.id, fin.status.as_str()),
            )
            .task(task.id.as_str())
            .data(serde_json::json!({
                "attempt_id": attempt_id,
                "number": attempt.number,
                "status": fin.status.as_str(),
                "turns": fin.turns,
                "input_tokens": fin.usage.input_tokens,
                "output_tokens": fin.usage.output_tokens,
                "cost_usd": fin.usage.cost_usd,
                "error": fin.error,
                "task_attempts": task_attempts,
                "infra_failures": task.infra_failures,
            }));
            insert_event(tx, &ev)?;
            Ok(task_attempts)
        })
    }

    /// A task's attempts, by number.
    pub fn attempts(&self, task: &TaskId) -> Result<Vec<Attempt>> {
        self.read(|tx| {
            let mut st = tx.prepare(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY number"
            ))?;
            let rows = st
                .query_map([task.as_str()], attempt_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// After a crash: in one transaction, marks the project's running
    /// attempts interrupted (they do not count against max_attempts), puts
    /// running/verifying/judging tasks back to pending and merging tasks back
    /// to passed (the merge queue retries them). Returns the affected tasks.
    pub fn recover_interrupted(&self, project: &str) -> Result<Vec<TaskId>> {
        self.write(|tx| {
            crate::projects::load_project(tx, project)?;
            let finished = Utc::now();
            let mut affected: Vec<TaskId> = Vec::new();
            let mut note = |id: &TaskId| {
                if !affected.contains(id) {
                    affected.push(id.clone());
                }
            };

            let stale: Vec<Attempt> = {
                let mut st = tx.prepare(&format!(
                    "SELECT {} FROM attempts a JOIN tasks t ON t.id = a.task_id
                     WHERE t.project = ?1 AND a.status = 'running' ORDER BY a.id",
                    ATTEMPT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
                ))?;
                let rows = st.query_map([project], attempt_from_row)?.collect::<rusqlite::Result<_>>()?;
                rows
            };
            for a in &stale {
                tx.execute(
                    "UPDATE attempts SET status = 'interrupted', finished_at = ?1, duration_ms = ?2, error = ?3
                     WHERE id = ?4 AND status = 'running'",
                    params![ts(finished), elapsed_ms(a.started_at, finished), INTERRUPTED_ERROR, a.id],
                )?;
                let ev = Event::new(
                    project,
                    EventKind::AttemptInterrupted,
                    format!("attempt {} of task {} was interrupted: {INTERRUPTED_ERROR}", a.number, a.task_id),
                )
                .task(a.task_id.as_str())
                .data(serde_json::json!({ "attempt_id": a.id, "number": a.number }));
                insert_event(tx, &ev)?;
                note(&a.task_id);
            }

            let in_flight: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT id FROM tasks WHERE project = ?1
                     AND status IN ('running', 'verifying', 'judging', 'merging') ORDER BY rowid",
                )?;
                let rows = st.query_map([project], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
                rows
            };
            for id in in_flight {
                let task = require_task(tx, &id)?;
                let to = if task.status == TaskStatus::Merging { TaskStatus::Passed } else { TaskStatus::Pending };
                let ev = Event::new(
                    project,
                    EventKind::Recovered,
                    format!("task {id} was {} when orch stopped; now {to}", task.status),
                )
                .task(id.as_str())
                .data(serde_json::json!({ "from": task.status.as_str(), "to": to.as_str() }));
                insert_event(tx, &ev)?;
                cas_status(tx, &task, task.status, to, "recovered after restart")?;
                note(&task.id);
            }
            Ok(affected)
        })
    }
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
            .filter(|e| e.kind == EventKind::AttemptFinished)
            .map(|e| e.data["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            finished,
            vec!["failed", "needs_human", "error", "cancelled", "passed"]
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
            .execute(
                "UPDATE attempts SET status = 'failed' WHERE id = ?1",
                [a.id],
            )
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn.execute("DELETE FROM attempts", []).unwrap_err();
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
        assert_eq!(atts[1].error.as_deref(), Some(INTERRUPTED_ERROR));
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
                .filter(|e| e.kind == EventKind::AttemptInterrupted)
                .count(),
            1
        );
        let recovered: Vec<_> = evs
            .iter()
            .filter(|e| e.kind == EventKind::Recovered)
            .collect();
        assert_eq!(recovered.len(), 3);
        assert!(recovered
            .iter()
            .any(|e| e.data["from"] == "merging" && e.data["to"] == "passed"));
    }
}
