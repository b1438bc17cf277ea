//! One module per command, plus what they share: loading the config and
//! opening the store.

pub mod cost;
pub mod demo;
pub mod doctor;
pub mod dry_run;
pub mod export;
pub mod init;
pub mod new;
pub mod plan;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod show;
pub mod status;
pub mod tasks;

use crate::{Cli, CliError, CliResult, Command};
use orch_config::Config;
use orch_state::StateStore;
use std::path::Path;
use std::sync::Arc;

/// Set once from `--dry-run` / `ORCH_DRY_RUN` before any command runs.
static DRY_RUN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub fn dry_run() -> bool {
    DRY_RUN.get().copied().unwrap_or(false)
}

pub async fn dispatch(cli: Cli) -> CliResult {
    let _ = DRY_RUN.set(cli.dry_run);
    let config_flag = cli.config.as_deref();
    match cli.command {
        Command::Init(a) => init::run(config_flag, a).await,
        Command::AddTask(a) => tasks::add(config_flag, a),
        Command::New(a) => new::new(config_flag, a).await,
        Command::Archive(a) => new::archive(config_flag, a).await,
        Command::Plan(a) => plan::run(config_flag, a),
        Command::Run(a) => run::run(config_flag, a).await,
        Command::Serve(a) => serve::serve(config_flag, a).await,
        Command::Tasks(a) => tasks::list(config_flag, a),
        Command::Status(a) => status::status(config_flag, a),
        Command::Show(a) => show::show(config_flag, a),
        Command::Pause(a) => status::pause(config_flag, a, true),
        Command::Resume(a) => status::pause(config_flag, a, false),
        Command::Answer(a) => tasks::answer(config_flag, a),
        Command::Cancel(a) => tasks::cancel(config_flag, a),
        Command::Events(a) => status::events(config_flag, a),
        Command::Cost(a) => cost::cost(config_flag, a),
        Command::Export(a) => export::run(config_flag, a).await,
        Command::Doctor(a) => doctor::doctor(config_flag, a).await,
        Command::Sandbox(a) => sandbox::run(config_flag, a).await,
        Command::Demo(a) => demo::run(a).await,
    }
}

/// Loads the config. In a dry run (flag, env or `dry_run = true`), state
/// lives in `<data_dir>/dry-run`, apart from real work; `orch run` also
/// points the project at a scratch clone there (see `dry_run`).
pub fn load_config(flag: Option<&Path>) -> Result<Config, CliError> {
    let path = orch_config::resolve_config_path(flag);
    let mut config = orch_config::load(&path)?;
    if dry_run() || config.dry_run {
        config.dry_run = true;
        config.data_dir = config.data_dir_abs().join("dry-run");
    }
    Ok(config)
}

/// Opens the state database in the config's data_dir.
pub fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, CliError> {
    let paths = orch_engine::DataPaths::new(config.data_dir_abs());
    paths.ensure().map_err(|e| {
        CliError::failed(format!(
            "cannot create data_dir {}: {e}",
            paths.root.display()
        ))
    })?;
    Ok(Arc::new(orch_state::Store::open(&paths.db())?))
}

/// Checks `--project` names a configured project.
pub fn require_project<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a orch_config::ProjectConfig, CliError> {
    config.project_or_hint(name).map_err(CliError::usage)
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
