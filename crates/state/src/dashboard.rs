//! Read-only queries for the web dashboard (crates/server's `dashboard`):
//! recent and in-flight tasks, the newest event of each task, models and
//! workers per attempt, merges per hour and the time tasks spend in each
//! status. Nothing here writes.
//!
//! Event rows are read by their plain columns (`at`, `kind`, `message`)
//! and, for the few details a chart needs, single `data` fields through
//! `json_extract`, so these queries do not depend on the typed event
//! payloads: a field a payload no longer has reads as NULL.

use crate::Cached;

use crate::codec::{attempt_from_row, task_from_row, ts, ATTEMPT_COLUMNS, TASK_COLUMNS};
use crate::error::{Result, StateError};
use crate::Store;
use chrono::{DateTime, Utc};
use orch_core::{Attempt, Task, TaskId};
use rusqlite::{params, params_from_iter, Row};
use std::collections::BTreeMap;

/// The newest event of a task, as a line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The event kind's snake_case name.
    pub kind: String,
    pub message: String,
}

/// A stretch of time a task spent in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSpan {
    pub task_id: String,
    /// The status's name (`pending`, `running`, `verifying`, …).
    pub status: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl StatusSpan {
    /// The span's length in milliseconds (0 for a clock that went back).
    pub fn millis(&self) -> u64 {
        u64::try_from((self.to - self.from).num_milliseconds()).unwrap_or(0)
    }
}

/// The model (`provider:model`) used by one role in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptModel {
    pub attempt_id: i64,
    pub role: String,
    pub model: String,
    pub calls: u64,
}

fn parse_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let raw: String = row.get(idx)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                rusqlite::types::Type::Text,
                Box::new(StateError::Corrupt(format!("timestamp `{raw}`: {e}"))),
            )
        })
}

/// The status a `status_changed` event moved to: its `data.to`, else the
/// `from → to` of its message.
fn status_to(data_to: Option<String>, message: &str) -> Option<String> {
    data_to.filter(|s| !s.is_empty()).or_else(|| {
        let (_, rest) = message.split_once('→')?;
        let to = rest.split(':').next()?.trim();
        (!to.is_empty()).then(|| to.to_string())
    })
}

