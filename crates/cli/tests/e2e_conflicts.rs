//! End-to-end: conflicts resolved under test (`resolve_conflicts`). Two
//! tasks change the same lines of calc.py in ways that can both be kept and
//! are worked in parallel; whichever reaches the merge queue second no
//! longer merges. The resolver (the task's worker, scripted here) resolves
//! the markers in a scratch worktree; only a resolution that passes the
//! whole verification lands, a red one sends the task back with the
//! conflict as feedback, and `resolve_conflicts = "feedback"` never asks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const THREE: &str = "Let add take three numbers";
const STRINGS: &str = "Let add take strings";
const CALC_THREE: &str =
    "def add(a, b, c=0):\n    return a + b + c\n\n\ndef mul(a, b):\n    return a * b\n";
const CALC_STRINGS: &str =
    "def add(a, b):\n    return int(a) + int(b)\n\n\ndef mul(a, b):\n    return a * b\n";
/// Both intents kept.
const CALC_BOTH: &str = "def add(a, b, c=0):\n    return int(a) + int(b) + int(c)\n\n\ndef mul(a, b):\n    return a * b\n";
/// Markers gone, but the strings change lost: test_strings fails.
const CALC_BAD: &str =
    "def add(a, b, c=0):\n    return sum((a, b, c))\n\n\ndef mul(a, b):\n    return a * b\n";
const TEST_THREE: &str =
    "from calc import add\n\n\ndef test_three():\n    assert add(1, 2, 3) == 6\n";
const TEST_STRINGS: &str =
    "from calc import add\n\n\ndef test_strings():\n    assert add(\"2\", \"3\") == 5\n";

fn write(path: &str, content: &str) -> Value {
    json!({"name": "write_file", "arguments": {"path": path, "content": content}})
}

fn finish(summary: &str) -> Value {
    json!({"name": "finish", "arguments": {"summary": summary}})
}

/// The two tasks' work: each changes add() and adds its own test.
fn work_replies() -> Vec<Value> {
    vec![
        worker_call(
            Some(&format!("# Task: {THREE}\n")),
            json!([
                write("calc.py", CALC_THREE),
                write("test_three.py", TEST_THREE),
                finish("add takes an optional third number")
            ]),
        ),
        worker_call(
            Some(&format!("# Task: {STRINGS}\n")),
            json!([
                write("calc.py", CALC_STRINGS),
                write("test_strings.py", TEST_STRINGS),
                finish("add converts its arguments with int()")
            ]),
        ),
    ]
}

/// A resolver answer for whichever task conflicts (either may merge first).
fn resolver_replies(calc: &str) -> Vec<Value> {
    [THREE, STRINGS]
        .iter()
        .map(|title| {
            worker_call(
                Some(&format!("# Resolve a merge conflict: {title}\n")),
                json!([write("calc.py", calc), finish("kept both changes to add")]),
            )
        })
        .collect()
}

/// A green base (add fixed) and two tasks, worked in parallel.
fn setup(script: Vec<Value>, extra: &str) -> (Fixture, Vec<String>) {
    let fx = Fixture::new();
    std::fs::write(fx.repo.join("calc.py"), CALC_FIXED).unwrap();
    git(&fx.repo, &["commit", "-qam", "green base"]);
    fx.with_replay(
        json!({ "responses": script }),
        &format!("max_workers = 2\n{extra}"),
    );
    let ids = vec![fx.add_task(THREE, ""), fx.add_task(STRINGS, "")];
    (fx, ids)
}

fn run(fx: &Fixture) -> String {
    fx.orch_ok(
        &["run", "--project", "calc", "--cycles", "3", "--until-idle"],
        0,
    )
}

