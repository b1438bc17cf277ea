//! End-to-end: milestone plan files and task files, with the real `orch`
//! binary on real git repositories (only the model is the replay provider).
//!
//! - the shipped `examples/plans/three_tasks_clean.md` imports as three
//!   tasks that run in file order (task 2 is claimed only after task 1
//!   merged, by the event log) and all merge; importing it again adds
//!   nothing;
//! - `kill -9` in the middle of a plan, then `orch run` again: the run
//!   resumes at the first unfinished task, and no finished task runs twice;
//! - the ambiguous plan: its first task waits for a person, the second is
//!   not started until the answer lets the first merge;
//! - `orch add-task --file` with YAML and JSON, `--depends-on`, and bad
//!   files refused with exit 2, naming the problem, writing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

const CALC_SUB: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n\ndef sub(a, b):\n    return a - b\n";
const CALC_DIV: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef div(a, b):\n    return a / b\n";

fn test_calc_sub() -> String {
    format!("{TEST_CALC}\n\ndef test_sub():\n    from calc import sub\n    assert sub(5, 3) == 2\n    assert sub(3, 5) == -2\n")
}

fn test_calc_div() -> String {
    format!(
        "{}\n\ndef test_div():\n    from calc import div\n    assert div(6, 3) == 2\n\n\ndef test_div_by_zero():\n    import pytest\n    from calc import div\n    with pytest.raises(ZeroDivisionError):\n        div(1, 0)\n",
        test_calc_sub()
    )
}

/// One scripted answer per task of three_tasks_clean.md, told apart by
/// the task's title in the prompt; `delay_ms` slows task 1.2 down.
fn three_tasks_script(delay_ms: u64) -> Value {
    let mut sub = worker_call(
        Some("Add sub()"),
        json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_SUB}},
            {"name": "write_file", "arguments": {"path": "test_calc.py", "content": test_calc_sub()}},
            {"name": "finish", "arguments": {"summary": "added sub"}}
        ]),
    );
    if delay_ms > 0 {
        sub["delay_ms"] = json!(delay_ms);
    }
    json!({"responses": [
        worker_call(Some("Fix add()"), json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
            {"name": "finish", "arguments": {"summary": "add adds"}}
        ])),
        sub,
        worker_call(Some("Add div() that refuses zero"), json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_DIV}},
            {"name": "write_file", "arguments": {"path": "test_calc.py", "content": test_calc_div()}},
            {"name": "finish", "arguments": {"summary": "added div"}}
        ])),
        judge_pass(),
    ]})
}

fn import_json(fx: &Fixture, plan: &Path) -> Value {
    let out = fx.orch_ok(
        &[
            "plan",
            "import",
            plan.to_str().unwrap(),
            "--project",
            "calc",
            "--json",
        ],
        0,
    );
    serde_json::from_str(&out).unwrap()
}

fn ids(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn project_events(fx: &Fixture) -> Vec<Value> {
    let out = fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "100000"],
        0,
    );
    serde_json::from_str(&out).unwrap()
}

/// The id of the first event of `kind` for `task`.
fn event_id(events: &[Value], task: &str, kind: &str) -> i64 {
    events
        .iter()
        .find(|e| e["task_id"] == task && e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event for {task}"))["id"]
        .as_i64()
        .unwrap()
}

fn count_events(events: &[Value], task: &str, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e["task_id"] == task && e["kind"] == kind)
        .count()
}