impl Store {
    /// The tasks changed most recently, newest first; `project` filters.
    pub fn recent_tasks(&self, project: Option<&str>, limit: usize) -> Result<Vec<Task>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR project = ?1)
                 ORDER BY updated_at DESC, rowid DESC LIMIT ?2"
            ))?;
            let rows = st
                .query_map(params![project, limit], task_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Tasks a worker holds now (running, verifying, judging, merging),
    /// oldest first, each with its newest attempt.
    pub fn tasks_in_flight(&self) -> Result<Vec<(Task, Option<Attempt>)>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE status IN ('running', 'verifying', 'judging', 'merging')
                 ORDER BY updated_at ASC, rowid ASC"
            ))?;
            let tasks = st
                .query_map([], task_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut at = tx.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1
                 ORDER BY number DESC LIMIT 1"
            ))?;
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                let latest = at
                    .query_map([t.id.as_str()], attempt_from_row)?
                    .next()
                    .transpose()?;
                out.push((t, latest));
            }
            Ok(out)
        })
    }

    /// The newest event of each of `ids` that has one.
    pub fn last_events(&self, ids: &[TaskId]) -> Result<BTreeMap<String, EventLine>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.read(|tx| {
            let marks: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "SELECT e.task_id, e.id, e.at, e.kind, e.message FROM events e
                 WHERE e.id IN (SELECT MAX(id) FROM events WHERE task_id IN ({}) GROUP BY task_id)",
                marks.join(", ")
            );
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st
                .query_map(params_from_iter(ids.iter().map(|t| t.as_str())), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        EventLine {
                            id: r.get(1)?,
                            at: parse_at(r, 2)?,
                            kind: r.get(3)?,
                            message: r.get(4)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
            Ok(rows)
        })
    }

    /// The id of the newest event (0 for an empty log): where a page's
    /// live updates start.
    pub fn last_event_id(&self) -> Result<i64> {
        self.read(|tx| {
            Ok(tx.row_cached("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
        })
    }

    /// The models each attempt of `task` called, by role (from the
    /// recorded model calls), in attempt order.
    pub fn attempt_models(&self, task: &TaskId) -> Result<Vec<AttemptModel>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT attempt_id, role, provider || ':' || model, COUNT(*) FROM model_calls
                 WHERE task_id = ?1 AND attempt_id IS NOT NULL
                 GROUP BY attempt_id, role, provider, model
                 ORDER BY attempt_id, MIN(id)",
            )?;
            let rows = st
                .query_map([task.as_str()], |r| {
                    Ok(AttemptModel {
                        attempt_id: r.get(0)?,
                        role: r.get(1)?,
                        model: r.get(2)?,
                        calls: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The worker (`builtin`, an agent CLI) that did each attempt of
    /// `task`, by attempt number, as its work stage recorded it.
    pub fn attempt_workers(&self, task: &TaskId) -> Result<BTreeMap<u32, String>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT json_extract(data, '$.attempt'), json_extract(data, '$.worker') FROM events
                 WHERE task_id = ?1 AND kind = 'stage_started'
                   AND json_extract(data, '$.stage') = 'work'
                 ORDER BY id",
            )?;
            let rows = st
                .query_map([task.as_str()], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<String>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(n, w)| Some((u32::try_from(n?).ok()?, w?)))
                .collect())
        })
    }

    /// Tasks merged per UTC hour (`YYYY-MM-DDTHH`) since `since`, oldest
    /// hour first; hours without a merge are left out.
    pub fn merged_per_hour(&self, since: DateTime<Utc>) -> Result<Vec<(String, u64)>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT substr(at, 1, 13) AS hour, COUNT(*) FROM events
                 WHERE kind = 'merged' AND task_id IS NOT NULL AND at >= ?1
                 GROUP BY hour ORDER BY hour",
            )?;
            let rows = st
                .query_map([ts(since)], |r| {
                    Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// How long the tasks created since `since` stayed in each status:
    /// from their creation (pending) and from each `status_changed` event
    /// to the next one. The status a task is in now has no span yet.
    pub fn status_spans(&self, since: DateTime<Utc>) -> Result<Vec<StatusSpan>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT t.id, t.created_at, e.at, json_extract(e.data, '$.to'), e.message
                 FROM tasks t JOIN events e ON e.task_id = t.id AND e.kind = 'status_changed'
                 WHERE t.created_at >= ?1
                 ORDER BY t.id, e.id",
            )?;
            let rows = st
                .query_map([ts(since)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        parse_at(r, 1)?,
                        parse_at(r, 2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut spans = Vec::new();
            let mut current: Option<(String, String, DateTime<Utc>)> = None;
            for (task, created, at, to, message) in rows {
                let Some(to) = status_to(to, &message) else {
                    continue;
                };
                let (status, from) = match current.take() {
                    Some((t, status, from)) if t == task => (status, from),
                    _ => ("pending".to_string(), created),
                };
                spans.push(StatusSpan {
                    task_id: task.clone(),
                    status,
                    from,
                    to: at,
                });
                current = Some((task, to, at));
            }
            Ok(spans)
        })
    }

    /// The attempts of each of `ids`, by number.
    pub fn attempts_of(&self, ids: &[TaskId]) -> Result<BTreeMap<String, Vec<Attempt>>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY number"
            ))?;
            let mut out = BTreeMap::new();
            for id in ids {
                let rows = st
                    .query_map([id.as_str()], attempt_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.insert(id.0.clone(), rows);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::{NewTask, TaskStatus};

    fn store_with_task() -> (Store, Task) {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/r").unwrap();
        let t = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        (s, t)
    }

    #[test]
    fn status_changes_become_spans_from_creation_on() {
        let (s, t) = store_with_task();
        let claimed = s.claim_pending("p", 1).unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(s
            .transition(&t.id, &[TaskStatus::Running], TaskStatus::Verifying, "")
            .unwrap());
        let spans = s
            .status_spans(t.created_at - chrono::Duration::seconds(1))
            .unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.status.as_str()).collect();
        assert_eq!(names, ["pending", "running"]);
        assert_eq!(spans[0].from, t.created_at);
        assert!(spans.iter().all(|s| s.to >= s.from));
        // Tasks created later than `since` only.
        let later = s
            .status_spans(Utc::now() + chrono::Duration::seconds(60))
            .unwrap();
        assert!(later.is_empty());
    }

    #[test]
    fn in_flight_recent_and_last_events() {
        let (s, t) = store_with_task();
        assert!(s.tasks_in_flight().unwrap().is_empty());
        s.claim_pending("p", 1).unwrap();
        let flying = s.tasks_in_flight().unwrap();
        assert_eq!(flying.len(), 1);
        assert_eq!(flying[0].0.id, t.id);
        assert!(flying[0].1.is_none(), "no attempt started yet");
        let recent = s.recent_tasks(Some("p"), 10).unwrap();
        assert_eq!(recent[0].id, t.id);
        assert!(s.recent_tasks(Some("other"), 10).unwrap().is_empty());
        let last = s.last_events(std::slice::from_ref(&t.id)).unwrap();
        assert!(last[t.id.as_str()].message.contains("claimed"), "{last:?}");
        assert_eq!(last[t.id.as_str()].id, s.last_event_id().unwrap());
        assert!(s.last_events(&[]).unwrap().is_empty());
        assert!(s.merged_per_hour(t.created_at).unwrap().is_empty());
        assert!(s.attempt_models(&t.id).unwrap().is_empty());
        assert!(s.attempt_workers(&t.id).unwrap().is_empty());
        assert_eq!(
            s.attempts_of(std::slice::from_ref(&t.id)).unwrap()[t.id.as_str()].len(),
            0
        );
    }

    #[test]
    fn the_status_moved_to_comes_from_data_or_the_message() {
        assert_eq!(status_to(Some("merged".into()), "x"), Some("merged".into()));
        assert_eq!(
            status_to(None, "running → verifying: checks"),
            Some("verifying".into())
        );
        assert_eq!(status_to(None, "no arrow"), None);
    }
}
