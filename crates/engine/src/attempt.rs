//! Working one task: attempts in a loop until one passes, a person is
//! needed, or max_attempts trips. Each attempt gets a fresh worktree on
//! `orch/<task-id>` from the current main, runs the agent in the sandbox,
//! commits, verifies, judges, and records everything.

use crate::audit::{attempt_markdown, report_markdown, AttemptRecord};
use crate::cycle::Engine;
use crate::paths::write_atomic;
use crate::{io_err, Result};
use orch_agent::{AgentEvent, AgentObserver, WorkerEnd, WorkerSpec};
use orch_core::{
    Attempt, AttemptStatus, EventKind, StepKind, StepResult, Task, TaskStatus, Usage, Verdict,
    VerificationReport,
};
use orch_state::AttemptFinish;
use orch_verify::{VerifyCommands, VerifyOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Largest diff shown to the judge.
const JUDGE_DIFF_BYTES: usize = 60_000;
/// Largest file a worker may write.
const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;

enum AttemptEnd {
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
struct EventObserver {
    rec: crate::Recorder,
    task: String,
}

impl AgentObserver for EventObserver {
    fn on_event(&self, event: &AgentEvent) {
        match event {
            AgentEvent::ModelCall { turn, usage } => self.rec.note(
                Some(&self.task),
                EventKind::ModelCall,
                format!("turn {turn}: model answered ({} in / {} out tokens)", usage.input_tokens, usage.output_tokens),
                serde_json::json!({"turn": turn, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "cost_usd": usage.cost_usd}),
            ),
            AgentEvent::ToolCall(t) => {
                let (kind, msg) = match &t.refused {
                    Some(reason) => (EventKind::ToolRefused, format!("refused {}: {reason}", t.tool)),
                    None => (EventKind::ToolCall, format!("{} {}", t.tool, if t.ok { "ok" } else { "error" })),
                };
                self.rec.note(
                    Some(&self.task),
                    kind,
                    msg,
                    serde_json::json!({"turn": t.turn, "tool": t.tool, "arguments": t.arguments, "ok": t.ok, "refused": t.refused, "output": t.output_preview}),
                );
            }
        }
    }
}

impl Engine {
    fn verify_commands(&self) -> VerifyCommands {
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
    fn sandbox_env(&self) -> Vec<(String, String)> {
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
            let end = match self.attempt(&task, cancel).await {
                Ok(end) => end,
                Err(e) => {
                    // orch itself failed mid-attempt (git, sandbox, disk):
                    // not the worker's fault, so not one of its attempts.
                    let message = e.to_string();
                    self.record_attempt_error(&task, &message).await?;
                    AttemptEnd::Infra { message }
                }
            };
            match end {
                AttemptEnd::Passed | AttemptEnd::NeedsHuman | AttemptEnd::Cancelled => {
                    return Ok(())
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
        if n >= 5 {
            self.store.set_paused(
                name,
                true,
                Some(&format!("paused after {n} tasks failed in a row; look at `orch tasks --project {name} --status failed`, then `orch resume --project {name}`")),
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
            EventKind::InfraFailure,
            format!("infrastructure failure {n} of {max}; retrying in {wait} s: {message}"),
            serde_json::json!({"infra_failures": n, "max_infra_failures": max, "backoff_seconds": wait, "error": message}),
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
            EventKind::Warning,
            format!("attempt failed inside orch: {message}"),
            serde_json::Value::Null,
        );
        Ok(())
    }

    /// Moves the task on, or reports that it left the states this attempt
    /// expects (cancelled under us): a worker whose task left stops.
    fn advance(&self, task: &Task, from: TaskStatus, to: TaskStatus, note: &str) -> Result<bool> {
        self.store
            .transition(&task.id, &[from], to, note)
            .map_err(Into::into)
    }

    async fn attempt(&self, task: &Task, cancel: &CancellationToken) -> Result<AttemptEnd> {
        let name = self.project.name.clone();
        let tid = task.id.as_str().to_string();
        let base = self.git.rev_parse(&self.main_branch).await?;
        let attempt = self.store.start_attempt(&task.id, &base)?;
        let started = Instant::now();
        let worktree = self.paths.worktree(&name, &tid);
        self.git
            .worktree_add(&worktree, &task.branch(), &base)
            .await?;

        let system_prompt =
            crate::prompts::worker_system_prompt(task.task_type, &self.project.test_command);
        let mut task_prompt =
            crate::prompts::worker_task_prompt(task, attempt.number, self.project.max_attempts);
        let route = crate::routing::route(&self.project, task, &self.meter.prices);
        let worker_model = route
            .model_for_attempt(attempt.number)
            .cloned()
            .unwrap_or_else(|| self.project.worker_model.clone());
        let ctx = |role: &'static str| crate::metered::CallContext {
            role,
            task_id: Some(tid.clone()),
            attempt_id: Some(attempt.id),
        };
        if let Some(architect) = &self.project.architect_model {
            let plan = self
                .architect_plan(architect, task, &task_prompt, &worktree, ctx("architect"))
                .await;
            task_prompt.push_str(&plan);
        }
        let (provider, model) = self.provider_for(&worker_model, ctx("worker"))?;
        self.rec.note(
            Some(&tid),
            EventKind::StageStarted,
            format!("attempt {}: worker {worker_model} started", attempt.number),
            serde_json::json!({"stage": "work", "attempt": attempt.number, "model": worker_model.to_string(), "workflow": route.workflow}),
        );
        let spec = WorkerSpec {
            provider,
            model,
            sandbox: self.sandbox.clone(),
            worktree: worktree.clone(),
            extra_ro: self.extra_ro.clone(),
            sandbox_env: self.sandbox_env(),
            system_prompt: system_prompt.clone(),
            task_prompt: task_prompt.clone(),
            allowed_files: task.allowed_files.clone(),
            max_turns: self.project.max_turns,
            deadline: Duration::from_secs(self.project.worker_timeout_seconds),
            output_limit: self.project.output_limit_bytes,
            max_run_timeout: Duration::from_secs(self.project.command_timeout_seconds),
            max_file_bytes: MAX_FILE_BYTES,
            cancel: cancel.clone(),
        };
        let observer = EventObserver {
            rec: self.rec.clone(),
            task: tid.clone(),
        };
        let outcome = orch_agent::run_worker(spec, &observer).await;
        self.store.add_task_usage(&task.id, &outcome.usage)?;

        let audit_base = self
            .paths
            .attempts(&name)
            .join(format!("{tid}-{}", attempt.number));
        let transcript_json = serde_json::to_string_pretty(&outcome.transcript).unwrap_or_default();
        write_atomic(&audit_base.with_extension("json"), &transcript_json)
            .map_err(io_err("writing the attempt transcript"))?;
        let audit_md = audit_base.with_extension("md");

        let write_audit = |outcome_name: &str,
                           diff_stat: &str,
                           report: Option<&VerificationReport>,
                           feedback: Option<&str>|
         -> Result<()> {
            let md = attempt_markdown(&AttemptRecord {
                task,
                attempt: &attempt,
                outcome: outcome_name,
                system_prompt: &system_prompt,
                task_prompt: &task_prompt,
                transcript: &outcome.transcript,
                diff_stat,
                usage: outcome.usage,
                turns: outcome.turns,
                duration_ms: started.elapsed().as_millis() as u64,
                report,
                feedback,
            });
            write_atomic(&audit_md, &md).map_err(io_err(format!("writing {}", audit_md.display())))
        };
        let finish = |status: AttemptStatus,
                      head: Option<String>,
                      summary: Option<String>,
                      diff_stat: Option<String>,
                      report: Option<&VerificationReport>,
                      verdict: Option<&Verdict>,
                      error: Option<String>| {
            AttemptFinish {
                status,
                head_commit: head,
                summary,
                diff_stat,
                usage: outcome.usage,
                turns: outcome.turns,
                verification: report.and_then(|r| serde_json::to_value(r).ok()),
                verdict: verdict.and_then(|v| serde_json::to_value(v).ok()),
                audit_path: Some(audit_md.display().to_string()),
                error,
            }
        };
        // A cancel seen at any step below ends the attempt the same way.
        let cancelled = |stage: &str| -> Result<AttemptEnd> {
            write_audit("cancelled", "", None, None)?;
            let why = format!("cancelled during {stage}");
            self.store.finish_attempt(
                attempt.id,
                &finish(
                    AttemptStatus::Cancelled,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(why.clone()),
                ),
            )?;
            self.rec.note(
                Some(&tid),
                EventKind::Cancelled,
                format!("attempt {} stopped: {why}", attempt.number),
                serde_json::json!({"stage": stage, "attempt": attempt.number}),
            );
            Ok(AttemptEnd::Cancelled)
        };

        let summary = match &outcome.end {
            WorkerEnd::Finished { summary } => summary.clone(),
            WorkerEnd::Cancelled => {
                let end = cancelled("work");
                self.remove_worktree(&worktree).await?;
                return end;
            }
            WorkerEnd::AskedHuman { question } => {
                write_audit("needs a person", "", None, None)?;
                self.store.finish_attempt(
                    attempt.id,
                    &finish(
                        AttemptStatus::NeedsHuman,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                    ),
                )?;
                let asked = self.store.ask_human(&task.id, question);
                self.remove_worktree(&worktree).await?;
                return match asked {
                    Ok(()) => Ok(AttemptEnd::NeedsHuman),
                    // Cancelled while the worker was asking.
                    Err(orch_state::StateError::InvalidTransition { .. }) => {
                        Ok(AttemptEnd::Cancelled)
                    }
                    Err(e) => Err(e.into()),
                };
            }
            other => {
                let why = match other {
                    WorkerEnd::TurnLimit => format!("The worker used all {} turns (max_turns) without calling finish. Work in fewer, larger steps.", self.project.max_turns),
                    WorkerEnd::TimedOut => format!("The worker ran out of time ({} s, worker_timeout_seconds) before calling finish.", self.project.worker_timeout_seconds),
                    WorkerEnd::Stuck { detail } => format!("The worker was stopped as stuck: {detail}"),
                    WorkerEnd::ModelError { message } => format!("The model call failed: {message}"),
                    _ => String::new(),
                };
                write_audit("failed", "", None, Some(&why))?;
                let refused_for = |marker: &str| matches!(other, WorkerEnd::ModelError { message } if message.contains(marker));
                let budget = refused_for(crate::metered::TASK_BUDGET_REACHED);
                let paused = refused_for(crate::metered::DAILY_BUDGET_REACHED);
                let outage = matches!(other, WorkerEnd::ModelError { .. }) && !budget && !paused;
                let status = if outage {
                    AttemptStatus::Error
                } else if paused {
                    // Stopped from outside, like a crash: not counted.
                    AttemptStatus::Interrupted
                } else {
                    AttemptStatus::Failed
                };
                let attempts = self.store.finish_attempt(
                    attempt.id,
                    &finish(status, None, None, None, None, None, Some(why.clone())),
                )?;
                self.remove_worktree(&worktree).await?;
                if budget {
                    return Ok(AttemptEnd::OutOfBudget {
                        reason: format!("stopped before going over its budget: {why}"),
                    });
                }
                if paused {
                    return Ok(AttemptEnd::Paused);
                }
                if outage {
                    // A provider outage (retries exhausted, breaker open) is
                    // not the worker's fault: no counted attempt, no feedback.
                    return Ok(AttemptEnd::Infra { message: why });
                }
                self.store.set_feedback(&task.id, Some(&why))?;
                return Ok(AttemptEnd::Failed { attempts });
            }
        };

        // The commit boundary: limits hold whatever wrote the files.
        let refused =
            crate::changeset::enforce(&self.git, &worktree, &task.allowed_files, MAX_FILE_BYTES)
                .await?;
        for r in &refused {
            self.rec.note(
                Some(&tid),
                EventKind::ToolRefused,
                format!("not committed: {}: {}", r.path, r.reason),
                serde_json::json!({"stage": "commit", "path": r.path, "refused": r.reason, "attempt": attempt.number}),
            );
        }
        let message = format!(
            "orch: {}\n\nTask: {}\nAttempt: {}\n\n{}",
            task.title, tid, attempt.number, summary
        );
        let head = self.git.commit_all(&worktree, &message).await?;
        let head_sha = match &head {
            Some(h) => {
                // Kept whatever happens next, for inspection or pick-up.
                self.git
                    .keep_ref(&task.id.attempt_ref(attempt.number), h)
                    .await?;
                h.clone()
            }
            None => base.clone(),
        };
        let diff_stat = self.git.diff_stat(&base, &head_sha).await?;

        // Verify.
        if cancel.is_cancelled()
            || !self.advance(
                task,
                TaskStatus::Running,
                TaskStatus::Verifying,
                "worker finished",
            )?
        {
            let end = cancelled("verification");
            self.remove_worktree(&worktree).await?;
            return end;
        }
        let (commands, options) = (self.verify_commands(), self.verify_options());
        let run = orch_verify::run_steps(self.sandbox.as_ref(), &worktree, &commands, &options);
        let steps = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let end = cancelled("verification");
                self.remove_worktree(&worktree).await?;
                return end;
            }
            steps = run => steps?,
        };
        let baseline = self.baseline_if_needed(&base, &steps).await?;
        let report = orch_verify::assess(
            steps,
            baseline.as_ref(),
            head.is_none(),
            &self.test_goal(task),
        );
        self.rec.note(Some(&tid), EventKind::VerificationFinished, format!("verification {}: {}", if report.passed { "passed" } else { "failed" }, first_line(&report.summary)), serde_json::json!({"passed": report.passed, "new_failures": report.new_failures, "targeted_failures": report.targeted_failures, "preexisting_failures": report.preexisting_failures, "goal_unmet": report.goal_unmet}));

        // Judge.
        if cancel.is_cancelled()
            || !self.advance(
                task,
                TaskStatus::Verifying,
                TaskStatus::Judging,
                "verification finished",
            )?
        {
            let end = cancelled("judging");
            self.remove_worktree(&worktree).await?;
            return end;
        }
        let diff = self.git.diff(&base, &head_sha, JUDGE_DIFF_BYTES).await?;
        let judge_provider = match &self.project.judge_model {
            Some(m) => Some(self.provider_for(m, ctx("judge"))?),
            None => None,
        };
        let input = orch_judge::JudgeInput {
            task,
            diff: &diff,
            diff_stat: &diff_stat,
            report: &report,
        };
        let judging = orch_judge::judge(
            judge_provider
                .as_ref()
                .map(|(p, m)| (p.as_ref(), m.as_str())),
            &input,
            self.project.judge_min_score,
        );
        let judged = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let end = cancelled("judging");
                self.remove_worktree(&worktree).await?;
                return end;
            }
            judged = judging => judged,
        };
        let (verdict, judge_usage) = match judged {
            Ok(v) => v,
            Err(e) => (
                Verdict {
                    passed: false,
                    score: None,
                    reasoning: format!("the judge could not be consulted: {e}"),
                    issues: vec![format!("judge error: {e}")],
                    gates: orch_judge::gates(&report),
                },
                Usage::default(),
            ),
        };
        self.store.add_task_usage(&task.id, &judge_usage)?;
        let verdict_path = self
            .paths
            .verdicts(&name)
            .join(format!("{tid}-{}.md", attempt.number));
        let mut verdict_md = orch_judge::render_markdown(&input, &verdict);
        verdict_md.push_str("\n## Verification output\n\n");
        verdict_md.push_str(&report_markdown(&report));
        write_atomic(&verdict_path, &verdict_md)
            .map_err(io_err(format!("writing {}", verdict_path.display())))?;
        self.rec.note(
            Some(&tid),
            EventKind::VerdictRecorded,
            format!("verdict: {}{}", if verdict.passed { "passed" } else { "failed" }, verdict.score.map(|s| format!(" (score {s:.1})")).unwrap_or_default()),
            serde_json::json!({"passed": verdict.passed, "score": verdict.score, "issues": verdict.issues, "file": verdict_path.display().to_string()}),
        );

        self.remove_worktree(&worktree).await?;
        let head_kept = head.clone();
        if verdict.passed {
            if cancel.is_cancelled()
                || !self.advance(
                    task,
                    TaskStatus::Judging,
                    TaskStatus::Passed,
                    "verdict passed",
                )?
            {
                return cancelled("judging");
            }
            write_audit("passed", &diff_stat, Some(&report), None)?;
            self.store.finish_attempt(
                attempt.id,
                &finish(
                    AttemptStatus::Passed,
                    Some(head_sha),
                    Some(summary),
                    Some(diff_stat),
                    Some(&report),
                    Some(&verdict),
                    None,
                ),
            )?;
            self.store.set_feedback(&task.id, None)?;
            self.store.reset_consecutive_failures(&name)?;
            self.rec.note(
                Some(&tid),
                EventKind::MergeQueued,
                "queued for merge",
                serde_json::json!({"branch": task.branch()}),
            );
            Ok(AttemptEnd::Passed)
        } else {
            let mut feedback = feedback_text(&report, &verdict);
            if !refused.is_empty() {
                feedback.push('\n');
                feedback.push_str(&crate::changeset::feedback(&refused));
            }
            if let Some(h) = &head_kept {
                feedback.push_str(&format!(
                    "\nThis attempt's commit is kept as {} ({}); start from the current main.\n",
                    task.id.attempt_ref(attempt.number),
                    &h[..h.len().min(12)]
                ));
            }
            write_audit("failed", &diff_stat, Some(&report), Some(&feedback))?;
            let attempts = self.store.finish_attempt(
                attempt.id,
                &finish(
                    AttemptStatus::Failed,
                    head_kept,
                    Some(summary),
                    Some(diff_stat),
                    Some(&report),
                    Some(&verdict),
                    None,
                ),
            )?;
            self.store.set_feedback(&task.id, Some(&feedback))?;
            Ok(AttemptEnd::Failed { attempts })
        }
    }

    /// The architect role: before the worker starts, the architect model
    /// sees the task and the file tree and writes a short plan, which goes
    /// into the worker's prompt. A failed architect call is recorded and the
    /// worker goes on without a plan.
    async fn architect_plan(
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
        let answer = match self.provider_for(model, ctx) {
            Ok((provider, name)) => {
                let mut request = request;
                request.model = name;
                request.max_tokens = Some(2000);
                provider.chat(&request).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(r) if !r.message.content.trim().is_empty() => {
                self.rec.note(Some(tid), EventKind::StageStarted, "architect wrote a plan for the worker", serde_json::json!({"stage": "architect", "model": model.to_string(), "plan": r.message.content}));
                format!(
                    "\n## Plan from the architect\n\n{}\n",
                    r.message.content.trim()
                )
            }
            Ok(_) => String::new(),
            Err(e) => {
                self.rec.note(
                    Some(tid),
                    EventKind::Warning,
                    format!("architect {model} failed; the worker goes on without a plan: {e}"),
                    serde_json::json!({"stage": "architect"}),
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
            EventKind::StageStarted,
            format!("running the test command on base {short} to tell old failures from new"),
            serde_json::json!({"stage": "baseline", "commit": base}),
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
            EventKind::BaselineComputed,
            format!(
                "base {short}: {} failing test(s)",
                step.counts.as_ref().map(|c| c.failed).unwrap_or(0)
            ),
            serde_json::json!({"commit": base}),
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
                tail(&test.output_tail, 3000)
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

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
