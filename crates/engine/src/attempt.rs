//! Working one task: attempts in a loop until one passes, a person is
//! needed, max_attempts trips, the task is cancelled, orch's own failure
//! puts it back for later, or the task is interrupted (shutdown, patrol)
//! and goes back to pending with its attempt not counted. The stages of one attempt are in `stages`; this
//! file holds the loop around them, the verification settings, the
//! architect, the base-commit baseline and the feedback text.

use crate::cycle::Engine;
use crate::Result;
use orch_agent::{AgentEvent, AgentObserver};
use orch_core::{
    Attempt, AttemptStatus, StepKind, StepResult, Task, TaskStatus, Verdict, VerificationReport,
};
use orch_protocol::{self as protocol, Stage};
use orch_state::AttemptFinish;
use orch_verify::{VerifyCommands, VerifyOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest file a worker may write (checked by the file tools and again at
/// the commit boundary).
pub(crate) const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;

/// How an attempt ended, for the task loop.
pub(crate) enum AttemptEnd {
    Passed,
    NeedsHuman,
    /// The task was cancelled; the attempt stopped and nothing was queued.
    Cancelled,
    /// The project was paused under the attempt (its daily budget ran out).
    Paused,
    /// orch's own failure (git, filesystem, sandbox, provider outage):
    /// not counted against max_attempts.
    Infra {
        message: String,
    },
    /// The task's budget is spent; retrying cannot help.
    OutOfBudget {
        reason: String,
    },
    /// Failed; `attempts` is the task's counted attempts so far.
    Failed {
        attempts: u32,
    },
}

/// Records the agent's tool and model calls as events.
pub(crate) struct EventObserver {
    pub(crate) rec: crate::Recorder,
    pub(crate) task: String,
    /// The attempt the agent works for (its row id and number): several of
    /// a task's attempts can run at once (best-of-N), so each call says whose.
    pub(crate) attempt_id: i64,
    pub(crate) attempt: u32,
}

impl AgentObserver for EventObserver {
    fn on_event(&self, event: &AgentEvent) {
        match event {
            // The metered provider records every model call, with its
            // role, model and duration; a turn adds nothing to that.
            AgentEvent::ModelCall { .. } => {}
            AgentEvent::ToolCall(t) => match &t.refused {
                Some(reason) => self.rec.note(
                    Some(&self.task),
                    protocol::ToolRefused {
                        stage: Some(Stage::Work),
                        turn: Some(t.turn),
                        tool: Some(t.tool.clone()),
                        arguments: Some(t.arguments.clone()),
                        path: None,
                        refused: reason.clone(),
                        attempt: Some(self.attempt),
                    },
                    format!("refused {}: {reason}", t.tool),
                ),
                None => self.rec.note(
                    Some(&self.task),
                    protocol::ToolCall {
                        turn: t.turn,
                        tool: t.tool.clone(),
                        arguments: t.arguments.clone(),
                        ok: t.ok,
                        output: t.output_preview.clone(),
                        duration_ms: t.duration_ms,
                        attempt_id: Some(self.attempt_id),
                        attempt: Some(self.attempt),
                    },
                    format!("{} {}", t.tool, if t.ok { "ok" } else { "error" }),
                ),
            },
        }
    }
}

impl Engine {
    pub(crate) fn verify_commands(&self) -> VerifyCommands {
        VerifyCommands {
            setup: self.project.setup_command.clone(),
            format: self.project.format_command.clone(),
            lint: self.project.lint_command.clone(),
            test: self.project.test_command.clone(),
        }
    }

    pub(crate) fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            timeout: Duration::from_secs(self.project.command_timeout_seconds),
            output_limit: self.project.output_limit_bytes,
            env: self.sandbox_env(),
            extra_ro: self.extra_ro.clone(),
            tail_bytes: 4000,
        }
    }

    /// One worker run of `task` in `worktree` under the project's limits,
    /// the same for an attempt's work and for a conflict resolver's.
    pub(crate) fn worker_spec(
        &self,
        task: &Task,
        (provider, model): (Arc<dyn orch_providers::Provider>, String),
        worktree: &std::path::Path,
        (system_prompt, task_prompt): (&str, &str),
        cancel: &CancellationToken,
    ) -> orch_agent::WorkerSpec {
        let p = &self.project;
        orch_agent::WorkerSpec {
            provider,
            model,
            sandbox: self.sandbox.clone(),
            worktree: worktree.to_path_buf(),
            extra_ro: self.extra_ro.clone(),
            sandbox_env: self.sandbox_env(),
            system_prompt: system_prompt.to_string(),
            task_prompt: task_prompt.to_string(),
            allowed_files: task.allowed_files.clone(),
            max_turns: p.max_turns,
            deadline: Duration::from_secs(p.worker_timeout_seconds),
            output_limit: p.output_limit_bytes,
            max_run_timeout: Duration::from_secs(p.command_timeout_seconds),
            max_file_bytes: MAX_FILE_BYTES,
            cancel: cancel.clone(),
            workspace: orch_agent::Workspace::present(),
            interlude: None,
        }
    }

    /// What verification must prove for `task`: its acceptance tests, the
    /// tests it names, and the project's policy for pre-existing failures.
    pub(crate) fn test_goal(&self, task: &Task) -> orch_core::TestGoal {
        orch_core::TestGoal {
            acceptance: task.acceptance_tests.clone(),
            mentions: format!("{}\n{}", task.title, task.description),
            must_fix_a_base_failure: task.task_type == orch_core::TaskType::Fix,
            block_preexisting: self.project.preexisting_failures
                == orch_config::PreexistingPolicy::Block,
        }
    }

    /// Only the variables the project lists in pass_env reach the sandbox.
    pub(crate) fn sandbox_env(&self) -> Vec<(String, String)> {
        self.project
            .pass_env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect()
    }

    /// Works a claimed (running) task until it passes, needs a person,
    /// fails for good, is cancelled, or is put back after an infrastructure
    /// failure. While it runs, `orch cancel` reaches it through its token.
    pub(crate) async fn work_task(self: Arc<Self>, task: Task) -> Result<()> {
        let cancel = self.cancels.register(&task.id);
        let result = self.work_task_until_done(task.clone(), &cancel).await;
        self.cancels.unregister(&task.id);
        result
    }

    async fn work_task_until_done(&self, task: Task, cancel: &CancellationToken) -> Result<()> {
        let mut task = task;
        loop {
            if let Some(reason) = self.stop_reason(&task) {
                return self.requeue_interrupted(&task, &reason).await;
            }
            let end = match self.attempt(&task, cancel).await {
                Ok(end) => end,
                Err(e) => {
                    if let Some(reason) = self.cancels.interrupt_reason(&task.id) {
                        // Stopped from outside; the error is a consequence.
                        return self.requeue_interrupted(&task, &reason).await;
                    }
                    // orch itself failed mid-attempt (git, sandbox, disk):
                    // not the worker's fault, so not one of its attempts.
                    let message = e.to_string();
                    self.record_attempt_error(&task, &message).await?;
                    AttemptEnd::Infra { message }
                }
            };
            match end {
                AttemptEnd::Passed | AttemptEnd::NeedsHuman => return Ok(()),
                AttemptEnd::Cancelled => {
                    // The attempt was recorded `interrupted` when nobody
                    // cancelled the task; put the task back for a retry.
                    if let Some(reason) = self.cancels.interrupt_reason(&task.id) {
                        return self.requeue_interrupted(&task, &reason).await;
                    }
                    return Ok(());
                }
                AttemptEnd::Infra { message } => return self.after_infra_failure(&task, &message),
                AttemptEnd::Paused => {
                    self.store.transition(
                        &task.id,
                        &[TaskStatus::Running],
                        TaskStatus::Pending,
                        "project paused; retry later",
                    )?;
                    return Ok(());
                }
                AttemptEnd::OutOfBudget { reason } => {
                    self.fail_unless_left(&task, &reason)?;
                    return Ok(());
                }
                AttemptEnd::Failed { attempts } => {
                    if attempts >= self.project.max_attempts {
                        let reason = format!(
                            "gave up after {attempts} attempt(s) (max_attempts = {}); last feedback is in `orch show {}`",
                            self.project.max_attempts, task.id
                        );
                        if self.fail_unless_left(&task, &reason)? {
                            self.pause_after_repeated_failures()?;
                        }
                        return Ok(());
                    }
                    // Rounds of candidates are compared as rounds (loops.rs).
                    if self.stop_if_looping(&task).await? {
                        return Ok(());
                    }
                    if self.store.is_paused(&self.project.name)? {
                        self.store.transition(
                            &task.id,
                            &[
                                TaskStatus::Running,
                                TaskStatus::Verifying,
                                TaskStatus::Judging,
                            ],
                            TaskStatus::Pending,
                            "project paused; retry later",
                        )?;
                        return Ok(());
                    }
                    // A worker that stopped before verification is still
                    // `running`; one that was judged goes back to it.
                    let retried = match self.store.task(task.id.as_str())?.status {
                        TaskStatus::Running => true,
                        TaskStatus::Verifying | TaskStatus::Judging => self.store.transition(
                            &task.id,
                            &[TaskStatus::Verifying, TaskStatus::Judging],
                            TaskStatus::Running,
                            "retrying with feedback",
                        )?,
                        _ => false,
                    };
                    if !retried {
                        // The task left its states under us (a cancel).
                        return Ok(());
                    }
                    task = self.store.task(task.id.as_str())?;
                }
            }
        }
    }

    /// Why no further attempt of `task` may start here: it was interrupted,
    /// or shutdown was requested.
    fn stop_reason(&self, task: &Task) -> Option<String> {
        self.cancels.interrupt_reason(&task.id).or_else(|| {
            self.cancels
                .draining()
                .then(|| "shutdown: orch is stopping; a restart resumes the task".to_string())
        })
    }

    /// After an interruption: any attempt still running is recorded
    /// `interrupted` (not counted), its worktree goes, and the task goes
    /// back to pending, to be claimed again (by this run, or the next one
    /// after a shutdown).
    async fn requeue_interrupted(&self, task: &Task, reason: &str) -> Result<()> {
        self.store.interrupt_running(&task.id, reason)?;
        let worktree = self.paths.worktree(&self.project.name, task.id.as_str());
        if worktree.exists() {
            let _ = self.remove_worktree(&worktree).await;
        }
        self.store.transition(
            &task.id,
            &[
                TaskStatus::Running,
                TaskStatus::Verifying,
                TaskStatus::Judging,
            ],
            TaskStatus::Pending,
            &format!("interrupted ({reason}); the task will be retried"),
        )?;
        Ok(())
    }

    /// Fails the task unless it already finished (a cancel got there
    /// first). True when this call failed it.
    fn fail_unless_left(&self, task: &Task, reason: &str) -> Result<bool> {
        let current = self.store.task(task.id.as_str())?;
        if current.status.is_terminal() {
            return Ok(false);
        }
        self.store.fail_task(&task.id, reason)?;
        Ok(true)
    }

    fn pause_after_repeated_failures(&self) -> Result<()> {
        let name = &self.project.name;
        let n = self.store.bump_consecutive_failures(name)?;
        if n >= self.project.pause_after_failures {
            self.store.set_paused(
                name,
                true,
                Some(&format!("paused after {n} tasks failed in a row (pause_after_failures = {}); look at `orch tasks --project {name} --status failed`, then `orch resume --project {name}`", self.project.pause_after_failures)),
            )?;
        }
        Ok(())
    }

    /// An attempt was lost to orch's own failure: the task goes back to
    /// pending after a backoff (doubling per failure, at most 10 minutes),
    /// or fails as "infrastructure" once `max_infra_failures` is reached.
    fn after_infra_failure(&self, task: &Task, message: &str) -> Result<()> {
        let current = self.store.task(task.id.as_str())?;
        let n = current.infra_failures;
        let max = self.project.max_infra_failures;
        if current.status.is_terminal() {
            return Ok(());
        }
        if n >= max {
            let reason = format!(
                "infrastructure: {n} attempt(s) were lost to failures of orch or what it depends on (max_infra_failures = {max}), not to the work itself; the last: {message}. Fix the cause (see `orch events --project {}`), then add the task again",
                self.project.name
            );
            self.store.fail_task(&task.id, &reason)?;
            return Ok(());
        }
        let base = self.project.infra_backoff_seconds;
        let wait = base
            .saturating_mul(1 << (n.saturating_sub(1)).min(16))
            .min(600);
        let until = chrono::Utc::now() + chrono::Duration::seconds(wait as i64);
        self.rec.note(
            Some(task.id.as_str()),
            protocol::InfraFailure {
                infra_failures: n,
                max_infra_failures: max,
                backoff_seconds: wait,
                error: message.to_string(),
            },
            format!("infrastructure failure {n} of {max}; retrying in {wait} s: {message}"),
        );
        self.store.defer_task(
            &task.id,
            until,
            &format!("infrastructure failure; retry in {wait} s"),
        )?;
        Ok(())
    }

    async fn record_attempt_error(&self, task: &Task, message: &str) -> Result<()> {
        let running: Vec<Attempt> = self
            .store
            .attempts(&task.id)?
            .into_iter()
            .filter(|a| a.status == AttemptStatus::Running)
            .collect();
        for a in running {
            let mut fin = AttemptFinish::new(AttemptStatus::Error);
            fin.error = Some(message.to_string());
            self.store.finish_attempt(a.id, &fin)?;
        }
        let _ = self
            .remove_worktree(&self.paths.worktree(&self.project.name, task.id.as_str()))
            .await;
        self.rec.note(
            Some(task.id.as_str()),
            protocol::Warning::default(),
            format!("attempt failed inside orch: {message}"),
        );
        Ok(())
    }

    /// The architect role: before the worker starts, the architect model
    /// sees the task and the file tree and writes a short plan, which goes
    /// into the worker's prompt. A failed architect call is recorded and the
    /// worker goes on without a plan.
    pub(crate) async fn architect_plan(
        &self,
        model: &orch_config::ModelRef,
        task: &Task,
        task_prompt: &str,
        worktree: &std::path::Path,
        ctx: crate::metered::CallContext,
    ) -> String {
        let tid = task.id.as_str();
        let context = orch_planner::gather_context(worktree, 300, 8_000);
        let request = orch_providers::ChatRequest::new(
            String::new(),
            vec![
                orch_providers::Message::system(crate::prompts::ARCHITECT_SYSTEM_PROMPT),
                orch_providers::Message::user(format!(
                    "{task_prompt}\n## Files\n\n{}\n",
                    context.file_tree
                )),
            ],
        );
        self.rec.note(
            Some(tid),
            protocol::StageStarted {
                model: Some(model.to_string()),
                ..protocol::StageStarted::new(Stage::Architect)
            },
            format!("architect {model} is planning the work"),
        );
        let started = std::time::Instant::now();
        let answer = match self.provider_for(model, ctx) {
            Ok((provider, name)) => {
                let mut request = request;
                request.model = name;
                request.max_tokens = Some(2000);
                provider.chat(&request).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let planned = matches!(&answer, Ok(r) if !r.message.content.trim().is_empty());
        self.rec.note(
            Some(tid),
            protocol::StageFinished::new(Stage::Architect, None, started.elapsed(), planned),
            if planned {
                "architect wrote a plan for the worker"
            } else {
                "architect wrote no plan"
            },
        );
        match answer {
            Ok(r) if !r.message.content.trim().is_empty() => {
                format!(
                    "\n## Plan from the architect\n\n{}\n",
                    r.message.content.trim()
                )
            }
            Ok(_) => String::new(),
            Err(e) => {
                self.rec.note(
                    Some(tid),
                    protocol::Warning::at(Stage::Architect),
                    format!("architect {model} failed; the worker goes on without a plan: {e}"),
                );
                String::new()
            }
        }
    }

    /// The test step's result on the base commit, only when the attempt's own
    /// test step failed (otherwise nothing needs telling apart). Cached in
    /// SQLite per (project, commit, command), computed once per base even
    /// when workers run in parallel.
    pub(crate) async fn baseline_if_needed(
        &self,
        base: &str,
        steps: &[StepResult],
    ) -> Result<Option<StepResult>> {
        let failed_test = steps
            .iter()
            .any(|s| s.kind == StepKind::Test && !s.succeeded());
        if !failed_test || self.project.test_command.is_empty() {
            return Ok(None);
        }
        let name = &self.project.name;
        let command = &self.project.test_command;
        let lock = {
            let mut locks = self
                .baseline_locks
                .lock()
                .map_err(|_| crate::EngineError::Config("baseline lock poisoned".into()))?;
            locks.entry(base.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(v) = self.store.baseline(name, base, command)? {
            if let Ok(step) = serde_json::from_value::<StepResult>(v) {
                return Ok(Some(step));
            }
        }
        let short = &base[..base.len().min(12)];
        self.rec.note(
            None,
            protocol::StageStarted {
                commit: Some(base.to_string()),
                ..protocol::StageStarted::new(Stage::Baseline)
            },
            format!("running the test command on base {short} to tell old failures from new"),
        );
        let dir = self.paths.worktree(name, &format!("base-{short}"));
        self.git.worktree_add_detached(&dir, base).await?;
        let step = orch_verify::run_step(
            self.sandbox.as_ref(),
            &dir,
            StepKind::Test,
            command,
            &self.verify_options(),
        )
        .await;
        self.remove_worktree(&dir).await?;
        let step = step?;
        self.store.put_baseline(
            name,
            base,
            command,
            &serde_json::to_value(&step).unwrap_or_default(),
        )?;
        self.rec.note(
            None,
            protocol::BaselineComputed {
                commit: base.to_string(),
                failed: step.counts.as_ref().map(|c| c.failed).unwrap_or(0),
            },
            format!(
                "base {short}: {} failing test(s)",
                step.counts.as_ref().map(|c| c.failed).unwrap_or(0)
            ),
        );
        Ok(Some(step))
    }
}

/// What the next attempt is told.
pub(crate) fn feedback_text(report: &VerificationReport, verdict: &Verdict) -> String {
    let mut f = String::new();
    if !report.passed {
        f.push_str("Verification failed.\n\n");
        f.push_str(&report.summary);
        f.push('\n');
        if let Some(test) = report.steps.iter().find(|s| !s.succeeded()) {
            f.push_str(&format!(
                "\nOutput of `{}` (last part):\n\n```\n{}\n```\n",
                test.command,
                orch_verify::tail(&test.output_tail, 3000)
            ));
        }
    }
    if !verdict.issues.is_empty() {
        f.push_str("\nThe judge's issues:\n");
        for i in &verdict.issues {
            f.push_str(&format!("- {i}\n"));
        }
    }
    if report.passed && !verdict.reasoning.is_empty() {
        f.push_str(&format!("\nThe judge's reasoning: {}\n", verdict.reasoning));
    }
    if f.trim().is_empty() {
        // Never send a retry off with nothing to go on.
        f.push_str("The attempt was not accepted, but no reason was recorded; re-read the task, check your change against it, and run the tests before you finish.\n");
    }
    f
}

/// The first line of a summary, for one-line event messages.
pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
