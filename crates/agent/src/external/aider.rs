//! aider (`worker = "aider"`, the `aider-chat` package).
//!
//! **Started** headless as
//! `aider --message-file prompt.md --yes-always --no-git --no-auto-commits
//! --no-dirty-commits --no-gitignore --no-check-update --no-analytics
//! --no-show-model-warnings --no-show-release-notes --no-pretty
//! --no-fancy-input --no-suggest-shell-commands --no-detect-urls
//! --no-restore-chat-history --no-auto-lint --no-auto-test
//! --edit-format diff --map-tokens 0 --chat-history-file $HOME/aider.chat.md
//! --input-history-file $HOME/aider.input --model openai/<model>
//! --openai-api-base <proxy>/v1 --openai-api-key <dummy> <args…> [files…]`:
//! one message, every confirmation answered yes, no git of its own (its
//! setup writes `.git/config`, which the sandbox shows read-only; orch
//! commits at its boundary), nothing written into the worktree besides the
//! edits, no lint or test rounds of its own (orch verifies), SEARCH/REPLACE
//! edits (unknown model names would get `whole`), Chat Completions
//! (streamed) through litellm with its price map read locally
//! (`LITELLM_LOCAL_MODEL_COST_MAP`). The task's `allowed_files` that name
//! files (not globs) are added to the chat; a file the model edits that is
//! not in it is added when it does (`--yes-always`).
//!
//! **Prompt**: `prompt.md` (`--message-file`): orch's rules, then the task
//! prompt with the task, earlier attempts' feedback and a person's answers.
//!
//! **Read**: aider's chat history file, which the start script prints on
//! stdout after aider exits (aider's own terminal output goes to stderr),
//! after the marker [`HISTORY_MARKER`]. Each `#### ` block is a user
//! message and starts a turn; `> Applied edit to <file>` lines are edits
//! that worked, `> Running <command>` lines commands, and failed edits
//! (`did not conform`, `SearchReplaceNoExactMatch`, `Unable to apply`)
//! edits that did not; the text of the last answer, without aider's `> `
//! notes, is the final message. aider edits text, so the model's "tool
//! calls" are its edit blocks: the tool records are what aider did with
//! them.
//!
//! **Asking**: the final answer's `ORCH_ASK_HUMAN: <question>` line.

use super::{record, sh_quote, Agent, Launch, Launched, Report};
use orch_sandbox::ProcessOutput;

/// Printed on stdout before the chat history.
pub const HISTORY_MARKER: &str = "<<<orch: aider chat history>>>";

/// aider behind the proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aider;

impl Agent for Aider {
    fn name(&self) -> &'static str {
        "aider"
    }

    fn default_binary(&self) -> &'static str {
        "aider"
    }

    fn launch(&self, l: &Launch<'_>) -> Launched {
        let home = |f: &str| sh_quote(&l.home.join(f).to_string_lossy());
        let model = if l.model.contains('/') {
            l.model.to_string()
        } else {
            format!("openai/{}", l.model)
        };
        let mut cmd = vec![
            sh_quote(l.binary),
            "--message-file".into(),
            sh_quote(&l.prompt_file.to_string_lossy()),
        ];
        for flag in [
            "--yes-always",
            "--no-git",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--no-check-update",
            "--no-analytics",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "--no-pretty",
            "--no-fancy-input",
            "--no-suggest-shell-commands",
            "--no-detect-urls",
            "--no-restore-chat-history",
            "--no-auto-lint",
            "--no-auto-test",
        ] {
            cmd.push(flag.into());
        }
        cmd.extend([
            // Unknown models default to `whole`; SEARCH/REPLACE blocks are
            // what works best across models (args may override it).
            "--edit-format".into(),
            "diff".into(),
            "--map-tokens".into(),
            "0".into(),
            "--chat-history-file".into(),
            home("aider.chat.md"),
            "--input-history-file".into(),
            home("aider.input"),
            "--model".into(),
            sh_quote(&model),
            "--openai-api-base".into(),
            sh_quote(&format!("{}/v1", l.base_url)),
            "--openai-api-key".into(),
            super::proxy::DUMMY_API_KEY.into(),
        ]);
        cmd.extend(l.args.iter().map(|a| sh_quote(a)));
        cmd.extend(
            l.allowed_files
                .iter()
                .filter(|f| !f.contains(['*', '?', '[', '{']))
                .map(|f| sh_quote(f)),
        );
        let script = format!(
            "{cmd} >&2\nstatus=$?\nprintf '%s\\n' {marker}\ncat {history} 2>/dev/null\nexit $status\n",
            cmd = cmd.join(" "),
            marker = sh_quote(HISTORY_MARKER),
            history = home("aider.chat.md"),
        );
        Launched {
            script,
            env: vec![
                ("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into()),
                ("AIDER_ANALYTICS".into(), "false".into()),
            ],
            files: Vec::new(),
        }
    }

    fn read(&self, output: &ProcessOutput) -> Report {
        let history = output
            .stdout
            .split_once(HISTORY_MARKER)
            .map(|(_, h)| h)
            .unwrap_or_default();
        let mut report = read_history(history);
        if output.exit_code != Some(0) {
            report.error = Some(super::tail(&output.stderr, 1500));
        }
        report
    }
}

/// Reads aider's markdown chat history.
pub fn read_history(history: &str) -> Report {
    let mut report = Report::default();
    let mut turn = 0u32;
    let mut answer: Vec<&str> = Vec::new();
    let mut in_user = false;
    for line in history.lines() {
        if let Some(_user) = line.strip_prefix("#### ") {
            if !in_user {
                turn += 1;
                answer.clear();
            }
            in_user = true;
            continue;
        }
        in_user = false;
        if let Some(note) = line.strip_prefix("> ") {
            read_note(note.trim(), turn.max(1), &mut report);
        } else if !line.starts_with("# aider chat started") && line.trim() != ">" {
            answer.push(line);
        }
    }
    let text = answer.join("\n").trim().to_string();
    if !text.is_empty() {
        report.final_text = Some(text);
    }
    report.turns = Some(turn);
    report
}

fn read_note(note: &str, turn: u32, report: &mut Report) {
    if let Some(file) = note.strip_prefix("Applied edit to ") {
        report.tools.push(record(turn, "edit", file, true, note));
    } else if let Some(cmd) = note.strip_prefix("Running ") {
        report.tools.push(record(turn, "run", cmd, true, note));
    } else if note.contains("did not conform to the edit format")
        || note.contains("SearchReplaceNoExactMatch")
        || note.starts_with("Unable to apply")
        || note.contains("failed to match")
    {
        report.tools.push(record(turn, "edit", "", false, note));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn edits_and_the_last_answer_are_read_from_the_history() {
        let history = "
# aider chat started at 2026-01-01 10:00:00

> Aider v0.86.2
> Model: openai/worker with diff edit format

#### # Task: Fix add
#### add() subtracts

calc.py
```python
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
```

> Applied edit to calc.py

Fixed add() to return the sum.
";
        let r = read_history(history);
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].tool, "edit");
        assert_eq!(r.tools[0].arguments, "calc.py");
        assert!(r.tools[0].ok);
        let text = r.final_text.unwrap();
        assert!(text.ends_with("Fixed add() to return the sum."), "{text}");
        assert!(!text.contains("Applied edit"));
        assert_eq!(r.turns, Some(1));
    }

    #[test]
    fn a_failed_edit_is_a_failed_tool_call() {
        let r = read_history("#### fix\n\n> The LLM did not conform to the edit format.\n");
        assert!(!r.tools[0].ok);
    }
}
