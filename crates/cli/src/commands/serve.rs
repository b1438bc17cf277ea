//! `orch serve`: one process for the whole portfolio — every configured
//! project (or the ones named) runs on its schedule, its file triggers and
//! API requests, until SIGTERM or Ctrl-C stops it gracefully. What it does
//! is logged to stderr, one timestamped line each.

use super::run::runtime_error;
use super::{load_config, open_store, require_project};
use crate::{CliError, CliResult};
use clap::Args;
use orch_engine::Shutdown;
use orch_runtime::SignalStep;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve the HTTP API on this address (e.g. 127.0.0.1:7777); overrides
    /// `[server] listen`. Without either, no API is served.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve only this project (repeat for more); default: every project.
    #[arg(long = "project", value_name = "P")]
    pub projects: Vec<String>,
}

fn log_line(line: &str) {
    eprintln!(
        "{} {line}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
}

pub async fn serve(config_flag: Option<&Path>, a: ServeArgs) -> CliResult {
    crate::output::keep_working_if_stdout_closes();
    let config = load_config(config_flag)?;
    if config.dry_run {
        return Err(CliError::usage(
            "orch serve does not do dry runs; try a project with `orch --dry-run run --project P`, then serve it for real",
        ));
    }
    let names: Vec<String> = if a.projects.is_empty() {
        config.projects.iter().map(|p| p.name.clone()).collect()
    } else {
        for p in &a.projects {
            require_project(&config, p)?;
        }
        a.projects.clone()
    };
    if names.is_empty() && config.server.requirements_dir.is_none() {
        return Err(CliError::usage(format!(
            "no projects in {}; add one with `orch init PATH` (or `orch new`), or set `[server] requirements_dir` to make projects from requirements files",
            config.source.display()
        )));
    }
    orch_service::check(&config, &names).map_err(|e| CliError::usage(e.to_string()))?;
    let api = match a.listen.as_deref().or(config.server.listen.as_deref()) {
        Some(listen) => Some(
            orch_service::ServerOptions::from_config(&config, Some(listen))
                .map_err(|e| CliError::usage(e.to_string()))?,
        ),
        None => None,
    };

    // Signals first: a SIGTERM while engines are being built still stops
    // orch gracefully.
    let shutdown = Shutdown::new(orch_runtime::shutdown_grace(&config));
    let grace = shutdown.grace().as_secs();
    orch_runtime::on_signals(shutdown.clone(), move |step| match step {
        SignalStep::Requested(sig) => log_line(&format!(
            "{sig}: shutting down — nothing new starts; running attempts have {grace} s to finish, then are interrupted and resume at the next start ({sig} again to interrupt them now)"
        )),
        SignalStep::Forced(sig) => log_line(&format!(
            "{sig}: interrupting running attempts now; they resume at the next start"
        )),
        SignalStep::Exiting(sig) => log_line(&format!(
            "{sig}: exiting at once; the next start recovers what was running"
        )),
    })
    .map_err(runtime_error)?;

    let store = open_store(&config)?;
    // Traces follow the event log from here, when an OTLP endpoint is set.
    let traces = orch_runtime::traces(&config, &store, &names);
    let mut engines = Vec::new();
    for name in &names {
        let built = orch_runtime::engine(&config, store.clone(), name)
            .await
            .map_err(runtime_error)?;
        for note in &built.notes {
            log_line(&format!("{name}: sandbox: {note}"));
        }
        engines.push(built.engine);
    }
    log_line(&format!(
        "orch serve: {} project(s); state in {}; SIGTERM or Ctrl-C stops it (grace {grace} s)",
        engines.len(),
        config.data_dir_abs().display()
    ));
    let served = orch_service::serve(
        Arc::new(config),
        store,
        engines,
        orch_service::ServiceOptions { api },
        shutdown,
        Arc::new(log_line),
    )
    .await;
    if let Some(t) = traces {
        // Exports the last spans before orch exits.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    served.map_err(|e| CliError::failed(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