#[test]
fn a_plan_runs_in_order_all_merge_and_a_re_import_adds_nothing() {
    let fx = Fixture::new();
    fx.with_replay(three_tasks_script(0), "max_workers = 3");
    let plan = example("plans/three_tasks_clean.md");

    let imported = import_json(&fx, &plan);
    assert_eq!(imported["milestone"], "Milestone 1: A working calculator");
    let created = ids(&imported["created"]);
    assert_eq!(created.len(), 3);
    assert!(imported["skipped"].as_array().unwrap().is_empty());
    assert_eq!(
        imported["created"][0]["plan_key"],
        "three_tasks_clean.md#1.1"
    );
    assert_eq!(imported["created"][0]["task_type"], "fix");
    assert_eq!(
        imported["created"][1]["allowed_files"],
        json!(["calc.py", "test_calc.py"])
    );
    assert_eq!(
        imported["created"][2]["acceptance_tests"],
        json!(["test_calc.py::test_div", "test_calc.py::test_div_by_zero"])
    );
    assert_eq!(imported["created"][1]["depends_on"], json!([created[0]]));
    assert_eq!(imported["created"][2]["depends_on"], json!([created[1]]));

    // Three worker slots, yet one task at a time: each waits for the merge
    // of the one before it.
    let out = fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "5"],
        0,
    );
    assert!(out.contains("3 merged"), "{out}");
    for id in &created {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{id}");
    }
    let events = project_events(&fx);
    for pair in created.windows(2) {
        let merged = event_id(&events, &pair[0], "merged");
        let claimed = event_id(&events, &pair[1], "task_claimed");
        assert!(
            merged < claimed,
            "task {} was claimed (event {claimed}) before task {} merged (event {merged})",
            pair[1],
            pair[0]
        );
    }
    assert_eq!(fx.main_file("calc.py"), CALC_DIV.trim_end());
    assert!(fx.main_is_green());

    // Again: nothing new, every section reported as already there.
    let again = import_json(&fx, &plan);
    assert!(again["created"].as_array().unwrap().is_empty());
    assert_eq!(ids(&again["skipped"]), created);
    assert_eq!(again["skipped"][0]["status"], "merged");
    let text = fx.orch_ok(
        &[
            "plan",
            "import",
            plan.to_str().unwrap(),
            "--project",
            "calc",
        ],
        0,
    );
    assert!(
        text.contains("0 task(s) created, 3 already there"),
        "{text}"
    );
    assert!(text.contains("skipped  1.2"), "{text}");
    let all: Value =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
}

