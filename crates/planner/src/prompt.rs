//! What the planner model is told: its job (system prompt) and the project
//! (user message: file tree, docs, open tasks, recent failures, how many
//! tasks are wanted).

use crate::{cap, fenced, PlanInput};
use orch_core::Task;
use orch_providers::Message;

/// Bytes of an open task's description shown to the planner.
const OPEN_DESCRIPTION_CAP: usize = 300;
/// Bytes of a failed task's description, failure reason and feedback shown.
const FAILURE_FIELD_CAP: usize = 1500;

/// The planner's job description.
pub fn system_prompt() -> String {
    "You are the planner for orch, a system that runs AI coding workers on a git repository. \
Each task you propose is given to one worker, who works alone in a fresh checkout of the \
repository for a single session with a limited number of turns. The project's own tests, \
format and lint checks and a reviewer then decide whether the worker's change is merged.

Your job: study the repository overview below (file list, documents, open tasks, recent \
failures) and propose the next tasks. Prioritise in this order:
1. Fixes: failing tests, build errors, bugs the documents or failures point at.
2. Unblocking infrastructure: build and test setup, missing modules other work depends on.
3. Tests for behaviour that is not yet tested.
4. Features from the backlog or documents.

Rules:
- Each task must be small enough for one worker session: one focused change touching a \
handful of files. Split bigger work into several tasks.
- The worker sees only the task and the repository, so the description must be \
self-contained: what to change, where, and how to tell it is done (acceptance criteria, \
ideally the test that should pass).
- title: a short imperative sentence. type: `fix` (repair broken behaviour), `code` (new \
functionality or a refactor), `test` (add or improve tests only), `review` (read and report, \
no code change). priority: an integer, higher runs first.
- allowed_files: the relative paths or globs the worker may change (for example \
`src/parser/**` or `tests/test_parser.py`); an empty list allows any file. No absolute \
paths, no `..`.
- acceptance_tests: the tests that must pass once the task is done, as test ids (for \
example `tests/test_parser.py::test_nested`) or test files, relative to the repository. \
Name the failing test a fix should turn green, or the test a `test` task adds. Verification \
holds the worker to them. An empty list names none.
- Never duplicate an open task.
- Never repeat a failed task unchanged. Read its failure reason, then decompose it into \
smaller tasks or change the approach.
- Propose at most the number of tasks asked for; fewer is fine when there is little worth \
doing. Put anything a human should know (assumptions, risks, what you left out) in `notes`.

Answer with only a JSON object matching the task_plan schema:
{\"tasks\": [{\"title\": string, \"description\": string, \"type\": \"code\"|\"test\"|\"fix\"|\"review\", \
\"priority\": integer, \"allowed_files\": [string], \"acceptance_tests\": [string]}], \
\"notes\": string}"
        .to_string()
}

/// The system prompt and the user message for `input`.
pub fn build_messages(input: &PlanInput<'_>) -> Vec<Message> {
    vec![
        Message::system(system_prompt()),
        Message::user(user_message(input)),
    ]
}

fn user_message(input: &PlanInput<'_>) -> String {
    let ctx = input.context;
    let mut out = format!("# Project: {}\n\n## Files\n\n", input.project);
    if ctx.file_tree.trim().is_empty() {
        out.push_str("(no files)\n");
    } else {
        out.push_str(&fenced("text", &ctx.file_tree));
        out.push('\n');
    }

    out.push_str("\n## Documents\n");
    if ctx.docs.is_empty() {
        out.push_str("\nNone found.\n");
    }
    for (name, text) in &ctx.docs {
        out.push_str(&format!("\n### {name}\n\n{}\n", fenced("markdown", text)));
    }

    out.push_str("\n## Open tasks (do not duplicate these)\n\n");
    if input.open_tasks.is_empty() {
        out.push_str("None.\n");
    }
    for t in input.open_tasks {
        out.push_str(&format!(
            "- [{}] {} ({}, priority {}): {}\n",
            t.status,
            t.title,
            t.task_type,
            t.priority,
            one_line(&cap(&t.description, OPEN_DESCRIPTION_CAP))
        ));
    }

    out.push_str(
        "\n## Recently failed tasks (decompose or change them; never repeat them unchanged)\n\n",
    );
    if input.recent_failures.is_empty() {
        out.push_str("None.\n");
    }
    for t in input.recent_failures {
        out.push_str(&failure_entry(t));
    }

    out.push_str(&format!(
        "\n## What to do\n\nPropose at most {} task(s) for this project, most important first.\n",
        input.want
    ));
    out
}

fn failure_entry(t: &Task) -> String {
    let mut s = format!(
        "### {} ({}, {} attempt(s))\n\nDescription:\n{}\n\nFailure reason: {}\n",
        t.title,
        t.task_type,
        t.attempts,
        indent(&cap(&t.description, FAILURE_FIELD_CAP)),
        t.failure_reason
            .as_deref()
            .map(|r| cap(r, FAILURE_FIELD_CAP))
            .unwrap_or_else(|| "not recorded".into())
    );
    if let Some(feedback) = t.feedback.as_deref().filter(|f| !f.trim().is_empty()) {
        s.push_str(&format!(
            "Last feedback:\n{}\n",
            indent(&cap(feedback, FAILURE_FIELD_CAP))
        ));
    }
    s.push('\n');
    s
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use orch_core::TaskStatus;
    use orch_providers::Role;

    #[test]
    fn messages_carry_the_whole_context() {
        let ctx = context();
        let open = vec![stored_task(
            "Add --json flag",
            "Print JSON output.",
            TaskStatus::Running,
        )];
        let mut failed = stored_task(
            "Rewrite the parser",
            "Replace the parser with a PEG.",
            TaskStatus::Failed,
        );
        failed.failure_reason =
            Some("3 attempts failed: tests/test_parser.py::test_nested still fails".into());
        failed.feedback = Some("judge: the grammar drops comments".into());
        let failures = vec![failed];
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &open,
            recent_failures: &failures,
            want: 3,
        };
        let msgs = build_messages(&input);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, Role::System);
        let system = &msgs[0].content;
        for needle in [
            "Fixes",
            "Unblocking infrastructure",
            "decompose",
            "one worker session",
            "task_plan",
            "acceptance_tests",
            "tests/test_parser.py::test_nested",
        ] {
            assert!(system.contains(needle), "system prompt lacks {needle}");
        }
        assert_eq!(msgs[1].role, Role::User);
        let user = &msgs[1].content;
        for needle in [
            "# Project: demo",
            "src/parser.py\ntests/test_parser.py",
            "### README.md",
            "A tiny parser.",
            "- [running] Add --json flag (code, priority 0): Print JSON output.",
            "### Rewrite the parser (code, 2 attempt(s))",
            "Failure reason: 3 attempts failed: tests/test_parser.py::test_nested still fails",
            "judge: the grammar drops comments",
            "Propose at most 3 task(s)",
        ] {
            assert!(
                user.contains(needle),
                "user message lacks {needle:?}:\n{user}"
            );
        }
    }

    #[test]
    fn empty_sections_say_so() {
        let ctx = crate::PlanContext::default();
        let input = PlanInput {
            project: "p",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 1,
        };
        let user = &build_messages(&input)[1].content;
        assert!(user.contains("(no files)"));
        assert!(user.contains("None found."));
        assert_eq!(user.matches("None.\n").count(), 2);
    }
}
