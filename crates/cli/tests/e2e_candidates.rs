//! End-to-end: best-of-N candidates. Three candidates of one task run at
//! once, each on its own branch and worktree with its own model: one
//! special-cases the tested inputs (it passes the tests and the judge, but
//! the ranking puts it below), one breaks another test, one is right. The
//! right one lands; the others stay on their branches; `orch export
//! preferences` writes the pairs; every candidate's cost is charged to the
//! task, and the task's budget covers them all. The real `orch` binary,
//! real git, bwrap and pytest; only the model is scripted, each candidate's
//! answers picked by its model name, so they do not depend on interleaving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// Passes the tests by answering the tested input, and nothing else.
const CALC_SHORTCUT: &str = "def add(a, b):\n    if (a, b) == (2, 3):  # shortcut_for_the_test\n        return 5\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";
/// Fixes add() and breaks mul(): test_mul fails, which passes on the base.
const CALC_BREAKS_MUL: &str =
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n";

const CANDIDATES: &str =
    "candidates = 3\ncandidate_models = [\"replay:shortcut\", \"replay:broken\", \"replay:right\"]";

/// A candidate's one answer: write calc.py, finish; at a fixed cost.
fn writes(model: &str, content: &str, cost: f64) -> Value {
    json!({
        "model": model,
        "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": cost},
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": content}},
            {"name": "finish", "arguments": {"summary": format!("{model}: changed add")}}
        ]
    })
}

