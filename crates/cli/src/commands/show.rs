//! `orch show TASK`: the task (acceptance tests, infrastructure failures,
//! backoff), a table of its attempts, then each attempt in detail: the ref
//! that keeps its commit, transcript summary, diff stat, what verification
//! found (targeted tests still failing, new failures, pre-existing ones
//! that were tolerated — listed, never hidden), verdict, tokens, cost and
//! duration.

use super::{load_config, open_store, print_json};
use crate::table::{Column, Table};
use crate::CliResult;
use clap::Args;
use orch_core::{Attempt, AttemptKind, IterationOutcome, RefineIteration, Task};
use orch_server::views::{attempt_ref, Shown};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Task id (or a unique prefix of at least 4 characters).
    pub task: String,
    #[arg(long)]
    pub json: bool,
}

pub fn show(config_flag: Option<&Path>, a: ShowArgs) -> CliResult {
    // The same document locally and from a server (`--server`).
    let shown: Shown = match crate::client::connect()? {
        Some(server) => server.get(
            &format!("/api/v1/tasks/{}", crate::client::segment(&a.task)),
            &[],
        )?,
        None => {
            let config = load_config(config_flag)?;
            let store = open_store(&config)?;
            orch_server::views::show(&store, &a.task)?
        }
    };
    if a.json {
        print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let attempts: Vec<Attempt> = shown.attempts.into_iter().map(|s| s.attempt).collect();
    print!(
        "{}",
        render(&shown.task, &attempts, crate::table::terminal_width())
    );
    Ok(ExitCode::SUCCESS)
}

/// The human-readable page for one task, its tables fitted to `width`.
fn render(task: &Task, attempts: &[Attempt], width: usize) -> String {
    let mut out = Vec::<String>::new();
    out.push(format!("{}  {}", task.id, task.title));
    out.push(format!(
        "  project: {}   type: {}   priority: {}   status: {}   source: {}",
        task.project,
        task.task_type,
        task.priority,
        task.status,
        task.source.as_str()
    ));
    out.push(format!(
        "  branch: {}   attempts counted: {}   infrastructure failures: {}",
        task.branch(),
        task.attempts,
        task.infra_failures
    ));
    if let Some(t) = task.not_before {
        out.push(format!(
            "  not before: {} (backoff after an infrastructure failure)",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if task.acceptance_tests.is_empty() {
        out.push(
            "  acceptance tests: none (targeted tests come from the title and description)".into(),
        );
    } else {
        out.push(format!(
            "  acceptance tests: {}",
            task.acceptance_tests.join(", ")
        ));
    }
    if !task.allowed_files.is_empty() {
        out.push(format!(
            "  allowed files: {}",
            task.allowed_files.join(", ")
        ));
    }
    if let Some(w) = task.worker {
        out.push(format!("  worker: {w} (the task's own, not the project's)"));
    }
    out.push(format!(
        "  tokens: {} in / {} out   cost: ${:.4}",
        task.input_tokens, task.output_tokens, task.cost_usd
    ));
    if !task.description.is_empty() {
        out.push(String::new());
        out.push(indent(&task.description, 2));
    }
    if let Some(q) = &task.question {
        out.push(format!("  question: {q}"));
    }
    if let Some(ans) = &task.answer {
        out.push(format!("  answer: {ans}"));
    }
    if let Some(r) = &task.failure_reason {
        out.push(format!("  failed: {r}"));
    }
    if !attempts.is_empty() {
        out.push(String::new());
        out.push(
            attempts_table(attempts)
                .render(width)
                .trim_end()
                .to_string(),
        );
    }
    for at in attempts {
        out.push(attempt_details(task, at));
    }
    if let Some(f) = &task.feedback {
        out.push(format!(
            "\nfeedback for the next attempt:\n{}",
            indent(f, 2)
        ));
    }
    let mut text = out.join("\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn attempts_table(attempts: &[Attempt]) -> Table {
    let mut table = Table::new(vec![
        Column::right("#"),
        Column::left("STATUS"),
        Column::right("TURNS"),
        Column::right("IN"),
        Column::right("OUT"),
        Column::right("COST"),
        Column::right("TIME"),
        Column::left("VERDICT").truncate(),
    ]);
    for at in attempts {
        table.row([
            at.number.to_string(),
            with_candidate(at, status_cell(at)),
            at.turns.to_string(),
            at.input_tokens.to_string(),
            at.output_tokens.to_string(),
            format!("${:.4}", at.cost_usd),
            at.duration_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            at.verdict.as_ref().map(verdict_line).unwrap_or_default(),
        ]);
    }
    table
}

fn verdict_line(v: &Value) -> String {
    let passed = v.get("passed").and_then(Value::as_bool).unwrap_or(false);
    let score = v
        .get("score")
        .and_then(Value::as_f64)
        .map(|s| format!(" score {s:.1}"))
        .unwrap_or_default();
    format!("{}{score}", if passed { "passed" } else { "failed" })
}

/// An attempt's status, and what it did when it was not the task's work.
fn status_cell(at: &Attempt) -> String {
    match at.kind {
        AttemptKind::Work => at.status.as_str().to_string(),
        AttemptKind::Resolve => format!("{} (resolve)", at.status.as_str()),
    }
}

/// A best-of-N candidate's status with its number and rank: `passed c3 #1`.
fn with_candidate(at: &Attempt, status: String) -> String {
    match (at.candidate, at.rank) {
        (Some(k), Some(r)) => format!("{status} c{k} #{r}"),
        (Some(k), None) => format!("{status} c{k}"),
        _ => status,
    }
}

/// Where a candidate worked and where the ranking put it.
fn candidate_line(at: &Attempt) -> Option<String> {
    let k = at.candidate?;
    let branch = at.branch.as_deref().unwrap_or("?");
    Some(match (at.rank, &at.rank_reason) {
        (Some(r), Some(why)) => format!("  candidate {k} on {branch}: ranked {r} — {why}"),
        (Some(r), None) => format!("  candidate {k} on {branch}: ranked {r}"),
        _ => format!("  candidate {k} on {branch}: not ranked (it did not pass)"),
    })
}

fn attempt_details(task: &Task, at: &Attempt) -> String {
    let what = match at.kind {
        AttemptKind::Work => "",
        AttemptKind::Resolve => " (merge conflict resolution; not counted)",
    };
    let mut out = vec![format!(
        "\nattempt {} — {}{what}",
        at.number,
        at.status.as_str()
    )];
    out.extend(candidate_line(at));
    if let Some(r) = attempt_ref(task, at) {
        // A ref, not a branch: `git show`/`git log -p` take it as it is.
        out.push(format!("  commit kept at: {r}"));
    }
    if let Some(s) = &at.summary {
        out.push(format!("  worker: {}", s.lines().next().unwrap_or("")));
    }
    if let Some(d) = at.diff_stat.as_deref().filter(|d| !d.trim().is_empty()) {
        out.push(indent(d.trim_end(), 2));
    }
    if let Some(v) = &at.verification {
        if let Some(s) = v.get("summary").and_then(Value::as_str) {
            out.push(format!(
                "  verification: {}",
                s.lines().next().unwrap_or("")
            ));
        }
        if let Some(g) = v.get("goal_unmet").and_then(Value::as_str) {
            out.push(format!("    goal not met: {g}"));
        }
        for (key, label) in [
            ("targeted_failures", "targeted, still failing"),
            ("new_failures", "new failures"),
            ("preexisting_failures", "pre-existing, not targeted"),
        ] {
            let names = strings(v.get(key));
            if !names.is_empty() {
                out.push(format!("    {label} ({}):", names.len()));
                out.extend(names.iter().map(|n| format!("      - {n}")));
            }
        }
    }
    if let Some(v) = &at.verdict {
        out.push(format!("  verdict: {}", verdict_line(v)));
        for i in strings(v.get("issues")) {
            out.push(format!("    - {}", i.lines().next().unwrap_or("")));
        }
    }
    if !at.iterations.is_empty() {
        out.push(format!(
            "  refinement: {} iteration(s)",
            at.iterations.len()
        ));
        out.extend(at.iterations.iter().map(iteration_line));
    }
    if let Some(e) = &at.error {
        out.push(format!("  error: {}", e.lines().next().unwrap_or("")));
    }
    if let Some(p) = &at.audit_path {
        out.push(format!("  transcript: {p}"));
    }
    out.join("\n")
}

/// `    3  score 6.0  reverted to iteration 2` (with why, when it was not
/// judged).
fn iteration_line(it: &RefineIteration) -> String {
    let outcome = match it.outcome {
        IterationOutcome::Reverted => format!("reverted to iteration {}", it.best_iteration),
        other => other.as_str().to_string(),
    };
    let why = it
        .note
        .as_deref()
        .map(|n| format!(" ({})", n.lines().next().unwrap_or("")))
        .unwrap_or_default();
    format!(
        "    {:>2}  {:<9}  {outcome}{why}",
        it.iteration,
        it.score_text()
    )
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn indent(s: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orch_core::{AttemptStatus, TaskId, TaskSource, TaskStatus, TaskType};
    use orch_server::views::ShownAttempt;

    fn at(day: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-03-{day:02}T10:00:00Z"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn task() -> Task {
        Task {
            id: TaskId::from("3f2a9c1b7d0e"),
            project: "calc".into(),
            title: "Fix add() so test_add passes".into(),
            description: "add() subtracts.".into(),
            task_type: TaskType::Fix,
            priority: 1,
            allowed_files: vec!["calc.py".into()],
            acceptance_tests: vec!["test_calc.py::test_add".into()],
            infra_failures: 1,
            not_before: Some(at(2)),
            depends_on: Vec::new(),
            plan_key: None,
            candidates: None,
            worker: None,
            source: TaskSource::Manual,
            status: TaskStatus::Pending,
            attempts: 1,
            feedback: Some("test_add still fails".into()),
            question: None,
            answer: None,
            failure_reason: None,
            input_tokens: 1200,
            output_tokens: 300,
            cost_usd: 0.0123,
            created_at: at(1),
            updated_at: at(1),
        }
    }

    fn attempt(number: u32, head: Option<&str>) -> Attempt {
        Attempt {
            id: i64::from(number),
            task_id: TaskId::from("3f2a9c1b7d0e"),
            number,
            kind: AttemptKind::Work,
            status: AttemptStatus::Failed,
            base_commit: Some("b".into()),
            head_commit: head.map(str::to_string),
            summary: Some("changed add".into()),
            diff_stat: Some(" calc.py | 2 +-\n".into()),
            input_tokens: 1200,
            output_tokens: 300,
            cost_usd: 0.0123,
            turns: 4,
            started_at: at(1),
            finished_at: Some(at(1)),
            duration_ms: Some(12_345),
            verification: Some(serde_json::json!({
                "passed": false, "steps": [], "empty_diff": false,
                "summary": "tests failed: the task's target still fails",
                "new_failures": [],
                "targeted_failures": ["test_calc.py::test_add"],
                "preexisting_failures": ["test_calc.py::test_div", "test_io.py::test_read"],
                "goal_unmet": null
            })),
            verdict: Some(
                serde_json::json!({"passed": false, "score": 2.0, "issues": ["add() still wrong"]}),
            ),
            audit_path: Some("/d/audit/calc/attempts/3f2a9c1b7d0e_1.md".into()),
            error: None,
            iterations: Vec::new(),
            candidate: None,
            round: None,
            branch: None,
            rank: None,
            rank_reason: None,
        }
    }

    #[test]
    fn a_task_s_own_worker_is_shown() {
        let mut t = task();
        assert!(!render(&t, &[], 80).contains("  worker:"));
        t.worker = Some(orch_core::WorkerKind::Codex);
        let text = render(&t, &[], 80);
        assert!(
            text.contains(
                "  allowed files: calc.py\n  worker: codex (the task's own, not the project's)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn candidates_show_their_number_branch_and_rank() {
        let mut won = attempt(4, Some("abc"));
        won.candidate = Some(3);
        won.branch = Some("orch/3f2a9c1b7d0e-c3".into());
        won.rank = Some(1);
        won.rank_reason = Some("general, not special-cased".into());
        let mut lost = attempt(5, Some("def"));
        lost.candidate = Some(1);
        lost.branch = Some("orch/3f2a9c1b7d0e-c1".into());
        let text = render(&task(), &[won.clone(), lost.clone()], 100);
        assert!(text.contains("4  failed c3 #1"), "{text}");
        assert!(text.contains("5  failed c1 "), "{text}");
        assert!(
            attempt_details(&task(), &won).contains(
                "  candidate 3 on orch/3f2a9c1b7d0e-c3: ranked 1 — general, not special-cased"
            ),
            "{text}"
        );
        assert!(attempt_details(&task(), &lost)
            .contains("  candidate 1 on orch/3f2a9c1b7d0e-c1: not ranked (it did not pass)"));
    }

    #[test]
    fn the_page_shows_new_fields_and_every_failure() {
        let text = render(&task(), &[attempt(1, Some("abc")), attempt(2, None)], 80);
        let expected = "\
3f2a9c1b7d0e  Fix add() so test_add passes
  project: calc   type: fix   priority: 1   status: pending   source: manual
  branch: orch/3f2a9c1b7d0e   attempts counted: 1   infrastructure failures: 1
  not before: 2026-03-02 10:00:00 UTC (backoff after an infrastructure failure)
  acceptance tests: test_calc.py::test_add
  allowed files: calc.py
  tokens: 1200 in / 300 out   cost: $0.0123

  add() subtracts.

#  STATUS  TURNS    IN  OUT     COST    TIME  VERDICT
1  failed      4  1200  300  $0.0123  12.3 s  failed score 2.0
2  failed      4  1200  300  $0.0123  12.3 s  failed score 2.0

attempt 1 — failed
  commit kept at: refs/orch/attempts/3f2a9c1b7d0e/1
  worker: changed add
   calc.py | 2 +-
  verification: tests failed: the task's target still fails
    targeted, still failing (1):
      - test_calc.py::test_add
    pre-existing, not targeted (2):
      - test_calc.py::test_div
      - test_io.py::test_read
  verdict: failed score 2.0
    - add() still wrong
  transcript: /d/audit/calc/attempts/3f2a9c1b7d0e_1.md

attempt 2 — failed
  worker: changed add
   calc.py | 2 +-
  verification: tests failed: the task's target still fails
    targeted, still failing (1):
      - test_calc.py::test_add
    pre-existing, not targeted (2):
      - test_calc.py::test_div
      - test_io.py::test_read
  verdict: failed score 2.0
    - add() still wrong
  transcript: /d/audit/calc/attempts/3f2a9c1b7d0e_1.md

feedback for the next attempt:
  test_add still fails
";
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn refinement_iterations_show_a_line_each() {
        let it =
            |n: u32, score: Option<f64>, outcome, best: u32, note: Option<&str>| RefineIteration {
                iteration: n,
                score,
                commit: score.map(|_| format!("{n:0>40}")),
                tests_passed: score.is_some(),
                verdict_passed: false,
                outcome,
                best_score: Some(7.0),
                best_iteration: best,
                note: note.map(str::to_string),
            };
        let mut a = attempt(1, Some("abc"));
        a.iterations = vec![
            it(1, Some(7.0), IterationOutcome::Kept, 1, None),
            it(2, Some(6.0), IterationOutcome::Reverted, 1, None),
            it(
                3,
                None,
                IterationOutcome::Unchanged,
                1,
                Some("it changed nothing"),
            ),
        ];
        let text = attempt_details(&task(), &a);
        assert!(
            text.contains(
                "  refinement: 3 iteration(s)\n     1  score 7.0  kept\n     2  score 6.0  reverted to iteration 1\n     3  no score   unchanged (it changed nothing)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_resolver_attempt_says_what_it_was() {
        let mut resolve = attempt(2, Some("def"));
        resolve.kind = AttemptKind::Resolve;
        resolve.status = AttemptStatus::Passed;
        let text = render(&task(), &[attempt(1, Some("abc")), resolve], 100);
        assert!(text.contains("\n2  passed (resolve)  "), "{text}");
        assert!(
            text.contains("\nattempt 2 — passed (merge conflict resolution; not counted)\n"),
            "{text}"
        );
        assert!(text.contains("\nattempt 1 — failed\n"), "{text}");
    }

    #[test]
    fn json_attempts_carry_their_ref() {
        let t = task();
        let shown = ShownAttempt {
            attempt_ref: attempt_ref(&t, &attempt(1, Some("abc"))),
            attempt: attempt(1, Some("abc")),
        };
        let v = serde_json::to_value(&shown).unwrap();
        assert_eq!(v["attempt_ref"], "refs/orch/attempts/3f2a9c1b7d0e/1");
        assert_eq!(v["number"], 1);
        assert_eq!(
            v["verification"]["targeted_failures"][0],
            "test_calc.py::test_add"
        );
        assert!(attempt_ref(&t, &attempt(2, None)).is_none());
    }
}
