//! End-to-end: the batching merge queue. Several passing branches are
//! merged together and verified once; a red batch is split to find the
//! culprit, the rest land, and the culprit goes back to its worker. A lone
//! branch whose merged tree already passed lands without a second run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const CALC_MUL2: &str = "def add(a, b):\n    return a + b\n\n\ndef mul2(a, b):\n    return a * b\n";
const TEST_MUL2: &str = "from calc import add, mul2\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul2(2, 3) == 6\n";
const GREEN_CALC: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";

fn task_reply(title: &str, calls: Value) -> Value {
    worker_call(Some(&format!("# Task: {title}\n")), calls)
}

/// Four tasks that pass on their own, waiting in the queue (their first
/// run found the user's checkout dirty): A renames `mul`, B tests `mul`
/// (red once A has landed; its retry uses `mul2`), C and D add notes.
fn four_passed_tasks(config: &str) -> (Fixture, Vec<String>) {
    let fx = Fixture::new();
    // A green base, so every branch passes on its own.
    std::fs::write(fx.repo.join("calc.py"), GREEN_CALC).unwrap();
    git(&fx.repo, &["commit", "-qam", "green base"]);
    fx.with_replay(
        json!({"responses": [
            // B's retry, after the merge queue found it breaks the batch.
            worker_call(Some("After merging with the current main, verification fails"), json!([
                {"name": "write_file", "arguments": {"path": "test_extra.py", "content": "from calc import mul2\n\n\ndef test_extra():\n    assert mul2(3, 3) == 9\n"}},
                {"name": "finish", "arguments": {"summary": "uses mul2"}}
            ])),
            // A renames mul to mul2 (and its test): green alone.
            task_reply("rename mul", json!([
                {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_MUL2}},
                {"name": "write_file", "arguments": {"path": "test_calc.py", "content": TEST_MUL2}},
                {"name": "finish", "arguments": {"summary": "renamed"}}
            ])),
            // B tests mul: green alone, red once A has landed.
            task_reply("test mul more", json!([
                {"name": "write_file", "arguments": {"path": "test_extra.py", "content": "from calc import mul\n\n\ndef test_extra():\n    assert mul(3, 3) == 9\n"}},
                {"name": "finish", "arguments": {"summary": "more tests"}}
            ])),
            task_reply("notes c", json!([
                {"name": "write_file", "arguments": {"path": "c.md", "content": "c\n"}},
                {"name": "finish", "arguments": {"summary": "c"}}
            ])),
            task_reply("notes d", json!([
                {"name": "write_file", "arguments": {"path": "d.md", "content": "d\n"}},
                {"name": "finish", "arguments": {"summary": "d"}}
            ])),
            judge_pass(),
        ]}),
        config,
    );
    let ids: Vec<String> = ["rename mul", "test mul more", "notes c", "notes d"]
        .iter()
        .map(|t| fx.add_task(t, ""))
        .collect();

    // First run: the user's checkout of main is dirty, so nothing can land;
    // every task passes and waits in the queue.
    std::fs::write(
        fx.repo.join(".gitignore"),
        "__pycache__/\n.pytest_cache/\n# mine\n",
    )
    .unwrap();
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("uncommitted changes"), "{out}");
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "passed", "{out}");
    }
    git(&fx.repo, &["checkout", "--", ".gitignore"]);

    (fx, ids)
}

#[test]
fn a_red_batch_is_split_the_culprit_is_sent_back_and_the_rest_land() {
    let (fx, ids) = four_passed_tasks("max_workers = 4\nmerge_batch_max = 8");
    // Second run: one batch of four, red; split; the culprit goes back.
    let events = run_until_all_merged(&fx, &ids);
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("merge batch of 4 is red; splitting")),
        "no split"
    );
    assert_only_rejected(&events, &ids[1]);
    // C and D landed together, verified once.
    for id in &ids[2..] {
        let merged: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == "merged" && e["task_id"] == id.as_str())
            .collect();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0]["data"]["batch"], 2, "{:#}", merged[0]);
    }
    // A landed alone on an unmoved main: its merged tree had passed already.
    assert!(events
        .iter()
        .any(|e| e["task_id"] == ids[0].as_str() && e["data"]["skipped"] == true));
    assert!(fx.main_is_green());
    assert_eq!(fx.main_file("calc.py"), CALC_MUL2.trim_end());
    assert!(fx.main_file("test_extra.py").contains("mul2"));
}

#[test]
fn a_window_of_batches_lands_in_order_and_rebuilds_behind_a_red_one() {
    // Four batches of one, verified at once, each on top of the one before.
    let (fx, ids) = four_passed_tasks("max_workers = 4\nmerge_batch_max = 1\nmerge_window = 4");
    let events = run_until_all_merged(&fx, &ids);
    let at = |kind: &str, id: &str| position(&events, kind, id);
    // B, verified on top of A, is red: sent back once; C and D, built on
    // B's candidate, go back to the queue and land after it was rejected.
    assert_only_rejected(&events, &ids[1]);
    for id in &ids[2..] {
        assert!(events.iter().any(|e| e["task_id"] == id.as_str()
            && e["message"]
                .as_str()
                .unwrap()
                .contains("a batch ahead of it did not land as built")));
        assert!(at("merged", id) > at("merge_rejected", &ids[1]));
    }
    assert!(at("merged", &ids[0]) < at("merge_rejected", &ids[1]));
    assert_main_was_always_green(&fx);
    assert_eq!(fx.main_file("calc.py"), CALC_MUL2.trim_end());
    assert!(fx.main_file("test_extra.py").contains("mul2"));
}

