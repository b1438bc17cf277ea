//! End-to-end: the real `orch` binary on real git repositories, with the
//! model replaced only by the replay provider or a local HTTP server that
//! speaks the OpenAI chat-completions wire format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::FakeOpenAi;
use serde_json::{json, Value};

fn fix_calls() -> Value {
    json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ])
}

#[test]
fn happy_path_with_replay_merges_and_records_everything() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([{"name": "read_file", "arguments": {"path": "calc.py"}}])),
            worker_call(None, json!([{"name": "edit_file", "arguments": {"path": "calc.py", "old": "return a - b", "new": "return a + b"}}])),
            worker_call(None, json!([{"name": "run", "arguments": {"command": "python3 -m pytest -q"}}])),
            worker_call(None, json!([{"name": "finish", "arguments": {"summary": "fixed add"}}])),
            judge_pass(),
        ]}),
        "",
    );
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "add() subtracts");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(
        out.contains("verifying"),
        "live progress shows stages:\n{out}"
    );
    assert!(out.contains("1 merged"), "{out}");

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "passed");
    assert_eq!(attempts[0]["turns"], 4);
    assert!(attempts[0]["diff_stat"]
        .as_str()
        .unwrap()
        .contains("calc.py"));
    assert!(attempts[0]["input_tokens"].as_u64().unwrap() > 0);

    // main advanced by fast-forward to a merge commit that contains the fix.
    let after = fx.main_sha();
    assert_ne!(before, after);
    assert_eq!(
        git(&fx.repo, &["merge-base", "--is-ancestor", &before, &after]),
        ""
    );
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    assert!(fx.main_is_green());
    // The user's checkout was clean and on main, so it moved along.
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("calc.py")).unwrap(),
        CALC_FIXED
    );
    // No worktree or branch is left behind.
    assert_eq!(fx.worktree_count(), 1);
    assert!(fx.orch_branches().is_empty(), "{:?}", fx.orch_branches());

    // Audit trail: attempt transcript and verdict files.
    let audit = fx.root().join(".orch/audit/calc");
    let attempt_md = std::fs::read_to_string(audit.join(format!("attempts/{id}-1.md"))).unwrap();
    assert!(attempt_md.contains("edit_file"), "{attempt_md}");
    assert!(attempt_md.contains("calc.py"));
    let verdict_md = std::fs::read_to_string(audit.join(format!("verdicts/{id}-1.md"))).unwrap();
    assert!(verdict_md.to_lowercase().contains("pass"), "{verdict_md}");

    // Events recorded every state change in order.
    let kinds: Vec<String> = fx
        .events(&id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "task_created",
        "task_claimed",
        "attempt_started",
        "tool_call",
        "verification_finished",
        "verdict_recorded",
        "merged",
    ] {
        assert!(kinds.iter().any(|x| x == k), "missing {k} in {kinds:?}");
    }
    let statuses: Vec<String> = fx
        .events(&id)
        .iter()
        .filter(|e| e["kind"] == "status_changed")
        .map(|e| e["data"]["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        [
            "running",
            "verifying",
            "judging",
            "passed",
            "merging",
            "merged"
        ]
    );

    // The JSON listing is stable.
    let tasks: Value =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    assert_eq!(tasks[0]["id"], id.as_str());
    assert_eq!(tasks[0]["status"], "merged");
}

#[test]
fn happy_path_in_the_docker_sandbox() {
    if std::env::var_os("CI").is_none()
        && !std::process::Command::new("docker")
            .args(["image", "inspect", "orch-sandbox:latest"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    {
        eprintln!("skipped: no orch-sandbox:latest image; run scripts/build-sandbox-image.sh");
        return;
    }
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([{"name": "run", "arguments": {"command": "id -u; pwd; python3 -m pytest -q || true"}}])),
            worker_call(None, fix_calls()),
            judge_pass(),
        ]}),
        "sandbox = \"docker\"",
    );
    let id = fx.add_task("Fix add", "");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    // The worker's command ran inside the container, as the sandbox user, in /workspace.
    let run = fx
        .events(&id)
        .into_iter()
        .find(|e| e["kind"] == "tool_call" && e["data"]["tool"] == "run")
        .unwrap();
    let output = run["data"]["output"].as_str().unwrap();
    assert!(output.contains("10001"), "{output}");
    assert!(output.contains("/workspace"), "{output}");
    // Nothing of this run is left on the engine.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=orch.project=calc"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left behind"
    );
}

