//! End-to-end: the real `orch serve` on real git repositories, the model
//! replaced only by the replay provider. A schedule fires; touching a
//! watched file asks the planner; SIGTERM mid-attempt, then a restart,
//! resumes the attempt with nothing lost or duplicated; the patrol
//! interrupts a stuck attempt and the task is retried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve::Serve;
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn fix_calls() -> Value {
    json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ])
}

/// Polls `orch show` until the task has `status`.
fn wait_status(fx: &Fixture, id: &str, status: &str, within: Duration, serve: &Serve) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let shown = fx.task(id);
        if shown["task"]["status"] == status {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not {status} within {within:?}: {}\nserve log:\n{}",
            shown["task"],
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Commits on main that carry the task's work (`Task: <id>` trailer).
fn commits_of_task_on_main(fx: &Fixture, id: &str) -> usize {
    git(
        &fx.repo,
        &[
            "log",
            "main",
            "--no-merges",
            "--format=%H",
            "--grep",
            &format!("Task: {id}"),
        ],
    )
    .lines()
    .filter(|l| !l.is_empty())
    .count()
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
fn a_schedule_fires_and_takes_work_added_after_startup() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [worker_call(None, fix_calls()), judge_pass()]}),
        "schedule = \"every 2s\"",
    );
    let mut serve = Serve::start(&fx, &[]);
    serve.wait_log("calc: run finished: nothing to do", Duration::from_secs(60));
    // Only the schedule can start the next run: no trigger, no API.
    let id = fx.add_task("Fix add", "add() subtracts");
    let shown = wait_status(&fx, &id, "merged", Duration::from_secs(120), &serve);
    assert_eq!(shown["attempts"][0]["status"], "passed");
    assert!(
        serve.log().contains("run started (schedule every 2 s)"),
        "{}",
        serve.log()
    );
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    serve.stop();
    assert!(
        serve.log().contains("orch serve stopped"),
        "{}",
        serve.log()
    );
}

#[test]
fn touching_a_watched_file_asks_the_planner() {
    let fx = Fixture::new();
    std::fs::write(fx.repo.join("BACKLOG.md"), "# Backlog\n\n- nothing yet\n").unwrap();
    git(&fx.repo, &["add", "BACKLOG.md"]);
    git(&fx.repo, &["commit", "-q", "-m", "backlog"]);
    fx.with_replay(
        json!({"responses": [
            {"model": "planner", "times": 0, "json": {"tasks": [], "notes": "nothing to do"}},
        ]}),
        "auto_plan = true\nplanner_model = \"replay:planner\"\nwatch = [\"BACKLOG.md\", \"plans/*.md\"]",
    );
    let mut serve = Serve::start(&fx, &[]);
    serve.wait_log("calc: run finished", Duration::from_secs(60));
    assert_eq!(planner_calls(&fx), 1, "asked once at startup");

    // A file nobody watches wakes nothing.
    std::fs::write(fx.repo.join("notes.txt"), "scratch\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        serve.log().matches("run started").count(),
        1,
        "{}",
        serve.log()
    );

    std::fs::write(
        fx.repo.join("BACKLOG.md"),
        "# Backlog\n\n- add a divide function\n",
    )
    .unwrap();
    serve.wait_log("run started (changed: BACKLOG.md)", Duration::from_secs(30));
    serve.wait_log_times("calc: run finished", 2, Duration::from_secs(60));
    assert_eq!(planner_calls(&fx), 2, "{}", serve.log());

    serve.stop();
}

