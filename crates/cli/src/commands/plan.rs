//! `orch plan import FILE --project P`: a milestone plan file's
//! `## Task N.M` sections become tasks that run in file order (each waits
//! for the one before it to merge). Importing the same file again adds
//! only sections that are new.

use super::{load_config, open_store, print_json, require_project};
use crate::{CliError, CliResult};
use clap::{Args, Subcommand};
use orch_core::Task;
use orch_planner::plan_file;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: PlanCommand,
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Import a milestone plan file (markdown, `## Task N.M: Title` sections).
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The plan file.
    pub file: PathBuf,
    #[arg(long)]
    pub project: String,
    /// Print what was created and skipped as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `orch plan import --json`.
#[derive(Serialize)]
struct ImportReport<'a> {
    project: &'a str,
    file: String,
    milestone: Option<&'a str>,
    /// Tasks created now, in plan order.
    created: &'a [Task],
    /// Sections that already had a task (as it is now), in plan order.
    skipped: &'a [Task],
}

pub fn run(config_flag: Option<&Path>, a: PlanArgs) -> CliResult {
    match a.command {
        PlanCommand::Import(a) => import(config_flag, a),
    }
}

fn import(config_flag: Option<&Path>, a: ImportArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let project = require_project(&config, &a.project)?;
    let text = std::fs::read_to_string(&a.file).map_err(|e| {
        CliError::usage(format!(
            "cannot read plan file {}: {e}; give the path of a markdown file with `## Task N.M: Title` sections",
            a.file.display()
        ))
    })?;
    let plan = plan_file::parse(&text).map_err(|e| {
        CliError::usage(format!(
            "{} line {}: {}; nothing was imported",
            a.file.display(),
            e.line,
            e.message
        ))
    })?;
    // A section's `Worker:` is checked as `add-task --worker` checks it.
    for (section, kind) in plan.tasks.iter().filter_map(|s| s.worker.map(|w| (s, w))) {
        orch_agent::external::factory::worker_for_task(&config, &project.name, kind).map_err(
            |e| {
                CliError::usage(format!(
                    "{} line {}: task {}'s worker: {e}; nothing was imported",
                    a.file.display(),
                    section.line,
                    section.number
                ))
            },
        )?;
    }
    let source = plan_file::source_name(&a.file);
    let store = open_store(&config)?;
    store.ensure_project(
        &project.name,
        &config.project_path(project).display().to_string(),
    )?;
    let out = store.import_plan(&project.name, &plan.new_tasks(&project.name, &source))?;
    if a.json {
        print_json(&ImportReport {
            project: &project.name,
            file: a.file.display().to_string(),
            milestone: plan.milestone.as_deref(),
            created: &out.created,
            skipped: &out.skipped,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let name = plan.milestone.as_deref().unwrap_or(&source);
    println!(
        "imported {} into {}: {} task(s) created, {} already there",
        name,
        project.name,
        out.created.len(),
        out.skipped.len()
    );
    // In plan order, whether new or already there.
    for section in &plan.tasks {
        let key = plan_file::plan_key(&source, &section.number);
        let is_key = |t: &&Task| t.plan_key.as_deref() == Some(key.as_str());
        if let Some(t) = out.created.iter().find(is_key) {
            let after = t
                .depends_on
                .first()
                .map(|d| format!("  (after {d})"))
                .unwrap_or_default();
            println!(
                "  created  {:<6} {}  {}{after}",
                section.number, t.id, t.title
            );
        } else if let Some(t) = out.skipped.iter().find(is_key) {
            println!(
                "  skipped  {:<6} {}  {}  ({}, imported before)",
                section.number, t.id, t.title, t.status
            );
        }
    }
    if !out.created.is_empty() {
        println!(
            "each task starts when the one before it has merged; run them with `orch run --project {} --until-idle`",
            project.name
        );
    }
    Ok(ExitCode::SUCCESS)
}