fn all_events(fx: &Fixture, ids: &[String]) -> Vec<Value> {
    ids.iter().flat_map(|id| fx.events(id)).collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn attempts(fx: &Fixture, id: &str) -> Vec<Value> {
    fx.task(id)["attempts"].as_array().unwrap().clone()
}

/// (number, kind, status) of each attempt.
fn attempt_lines(fx: &Fixture, id: &str) -> Vec<(u64, String, String)> {
    attempts(fx, id)
        .iter()
        .map(|a| {
            (
                a["number"].as_u64().unwrap(),
                a["kind"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The task that reached the merge queue second: the one with a resolver
/// attempt or a rejected merge.
fn conflicted(events: &[Value]) -> String {
    let marks: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "conflict_resolving" || e["kind"] == "merge_rejected")
        .collect();
    assert!(!marks.is_empty(), "no task conflicted: {events:#?}");
    marks[0]["task_id"].as_str().unwrap().to_string()
}

fn assert_main_has_both_changes(fx: &Fixture) {
    assert_eq!(fx.main_file("calc.py"), CALC_BOTH.trim_end());
    assert_eq!(fx.main_file("test_three.py"), TEST_THREE.trim_end());
    assert_eq!(fx.main_file("test_strings.py"), TEST_STRINGS.trim_end());
    // The user's checkout followed main (it was clean); its tests pass.
    assert!(fx.main_is_green(), "the project's tests fail on main");
    assert!(fx.orch_branches().is_empty(), "{:?}", fx.orch_branches());
    assert_eq!(fx.worktree_count(), 1, "a scratch worktree was left behind");
}

#[test]
fn a_two_task_conflict_resolved_by_the_resolver_with_main_green() {
    let mut script = resolver_replies(CALC_BOTH);
    script.extend(work_replies());
    script.push(judge_pass());
    let (fx, ids) = setup(script, "");
    let out = run(&fx);
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{out}");
    }
    assert_main_has_both_changes(&fx);

    let events = all_events(&fx, &ids);
    assert!(of_kind(&events, "merge_rejected").is_empty(), "{events:#?}");
    let resolved = conflicted(&events);
    let other = ids.iter().find(|i| **i != resolved).unwrap();

    // The resolver's attempt is the task's second, of kind resolve, and
    // not counted: the work itself passed once.
    assert_eq!(
        attempt_lines(&fx, &resolved),
        [
            (1, "work".into(), "passed".into()),
            (2, "resolve".into(), "passed".into())
        ]
    );
    let shown = fx.task(&resolved);
    assert_eq!(shown["task"]["attempts"], 1);
    let resolve = &shown["attempts"][1];
    assert_eq!(
        resolve["attempt_ref"],
        format!("refs/orch/attempts/{resolved}/2")
    );
    assert!(resolve["cost_usd"].as_f64().is_some());
    assert!(resolve["turns"].as_u64().unwrap() >= 1, "{resolve:#}");
    assert_eq!(
        attempt_lines(&fx, other),
        [(1, "work".into(), "passed".into())]
    );
    let text = fx.orch_ok(&["show", &resolved], 0);
    assert!(
        text.contains("attempt 2 — passed (merge conflict resolution; not counted)"),
        "{text}"
    );

    // Events: the resolution started on calc.py and ended resolved, with
    // the verified merge commit, which main contains with both parents.
    let starting = of_kind(&events, "conflict_resolving");
    assert_eq!(starting.len(), 1, "{starting:#?}");
    assert_eq!(starting[0]["data"]["files"], json!(["calc.py"]));
    assert_eq!(starting[0]["data"]["number"], 2);
    let done = of_kind(&events, "conflict_resolved");
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0]["data"]["outcome"], "resolved");
    let commit = done[0]["data"]["commit"].as_str().unwrap();
    git(&fx.repo, &["merge-base", "--is-ancestor", commit, "main"]);
    let parents = git(&fx.repo, &["rev-list", "--parents", "-n", "1", commit]);
    assert_eq!(parents.split_whitespace().count(), 3, "{parents}");
    assert!(git(&fx.repo, &["log", "-1", "--format=%B", commit])
        .contains("Conflict resolved by attempt 2"));
    // The resolution's own verification ran and passed.
    assert!(events.iter().any(|e| e["kind"] == "verification_finished"
        && e["task_id"] == resolved.as_str()
        && e["data"]["stage"] == "merge"
        && e["data"]["passed"] == true));
    // Every event of the resolution names the resolver's attempt, whose
    // start and end say it is of kind resolve.
    let resolver_id = resolve["id"].as_i64().unwrap();
    let of_resolver = |kind: &str| -> Vec<&Value> {
        of_kind(&events, kind)
            .into_iter()
            .filter(|e| e["data"]["attempt_id"] == resolver_id)
            .collect()
    };
    for kind in ["attempt_started", "attempt_finished"] {
        let [e] = of_resolver(kind)[..] else {
            panic!("one {kind} of the resolver: {events:#?}");
        };
        assert_eq!(e["data"]["kind"], "resolve", "{e:#}");
    }
    let verified = of_resolver("verification_finished");
    assert_eq!(verified.len(), 1, "{events:#?}");
    assert_eq!(verified[0]["data"]["attempt"], 2);
    assert_eq!(verified[0]["data"]["stage"], "merge");
    let tools = of_resolver("tool_call");
    assert!(!tools.is_empty(), "{events:#?}");
    assert!(
        tools.iter().all(|t| t["data"]["attempt"] == 2),
        "{tools:#?}"
    );
    assert!(
        of_kind(&events, "attempt_finished")
            .iter()
            .filter(|e| e["data"]["attempt_id"] != resolver_id)
            .all(|e| e["data"]["kind"] == "work"),
        "the work attempts are work: {events:#?}"
    );
    // Its model calls were metered as the task's worker.
    let calls: Vec<&Value> = of_kind(&events, "model_call")
        .into_iter()
        .filter(|c| c["task_id"] == resolved.as_str())
        .collect();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c["data"]["role"] == "worker")
            .count(),
        2,
        "one call for the work, one for the resolution: {calls:#?}"
    );
}

