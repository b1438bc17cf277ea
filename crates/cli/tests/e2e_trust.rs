//! End-to-end: only work that does what its task asked lands, and every
//! limit holds whatever broke it. The real `orch` binary, real git, bwrap
//! and pytest; only the model is scripted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::FakeOpenAi;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CALC_WRONG: &str = "def add(a, b):\n    return a * b\n\n\ndef mul(a, b):\n    return a * b\n";

fn attempt_refs(fx: &Fixture, id: &str) -> Vec<String> {
    git(
        &fx.repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            &format!("refs/orch/attempts/{id}/"),
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn a_wrong_fix_over_a_red_base_is_not_merged_and_the_retry_names_the_test() {
    let fx = Fixture::new();
    // The base is red: test_add fails. The first attempt "fixes" add() with
    // a product, which still fails test_add — the same failure the base
    // has. Only a retry whose prompt names the still-failing test gets the
    // right fix.
    let named = "Tests this task targets still fail: test_calc.py::test_add";
    fx.with_replay(
        json!({"responses": [
            worker_call(Some(named), json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "add returns the sum"}}
            ])),
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_WRONG}},
                {"name": "finish", "arguments": {"summary": "changed add"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
    let before = fx.main_sha();
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--type",
            "fix",
            "--title",
            "make add() return the sum",
            "--desc",
            "test_calc.py fails",
            "--json",
        ],
        0,
    );
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.orch_ok(&["run", "--project", "calc"], 0);

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged", "{shown:#}");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0]["status"], "failed");
    let report = &attempts[0]["verification"];
    assert_eq!(report["passed"], false);
    assert_eq!(
        report["targeted_failures"],
        json!(["test_calc.py::test_add"])
    );
    assert_eq!(attempts[1]["status"], "passed");
    // Main never held the wrong fix; it holds the right one and is green.
    let first_parents = git(
        &fx.repo,
        &["log", "--format=%H", &format!("{before}..main")],
    );
    for sha in first_parents.lines() {
        let calc = git(&fx.repo, &["show", &format!("{sha}:calc.py")]);
        assert!(
            !calc.contains("a * b\n\n\ndef mul"),
            "wrong fix on main at {sha}"
        );
    }
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    assert!(fx.main_is_green());

    // The retry's prompt named the test with its output.
    let transcript = std::fs::read_to_string(
        fx.root()
            .join(format!(".orch/audit/calc/attempts/{id}-2.json")),
    )
    .unwrap();
    assert!(transcript.contains(named), "{transcript}");
    assert!(transcript.contains("assert 6 == 5"), "{transcript}");

    // Both attempts' commits are kept on refs, the wrong one inspectable.
    let refs = attempt_refs(&fx, &id);
    assert_eq!(
        refs,
        [
            format!("refs/orch/attempts/{id}/1"),
            format!("refs/orch/attempts/{id}/2")
        ]
    );
    let kept = git(&fx.repo, &["show", &format!("{}:calc.py", refs[0])]);
    assert_eq!(kept, CALC_WRONG.trim_end());
}

#[test]
fn an_untargeted_preexisting_failure_is_tolerated_and_listed() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "NOTES.md", "content": "notes\n"}},
                {"name": "finish", "arguments": {"summary": "notes"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
    let id = fx.add_task("Write a notes file", "NOTES.md with a line");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    let report = &shown["attempts"][0]["verification"];
    assert_eq!(
        report["preexisting_failures"],
        json!(["test_calc.py::test_add"])
    );
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("not targeted by this task (tolerated)"));

    // With preexisting_failures = "block" the same work does not land.
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "NOTES.md", "content": "notes\n"}},
                {"name": "finish", "arguments": {"summary": "notes"}}
            ])),
            judge_pass(),
        ]}),
        "max_attempts = 1\npreexisting_failures = \"block\"",
    );
    let id = fx.add_task("Write a notes file", "NOTES.md with a line");
    let before = fx.main_sha();
    fx.orch_ok(&["run", "--project", "calc"], 1);
    assert_eq!(fx.task(&id)["task"]["status"], "failed");
    assert_eq!(fx.main_sha(), before);
}

#[test]
fn acceptance_tests_must_pass() {
    let fx = Fixture::new();
    // The worker adds a feature but its acceptance test (already red on the
    // base, and not named in the title) stays red: not merged.
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "NOTES.md", "content": "x\n"}},
                {"name": "finish", "arguments": {"summary": "done"}}
            ])),
            judge_pass(),
        ]}),
        "max_attempts = 1",
    );
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Make the calculator right",
            "--accept",
            "test_calc.py::test_add",
            "--json",
        ],
        0,
    );
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["acceptance_tests"], json!(["test_calc.py::test_add"]));
    let id = task["id"].as_str().unwrap().to_string();
    let before = fx.main_sha();
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(
        shown["task"]["acceptance_tests"],
        json!(["test_calc.py::test_add"])
    );
    assert_eq!(fx.main_sha(), before);
    let feedback = shown["task"]["feedback"].as_str().unwrap();
    assert!(feedback.contains("test_calc.py::test_add"), "{feedback}");
}

#[test]
fn run_writing_outside_allowed_files_lands_nothing_outside_them() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "run", "arguments": {"command": "echo hi > notes.txt && mkdir -p sub && echo 'x = 1' > sub/other.py && ln -s /etc/passwd leak"}},
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "fixed add"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Fix add",
            "--allowed-files",
            "calc.py",
            "--json",
        ],
        0,
    );
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    let files = git(&fx.repo, &["ls-tree", "-r", "--name-only", "main"]);
    let files: Vec<&str> = files.lines().collect();
    assert_eq!(
        files,
        [".gitignore", "calc.py", "test_calc.py"],
        "{files:?}"
    );
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());

    let refused: Vec<String> = fx
        .events(&id)
        .iter()
        .filter(|e| e["kind"] == "tool_refused" && e["data"]["stage"] == "commit")
        .map(|e| e["data"]["path"].as_str().unwrap().to_string())
        .collect();
    for p in ["notes.txt", "sub/other.py", "leak"] {
        assert!(
            refused.iter().any(|r| r == p),
            "{p} not refused: {refused:?}"
        );
    }
}

