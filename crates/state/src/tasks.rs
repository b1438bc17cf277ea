//! Tasks: creation, lookup by id prefix, claiming and status changes.
//!
//! Every status change is a compare-and-set (`UPDATE … WHERE status = …`)
//! inside an IMMEDIATE transaction and records `StatusChanged` (plus any
//! more specific event) in that same transaction.

use crate::Cached;

use crate::codec::{insert_event, now, task_from_row, TASK_COLUMNS};
use crate::error::{Result, StateError};
use crate::projects::load_project;
use crate::Store;
use orch_core::{NewTask, Task, TaskId, TaskStatus, Usage};
#[cfg(test)]
use orch_protocol::EventKind;
use orch_protocol::{self as protocol, Event};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::BTreeMap;

/// Shortest id prefix accepted, so a stray keystroke does not pick a task.
pub const MIN_PREFIX_LEN: usize = 4;

/// How many candidate ids an Ambiguous error lists.
const MAX_LISTED_MATCHES: usize = 10;

pub(crate) fn load_task(conn: &Connection, id: &str) -> Result<Option<Task>> {
    Ok(conn
        .row_cached(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
            [id],
            task_from_row,
        )
        .optional()?)
}

fn task_not_found(id: &str) -> StateError {
    StateError::NotFound {
        what: format!("no task has id `{id}`; list task ids with `orch tasks --project <project>`"),
    }
}

pub(crate) fn require_task(conn: &Connection, id: &str) -> Result<Task> {
    load_task(conn, id)?.ok_or_else(|| task_not_found(id))
}