#[test]
fn a_conflict_inside_one_batch_is_resolved_on_the_candidate_and_the_batch_lands_together() {
    let mut script = resolver_replies(CALC_BOTH);
    script.extend(work_replies());
    script.push(judge_pass());
    let (fx, ids) = setup(script, "max_workers = 1");
    // First run: the user's checkout is dirty, so nothing lands; both tasks
    // pass (one after the other) and wait in the queue.
    let a_tip = both_passed_in_the_queue(&fx, &ids);

    // Second run: one batch; the second branch conflicts with the first
    // (not with main), is resolved on top of it, and both land together.
    let out = run(&fx);
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{out}");
    }
    assert_main_has_both_changes(&fx);
    let events = all_events(&fx, &ids);
    assert_eq!(conflicted(&events), ids[1]);
    let starting = of_kind(&events, "conflict_resolving");
    assert_eq!(starting.len(), 1, "{starting:#?}");
    assert_eq!(starting[0]["data"]["onto"], a_tip.as_str());
    assert_eq!(
        of_kind(&events, "conflict_resolved")[0]["data"]["outcome"],
        "resolved"
    );
    for id in &ids {
        let merged: Vec<&Value> = of_kind(&events, "merged")
            .into_iter()
            .filter(|e| e["task_id"] == id.as_str())
            .collect();
        assert_eq!(merged.len(), 1, "{merged:#?}");
        assert_eq!(merged[0]["data"]["batch"], 2, "{:#}", merged[0]);
    }
    // The batch (with the resolution) was verified once more as a whole.
    assert!(events.iter().any(|e| e["kind"] == "verification_finished"
        && e["data"]["batch"] == 2
        && e["data"]["passed"] == true));
    assert_eq!(
        attempt_lines(&fx, &ids[1]),
        [
            (1, "work".into(), "passed".into()),
            (2, "resolve".into(), "passed".into())
        ]
    );
    assert_eq!(
        attempt_lines(&fx, &ids[0]),
        [(1, "work".into(), "passed".into())]
    );
}

/// Both tasks pass with a dirty checkout, so they wait in the queue and
/// the next run merges them as one batch (the second conflicts with the
/// first). Returns the first branch's tip.
fn both_passed_in_the_queue(fx: &Fixture, ids: &[String]) -> String {
    std::fs::write(
        fx.repo.join(".gitignore"),
        "__pycache__/\n.pytest_cache/\n# mine\n",
    )
    .unwrap();
    let out = fx.orch_ok(&["run", "--project", "calc"], 0);
    assert!(out.contains("uncommitted changes"), "{out}");
    for id in ids {
        assert_eq!(fx.task(id)["task"]["status"], "passed", "{out}");
    }
    git(&fx.repo, &["checkout", "--", ".gitignore"]);
    git(&fx.repo, &["rev-parse", &format!("orch/{}", ids[0])])
}

