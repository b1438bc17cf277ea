//! Model calls and what they cost. Every call — planner, worker, judge,
//! failed tries included — is one appended row; roll-ups by attempt, task,
//! role, project and day are queries over those rows, and budgets read
//! them before each call.

use crate::Cached;

use crate::error::Result;
use crate::Store;
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One call to a model, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    pub at: DateTime<Utc>,
    pub project: String,
    pub task_id: Option<String>,
    pub attempt_id: Option<i64>,
    /// planner, architect, worker, reviewer, judge, doctor
    pub role: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// Spending summed over one group (day × project × role × model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    pub day: String,
    pub project: String,
    pub role: String,
    pub model: String,
    pub calls: u64,
    pub failed_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
}

impl Store {
    pub fn record_model_call(&self, call: &ModelCall) -> Result<i64> {
        self.write(|tx| {
            tx.run_cached(
                "INSERT INTO model_calls (at, day, project, task_id, attempt_id, role, provider, model,
                     input_tokens, output_tokens, cached_tokens, cost_usd, duration_ms, ok, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    call.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    call.at.format("%Y-%m-%d").to_string(),
                    call.project,
                    call.task_id,
                    call.attempt_id,
                    call.role,
                    call.provider,
                    call.model,
                    call.input_tokens as i64,
                    call.output_tokens as i64,
                    call.cached_tokens as i64,
                    call.cost_usd,
                    call.duration_ms as i64,
                    call.ok,
                    call.error,
                ],
            )?;
            let id = tx.last_insert_rowid();
            crate::codec::insert_event(tx, &model_call_event(call))?;
            Ok(id)
        })
    }

    /// Spending grouped by day, project, role and model, oldest day first.
    /// `since` is a UTC day (`YYYY-MM-DD`), inclusive.
    pub fn cost_report(&self, project: Option<&str>, since: Option<&str>) -> Result<Vec<CostRow>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT day, project, role, model, COUNT(*), SUM(1 - ok), SUM(input_tokens), SUM(output_tokens),
                        SUM(cached_tokens), SUM(cost_usd)
                 FROM model_calls
                 WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR day >= ?2)
                 GROUP BY day, project, role, model
                 ORDER BY day, project, role, model",
            )?;
            let rows = stmt
                .query_map(params![project, since], |r| {
                    Ok(CostRow {
                        day: r.get(0)?,
                        project: r.get(1)?,
                        role: r.get(2)?,
                        model: r.get(3)?,
                        calls: r.get::<_, i64>(4)? as u64,
                        failed_calls: r.get::<_, i64>(5)? as u64,
                        input_tokens: r.get::<_, i64>(6)? as u64,
                        output_tokens: r.get::<_, i64>(7)? as u64,
                        cached_tokens: r.get::<_, i64>(8)? as u64,
                        cost_usd: r.get(9)?,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// What a project spent on one UTC day (`YYYY-MM-DD`).
    pub fn spent_on_day(&self, project: &str, day: &str) -> Result<f64> {
        self.read(|tx| {
            Ok(tx.row_cached(
                "SELECT COALESCE(SUM(cost_usd), 0.0) FROM model_calls WHERE project = ?1 AND day = ?2",
                params![project, day],
                |r| r.get(0),
            )?)
        })
    }

    /// What a task's calls cost so far (all roles, all attempts).
    pub fn spent_on_task(&self, task_id: &str) -> Result<f64> {
        self.read(|tx| {
            Ok(tx.row_cached(
                "SELECT COALESCE(SUM(cost_usd), 0.0) FROM model_calls WHERE task_id = ?1",
                params![task_id],
                |r| r.get(0),
            )?)
        })
    }
}

/// The event a model call records, in the same transaction as its row.
fn model_call_event(call: &ModelCall) -> orch_protocol::Event {
    let outcome = match &call.error {
        None => format!(
            "{} in / {} out tokens, {:.1} s",
            call.input_tokens,
            call.output_tokens,
            call.duration_ms as f64 / 1000.0
        ),
        Some(e) => format!("failed: {e}"),
    };
    let payload = orch_protocol::ModelCall {
        role: call.role.clone(),
        attempt_id: call.attempt_id,
        provider: call.provider.clone(),
        model: call.model.clone(),
        input_tokens: call.input_tokens,
        output_tokens: call.output_tokens,
        cached_tokens: call.cached_tokens,
        cost_usd: call.cost_usd,
        duration_ms: call.duration_ms,
        ok: call.ok,
        error: call.error.clone(),
    };
    let message = format!(
        "{} call to {}:{}: {outcome}",
        call.role, call.provider, call.model
    );
    let mut event = orch_protocol::Event::new(&call.project, payload, message);
    event.at = call.at;
    event.task_id = call.task_id.clone();
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        project: &str,
        task: Option<&str>,
        role: &str,
        cost: f64,
        day: &str,
        ok: bool,
    ) -> ModelCall {
        ModelCall {
            at: DateTime::parse_from_rfc3339(&format!("{day}T12:00:00Z"))
                .unwrap()
                .with_timezone(&Utc),
            project: project.into(),
            task_id: task.map(str::to_string),
            attempt_id: None,
            role: role.into(),
            provider: "p".into(),
            model: "m".into(),
            input_tokens: 100,
            output_tokens: 10,
            cached_tokens: 5,
            cost_usd: cost,
            duration_ms: 3,
            ok,
            error: (!ok).then(|| "boom".into()),
        }
    }

    #[test]
    fn calls_roll_up_by_day_project_role_and_task() {
        let s = Store::open_in_memory().unwrap();
        s.record_model_call(&call("a", Some("t1"), "worker", 0.5, "2026-01-01", true))
            .unwrap();
        s.record_model_call(&call("a", Some("t1"), "worker", 0.25, "2026-01-01", false))
            .unwrap();
        s.record_model_call(&call("a", Some("t1"), "judge", 0.1, "2026-01-02", true))
            .unwrap();
        s.record_model_call(&call("a", None, "planner", 0.2, "2026-01-02", true))
            .unwrap();
        s.record_model_call(&call("b", Some("t2"), "worker", 9.0, "2026-01-02", true))
            .unwrap();

        let rows = s.cost_report(Some("a"), None).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].role.as_str(), rows[0].calls, rows[0].failed_calls),
            ("worker", 2, 1)
        );
        assert!((rows[0].cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(rows[0].input_tokens, 200);
        let since = s.cost_report(None, Some("2026-01-02")).unwrap();
        assert_eq!(since.len(), 3);
        assert!(since.iter().all(|r| r.day == "2026-01-02"));
        assert!((s.spent_on_day("a", "2026-01-02").unwrap() - 0.3).abs() < 1e-9);
        assert!((s.spent_on_task("t1").unwrap() - 0.85).abs() < 1e-9);
        assert_eq!(s.spent_on_task("nope").unwrap(), 0.0);
    }

    #[test]
    fn model_calls_are_append_only() {
        let s = Store::open_in_memory().unwrap();
        s.record_model_call(&call("a", None, "worker", 1.0, "2026-01-01", true))
            .unwrap();
        let conn = s.lock().unwrap();
        assert!(conn
            .run_cached("UPDATE model_calls SET cost_usd = 0", [])
            .is_err());
        assert!(conn.run_cached("DELETE FROM model_calls", []).is_err());
    }
}
