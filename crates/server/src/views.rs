//! The JSON documents the CLI's `--json` prints and the API answers, built
//! in one place from the store so both always agree: the status of every
//! project, one task with its attempts, the cost report, and the checks on
//! a new task's fields.
//!
//! Nothing here writes: a view of a configured project the store has not
//! registered yet shows it empty.

use orch_config::{Config, ProjectConfig};
use orch_core::{Attempt, NewTask, Task, TaskId, TaskSource};
use orch_planner::task_file::{TaskFileError, TaskSpec};
use orch_state::{CostRow, StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One project in `orch status --json` and `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectStatus {
    pub name: String,
    /// The project's git repository.
    pub path: String,
    /// No new work starts while paused.
    pub paused: bool,
    /// Why the project was paused (by a person, a budget, failures in a row).
    pub pause_reason: Option<String>,
    /// Task count per status name; every status is present.
    pub tasks: BTreeMap<String, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// `orch status --json` and `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusDoc {
    pub projects: Vec<ProjectStatus>,
}

/// The status of one configured project.
pub fn project_status(
    config: &Config,
    store: &dyn StateStore,
    project: &ProjectConfig,
) -> Result<ProjectStatus, StateError> {
    let path = config.project_path(project).display().to_string();
    let (paused, pause_reason, usage) = match store.project(&project.name) {
        Ok(row) => (
            row.paused,
            row.pause_reason,
            store.usage_totals(Some(&project.name))?,
        ),
        Err(StateError::NotFound { .. }) => (false, None, orch_core::Usage::default()),
        Err(e) => return Err(e),
    };
    Ok(ProjectStatus {
        name: project.name.clone(),
        path,
        paused,
        pause_reason,
        tasks: store.count_by_status(&project.name)?,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: usage.cost_usd,
    })
}

/// Every configured project, in config order.
pub fn status(config: &Config, store: &dyn StateStore) -> Result<StatusDoc, StateError> {
    let projects = config
        .projects
        .iter()
        .map(|p| project_status(config, store, p))
        .collect::<Result<_, _>>()?;
    Ok(StatusDoc { projects })
}

/// `orch show TASK --json` and `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shown {
    pub task: Task,
    pub attempts: Vec<ShownAttempt>,
}

/// An attempt as `show` gives it: the stored attempt (with its verification
/// report and verdict) plus the ref that keeps its commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShownAttempt {
    #[serde(flatten)]
    pub attempt: Attempt,
    /// `refs/orch/attempts/<task>/<n>`, for attempts that made a commit.
    pub attempt_ref: Option<String>,
}

/// The ref that keeps an attempt's commit, when it made one.
pub fn attempt_ref(task: &Task, at: &Attempt) -> Option<String> {
    at.head_commit
        .as_ref()
        .map(|_| task.id.attempt_ref(at.number))
}

/// One task (by id or unique prefix) with its attempts.
pub fn show(store: &dyn StateStore, id_or_prefix: &str) -> Result<Shown, StateError> {
    let task = store.task(id_or_prefix)?;
    let attempts = store
        .attempts(&task.id)?
        .into_iter()
        .map(|at| ShownAttempt {
            attempt_ref: attempt_ref(&task, &at),
            attempt: at,
        })
        .collect();
    Ok(Shown { task, attempts })
}

/// Spending summed over a group of model calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub calls: u64,
    pub failed_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
}

impl Totals {
    fn add(&mut self, r: &CostRow) {
        self.calls += r.calls;
        self.failed_calls += r.failed_calls;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cost_usd += r.cost_usd;
    }
}

/// The schema of `orch_state::CostRow` (which lives in a crate without
/// utoipa); a test checks the two serialise the same fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CostRowSchema {
    /// UTC day, YYYY-MM-DD.
    day: String,
    project: String,
    /// planner, worker, judge, architect, reviewer.
    role: String,
    model: String,
    calls: u64,
    failed_calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_usd: f64,
}

/// `orch cost --json` and `GET /api/v1/cost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostDoc {
    /// First UTC day included (YYYY-MM-DD), or null for all time.
    pub since: Option<String>,
    /// One row per day × project × role × model.
    #[schema(value_type = Vec<CostRowSchema>)]
    pub rows: Vec<CostRow>,
    pub by_role: BTreeMap<String, Totals>,
    pub by_project: BTreeMap<String, Totals>,
    pub total: Totals,
}

/// Parses a `since` (YYYY-MM-DD, `today`, or days back like `7d`) into a
/// UTC day; the error says what is accepted.
pub fn parse_since(s: &str, today: chrono::NaiveDate) -> Result<String, String> {
    if s == "today" {
        return Ok(today.format("%Y-%m-%d").to_string());
    }
    if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        let day = today
            .checked_sub_days(chrono::Days::new(n))
            .ok_or_else(|| format!("`{s}` goes back too far; give fewer days"))?;
        return Ok(day.format("%Y-%m-%d").to_string());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| format!("`{s}`: expected YYYY-MM-DD, `today`, or days back like `7d`"))
}

