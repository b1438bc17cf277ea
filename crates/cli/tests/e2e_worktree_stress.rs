//! End-to-end: many workers starting at once on one repository. Worktree
//! operations are serialized per repository, so none of them fails, and
//! every task lands with exactly one counted attempt and no infrastructure
//! failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const TASKS: usize = 20;
const WORKERS: usize = 8;

#[test]
fn twenty_tasks_on_eight_workers_at_once_have_no_infrastructure_failures() {
    let fx = Fixture::new();
    let mut responses: Vec<Value> = (0..TASKS)
        .map(|i| {
            worker_call(
                Some(&format!("# Task: stress-{i:02}\n")),
                json!([
                    {"name": "write_file", "arguments": {"path": format!("f{i:02}.txt"), "content": format!("{i}\n")}},
                    {"name": "finish", "arguments": {"summary": format!("file {i}")}}
                ]),
            )
        })
        .collect();
    responses.push(judge_pass());
    fx.with_replay(
        json!({ "responses": responses }),
        &format!("max_workers = {WORKERS}\ntest_command = \"true\"\nmax_attempts = 1"),
    );
    let ids: Vec<String> = (0..TASKS)
        .map(|i| fx.add_task(&format!("stress-{i:02}"), "write your file"))
        .collect();
    fx.orch_ok(
        &["run", "--project", "calc", "--until-idle", "--cycles", "10"],
        0,
    );

    let tasks: Value =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    for t in tasks.as_array().unwrap() {
        assert_eq!(t["status"], "merged", "{t:#}");
        assert_eq!(t["attempts"], 1, "{t:#}");
        assert_eq!(t["infra_failures"], 0, "{t:#}");
    }
    for id in &ids {
        let shown = fx.task(id);
        assert_eq!(shown["attempts"].as_array().unwrap().len(), 1, "{shown:#}");
    }
    let events = fx.orch_ok(
        &["events", "--project", "calc", "--json", "--limit", "100000"],
        0,
    );
    assert!(!events.contains("\"infra_failure\""), "infra failures seen");
    let files = git(&fx.repo, &["ls-tree", "--name-only", "main"]);
    for i in 0..TASKS {
        assert!(
            files.contains(&format!("f{i:02}.txt")),
            "f{i:02}.txt missing"
        );
    }
    assert_eq!(fx.worktree_count(), 1);
}
