//! The engine and its cycle: plan when the queue runs low, keep up to
//! max_workers tasks in work, and land passing work through the merge queue
//! as it comes. Beside the cycle run the cancel watcher, the patrol and the
//! lease heartbeat; a [`Shutdown`] request stops claiming and, after its
//! grace, interrupts what still runs.

use crate::lock::ProjectLock;
use crate::merge::MergeRound;
use crate::paths::{write_atomic, DataPaths};
use crate::recorder::Recorder;
use crate::registry::ProviderRegistry;
use crate::shutdown::Shutdown;
use crate::{io_err, EngineError, Result};
use orch_config::{Config, ProjectConfig};
use orch_core::{NewTask, TaskId, TaskSource, TaskStatus};
use orch_git::Git;
use orch_protocol::{self as protocol, Stage};
use orch_sandbox::Sandbox;
use orch_state::StateStore;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How long `orch run` goes on.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Number of cycles to run.
    pub cycles: u32,
    /// Keep cycling (up to `cycles`) only while there is work left.
    pub until_idle: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            cycles: 1,
            until_idle: false,
        }
    }
}

/// What a run did, for the CLI's summary and exit code.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleSummary {
    pub cycles: u32,
    pub planned: usize,
    pub claimed: usize,
    /// Every task this run touched, with its status at the end.
    pub tasks: Vec<TaskLine>,
    /// Set when the run stopped because the project is paused.
    pub paused: Option<String>,
    /// Messages a person should act on (deferred merges, sandbox warnings).
    pub notices: Vec<String>,
    /// Set when a shutdown request ended the run early: what was stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskLine {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    pub attempts: u32,
}

impl CycleSummary {
    pub fn count(&self, status: TaskStatus) -> usize {
        self.tasks.iter().filter(|t| t.status == status).count()
    }
}

pub struct Engine {
    pub(crate) config: Config,
    pub(crate) project: ProjectConfig,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) git: Git,
    pub(crate) paths: DataPaths,
    pub(crate) rec: Recorder,
    pub(crate) main_branch: String,
    /// Paths the sandbox exposes read-only besides the worktree (the git dir
    /// a worktree points into).
    pub(crate) extra_ro: Vec<PathBuf>,
    /// One lock per base commit so parallel workers compute a baseline once.
    pub(crate) baseline_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Prices, budgets and the record of every model call.
    pub(crate) meter: Arc<crate::metered::Meter>,
    /// Cancel tokens of the tasks being worked on.
    pub(crate) cancels: Arc<crate::cancel::Cancels>,
    /// What does the work of each attempt.
    pub(crate) worker: Arc<dyn orch_agent::Worker>,
    /// The workers of `candidate_workers`, in order (best-of-N).
    pub(crate) candidate_workers: Vec<Arc<dyn orch_agent::Worker>>,
    /// Set while the merge queue runs a verification (a slow landing).
    pub(crate) slow_merge: crate::merge::SlowMerge,
    /// The permits early verifications share (see `early`).
    pub(crate) early_permits: Arc<tokio::sync::Semaphore>,
}