#[test]
fn sigterm_mid_attempt_then_a_restart_resumes_it_with_nothing_lost_or_duplicated() {
    let fx = Fixture::new();
    let mut slow = worker_call(Some("Attempt: 1 of"), fix_calls());
    slow["delay_ms"] = json!(60_000);
    fx.with_replay(
        json!({"responses": [slow, worker_call(Some("Attempt: 2 of"), fix_calls()), judge_pass()]}),
        "",
    );
    fx.append_config("[server]\nshutdown_grace_seconds = 1\n");
    let id = fx.add_task("Fix add", "add() subtracts");
    let before = fx.main_sha();

    let mut serve = Serve::start(&fx, &[]);
    // The worker's first model call is under way (and takes a minute).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fx
        .events(&id)
        .iter()
        .any(|e| e["kind"] == "stage_started" && e["data"]["stage"] == "work")
    {
        assert!(
            Instant::now() < deadline,
            "the worker never started:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    serve.stop();
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "stopped after the grace, not after the slow model"
    );
    let log = serve.log();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("1 running attempt(s) interrupted"), "{log}");

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "pending", "{}", shown["task"]);
    assert_eq!(
        shown["task"]["attempts"], 0,
        "an interrupted attempt does not count"
    );
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "interrupted");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("shutdown"),
        "{}",
        attempts[0]
    );
    assert_eq!(fx.main_sha(), before, "nothing landed half-way");
    assert_eq!(fx.worktree_count(), 1, "the attempt's worktree is gone");

    // The restart resumes the task: attempt 2 passes and lands once.
    let mut again = Serve::start(&fx, &[]);
    let shown = wait_status(&fx, &id, "merged", Duration::from_secs(120), &again);
    let attempts = shown["attempts"].as_array().unwrap();
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["interrupted", "passed"]);
    assert_eq!(shown["task"]["attempts"], 1);
    assert_eq!(commits_of_task_on_main(&fx, &id), 1, "exactly one landing");
    let merged = fx
        .events(&id)
        .iter()
        .filter(|e| e["kind"] == "merged")
        .count();
    assert_eq!(merged, 1);
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    assert!(fx.main_is_green());
    again.stop();
    eprintln!("first serve:\n{log}\nsecond serve:\n{}", again.log());
}

#[test]
fn the_patrol_interrupts_a_stuck_attempt_and_the_task_is_retried() {
    let fx = Fixture::new();
    let mut stuck = worker_call(Some("Attempt: 1 of"), fix_calls());
    stuck["delay_ms"] = json!(60_000);
    fx.with_replay(
        json!({"responses": [stuck, worker_call(Some("Attempt: 2 of"), fix_calls()), judge_pass()]}),
        "stuck_after_seconds = 8",
    );
    let id = fx.add_task("Fix add", "add() subtracts");
    let mut serve = Serve::start(&fx, &[]);
    let shown = wait_status(&fx, &id, "merged", Duration::from_secs(120), &serve);
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["status"], "interrupted");
    assert_eq!(
        attempts[0]["error"].as_str().unwrap(),
        "stuck: no event for 8 s"
    );
    assert_eq!(attempts[1]["status"], "passed");
    assert_eq!(
        shown["task"]["attempts"], 1,
        "the stuck attempt does not count"
    );
    let events = fx.events(&id);
    assert!(
        events.iter().any(|e| e["kind"] == "patrol_interrupted"
            && e["data"]["stuck_after_seconds"] == 8
            && e["message"]
                .as_str()
                .unwrap()
                .contains("stuck: no event for 8 s")),
        "{events:?}"
    );
    assert!(
        serve.log().contains("stuck: no event for 8 s"),
        "{}",
        serve.log()
    );
    assert_eq!(commits_of_task_on_main(&fx, &id), 1);
    serve.stop();
}

/// One HTTP/1.1 request on loopback; the status code and the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn the_api_starts_a_run_now() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [worker_call(None, fix_calls()), judge_pass()]}),
        "",
    );
    let mut serve = Serve::listening(&fx, &[]);
    let port = serve.port();
    serve.wait_log("calc: run finished: nothing to do", Duration::from_secs(60));
    serve.wait_log("HTTP API on", Duration::from_secs(10));
    let id = fx.add_task("Fix add", "add() subtracts");
    // Nothing runs it on its own: no schedule, no watch.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fx.task(&id)["task"]["status"], "pending");
    let (code, body) = http(port, "POST", "/api/v1/projects/calc/run");
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    assert_eq!(answer["started"], true, "{body}");
    wait_status(&fx, &id, "merged", Duration::from_secs(120), &serve);
    assert!(
        serve.log().contains("run started (API request)"),
        "{}",
        serve.log()
    );
    serve.stop();
}

