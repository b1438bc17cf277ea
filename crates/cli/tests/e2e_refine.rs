//! End-to-end: refinement to a score (`[projects.refine]`). The real `orch`
//! binary on a real repository; the replay provider scripts the worker's
//! edit in each iteration and the judge's score for each snapshot (picked
//! by the marker line the snapshot's diff carries).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// calc.py with add fixed (the tests pass) and a marker line `# <tag>`.
fn version(tag: &str) -> String {
    format!("{CALC_FIXED}# {tag}\n")
}

/// The worker's answer in iteration `i`: write (or edit) calc.py, finish.
fn worker_turn(i: u32, edit: Value) -> Value {
    let when = (i > 1).then(|| format!("Refinement: iteration {i} of"));
    worker_call(
        when.as_deref(),
        json!([edit, {"name": "finish", "arguments": {"summary": format!("iteration {i}")}}]),
    )
}

fn write_version(tag: &str) -> Value {
    json!({"name": "write_file", "arguments": {"path": "calc.py", "content": version(tag)}})
}

/// The judge's verdict on the snapshot whose diff shows `# <tag>`.
fn judge_scores(tag: &str, score: f64, passed: bool, issues: &[&str]) -> Value {
    json!({"model": "judge", "when": format!("# {tag}"), "json": {
        "passed": passed, "score": score, "reasoning": format!("{tag} scores {score}"), "issues": issues
    }})
}

fn refine_table(threshold: f64, max_iterations: u32, plateau: u32) -> String {
    format!("[projects.refine]\nthreshold = {threshold}\nmax_iterations = {max_iterations}\nplateau = {plateau}\n")
}

fn events_of(fx: &Fixture, id: &str, kind: &str) -> Vec<Value> {
    fx.events(id)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn scores(attempt: &Value) -> Vec<Option<f64>> {
    attempt["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64())
        .collect()
}

fn outcomes(attempt: &Value) -> Vec<String> {
    attempt["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn scores_5_7_6_9_land_the_9_and_record_the_revert() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_turn(1, write_version("v1")),
            worker_turn(2, write_version("v2")),
            worker_turn(3, write_version("v3")),
            // Only applies on top of v2: it lands only if the branch went
            // back to iteration 2's snapshot after the 6.
            worker_turn(4, json!({"name": "edit_file", "arguments": {"path": "calc.py", "old": "# v2", "new": "# v4"}})),
            judge_scores("v1", 5.0, false, &["add has no docstring"]),
            judge_scores("v2", 7.0, true, &["the marker comment is vague"]),
            judge_scores("v3", 6.0, true, &["the v3 marker is worse"]),
            judge_scores("v4", 9.0, true, &[]),
        ]}),
        "max_attempts = 1",
    );
    fx.append_config(&refine_table(8.5, 10, 3));
    let id = fx.add_task("Fix add", "add() subtracts");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");

    // main ends at the 9's tree, built on the 7's snapshot.
    assert_eq!(fx.main_file("calc.py"), version("v4").trim_end());
    assert!(fx.main_is_green());

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged");
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "one attempt, four iterations");
    let at = &attempts[0];
    assert_eq!(at["status"], "passed");
    assert_eq!(scores(at), [Some(5.0), Some(7.0), Some(6.0), Some(9.0)]);
    assert_eq!(outcomes(at), ["kept", "kept", "reverted", "kept"]);
    let its = at["iterations"].as_array().unwrap();
    assert_eq!(its[2]["best_iteration"], 2);
    assert_eq!(its[2]["best_score"], 7.0);
    assert_eq!(its[3]["best_iteration"], 4);
    assert!(its.iter().all(|i| i["tests_passed"] == true));
    assert_eq!(at["verdict"]["score"], 9.0);
    assert_eq!(at["turns"], 4, "the iterations' turns add up");

    // In git: the 9 sits on the 7, the 6 is kept on its own ref.
    let commit = |i: usize| its[i]["commit"].as_str().unwrap().to_string();
    assert_eq!(
        git(&fx.repo, &["rev-parse", &format!("{}^", commit(3))]),
        commit(1)
    );
    assert_eq!(
        git(
            &fx.repo,
            &["rev-parse", &format!("refs/orch/iterations/{id}/1/3")]
        ),
        commit(2)
    );
    assert_eq!(
        git(
            &fx.repo,
            &["rev-parse", &format!("refs/orch/attempts/{id}/1")]
        ),
        commit(3)
    );

    // Events: every iteration, the revert with where it went, and the stop.
    let iterations = events_of(&fx, &id, "refine_iteration");
    assert_eq!(iterations.len(), 4);
    let revert = &iterations[2]["data"];
    assert_eq!(revert["outcome"], "reverted");
    assert_eq!(revert["score"], 6.0);
    assert_eq!(revert["reverted_to"], commit(1).as_str());
    assert!(
        iterations[2]["message"]
            .as_str()
            .unwrap()
            .contains("reverted to iteration 2"),
        "{}",
        iterations[2]["message"]
    );
    let stopped = events_of(&fx, &id, "refine_stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["data"]["reason"], "threshold");
    assert_eq!(stopped[0]["data"]["best_score"], 9.0);
    assert_eq!(stopped[0]["data"]["passed"], true);

    // `orch show`: a line per iteration.
    let text = fx.orch_ok(&["show", &id], 0);
    for line in [
        "refinement: 4 iteration(s)",
        " 1  score 5.0  kept",
        " 3  score 6.0  reverted to iteration 2",
        " 4  score 9.0  kept",
    ] {
        assert!(text.contains(line), "`{line}` not in:\n{text}");
    }

    // The audit trail: the table in the attempt's file, each iteration's
    // transcript and verdict, and the undone iteration named to the next
    // worker.
    let audit = fx.root().join(".orch/audit/calc");
    let md = std::fs::read_to_string(audit.join(format!("attempts/{id}-1.md"))).unwrap();
    assert!(md.contains("## Refinement"), "{md}");
    assert!(md.contains("| 3 | 6.0 |"), "{md}");
    assert!(md.contains("reverted to iteration 2"), "{md}");
    let fourth =
        std::fs::read_to_string(audit.join(format!("attempts/{id}-1-iteration-4.json"))).unwrap();
    assert!(fourth.contains("it was undone"), "{fourth}");
    assert!(fourth.contains("the v3 marker is worse"), "{fourth}");
    let third =
        std::fs::read_to_string(audit.join(format!("verdicts/{id}-1-iteration-3.md"))).unwrap();
    assert!(third.contains("v3 scores 6"), "{third}");
    let verdict = std::fs::read_to_string(audit.join(format!("verdicts/{id}-1.md"))).unwrap();
    assert!(
        verdict.contains("v4 scores 9"),
        "the attempt's verdict is the best's:\n{verdict}"
    );
    assert_eq!(fx.worktree_count(), 1);
}