#[test]
fn the_next_window_is_built_and_verified_while_the_one_ahead_lands() {
    // One task per window: each window behind a green one is checked on
    // top of it while it lands.
    let (fx, ids) = four_passed_tasks("max_workers = 4\nmerge_batch_max = 1\nmerge_window = 1");
    // Only this run's events: the first one checked windows too.
    let before = project_events(&fx).len();
    let events = run_until_all_merged(&fx, &ids).split_off(before);
    let find = |kind: &str, id: &str| position(&events, kind, id);
    // Where the merge of `id` started on the commit `onto` landed with.
    let started_on = |id: &str, onto: &str| {
        let commit = &events[find("merged", onto)]["data"]["commit"];
        events.iter().position(|e| {
            e["kind"] == "stage_started" && e["task_id"] == id && e["data"]["commit"] == *commit
        })
    };
    // B was merged onto A's commit before main moved there (the landing
    // waits on git; the next window starts building at once), was red
    // on it, and once A had landed that verdict stood: sent back once.
    let b_started = started_on(&ids[1], &ids[0]).expect("B built on A's commit");
    assert!(
        b_started < find("merged", &ids[0]),
        "B waited for A to land"
    );
    assert_only_rejected(&events, &ids[1]);
    // C landed on main and D was checked on C while C landed.
    let d_on_c = started_on(&ids[3], &ids[2]);
    assert!(d_on_c.is_some_and(|at| at < find("merged", &ids[2])));
    assert_main_was_always_green(&fx);
    assert_eq!(fx.main_file("calc.py"), CALC_MUL2.trim_end());
    assert!(fx.main_file("d.md").contains('d'));
}

#[test]
fn a_window_built_on_one_that_does_not_land_goes_back_to_the_queue() {
    let (fx, ids) = four_passed_tasks("max_workers = 4\nmerge_batch_max = 1\nmerge_window = 1");
    let main_before = git(&fx.repo, &["rev-parse", "main"]);
    // The checkout is dirty again: A's green candidate cannot land, so B,
    // checked on top of it meanwhile, must not land either.
    std::fs::write(fx.repo.join("calc.py"), "# mine\n").unwrap();
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("uncommitted changes"), "{out}");
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "passed", "{out}");
    }
    assert!(fx.events(&ids[1]).iter().any(|e| e["message"]
        .as_str()
        .unwrap()
        .contains("the work it was built on did not land as built")));
    assert_eq!(git(&fx.repo, &["rev-parse", "main"]), main_before);
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("calc.py")).unwrap(),
        "# mine\n"
    );
}

/// Every commit main pointed at since the green base passes its tests,
/// not only the last.
fn assert_main_was_always_green(fx: &Fixture) {
    let history = git(
        &fx.repo,
        &["reflog", "show", "--format=%H", "refs/heads/main"],
    );
    let base = git(&fx.repo, &["log", "-1", "--format=%H", "--grep=green base"]);
    // What main pointed at since the green base (the reflog is newest first).
    let landings: Vec<&str> = history.lines().take_while(|l| *l != base.trim()).collect();
    assert!(landings.len() >= 3, "{history}");
    for commit in landings {
        assert!(green_at(fx, commit), "main was red at {commit}:\n{history}");
    }
}

/// Where the first event of `kind` for task `id` stands in `events`.
fn position(events: &[Value], kind: &str, id: &str) -> usize {
    events
        .iter()
        .position(|e| e["kind"] == kind && e["task_id"] == id)
        .unwrap_or_else(|| panic!("no {kind} for {id}"))
}

/// Exactly one merge rejection, and it was `id`'s.
fn assert_only_rejected(events: &[Value], id: &str) {
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "merge_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["task_id"], id);
}

/// Runs the project until idle; every task must have landed. Its events.
fn run_until_all_merged(fx: &Fixture, ids: &[String]) -> Vec<Value> {
    fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "3"],
        0,
    );
    for id in ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{}", fx.task(id));
    }
    project_events(fx)
}

/// Every event of the project, oldest first.
fn project_events(fx: &Fixture) -> Vec<Value> {
    serde_json::from_str(&fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "100000"],
        0,
    ))
    .unwrap()
}

/// Whether the tests pass at `commit`, in a scratch worktree.
fn green_at(fx: &Fixture, commit: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().join("wt");
    git(
        &fx.repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            commit,
        ],
    );
    let green = std::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&wt)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    git(
        &fx.repo,
        &["worktree", "remove", "--force", wt.to_str().unwrap()],
    );
    green
}
