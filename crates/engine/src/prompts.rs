//! Worker prompts. The system prompt states the tool contract and the rules;
//! the task prompt carries the task, the previous attempt's feedback and any
//! answer from a person. Prompt text is plain markdown so it reads well in
//! the audit trail.

use orch_core::{Task, TaskType};

/// The architect's job: a plan, not code.
pub const ARCHITECT_SYSTEM_PROMPT: &str = "You are the architect. A worker with file and shell tools will implement the task below. \
Write a short plan for it: which files to read and change, the approach, and how to check the result with the project's tests. \
Plain markdown, at most 15 lines, no code blocks longer than a few lines. Do not do the work yourself.";

pub fn worker_system_prompt(task_type: TaskType, test_command: &str) -> String {
    let role = match task_type {
        TaskType::Code => "You implement a change in a git repository.",
        TaskType::Test => "You add or improve tests in a git repository without changing behaviour.",
        TaskType::Fix => "You fix a defect in a git repository, starting from a failing test or report.",
        TaskType::Review => "You review and improve code in a git repository: fix what is wrong, keep what is right.",
    };
    let tests = if test_command.is_empty() {
        "This project has no test command configured.".to_string()
    } else {
        format!("The project's tests run with `{test_command}`; your work is verified with it after you finish.")
    };
    format!(
        "{role}\n\n\
You work inside your own worktree; all paths are relative to its root. Tools:\n\
- read_file{{path, offset?, limit?}}: read a file (offset = first line, limit = number of lines)\n\
- write_file{{path, content}}: create or replace a file\n\
- edit_file{{path, old, new}}: replace the one occurrence of `old` with `new`\n\
- list_files{{path?, pattern?}}: list files\n\
- search{{pattern, path?}}: regex search\n\
- run{{command, timeout_s?}}: run a shell command in the sandbox (no network)\n\
- ask_human{{question}}: stop and ask a person when the task is ambiguous or blocked\n\
- finish{{summary}}: stop when the change is done; summarise what you changed\n\n\
Rules: make the smallest change that does the task; do not disable, skip or weaken tests; \
do not hard-code expected results; stay inside the worktree. {tests}\n"
    )
}

/// The task's description for a prompt, or a note that it has none.
pub(crate) fn description(task: &Task) -> &str {
    match task.description.trim() {
        "" => "(no further description)",
        d => d,
    }
}

/// The first user message of an attempt.
pub fn worker_task_prompt(task: &Task, attempt_number: u32, max_attempts: u32) -> String {
    let mut p = format!(
        "# Task: {}\n\nType: {}  \nAttempt: {} of {}\n\n{}\n",
        task.title,
        task.task_type,
        attempt_number,
        max_attempts,
        description(task)
    );
    if !task.allowed_files.is_empty() {
        p.push_str(&format!(
            "\nYou may only write these files (glob patterns): {}\n",
            task.allowed_files.join(", ")
        ));
    }
    if !task.acceptance_tests.is_empty() {
        p.push_str(&format!(
            "\nThe task is done when these tests pass (they are checked after you finish): {}\n",
            task.acceptance_tests.join(", ")
        ));
    }
    if let Some(feedback) = task.feedback.as_deref().filter(|f| !f.trim().is_empty()) {
        p.push_str("\n## Previous attempt failed\n\nFix these problems this time:\n\n");
        p.push_str(feedback.trim());
        p.push('\n');
    }
    if let (Some(q), Some(a)) = (task.question.as_deref(), task.answer.as_deref()) {
        p.push_str(&format!(
            "\n## Answer from a person\n\nYou asked: {q}\n\nAnswer: {a}\n"
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::{TaskId, TaskSource, TaskStatus};

    fn task() -> Task {
        Task {
            id: TaskId::from("abc"),
            project: "p".into(),
            title: "Fix add".into(),
            description: "add() subtracts".into(),
            task_type: TaskType::Fix,
            priority: 0,
            allowed_files: vec!["calc.py".into()],
            acceptance_tests: Vec::new(),
            infra_failures: 0,
            not_before: None,
            depends_on: Vec::new(),
            plan_key: None,
            candidates: None,
            worker: None,
            source: TaskSource::Manual,
            status: TaskStatus::Running,
            attempts: 1,
            feedback: Some("test_add failed: assert -1 == 3".into()),
            question: Some("Which file?".into()),
            answer: Some("calc.py".into()),
            failure_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn task_prompt_carries_feedback_answer_and_allowed_files() {
        let p = worker_task_prompt(&task(), 2, 3);
        assert!(p.contains("Attempt: 2 of 3"));
        assert!(p.contains("## Previous attempt failed"));
        assert!(p.contains("assert -1 == 3"));
        assert!(p.contains("Answer: calc.py"));
        assert!(p.contains("calc.py"));
    }

    #[test]
    fn system_prompt_lists_every_tool() {
        let s = worker_system_prompt(TaskType::Code, "pytest");
        for tool in [
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "search",
            "run",
            "ask_human",
            "finish",
        ] {
            assert!(s.contains(tool), "{tool}");
        }
    }
}
