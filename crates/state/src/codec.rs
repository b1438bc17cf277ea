//! Conversions between SQL rows and domain types.
//!
//! Timestamps are RFC3339 text in UTC with a fixed number of fractional
//! digits, so that comparing the strings orders them in time.

use crate::Cached;

use crate::error::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use orch_core::{Attempt, Task, TaskId};
use orch_protocol::{Event, EventKind};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use std::fmt::Display;

/// A decoding failure inside a row mapper; becomes `StateError::Corrupt`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadValue(String);

pub fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now() -> String {
    ts(Utc::now())
}

/// Reads a text column and decodes it with `parse`.
fn parsed<T, E: Display>(
    row: &Row<'_>,
    name: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<T> {
    let raw: String = row.get(name)?;
    parse(&raw).map_err(|e| {
        let idx = row.as_ref().column_index(name).unwrap_or(0);
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            Box::new(BadValue(format!("`{name}` = `{raw}`: {e}"))),
        )
    })
}

fn parsed_opt<T, E: Display>(
    row: &Row<'_>,
    name: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<Option<T>> {
    let raw: Option<String> = row.get(name)?;
    match raw {
        None => Ok(None),
        Some(_) => parsed(row, name, parse).map(Some),
    }
}

fn parse_ts(s: &str) -> std::result::Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc))
}

fn parse_json(s: &str) -> std::result::Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(s)
}

pub fn parse_event_kind(s: &str) -> std::result::Result<EventKind, String> {
    EventKind::parse(s).ok_or_else(|| format!("unknown event kind `{s}`"))
}

pub const TASK_COLUMNS: &str = "id, project, title, description, task_type, priority, \
    allowed_files, source, status, attempts, feedback, question, answer, failure_reason, \
    input_tokens, output_tokens, cost_usd, created_at, updated_at, acceptance_tests, \
    infra_failures, not_before, depends_on, plan_key, candidates, worker";

pub fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: TaskId(row.get("id")?),
        project: row.get("project")?,
        title: row.get("title")?,
        description: row.get("description")?,
        task_type: parsed(row, "task_type", str::parse)?,
        priority: row.get("priority")?,
        allowed_files: parsed(row, "allowed_files", |s| {
            serde_json::from_str::<Vec<String>>(s)
        })?,
        source: parsed(row, "source", str::parse)?,
        acceptance_tests: parsed(row, "acceptance_tests", |s| {
            serde_json::from_str::<Vec<String>>(s)
        })?,
        status: parsed(row, "status", str::parse)?,
        attempts: row.get("attempts")?,
        infra_failures: row.get("infra_failures")?,
        not_before: parsed_opt(row, "not_before", parse_ts)?,
        depends_on: parsed(row, "depends_on", |s| {
            serde_json::from_str::<Vec<TaskId>>(s)
        })?,
        plan_key: row.get("plan_key")?,
        candidates: row.get("candidates")?,
        worker: parsed_opt(row, "worker", str::parse)?,
        feedback: row.get("feedback")?,
        question: row.get("question")?,
        answer: row.get("answer")?,
        failure_reason: row.get("failure_reason")?,
        input_tokens: row.get("input_tokens")?,
        output_tokens: row.get("output_tokens")?,
        cost_usd: row.get("cost_usd")?,
        created_at: parsed(row, "created_at", parse_ts)?,
        updated_at: parsed(row, "updated_at", parse_ts)?,
    })
}

pub const ATTEMPT_COLUMNS: &str = "id, task_id, number, status, base_commit, head_commit, \
    summary, diff_stat, input_tokens, output_tokens, cost_usd, turns, started_at, finished_at, \
    duration_ms, verification, verdict, audit_path, error, kind, iterations, candidate, round, \
    branch, rank, rank_reason";