impl Engine {
    pub async fn new(
        config: &Config,
        project_name: &str,
        store: Arc<dyn StateStore>,
        providers: ProviderRegistry,
        sandbox: Arc<dyn Sandbox>,
    ) -> Result<Arc<Engine>> {
        let project = config
            .project_or_hint(project_name)
            .map_err(EngineError::Config)?
            .clone();
        let repo_path = config.project_path(&project);
        let git = Git::open(&repo_path).await?;
        let main_branch = if project.main_branch.is_empty() {
            git.default_branch().await?
        } else {
            project.main_branch.clone()
        };
        let extra_ro = vec![git.git_common_dir().await?];
        let paths = DataPaths::new(config.data_dir_abs());
        paths.ensure().map_err(io_err(format!(
            "creating data_dir {}",
            paths.root.display()
        )))?;
        store.ensure_project(&project.name, &repo_path.display().to_string())?;
        let rec = Recorder::new(store.clone(), &project.name);
        let observer_rec = rec.clone();
        let observer: orch_providers::resilient::Observer = Arc::new(move |event| {
            use orch_providers::resilient::ResilienceEvent;
            // A first try that succeeded says nothing its model_call event
            // does not; only retries and their causes are worth a row.
            if matches!(event, ResilienceEvent::Try(t) if t.attempt == 1 && t.error.is_none()) {
                return;
            }
            observer_rec.note(
                None,
                crate::recorder::resilience_payload(event),
                event.message(),
            );
        });
        let providers = providers.with_resilience(config, observer)?;
        let meter = Arc::new(crate::metered::Meter {
            store: store.clone(),
            prices: Arc::new(crate::registry::price_table(config)),
            rec: rec.clone(),
            project: project.name.clone(),
            task_budget_usd: project.max_budget_per_task_usd,
            daily_budget_usd: project.daily_budget_usd,
            max_tokens: project.max_tokens,
            in_flight: Default::default(),
        });
        Ok(Arc::new(Engine {
            config: config.clone(),
            project,
            store,
            providers,
            sandbox,
            git,
            paths,
            rec,
            main_branch,
            extra_ro,
            baseline_locks: Mutex::new(HashMap::new()),
            meter,
            cancels: Arc::default(),
            worker: orch_agent::external::factory::worker_for(config, project_name)
                .map_err(EngineError::Config)?,
            candidate_workers: crate::stages::candidate_workers(config, project_name)?,
            slow_merge: Default::default(),
            early_permits: crate::early::permits(),
        }))
    }

    /// Frees a worktree: the sandbox resets whatever it kept for it, then
    /// git removes it.
    pub(crate) async fn remove_worktree(&self, dir: &std::path::Path) -> Result<()> {
        if let Err(e) = self.sandbox.release(dir).await {
            self.rec.note(
                None,
                protocol::Warning::default(),
                format!("sandbox could not release {}: {e}", dir.display()),
            );
        }
        self.git.worktree_remove(dir).await?;
        Ok(())
    }

    /// The provider for `model`, metered for `ctx` (priced, recorded,
    /// budget-checked), and the model name it knows.
    pub(crate) fn provider_for(
        &self,
        model: &orch_config::ModelRef,
        ctx: crate::metered::CallContext,
    ) -> Result<(Arc<dyn orch_providers::Provider>, String)> {
        let (provider, name) = self.providers.resolve(model)?;
        Ok((
            crate::metered::MeteredProvider::wrap(provider, self.meter.clone(), ctx),
            name,
        ))
    }

    pub fn project(&self) -> &ProjectConfig {
        &self.project
    }

    pub fn main_branch(&self) -> &str {
        &self.main_branch
    }

    /// Runs cycles under the project lock, after recovering from any crash.
    pub async fn run(self: &Arc<Self>, opts: RunOptions) -> Result<CycleSummary> {
        self.run_until(opts, &Shutdown::default()).await
    }

    /// [`Engine::run`] that stops when `shutdown` is requested: no further
    /// claims, merges or attempts; running attempts get the shutdown's
    /// grace, then are interrupted (not counted; their tasks go back to
    /// pending, and the next run resumes them).
    pub async fn run_until(
        self: &Arc<Self>,
        opts: RunOptions,
        shutdown: &Shutdown,
    ) -> Result<CycleSummary> {
        let lock = ProjectLock::acquire(&self.paths.lock(&self.project.name), &self.project.name)?;
        if let Some(pid) = &lock.took_over_from {
            self.rec.note(
                None,
                protocol::Recovered {
                    pid: Some(pid.clone()),
                    ..Default::default()
                },
                format!("took over the lock left by process {pid}, which is no longer running"),
            );
        }
        let mut summary = CycleSummary::default();
        self.recover().await?;
        if !self.sandbox.isolates() {
            let msg = format!(
                "sandbox = \"{}\": model-written code runs with your own permissions, with nothing isolating it",
                self.sandbox.name()
            );
            self.rec
                .note(None, protocol::Warning::default(), msg.clone());
            summary.notices.push(msg);
        } else {
            self.sandbox.check().await?;
        }
        self.cancels.set_draining(false);
        let stop_watch = tokio_util::sync::CancellationToken::new();
        let helpers = [
            tokio::spawn(
                self.cancels
                    .clone()
                    .watch(self.store.clone(), stop_watch.clone()),
            ),
            tokio::spawn(Arc::clone(self).patrol(stop_watch.clone())),
            tokio::spawn(crate::patrol::heartbeat(
                self.store.clone(),
                stop_watch.clone(),
            )),
        ];
        // Worktrees are parked for reuse during the run (see orch_git's
        // pool): one per slot and candidate, plus the merge queue's.
        let candidates = self.project.candidates.max(1) as usize;
        self.git
            .set_worktree_pool(self.project.max_workers as usize * candidates + 1);
        let result = self.run_cycles(opts, &mut summary, shutdown).await;
        stop_watch.cancel();
        for h in helpers {
            let _ = h.await;
        }
        // No parked worktree outlives the run.
        self.git.set_worktree_pool(0);
        let drained = self.git.drain_worktree_pool().await;
        result?;
        drained?;
        if let Err(e) = self.sandbox.shutdown().await {
            self.rec.note(
                None,
                protocol::Warning::at(Stage::Shutdown),
                format!("sandbox shutdown: {e}"),
            );
        }
        drop(lock);
        Ok(summary)
    }

