//! The verdict file of the audit trail, in Markdown.

use crate::{fenced, JudgeInput};
use orch_core::Verdict;

/// Renders the verdict for people: result, score, gates, the model's
/// reasoning and issues, the verification summary and the diff stat.
pub fn render_markdown(input: &JudgeInput<'_>, verdict: &Verdict) -> String {
    let task = input.task;
    let mut md = String::new();
    let result = if verdict.passed { "PASSED" } else { "FAILED" };
    md.push_str(&format!("# Verdict: {result}\n\n"));
    md.push_str(&format!("- Task: `{}` — {}\n", task.id, task.title));
    md.push_str(&format!("- Type: {}\n", task.task_type));
    match verdict.score {
        Some(score) => md.push_str(&format!("- Score: {score:.1} / 10\n")),
        None => md.push_str(
            "- Score: none (the judge model was not consulted, gave no readable answer, or \
             contradicted itself)\n",
        ),
    }
    md.push_str("\n## Gates\n\n");
    for g in &verdict.gates {
        let mark = if g.passed { "pass" } else { "FAIL" };
        md.push_str(&format!(
            "- **{mark}** `{}` — {}\n",
            g.name,
            one_line(&g.detail)
        ));
    }
    md.push_str("\n## Reasoning\n\n");
    md.push_str(verdict.reasoning.trim());
    md.push_str("\n\n## Issues\n\n");
    if verdict.issues.is_empty() {
        md.push_str("None.\n");
    } else {
        for issue in &verdict.issues {
            md.push_str(&format!("- {}\n", one_line(issue)));
        }
    }
    md.push_str("\n## Verification\n\n");
    md.push_str(input.report.summary.trim());
    md.push_str("\n\n## Diff stat\n\n");
    if input.diff_stat.trim().is_empty() {
        md.push_str("(no changes)\n");
    } else {
        md.push_str(&fenced("text", input.diff_stat));
        md.push('\n');
    }
    md
}

/// Keeps a list item on one line so Markdown renders it as one item.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{gates, judge};
    use orch_testkit::scripted::{answer, ScriptedProvider};

    #[tokio::test]
    async fn markdown_shows_result_score_gates_and_issues() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: " src/lib.rs | 3 ++-",
            report: &report,
        };
        let provider = ScriptedProvider::new(vec![answer(
            r#"{"passed":false,"score":4,"reasoning":"Only half done.","issues":["src/lib.rs: sub() missing\nadd it"]}"#,
        )]);
        let (v, _) = judge(Some((&provider, "m")), &input, 5.0).await.unwrap();
        let md = render_markdown(&input, &v);
        assert!(md.starts_with("# Verdict: FAILED\n"), "{md}");
        assert!(
            md.contains("- Task: `abc123def456` — Add an add() function"),
            "{md}"
        );
        assert!(md.contains("- Score: 4.0 / 10"), "{md}");
        assert!(
            md.contains(
                "- **pass** `tests` — `pytest -q` passed: 3 passed, 0 failed, 0 skipped (pytest)"
            ),
            "{md}"
        );
        assert!(md.contains("Only half done."), "{md}");
        assert!(md.contains("- src/lib.rs: sub() missing add it\n"), "{md}");
        assert!(md.contains("```text\n src/lib.rs | 3 ++-\n```"), "{md}");
        assert!(md.contains(&report.summary), "{md}");
    }

    #[test]
    fn markdown_for_a_gate_failure_without_score() {
        let task = task();
        let mut report = report_with(vec![], false, "the attempt changed no files");
        report.empty_diff = true;
        let input = JudgeInput {
            task: &task,
            diff: "",
            diff_stat: "",
            report: &report,
        };
        let v = Verdict {
            passed: false,
            score: None,
            reasoning: "gates failed".into(),
            issues: vec![],
            gates: gates(&report),
        };
        let md = render_markdown(&input, &v);
        assert!(
            md.contains("- **FAIL** `non_empty_diff` — the attempt changed no files"),
            "{md}"
        );
        assert!(md.contains("- Score: none"), "{md}");
        assert!(md.contains("None.\n"), "{md}");
        assert!(md.contains("(no changes)"), "{md}");
    }
}
