//! What the judge model is told: the rubric (system prompt) and the change
//! under review (user message).

use crate::{fenced, JudgeInput};
use orch_core::VerificationReport;

/// The rubric.
pub fn system_prompt() -> String {
    "You review code changes for orch, a system that merges changes written by AI coding agents \
into a repository without a person looking at each one. You are the last check before the merge. \
The change you see already passed the deterministic checks: it is not empty, the project's setup, \
format and lint commands succeeded, its tests show no new failures compared with the base \
commit, and the tests the task targets pass. Tests listed as pre-existing failures already fail on \
the base commit and are not targeted by this task: they are tolerated, so do not hold them against \
the change, but do not count them as fixed either.

Judge the change against this rubric:
1. Does the diff do what the task asks — all of it, not just part of it?
2. Does it stay within the task? No unrelated changes: no drive-by refactors, reformatting of \
untouched code, renamed files or new features that were not asked for.
3. Are the tests meaningful? New or changed tests must exercise the behaviour the task is about, \
not assert things that are trivially true.
4. No gaming the checks: no hard-coded results or special-cased test inputs, no disabled, \
skipped, deleted or weakened tests or assertions, no lint or type checks silenced to make the \
checks pass.
5. Is the code correct and maintainable: edge cases and errors handled, no obvious bugs, \
consistent with the surrounding code?

Score from 0 to 10: 10 = exactly what was asked, clean and well tested; 7 = acceptable with minor \
issues; 4 = partly done or with real problems; 0 = wrong, harmful or gaming the checks. Set \
`passed` to true only if the change should be merged as it is. List concrete issues (file, what \
is wrong, what to do instead); they are given to the next attempt as feedback, so make them \
actionable. Leave `issues` empty when there are none.

Be consistent: `passed` true needs a score that reaches the project's minimum, `passed` false \
needs at least one issue, and `reasoning` is never empty. Keep `reasoning` under 4000 characters \
and list at most 20 issues of under 500 characters each.

Answer with only a JSON object, no prose around it:
{\"passed\": boolean, \"score\": number from 0 to 10, \"reasoning\": string, \"issues\": [string]}"
        .to_string()
}

/// The task, the diff stat, the diff and the verification summary.
pub fn user_message(input: &JudgeInput<'_>) -> String {
    let task = input.task;
    let allowed = if task.allowed_files.is_empty() {
        "any file in the repository".to_string()
    } else {
        task.allowed_files.join(", ")
    };
    let mut out = String::new();
    out.push_str("# Task\n\n");
    out.push_str(&format!("Title: {}\n", task.title));
    out.push_str(&format!("Type: {}\n", task.task_type));
    out.push_str(&format!(
        "Files the worker was allowed to change: {allowed}\n\n"
    ));
    out.push_str(task.description.trim());
    out.push_str("\n\n# Verification\n\n");
    out.push_str(input.report.summary.trim());
    out.push_str(&failure_lists(input.report));
    out.push_str("\n\n# Diff stat\n\n");
    out.push_str(&fenced("text", input.diff_stat));
    out.push_str("\n\n# Diff\n\n");
    if input.diff.trim().is_empty() {
        out.push_str("(empty)");
    } else {
        out.push_str(&fenced("diff", input.diff));
    }
    out.push('\n');
    out
}

/// The report's test lists, each labelled, so the model never has to guess
/// which failures were tolerated and why.
fn failure_lists(report: &VerificationReport) -> String {
    let mut out = String::new();
    let mut section = |label: &str, names: &[String]| {
        if !names.is_empty() {
            out.push_str(&format!("\n\n{label}:\n"));
            for name in names {
                out.push_str(&format!("- {name}\n"));
            }
        }
    };
    section(
        "Targeted tests still failing (the task's goal is not reached)",
        &report.targeted_failures,
    );
    section("New failing tests", &report.new_failures);
    section(
        "Failing tests that are pre-existing, not targeted by this task, tolerated",
        &report.preexisting_failures,
    );
    if let Some(why) = report
        .goal_unmet
        .as_deref()
        .filter(|w| !w.trim().is_empty())
    {
        out.push_str(&format!(
            "\n\nGoal not shown to be reached: {}\n",
            why.trim()
        ));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn the_user_message_lists_every_kind_of_failure_with_its_label() {
        let task = task();
        let mut report = green_report();
        report.targeted_failures = vec!["test_calc.py::test_add".into()];
        report.preexisting_failures = vec![
            "test_io.py::test_read".into(),
            "test_io.py::test_write".into(),
        ];
        report.new_failures = vec!["test_new.py::test_x".into()];
        report.goal_unmet = Some("none of the base's 2 failing tests passes now".into());
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let msg = user_message(&input);
        assert!(
            msg.contains(
                "Targeted tests still failing (the task's goal is not reached):\n\
                 - test_calc.py::test_add\n"
            ),
            "{msg}"
        );
        assert!(
            msg.contains(
                "Failing tests that are pre-existing, not targeted by this task, tolerated:\n\
                 - test_io.py::test_read\n- test_io.py::test_write\n"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("New failing tests:\n- test_new.py::test_x\n"),
            "{msg}"
        );
        assert!(
            msg.contains("Goal not shown to be reached: none of the base's 2 failing tests"),
            "{msg}"
        );
        // The lists sit in the verification section, before the diff.
        let verification = msg.find("# Verification").unwrap();
        let diff_stat = msg.find("# Diff stat").unwrap();
        let tolerated = msg.find("pre-existing, not targeted").unwrap();
        assert!(verification < tolerated && tolerated < diff_stat, "{msg}");
    }

    #[test]
    fn no_lists_when_nothing_failed() {
        let task = task();
        let report = green_report();
        let input = JudgeInput {
            task: &task,
            diff: "d",
            diff_stat: "s",
            report: &report,
        };
        let msg = user_message(&input);
        assert!(!msg.contains("pre-existing, not targeted"), "{msg}");
        assert!(!msg.contains("Targeted tests"), "{msg}");
        assert!(msg.contains("\n\n# Diff stat"), "{msg}");
    }
}
