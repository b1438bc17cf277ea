//! The shipped Grafana dashboard (deploy/grafana/orch.json) against what
//! orch exports: it imports as a normal dashboard (a `DS_PROMETHEUS` input
//! and data-source variable, unique panel ids, a query per target), and
//! every `orch_` metric its queries name is in a real rendering of
//! `/metrics` after one event of each kind the metrics count. The same
//! rendering shows that [`CATALOGUE`] (the README's table) lists exactly the
//! metrics exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_core::{AttemptStatus, NewTask, TaskStatus};
use orch_protocol::{self as pr, Event, HealthChange, Payload, Stage};
use orch_state::Store;
use orch_telemetry::metrics::{Metrics, CATALOGUE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/orch.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every PromQL query: the panels' targets and the query variables.
fn queries(dash: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

/// The `orch_…` metric names a query uses (label names and values, and
/// PromQL's functions, never start with `orch_` in ours).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("orch_") {
        let start = i + at;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if word_start {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The sample names of a rendering (`name` or `name_bucket`, ...).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The metric families of a rendering (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

fn ev(payload: impl Into<Payload>) -> Event {
    Event::new("calc", payload, "m").task("t1")
}

/// One event of each kind the metrics count.
fn representative_events() -> Vec<Event> {
    let step = |kind: &str| pr::StepSummary {
        kind: kind.into(),
        duration_ms: 900,
        ..Default::default()
    };
    let health = |change| pr::ProviderHealth {
        change,
        provider: "openai".into(),
        to_provider: Some("replay".into()),
        to_model: Some("backup".into()),
        ..Default::default()
    };
    let status = |from, to| pr::StatusChanged {
        from,
        to,
        note: None,
    };
    let mut events = vec![
        ev(pr::TaskCreated::default()),
        ev(pr::AttemptFinished {
            attempt_id: 1,
            number: 1,
            status: AttemptStatus::Passed,
            kind: orch_core::AttemptKind::Work,
            turns: 2,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: 0.01,
            error: None,
            task_attempts: 1,
            infra_failures: 0,
        }),
        ev(pr::ModelCall {
            role: "worker".into(),
            provider: "replay".into(),
            model: "worker".into(),
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 0,
            cost_usd: 0.02,
            duration_ms: 700,
            ok: true,
            ..Default::default()
        }),
        ev(pr::ModelTry {
            provider: "openai".into(),
            attempt: 1,
            max_attempts: 3,
            error: Some("HTTP 503".into()),
            retryable: true,
            wait_ms: Some(100),
            ..Default::default()
        }),
        ev(health(HealthChange::CircuitOpened)),
        ev(health(HealthChange::Fallback)),
        ev(pr::ToolCall {
            tool: "run".into(),
            ok: true,
            duration_ms: 300,
            ..Default::default()
        }),
        ev(pr::ToolRefused::default()),
        ev(pr::VerificationFinished {
            passed: true,
            steps: vec![step("setup"), step("lint"), step("test")],
            ..Default::default()
        }),
        ev(pr::VerdictRecorded {
            passed: true,
            ..Default::default()
        }),
        ev(pr::Merged {
            batch: 2,
            ..Default::default()
        }),
        ev(pr::MergeRejected::default()),
        ev(pr::InfraFailure::default()),
        ev(pr::PatrolInterrupted::default()),
        ev(pr::HumanAsked::default()),
        ev(pr::ProjectPaused::default()),
        ev(status(TaskStatus::Merging, TaskStatus::Merged)),
        ev(status(TaskStatus::Running, TaskStatus::Failed)),
        ev(status(TaskStatus::Pending, TaskStatus::Cancelled)),
        ev(pr::CandidatesStarted {
            candidates: 2,
            slots: vec![],
        }),
        ev(pr::CandidatesRanked {
            method: "judge".into(),
            ..Default::default()
        }),
        ev(pr::RefineIteration {
            attempt_id: 1,
            number: 1,
            iteration: 1,
            score: Some(7.0),
            outcome: orch_core::IterationOutcome::Kept,
            best_score: Some(7.0),
            best_iteration: 1,
            commit: None,
            reverted_to: None,
        }),
        ev(pr::RefineStopped {
            attempt_id: 1,
            number: 1,
            reason: pr::RefineStop::Threshold,
            iterations: 1,
            best_iteration: 1,
            best_score: Some(7.0),
            passed: true,
            detail: None,
        }),
        ev(pr::ConflictResolved::default()),
        ev(pr::ProjectCreated::default()),
        ev(pr::ProjectArchived::default()),
    ];
    for stage in [Stage::Work, Stage::Verify, Stage::Judge, Stage::Merge] {
        events.push(ev(pr::StageFinished::new(
            stage,
            Some(1),
            Duration::from_millis(1500),
            true,
        )));
    }
    events
}

/// What `/metrics` shows after the representative events, over a store
/// with one project and a task.
fn rendered() -> String {
    let store = Store::open_in_memory().unwrap();
    store.ensure_project("calc", "/repo").unwrap();
    store
        .add_task(&NewTask {
            project: "calc".into(),
            title: "t".into(),
            ..Default::default()
        })
        .unwrap();
    let m = Metrics::private();
    for e in representative_events() {
        m.observe(&e);
    }
    m.render(&store, &orch_config::Config::default())
}

#[test]
fn the_dashboard_imports_as_a_grafana_dashboard() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(!dash["title"].as_str().unwrap().is_empty());
    let inputs = dash["__inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input"
    );
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"));
    let mut ids = BTreeSet::new();
    let mut targets = 0;
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id twice: {title}"
        );
        let grid = &p["gridPos"];
        assert!(grid["w"].as_u64().unwrap() <= 24 && grid["h"].as_u64().unwrap() > 0);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let ts = p["targets"].as_array().unwrap();
        assert!(!ts.is_empty(), "{title} has no query");
        for t in ts {
            assert!(t["refId"].is_string() && t["expr"].is_string(), "{title}");
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            targets += 1;
        }
    }
    assert!(targets >= 10, "{targets} queries");
    let titles: Vec<String> = panels(&dash)
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for want in [
        "merged per hour",
        "stage durations",
        "spending per day",
        "failure and escalation",
        "retries",
        "merge-queue depth",
        "refinement iterations and conflict resolutions",
        "best-of-n candidates",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want}: {titles:?}"
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dash = dashboard();
    let used: BTreeSet<String> = queries(&dash)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    assert!(used.len() >= 12, "{used:?}");
    let text = rendered();
    let exported = sample_names(&text);
    for name in &used {
        let as_histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| exported.contains(&format!("{name}{s}")));
        assert!(
            exported.contains(name) || as_histogram,
            "the dashboard queries {name}, which /metrics does not export:\n{text}"
        );
    }
}

#[test]
fn the_catalogue_lists_exactly_the_metrics_exported() {
    let text = rendered();
    let exported = families(&text);
    let documented: BTreeSet<(String, String)> = CATALOGUE
        .iter()
        .filter(|m| {
            ![
                "orch_events_lagged_total",
                "orch_metrics_store_errors_total",
            ]
            .contains(&m.name)
        })
        .map(|m| (m.name.to_string(), m.kind.to_string()))
        .collect();
    // Exported with values: everything but the two error counters, which
    // only a lagging bus or a failing store makes.
    assert_eq!(exported, documented, "\n{text}");
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, stage) (rate(orch_stage_duration_seconds_bucket{project=~"$project"}[5m]))) / clamp_min(orch_tasks,1) + up{job="orch"} + xorch_no"#,
    );
    let want: BTreeSet<String> = ["orch_stage_duration_seconds_bucket", "orch_tasks"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}
