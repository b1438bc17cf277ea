//! End-to-end: best-of-N candidates with `[projects.refine]`, and loop
//! detection across rounds of candidates. Each candidate refines on its own
//! branch until its judge score reaches the threshold (or max_iterations),
//! and the round ranks the candidates' best snapshots; two rounds whose
//! candidates fail the way the round before did stop the task for a
//! person. The real `orch` binary, real git, bwrap and pytest; only the
//! model is scripted: each candidate's edits are picked by its model name
//! and iteration, each judge score by the marker line its snapshot carries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// calc.py with add fixed (the tests pass) and a marker line `# <tag>`.
fn version(tag: &str) -> String {
    format!("{CALC_FIXED}# {tag}\n")
}

/// Candidate `model`'s answer in iteration `i`: write calc.py marked
/// `tag`, finish; at a fixed cost.
fn iteration(model: &str, i: u32, tag: &str, cost: f64) -> Value {
    let mut v = json!({
        "model": model,
        "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": cost},
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": version(tag)}},
            {"name": "finish", "arguments": {"summary": format!("{model}: iteration {i}")}}
        ]
    });
    if i > 1 {
        v["when"] = json!(format!("Refinement: iteration {i} of"));
    }
    v
}

/// The judge's verdict on the snapshot whose diff shows `# <tag>`.
fn judge_scores(tag: &str, score: f64, passed: bool) -> Value {
    json!({"model": "judge", "when": format!("# {tag}\n"),
        "usage": {"input_tokens": 50, "output_tokens": 5, "cost_usd": 0.001},
        "json": {"passed": passed, "score": score, "reasoning": format!("{tag} scores {score}"),
            "issues": if passed { vec![] } else { vec![format!("{tag} lacks a docstring")] }}})
}

fn by_candidate(attempts: &[Value], k: u64) -> &Value {
    attempts
        .iter()
        .find(|a| a["candidate"] == k)
        .unwrap_or_else(|| panic!("no candidate {k} in {attempts:#?}"))
}

fn iteration_field(attempt: &Value, field: &str) -> Vec<Value> {
    attempt["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].clone())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn each_candidate_refines_and_the_better_refined_one_lands() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            // Asked once, with both best snapshots: c2's 9 above c1's 8.
            {"model": "judge", "when": "Rank these candidates",
                "usage": {"input_tokens": 80, "output_tokens": 8, "cost_usd": 0.002},
                "json": {"order": [
                    {"candidate": 2, "reason": "refined to 9"},
                    {"candidate": 1, "reason": "refined to 8"}
                ]}},
            // c1: 5 → 8 → 7 (undone); max_iterations stops it at its 8.
            iteration("c1", 1, "c1-v1", 0.01),
            iteration("c1", 2, "c1-v2", 0.01),
            iteration("c1", 3, "c1-v3", 0.01),
            // c2: 6 → 9 reaches the threshold.
            iteration("c2", 1, "c2-v1", 0.02),
            iteration("c2", 2, "c2-v2", 0.02),
            judge_scores("c1-v1", 5.0, false),
            judge_scores("c1-v2", 8.0, true),
            judge_scores("c1-v3", 7.0, true),
            judge_scores("c2-v1", 6.0, false),
            judge_scores("c2-v2", 9.0, true),
        ]}),
        "max_attempts = 1\ncandidates = 2\ncandidate_models = [\"replay:c1\", \"replay:c2\"]",
    );
    fx.append_config("[projects.refine]\nthreshold = 8.5\nmax_iterations = 3\nplateau = 3\n");
    let id = fx.add_task("Fix add", "add() subtracts; make it return the sum");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");

    // c2's refined snapshot landed.
    assert_eq!(fx.main_file("calc.py"), version("c2-v2").trim_end());
    assert!(fx.main_is_green());

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    assert_eq!(shown["task"]["attempts"], 1, "a round counts once");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (c1, c2) = (by_candidate(attempts, 1), by_candidate(attempts, 2));

    // Each candidate's iterations are on its own attempt.
    assert_eq!(
        iteration_field(c1, "score"),
        [json!(5.0), json!(8.0), json!(7.0)]
    );
    assert_eq!(
        iteration_field(c1, "outcome"),
        [json!("kept"), json!("kept"), json!("reverted")]
    );
    assert_eq!(iteration_field(c2, "score"), [json!(6.0), json!(9.0)]);
    assert_eq!(
        iteration_field(c2, "outcome"),
        [json!("kept"), json!("kept")]
    );
    assert_eq!(c1["turns"], 3, "c1's iterations' turns add up");
    assert_eq!(c2["turns"], 2);

    // Each is ranked on its best snapshot: its score, verdict and commit.
    assert_eq!(c2["status"], "passed");
    assert_eq!(c2["rank"], 1);
    assert_eq!(c2["rank_reason"], "refined to 9");
    assert_eq!(c2["verdict"]["score"], 9.0);
    assert_eq!(c1["status"], "passed");
    assert_eq!(c1["rank"], 2);
    assert_eq!(c1["verdict"]["score"], 8.0, "its best, not its last");
    let c1_best = c1["iterations"][1]["commit"].as_str().unwrap();
    assert_eq!(c1["head_commit"], c1_best);
    // c1's branch went back to its best after the undone 7.
    assert_eq!(
        git(&fx.repo, &["rev-parse", &format!("orch/{id}-c1")]),
        c1_best
    );
    let c1_n = c1["number"].as_u64().unwrap();
    assert_eq!(
        git(
            &fx.repo,
            &["rev-parse", &format!("refs/orch/iterations/{id}/{c1_n}/3")]
        ),
        c1["iterations"][2]["commit"].as_str().unwrap(),
        "the undone iteration stays reachable"
    );
    assert_eq!(fx.worktree_count(), 1, "every candidate's worktree is gone");

    // Every call is the task's: the workers' on their attempts, the
    // judge's five verdicts and the ranking on the task.
    assert!(close(c1["cost_usd"].as_f64().unwrap(), 0.03), "{c1:#}");
    assert!(close(c2["cost_usd"].as_f64().unwrap(), 0.04), "{c2:#}");
    let task_cost = shown["task"]["cost_usd"].as_f64().unwrap();
    assert!(
        close(task_cost, 0.07 + 0.005 + 0.002),
        "task cost {task_cost}"
    );

    // Events: each candidate's iterations and stop, one ranking, and the
    // task's status moved once for the round.
    let events = fx.events(&id);
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["kind"] == kind).collect() };
    assert_eq!(of("refine_iteration").len(), 5);
    let mut stops: Vec<(u64, String)> = of("refine_stopped")
        .iter()
        .map(|e| {
            let n = e["data"]["number"].as_u64().unwrap();
            (n, e["data"]["reason"].as_str().unwrap().to_string())
        })
        .collect();
    stops.sort();
    let c2_n = c2["number"].as_u64().unwrap();
    let mut expected = vec![
        (c1_n, "max_iterations".to_string()),
        (c2_n, "threshold".to_string()),
    ];
    expected.sort();
    assert_eq!(stops, expected);
    let ranked = of("candidates_ranked");
    assert_eq!(ranked.len(), 1);
    assert_eq!(ranked[0]["data"]["order"], json!([2, 1]));
    assert_eq!(ranked[0]["data"]["method"], "judge");
    let statuses: Vec<&str> = of("status_changed")
        .iter()
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

    // The attempt's markdown carries its refinement table.
    let audit = fx.root().join(".orch/audit/calc");
    let md = std::fs::read_to_string(audit.join(format!("attempts/{id}-{c1_n}.md"))).unwrap();
    assert!(md.contains("## Refinement"), "{md}");
    assert!(md.contains("| 3 | 7.0 |"), "{md}");
}

