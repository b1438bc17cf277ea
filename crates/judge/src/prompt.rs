//! What the judge model is told: the rubric (system prompt) and the change
//! under review (user message).

use crate::{fenced, JudgeInput};

/// The rubric.
pub fn system_prompt() -> String {
    "You review code changes for orch, a system that merges changes written by AI coding agents \
into a repository without a person looking at each one. You are the last check before the merge. \
The change you see already passed the deterministic checks: it is not empty, the project's setup, \
format and lint commands succeeded, and its tests show no new failures compared with the base \
commit.

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
