//! The orchestration engine: one cycle of plan → claim → work → verify →
//! judge → merge for a project, crash recovery, and the audit trail.
//!
//! Everything here is glue over the focused crates: state (SQLite), git
//! (worktrees and landing), sandbox (where code runs), agent (the tool loop),
//! verify, judge and planner. The engine owns the order of operations and the
//! hard limits; models only advise.

mod attempt;
mod audit;
mod cancel;
mod changeset;
mod cycle;
mod early;
mod lock;
mod loops;
mod merge;
mod metered;
mod paths;
mod patrol;
mod project_plan;
mod prompts;
mod recorder;
mod recovery;
mod registry;
mod resolve;
mod routing;
mod shutdown;
mod stages;

pub use cycle::{CycleSummary, Engine, RunOptions};
pub use lock::{LockError, ProjectLock};
pub use metered::{CallContext, Meter, MeteredProvider};
pub use paths::{write_atomic, DataPaths};
pub use project_plan::PROJECT_ARCHITECT_PROMPT;
pub use prompts::{worker_system_prompt, worker_task_prompt};
pub use recorder::Recorder;
pub use registry::{build_provider, price_table, ProviderRegistry};
pub use routing::{route, Route, Workflow};
pub use shutdown::Shutdown;

/// Errors that stop a run (as opposed to task failures, which are recorded
/// and reported but do not stop orch).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] orch_state::StateError),
    #[error(transparent)]
    Git(#[from] orch_git::GitError),
    #[error(transparent)]
    Sandbox(#[from] orch_sandbox::SandboxError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{0}")]
    Provider(String),
    #[error("{0}")]
    Config(String),
    /// Work stopped from outside (the patrol, a shutdown) where no attempt
    /// loop can take it back; the caller puts the task back untouched.
    #[error("{0}")]
    Interrupted(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, EngineError>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let context = context.into();
    move |source| EngineError::Io { context, source }
}