/// Exact id, else a unique prefix of at least `MIN_PREFIX_LEN` characters.
pub(crate) fn resolve_task(conn: &Connection, id_or_prefix: &str) -> Result<Task> {
    let needle = id_or_prefix.trim();
    if let Some(task) = load_task(conn, needle)? {
        return Ok(task);
    }
    if needle.chars().count() < MIN_PREFIX_LEN {
        return Err(StateError::NotFound {
            what: format!(
                "no task has id `{needle}`, and an id prefix needs at least {MIN_PREFIX_LEN} characters; \
                 list task ids with `orch tasks --project <project>`"
            ),
        });
    }
    // substr() rather than LIKE, so `%` or `_` typed by a user match literally.
    let mut st = conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut found = st
        .query_map(
            params![needle, MAX_LISTED_MATCHES as i64 + 1],
            task_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    match found.len() {
        0 => Err(task_not_found(needle)),
        1 => Ok(found.remove(0)),
        _ => {
            let mut matches: Vec<String> = found
                .into_iter()
                .take(MAX_LISTED_MATCHES)
                .map(|t| t.id.0)
                .collect();
            if matches.len() == MAX_LISTED_MATCHES {
                matches.push("…".into());
            }
            Err(StateError::Ambiguous {
                prefix: needle.to_string(),
                matches,
            })
        }
    }
}

/// Compare-and-set of one task's status plus its `StatusChanged` event.
/// Returns false (and records nothing) when the task was not in `from`.
pub(crate) fn cas_status(
    conn: &Connection,
    task: &Task,
    from: TaskStatus,
    to: TaskStatus,
    note: &str,
) -> Result<bool> {
    let n = conn.run_cached(
        "UPDATE tasks SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status = ?4",
        params![to.as_str(), now(), task.id.as_str(), from.as_str()],
    )?;
    if n == 0 {
        return Ok(false);
    }
    record_status_changed(conn, task, from, to, note)?;
    Ok(true)
}

/// The compare-and-set of [`Store::transition`], inside `tx`.
fn transition_in(
    tx: &Connection,
    id: &TaskId,
    from: &[TaskStatus],
    to: TaskStatus,
    note: &str,
) -> Result<bool> {
    let task = require_task(tx, id.as_str())?;
    let placeholders: Vec<String> = (0..from.len()).map(|i| format!("?{}", i + 4)).collect();
    let sql = format!(
        "UPDATE tasks SET status = ?1, updated_at = ?2 WHERE id = ?3 AND status IN ({})",
        placeholders.join(", ")
    );
    let mut args: Vec<Value> = vec![
        Value::Text(to.as_str().to_string()),
        Value::Text(now()),
        Value::Text(id.0.clone()),
    ];
    args.extend(from.iter().map(|s| Value::Text(s.as_str().to_string())));
    if tx.run_cached(&sql, params_from_iter(args))? == 0 {
        return Ok(false);
    }
    // The IMMEDIATE transaction held the write lock since the read, so
    // `task.status` is the status the update replaced.
    record_status_changed(tx, &task, task.status, to, note)?;
    Ok(true)
}

fn record_status_changed(
    conn: &Connection,
    task: &Task,
    from: TaskStatus,
    to: TaskStatus,
    note: &str,
) -> Result<()> {
    let message = if note.is_empty() {
        format!("{from} → {to}")
    } else {
        format!("{from} → {to}: {note}")
    };
    let payload = protocol::StatusChanged {
        from,
        to,
        note: (!note.is_empty()).then(|| note.to_string()),
    };
    let ev = Event::new(&task.project, payload, message).task(task.id.as_str());
    insert_event(conn, &ev)?;
    let ended = |s: TaskStatus| matches!(s, TaskStatus::Failed | TaskStatus::Cancelled);
    if ended(to) {
        // In the same transaction: a task waiting for this one would
        // otherwise wait forever, silently.
        fail_dependents(conn, task.id.as_str())?;
    } else if ended(from) && to == TaskStatus::Pending {
        // A retried dependency takes back the tasks it failed.
        revive_dependents(conn, task.id.as_str())?;
    }
    Ok(())
}

/// How the failure reason of a task failed because of `dep_id` starts.
fn dependency_reason_prefix(dep_id: &str) -> String {
    format!("dependency {dep_id} ")
}

/// Puts back to pending the tasks that failed only because `dep_id`
/// (pending again now) had failed or was cancelled; they wait for it again.
fn revive_dependents(conn: &Connection, dep_id: &str) -> Result<()> {
    let ids: Vec<String> = {
        let mut st = conn.prepare_cached(
            "SELECT t.id FROM tasks t WHERE t.status = 'failed'
               AND substr(t.failure_reason, 1, length(?2)) = ?2
               AND EXISTS (SELECT 1 FROM json_each(t.depends_on) d WHERE d.value = ?1)
             ORDER BY t.created_at ASC, t.rowid ASC",
        )?;
        let ids = st
            .query_map(params![dep_id, dependency_reason_prefix(dep_id)], |r| {
                r.get(0)
            })?
            .collect::<rusqlite::Result<_>>()?;
        ids
    };
    for id in ids {
        let task = require_task(conn, &id)?;
        conn.run_cached(
            "UPDATE tasks SET failure_reason = NULL WHERE id = ?1",
            [id.as_str()],
        )?;
        cas_status(
            conn,
            &task,
            TaskStatus::Failed,
            TaskStatus::Pending,
            &format!("dependency {dep_id} was retried"),
        )?;
    }
    Ok(())
}

/// Fails every pending task that depends on `dep_id` (now failed or
/// cancelled), with a reason naming it. Their own dependents follow through
/// `cas_status`, so a whole chain fails at once.
fn fail_dependents(conn: &Connection, dep_id: &str) -> Result<()> {
    let dep = require_task(conn, dep_id)?;
    let ids: Vec<String> = {
        let mut st = conn.prepare_cached(
            "SELECT t.id FROM tasks t WHERE t.status = 'pending'
               AND EXISTS (SELECT 1 FROM json_each(t.depends_on) d WHERE d.value = ?1)
             ORDER BY t.created_at ASC, t.rowid ASC",
        )?;
        let ids = st
            .query_map([dep_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids
    };
    let reason = dependency_failure_reason(&dep);
    for id in ids {
        let task = require_task(conn, &id)?;
        fail_pending(conn, &task, &reason)?;
    }
    Ok(())
}

/// Why a task cannot start because `dep` will never merge.
fn dependency_failure_reason(dep: &Task) -> String {
    let what = match dep.status {
        TaskStatus::Cancelled => "was cancelled".to_string(),
        _ => match dep
            .failure_reason
            .as_deref()
            .and_then(|r| r.lines().map(str::trim).find(|l| !l.is_empty()))
        {
            Some(why) if !why.is_empty() => {
                let why: String = why.chars().take(200).collect();
                format!("failed ({why})")
            }
            _ => "failed".to_string(),
        },
    };
    format!(
        "{}\"{}\" {what}, so this task cannot start; \
         retrying the dependency puts this task back in the queue",
        dependency_reason_prefix(dep.id.as_str()),
        dep.title
    )
}

/// Moves a pending task to failed with `reason`.
fn fail_pending(conn: &Connection, task: &Task, reason: &str) -> Result<bool> {
    if task.status != TaskStatus::Pending {
        return Ok(false);
    }
    conn.run_cached(
        "UPDATE tasks SET failure_reason = ?1 WHERE id = ?2 AND status = 'pending'",
        params![reason, task.id.as_str()],
    )?;
    cas_status(conn, task, TaskStatus::Pending, TaskStatus::Failed, reason)
}

/// Fails the project's pending tasks that wait for a failed or cancelled
/// task: the safety net for dependencies that ended by a path that did not
/// propagate (an older orch, a hand edit).
fn fail_blocked_forever(conn: &Connection, project: &str) -> Result<()> {
    let pairs: Vec<(String, String)> = {
        let mut st = conn.prepare_cached(
            "SELECT t.id, u.id FROM tasks t, json_each(t.depends_on) d
               JOIN tasks u ON u.id = d.value
             WHERE t.project = ?1 AND t.status = 'pending' AND u.status IN ('failed', 'cancelled')
             ORDER BY t.created_at ASC, t.rowid ASC",
        )?;
        let pairs = st
            .query_map([project], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        pairs
    };
    for (id, dep_id) in pairs {
        let task = require_task(conn, &id)?;
        let dep = require_task(conn, &dep_id)?;
        fail_pending(conn, &task, &dependency_failure_reason(&dep))?;
    }
    Ok(())
}

/// Resolves each dependency (an id or a unique prefix) to a full task id,
/// without duplicates. A dependency that can never merge is refused: the
/// new task would wait forever.
fn resolve_dependencies(conn: &Connection, deps: &[TaskId]) -> Result<Vec<TaskId>> {
    let mut out: Vec<TaskId> = Vec::with_capacity(deps.len());
    for dep in deps {
        let task = match resolve_task(conn, dep.as_str()) {
            Ok(t) => t,
            Err(StateError::NotFound { what }) => {
                return Err(StateError::NotFound {
                    what: format!("dependency `{}`: {what}", dep.as_str().trim()),
                })
            }
            Err(e) => return Err(e),
        };
        if matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(StateError::InvalidTransition {
                task: task.id.0.clone(),
                from: task.status,
                wanted:
                    "be a dependency (it will never merge, so the new task would never start); \
                         drop it from the dependencies, or retry it first"
                        .into(),
            });
        }
        if !out.contains(&task.id) {
            out.push(task.id);
        }
    }
    Ok(out)
}

/// Inserts a pending task and its `TaskCreated` event; `add_task` and plan
/// imports share it.
pub(crate) fn insert_task(conn: &Connection, new: &NewTask) -> Result<Task> {
    if new.title.trim().is_empty() {
        return Err(StateError::Invalid(
            "task title is empty; give the task a title".into(),
        ));
    }
    if let Some(n) = new
        .candidates
        .filter(|n| !(1..=orch_core::MAX_CANDIDATES).contains(n))
    {
        return Err(StateError::Invalid(format!(
            "candidates = {n}: expected 1 to {} attempts in parallel per round",
            orch_core::MAX_CANDIDATES
        )));
    }
    let allowed = serde_json::to_string(&new.allowed_files)
        .map_err(|e| StateError::Invalid(format!("allowed_files are not serialisable: {e}")))?;
    let accept = serde_json::to_string(&new.acceptance_tests)
        .map_err(|e| StateError::Invalid(format!("acceptance_tests are not serialisable: {e}")))?;
    load_project(conn, &new.project)?;
    let depends_on = resolve_dependencies(conn, &new.depends_on)?;
    let depends = serde_json::to_string(&depends_on)
        .map_err(|e| StateError::Invalid(format!("depends_on is not serialisable: {e}")))?;
    if let Some(key) = &new.plan_key {
        let taken: Option<String> = conn
            .row_cached(
                "SELECT id FROM tasks WHERE project = ?1 AND plan_key = ?2",
                params![new.project, key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = taken {
            return Err(StateError::Invalid(format!(
                "plan key `{key}` already belongs to task {id} in project {}; \
                 each plan section becomes one task (import the plan again to add only new sections)",
                new.project
            )));
        }
    }
    let id = TaskId::new();
    let at = now();
    conn.run_cached(
        "INSERT INTO tasks (id, project, title, description, task_type, priority, allowed_files,
                            source, status, created_at, updated_at, acceptance_tests,
                            depends_on, plan_key, candidates, worker)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            id.as_str(),
            new.project,
            new.title,
            new.description,
            new.task_type.as_str(),
            new.priority,
            allowed,
            new.source.as_str(),
            at,
            accept,
            depends,
            new.plan_key,
            new.candidates,
            new.worker.map(|w| w.as_str())
        ],
    )?;
    let payload = protocol::TaskCreated {
        title: new.title.clone(),
        task_type: new.task_type.as_str().to_string(),
        priority: new.priority,
        source: new.source.as_str().to_string(),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        plan_key: new.plan_key.clone(),
        worker: new.worker.map(|w| w.as_str().to_string()),
        candidates: new.candidates,
    };
    let ev = Event::new(
        &new.project,
        payload,
        format!("created task {id}: {}", new.title),
    )
    .task(id.as_str());
    insert_event(conn, &ev)?;
    require_task(conn, id.as_str())
}

impl Store {
    /// Creates a pending task in a registered project. `depends_on` may
    /// hold ids or unique prefixes (stored as full ids); each must exist
    /// and must not be failed or cancelled. The task is not claimed until
    /// every dependency is merged.
    pub fn add_task(&self, new: &NewTask) -> Result<Task> {
        self.write(|tx| insert_task(tx, new))
    }

    /// Looks a task up by exact id or by a unique prefix of at least four
    /// characters.
    pub fn task(&self, id_or_prefix: &str) -> Result<Task> {
        self.read(|tx| resolve_task(tx, id_or_prefix))
    }

    /// Tasks, highest priority first, then oldest first.
    pub fn tasks(&self, project: Option<&str>, status: Option<TaskStatus>) -> Result<Vec<Task>> {
        self.read(|tx| {
            let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            if let Some(p) = project {
                args.push(Value::Text(p.to_string()));
                sql.push_str(&format!(" AND project = ?{}", args.len()));
            }
            if let Some(s) = status {
                args.push(Value::Text(s.as_str().to_string()));
                sql.push_str(&format!(" AND status = ?{}", args.len()));
            }
            sql.push_str(" ORDER BY priority DESC, created_at ASC, rowid ASC");
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st
                .query_map(params_from_iter(args), task_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Number of tasks per status name, with every status present (zeros
    /// included).
    pub fn count_by_status(&self, project: &str) -> Result<BTreeMap<String, u64>> {
        self.read(|tx| {
            let mut counts: BTreeMap<String, u64> = TaskStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect();
            let mut st = tx.prepare_cached(
                "SELECT status, COUNT(*) FROM tasks WHERE project = ?1 GROUP BY status",
            )?;
            let rows = st.query_map([project], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })?;
            for row in rows {
                let (status, n) = row?;
                counts.insert(status, n);
            }
            Ok(counts)
        })
    }

    /// Atomically moves up to `limit` pending tasks of `project` whose
    /// dependencies are all merged to running, highest priority and oldest
    /// first, and returns them. Pending tasks that wait for a failed or
    /// cancelled task are failed first, naming it. Concurrent
    /// claimers (threads or processes) never receive the same task.
    /// Pending tasks that can run now or after their backoff: every task
    /// they depend on is merged. (Tasks held up behind a person or an
    /// unfinished dependency are not counted.)
    pub fn count_ready(&self, project: &str) -> Result<u64> {
        self.read(|tx| {
            Ok(tx.row_cached(
                "SELECT COUNT(*) FROM tasks t WHERE t.project = ?1 AND t.status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM json_each(t.depends_on) d
                                   JOIN tasks u ON u.id = d.value WHERE u.status != 'merged')",
                [project],
                |r| r.get(0),
            )?)
        })
    }

    pub fn claim_pending(&self, project: &str, limit: usize) -> Result<Vec<Task>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            fail_blocked_forever(tx, project)?;
            let ids: Vec<String> = {
                // A task waits until every task it depends on is merged.
                let mut st = tx.prepare_cached(
                    "SELECT t.id FROM tasks t WHERE t.project = ?1 AND t.status = 'pending'
                       AND (t.not_before IS NULL OR t.not_before <= ?3)
                       AND NOT EXISTS (SELECT 1 FROM json_each(t.depends_on) d
                                       JOIN tasks u ON u.id = d.value WHERE u.status != 'merged')
                     ORDER BY t.priority DESC, t.created_at ASC, t.rowid ASC LIMIT ?2",
                )?;
                let ids = st
                    .query_map(params![project, limit, now()], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                ids
            };
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                let task = require_task(tx, &id)?;
                if !cas_status(
                    tx,
                    &task,
                    TaskStatus::Pending,
                    TaskStatus::Running,
                    "claimed",
                )? {
                    continue;
                }
                let ev = Event::new(
                    project,
                    protocol::TaskClaimed {},
                    format!("claimed task {id}: {}", task.title),
                )
                .task(id.as_str());
                insert_event(tx, &ev)?;
                claimed.push(require_task(tx, &id)?);
            }
            Ok(claimed)
        })
    }

    /// Compare-and-set: moves the task to `to` only if its status is one of
    /// `from`. Returns false (recording nothing) if it was not.
    pub fn transition(
        &self,
        id: &TaskId,
        from: &[TaskStatus],
        to: TaskStatus,
        note: &str,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        self.write(|tx| transition_in(tx, id, from, to, note))
    }

    /// [`Self::transition`] of each task of `ids`, in one transaction:
    /// whether each moved, in order. An unknown id writes nothing.
    pub fn transition_all(
        &self,
        ids: &[TaskId],
        from: &[TaskStatus],
        to: TaskStatus,
        note: &str,
    ) -> Result<Vec<bool>> {
        if from.is_empty() || ids.is_empty() {
            return Ok(vec![false; ids.len()]);
        }
        self.write(|tx| {
            ids.iter()
                .map(|id| transition_in(tx, id, from, to, note))
                .collect()
        })
    }

    /// Puts an in-flight task back to pending, not to be claimed before
    /// `not_before` (the backoff after an infrastructure failure). False
    /// when the task had already left its in-flight state (cancelled, say).
    pub fn defer_task(
        &self,
        id: &TaskId,
        not_before: chrono::DateTime<chrono::Utc>,
        note: &str,
    ) -> Result<bool> {
        self.write(|tx| {
            let task = require_task(tx, id.as_str())?;
            if !task.status.is_in_flight() {
                return Ok(false);
            }
            tx.run_cached(
                "UPDATE tasks SET not_before = ?1 WHERE id = ?2",
                params![crate::codec::ts(not_before), id.as_str()],
            )?;
            cas_status(tx, &task, task.status, TaskStatus::Pending, note)
        })
    }

    /// Sets or clears the feedback given to the task's next attempt.
    pub fn set_feedback(&self, id: &TaskId, feedback: Option<&str>) -> Result<()> {
        self.write(|tx| {
            // Unchanged feedback (the usual pass: none before, none after)
            // writes no page.
            let n = tx.run_cached(
                "UPDATE tasks SET feedback = ?1, updated_at = ?2 WHERE id = ?3 AND feedback IS NOT ?1",
                params![feedback, now(), id.as_str()],
            )?;
            if n == 0 && !tx.exists_cached("SELECT 1 FROM tasks WHERE id = ?1", [id.as_str()])? {
                return Err(task_not_found(id.as_str()));
            }
            Ok(())
        })
    }

    /// A worker asked a question: the task waits in needs_human.
    pub fn ask_human(&self, id: &TaskId, question: &str) -> Result<()> {
        self.write(|tx| {
            let task = require_task(tx, id.as_str())?;
            if !task.status.is_in_flight() {
                return Err(StateError::InvalidTransition {
                    task: id.0.clone(),
                    from: task.status,
                    wanted: "ask a human (only running, verifying, judging or merging tasks can)"
                        .into(),
                });
            }
            tx.run_cached(
                "UPDATE tasks SET question = ?1, answer = NULL WHERE id = ?2",
                params![question, id.as_str()],
            )?;
            let ev = Event::new(
                &task.project,
                protocol::HumanAsked {
                    question: question.to_string(),
                },
                format!("task {id} asks: {question}"),
            )
            .task(id.as_str());
            insert_event(tx, &ev)?;
            cas_status(
                tx,
                &task,
                task.status,
                TaskStatus::NeedsHuman,
                "asked a human",
            )?;
            Ok(())
        })
    }

    /// A person answered: the task returns to pending with the answer for
    /// its next attempt.
    pub fn answer(&self, id_or_prefix: &str, answer: &str) -> Result<Task> {
        self.write(|tx| {
            let task = resolve_task(tx, id_or_prefix)?;
            if task.status != TaskStatus::NeedsHuman {
                return Err(StateError::InvalidTransition {
                    task: task.id.0.clone(),
                    from: task.status,
                    wanted: "take an answer (only needs_human tasks wait for one)".into(),
                });
            }
            tx.run_cached(
                "UPDATE tasks SET answer = ?1 WHERE id = ?2",
                params![answer, task.id.as_str()],
            )?;
            let ev = Event::new(
                &task.project,
                protocol::HumanAnswered {
                    question: task.question.clone(),
                    answer: answer.to_string(),
                },
                format!("task {} answered", task.id),
            )
            .task(task.id.as_str());
            insert_event(tx, &ev)?;
            cas_status(
                tx,
                &task,
                TaskStatus::NeedsHuman,
                TaskStatus::Pending,
                "answered",
            )?;
            require_task(tx, task.id.as_str())
        })
    }

    /// Marks a non-terminal task failed, with the reason.
    pub fn fail_task(&self, id: &TaskId, reason: &str) -> Result<()> {
        self.write(|tx| {
            let task = require_task(tx, id.as_str())?;
            if task.status.is_terminal() {
                return Err(StateError::InvalidTransition {
                    task: id.0.clone(),
                    from: task.status,
                    wanted: "be marked failed (it has already finished)".into(),
                });
            }
            tx.run_cached(
                "UPDATE tasks SET failure_reason = ?1 WHERE id = ?2",
                params![reason, id.as_str()],
            )?;
            cas_status(tx, &task, task.status, TaskStatus::Failed, reason)?;
            Ok(())
        })
    }

    /// Cancels a non-terminal task. A worker still running it notices when
    /// its next compare-and-set transition fails.
    pub fn cancel_task(&self, id_or_prefix: &str) -> Result<Task> {
        self.write(|tx| {
            let task = resolve_task(tx, id_or_prefix)?;
            if task.status.is_terminal() {
                return Err(StateError::InvalidTransition {
                    task: task.id.0.clone(),
                    from: task.status,
                    wanted: "be cancelled (it has already finished)".into(),
                });
            }
            cas_status(tx, &task, task.status, TaskStatus::Cancelled, "cancelled")?;
            require_task(tx, task.id.as_str())
        })
    }

    /// A person asks for another go at a failed or cancelled task: it goes
    /// back to pending (compare-and-set, `StatusChanged` recorded) with its
    /// failure reason and backoff cleared. The attempt counters are kept, so
    /// the retry gets one more attempt, not a fresh `max_attempts`; the
    /// feedback is kept for the next attempt's prompt. Refused while a
    /// cancelled attempt is still stopping, so two workers never overlap.
    pub fn retry_task(&self, id_or_prefix: &str) -> Result<Task> {
        self.write(|tx| {
            let task = resolve_task(tx, id_or_prefix)?;
            if !matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
                return Err(StateError::InvalidTransition {
                    task: task.id.0.clone(),
                    from: task.status,
                    wanted: "be retried (only failed or cancelled tasks can)".into(),
                });
            }
            let running: i64 = tx.row_cached(
                "SELECT COUNT(*) FROM attempts WHERE task_id = ?1 AND status = 'running'",
                [task.id.as_str()],
                |r| r.get(0),
            )?;
            if running > 0 {
                return Err(StateError::InvalidTransition {
                    task: task.id.0.clone(),
                    from: task.status,
                    wanted: "be retried yet (its cancelled attempt is still stopping; try again in a moment)".into(),
                });
            }
            tx.run_cached(
                "UPDATE tasks SET failure_reason = NULL, not_before = NULL WHERE id = ?1",
                [task.id.as_str()],
            )?;
            cas_status(tx, &task, task.status, TaskStatus::Pending, "retried by a person")?;
            require_task(tx, task.id.as_str())
        })
    }

    /// Adds model usage to the task's totals, by SQL arithmetic.
    pub fn add_task_usage(&self, id: &TaskId, usage: &Usage) -> Result<()> {
        self.write(|tx| {
            let n = tx.run_cached(
                "UPDATE tasks SET input_tokens = input_tokens + ?1, output_tokens = output_tokens + ?2,
                                  cached_tokens = cached_tokens + ?3, cost_usd = cost_usd + ?4, updated_at = ?5
                 WHERE id = ?6",
                params![
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cached_tokens,
                    usage.cost_usd,
                    now(),
                    id.as_str()
                ],
            )?;
            if n == 0 {
                return Err(task_not_found(id.as_str()));
            }
            Ok(())
        })
    }

    /// Usage summed over tasks, of one project or of all.
    pub fn usage_totals(&self, project: Option<&str>) -> Result<Usage> {
        self.read(|tx| {
            if let Some(p) = project {
                // Distinguish "no usage yet" from a misspelt project.
                load_project(tx, p)?;
            }
            Ok(tx.row_cached(
                "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
                        COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cost_usd), 0.0)
                 FROM tasks WHERE ?1 IS NULL OR project = ?1",
                [project],
                |r| {
                    Ok(Usage {
                        input_tokens: r.get(0)?,
                        output_tokens: r.get(1)?,
                        cached_tokens: r.get(2)?,
                        cost_usd: r.get(3)?,
                    })
                },
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventFilter;
    use orch_core::{TaskSource, TaskType};

    fn store() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        s
    }

    fn new_task(title: &str, priority: i64) -> NewTask {
        NewTask {
            project: "p".into(),
            title: title.into(),
            description: format!("do {title}"),
            task_type: TaskType::Fix,
            priority,
            allowed_files: vec!["src/**".into(), "README.md".into()],
            source: TaskSource::Planner,
            acceptance_tests: vec!["tests/test_a.py::test_x".into()],
            ..NewTask::default()
        }
    }

    #[test]
    fn a_deferred_task_is_not_claimed_before_its_backoff_ends() {
        let s = store();
        let t = s.add_task(&new_task("flaky git", 0)).unwrap();
        assert_eq!(s.claim_pending("p", 1).unwrap().len(), 1);
        let later = chrono::Utc::now() + chrono::Duration::seconds(60);
        assert!(s
            .defer_task(&t.id, later, "infrastructure failure")
            .unwrap());
        let back = s.task(t.id.as_str()).unwrap();
        assert_eq!(back.status, TaskStatus::Pending);
        assert!(back.not_before.is_some());
        assert!(s.claim_pending("p", 1).unwrap().is_empty());
        // Once the time has come it is claimed again.
        assert!(
            !s.defer_task(&t.id, chrono::Utc::now(), "x").unwrap(),
            "pending is not in flight"
        );
        s.write(|tx| {
            tx.run_cached("UPDATE tasks SET not_before = ?1", [crate::codec::now()])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(s.claim_pending("p", 1).unwrap().len(), 1);
        // A cancelled task is not put back.
        s.cancel_task(t.id.as_str()).unwrap();
        assert!(!s.defer_task(&t.id, later, "x").unwrap());
        assert_eq!(s.task(t.id.as_str()).unwrap().status, TaskStatus::Cancelled);
    }

    #[test]
    fn a_task_s_worker_is_stored_and_a_bad_stored_one_is_reported() {
        let s = store();
        let plain = s.add_task(&new_task("plain", 0)).unwrap();
        let own = s
            .add_task(&NewTask {
                worker: Some(orch_core::WorkerKind::MiniSweAgent),
                ..new_task("by mini", 0)
            })
            .unwrap();
        assert_eq!(own.worker, Some(orch_core::WorkerKind::MiniSweAgent));
        assert_eq!(s.task(own.id.as_str()).unwrap().worker, own.worker);
        assert_eq!(s.task(plain.id.as_str()).unwrap().worker, None);
        let raw: Option<String> = s
            .read(|c| {
                Ok(c.query_row(
                    "SELECT worker FROM tasks WHERE id = ?1",
                    [own.id.as_str()],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(raw.as_deref(), Some("mini-swe-agent"));
        // A row no orch wrote names the column and the value.
        s.write(|tx| {
            tx.run_cached(
                "UPDATE tasks SET worker = 'cursor' WHERE id = ?1",
                [plain.id.as_str()],
            )?;
            Ok(())
        })
        .unwrap();
        let e = s.task(plain.id.as_str()).unwrap_err().to_string();
        assert!(e.contains("worker") && e.contains("cursor"), "{e}");
    }

    fn task_events(s: &Store, id: &TaskId) -> Vec<orch_protocol::Event> {
        s.events(&EventFilter {
            task_id: Some(id.0.clone()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn add_task_stores_everything_and_records_creation() {
        let s = store();
        let t = s.add_task(&new_task("one", 3)).unwrap();
        assert_eq!(t.status, TaskStatus::Pending);
        assert_eq!(t.attempts, 0);
        assert_eq!(
            t.allowed_files,
            vec!["src/**".to_string(), "README.md".to_string()]
        );
        assert_eq!(t.task_type, TaskType::Fix);
        assert_eq!(t.source, TaskSource::Planner);
        assert_eq!(s.task(t.id.as_str()).unwrap(), t);
        let evs = task_events(&s, &t.id);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind(), EventKind::TaskCreated);
        assert_eq!(evs[0].data_json()["title"], "one");
        assert_eq!(evs[0].data_json()["type"], "fix");
        assert_eq!(evs[0].data_json()["priority"], 3);
        assert_eq!(evs[0].data_json()["source"], "planner");
        // Unset worker and candidates are left out, not written as null.
        assert!(evs[0].data_json().get("worker").is_none());
        assert!(evs[0].data_json().get("candidates").is_none());
    }

    #[test]
    fn task_created_names_the_tasks_own_worker_and_candidates() {
        let s = store();
        let mut n = new_task("pick", 0);
        n.worker = Some(orch_core::WorkerKind::Codex);
        n.candidates = Some(3);
        let t = s.add_task(&n).unwrap();
        let evs = task_events(&s, &t.id);
        assert_eq!(evs[0].data_json()["worker"], "codex");
        assert_eq!(evs[0].data_json()["candidates"], 3);
    }

    #[test]
    fn add_task_needs_registered_project_and_title() {
        let s = store();
        let mut n = new_task("x", 0);
        n.project = "other".into();
        let err = s.add_task(&n).unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("registered projects: p"), "{err}");
        assert!(matches!(
            s.add_task(&new_task("  ", 0)),
            Err(StateError::Invalid(_))
        ));
    }

    /// Inserts a task with a chosen id, for prefix tests.
    fn insert_with_id(s: &Store, id: &str) {
        let conn = s.lock().unwrap();
        conn.run_cached(
            "INSERT INTO tasks (id, project, title, description, task_type, source, status, created_at, updated_at)
             VALUES (?1, 'p', 't', '', 'code', 'manual', 'pending', ?2, ?2)",
            params![id, now()],
        )
        .unwrap();
    }

    #[test]
    fn prefix_lookup_exact_unique_ambiguous_and_short() {
        let s = store();
        insert_with_id(&s, "abcd1111");
        insert_with_id(&s, "abcd2222");
        insert_with_id(&s, "abc");
        assert_eq!(s.task("abcd1").unwrap().id.0, "abcd1111");
        assert_eq!(s.task("abcd2222").unwrap().id.0, "abcd2222");
        // An exact id wins even when shorter than the minimum prefix.
        assert_eq!(s.task("abc").unwrap().id.0, "abc");
        match s.task("abcd").unwrap_err() {
            StateError::Ambiguous { prefix, matches } => {
                assert_eq!(prefix, "abcd");
                assert_eq!(
                    matches,
                    vec!["abcd1111".to_string(), "abcd2222".to_string()]
                );
            }
            other => panic!("expected Ambiguous, got {other:?}"),
        }
        let err = s.task("ab").unwrap_err();
        assert!(err.to_string().contains("at least 4 characters"), "{err}");
        let err = s.task("ffff").unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }));
        assert!(err.to_string().contains("orch tasks"), "{err}");
        // LIKE wildcards are not wildcards here.
        assert!(matches!(s.task("abc%"), Err(StateError::NotFound { .. })));
        assert!(matches!(s.task("abcd_"), Err(StateError::NotFound { .. })));
    }

    #[test]
    fn tasks_are_ordered_and_filtered_and_counted() {
        let s = store();
        let low = s.add_task(&new_task("low", 0)).unwrap();
        let high = s.add_task(&new_task("high", 5)).unwrap();
        let low2 = s.add_task(&new_task("low2", 0)).unwrap();
        let all = s.tasks(Some("p"), None).unwrap();
        let ids: Vec<_> = all.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, vec![high.id.clone(), low.id.clone(), low2.id.clone()]);
        assert_eq!(s.tasks(None, None).unwrap().len(), 3);
        assert!(s.tasks(Some("nope"), None).unwrap().is_empty());

        s.cancel_task(low.id.as_str()).unwrap();
        let pending = s.tasks(Some("p"), Some(TaskStatus::Pending)).unwrap();
        assert_eq!(pending.len(), 2);
        let counts = s.count_by_status("p").unwrap();
        assert_eq!(counts.len(), TaskStatus::ALL.len());
        assert_eq!(counts["pending"], 2);
        assert_eq!(counts["cancelled"], 1);
        assert_eq!(counts["merged"], 0);
    }

    #[test]
    fn claim_takes_priority_then_age_and_records_events() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let b = s.add_task(&new_task("b", 9)).unwrap();
        let c = s.add_task(&new_task("c", 0)).unwrap();
        assert!(s.claim_pending("p", 0).unwrap().is_empty());
        let first = s.claim_pending("p", 2).unwrap();
        let ids: Vec<_> = first.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, vec![b.id.clone(), a.id.clone()]);
        assert!(first.iter().all(|t| t.status == TaskStatus::Running));
        let rest = s.claim_pending("p", 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].id, c.id);
        assert!(s.claim_pending("p", 10).unwrap().is_empty());

        let kinds: Vec<_> = task_events(&s, &b.id)
            .into_iter()
            .map(|e| e.kind())
            .collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::TaskCreated,
                EventKind::StatusChanged,
                EventKind::TaskClaimed
            ]
        );
    }

    #[test]
    fn transition_is_compare_and_set() {
        let s = store();
        let t = s.add_task(&new_task("t", 0)).unwrap();
        // Wrong `from`: nothing changes, no event.
        assert!(!s
            .transition(&t.id, &[TaskStatus::Running], TaskStatus::Verifying, "x")
            .unwrap());
        assert!(!s
            .transition(&t.id, &[], TaskStatus::Verifying, "x")
            .unwrap());
        assert_eq!(task_events(&s, &t.id).len(), 1);
        assert_eq!(s.task(t.id.as_str()).unwrap().status, TaskStatus::Pending);

        assert!(s
            .transition(
                &t.id,
                &[TaskStatus::Running, TaskStatus::Pending],
                TaskStatus::Running,
                "go"
            )
            .unwrap());
        assert_eq!(s.task(t.id.as_str()).unwrap().status, TaskStatus::Running);
        let last = task_events(&s, &t.id).pop().unwrap();
        assert_eq!(last.kind(), EventKind::StatusChanged);
        assert_eq!(
            last.data_json(),
            serde_json::json!({"from": "pending", "to": "running", "note": "go"})
        );
        // The same CAS again fails: the status moved on.
        assert!(!s
            .transition(&t.id, &[TaskStatus::Pending], TaskStatus::Running, "again")
            .unwrap());

        let missing = TaskId("000000000000".into());
        assert!(matches!(
            s.transition(&missing, &[TaskStatus::Pending], TaskStatus::Running, ""),
            Err(StateError::NotFound { .. })
        ));
    }

    #[test]
    fn ask_and_answer_flow() {
        let s = store();
        let t = s.add_task(&new_task("t", 0)).unwrap();
        // Only in-flight tasks can ask.
        let err = s.ask_human(&t.id, "which?").unwrap_err();
        assert!(
            matches!(
                err,
                StateError::InvalidTransition {
                    from: TaskStatus::Pending,
                    ..
                }
            ),
            "{err:?}"
        );

        s.claim_pending("p", 1).unwrap();
        s.ask_human(&t.id, "Which database?").unwrap();
        let asked = s.task(t.id.as_str()).unwrap();
        assert_eq!(asked.status, TaskStatus::NeedsHuman);
        assert_eq!(asked.question.as_deref(), Some("Which database?"));

        let answered = s.answer(&t.id.0[..6], "Postgres").unwrap();
        assert_eq!(answered.status, TaskStatus::Pending);
        assert_eq!(answered.answer.as_deref(), Some("Postgres"));
        assert_eq!(answered.question.as_deref(), Some("Which database?"));

        // Answering again: the task is pending now, and the error says so.
        let err = s.answer(t.id.as_str(), "again").unwrap_err();
        match &err {
            StateError::InvalidTransition { from, .. } => assert_eq!(*from, TaskStatus::Pending),
            other => panic!("expected InvalidTransition, got {other:?}"),
        }
        assert!(err.to_string().contains("is pending"), "{err}");

        let kinds: Vec<_> = task_events(&s, &t.id)
            .into_iter()
            .map(|e| e.kind())
            .collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::TaskCreated,
                EventKind::StatusChanged,
                EventKind::TaskClaimed,
                EventKind::HumanAsked,
                EventKind::StatusChanged,
                EventKind::HumanAnswered,
                EventKind::StatusChanged,
            ]
        );
    }

    #[test]
    fn fail_and_cancel_only_open_tasks() {
        let s = store();
        let t = s.add_task(&new_task("t", 0)).unwrap();
        s.claim_pending("p", 1).unwrap();
        s.fail_task(&t.id, "3 attempts failed").unwrap();
        let failed = s.task(t.id.as_str()).unwrap();
        assert_eq!(failed.status, TaskStatus::Failed);
        assert_eq!(failed.failure_reason.as_deref(), Some("3 attempts failed"));
        assert!(matches!(
            s.fail_task(&t.id, "again"),
            Err(StateError::InvalidTransition { .. })
        ));
        let err = s.cancel_task(t.id.as_str()).unwrap_err();
        assert!(err.to_string().contains("is failed"), "{err}");

        let u = s.add_task(&new_task("u", 0)).unwrap();
        let c = s.cancel_task(u.id.as_str()).unwrap();
        assert_eq!(c.status, TaskStatus::Cancelled);
        let last = task_events(&s, &u.id).pop().unwrap();
        assert_eq!(last.data_json()["from"], "pending");
        assert_eq!(last.data_json()["to"], "cancelled");
    }

    fn with_deps(title: &str, deps: &[&TaskId]) -> NewTask {
        NewTask {
            depends_on: deps.iter().map(|d| (*d).clone()).collect(),
            ..new_task(title, 0)
        }
    }

    fn set_status(s: &Store, id: &TaskId, to: TaskStatus) {
        let t = s.task(id.as_str()).unwrap();
        assert!(s.transition(id, &[t.status], to, "test").unwrap());
    }

    #[test]
    fn a_task_is_claimed_only_when_every_dependency_merged() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let b = s.add_task(&new_task("b", 0)).unwrap();
        // Higher priority, but it waits for both.
        let c = s
            .add_task(&NewTask {
                priority: 9,
                ..with_deps("c", &[&a.id, &b.id])
            })
            .unwrap();
        assert_eq!(c.depends_on, vec![a.id.clone(), b.id.clone()]);

        let first: Vec<_> = s
            .claim_pending("p", 10)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(first, vec![a.id.clone(), b.id.clone()]);
        for status in [TaskStatus::Passed, TaskStatus::Merging] {
            set_status(&s, &a.id, status);
            assert!(
                s.claim_pending("p", 10).unwrap().is_empty(),
                "a is {status}"
            );
        }
        set_status(&s, &a.id, TaskStatus::Merged);
        assert!(
            s.claim_pending("p", 10).unwrap().is_empty(),
            "b is still running"
        );
        set_status(&s, &b.id, TaskStatus::NeedsHuman);
        assert!(
            s.claim_pending("p", 10).unwrap().is_empty(),
            "waiting for a person is not merged"
        );
        set_status(&s, &b.id, TaskStatus::Merged);
        let got = s.claim_pending("p", 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, c.id);
    }

    #[test]
    fn dependencies_are_resolved_from_prefixes_and_checked() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let prefix = TaskId(a.id.0[..6].to_string());
        let b = s.add_task(&with_deps("b", &[&prefix, &a.id])).unwrap();
        assert_eq!(b.depends_on, vec![a.id.clone()], "full id, once");
        let stored = task_events(&s, &b.id);
        assert_eq!(
            stored[0].data_json()["depends_on"],
            serde_json::json!([a.id.0])
        );

        let before = s.tasks(Some("p"), None).unwrap().len();
        let err = s
            .add_task(&with_deps("c", &[&TaskId("ffffffff".into())]))
            .unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("dependency `ffffffff`: no task"),
            "{err}"
        );
        let err = s
            .add_task(&with_deps("c", &[&TaskId("ab".into())]))
            .unwrap_err();
        assert!(err.to_string().contains("at least 4 characters"), "{err}");

        s.cancel_task(a.id.as_str()).unwrap();
        let err = s.add_task(&with_deps("c", &[&a.id])).unwrap_err();
        assert!(
            matches!(err, StateError::InvalidTransition { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("is cancelled") && err.to_string().contains("never merge"),
            "{err}"
        );
        // The refused ones wrote nothing.
        assert_eq!(s.tasks(Some("p"), None).unwrap().len(), before);
    }

    #[test]
    fn a_failed_or_cancelled_dependency_fails_its_dependents_at_once() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let b = s.add_task(&with_deps("b", &[&a.id])).unwrap();
        let c = s.add_task(&with_deps("c", &[&b.id])).unwrap();
        let other = s.add_task(&new_task("other", 0)).unwrap();
        s.claim_pending("p", 1).unwrap();
        s.fail_task(&a.id, "3 attempts failed: tests still red")
            .unwrap();

        let b2 = s.task(b.id.as_str()).unwrap();
        assert_eq!(b2.status, TaskStatus::Failed);
        let why = b2.failure_reason.unwrap();
        assert!(
            why.contains(&format!(
                "dependency {} \"a\" failed (3 attempts failed: tests still red)",
                a.id
            )),
            "{why}"
        );
        // The chain follows, naming the task it waited for.
        let c2 = s.task(c.id.as_str()).unwrap();
        assert_eq!(c2.status, TaskStatus::Failed);
        assert!(c2
            .failure_reason
            .unwrap()
            .contains(&format!("dependency {} \"b\" failed", b.id)));
        let last = task_events(&s, &c.id).pop().unwrap();
        assert_eq!(last.data_json()["from"], "pending");
        assert_eq!(last.data_json()["to"], "failed");
        // Unrelated work goes on.
        assert_eq!(
            s.task(other.id.as_str()).unwrap().status,
            TaskStatus::Pending
        );

        // Cancelling works the same way, through `transition` too.
        let d = s.add_task(&new_task("d", 0)).unwrap();
        let e = s.add_task(&with_deps("e", &[&d.id])).unwrap();
        assert!(s
            .transition(&d.id, &[TaskStatus::Pending], TaskStatus::Cancelled, "x")
            .unwrap());
        let e2 = s.task(e.id.as_str()).unwrap();
        assert_eq!(e2.status, TaskStatus::Failed);
        assert!(e2.failure_reason.unwrap().contains("was cancelled"));
    }

    #[test]
    fn retrying_a_dependency_puts_the_tasks_it_failed_back_in_the_queue() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let b = s.add_task(&with_deps("b", &[&a.id])).unwrap();
        let c = s.add_task(&with_deps("c", &[&b.id])).unwrap();
        // d failed on its own; a's retry leaves it alone.
        let d = s.add_task(&with_deps("d", &[&a.id])).unwrap();
        s.cancel_task(a.id.as_str()).unwrap();
        assert_eq!(s.task(c.id.as_str()).unwrap().status, TaskStatus::Failed);
        s.write(|tx| {
            tx.run_cached(
                "UPDATE tasks SET failure_reason = 'tests failed' WHERE id = ?1",
                [d.id.as_str()],
            )?;
            Ok(())
        })
        .unwrap();

        assert!(s
            .transition(
                &a.id,
                &[TaskStatus::Cancelled],
                TaskStatus::Pending,
                "retried"
            )
            .unwrap());
        for id in [&b.id, &c.id] {
            let t = s.task(id.as_str()).unwrap();
            assert_eq!(t.status, TaskStatus::Pending, "{}", t.title);
            assert_eq!(t.failure_reason, None);
        }
        assert_eq!(s.task(d.id.as_str()).unwrap().status, TaskStatus::Failed);
        // And they wait for it again.
        let claimed = s.claim_pending("p", 10).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, a.id);
    }

    #[test]
    fn claiming_fails_tasks_whose_dependency_ended_without_propagation() {
        let s = store();
        let a = s.add_task(&new_task("a", 0)).unwrap();
        let b = s.add_task(&with_deps("b", &[&a.id])).unwrap();
        // As an older orch or a hand edit would leave it.
        s.write(|tx| {
            tx.run_cached(
                "UPDATE tasks SET status = 'failed' WHERE id = ?1",
                [a.id.as_str()],
            )?;
            Ok(())
        })
        .unwrap();
        assert!(s.claim_pending("p", 10).unwrap().is_empty());
        let b2 = s.task(b.id.as_str()).unwrap();
        assert_eq!(b2.status, TaskStatus::Failed);
        assert!(b2.failure_reason.unwrap().contains(a.id.as_str()));
    }

    #[test]
    fn feedback_and_usage() {
        let s = store();
        let t = s.add_task(&new_task("t", 0)).unwrap();
        s.set_feedback(&t.id, Some("tests failed")).unwrap();
        assert_eq!(
            s.task(t.id.as_str()).unwrap().feedback.as_deref(),
            Some("tests failed")
        );
        s.set_feedback(&t.id, None).unwrap();
        assert_eq!(s.task(t.id.as_str()).unwrap().feedback, None);
        // Clearing what is already clear writes nothing, and is no error.
        let before = s.task(t.id.as_str()).unwrap().updated_at;
        s.set_feedback(&t.id, None).unwrap();
        assert_eq!(s.task(t.id.as_str()).unwrap().updated_at, before);

        let u = Usage {
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 7,
            cost_usd: 0.25,
        };
        s.add_task_usage(&t.id, &u).unwrap();
        s.add_task_usage(&t.id, &u).unwrap();
        let got = s.task(t.id.as_str()).unwrap();
        assert_eq!((got.input_tokens, got.output_tokens), (200, 40));
        assert!((got.cost_usd - 0.5).abs() < 1e-9);
        let total = s.usage_totals(Some("p")).unwrap();
        assert_eq!(total.cached_tokens, 14);
        assert_eq!(total.input_tokens, 200);
        assert_eq!(s.usage_totals(None).unwrap().output_tokens, 40);
        assert!(matches!(
            s.usage_totals(Some("nope")),
            Err(StateError::NotFound { .. })
        ));

        let missing = TaskId("000000000000".into());
        assert!(matches!(
            s.set_feedback(&missing, None),
            Err(StateError::NotFound { .. })
        ));
        assert!(matches!(
            s.add_task_usage(&missing, &u),
            Err(StateError::NotFound { .. })
        ));
    }
}