#[test]
fn kill_9_mid_plan_then_run_again_resumes_at_the_first_unfinished_task() {
    let fx = Fixture::new();
    // Task 1.2's answer takes a minute: long enough to be killed in it.
    fx.with_replay(three_tasks_script(60_000), "");
    let created = ids(&import_json(&fx, &example("plans/three_tasks_clean.md"))["created"]);

    let mut orch = fx
        .orch_cmd(&["run", "--project", "calc", "--until-idle", "--cycles", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = fx
            .events(&created[1])
            .iter()
            .any(|e| e["kind"] == "attempt_started");
        if started {
            break;
        }
        if let Some(status) = orch.try_wait().unwrap() {
            panic!("orch ended ({status}) before task 1.2 started");
        }
        if Instant::now() > deadline {
            let _ = orch.kill();
            panic!("task 1.2 never started");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    orch.kill().unwrap(); // SIGKILL
    orch.wait().unwrap();
    assert_eq!(fx.task(&created[0])["task"]["status"], "merged");
    assert_eq!(fx.task(&created[1])["task"]["status"], "running");
    assert_eq!(fx.task(&created[2])["task"]["status"], "pending");

    // The model answers at once now; the same plan, run again.
    fx.with_replay(three_tasks_script(0), "");
    let out = fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "5"],
        0,
    );
    assert!(
        out.contains("2 merged"),
        "only the unfinished tasks ran:\n{out}"
    );
    let events = project_events(&fx);
    assert_eq!(
        count_events(&events, &created[0], "task_claimed"),
        1,
        "the merged task 1.1 is not run again"
    );
    let second = fx.task(&created[1]);
    let statuses: Vec<&str> = second["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["interrupted", "passed"]);
    for id in &created {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{id}");
    }
    assert!(
        event_id(&events, &created[1], "merged") < event_id(&events, &created[2], "task_claimed")
    );
    assert_eq!(fx.main_file("calc.py"), CALC_DIV.trim_end());
}

#[test]
fn a_task_waiting_for_a_person_holds_back_the_rest_of_its_plan() {
    let fx = Fixture::new();
    let calc_money = format!("{CALC_FIXED}\n\ndef round_money(x):\n    return round(x, 2)\n");
    let calc_total =
        format!("{calc_money}\n\ndef total(amounts):\n    return round_money(sum(amounts))\n");
    let test_money = format!("{TEST_CALC}\n\ndef test_round_money():\n    from calc import round_money\n    assert round_money(2.675) == round(2.675, 2)\n");
    let test_total = format!("{test_money}\n\ndef test_total():\n    from calc import total\n    assert total([1.004, 2.004]) == 3.01\n");
    fx.with_replay(
        json!({"responses": [
            worker_call(Some("Answer: round half to even"), json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": calc_money}},
                {"name": "write_file", "arguments": {"path": "test_calc.py", "content": test_money}},
                {"name": "finish", "arguments": {"summary": "round_money, half to even"}}
            ])),
            worker_call(Some("Round money the way the finance team does"), json!([
                {"name": "ask_human", "arguments": {"question": "Which rounding rule does the finance team use?"}}
            ])),
            worker_call(Some("Add total() built on round_money()"), json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": calc_total}},
                {"name": "write_file", "arguments": {"path": "test_calc.py", "content": test_total}},
                {"name": "finish", "arguments": {"summary": "total"}}
            ])),
            judge_pass(),
        ]}),
        "max_workers = 2",
    );
    let created = ids(&import_json(&fx, &example("plans/ambiguous_task.md"))["created"]);
    assert_eq!(created.len(), 2);

    fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "3"],
        0,
    );
    assert_eq!(fx.task(&created[0])["task"]["status"], "needs_human");
    assert_eq!(fx.task(&created[1])["task"]["status"], "pending");
    assert_eq!(
        count_events(&project_events(&fx), &created[1], "task_claimed"),
        0,
        "3.2 is not started while 3.1 waits for a person"
    );

    fx.orch_ok(&["answer", &created[0], "round half to even"], 0);
    fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "5"],
        0,
    );
    assert_eq!(fx.task(&created[0])["task"]["status"], "merged");
    assert_eq!(fx.task(&created[1])["task"]["status"], "merged");
    assert!(fx.main_file("calc.py").contains("def total"));
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn task_count(fx: &Fixture) -> usize {
    let all: Value =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    all.as_array().unwrap().len()
}

