//! Where model-written code runs. One trait, one module per backend:
//! `bwrap` (bubblewrap: the worktree read-write, the rest read-only, private
//! /tmp, no network unless allowed, the process tree killed on timeout) and
//! `none` (no isolation, and it says so). Docker joins them later behind the
//! same trait.

pub mod bwrap;
pub mod none;

use async_trait::async_trait;
use std::path::PathBuf;
use std::time::Duration;

pub use orch_process::ProcessOutput;

/// A command to run inside the sandbox.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Shell command line, run with `sh -c`.
    pub command: String,
    /// Host path of the worktree; the command's working directory and the
    /// only writable place (besides a private /tmp).
    pub workdir: PathBuf,
    /// Environment given to the command (on top of a minimal PATH/HOME/LANG).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub output_limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The backend cannot run here; the message says how to fix it.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Process(#[from] orch_process::ProcessError),
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    /// `bwrap`, `none`, …
    fn name(&self) -> &'static str;
    /// False for backends that protect nothing.
    fn isolates(&self) -> bool;
    /// Checks the backend works on this machine (binary present, user
    /// namespaces allowed) with an actionable error if not.
    async fn check(&self) -> Result<(), SandboxError>;
    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError>;
}

/// Options shared by backends.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    pub network: bool,
}