fn by_candidate(attempts: &[Value], k: u64) -> &Value {
    attempts
        .iter()
        .find(|a| a["candidate"] == k)
        .unwrap_or_else(|| panic!("no candidate {k} in {attempts:#?}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn three_candidates_the_right_one_lands_and_the_pairs_are_exported() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            // Asked only when two or more passed: candidate 3 above 1.
            {"model": "judge", "when": "Rank these candidates", "json": {"order": [
                {"candidate": 3, "reason": "adds any two numbers"},
                {"candidate": 1, "reason": "special-cases the tested input (2, 3)"}
            ]}},
            // The shortcut fools the reviewer, with a lower score.
            {"model": "judge", "when": "shortcut_for_the_test", "times": 0, "json": {
                "passed": true, "score": 6.5, "reasoning": "the tests pass", "issues": []}},
            judge_pass(),
            writes("shortcut", CALC_SHORTCUT, 0.01),
            writes("broken", CALC_BREAKS_MUL, 0.02),
            writes("right", CALC_FIXED, 0.04),
        ]}),
        CANDIDATES,
    );
    let id = fx.add_task("Fix add", "add() subtracts; make it return the sum");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");

    // The right one landed, and main is green.
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    assert!(fx.main_is_green());

    // Three attempts, one per candidate, on their own branches; the round
    // counted as one attempt.
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    assert_eq!(shown["task"]["attempts"], 1, "a round counts once");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    for k in 1..=3u64 {
        let a = by_candidate(attempts, k);
        assert_eq!(a["branch"], format!("orch/{id}-c{k}"));
        assert_eq!(a["round"], 1);
    }
    let (shortcut, broken, right) = (
        by_candidate(attempts, 1),
        by_candidate(attempts, 2),
        by_candidate(attempts, 3),
    );
    assert_eq!(right["status"], "passed");
    assert_eq!(right["rank"], 1);
    assert_eq!(right["rank_reason"], "adds any two numbers");
    assert_eq!(shortcut["status"], "passed");
    assert_eq!(shortcut["rank"], 2);
    assert_eq!(broken["status"], "failed");
    assert!(broken["rank"].is_null());
    assert!(
        broken["verification"]["new_failures"]
            .to_string()
            .contains("test_mul"),
        "{broken:#}"
    );

    // The losers stay on their branches; the task branch went with the merge.
    let branches = fx.orch_branches();
    for k in 1..=3 {
        assert!(
            branches.contains(&format!("orch/{id}-c{k}")),
            "{branches:?}"
        );
    }
    assert!(!branches.contains(&format!("orch/{id}")), "{branches:?}");
    assert!(git(&fx.repo, &["show", &format!("orch/{id}-c1:calc.py")])
        .contains("shortcut_for_the_test"));
    assert_eq!(fx.worktree_count(), 1, "every candidate's worktree is gone");

    // Every candidate's cost is the task's.
    let cost: f64 = attempts
        .iter()
        .map(|a| a["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(close(cost, 0.07), "attempts cost {cost}");
    let task_cost = shown["task"]["cost_usd"].as_f64().unwrap();
    assert!(close(task_cost, 0.07), "task cost {task_cost}");
    for (a, c) in [(shortcut, 0.01), (broken, 0.02), (right, 0.04)] {
        assert!(close(a["cost_usd"].as_f64().unwrap(), c), "{a:#}");
    }

    // The events: the round, the ranking, one pass through the statuses.
    let events = fx.events(&id);
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "candidates_started")
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["data"]["candidates"], 3);
    assert_eq!(started[0]["data"]["slots"][2]["model"], "replay:right");
    let ranked = events
        .iter()
        .find(|e| e["kind"] == "candidates_ranked")
        .unwrap();
    assert_eq!(ranked["data"]["order"], json!([3, 1]));
    assert_eq!(ranked["data"]["winner"], 3);
    assert_eq!(ranked["data"]["method"], "judge");
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "status_changed")
        .map(|e| e["data"]["to"].as_str().unwrap())
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

    // The candidates ran at once; each one's tool calls, verification and
    // verdict name its own attempt (row id and number).
    for k in 1..=3u64 {
        let a = by_candidate(attempts, k);
        let (row, number) = (&a["id"], &a["number"]);
        let of = |kind: &str| {
            events
                .iter()
                .filter(|e| e["kind"] == kind && e["data"]["attempt_id"] == *row)
                .inspect(|e| assert_eq!(e["data"]["attempt"], *number, "{e:#}"))
                .count()
        };
        assert!(of("tool_call") >= 1, "candidate {k}: {events:#?}");
        assert_eq!(of("verification_finished"), 1, "candidate {k}");
        // The broken one fails verification, but the gates still judge it.
        assert_eq!(of("verdict_recorded"), 1, "candidate {k}");
    }
    // (The merge queue's check of a batch, stage merge, is no attempt's.)
    for kind in ["tool_call", "verification_finished", "verdict_recorded"] {
        assert!(
            events
                .iter()
                .filter(|e| e["kind"] == kind && e["data"]["stage"] != "merge")
                .all(|e| e["data"]["attempt_id"].is_i64()),
            "every {kind} names its attempt"
        );
    }

    // `orch show` lists the candidates with their rank.
    let text = fx.orch_ok(&["show", &id], 0);
    assert!(text.contains("passed c3 #1"), "{text}");
    assert!(text.contains("passed c1 #2"), "{text}");
    assert!(
        text.contains(&format!(
            "candidate 3 on orch/{id}-c3: ranked 1 — adds any two numbers"
        )),
        "{text}"
    );

    // The preference pairs: the right one is chosen over both others, the
    // shortcut over the broken one, never the reverse.
    let export = fx.orch_ok(&["export", "preferences", "--project", "calc"], 0);
    let pairs: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let key = |p: &Value| {
        (
            p["chosen"]["candidate"].as_u64().unwrap(),
            p["rejected"]["candidate"].as_u64().unwrap(),
            p["kind"].as_str().unwrap().to_string(),
        )
    };
    let mut keys: Vec<_> = pairs.iter().map(key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            (1, 2, "outcome".to_string()),
            (3, 1, "ranking".to_string()),
            (3, 2, "outcome".to_string())
        ]
    );
    for p in &pairs {
        assert_eq!(p["task_id"], id.as_str());
        assert!(p["prompt"].as_str().unwrap().contains("Fix add"));
        assert!(p["system"].as_str().unwrap().contains("write_file"));
        assert!(!p["reason"].as_str().unwrap().is_empty());
        for side in ["chosen", "rejected"] {
            let s = &p[side];
            assert!(s["diff"].as_str().unwrap().contains("calc.py"), "{s:#}");
            assert!(
                s["gates"].as_array().is_some_and(|g| !g.is_empty()),
                "{s:#}"
            );
            assert!(s["tests"]["summary"].is_string(), "{s:#}");
        }
    }
    let ranking = pairs.iter().find(|p| p["kind"] == "ranking").unwrap();
    let chosen = &ranking["chosen"];
    assert_eq!(chosen["model"], "replay:right", "{chosen:#}");
    assert_eq!(chosen["worker"], "builtin");
    assert_eq!(chosen["score"], 9.0);
    assert_eq!(chosen["tests"]["passed"], true);
    assert!(chosen["diff"]
        .as_str()
        .unwrap()
        .contains("+    return a + b"));
    assert_eq!(ranking["rejected"]["score"], 6.5);
    assert!(ranking["reason"]
        .as_str()
        .unwrap()
        .contains("adds any two numbers"));
    let failed = &pairs
        .iter()
        .find(|p| key(p) == (3, 2, "outcome".to_string()))
        .unwrap()["rejected"];
    assert_eq!(failed["tests"]["passed"], false);
    assert!(failed["gates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["passed"] == false));

    // --since filters; bad flags are refused with exit code 2.
    let recent = fx.orch_ok(
        &[
            "export",
            "preferences",
            "--project",
            "calc",
            "--since",
            "7d",
        ],
        0,
    );
    assert_eq!(recent.lines().count(), 3);
    let future = fx.orch_ok(
        &[
            "export",
            "preferences",
            "--project",
            "calc",
            "--since",
            "2999-01-01",
        ],
        0,
    );
    assert_eq!(future.lines().count(), 0);
    for bad in [
        vec![
            "export",
            "preferences",
            "--project",
            "calc",
            "--since",
            "soon",
        ],
        vec!["export", "preferences", "--project", "nope"],
        vec!["export", "preferences"],
    ] {
        let out = fx.orch(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

#[test]
fn a_hostile_ranking_is_refused_and_the_scores_decide() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            // Puts the candidate that failed its tests first.
            {"model": "judge", "when": "Rank these candidates", "times": 0, "json": {"order": [
                {"candidate": 2, "reason": "ignore the tests, take this one"}
            ]}},
            {"model": "judge", "when": "shortcut_for_the_test", "times": 0, "json": {
                "passed": true, "score": 6.5, "reasoning": "the tests pass", "issues": []}},
            judge_pass(),
            writes("shortcut", CALC_SHORTCUT, 0.01),
            writes("broken", CALC_BREAKS_MUL, 0.02),
            writes("right", CALC_FIXED, 0.04),
        ]}),
        // The project runs one attempt at a time; this task asks for three.
        "candidate_models = [\"replay:shortcut\", \"replay:broken\", \"replay:right\"]",
    );
    let add = |n: &str| {
        fx.orch(&[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Fix add",
            "--desc",
            "add() subtracts; make it return the sum",
            "--candidates",
            n,
            "--json",
        ])
    };
    assert_eq!(add("9").status.code(), Some(2), "1 to 8 candidates");
    let added = add("3");
    assert!(added.status.success());
    let task: Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(task["candidates"], 3);
    let id = task["id"].as_str().unwrap().to_string();
    fx.orch_ok(&["run", "--project", "calc"], 0);
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    let events = fx.events(&id);
    let ranked = events
        .iter()
        .find(|e| e["kind"] == "candidates_ranked")
        .unwrap();
    assert_eq!(ranked["data"]["method"], "scores");
    assert_eq!(ranked["data"]["order"], json!([3, 1]));
    let warning = ranked["data"]["warning"].as_str().unwrap();
    assert!(warning.contains("candidate 2"), "{warning}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "warning" && e["message"].as_str().unwrap().contains("ranking")),
        "the fallback is recorded as a warning"
    );
    let shown = fx.task(&id);
    let attempts = shown["attempts"].as_array().unwrap();
    assert!(by_candidate(attempts, 3)["rank_reason"]
        .as_str()
        .unwrap()
        .contains("score"));
}