pub fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: row.get("id")?,
        task_id: TaskId(row.get("task_id")?),
        number: row.get("number")?,
        kind: parsed(row, "kind", str::parse)?,
        status: parsed(row, "status", str::parse)?,
        base_commit: row.get("base_commit")?,
        head_commit: row.get("head_commit")?,
        summary: row.get("summary")?,
        diff_stat: row.get("diff_stat")?,
        input_tokens: row.get("input_tokens")?,
        output_tokens: row.get("output_tokens")?,
        cost_usd: row.get("cost_usd")?,
        turns: row.get("turns")?,
        started_at: parsed(row, "started_at", parse_ts)?,
        finished_at: parsed_opt(row, "finished_at", parse_ts)?,
        duration_ms: row.get("duration_ms")?,
        verification: parsed_opt(row, "verification", parse_json)?,
        verdict: parsed_opt(row, "verdict", parse_json)?,
        audit_path: row.get("audit_path")?,
        error: row.get("error")?,
        iterations: parsed(row, "iterations", |s| {
            serde_json::from_str::<Vec<orch_core::RefineIteration>>(s)
        })?,
        candidate: row.get("candidate")?,
        round: row.get("round")?,
        branch: row.get("branch")?,
        rank: row.get("rank")?,
        rank_reason: row.get("rank_reason")?,
    })
}

pub const EVENT_COLUMNS: &str = "id, at, project, task_id, kind, message, data";

pub fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let kind = parsed(row, "kind", parse_event_kind)?;
    let data = parsed(row, "data", parse_json)?;
    // The payload is decoded as its kind's type: a row that does not fit
    // is reported like any other undecodable column.
    let payload = parsed(row, "data", |_| {
        Event::payload_from_parts(kind.as_str(), data)
    })?;
    Ok(Event {
        id: row.get("id")?,
        at: parsed(row, "at", parse_ts)?,
        project: row.get("project")?,
        task_id: row.get("task_id")?,
        message: row.get("message")?,
        payload,
    })
}

/// Appends one event; the caller's transaction makes it atomic with the
/// change it describes.
///
/// Every event is redacted here, on its way into the database, so no
/// emitter can forget to: the message and every string in the payload.
/// The event as stored is also kept for [`take_written`], so the bus
/// publishes it after the commit without reading it back.
pub fn insert_event(conn: &Connection, event: &Event) -> Result<i64> {
    let mut data = event.data_json();
    orch_core::redact::redact_json(&mut data);
    let message = orch_core::redact::redact(&event.message);
    let text = serde_json::to_string(&data)
        .map_err(|e| crate::StateError::Invalid(format!("event data is not serialisable: {e}")))?;
    conn.run_cached(
        "INSERT INTO events (at, project, task_id, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            ts(event.at),
            event.project,
            event.task_id,
            event.kind().as_str(),
            message,
            text
        ],
    )?;
    let id = conn.last_insert_rowid();
    // Decoded from the redacted data, exactly as a read of the row would.
    if let Ok(payload) = Event::payload_from_parts(event.kind().as_str(), data) {
        let stored = Event {
            id,
            at: stored_time(event.at),
            project: event.project.clone(),
            task_id: event.task_id.clone(),
            message: message.into_owned(),
            payload,
        };
        WRITTEN.with(|w| w.borrow_mut().push(stored));
    }
    Ok(id)
}

/// `at` as a read of its stored text gives it back: to the microsecond.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    at.with_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at)
}

thread_local! {
    /// Events inserted on this thread by writes not yet committed or
    /// discarded; a write's own start at [`written_mark`].
    static WRITTEN: std::cell::RefCell<Vec<Event>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where the events of a write about to start will begin.
pub fn written_mark() -> usize {
    WRITTEN.with(|w| w.borrow().len())
}

/// The events inserted since `mark` (by a write that ended), in order;
/// they are forgotten either way.
pub fn take_written(mark: usize) -> Vec<Event> {
    WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        let from = mark.min(w.len());
        w.split_off(from)
    })
}

/// Serialises an optional JSON value for a TEXT column.
pub fn json_text(value: Option<&serde_json::Value>) -> Result<Option<String>> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| crate::StateError::Invalid(format!("value is not serialisable as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let a = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let (sa, sb) = (ts(a), ts(b));
        assert_eq!(sa, "2024-01-02T03:04:05.000000Z");
        assert_eq!(sa.len(), sb.len());
        assert!(sa < sb);
        assert_eq!(parse_ts(&sb).unwrap(), b);
    }

    #[test]
    fn event_kinds_decode_from_their_names() {
        assert_eq!(
            parse_event_kind("status_changed"),
            Ok(EventKind::StatusChanged)
        );
        assert!(parse_event_kind("nope").unwrap_err().contains("nope"));
    }
}
