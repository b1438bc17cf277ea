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

#[test]
fn a_red_batch_is_split_the_culprit_is_sent_back_and_the_rest_land() {
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
        "max_workers = 4\nmerge_batch_max = 8",
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

    // Second run: one batch of four, red; split; the culprit goes back.
    fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "3"],
        0,
    );
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{}", fx.task(id));
    }
    let events: Vec<Value> = serde_json::from_str(&fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "100000"],
        0,
    ))
    .unwrap();
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("merge batch of 4 is red; splitting")),
        "no split"
    );
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "merge_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert_eq!(rejected[0]["task_id"], ids[1].as_str());
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