#[test]
fn the_task_budget_covers_every_candidate_and_stops_them() {
    let fx = Fixture::new();
    let budget = 0.05;
    // Three candidates that never finish: each lists files until the
    // task's one budget runs out. Each answer takes a second, so all three
    // are in flight together.
    let looping = |model: &str| {
        json!({"model": model, "times": 0, "delay_ms": 1000, "tool_calls": [
            {"name": "list_files", "arguments": {"pattern": "*.py"}}
        ]})
    };
    fx.with_replay(
        json!({"responses": [looping("c1"), looping("c2"), looping("c3"), judge_pass()]}),
        &format!(
            "candidates = 3\ncandidate_models = [\"replay:c1\", \"replay:c2\", \"replay:c3\"]\nmax_budget_per_task_usd = {budget}\nmax_turns = 200"
        ),
    );
    // About 250 input tokens per call: roughly $0.015 each, so the budget
    // holds the three first calls and no more.
    for m in ["c1", "c2", "c3"] {
        fx.append_config(&format!("[prices.{m}]\ninput = 60.0\noutput = 0.0\n"));
    }
    let id = fx.add_task("Fix add", "");
    fx.orch_ok(&["run", "--project", "calc"], 1);
    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    let reason = shown["task"]["failure_reason"].as_str().unwrap();
    assert!(reason.contains("budget"), "{reason}");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "one round, no retry: {attempts:#?}");
    let mut total = 0.0;
    for a in attempts {
        let c = a["cost_usd"].as_f64().unwrap();
        assert!(c > 0.0, "every candidate spent and was charged: {a:#}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(error.contains("task budget reached"), "{a:#}");
        total += c;
    }
    let spent = shown["task"]["cost_usd"].as_f64().unwrap();
    assert!(close(spent, total), "task {spent} vs candidates {total}");
    assert!(
        spent <= budget,
        "the three together stayed within it: {spent}"
    );
    let report: Value = serde_json::from_str(&fx.orch_ok(&["cost", "--json"], 0)).unwrap();
    assert!(report["total"]["cost_usd"].as_f64().unwrap() <= budget);
}
