//! The human-readable audit trail: markdown files beside the database, one
//! per plan, attempt and verdict. They are written atomically, so a crash
//! never leaves half a file.

use orch_core::{Attempt, IterationOutcome, RefineIteration, Task, Usage, VerificationReport};
use orch_providers::{Message, Role};
use std::fmt::Write as _;

/// Most characters of any one message shown in an attempt file.
const MESSAGE_CAP: usize = 4000;

pub struct AttemptRecord<'a> {
    pub task: &'a Task,
    pub attempt: &'a Attempt,
    pub outcome: &'a str,
    pub system_prompt: &'a str,
    pub task_prompt: &'a str,
    pub transcript: &'a [Message],
    pub diff_stat: &'a str,
    pub usage: Usage,
    pub turns: u32,
    pub duration_ms: u64,
    pub report: Option<&'a VerificationReport>,
    pub feedback: Option<&'a str>,
}

pub fn attempt_markdown(r: &AttemptRecord<'_>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Attempt {} — {}\n", r.attempt.number, r.task.title);
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| task | `{}` ({}) |", r.task.id, r.task.task_type);
    let _ = writeln!(md, "| outcome | **{}** |", r.outcome);
    let _ = writeln!(
        md,
        "| base commit | `{}` |",
        r.attempt.base_commit.as_deref().unwrap_or("-")
    );
    let _ = writeln!(md, "| turns | {} |", r.turns);
    let _ = writeln!(
        md,
        "| tokens | {} in / {} out ({} cached) |",
        r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_tokens
    );
    let _ = writeln!(md, "| cost | ${:.4} |", r.usage.cost_usd);
    let _ = writeln!(md, "| duration | {:.1} s |", r.duration_ms as f64 / 1000.0);
    let _ = writeln!(
        md,
        "\n## Prompt\n\n### System\n\n{}\n\n### Task\n\n{}\n",
        cap(r.system_prompt),
        cap(r.task_prompt)
    );
    let _ = writeln!(
        md,
        "## Diff stat\n\n```\n{}\n```\n",
        if r.diff_stat.trim().is_empty() {
            "(no changes)"
        } else {
            r.diff_stat.trim_end()
        }
    );
    if !r.attempt.iterations.is_empty() {
        md.push_str(&iterations_markdown(&r.attempt.iterations));
    }
    if let Some(report) = r.report {
        let _ = writeln!(
            md,
            "## Verification: {}\n\n{}\n",
            if report.passed { "passed" } else { "failed" },
            report.summary
        );
        for step in &report.steps {
            let _ = writeln!(
                md,
                "- {} `{}`: exit {:?}{} in {:.1} s",
                step.kind.as_str(),
                step.command,
                step.exit_code,
                if step.timed_out { " (timed out)" } else { "" },
                step.duration_ms as f64 / 1000.0
            );
        }
        md.push('\n');
    }
    if let Some(f) = r.feedback {
        let _ = writeln!(md, "## Feedback for the next attempt\n\n{}\n", f);
    }
    let _ = writeln!(md, "## Transcript\n");
    // The first two messages are the prompts shown above.
    for m in r.transcript.iter().skip(2) {
        let who = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let _ = writeln!(
            md,
            "**{who}**{}\n",
            m.tool_call_id
                .as_deref()
                .map(|id| format!(" ({id})"))
                .unwrap_or_default()
        );
        if !m.content.trim().is_empty() {
            let _ = writeln!(md, "```\n{}\n```\n", cap(&m.content).replace("```", "'''"));
        }
        for call in &m.tool_calls {
            let _ = writeln!(
                md,
                "- call `{}` `{}`: `{}`\n",
                call.id,
                call.name,
                cap(&call.arguments).replace('`', "'")
            );
        }
    }
    md
}

/// The refinement iterations: score, commit, tests, verdict, and whether
/// each was kept or undone.
fn iterations_markdown(iterations: &[RefineIteration]) -> String {
    let mut md = String::from(
        "## Refinement\n\n| iteration | score | commit | tests | verdict | outcome |\n|---|---|---|---|---|---|\n",
    );
    for it in iterations {
        let outcome = match it.outcome {
            IterationOutcome::Reverted => format!("reverted to iteration {}", it.best_iteration),
            other => other.as_str().to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {outcome} |",
            it.iteration,
            it.score
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "-".into()),
            it.commit
                .as_deref()
                .map(|c| format!("`{}`", &c[..c.len().min(12)]))
                .unwrap_or_else(|| "-".into()),
            judged(it, it.tests_passed),
            judged(it, it.verdict_passed),
        );
    }
    for it in iterations {
        if let Some(note) = &it.note {
            let _ = writeln!(md, "\nIteration {}: {}", it.iteration, note.trim());
        }
    }
    md.push('\n');
    md
}

/// `passed`/`failed` for a judged iteration, `-` for one that was not.
fn judged(it: &RefineIteration, passed: bool) -> &'static str {
    match (it.note.is_some(), passed) {
        (true, _) => "-",
        (false, true) => "passed",
        (false, false) => "failed",
    }
}

pub fn report_markdown(report: &VerificationReport) -> String {
    let mut md = String::new();
    for step in &report.steps {
        let _ = writeln!(
            md,
            "### {} — `{}`\n\n```\n{}\n```\n",
            step.kind.as_str(),
            step.command,
            step.output_tail.trim_end().replace("```", "'''")
        );
    }
    md
}

fn cap(s: &str) -> String {
    if s.len() <= MESSAGE_CAP {
        return s.to_string();
    }
    let mut end = MESSAGE_CAP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[… {} more bytes; the full transcript is in the .json file beside this one …]",
        &s[..end],
        s.len() - end
    )
}