#[test]
fn happy_path_over_openai_http_wire_format() {
    let fx = Fixture::new();
    let script: Script = serde_json::from_value(json!({"responses": [
        worker_call(None, fix_calls()),
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    // The server refuses requests without the key from ORCH_TEST_KEY.
    server.set_api_key("sk-test-secret-123");
    fx.with_openai(&server.base_url(), "");
    let id = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    let requests = server.requests();
    // worker call with tools, then a judge call with the verdict schema.
    assert!(requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["function"]["name"] == "write_file"));
    let judge = requests
        .iter()
        .find(|r| r["model"] == "judge")
        .expect("judge was called");
    assert_eq!(judge["response_format"]["type"], "json_schema");
    assert_eq!(judge["response_format"]["json_schema"]["name"], "verdict");
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    // The API key went on the wire and nowhere else: not into the database,
    // the audit trail or anything else under data_dir.
    for entry in walk(&fx.root().join(".orch")) {
        let bytes = std::fs::read(&entry).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains("sk-test-secret-123"),
            "secret leaked into {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn fail_then_fix_carries_the_failing_output_into_the_second_prompt() {
    let fx = Fixture::new();
    // Fixes add but breaks mul: test_mul is a new failure (test_add already
    // failed on the base commit, so failing it alone would not be new).
    let wrong = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n";
    let script: Script = serde_json::from_value(json!({"responses": [
        worker_call(Some("Attempt: 1 of"), json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": wrong}},
            {"name": "finish", "arguments": {"summary": "multiplied"}}
        ])),
        worker_call(Some("Previous attempt failed"), fix_calls()),
        judge_pass(),
    ]}))
    .unwrap();
    let server = FakeOpenAi::start(script);
    fx.with_openai(&server.base_url(), "");
    let id = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc"], 0);

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[1]["status"], "passed");

    // The second attempt's first prompt names the failing test and output.
    let second = server
        .requests()
        .into_iter()
        .filter(|r| r["model"] == "worker")
        .find(|r| {
            r["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .contains("Previous attempt failed")
        })
        .expect("a second-attempt prompt");
    let prompt = second["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("test_mul"), "{prompt}");
    assert!(prompt.contains("assert 5 == 6"), "{prompt}");
    assert!(fx.main_is_green());
}

#[test]
fn doomed_task_stops_at_max_attempts_with_main_untouched() {
    let fx = Fixture::new();
    let wrong = "def add(a, b):\n    return 42\n\n\ndef mul(a, b):\n    return 0\n";
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "times": 0, "tool_calls": [
                {"name": "write_file", "arguments": {"path": "calc.py", "content": wrong}},
                {"name": "finish", "arguments": {"summary": "hard-coded"}}
            ]},
            judge_pass(),
        ]}),
        "max_attempts = 2",
    );
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "add() subtracts");
    let out = fx.orch_ok(&["run", "--project", "calc"], 1);
    assert!(out.contains("1 failed"), "{out}");
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(shown["task"]["attempts"], 2);
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);
    assert!(shown["task"]["failure_reason"]
        .as_str()
        .unwrap()
        .contains("max_attempts"));
    assert_eq!(fx.main_sha(), before);
    assert_eq!(fx.main_file("calc.py"), CALC_BROKEN.trim_end());
    // A second run does not pick the failed task up again.
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["attempts"].as_array().unwrap().len(), 2);
}

/// The same wrong fix every time: after two identical failures the task
/// stops and asks a person instead of spending its other attempts; with
/// `loop_similarity = 0` it runs to max_attempts.
#[test]
fn identical_failures_stop_early_and_ask_a_person() {
    let wrong = "def add(a, b):\n    return 42\n\n\ndef mul(a, b):\n    return 0\n";
    let script = json!({"responses": [
        {"model": "worker", "times": 0, "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": wrong}},
            {"name": "finish", "arguments": {"summary": "hard-coded"}}
        ]},
        judge_pass(),
    ]});
    let fx = Fixture::new();
    fx.with_replay(script.clone(), "max_attempts = 5");
    let id = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "needs_human", "{shown:#}");
    assert_eq!(shown["task"]["attempts"], 2, "stopped after the repeat");
    let question = shown["task"]["question"].as_str().unwrap();
    assert!(question.contains("failed the same way"), "{question}");
    assert!(
        question.contains("test_add"),
        "the repeated failure is shown: {question}"
    );
    let events = fx.events(&id);
    let found = events
        .iter()
        .find(|e| e["kind"] == "loop_detected")
        .expect("a loop_detected event");
    assert_eq!(found["data"]["kind"], "repeated_failure");
    assert!(found["data"]["similarity"].as_f64().unwrap() >= 0.8);
    assert_eq!(found["data"]["attempts"], json!([1, 2]));

    let off = Fixture::new();
    off.with_replay(script, "max_attempts = 3\nloop_similarity = 0.0");
    let id = off.add_task("Fix add", "add() subtracts");
    off.orch_ok(&["run", "--project", "calc"], 1);
    let shown = off.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(shown["task"]["attempts"], 3);
}

