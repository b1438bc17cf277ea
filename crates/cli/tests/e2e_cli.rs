//! End-to-end: the demo, `orch init`, hostile model output and hard limits,
//! through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn demo_runs_a_full_cycle_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .args(["--sandbox", &sandbox()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stage in [
        "plan",
        "running",
        "verifying",
        "judging",
        "merging",
        "merged",
    ] {
        assert!(stdout.contains(stage), "stage {stage} not shown:\n{stdout}");
    }
    let repo = dir.path().join("calc");
    assert!(git(&repo, &["show", "main:calc.py"]).contains("return a + b"));
    let plans: Vec<_> = std::fs::read_dir(dir.path().join(".orch/audit/calc/plans"))
        .unwrap()
        .collect();
    assert_eq!(plans.len(), 1);
}

#[test]
fn init_detects_the_test_command_and_refuses_duplicates() {
    let fx = Fixture::new();
    let config = fx.root().join("new.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(fx.root())
            .output()
            .unwrap()
    };
    let out = run(&["init", "calc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("test_command = \"python3 -m pytest -q\""),
        "{text}"
    );
    assert!(text.contains("name = \"calc\""));
    // The written file loads.
    let status = run(&["status", "--json"]);
    assert!(status.status.success());
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["projects"][0]["name"], "calc");
    assert_eq!(v["projects"][0]["paused"], false);

    let again = run(&["init", "calc"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a project named `calc`"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "a refused init changes nothing"
    );

    let not_repo = run(&["init", "/"]);
    assert_eq!(not_repo.status.code(), Some(2));
}

#[test]
fn hostile_model_output_is_contained_and_the_task_still_lands() {
    let fx = Fixture::new();
    let giant = "x".repeat(3 * 1024 * 1024);
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "tool_calls": [
                {"name": "write_file", "arguments": "{\"path\": \"calc.py\", \"content\": \"trunc"},
                {"name": "rm_rf", "arguments": {"path": "/"}},
                {"name": "write_file", "arguments": {"path": "big.txt", "content": giant}},
                {"name": "run", "arguments": {"command": "yes | head -c 5000000"}},
                {"name": "read_file", "arguments": {"path": ".git/config"}}
            ]},
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "fixed"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    assert!(git(&fx.repo, &["ls-tree", "--name-only", "main"])
        .lines()
        .all(|f| f != "big.txt"));
    let events = fx.events(&id);
    let tools: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tool_call" || e["kind"] == "tool_refused")
        .collect();
    let by_tool = |name: &str| tools.iter().find(|e| e["data"]["tool"] == name).copied();
    // Truncated JSON arguments and an unknown tool are tool errors, not crashes.
    assert_eq!(by_tool("rm_rf").unwrap()["data"]["ok"], false);
    let first_write = tools
        .iter()
        .find(|e| e["data"]["tool"] == "write_file")
        .unwrap();
    assert_eq!(first_write["data"]["ok"], false);
    // The giant run output was cut with a marker.
    let run = by_tool("run").unwrap();
    assert!(run["data"]["output"].as_str().unwrap().len() <= 600);
    // .git is off limits.
    assert_eq!(by_tool("read_file").unwrap()["kind"], "tool_refused");
    // The transcript records the cut marker for the model.
    let transcript = std::fs::read_to_string(
        fx.root()
            .join(format!(".orch/audit/calc/attempts/{id}-1.json")),
    )
    .unwrap();
    assert!(transcript.contains("orch cut"), "output cap marker missing");
}

#[test]
fn max_turns_is_enforced_by_code() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "times": 0, "tool_calls": [{"name": "list_files", "arguments": {}}], "content": "still looking"},
            judge_pass(),
        ]}),
        "max_turns = 3\nmax_attempts = 1",
    );
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(shown["attempts"][0]["turns"], 3);
    assert!(shown["task"]["feedback"]
        .as_str()
        .unwrap()
        .contains("max_turns"));
}