#[test]
fn a_cancel_during_the_resolution_stops_the_resolver_and_lands_nothing_of_it() {
    // The resolver's model takes 30 s to answer: the cancel comes first.
    let mut script: Vec<Value> = resolver_replies(CALC_BOTH)
        .into_iter()
        .map(|mut r| {
            r["delay_ms"] = json!(30_000);
            r
        })
        .collect();
    script.extend(work_replies());
    script.push(judge_pass());
    let (fx, ids) = setup(script, "max_workers = 1");
    both_passed_in_the_queue(&fx, &ids);

    let mut child = fx
        .orch_cmd(&["run", "--project", "calc", "--quiet"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fx
        .events(&ids[1])
        .iter()
        .any(|e| e["kind"] == "conflict_resolving")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the resolver never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fx.orch_ok(&["cancel", &ids[1]], 0);
    let cancelled = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        cancelled.elapsed() < std::time::Duration::from_secs(20),
        "the cancel stopped the resolver's model call: {:?}",
        cancelled.elapsed()
    );
    assert_eq!(fx.task(&ids[1])["task"]["status"], "cancelled");
    assert_eq!(
        attempt_lines(&fx, &ids[1]),
        [
            (1, "work".into(), "passed".into()),
            (2, "resolve".into(), "cancelled".into())
        ]
    );
    let events = fx.events(&ids[1]);
    let done = of_kind(&events, "conflict_resolved");
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0]["data"]["outcome"], "stopped");
    assert!(of_kind(&events, "merge_rejected").is_empty(), "{events:#?}");
    // The other task landed alone; nothing of the cancelled one did.
    assert_eq!(fx.task(&ids[0])["task"]["status"], "merged");
    assert_eq!(fx.main_file("calc.py"), CALC_THREE.trim_end());
    assert!(fx.main_is_green());
    assert_eq!(
        fx.worktree_count(),
        1,
        "the scratch worktree was left behind"
    );
}

#[test]
fn a_resolution_whose_tests_fail_does_not_land_and_the_task_goes_back() {
    let mut script = resolver_replies(CALC_BAD);
    script.extend(work_replies());
    // The retry, told about the conflict and the failed resolution.
    script.push(worker_call(
        Some("orch's conflict resolver could not land it"),
        json!([
            write("calc.py", CALC_BOTH),
            write("test_three.py", TEST_THREE),
            write("test_strings.py", TEST_STRINGS),
            finish("rebuilt on the current main")
        ]),
    ));
    script.push(judge_pass());
    let (fx, ids) = setup(script, "");
    let out = run(&fx);
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{out}");
    }
    assert_main_has_both_changes(&fx);
    // The red resolution never reached main.
    for c in git(&fx.repo, &["rev-list", "main"]).lines() {
        let calc = git(&fx.repo, &["show", &format!("{c}:calc.py")]);
        assert_ne!(
            calc,
            CALC_BAD.trim_end(),
            "commit {c} has the red resolution"
        );
    }

    let events = all_events(&fx, &ids);
    let task = conflicted(&events);
    // Work passed, its resolution failed, the retry passed: two counted.
    assert_eq!(
        attempt_lines(&fx, &task),
        [
            (1, "work".into(), "passed".into()),
            (2, "resolve".into(), "failed".into()),
            (3, "work".into(), "passed".into())
        ]
    );
    assert_eq!(fx.task(&task)["task"]["attempts"], 2);
    let resolve = &attempts(&fx, &task)[1];
    assert!(
        resolve["error"]
            .as_str()
            .unwrap()
            .contains("fails verification"),
        "{resolve:#}"
    );
    let done = of_kind(&events, "conflict_resolved");
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0]["data"]["outcome"], "failed");
    let rejected = of_kind(&events, "merge_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    let feedback = rejected[0]["data"]["feedback"].as_str().unwrap();
    assert!(
        feedback.contains("conflicts with work that landed on main"),
        "{feedback}"
    );
    assert!(feedback.contains("fails verification"), "{feedback}");
    assert!(feedback.contains("test_strings"), "{feedback}");
}

#[test]
fn resolve_conflicts_feedback_sends_the_task_back_without_a_resolver() {
    let mut script = work_replies();
    script.push(worker_call(
        Some("conflicts with work that landed"),
        json!([
            write("calc.py", CALC_BOTH),
            write("test_three.py", TEST_THREE),
            write("test_strings.py", TEST_STRINGS),
            finish("rebuilt on the current main")
        ]),
    ));
    script.push(judge_pass());
    let (fx, ids) = setup(script, "resolve_conflicts = \"feedback\"");
    let out = run(&fx);
    for id in &ids {
        assert_eq!(fx.task(id)["task"]["status"], "merged", "{out}");
    }
    assert_main_has_both_changes(&fx);
    let events = all_events(&fx, &ids);
    assert!(of_kind(&events, "conflict_resolving").is_empty());
    assert!(of_kind(&events, "conflict_resolved").is_empty());
    let rejected = of_kind(&events, "merge_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    let feedback = rejected[0]["data"]["feedback"].as_str().unwrap();
    assert!(feedback.contains("conflicts with work that landed"));
    assert!(!feedback.contains("resolver"), "{feedback}");
    let task = conflicted(&events);
    assert_eq!(
        attempt_lines(&fx, &task),
        [
            (1, "work".into(), "passed".into()),
            (2, "work".into(), "passed".into())
        ]
    );
}