/// The cost report of one project or all, from `since` (a UTC day).
pub fn cost(
    store: &dyn StateStore,
    project: Option<&str>,
    since: Option<String>,
) -> Result<CostDoc, StateError> {
    let rows = store.cost_report(project, since.as_deref())?;
    let mut total = Totals::default();
    let mut by_role: BTreeMap<String, Totals> = BTreeMap::new();
    let mut by_project: BTreeMap<String, Totals> = BTreeMap::new();
    for r in &rows {
        total.add(r);
        by_role.entry(r.role.clone()).or_default().add(r);
        by_project.entry(r.project.clone()).or_default().add(r);
    }
    Ok(CostDoc {
        since,
        rows,
        by_role,
        by_project,
        total,
    })
}

/// A field of a request that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON path (`allowed_files[2]`).
    pub field: String,
    /// What was expected, and the fix.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Turns a parsed task file (`orch add-task --file`, the body of `POST
/// /api/v1/projects/{project}/tasks`) into a task of `project`, resolving
/// its dependencies (ids or unique prefixes of tasks of the same project);
/// nothing is written. The result is ready for `Store::add_task`.
pub fn new_task(
    store: &dyn StateStore,
    project: &str,
    spec: &TaskSpec,
) -> Result<NewTask, FieldError> {
    let file_err = |e: TaskFileError| FieldError::new(e.field, e.message);
    spec.validate().map_err(file_err)?;
    let mut new = spec.to_new_task(Some(project)).map_err(file_err)?;
    let mut depends_on: Vec<TaskId> = Vec::with_capacity(new.depends_on.len());
    for (i, d) in new.depends_on.iter().enumerate() {
        let field = format!("depends_on[{i}]");
        let dep = store.task(d.as_str()).map_err(|e| match e {
            StateError::NotFound { .. } | StateError::Ambiguous { .. } => {
                FieldError::new(field.clone(), format!("`{field}`: {e}"))
            }
            other => FieldError::new(field.clone(), format!("cannot look the task up: {other}")),
        })?;
        if dep.project != project {
            return Err(FieldError::new(
                field.clone(),
                format!(
                    "`{field}`: task `{}` belongs to project `{}`, not `{project}`; a task can only wait for tasks of its own project",
                    dep.id, dep.project
                ),
            ));
        }
        if !depends_on.contains(&dep.id) {
            depends_on.push(dep.id);
        }
    }
    new.depends_on = depends_on;
    new.source = TaskSource::Manual;
    Ok(new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn since_accepts_dates_today_and_days_back() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        assert_eq!(parse_since("today", today).unwrap(), "2026-03-10");
        assert_eq!(parse_since("7d", today).unwrap(), "2026-03-03");
        assert_eq!(parse_since("2026-01-02", today).unwrap(), "2026-01-02");
        assert!(parse_since("last week", today)
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        assert!(parse_since("99999999999999d", today).is_err());
    }

    #[test]
    fn cost_row_schema_matches_cost_row() {
        use utoipa::PartialSchema;
        let row = CostRow {
            day: "d".into(),
            project: "p".into(),
            role: "r".into(),
            model: "m".into(),
            calls: 1,
            failed_calls: 0,
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cost_usd: 0.1,
        };
        let v = serde_json::to_value(&row).unwrap();
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let schema = serde_json::to_value(CostRowSchema::schema()).unwrap();
        let mut props: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        props.sort();
        assert_eq!(keys, props);
    }

    fn store() -> orch_state::Store {
        let s = orch_state::Store::open_in_memory().unwrap();
        s.ensure_project("p", "/r").unwrap();
        s.ensure_project("q", "/q").unwrap();
        s
    }

    #[test]
    fn new_task_checks_each_field() {
        let s = store();
        let req = |f: &dyn Fn(&mut TaskSpec)| {
            let mut r = TaskSpec {
                title: "t".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let e = new_task(&s, "p", &req(&|r| r.title = "  ".into())).unwrap_err();
        assert_eq!(e.field, "title");
        let e = new_task(
            &s,
            "p",
            &req(&|r| r.allowed_files = vec!["ok/*.py".into(), "../x".into()]),
        )
        .unwrap_err();
        assert_eq!(e.field, "allowed_files[1]");
        let e = new_task(&s, "p", &req(&|r| r.project = Some("q".into()))).unwrap_err();
        assert_eq!(e.field, "project");
        let e = new_task(&s, "p", &req(&|r| r.depends_on = vec!["zzzzzzzz".into()])).unwrap_err();
        assert_eq!(e.field, "depends_on[0]");

        let other = s
            .add_task(&NewTask {
                project: "q".into(),
                title: "o".into(),
                ..Default::default()
            })
            .unwrap();
        let e = new_task(&s, "p", &req(&|r| r.depends_on = vec![other.id.0.clone()])).unwrap_err();
        assert!(e.message.contains("its own project"), "{}", e.message);

        let first = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "first".into(),
                ..Default::default()
            })
            .unwrap();
        let ok = new_task(
            &s,
            "p",
            &req(&|r| {
                r.depends_on = vec![first.id.0[..6].to_string(), first.id.0.clone()];
                r.acceptance_tests = vec![" test_x.py ".into()];
            }),
        )
        .unwrap();
        assert_eq!(ok.depends_on, vec![first.id.clone()]);
        assert_eq!(ok.acceptance_tests, ["test_x.py"]);
        assert_eq!(ok.project, "p");
    }
}
