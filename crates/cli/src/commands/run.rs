//! `orch run`: cycles of plan → work → verify → judge → merge for a project.

use super::{load_config, open_store, print_json, require_project};
use crate::progress::Progress;
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::Args;
use orch_config::Config;
use orch_core::TaskStatus;
use orch_engine::{CycleSummary, RunOptions, Shutdown};
use orch_runtime::SignalStep;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub project: String,
    /// How many cycles to run.
    #[arg(long, default_value_t = 1)]
    pub cycles: u32,
    /// Stop early once no task is pending or waiting to merge.
    #[arg(long)]
    pub until_idle: bool,
    /// Print the run summary as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live progress.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn run(config_flag: Option<&Path>, a: RunArgs) -> CliResult {
    // Work that is under way finishes even if the reader of stdout leaves.
    crate::output::keep_working_if_stdout_closes();
    let mut config = load_config(config_flag)?;
    require_project(&config, &a.project)?;
    let scratch = if config.dry_run {
        let s = super::dry_run::prepare(&mut config, &a.project).await?;
        eprintln!(
            "dry run: working on a scratch clone of {} at {} ({} at {}); your repository is not touched",
            s.repository.display(),
            s.clone.display(),
            s.main_branch,
            s.base.get(..12).unwrap_or(&s.base)
        );
        Some(s)
    } else {
        None
    };
    let store = open_store(&config)?;
    let summary = run_project(
        &config,
        store,
        &a.project,
        RunOptions {
            cycles: a.cycles,
            until_idle: a.until_idle,
        },
        a.json,
        a.quiet,
    )
    .await?;
    let dry = match &scratch {
        Some(s) => Some(super::dry_run::report(s).await?),
        None => None,
    };
    if a.json {
        let mut doc = serde_json::to_value(&summary)
            .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
        if let (Some(d), Some(obj)) = (&dry, doc.as_object_mut()) {
            obj.insert(
                "dry_run".into(),
                serde_json::to_value(d)
                    .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?,
            );
        }
        print_json(&doc)?;
    } else {
        print_summary(&summary);
        if let Some(d) = &dry {
            super::dry_run::print_report(d, &a.project, &summary);
        }
    }
    Ok(exit_code(&summary))
}

/// Builds the engine for one project (through the composition root) and
/// runs it with live progress. Ctrl-C or SIGTERM stops it gracefully:
/// nothing new is claimed, running attempts get `[server]
/// shutdown_grace_seconds` to finish, then are interrupted (a second Ctrl-C
/// interrupts them at once); the next run resumes them.
pub async fn run_project(
    config: &Config,
    store: Arc<dyn orch_state::StateStore>,
    project: &str,
    opts: RunOptions,
    progress_to_stderr: bool,
    quiet: bool,
) -> Result<CycleSummary, CliError> {
    require_project(config, project)?;
    if config.dry_run {
        eprintln!("dry run: every model role answers from the simulated provider; nothing is sent, nothing is spent; state in {}", config.data_dir_abs().display());
    }
    // Traces follow the event log from here, when an OTLP endpoint is set.
    let traces = orch_runtime::traces(config, &store, &[project.to_string()]);
    let built = orch_runtime::engine(config, store.clone(), project)
        .await
        .map_err(runtime_error)?;
    for note in &built.notes {
        eprintln!("sandbox: {note}");
    }
    let shutdown = Shutdown::new(orch_runtime::shutdown_grace(config));
    let grace = shutdown.grace().as_secs();
    orch_runtime::on_signals(shutdown.clone(), move |step| match step {
        SignalStep::Requested(sig) => eprintln!(
            "\n{sig}: stopping — nothing new starts; running attempts have {grace} s to finish, then are interrupted (Ctrl-C again to interrupt them now)"
        ),
        SignalStep::Forced(sig) => {
            eprintln!("\n{sig}: interrupting running attempts now; the next run resumes them")
        }
        SignalStep::Exiting(sig) => {
            eprintln!("\n{sig}: exiting at once; the next run recovers what was running")
        }
    })
    .map_err(runtime_error)?;
    let progress = (!quiet).then(|| Progress::start(store.clone(), project, progress_to_stderr));
    let result = built.engine.run_until(opts, &shutdown).await;
    if let Some(p) = progress {
        p.finish().await;
    }
    if let Some(t) = traces {
        // Exports the last spans before orch exits.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    Ok(result?)
}

/// The sandbox settings of a project (see [`orch_runtime::sandbox_options`]).
pub use orch_runtime::sandbox_options;

/// A composition-root error with the exit code it deserves.
pub fn runtime_error(e: orch_runtime::RuntimeError) -> CliError {
    match e {
        orch_runtime::RuntimeError::Usage(m) => CliError::usage(m),
        orch_runtime::RuntimeError::Failed(m) => CliError::failed(m),
    }
}

pub fn print_summary(s: &CycleSummary) {
    println!();
    for n in &s.notices {
        println!("note: {n}");
    }
    if let Some(p) = &s.paused {
        println!("project is paused: {p}");
    }
    println!(
        "{} cycle(s): {} planned, {} claimed; {} merged, {} passed (waiting to merge), {} need a person, {} failed",
        s.cycles,
        s.planned,
        s.claimed,
        s.count(TaskStatus::Merged),
        s.count(TaskStatus::Passed),
        s.count(TaskStatus::NeedsHuman),
        s.count(TaskStatus::Failed)
    );
    if !s.tasks.is_empty() {
        let mut table = Table::new(vec![
            Column::left("ID"),
            Column::left("STATUS"),
            Column::right("TRY"),
            Column::left("TITLE").truncate(),
        ]);
        for t in &s.tasks {
            table.row([
                t.id.clone(),
                t.status.to_string(),
                t.attempts.to_string(),
                t.title.clone(),
            ]);
        }
        table.print();
    }
    if s.count(TaskStatus::NeedsHuman) > 0 {
        println!("answer with: orch answer TASK \"your answer\"");
    }
}

pub fn exit_code(s: &CycleSummary) -> ExitCode {
    if s.count(TaskStatus::Failed) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
