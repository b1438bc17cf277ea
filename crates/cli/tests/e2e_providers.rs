//! End-to-end: costs and budgets, dry runs, `orch doctor`, and the
//! redaction layer, through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::FakeOpenAi;
use serde_json::{json, Value};

const SECRET: &str = "sk-test-secret-123";

fn fix_calls() -> Value {
    json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ])
}

#[test]
fn every_call_is_priced_and_rolled_up_by_role() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [worker_call(None, fix_calls()), judge_pass()]}),
        "",
    );
    fx.append_config("[prices.worker]\ninput = 1000.0\noutput = 2000.0\n\n[prices.judge]\ninput = 10.0\noutput = 10.0\n");
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);

    let report: Value =
        serde_json::from_str(&fx.orch_ok(&["cost", "--project", "calc", "--json"], 0)).unwrap();
    let worker = report["by_role"]["worker"]["cost_usd"].as_f64().unwrap();
    let judge = report["by_role"]["judge"]["cost_usd"].as_f64().unwrap();
    assert!(worker > 0.0 && judge > 0.0, "{report}");
    assert!(
        worker > judge * 10.0,
        "the worker's price is far higher: {report}"
    );
    let total = report["total"]["cost_usd"].as_f64().unwrap();
    assert!((total - worker - judge).abs() < 1e-9);
    assert_eq!(report["total"]["calls"], 2);

    // The task's own cost is the same money.
    let task_cost = fx.task(&id)["task"]["cost_usd"].as_f64().unwrap();
    assert!(
        (task_cost - total).abs() < 1e-9,
        "task {task_cost} vs calls {total}"
    );
    let text = fx.orch_ok(&["cost", "--since", "today"], 0);
    assert!(text.contains("worker") && text.contains("total:"), "{text}");
    let bad = fx.orch(&["cost", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_task_budget_stops_the_worker_before_it_goes_over() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "times": 0, "tool_calls": [{"name": "list_files", "arguments": {"pattern": "*.py"}}]},
            judge_pass(),
        ]}),
        "max_budget_per_task_usd = 0.01\nmax_attempts = 3",
    );
    // About 300 input tokens per call: $0.003 per call in, plus the assumed output.
    fx.append_config("[prices.worker]\ninput = 10.0\noutput = 0.0\n");
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    let reason = shown["task"]["failure_reason"].as_str().unwrap();
    assert!(reason.contains("budget"), "{reason}");
    let spent = shown["task"]["cost_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 0.01, "spent {spent}");
    // It stopped for the budget, not the turn limit, and did not retry.
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 1);
    assert!(shown["attempts"][0]["turns"].as_u64().unwrap() < 20);
}

#[test]
fn the_daily_budget_pauses_the_project_with_a_clear_message() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "times": 0, "tool_calls": [{"name": "list_files", "arguments": {}}]},
            judge_pass(),
        ]}),
        "daily_budget_usd = 0.02",
    );
    fx.append_config("[prices.worker]\ninput = 10.0\noutput = 0.0\n");
    let id = fx.add_task("Fix add", "");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("daily budget"), "{out}");
    let status: Value = serde_json::from_str(&fx.orch_ok(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["projects"][0]["paused"], true);
    assert!(status["projects"][0]["pause_reason"]
        .as_str()
        .unwrap()
        .contains("daily_budget_usd"));
    assert_eq!(
        fx.task(&id)["task"]["status"],
        "pending",
        "the task waits for the budget"
    );
    let report: Value = serde_json::from_str(&fx.orch_ok(&["cost", "--json"], 0)).unwrap();
    assert!(report["total"]["cost_usd"].as_f64().unwrap() <= 0.02);
}

#[test]
fn a_dry_run_sends_nothing_and_leaves_real_state_alone() {
    let fx = Fixture::new();
    std::fs::write(fx.repo.join("calc.py"), CALC_FIXED).unwrap();
    git(&fx.repo, &["commit", "-q", "-am", "green"]);
    // Nothing listens on this port: a real request would fail.
    fx.with_openai("http://127.0.0.1:9/v1", "max_attempts = 1");
    let id = fx.add_task("Fix add", "");
    let before = fx.main_sha();
    let out = fx.orch(&["--dry-run", "run", "--project", "calc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dry run"), "{stderr}");
    // The simulated worker's note walks the whole path and merges — in the
    // dry-run state and its scratch clone only (see e2e_dry_run.rs).
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dry: Value =
        serde_json::from_str(&fx.orch_ok(&["--dry-run", "show", &id, "--json"], 0)).unwrap();
    assert_eq!(dry["task"]["status"], "merged");
    assert_eq!(fx.task(&id)["task"]["status"], "pending");
    assert_eq!(fx.main_sha(), before);
    let cost: Value =
        serde_json::from_str(&fx.orch_ok(&["--dry-run", "cost", "--json"], 0)).unwrap();
    assert_eq!(cost["total"]["cost_usd"], 0.0);
    // ORCH_DRY_RUN=true does the same.
    let env = fx
        .orch_cmd(&["show", &id, "--json"])
        .env("ORCH_DRY_RUN", "true")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(v["task"]["status"], "merged");
}