    async fn run_cycles(
        self: &Arc<Self>,
        opts: RunOptions,
        summary: &mut CycleSummary,
        shutdown: &Shutdown,
    ) -> Result<()> {
        let mut touched: BTreeSet<TaskId> = BTreeSet::new();
        for n in 0..opts.cycles.max(1) {
            if shutdown.is_requested() {
                break;
            }
            if self.store.is_paused(&self.project.name)? {
                let row = self.store.project(&self.project.name)?;
                summary.paused = Some(
                    row.pause_reason
                        .unwrap_or_else(|| "paused by `orch pause`".into()),
                );
                break;
            }
            if opts.until_idle && n > 0 && !self.has_work()? {
                break;
            }
            summary.cycles += 1;
            self.cycle(summary, &mut touched, shutdown).await?;
        }
        if shutdown.is_requested() && summary.stopped.is_none() {
            summary.stopped = Some("stopped by a shutdown request before any work started".into());
        }
        if let Some(s) = &summary.stopped {
            summary.notices.push(s.clone());
        }
        if summary.paused.is_none() && self.store.is_paused(&self.project.name)? {
            let row = self.store.project(&self.project.name)?;
            summary.paused = row.pause_reason;
        }
        for id in touched {
            let t = self.store.task(id.as_str())?;
            summary.tasks.push(TaskLine {
                id: t.id.0.clone(),
                title: t.title.clone(),
                status: t.status,
                attempts: t.attempts,
            });
        }
        Ok(())
    }

    /// How long until the first pending task's infrastructure backoff ends,
    /// when every pending task is waiting one out.
    fn backoff_left(&self) -> Result<Option<std::time::Duration>> {
        let pending = self
            .store
            .tasks(Some(&self.project.name), Some(TaskStatus::Pending))?;
        let now = chrono::Utc::now();
        let first = pending.iter().filter_map(|t| t.not_before).min();
        Ok(first
            .filter(|at| *at > now)
            .and_then(|at| (at - now).to_std().ok())
            .map(|d| d.min(std::time::Duration::from_secs(600))))
    }

    fn has_work(&self) -> Result<bool> {
        let counts = self.store.count_by_status(&self.project.name)?;
        let passed = counts
            .get(TaskStatus::Passed.as_str())
            .copied()
            .unwrap_or(0);
        Ok(passed > 0 || self.store.count_ready(&self.project.name)? > 0)
    }

