//! Early verification: while the model thinks, the project's checks run on
//! a snapshot of what the built-in agent has written so far. When the agent
//! finishes without writing again, that snapshot is exactly what is
//! committed and the checks' result is the attempt's verification, so the
//! attempt does not wait for them after its last answer. A tool that may
//! write stops a run still under way (its snapshot is stale), and so does
//! the attempt's end. Early runs take one permit each from a pool sized to
//! the machine's CPUs, so they never crowd out the work itself; one still
//! waiting for its permit when the agent finishes is dropped, and the
//! attempt verifies at once, as it would without early runs.

use orch_core::StepResult;
use orch_git::{Git, StagedSnapshot};
use orch_sandbox::Sandbox;
use orch_verify::{VerifyCommands, VerifyOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// An early run under way, and whether it got its permit (started).
struct Pending {
    run: JoinHandle<Option<EarlyResult>>,
    started: Arc<AtomicBool>,
}

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
        Self::with(
            engine.git.clone(),
            engine.sandbox.clone(),
            worktree,
            (engine.verify_commands(), engine.verify_options()),
            permits,
        )
    }

    fn with(
        git: Git,
        sandbox: Arc<dyn Sandbox>,
        worktree: PathBuf,
        (commands, options): (VerifyCommands, VerifyOptions),
        permits: Arc<Semaphore>,
    ) -> Self {
        Self {
            git,
            sandbox,
            worktree,
            commands,
            options,
            permits,
            pending: Mutex::new(None),
        }
    }

    /// The run of the worktree as the agent left it, awaited (it may still
    /// be under way). None when there is none, it failed to run, it was
    /// still waiting for a permit (the attempt's own verification, which
    /// waits for none, is then sooner: the checks may wait on I/O rather
    /// than use the CPU), or `cancel` fired first.
    pub(crate) async fn finish(&self, cancel: &CancellationToken) -> Option<EarlyResult> {
        let Pending { run, started } = self.take()?;
        let abort = run.abort_handle();
        if !started.load(Ordering::SeqCst) {
            abort.abort();
            return None;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                abort.abort();
                None
            }
            done = run => done.ok().flatten(),
        }
    }

    fn take(&self) -> Option<Pending> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// Stops the run under way, if any, and waits until it is gone: its
    /// process tree is killed when its future is dropped.
    async fn stop(&self) {
        if let Some(pending) = self.take() {
            pending.run.abort();
            let _ = pending.run.await;
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
        let started = Arc::new(AtomicBool::new(false));
        let has_permit = started.clone();
        let run = tokio::spawn(async move {
            // Nothing writes while this waits: a tool that would stops it.
            let _permit = permits.acquire_owned().await.ok()?;
            has_permit.store(true, Ordering::SeqCst);
            let snapshot = git.snapshot_staged(&worktree).await.ok()?;
            let steps = orch_verify::run_steps(sandbox.as_ref(), &worktree, &commands, &options)
                .await
                .ok()?;
            Some(EarlyResult { snapshot, steps })
        });
        Pending { run, started }
    }
}

#[async_trait::async_trait]
impl orch_agent::Interlude for EarlyVerify {
    fn settled(&self) {
        let started = self.start();
        if let Ok(mut pending) = self.pending.lock() {
            if let Some(stale) = pending.replace(started) {
                stale.run.abort();
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
            pending.run.abort();
        }
    }
}

/// The pool early runs share, across every project of the process (`orch
/// serve` runs several): one permit per CPU.
pub(crate) fn permits() -> Arc<Semaphore> {
    static POOL: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Arc::new(Semaphore::new(cpus))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use orch_agent::Interlude;
    use orch_testkit::repo::{git, write};
    use std::time::{Duration, Instant};

    /// A repository with a linked worktree holding one new file.
    async fn setup(test: &str, permits: usize) -> (tempfile::TempDir, EarlyVerify) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        write(&repo, "README.md", "r\n");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "first"]);
        let g = Git::open(&repo).await.unwrap();
        let wt = tmp.path().join("wt");
        g.worktree_add(&wt, "orch/t", "main").await.unwrap();
        write(&wt, "a.txt", "a\n");
        let commands = VerifyCommands {
            test: test.to_string(),
            ..VerifyCommands::default()
        };
        let early = EarlyVerify::with(
            g,
            Arc::new(orch_sandbox::NoSandbox::new()),
            wt,
            (commands, VerifyOptions::default()),
            Arc::new(Semaphore::new(permits)),
        );
        (tmp, early)
    }

    #[tokio::test]
    async fn a_settled_worktree_is_checked_and_its_snapshot_kept() {
        let (_tmp, early) = setup("test -f a.txt", 1).await;
        early.settled();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = early.finish(&CancellationToken::new()).await.expect("ran");
        assert!(
            done.steps.iter().all(StepResult::succeeded),
            "{:?}",
            done.steps
        );
        let staged = early.git.adopt_staged(done.snapshot).await.unwrap();
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].path, "a.txt");
        // Taken once: a second finish has nothing.
        assert!(early.finish(&CancellationToken::new()).await.is_none());
    }

    #[tokio::test]
    async fn a_write_stops_a_run_under_way_at_once() {
        let (_tmp, early) = setup("sleep 31", 1).await;
        early.settled();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(running("sleep 31"), "the check did not start");
        let t = Instant::now();
        early.before_write().await;
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(early.finish(&CancellationToken::new()).await.is_none());
        // Its process is gone, not left to run on.
        let gone = Instant::now();
        while running("sleep 31") {
            assert!(
                gone.elapsed() < Duration::from_secs(5),
                "the check still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn running(command: &str) -> bool {
        std::process::Command::new("pgrep")
            .args(["-f", command])
            .output()
            .unwrap()
            .status
            .success()
    }

    #[tokio::test]
    async fn a_run_still_waiting_for_a_permit_is_dropped_at_the_finish() {
        let (_tmp, early) = setup("true", 0).await;
        early.settled();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        assert!(early.finish(&CancellationToken::new()).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_cancel_ends_the_wait_for_a_run() {
        let (_tmp, early) = setup("sleep 32", 1).await;
        early.settled();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let t = Instant::now();
        assert!(early.finish(&cancel).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
