//! End-to-end: parallel workers whose changes conflict, and a `kill -9` in
//! the middle of a run followed by a resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::FakeOpenAi;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn two_parallel_conflicting_tasks_end_merged_with_main_green() {
    let fx = Fixture::new();
    let sum = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";
    let sum_documented = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return b + a\n\n\ndef mul(a, b):\n    return a * b\n";
    let sum_documented_v2 = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";
    fx.with_replay(
        json!({"responses": [
            // Task B's second attempt, after the merge queue sent it back.
            {"model": "worker", "when": "conflicts with work that landed", "tool_calls": [
                {"name": "write_file", "arguments": {"path": "calc.py", "content": sum_documented_v2}},
                {"name": "finish", "arguments": {"summary": "documented add on top of the fix"}}
            ]},
            {"model": "worker", "when": "Task: Fix add", "tool_calls": [
                {"name": "write_file", "arguments": {"path": "calc.py", "content": sum}},
                {"name": "finish", "arguments": {"summary": "fixed"}}
            ]},
            {"model": "worker", "when": "Task: Document add", "tool_calls": [
                {"name": "write_file", "arguments": {"path": "calc.py", "content": sum_documented}},
                {"name": "finish", "arguments": {"summary": "documented and fixed"}}
            ]},
            judge_pass(),
        ]}),
        // The conflict goes back as feedback (e2e_conflicts tests the resolver).
        "max_workers = 2\nresolve_conflicts = \"feedback\"",
    );
    // Fix add runs first in the merge queue (higher priority).
    let a = {
        let out = fx.orch_ok(
            &[
                "add-task",
                "--project",
                "calc",
                "--title",
                "Fix add",
                "--priority",
                "2",
                "--json",
            ],
            0,
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let b = fx.add_task("Document add", "add a docstring");
    let out = fx.orch_ok(
        &["run", "--project", "calc", "--cycles", "3", "--until-idle"],
        0,
    );

    let ta = fx.task(&a);
    let tb = fx.task(&b);
    assert_eq!(ta["task"]["status"], "merged", "{out}");
    assert_eq!(tb["task"]["status"], "merged", "{out}");
    // Whichever passed second was sent back once by the merge queue, with
    // the conflict as feedback (the scheduler has no barrier, so either may
    // land first).
    let rejected: Vec<_> = fx
        .events(&a)
        .into_iter()
        .chain(fx.events(&b))
        .filter(|e| e["kind"] == "merge_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0]["message"]
        .as_str()
        .unwrap()
        .contains("conflicts"));
    assert_eq!(fx.main_file("calc.py"), sum_documented_v2.trim_end());
    assert!(fx.main_is_green());
    assert!(fx.orch_branches().is_empty());
}

#[test]
fn dirty_user_checkout_is_never_touched() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "fixed"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
    let mine = "# my uncommitted work\ndef add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";
    std::fs::write(fx.repo.join("calc.py"), mine).unwrap();
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("uncommitted changes"), "{out}");
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("calc.py")).unwrap(),
        mine
    );
    assert_eq!(fx.main_sha(), before);
    assert_eq!(fx.task(&id)["task"]["status"], "passed");

    // Once the user commits their work elsewhere, the queue lands it.
    git(&fx.repo, &["stash"]);
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
}

#[test]
fn kill_9_mid_run_then_resume_loses_and_duplicates_nothing() {
    let fx = Fixture::new();
    // Every worker reply takes 1.5 s, so the first run is killed while it
    // waits on the model.
    let script: Script = serde_json::from_value(json!({"responses": [
        {"model": "worker", "times": 0, "delay_ms": 1500, "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
            {"name": "finish", "arguments": {"summary": "fixed"}}
        ]},
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    fx.with_openai(&server.base_url(), "");
    let id = fx.add_task("Fix add", "");
    let before = fx.main_sha();

    let mut child = fx
        .orch_cmd(&["run", "--project", "calc", "--quiet"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never called the model"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: no cleanup code runs.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fx.task(&id)["task"]["status"], "running");
    assert_eq!(fx.main_sha(), before);

    fx.orch_ok(&["run", "--project", "calc"], 0);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["status"], "interrupted");
    assert_eq!(attempts[1]["status"], "passed");
    // The interrupted attempt does not count against max_attempts.
    assert_eq!(shown["task"]["attempts"], 1);
    // Exactly one attempt's work of this task on main (landed as a
    // fast-forward or under a merge commit, which carries no Attempt line).
    let landed = git(
        &fx.repo,
        &[
            "log",
            "--format=%H",
            "--all-match",
            &format!("--grep=Task: {id}"),
            "--grep=Attempt: ",
            "main",
        ],
    );
    assert_eq!(landed.lines().count(), 1, "{landed}");
    assert_eq!(fx.worktree_count(), 1);
    assert!(fx.orch_branches().is_empty());
    let recovered = fx.orch_ok(&["events", "--project", "calc", "--json"], 0);
    assert!(recovered.contains("\"recovered\""), "{recovered}");
}

#[test]
fn a_second_runner_on_the_same_project_is_refused() {
    let fx = Fixture::new();
    let script: Script = serde_json::from_value(json!({"responses": [
        {"model": "worker", "times": 0, "delay_ms": 3000, "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
            {"name": "finish", "arguments": {"summary": "fixed"}}
        ]},
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    fx.with_openai(&server.base_url(), "");
    fx.add_task("Fix add", "");
    let mut first = fx
        .orch_cmd(&["run", "--project", "calc", "--quiet"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.requests().is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = fx.orch(&["run", "--project", "calc"]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already being run by process"), "{err}");
    assert!(first.wait().unwrap().success());
}
