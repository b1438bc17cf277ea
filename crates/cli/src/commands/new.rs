//! `orch new NAME --requirements FILE`: from a requirements file to a
//! finished project — a new git repository with the requirements, the
//! project registered in the config from its `[new_projects]` template,
//! the architect's PLAN.md committed and imported as ordered tasks, the
//! tasks worked and merged as `orch run --until-idle` does (same progress,
//! same Ctrl-C handling), and main archived under `<data_dir>/archive/`.
//! Ends with the usage per role, as `orch cost` counts it.
//!
//! `orch archive --project NAME` is the last step alone, for a project
//! finished later by hand.

use super::run::{exit_code, print_summary, run_project, runtime_error};
use super::{load_config, open_store, print_json};
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::{Args, ValueEnum};
use orch_engine::RunOptions;
use orch_git::ArchiveFormat;
use orch_runtime::new_project::{self, Archived, PLAN_FILE, REQUIREMENTS_FILE};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The new project's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The requirements: a markdown or text file describing the project.
    #[arg(long, value_name = "FILE")]
    pub requirements: PathBuf,
    /// Where the repository goes (new or empty). Default: <data_dir>/projects/NAME.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// How many cycles the run may take (as `orch run --cycles`).
    #[arg(long, default_value_t = 1)]
    pub cycles: u32,
    /// The archive's format.
    #[arg(long, value_enum, default_value = "tar.gz")]
    pub format: Format,
    /// Print the outcome as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live progress.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ArchiveArgs {
    #[arg(long)]
    pub project: String,
    #[arg(long, value_enum, default_value = "tar.gz")]
    pub format: Format,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    #[value(name = "tar.gz")]
    TarGz,
    Zip,
}

impl From<Format> for ArchiveFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::TarGz => ArchiveFormat::TarGz,
            Format::Zip => ArchiveFormat::Zip,
        }
    }
}

pub async fn new(config_flag: Option<&Path>, a: NewArgs) -> CliResult {
    crate::output::keep_working_if_stdout_closes();
    let config = load_config(config_flag)?;
    let store = open_store(&config)?;
    // With --json, stdout is the document alone.
    let say = |line: &str| match a.json {
        true => eprintln!("{line}"),
        false => println!("{line}"),
    };
    let np = new_project::check(
        &config,
        store.as_ref(),
        &a.name,
        &a.requirements,
        a.dir.as_deref(),
    )
    .map_err(runtime_error)?;
    let created = new_project::create(store.as_ref(), &np)
        .await
        .map_err(runtime_error)?;
    say(&format!(
        "created {} with {REQUIREMENTS_FILE} ({}) and registered project `{}` in {}",
        np.dir.display(),
        short(&created.commit),
        np.name,
        np.config_path.display()
    ));
    let config = created.config;
    let built = orch_runtime::engine(&config, store.clone(), &np.name)
        .await
        .map_err(|e| with_hint(runtime_error(e), &np.name))?;
    let planned = new_project::plan(&config, &built.engine, store.as_ref(), &np.requirements)
        .await
        .map_err(runtime_error)?;
    // The run builds its own engine, with progress and signal handling.
    drop(built);
    say(&format!(
        "the architect's {PLAN_FILE} is committed ({}): {} task(s), run in order",
        short(&planned.commit),
        planned.tasks.len()
    ));
    for (i, t) in planned.tasks.iter().enumerate() {
        say(&format!("  {}. {}  {}", i + 1, t.id, t.title));
    }
    let opts = RunOptions {
        cycles: a.cycles,
        until_idle: true,
    };
    let summary = run_project(&config, store.clone(), &np.name, opts, a.json, a.quiet)
        .await
        .map_err(|e| with_hint(e, &np.name))?;
    if !a.json {
        print_summary(&summary);
    }
    let archived = match summary.stopped {
        Some(_) => Err(CliError::failed(format!(
            "stopped before the project was finished; {}",
            new_project::resume_hint(&np.name)
        ))),
        None => new_project::archive(&config, store.as_ref(), &np.name, a.format.into())
            .await
            .map_err(runtime_error),
    };
    let usage = orch_server::views::cost(&store, Some(&np.name), None)?;
    if a.json {
        print_json(&json!({
            "project": np.name,
            "repository": np.dir,
            "config": np.config_path,
            "requirements_commit": created.commit,
            "plan_commit": planned.commit,
            "milestone": planned.milestone,
            "imported": planned.tasks,
            "run": summary,
            "archive": archived.as_ref().ok().map(archive_json),
            "usage": { "by_role": usage.by_role, "total": usage.total },
        }))?;
    } else {
        println!();
        print_usage(&usage);
        if let Ok(a) = &archived {
            print_archived(a);
        }
    }
    archived?;
    Ok(exit_code(&summary))
}

/// `orch archive --project NAME`: main's tree into `<data_dir>/archive/`.
pub async fn archive(config_flag: Option<&Path>, a: ArchiveArgs) -> CliResult {
    let config = load_config(config_flag)?;
    super::require_project(&config, &a.project)?;
    let store = open_store(&config)?;
    let archived = new_project::archive(&config, store.as_ref(), &a.project, a.format.into())
        .await
        .map_err(runtime_error)?;
    if a.json {
        print_json(&archive_json(&archived))?;
    } else {
        print_archived(&archived);
    }
    Ok(ExitCode::SUCCESS)
}

fn archive_json(a: &Archived) -> serde_json::Value {
    json!({"path": a.path, "bytes": a.bytes, "commit": a.commit})
}

fn print_archived(a: &Archived) {
    println!(
        "archived main ({}) at {} ({} bytes)",
        short(&a.commit),
        a.path.display(),
        a.bytes
    );
}

/// Calls, tokens and cost per role, as `orch cost` counts them.
fn print_usage(doc: &orch_server::views::CostDoc) {
    let mut table = Table::new(vec![
        Column::left("ROLE"),
        Column::right("CALLS"),
        Column::right("IN"),
        Column::right("OUT"),
        Column::right("COST"),
    ]);
    for (role, t) in &doc.by_role {
        table.row([
            role.clone(),
            t.calls.to_string(),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            format!("${:.4}", t.cost_usd),
        ]);
    }
    table.print();
    let t = &doc.total;
    println!(
        "usage: {} calls ({} failed), {} in / {} out tokens, ${:.4}",
        t.calls, t.failed_calls, t.input_tokens, t.output_tokens, t.cost_usd
    );
}

/// An error after the project exists: how to carry on.
fn with_hint(mut e: CliError, name: &str) -> CliError {
    e.message = format!("{}; {}", e.message, new_project::resume_hint(name));
    e
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
