//! `orch`: the command line. Parses arguments, loads the config, and hands
//! off to one module per command. Exit codes: 0 success, 1 when tasks
//! failed (or the run could not proceed), 2 for usage and config errors.

// First, so its `println!` and friends shadow std's in every module below
// (see output.rs for why).
#[macro_use]
mod output;
mod client;
mod commands;
mod progress;
mod table;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "orch",
    version,
    about = "Self-hosted orchestrator for AI coding agents"
)]
pub struct Cli {
    /// Config file (orch.toml, .yaml or .json). Default: $ORCH_CONFIG, else ./orch.toml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Send every model role to a simulated provider: try a config end to
    /// end without spending anything. `run` works on a copy of the state and
    /// a scratch clone of the repository in <data_dir>/dry-run; your
    /// repository is not touched.
    #[arg(long, global = true, env = "ORCH_DRY_RUN")]
    pub dry_run: bool,
    /// Talk to a running `orch serve` at this URL (e.g.
    /// http://127.0.0.1:7777) instead of the local state: add-task, tasks,
    /// show, answer, cancel, status and events. The token comes from ORCH_TOKEN.
    #[arg(long, global = true, env = "ORCH_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add a git repository as a project (creates the config if needed).
    Init(commands::init::InitArgs),
    /// Add a task to a project's queue.
    AddTask(commands::tasks::AddTaskArgs),
    /// A new project from a requirements file: repository, PLAN.md by the architect, the run, an archive.
    New(commands::new::NewArgs),
    /// Archive a finished project's main tree under <data_dir>/archive/.
    Archive(commands::new::ArchiveArgs),
    /// Milestone plan files: `orch plan import FILE --project P`.
    Plan(commands::plan::PlanArgs),
    /// Run cycles: plan, work, verify, judge, merge.
    Run(commands::run::RunArgs),
    /// Serve every project on its schedule, file triggers and the HTTP API, until SIGTERM or Ctrl-C.
    Serve(commands::serve::ServeArgs),
    /// List a project's tasks.
    Tasks(commands::tasks::TasksArgs),
    /// Every project's state at a glance.
    Status(commands::status::StatusArgs),
    /// One task in detail: attempts, verdicts, tokens, cost.
    Show(commands::show::ShowArgs),
    /// Stop starting new work on a project.
    Pause(commands::status::ProjectArg),
    /// Start work on a paused project again.
    Resume(commands::status::ProjectArg),
    /// Answer a task that asked a person a question; it goes back to the queue.
    Answer(commands::tasks::AnswerArgs),
    /// Cancel a task that has not finished.
    Cancel(commands::tasks::CancelArgs),
    /// The event log (what happened, in order).
    Events(commands::status::EventsArgs),
    /// Model spending by day, project, role and model.
    Cost(commands::cost::CostArgs),
    /// Export what orch recorded: `orch export preferences --project P` writes preference pairs (JSON lines).
    Export(commands::export::ExportArgs),
    /// Check every configured provider, sandbox and repository.
    Doctor(commands::doctor::DoctorArgs),
    /// The Docker sandbox: build its image, open a shell, reset, status, prune.
    Sandbox(commands::sandbox::SandboxArgs),
    /// Run one full cycle on a sample repository with scripted model responses.
    Demo(commands::demo::DemoArgs),
}

/// An error with the exit code it deserves.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<orch_config::ConfigError> for CliError {
    fn from(e: orch_config::ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}

impl From<orch_state::StateError> for CliError {
    fn from(e: orch_state::StateError) -> Self {
        match e {
            orch_state::StateError::NotFound { .. }
            | orch_state::StateError::Ambiguous { .. }
            | orch_state::StateError::InvalidTransition { .. } => CliError::usage(e.to_string()),
            other => CliError::failed(other.to_string()),
        }
    }
}

impl From<orch_engine::EngineError> for CliError {
    fn from(e: orch_engine::EngineError) -> Self {
        match e {
            orch_engine::EngineError::Config(m) => CliError::usage(m),
            other => CliError::failed(other.to_string()),
        }
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// Log output goes through the redaction layer: a registered secret never
/// reaches a log line.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(orch_core::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Large allocations stay in malloc's heap instead of each getting a
/// mapping of its own. orch writes git objects in-process, and every zlib
/// stream's buffers (hundreds of KiB) were mapped, faulted in page by page
/// and unmapped again, each unmap interrupting every core to flush its TLB:
/// a tenth of orch's CPU at 64 workers.
fn keep_large_allocations_in_the_heap() {
    // SAFETY: mallopt only sets malloc's tunables; this runs first in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_large_allocations_in_the_heap();
    // Inside an agent's sandbox: relay its loopback to orch's model proxy.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(orch_agent::external::relay::SUBCOMMAND) {
        return orch_agent::external::relay::main(&args[1..]);
    }
    let cli = Cli::parse();
    client::set_server(cli.server.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| RedactingStderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