#[test]
fn ask_human_then_answer_then_merged() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(Some("Answer: it should return the sum"), fix_calls()),
            worker_call(None, json!([{"name": "ask_human", "arguments": {"question": "Should add return the sum or the difference?"}}])),
            judge_pass(),
        ]}),
        "",
    );
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "add() is wrong; unclear how");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("need a person"), "{out}");
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "needs_human");
    assert_eq!(
        shown["task"]["question"],
        "Should add return the sum or the difference?"
    );
    assert_eq!(fx.main_sha(), before);
    let listing = fx.orch_ok(
        &["tasks", "--project", "calc", "--status", "needs_human"],
        0,
    );
    assert!(listing.contains("Should add return the sum"), "{listing}");

    // Answering a task that is not waiting is refused with exit 2.
    let other = fx.add_task("Other", "");
    let refused = fx.orch(&["answer", &other, "x"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pending"));
    fx.orch_ok(&["cancel", &other], 0);

    fx.orch_ok(&["answer", &id, "it should return the sum"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "pending");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
}

#[test]
fn path_escapes_are_refused_and_nothing_is_written_outside() {
    let fx = Fixture::new();
    let outside = fx.root().join("escaped.txt");
    let abs = fx.root().join("absolute.txt");
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([
                {"name": "write_file", "arguments": {"path": "../escaped.txt", "content": "pwned"}},
                {"name": "write_file", "arguments": {"path": abs.display().to_string(), "content": "pwned"}},
                {"name": "write_file", "arguments": {"path": "sub/../../escaped.txt", "content": "pwned"}},
                {"name": "run", "arguments": {"command": format!("echo pwned > {}", fx.root().join("via-run.txt").display())}},
            ])),
            worker_call(None, fix_calls()),
            judge_pass(),
        ]}),
        "",
    );
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(!outside.exists());
    assert!(!abs.exists());
    assert!(
        !fx.root().join("via-run.txt").exists(),
        "the sandbox let a command write outside the worktree"
    );
    let refused: Vec<Value> = fx
        .events(&id)
        .into_iter()
        .filter(|e| e["kind"] == "tool_refused")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(fx.task(&id)["task"]["status"], "merged");
}

#[test]
fn a_hanging_test_command_is_killed_at_its_timeout() {
    let fx = Fixture::new();
    let marker = format!("orch-hang-{}", std::process::id());
    fx.with_replay(
        json!({"responses": [
            {"model": "worker", "times": 0, "tool_calls": [
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
                {"name": "finish", "arguments": {"summary": "fixed"}}
            ]},
            judge_pass(),
        ]}),
        &format!("max_attempts = 1\ncommand_timeout_seconds = 3\ntest_command = \"sh -c 'sleep 600 & sleep 600' {marker}\""),
    );
    let id = fx.add_task("Fix add", "");
    let started = std::time::Instant::now();
    fx.orch_ok(&["run", "--project", "calc"], 1);
    assert!(
        started.elapsed().as_secs() < 60,
        "the run waited for the hanging command"
    );
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    let summary = shown["attempts"][0]["verification"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("timed out"), "{summary}");
    let survivors = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        survivors.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
}

#[test]
fn malformed_config_exits_2_and_writes_nothing() {
    let fx = Fixture::new();
    std::fs::write(
        &fx.config,
        "[[projects]]\nname = \"calc\"\npath = \"calc\"\nworker_model = \"nocolon\"\n",
    )
    .unwrap();
    let out = fx.orch(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("orch.toml"), "{err}");
    assert!(err.contains("worker_model"), "{err}");
    assert!(
        !fx.root().join(".orch").exists(),
        "nothing may be written on a config error"
    );
}