#[test]
fn doctor_explains_bad_keys_and_unreachable_providers() {
    let fx = Fixture::new();
    let script: Script =
        serde_json::from_value(json!({"responses": [{"when": "report_status", "times": 0, "tool_calls": [{"name": "report_status", "arguments": {"status": "ok"}}]}, {"times": 0, "content": "OK"}]})).unwrap();
    let server = FakeOpenAi::start(script);
    server.set_api_key(SECRET);
    fx.with_openai(&server.base_url(), "");
    let ok = fx.orch_ok(&["doctor"], 0);
    assert!(ok.contains("ok   provider local"), "{ok}");
    assert!(ok.contains(" ms)"), "latency shown: {ok}");

    let bad = fx
        .orch_cmd(&["doctor", "--json"])
        .env("ORCH_TEST_KEY", "sk-wrong-key-456")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    let detail = v["checks"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("bad or missing API key (check ORCH_TEST_KEY)"),
        "{detail}"
    );
    assert!(
        !String::from_utf8_lossy(&bad.stdout).contains("sk-wrong-key-456"),
        "the key is never printed"
    );

    fx.with_openai("http://127.0.0.1:9/v1", "");
    let down = fx.orch(&["doctor"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stdout).contains("unreachable"));
}

#[test]
fn a_leaked_key_is_redacted_from_the_model_the_database_audit_and_logs() {
    let fx = Fixture::new();
    // The key sits in a file of the repository and in the sandbox's
    // environment, where a worker can print it.
    std::fs::write(fx.repo.join("notes.txt"), format!("deploy key: {SECRET}\n")).unwrap();
    git(&fx.repo, &["add", "notes.txt"]);
    git(&fx.repo, &["commit", "-q", "-m", "notes"]);
    let script: Script = serde_json::from_value(json!({"responses": [
        worker_call(None, json!([
            {"name": "read_file", "arguments": {"path": "notes.txt"}},
            {"name": "run", "arguments": {"command": "echo key=$ORCH_TEST_KEY"}}
        ])),
        worker_call(None, fix_calls()),
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    server.set_api_key(SECRET);
    fx.with_openai(&server.base_url(), "pass_env = [\"ORCH_TEST_KEY\"]");
    let id = fx.add_task("Fix add", "");
    let out = fx
        .orch_cmd(&["run", "--project", "calc"])
        .env("ORCH_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fx.task(&id)["task"]["status"], "merged");

    // The model saw the marker, not the key (the header carried the key).
    let bodies: Vec<String> = server.requests().iter().map(|r| r.to_string()).collect();
    assert!(bodies.iter().all(|b| !b.contains(SECRET)));
    assert!(bodies.iter().any(|b| b.contains("[redacted]")));
    // Nothing under data_dir holds it: database, events, audit files.
    let mut files = vec![fx.root().join(".orch")];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "secret in {}",
                p.display()
            );
        }
    }
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!logs.contains(SECRET), "secret in the output or logs");
}

#[test]
fn provider_failures_are_retried_recorded_and_charged_once() {
    let fx = Fixture::new();
    let script: Script = serde_json::from_value(
        json!({"responses": [worker_call(None, fix_calls()), judge_pass()]}),
    )
    .unwrap();
    let server = FakeOpenAi::start(script);
    server.set_api_key(SECRET);
    // The first two requests fail: a rate limit with Retry-After, then a 500.
    server.push_faults([
        orch_testkit::Fault::http_429(Some(1)),
        orch_testkit::Fault::http_500(),
    ]);
    fx.with_openai(&server.base_url(), "");
    fx.append_config("[retry]\nschedule_seconds = [1, 1, 1]\njitter = 0.0\n\n[prices.worker]\ninput = 100.0\noutput = 100.0\n");
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");

    let events: Vec<Value> = serde_json::from_str(&fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "100000"],
        0,
    ))
    .unwrap();
    let tries: Vec<&Value> = events.iter().filter(|e| e["kind"] == "model_try").collect();
    let failed: Vec<&&Value> = tries
        .iter()
        .filter(|e| !e["data"]["error"].is_null())
        .collect();
    assert_eq!(failed.len(), 2, "{tries:?}");
    assert!(
        failed[0]["message"].as_str().unwrap().contains("429"),
        "{}",
        failed[0]["message"]
    );
    // Every try of a retried call is an event: 2 failed + the worker's third,
    // which succeeded; a call that succeeds at once (the judge's) is told by
    // its model_call event alone.
    assert_eq!(tries.len(), 3, "{tries:?}");
    let calls = events.iter().filter(|e| e["kind"] == "model_call").count();
    assert!(
        calls >= 2,
        "the worker's and the judge's calls are recorded"
    );
    // One worker call was billed, not three.
    let report: Value = serde_json::from_str(&fx.orch_ok(&["cost", "--json"], 0)).unwrap();
    assert_eq!(report["by_role"]["worker"]["calls"], 1, "{report}");
}

#[test]
fn the_architect_plans_before_the_worker_and_is_billed_as_its_own_role() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            {"model": "architect", "content": "1. In calc.py make add return a + b.\n2. Run the tests."},
            // The worker only acts on a prompt that carries the plan.
            worker_call(Some("In calc.py make add return a + b"), fix_calls()),
            judge_pass(),
        ]}),
        "architect_model = \"replay:architect\"",
    );
    fx.append_config("[prices.architect]\ninput = 5.0\noutput = 5.0\n");
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    let attempt_md = std::fs::read_to_string(
        fx.root()
            .join(format!(".orch/audit/calc/attempts/{id}-1.md")),
    )
    .unwrap();
    assert!(
        attempt_md.contains("## Plan from the architect"),
        "{attempt_md}"
    );
    let report: Value = serde_json::from_str(&fx.orch_ok(&["cost", "--json"], 0)).unwrap();
    assert_eq!(report["by_role"]["architect"]["calls"], 1, "{report}");
    assert!(report["by_role"]["architect"]["cost_usd"].as_f64().unwrap() > 0.0);
}
