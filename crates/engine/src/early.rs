//! Early verification: while the model thinks, the project's checks run on
//! a snapshot of what the built-in agent has written so far. When the agent
//! finishes without writing again, that snapshot is exactly what is
//! committed and the checks' result is the attempt's verification, so the
//! attempt does not wait for them after its last answer. A tool that may
//! write stops a run still under way (its snapshot is stale), and so does
//! the attempt's end. Early runs take one permit each from a pool sized to
//! the machine's CPUs, so they never crowd out the work itself.

use orch_core::StepResult;
use orch_git::{Git, StagedSnapshot};
use orch_sandbox::Sandbox;
use orch_verify::{VerifyCommands, VerifyOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What an early run produced: the snapshot it checked and the checks'
/// results on it.
pub(crate) struct EarlyResult {
    pub snapshot: StagedSnapshot,
    pub steps: Vec<StepResult>,
}

type Pending = JoinHandle<Option<EarlyResult>>;

/// One attempt's early verification (see the module docs).
pub(crate) struct EarlyVerify {
    git: Git,
    sandbox: Arc<dyn Sandbox>,
    worktree: PathBuf,
    commands: VerifyCommands,
    options: VerifyOptions,
    permits: Arc<Semaphore>,
    pending: Mutex<Option<Pending>>,
}

impl EarlyVerify {
    pub(crate) fn new(
        engine: &crate::cycle::Engine,
        worktree: PathBuf,
        permits: Arc<Semaphore>,
    ) -> Self {
        Self {
            git: engine.git.clone(),
            sandbox: engine.sandbox.clone(),
            worktree,
            commands: engine.verify_commands(),
            options: engine.verify_options(),
            permits,
            pending: Mutex::new(None),
        }
    }

    /// The run of the worktree as the agent left it, awaited (it may still
    /// be under way). None when there is none, it failed to run, or
    /// `cancel` fired first.
    pub(crate) async fn finish(&self, cancel: &CancellationToken) -> Option<EarlyResult> {
        let pending = self.take()?;
        let abort = pending.abort_handle();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                abort.abort();
                None
            }
            done = pending => done.ok().flatten(),
        }
    }

    fn take(&self) -> Option<Pending> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// Stops the run under way, if any, and waits until it is gone: its
    /// process tree is killed when its future is dropped.
    async fn stop(&self) {
        if let Some(pending) = self.take() {
            pending.abort();
            let _ = pending.await;
        }
    }

    fn start(&self) -> Pending {
        let (git, sandbox, worktree) = (
            self.git.clone(),
            self.sandbox.clone(),
            self.worktree.clone(),
        );
        let (commands, options, permits) = (
            self.commands.clone(),
            self.options.clone(),
            self.permits.clone(),
        );
        tokio::spawn(async move {
            // Nothing writes while this waits: a tool that would stops it.
            let _permit = permits.acquire_owned().await.ok()?;
            let snapshot = git.snapshot_staged(&worktree).await.ok()?;
            let steps = orch_verify::run_steps(sandbox.as_ref(), &worktree, &commands, &options)
                .await
                .ok()?;
            Some(EarlyResult { snapshot, steps })
        })
    }
}

#[async_trait::async_trait]
impl orch_agent::Interlude for EarlyVerify {
    fn settled(&self) {
        let started = self.start();
        if let Ok(mut pending) = self.pending.lock() {
            if let Some(stale) = pending.replace(started) {
                stale.abort();
            }
        }
    }

    async fn before_write(&self) {
        self.stop().await;
    }
}

impl Drop for EarlyVerify {
    fn drop(&mut self) {
        if let Some(pending) = self.take() {
            pending.abort();
        }
    }
}

/// The pool early runs share: one permit per CPU.
pub(crate) fn permits() -> Arc<Semaphore> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Arc::new(Semaphore::new(cpus))
}
