//! End-to-end: what people see. A closed stdout (`orch tasks | head -1`)
//! ends a listing quietly and lets a run finish its work; tables are padded
//! to their columns and fit 80 columns, with ids never cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};

/// Runs orch with stdout a pipe nobody reads: the read end is closed
/// before orch starts, so its first write fails with EPIPE.
fn with_closed_stdout(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

fn fixed_by_replay(fx: &Fixture) {
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "add returns the sum"}}
            ])),
            judge_pass(),
        ]}),
        "",
    );
}

#[test]
fn listings_end_quietly_when_stdout_is_closed() {
    let fx = Fixture::new();
    fixed_by_replay(&fx);
    let id = fx.add_task("Fix add", "add() subtracts");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "add-task",
            "--project",
            "calc",
            "--title",
            "Another",
            "--json",
        ],
        vec!["add-task", "--project", "calc", "--title", "A third"],
        vec!["tasks", "--project", "calc"],
        vec!["tasks", "--project", "calc", "--json"],
        vec!["events"],
        vec!["events", "--json"],
        vec!["show", &id],
        vec!["show", &id, "--json"],
        vec!["status"],
        vec!["cost"],
    ];
    for args in &cases {
        let out = with_closed_stdout(fx.orch_cmd(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "orch {args:?}: {stderr}");
        assert_eq!(stderr, "", "orch {args:?} wrote to stderr");
    }
    // What the command did before its output was cut still happened.
    let tasks: Vec<Value> =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    assert_eq!(tasks.len(), 3, "both add-task calls added their task");
}

#[test]
fn a_shell_pipeline_into_head_is_quiet() {
    let fx = Fixture::new();
    fixed_by_replay(&fx);
    for i in 0..30 {
        fx.add_task(&format!("Task number {i}"), "");
    }
    let orch = env!("CARGO_BIN_EXE_orch");
    let config = fx.config.display().to_string();
    for pipeline in [
        "\"$ORCH\" --config \"$CFG\" add-task --project calc --title x --json | head -c1",
        "\"$ORCH\" --config \"$CFG\" tasks --project calc | head -1",
        "\"$ORCH\" --config \"$CFG\" events | head -1",
        "\"$ORCH\" --config \"$CFG\" events --json | head -c1",
    ] {
        let out = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {pipeline} >/dev/null")])
            .env("ORCH", orch)
            .env("CFG", &config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{pipeline}: {stderr}");
        assert!(!stderr.contains("panicked"), "{pipeline}: {stderr}");
        assert_eq!(stderr, "", "{pipeline}");
    }
}

#[test]
fn a_run_whose_stdout_closes_still_finishes_its_work() {
    let fx = Fixture::new();
    fixed_by_replay(&fx);
    let id = fx.add_task("Fix add", "add() subtracts");
    let out = with_closed_stdout(fx.orch_cmd(&["run", "--project", "calc"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
}

/// `orch ARGS` with a terminal 80 columns wide.
fn at_80(fx: &Fixture, args: &[&str]) -> String {
    let out = fx.orch_cmd(args).env("COLUMNS", "80").output().unwrap();
    assert!(
        out.status.success(),
        "orch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_fits(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "{what}: a line is {} wide:\n{line}\nin:\n{text}",
            line.chars().count()
        );
        assert_eq!(line, line.trim_end(), "{what}: trailing spaces in {line:?}");
    }
}

#[test]
fn tables_are_padded_and_fit_80_columns() {
    let fx = Fixture::new();
    fixed_by_replay(&fx);
    let long = "Make the pagination helper return the last page when the offset is past the end of the list";
    let fixed = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc", "--quiet"], 0);
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            long,
            "--priority",
            "10",
            "--type",
            "fix",
            "--json",
        ],
        0,
    );
    let waiting = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Ids are 12 hex digits; name them so the snapshot is stable.
    let mask = |s: &str| {
        s.replace(&fixed, "<id:merged_>")
            .replace(&waiting, "<id:waiting>")
    };
    let tasks = at_80(&fx, &["tasks", "--project", "calc"]);
    assert_fits("tasks", &tasks);
    assert_eq!(
        mask(&tasks),
        "\
ID            STATUS   PRIO  TRY  TYPE  TITLE
<id:waiting>  pending    10    0  fix   Make the pagination helper return the l…
<id:merged_>  merged      0    1  code  Fix add
",
        "{tasks}"
    );

    let status = at_80(&fx, &["status"]);
    assert_fits("status", &status);
    let status = status.replace(&fx.repo.display().to_string(), "<repo>");
    let status: Vec<&str> = status.lines().collect();
    assert_eq!(
        status[0],
        "PROJECT  STATE   TASKS                 IN  OUT     COST"
    );
    assert!(
        status[1].starts_with("calc     active  1 merged, 1 pending"),
        "{status:?}"
    );
    assert_eq!(status[2], "         path: <repo>");

    let cost = at_80(&fx, &["cost"]);
    assert_fits("cost", &cost);
    let header = cost.lines().next().unwrap();
    assert!(
        header.starts_with("DAY         PROJECT  ROLE    MODEL   CALLS"),
        "{cost}"
    );

    let events = at_80(&fx, &["events", "--project", "calc"]);
    assert_fits("events", &events);
    let header = events.lines().next().unwrap();
    let message_at = header.find("MESSAGE").unwrap();
    // Every row's first line starts with a timestamp; continuation lines
    // are blank up to the message column.
    for line in events.lines().skip(1) {
        let (left, right) = line.split_at(message_at.min(line.len()));
        if left.trim().is_empty() {
            assert!(!right.starts_with(' '), "{line:?}");
        } else {
            assert!(left.starts_with("20"), "{line:?}");
        }
    }
    assert!(events.contains(&fixed), "ids are never cut:\n{events}");

    let show = at_80(&fx, &["show", &fixed]);
    let table: Vec<&str> = show
        .lines()
        .skip_while(|l| !l.starts_with("#  STATUS"))
        .take(2)
        .collect();
    assert_fits("show's attempts", &table.join("\n"));
    assert!(table[0].starts_with("#  STATUS  TURNS"), "{show}");
    assert!(table[1].starts_with("1  passed"), "{show}");
    assert!(
        show.contains(&format!("commit kept at: refs/orch/attempts/{fixed}/1")),
        "{show}"
    );
}

#[test]
fn acceptance_tests_are_shown_when_added_and_in_show() {
    let fx = Fixture::new();
    fixed_by_replay(&fx);
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Fix add",
            "--accept",
            "test_calc.py::test_add",
            "--accept",
            "test_calc.py",
        ],
        0,
    );
    assert!(
        out.contains(
            "acceptance tests (must pass for the task to pass): test_calc.py::test_add, test_calc.py"
        ),
        "{out}"
    );
    let id = out.split_whitespace().nth(2).unwrap();
    let show = at_80(&fx, &["show", id]);
    assert!(
        show.contains("acceptance tests: test_calc.py::test_add, test_calc.py"),
        "{show}"
    );
    assert!(show.contains("infrastructure failures: 0"), "{show}");
    let json: Value = serde_json::from_str(&fx.orch_ok(&["show", id, "--json"], 0)).unwrap();
    assert_eq!(
        json["task"]["acceptance_tests"],
        json!(["test_calc.py::test_add", "test_calc.py"])
    );
    assert_eq!(json["task"]["infra_failures"], 0);
    assert!(json["task"]["not_before"].is_null());
}