#[test]
fn a_plateau_stops_refinement_and_a_best_that_does_not_pass_fails() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_turn(1, write_version("v1")),
            worker_turn(2, write_version("v2")),
            worker_turn(3, write_version("v3")),
            worker_turn(4, write_version("v4")),
            judge_scores("v1", 6.0, false, &["too terse"]),
            judge_scores("v2", 6.0, false, &["still terse"]),
            judge_scores("v3", 6.0, false, &["terse as ever"]),
            judge_scores("v4", 9.0, true, &[]),
        ]}),
        "max_attempts = 1\njudge_min_score = 7.0",
    );
    fx.append_config(&refine_table(8.5, 10, 2));
    let before = fx.main_sha();
    let id = fx.add_task("Fix add", "add() subtracts");
    fx.orch_ok(&["run", "--project", "calc"], 1);

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "failed");
    let at = &shown["attempts"][0];
    assert_eq!(at["status"], "failed");
    // Two iterations without a better score after the first: stop, never
    // reaching the fourth worker's 9.
    assert_eq!(scores(at), [Some(6.0), Some(6.0), Some(6.0)]);
    assert_eq!(outcomes(at), ["kept", "reverted", "reverted"]);
    let stopped = events_of(&fx, &id, "refine_stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["data"]["reason"], "plateau");
    assert_eq!(stopped[0]["data"]["best_iteration"], 1);
    assert_eq!(stopped[0]["data"]["passed"], false);

    // Nothing landed; the best snapshot stays on the attempt's ref, and the
    // feedback is the judge's on it.
    assert_eq!(fx.main_sha(), before);
    let first = at["iterations"][0]["commit"].as_str().unwrap();
    assert_eq!(
        git(
            &fx.repo,
            &["rev-parse", &format!("refs/orch/attempts/{id}/1")]
        ),
        first
    );
    assert_eq!(at["head_commit"], first);
    let feedback = shown["task"]["feedback"].as_str().unwrap();
    assert!(feedback.contains("too terse"), "{feedback}");
    assert_eq!(fx.worktree_count(), 1);
}

#[test]
fn a_worker_that_stops_short_is_dropped_and_one_that_changes_nothing_is_not_judged() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_turn(1, write_version("v1")),
            // No finish within max_turns = 1: the write is dropped.
            worker_call(Some("Refinement: iteration 2 of"), json!([write_version("v2")])),
            // Finishes without a change.
            worker_call(
                Some("Refinement: iteration 3 of"),
                json!([{"name": "finish", "arguments": {"summary": "nothing to add"}}]),
            ),
            judge_scores("v1", 7.0, true, &["could be tidier"]),
            judge_scores("v2", 9.0, true, &[]),
        ]}),
        "max_attempts = 1\nmax_turns = 1",
    );
    fx.append_config(&refine_table(8.5, 10, 2));
    let id = fx.add_task("Fix add", "add() subtracts");
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("1 merged"), "{out}");
    assert_eq!(fx.main_file("calc.py"), version("v1").trim_end());

    let shown = fx.task(&id);
    let at = &shown["attempts"][0];
    assert_eq!(at["status"], "passed");
    assert_eq!(scores(at), [Some(7.0), None, None]);
    assert_eq!(outcomes(at), ["kept", "reverted", "unchanged"]);
    let note = |i: usize| at["iterations"][i]["note"].as_str().unwrap().to_string();
    assert!(note(1).contains("max_turns"), "{}", note(1));
    assert!(note(2).contains("changed nothing"), "{}", note(2));
    let stopped = events_of(&fx, &id, "refine_stopped");
    assert_eq!(stopped[0]["data"]["reason"], "plateau");
    // Only the first iteration was judged.
    assert_eq!(events_of(&fx, &id, "verdict_recorded").len(), 1);
}
