//! `orch show TASK`: attempts, transcript summary, diff stat, verdict,
//! tokens, cost and duration.

use super::{load_config, open_store, print_json};
use crate::CliResult;
use clap::Args;
use orch_core::{Attempt, Task};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Task id (or a unique prefix of at least 4 characters).
    pub task: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Shown {
    task: Task,
    attempts: Vec<Attempt>,
}

pub fn show(config_flag: Option<&Path>, a: ShowArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let store = open_store(&config)?;
    let task = store.task(&a.task)?;
    let attempts = store.attempts(&task.id)?;
    if a.json {
        print_json(&Shown { task, attempts })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}  {}", task.id, task.title);
    println!(
        "  project: {}   type: {}   priority: {}   status: {}",
        task.project, task.task_type, task.priority, task.status
    );
    println!(
        "  branch: {}   attempts counted: {}",
        task.branch(),
        task.attempts
    );
    println!(
        "  tokens: {} in / {} out   cost: ${:.4}",
        task.input_tokens, task.output_tokens, task.cost_usd
    );
    if !task.description.is_empty() {
        println!("\n{}\n", indent(&task.description));
    }
    if let Some(q) = &task.question {
        println!("  question: {q}");
    }
    if let Some(ans) = &task.answer {
        println!("  answer: {ans}");
    }
    if let Some(r) = &task.failure_reason {
        println!("  failed: {r}");
    }
    for at in &attempts {
        println!(
            "\nattempt {} — {}  ({} turns, {} in / {} out tokens, ${:.4}, {})",
            at.number,
            at.status.as_str(),
            at.turns,
            at.input_tokens,
            at.output_tokens,
            at.cost_usd,
            at.duration_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        );
        if let Some(s) = &at.summary {
            println!("  worker: {}", s.lines().next().unwrap_or(""));
        }
        if let Some(d) = at.diff_stat.as_deref().filter(|d| !d.trim().is_empty()) {
            println!("{}", indent(d.trim_end()));
        }
        if let Some(v) = &at.verification {
            if let Some(s) = v.get("summary").and_then(|s| s.as_str()) {
                println!("  verification: {}", s.lines().next().unwrap_or(""));
            }
        }
        if let Some(v) = &at.verdict {
            let passed = v.get("passed").and_then(|p| p.as_bool()).unwrap_or(false);
            let score = v
                .get("score")
                .and_then(|s| s.as_f64())
                .map(|s| format!(" score {s:.1}"))
                .unwrap_or_default();
            println!(
                "  verdict: {}{score}",
                if passed { "passed" } else { "failed" }
            );
            if let Some(issues) = v.get("issues").and_then(|i| i.as_array()) {
                for i in issues.iter().filter_map(|i| i.as_str()) {
                    println!("    - {}", i.lines().next().unwrap_or(""));
                }
            }
        }
        if let Some(e) = &at.error {
            println!("  error: {}", e.lines().next().unwrap_or(""));
        }
        if let Some(p) = &at.audit_path {
            println!("  transcript: {p}");
        }
    }
    if let Some(f) = &task.feedback {
        println!("\nfeedback for the next attempt:\n{}", indent(f));
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