#[test]
fn task_files_in_yaml_and_json_and_dependencies_from_the_command_line() {
    let fx = Fixture::new();
    fx.with_replay(json!({"responses": [judge_pass()]}), "");

    // The shipped example, with the project from --project.
    let example_file = example("task_example.yaml");
    let out = fx.orch_ok(
        &[
            "add-task",
            "--file",
            example_file.to_str().unwrap(),
            "--project",
            "calc",
            "--json",
        ],
        0,
    );
    let first: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(first["title"], "Add sub() to calc.py");
    assert_eq!(first["allowed_files"], json!(["calc.py", "test_calc.py"]));
    assert_eq!(first["acceptance_tests"], json!(["test_calc.py::test_sub"]));
    assert_eq!(first["source"], "manual");
    let first_id = first["id"].as_str().unwrap().to_string();

    // JSON, naming its project and depending on the first by a prefix.
    let json_file = fx.root().join("task.json");
    std::fs::write(
        &json_file,
        json!({"project": "calc", "title": "Add div()", "type": "code", "priority": 3,
               "depends_on": [&first_id[..6]]})
        .to_string(),
    )
    .unwrap();
    let out = fx.orch_ok(
        &["add-task", "--file", json_file.to_str().unwrap(), "--json"],
        0,
    );
    let second: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(second["priority"], 3);
    assert_eq!(
        second["depends_on"],
        json!([first_id]),
        "the full id is stored"
    );

    // --depends-on on the command line, repeatable.
    let out = fx.orch_ok(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Docs",
            "--depends-on",
            &first_id,
            "--depends-on",
            second["id"].as_str().unwrap(),
        ],
        0,
    );
    assert!(out.contains("starts after these tasks merged"), "{out}");
    assert_eq!(task_count(&fx), 3);

    // Bad input: exit 2, a message that names the problem, nothing written.
    let refuse = |args: &[&str], expect: &[&str]| {
        let out = fx.orch(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for e in expect {
            assert!(err.contains(e), "{args:?}: expected `{e}` in: {err}");
        }
        assert_eq!(task_count(&fx), 3, "{args:?} wrote nothing");
    };
    let bad = fx.root().join("bad.yaml");
    std::fs::write(&bad, "title: Typo\ndescripton: misspelt\n").unwrap();
    let bad = bad.to_str().unwrap();
    refuse(
        &["add-task", "--file", bad, "--project", "calc"],
        &[
            "bad.yaml",
            "line 2",
            "unknown field `descripton`",
            "nothing was written",
        ],
    );
    let wrong_type = fx.root().join("wrong.yml");
    std::fs::write(&wrong_type, "project: calc\ntitle: x\ntype: feature\n").unwrap();
    refuse(
        &["add-task", "--file", wrong_type.to_str().unwrap()],
        &["`type`", "unknown variant `feature`", "`review`"],
    );
    let no_project = fx.root().join("np.yaml");
    std::fs::write(&no_project, "title: x\n").unwrap();
    refuse(
        &["add-task", "--file", no_project.to_str().unwrap()],
        &["--project"],
    );
    refuse(
        &[
            "add-task",
            "--file",
            no_project.to_str().unwrap(),
            "--project",
            "nope",
        ],
        &["no project named `nope`"],
    );
    refuse(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "x",
            "--depends-on",
            "ffffffffffff",
        ],
        &["dependency `ffffffffffff`", "no task has id"],
    );
    refuse(
        &[
            "add-task",
            "--file",
            no_project.to_str().unwrap(),
            "--title",
            "x",
            "--project",
            "calc",
        ],
        &["--title", "--file"],
    );
    let missing = fx.root().join("missing.yaml");
    refuse(
        &[
            "add-task",
            "--file",
            missing.to_str().unwrap(),
            "--project",
            "calc",
        ],
        &["cannot read task file"],
    );

    // Cancelling a task fails the ones waiting for it, naming it.
    fx.orch_ok(&["cancel", &first_id], 0);
    let second_now = fx.task(second["id"].as_str().unwrap());
    assert_eq!(second_now["task"]["status"], "failed");
    let why = second_now["task"]["failure_reason"].as_str().unwrap();
    assert!(
        why.contains(&first_id) && why.contains("was cancelled"),
        "{why}"
    );
    // And a cancelled task cannot be depended on.
    let refused = fx.orch(&[
        "add-task",
        "--project",
        "calc",
        "--title",
        "late",
        "--depends-on",
        &first_id,
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("never merge"),
        "{}",
        stderr_of(&refused)
    );
}

#[test]
fn a_malformed_plan_is_refused_naming_the_line_and_writes_nothing() {
    let fx = Fixture::new();
    fx.with_replay(json!({"responses": [judge_pass()]}), "");
    let plan = fx.root().join("m1.md");
    std::fs::write(
        &plan,
        "# M1\n\n## Task 1.1: Fine\n\nText.\n\n## Task 1.2 no colon\n",
    )
    .unwrap();
    let out = fx.orch(&[
        "plan",
        "import",
        plan.to_str().unwrap(),
        "--project",
        "calc",
    ]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("m1.md line 7")
            && err.contains("## Task 1.2: Title")
            && err.contains("nothing was imported"),
        "{err}"
    );
    assert_eq!(task_count(&fx), 0);
    let out = fx.orch(&["plan", "import", "nope.md", "--project", "calc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("cannot read plan file"));
}
