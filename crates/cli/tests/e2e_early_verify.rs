//! End-to-end: early verification. While the model thinks, the project's
//! checks run on a snapshot of what the agent wrote; an agent that finishes
//! without writing again is verified by that run, and the snapshot is what
//! is committed (not what the checks wrote). A write stops a run under way
//! and its stale result is never used; a failed early run is checked again
//! on the commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn turn(delay_ms: u64, calls: Value) -> Value {
    let mut v = worker_call(None, calls);
    v["delay_ms"] = json!(delay_ms);
    v
}

fn write(path: &str, content: &str) -> Value {
    json!([{"name": "write_file", "arguments": {"path": path, "content": content}}])
}

/// The attempt's own verification events (not the merge queue's).
fn attempt_checks(fx: &Fixture, id: &str) -> Vec<Value> {
    fx.events(id)
        .into_iter()
        .filter(|e| e["kind"] == "verification_finished" && e["data"]["stage"].is_null())
        .collect()
}

fn run_one(test_command: &str, extra: &str, script: Vec<Value>) -> (Fixture, String) {
    let fx = Fixture::new();
    let mut responses = script;
    responses.push(judge_pass());
    fx.with_replay(
        json!({ "responses": responses }),
        &format!("test_command = \"{test_command}\"\n{extra}"),
    );
    let id = fx.add_task("add a", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    (fx, id)
}

#[test]
fn checks_run_while_the_model_thinks_and_their_outputs_are_not_committed() {
    let script = vec![
        turn(0, write("a.txt", "a\n")),
        // The model thinks for a while after the write: the checks run now.
        turn(1500, json!([{"name": "list_files", "arguments": {}}])),
        turn(
            0,
            json!([{"name": "finish", "arguments": {"summary": "a"}}]),
        ),
    ];
    let (fx, id) = run_one("test -f a.txt && echo ran > out.txt", "", script.clone());
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    let checks = attempt_checks(&fx, &id);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0]["data"]["early"], true, "{:#}", checks[0]);
    assert!(checks[0]["message"]
        .as_str()
        .unwrap()
        .contains("checked while the model was thinking"));
    assert_eq!(fx.main_file("a.txt"), "a");
    // The check's own output came after the snapshot: not committed.
    assert_eq!(
        git(&fx.repo, &["ls-tree", "--name-only", "main", "out.txt"]),
        ""
    );

    // Turned off, the checks run after the last answer, as before.
    let (fx, id) = run_one(
        "test -f a.txt && echo ran > out.txt",
        "early_verify = false",
        script,
    );
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    let checks = attempt_checks(&fx, &id);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["data"]["early"], false, "{:#}", checks[0]);
}

#[test]
fn a_write_stops_the_run_under_way_and_its_stale_result_is_not_used() {
    // On the first snapshot (no b.txt) the check hangs; the second write
    // must stop it, and the check of the final state decides.
    let script = vec![
        turn(0, write("a.txt", "a\n")),
        turn(500, write("b.txt", "b\n")),
        turn(
            0,
            json!([{"name": "finish", "arguments": {"summary": "a and b"}}]),
        ),
    ];
    let started = Instant::now();
    let (fx, id) = run_one("test -f b.txt || sleep 60", "", script);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the stale check was waited for: {:?}",
        started.elapsed()
    );
    let task = fx.task(&id);
    assert_eq!(task["task"]["status"], "merged", "{task:#}");
    assert_eq!(task["task"]["attempts"], 1, "{task:#}");
    let checks = attempt_checks(&fx, &id);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0]["data"]["passed"], true);
    assert_eq!(fx.main_file("b.txt"), "b");
}

#[test]
fn a_check_that_fails_early_is_run_again_on_the_commit() {
    // Passes only once the change is committed: early, HEAD is the base.
    let script = vec![
        turn(0, write("calc.py", CALC_FIXED)),
        turn(1000, json!([{"name": "list_files", "arguments": {}}])),
        turn(
            0,
            json!([{"name": "finish", "arguments": {"summary": "fixed"}}]),
        ),
    ];
    let (fx, id) = run_one("git diff --quiet HEAD -- calc.py", "", script);
    let task = fx.task(&id);
    assert_eq!(task["task"]["status"], "merged", "{task:#}");
    assert_eq!(task["task"]["attempts"], 1, "{task:#}");
    let checks = attempt_checks(&fx, &id);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0]["data"]["early"], false, "{:#}", checks[0]);
    assert_eq!(checks[0]["data"]["passed"], true, "{:#}", checks[0]);
}