#[test]
fn cancel_mid_attempt_stops_the_worker_and_nothing_is_merged() {
    let fx = Fixture::new();
    // The worker's first call runs a long command; cancel arrives during it.
    let script: Script = serde_json::from_value(json!({"responses": [
        {"model": "worker", "times": 0, "tool_calls": [
            {"name": "run", "arguments": {"command": "echo started > started.txt; sleep 60 # orch-cancel-marker"}},
        ]},
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    fx.with_openai(&server.base_url(), "");
    let id = fx.add_task("Fix add", "");
    let before = fx.main_sha();
    let started = Instant::now();
    let mut child = fx
        .orch_cmd(&["run", "--project", "calc", "--quiet"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fx
        .root()
        .join(format!(".orch/worktrees/calc/{id}/started.txt"))
        .exists()
    {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls_at_cancel = server.requests().len();
    fx.orch_ok(&["cancel", &id], 0);
    let cancelled_at = Instant::now();
    let status = child.wait().unwrap();
    let stopped_in = cancelled_at.elapsed();
    assert!(stopped_in < Duration::from_secs(10), "took {stopped_in:?}");
    assert!(started.elapsed() < Duration::from_secs(50));
    assert!(status.code().is_some(), "orch exited by itself: {status:?}");

    // No model call after the cancel, nothing merged, attempt recorded.
    assert_eq!(server.requests().len(), calls_at_cancel);
    assert_eq!(fx.main_sha(), before);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "cancelled");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "cancelled");
    assert_eq!(shown["task"]["attempts"], 0);
    // The sandboxed sleep is gone with it.
    std::thread::sleep(Duration::from_millis(500));
    let alive = orch_testkit::procs::processes_matching("orch-cancel-marker");
    assert!(
        alive.is_empty(),
        "the cancelled command still runs: {alive:?}"
    );
    assert_eq!(fx.worktree_count(), 1);
}

#[test]
fn a_contradictory_verdict_fails_closed_and_the_work_is_kept() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "fixed add"}}
            ])),
            {"model": "judge", "times": 0, "json": {"passed": false, "score": 10, "reasoning": "", "issues": []}},
        ]}),
        "max_attempts = 1",
    );
    let id = fx.add_task("Fix add", "");
    let before = fx.main_sha();
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(fx.main_sha(), before);
    let verdict = &shown["attempts"][0]["verdict"];
    assert_eq!(verdict["passed"], false);
    let text = format!("{} {}", verdict["reasoning"], verdict["issues"]).to_lowercase();
    assert!(text.contains("contradict"), "{verdict:#}");
    let feedback = shown["task"]["feedback"].as_str().unwrap();
    assert!(!feedback.trim().is_empty());
    assert!(feedback.to_lowercase().contains("contradict"), "{feedback}");
    // The failed attempt's commit is kept and holds the work.
    let refs = attempt_refs(&fx, &id);
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(
        git(&fx.repo, &["show", &format!("{}:calc.py", refs[0])]),
        CALC_FIXED.trim_end()
    );
}

fn planner_calls(fx: &Fixture) -> u64 {
    let cost: Value =
        serde_json::from_str(&fx.orch_ok(&["cost", "--project", "calc", "--json"], 0)).unwrap();
    cost["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "planner")
        .map(|r| r["calls"].as_u64().unwrap())
        .sum()
}

#[test]
fn the_planner_is_not_asked_again_when_nothing_changed() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            {"model": "planner", "times": 0, "json": {"tasks": [], "notes": "nothing to do"}},
        ]}),
        "auto_plan = true\nplanner_model = \"replay:planner\"",
    );
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(planner_calls(&fx), 1);
    for _ in 0..3 {
        fx.orch_ok(&["run", "--project", "calc"], 0);
    }
    assert_eq!(planner_calls(&fx), 1, "re-asked on an unchanged restart");
    let events = fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "1000"],
        0,
    );
    assert!(events.contains("\"plan_skipped\""));

    // A change in a file the planner reads is a reason to ask again.
    std::fs::write(fx.repo.join("BACKLOG.md"), "- add a divide function\n").unwrap();
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(planner_calls(&fx), 2);
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(planner_calls(&fx), 2);
}

#[test]
fn a_provider_outage_is_an_infrastructure_failure_not_an_attempt() {
    let fx = Fixture::new();
    // Nothing listens on port 9: every call fails to connect.
    fx.with_openai(
        "http://127.0.0.1:9/v1",
        "max_infra_failures = 2\ninfra_backoff_seconds = 0\nmax_attempts = 1",
    );
    fx.append_config("[retry]\nschedule_seconds = [0]\n");
    let id = fx.add_task("Fix add", "");
    let before = fx.main_sha();
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed", "{shown:#}");
    // The outage cost no counted attempt, only infrastructure failures.
    assert_eq!(shown["task"]["attempts"], 0);
    assert_eq!(shown["task"]["infra_failures"], 2);
    let reason = shown["task"]["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("infrastructure:"), "{reason}");
    assert!(reason.contains("max_infra_failures = 2"), "{reason}");
    let statuses: Vec<&str> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["error", "error"]);
    let events = fx.orch_ok(&["events", "--task", &id, "--json"], 0);
    assert!(events.contains("\"infra_failure\""));
    assert_eq!(fx.main_sha(), before);
}