/// Does not parse: pytest cannot import calc, so every test errors.
const CALC_SYNTAX_ERROR: &str = "def add(a, b)\n    return a + b\n";
/// Fixes add() and breaks mul(): test_mul fails.
const CALC_BREAKS_MUL: &str =
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n";

/// Candidate `model` writes `content` every round.
fn always_writes(model: &str, content: &str) -> Value {
    json!({"model": model, "times": 0, "tool_calls": [
        {"name": "write_file", "arguments": {"path": "calc.py", "content": content}},
        {"name": "finish", "arguments": {"summary": format!("{model}: changed calc.py")}}
    ]})
}

#[test]
fn rounds_whose_candidates_fail_as_before_stop_for_a_person() {
    let script = json!({"responses": [
        always_writes("c1", CALC_SYNTAX_ERROR),
        always_writes("c2", CALC_BREAKS_MUL),
        judge_pass(),
    ]});
    let project =
        "max_attempts = 5\ncandidates = 2\ncandidate_models = [\"replay:c1\", \"replay:c2\"]";
    let fx = Fixture::new();
    fx.with_replay(script.clone(), project);
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc"], 0);

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "needs_human", "{shown:#}");
    assert_eq!(
        shown["task"]["attempts"], 2,
        "stopped after the second round"
    );
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "two rounds of two: {attempts:#?}");
    assert!(attempts.iter().all(|a| a["status"] == "failed"));
    let question = shown["task"]["question"].as_str().unwrap();
    assert!(question.contains("Rounds 1, 2 of candidates"), "{question}");
    for shown_failure in ["SyntaxError", "test_mul"] {
        assert!(question.contains(shown_failure), "{question}");
    }
    assert_eq!(fx.main_sha(), before);

    let events = fx.events(&id);
    let found = events
        .iter()
        .find(|e| e["kind"] == "loop_detected")
        .expect("a loop_detected event");
    assert_eq!(found["data"]["kind"], "repeated_failure");
    assert_eq!(found["data"]["rounds"], json!([1, 2]));
    assert!(found["data"]["similarity"].as_f64().unwrap() >= 0.8);
    let mut numbers: Vec<u64> = found["data"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4]);

    // With loop_similarity = 0 the rounds go on to max_attempts.
    let off = Fixture::new();
    off.with_replay(
        script,
        &format!("{project}\nmax_attempts = 3\nloop_similarity = 0.0"),
    );
    let id = off.add_task("Fix add", "add() subtracts");
    off.orch_ok(&["run", "--project", "calc"], 1);
    let shown = off.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    assert_eq!(shown["task"]["attempts"], 3);
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 6);
}