#[test]
fn orch_run_stops_gracefully_on_ctrl_c_and_the_next_run_resumes() {
    let fx = Fixture::new();
    let mut slow = worker_call(Some("Attempt: 1 of"), fix_calls());
    slow["delay_ms"] = json!(60_000);
    fx.with_replay(
        json!({"responses": [slow, worker_call(Some("Attempt: 2 of"), fix_calls()), judge_pass()]}),
        "",
    );
    fx.append_config("[server]\nshutdown_grace_seconds = 1\n");
    let id = fx.add_task("Fix add", "add() subtracts");
    let run = fx
        .orch_cmd(&["run", "--project", "calc"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fx
        .events(&id)
        .iter()
        .any(|e| e["kind"] == "stage_started" && e["data"]["stage"] == "work")
    {
        assert!(Instant::now() < deadline, "the worker never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(stderr.contains("SIGINT: stopping"), "{stderr}");
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "pending");
    assert_eq!(shown["attempts"][0]["status"], "interrupted");
    assert_eq!(shown["task"]["attempts"], 0);

    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");
    let shown = fx.task(&id);
    assert_eq!(shown["attempts"][1]["status"], "passed");
    assert_eq!(commits_of_task_on_main(&fx, &id), 1);
}

#[test]
fn a_new_plan_file_is_imported_in_order_and_a_resave_adds_nothing_twice() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [judge_pass()]}),
        "watch = [\"plans/*.md\"]",
    );
    // Paused: the tasks are imported, not worked on.
    fx.orch_ok(&["pause", "--project", "calc"], 0);
    let mut serve = Serve::start(&fx, &[]);
    serve.wait_log("calc: run finished", Duration::from_secs(60));
    let plan = "# Milestone 1\n\n## Task 1.1: Add sub()\n**Type:** code\n\nAdd sub(a, b) to calc.py.\n\n## Task 1.2: Add div()\n**Type:** code\n\nAdd div(a, b) to calc.py.\n";
    // plans/ does not exist yet: the watch picks it up when it appears.
    std::fs::create_dir(fx.repo.join("plans")).unwrap();
    std::fs::write(fx.repo.join("plans/m1.md"), plan).unwrap();
    serve.wait_log(
        "imported plan plans/m1.md: 2 new task(s), 0 already there",
        Duration::from_secs(30),
    );
    std::fs::write(fx.repo.join("plans/m1.md"), format!("{plan}\n")).unwrap();
    serve.wait_log(
        "imported plan plans/m1.md: 0 new task(s), 2 already there",
        Duration::from_secs(30),
    );
    let tasks: Value =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    let titles: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles.contains(&"Add sub()") && titles.contains(&"Add div()"));

    // A broken plan file is reported, not imported.
    std::fs::write(fx.repo.join("plans/m2.md"), "## Task 2.1:\n").unwrap();
    serve.wait_log(
        "plan file plans/m2.md not imported",
        Duration::from_secs(30),
    );
    serve.stop();
}

#[test]
fn failures_in_a_row_pause_the_project_with_the_reason_in_status_and_events() {
    let fx = Fixture::new();
    let give_up = json!([{"name": "finish", "arguments": {"summary": "did nothing"}}]);
    fx.with_replay(
        json!({"responses": [{"model": "worker", "times": 0, "tool_calls": give_up}, judge_pass()]}),
        "max_attempts = 1\npause_after_failures = 2",
    );
    let first = fx.add_task("Fix add", "add() subtracts");
    let second = fx.add_task("Fix add again", "add() subtracts");
    let third = fx.add_task("Never started", "the project is paused before");
    let mut serve = Serve::start(&fx, &[]);
    serve.wait_log("project paused", Duration::from_secs(120));
    for id in [&first, &second] {
        assert_eq!(fx.task(id)["task"]["status"], "failed");
    }
    assert_eq!(fx.task(&third)["task"]["status"], "pending");
    let status: Value = serde_json::from_str(&fx.orch_ok(&["status", "--json"], 0)).unwrap();
    let p = &status["projects"][0];
    assert_eq!(p["paused"], true);
    let reason = p["pause_reason"].as_str().unwrap();
    assert!(
        reason.contains("2 tasks failed in a row (pause_after_failures = 2)")
            && reason.contains("orch resume --project calc"),
        "{reason}"
    );
    let events: Value = serde_json::from_str(&fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "10000"],
        0,
    ))
    .unwrap();
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "project_paused" && e["message"].as_str().unwrap().contains(reason)));
    serve.stop();
}