    /// One cycle: plan if needed, then keep every worker slot busy until the
    /// queue drains. There is no barrier: a slot takes the next pending task
    /// the moment it frees, and passing work goes through the merge queue
    /// while the other slots keep working. Tasks a rejected merge sends back
    /// are picked up again in the same cycle.
    async fn cycle(
        self: &Arc<Self>,
        summary: &mut CycleSummary,
        touched: &mut BTreeSet<TaskId>,
        shutdown: &Shutdown,
    ) -> Result<()> {
        let name = self.project.name.clone();
        self.rec.note(
            None,
            protocol::CycleStarted {
                cycle: summary.cycles.into(),
            },
            format!("cycle {} of project {name}", summary.cycles),
        );
        // A shutdown request abandons a planner call under way: nothing is
        // written until its answer is in.
        summary.planned += tokio::select! {
            biased;
            _ = shutdown.requested() => 0,
            planned = self.plan_if_needed() => planned?,
        };

        let slots = self.project.max_workers as usize;
        let mut workers = tokio::task::JoinSet::new();
        let mut merging: Option<tokio::task::JoinHandle<Result<MergeRound>>> = None;
        // A deferred merge (the user's checkout is dirty) stays deferred for
        // the rest of the cycle instead of being retried in a loop.
        let mut merges_blocked = false;
        // Shutdown: interrupted once the grace is over; workers that do not
        // stop by `abandon_at` are abandoned to the next start's recovery.
        let mut interrupted = 0usize;
        let mut abandon_at: Option<tokio::time::Instant> = None;
        loop {
            let stopping = shutdown.is_requested();
            if stopping && !self.cancels.draining() {
                self.cancels.set_draining(true);
                let msg = format!(
                    "shutdown requested: no new work; {} running attempt(s) have {} s to finish, then are interrupted (a restart resumes them)",
                    workers.len(),
                    shutdown.grace().as_secs()
                );
                self.rec.note(
                    None,
                    protocol::Shutdown {
                        running: workers.len(),
                        grace_seconds: shutdown.grace().as_secs(),
                        ..Default::default()
                    },
                    msg,
                );
            }
            if !stopping && merging.is_none() && !merges_blocked && self.has_passed()? {
                self.slow_merge.clear();
                let engine = Arc::clone(self);
                merging = Some(tokio::spawn(async move { engine.merge_queue().await }));
            }
            // With no attempt running, a landing that needs no verification
            // (a fast-forward of a tree that passed) takes a moment: the next
            // attempt waits for it, starts from the new main, and so lands
            // as a fast-forward too instead of needing a verification of its
            // own. A landing that verifies releases the wait at once.
            let await_landing =
                workers.is_empty() && merging.is_some() && !self.slow_merge.is_set();
            if !stopping
                && !await_landing
                && workers.len() < slots
                && !self.store.is_paused(&name)?
            {
                for task in self.store.claim_pending(&name, slots - workers.len())? {
                    summary.claimed += 1;
                    touched.insert(task.id.clone());
                    let engine = Arc::clone(self);
                    workers.spawn(async move { engine.work_task(task).await });
                }
            }
            if workers.is_empty() && merging.is_none() {
                if stopping {
                    break;
                }
                match self.backoff_left()? {
                    // Only tasks waiting out an infrastructure backoff are left.
                    Some(wait) if !self.store.is_paused(&name)? => {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.requested() => {}
                        }
                        continue;
                    }
                    _ => break,
                }
            }
            tokio::select! {
                Some(joined) = workers.join_next(), if !workers.is_empty() => {
                    self.note_worker_end(joined);
                }
                Some(round) = join_if_some(&mut merging) => {
                    merging = None;
                    let round = round.map_err(|e| EngineError::Config(format!("merge queue panicked: {e}")))??;
                    touched.extend(round.handled);
                    merges_blocked |= round.blocked || !round.notices.is_empty();
                    summary.notices.extend(round.notices);
                }
                // The landing turned out to need a verification: claim now.
                _ = self.slow_merge.started(), if await_landing => {}
                // Wakes the loop so it stops claiming.
                _ = shutdown.requested(), if !stopping => {}
                _ = shutdown.grace_over(), if stopping && abandon_at.is_none() && !workers.is_empty() => {
                    let reason = "shutdown: orch is stopping; a restart resumes the task";
                    interrupted += self.interrupt_all(reason);
                    self.rec.note(
                        None,
                        protocol::Shutdown {
                            running: workers.len(),
                            grace_seconds: shutdown.grace().as_secs(),
                            interrupted,
                            ..Default::default()
                        },
                        format!("shutdown: the grace of {} s is over; interrupted {interrupted} attempt(s)", shutdown.grace().as_secs()),
                    );
                    abandon_at = Some(tokio::time::Instant::now() + ABANDON_AFTER);
                }
                _ = sleep_until_some(abandon_at), if !workers.is_empty() => {
                    let left = workers.len();
                    workers.abort_all();
                    while workers.join_next().await.is_some() {}
                    self.rec.note(
                        None,
                        protocol::Shutdown {
                            grace_seconds: shutdown.grace().as_secs(),
                            abandoned: left,
                            ..Default::default()
                        },
                        format!("shutdown: {left} worker(s) did not stop within {} s of being interrupted and were abandoned; the next start recovers their attempts", ABANDON_AFTER.as_secs()),
                    );
                }
            }
        }
        if shutdown.is_requested() {
            summary.stopped = Some(format!(
                "stopped by a shutdown request: {interrupted} running attempt(s) interrupted (not counted; their tasks are pending again and the next run resumes them)"
            ));
        }
        self.rec.note(
            None,
            protocol::CycleFinished {
                cycle: summary.cycles.into(),
            },
            format!("cycle {} finished", summary.cycles),
        );
        Ok(())
    }

    fn note_worker_end(&self, joined: std::result::Result<Result<()>, tokio::task::JoinError>) {
        let message = match joined {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("worker stopped: {e}"),
            Err(e) => format!("worker task panicked: {e}"),
        };
        self.rec.note(None, protocol::Warning::default(), message);
    }

    fn has_passed(&self) -> Result<bool> {
        let counts = self.store.count_by_status(&self.project.name)?;
        Ok(counts
            .get(TaskStatus::Passed.as_str())
            .copied()
            .unwrap_or(0)
            > 0)
    }

    /// Asks the planner for tasks when fewer than max_workers are pending
    /// and something changed since its last plan (see [`Self::plan_state`]),
    /// or `planner_interval_seconds` passed. A planner failure is recorded
    /// and the cycle goes on with the tasks that exist.
    async fn plan_if_needed(&self) -> Result<usize> {
        let Some(model) = self.project.planner_model.clone() else {
            return Ok(0);
        };
        if !self.project.auto_plan {
            return Ok(0);
        }
        let name = &self.project.name;
        let pending = self
            .store
            .tasks(Some(name), Some(TaskStatus::Pending))?
            .len();
        let want = (self.project.max_workers as usize).saturating_sub(pending);
        if want == 0 {
            return Ok(0);
        }
        let repo = self.config.project_path(&self.project);
        let context = orch_planner::gather_context(&repo, 400, 20_000);
        let mut failures = self.store.tasks(Some(name), Some(TaskStatus::Failed))?;
        failures.sort_by_key(|t| std::cmp::Reverse(t.updated_at));
        let fingerprint = self.plan_state(&model, &context, &failures).await?;
        if let Some(why) = self.plan_unneeded(&fingerprint)? {
            self.rec.note(
                None,
                protocol::PlanSkipped {
                    fingerprint: fingerprint.clone(),
                },
                format!("planner not asked: {why}"),
            );
            return Ok(0);
        }
        failures.truncate(10);
        self.rec.note(
            None,
            protocol::StageStarted {
                model: Some(model.to_string()),
                ..protocol::StageStarted::new(Stage::Plan)
            },
            format!("planning: asking {model} for up to {want} task(s)"),
        );
        let (provider, model_name) = self.provider_for(
            &model,
            crate::metered::CallContext {
                role: "planner",
                ..Default::default()
            },
        )?;
        let open: Vec<_> = self
            .store
            .tasks(Some(name), None)?
            .into_iter()
            .filter(|t| !t.status.is_terminal())
            .collect();
        let input = orch_planner::PlanInput {
            project: name,
            context: &context,
            open_tasks: &open,
            recent_failures: &failures,
            want,
        };
        let (plan, usage) = match orch_planner::plan(provider.as_ref(), &model_name, &input).await {
            Ok(p) => p,
            Err(e) => {
                // A malformed answer is an answer for this state; an outage
                // is not, so the planner is asked again next time.
                if !matches!(e, orch_planner::PlanError::Provider(_)) {
                    self.store.set_plan_fingerprint(name, &fingerprint)?;
                }
                self.rec.note(
                    None,
                    protocol::Warning::at(Stage::Plan),
                    format!("planner failed, continuing with existing tasks: {e}"),
                );
                return Ok(0);
            }
        };
        self.store.set_plan_fingerprint(name, &fingerprint)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let plan_path = self.paths.plans(name).join(format!("plan_{stamp}.md"));
        write_atomic(
            &plan_path,
            &orch_planner::render_markdown(name, &plan, &context),
        )
        .map_err(io_err(format!("writing {}", plan_path.display())))?;
        let mut created = Vec::new();
        for t in &plan.tasks {
            let task = self.store.add_task(&NewTask {
                project: name.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                task_type: t.task_type,
                priority: t.priority,
                allowed_files: t.allowed_files.clone(),
                source: TaskSource::Planner,
                acceptance_tests: t.acceptance_tests.clone(),
                ..NewTask::default()
            })?;
            created.push(protocol::PlannedTask {
                id: task.id.to_string(),
                plan_key: None,
            });
        }
        let count = created.len();
        let dropped = plan
            .dropped
            .iter()
            .map(|(title, reason)| protocol::DroppedTask {
                title: title.clone(),
                reason: reason.clone(),
            });
        self.rec.note(
            None,
            protocol::PlanCreated {
                source: protocol::PlanSource::Planner,
                created,
                skipped: Vec::new(),
                dropped: dropped.collect(),
                notes: Some(plan.notes.clone()),
                file: Some(plan_path.display().to_string()),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost_usd: usage.cost_usd,
            },
            format!(
                "planner proposed {count} task(s), dropped {}",
                plan.dropped.len()
            ),
        );
        Ok(count)
    }

    /// A digest of everything the planner's answer depends on: its model,
    /// main's commit (every merge moves it), the files and documents it
    /// reads from the checkout, and the failed tasks. Equal digests mean
    /// asking again would only repeat the last answer.
    async fn plan_state(
        &self,
        model: &orch_config::ModelRef,
        context: &orch_planner::PlanContext,
        failures: &[orch_core::Task],
    ) -> Result<String> {
        use sha2::{Digest, Sha256};
        let main = self.git.rev_parse(&self.main_branch).await?;
        let mut h = Sha256::new();
        for part in [model.to_string().as_str(), &main, &context.file_tree] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (file, text) in &context.docs {
            h.update(file.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        let mut failed: Vec<&str> = failures.iter().map(|t| t.id.as_str()).collect();
        failed.sort_unstable();
        h.update(failed.join(",").as_bytes());
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Why the planner need not be asked for `fingerprint`, if it need not.
    fn plan_unneeded(&self, fingerprint: &str) -> Result<Option<String>> {
        let row = self.store.project(&self.project.name)?;
        if row.plan_fingerprint.as_deref() != Some(fingerprint) {
            return Ok(None);
        }
        let since = row
            .planned_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                chrono::Utc::now()
                    .signed_duration_since(t)
                    .num_seconds()
                    .max(0) as u64
            });
        if let (Some(interval), Some(since)) = (self.project.planner_interval_seconds, since) {
            if since >= interval {
                return Ok(None);
            }
        }
        Ok(Some(format!(
            "nothing it reads changed since its last plan{} (main, the files and documents it reads, and the failed tasks are the same)",
            since.map(|s| format!(" {s} s ago")).unwrap_or_default()
        )))
    }
}

/// How long interrupted workers may take to stop before they are abandoned.
const ABANDON_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Sleeps until the instant when there is one; never resolves otherwise.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Awaits the handle when there is one; never resolves otherwise, so a
/// `select!` branch on it simply stays quiet.
async fn join_if_some<T>(
    handle: &mut Option<tokio::task::JoinHandle<T>>,
) -> Option<std::result::Result<T, tokio::task::JoinError>> {
    match handle {
        Some(h) => Some(h.await),
        None => std::future::pending().await,
    }
}
