//! One attempt, in named stages: prepare (worktree, prompts, architect) →
//! work (the agent loop) → commit (the change set checked at the limits,
//! the commit kept on its attempt ref) → verify → judge → conclude. Each
//! stage checks the task's cancel token and the result of its state
//! transition; a task that left its expected state ends the attempt as
//! cancelled.

use crate::attempt::{feedback_text, first_line, AttemptEnd, EventObserver};
use crate::audit::{attempt_markdown, report_markdown, AttemptRecord};
use crate::cycle::Engine;
use crate::paths::write_atomic;
use crate::{io_err, Result};
use orch_agent::{WorkerEnd, WorkerOutcome};
use orch_core::{Attempt, AttemptStatus, Task, TaskStatus, Usage, Verdict, VerificationReport};
use orch_protocol::{self as protocol, Stage};
use orch_state::AttemptFinish;
use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Refinement to a score drives these stages in a loop; as a child
/// module it uses them without widening their visibility.
#[path = "refine.rs"]
mod refine;

/// Best-of-N runs these stages for several candidates at once, on their
/// own branches, and concludes the round itself.
#[path = "candidates.rs"]
mod candidates;
pub(crate) use candidates::candidate_workers;

/// Largest diff shown to the judge.
const JUDGE_DIFF_BYTES: usize = 60_000;

/// An attempt in progress: what every stage reads.
struct Run<'a> {
    engine: &'a Engine,
    task: &'a Task,
    cancel: &'a CancellationToken,
    attempt: Attempt,
    base: String,
    worktree: PathBuf,
    started: Instant,
    system_prompt: String,
    task_prompt: String,
    audit_md: PathBuf,
    /// A best-of-N candidate's slot; its stages leave the task's status to
    /// the round (see `advance`).
    slot: Option<candidates::Slot>,
    /// The worktree is filled while the worker's first model call is under
    /// way; the worker's tools wait at this gate.
    workspace: orch_agent::Workspace,
    /// Filling the worktree, until `work` has seen it end.
    fill: Fill,
    /// Checks run while the model thinks (built-in agent, plain attempts).
    early: Option<std::sync::Arc<crate::early::EarlyVerify>>,
}

/// Filling an attempt's worktree, until it has been awaited.
type Fill =
    std::sync::Mutex<Option<tokio::task::JoinHandle<std::result::Result<(), orch_git::GitError>>>>;

/// What the commit stage produced.
struct Committed {
    /// The new commit, None when the attempt changed nothing.
    head: Option<String>,
    /// `head`, or the base when nothing was committed.
    head_sha: String,
    diff_stat: String,
    refused: Vec<crate::changeset::Refusal>,
    /// The early run's results, when what was committed is exactly the
    /// snapshot it checked.
    early_steps: Option<Vec<orch_core::StepResult>>,
}

/// How a worker that did not call finish stopped (see `stopped_short`).
struct Short {
    /// What the next attempt (or a person) is told.
    why: String,
    /// The task's budget refused a call: retrying cannot help.
    budget: bool,
    /// The project's daily budget paused it: not counted.
    paused: bool,
    /// A provider outage: not the worker's fault, not counted.
    outage: bool,
    /// How the attempt is recorded.
    status: AttemptStatus,
}

impl Engine {
    /// Runs one attempt of `task` through every stage.
    pub(crate) async fn attempt(
        &self,
        task: &Task,
        cancel: &CancellationToken,
    ) -> Result<AttemptEnd> {
        if self.candidate_count(task) > 1 {
            return self.best_of_n(task, cancel).await;
        }
        let run = self.prepare(task, cancel).await?;
        if let Some(cfg) = self.project.refine {
            return run.refine(cfg).await;
        }
        let outcome = run.work().await?;
        let summary = match &outcome.end {
            WorkerEnd::Finished { summary } => summary.clone(),
            _ => return run.unfinished(&outcome).await,
        };
        let committed = run.commit(&summary).await?;
        let Some(report) = run.verify(&outcome, &committed).await? else {
            return Ok(AttemptEnd::Cancelled);
        };
        let Some(verdict) = run.judge(&outcome, &committed, &report).await? else {
            return Ok(AttemptEnd::Cancelled);
        };
        run.engine.remove_worktree(&run.worktree).await?;
        run.conclude(&outcome, committed, summary, &report, &verdict)
    }

    /// Stage 1: a fresh worktree on the task branch from current main, the
    /// prompts, and the architect's plan when one is configured.
    async fn prepare<'a>(
        &'a self,
        task: &'a Task,
        cancel: &'a CancellationToken,
    ) -> Result<Run<'a>> {
        self.prepare_in(task, cancel, None).await
    }

    /// [`Self::prepare`], for a best-of-N candidate when `slot` is set: its
    /// own branch, worktree and attempt row, and the round's number in the
    /// prompt (a round counts as one attempt).
    async fn prepare_in<'a>(
        &'a self,
        task: &'a Task,
        cancel: &'a CancellationToken,
        slot: Option<candidates::Slot>,
    ) -> Result<Run<'a>> {
        let tid = task.id.as_str();
        let base = self.git.rev_parse(&self.main_branch).await?;
        let (attempt, worktree, branch) = match &slot {
            Some(s) => (
                self.store.start_candidate(
                    &task.id,
                    &base,
                    &orch_state::CandidateStart {
                        candidate: s.candidate,
                        round: task.attempts + 1,
                        branch: &s.branch,
                    },
                )?,
                s.worktree.clone(),
                s.branch.clone(),
            ),
            None => (
                self.store.start_attempt(&task.id, &base)?,
                self.paths.worktree(&self.project.name, tid),
                task.branch(),
            ),
        };
        let (workspace, fill) = self.fill_worktree(&worktree, &branch, &base);
        let early = (slot.is_none() && self.project.early_verify).then(|| {
            std::sync::Arc::new(crate::early::EarlyVerify::new(
                self,
                worktree.clone(),
                self.early_permits.clone(),
            ))
        });
        let system_prompt =
            crate::prompts::worker_system_prompt(task.task_type, &self.project.test_command);
        let shown = match slot {
            Some(_) => task.attempts + 1,
            None => attempt.number,
        };
        let mut task_prompt =
            crate::prompts::worker_task_prompt(task, shown, self.project.max_attempts);
        if let Some(architect) = &self.project.architect_model {
            // The architect reads the worktree.
            Self::await_fill(&fill).await?;
            let ctx = self.call_context("architect", task, &attempt);
            let plan = self
                .architect_plan(architect, task, &task_prompt, &worktree, ctx)
                .await;
            task_prompt.push_str(&plan);
        }
        let audit_md = self
            .paths
            .attempts(&self.project.name)
            .join(format!("{tid}-{}.md", attempt.number));
        Ok(Run {
            engine: self,
            task,
            cancel,
            attempt,
            base,
            worktree,
            started: Instant::now(),
            system_prompt,
            task_prompt,
            audit_md,
            slot,
            workspace,
            fill,
            early,
        })
    }

    /// Starts filling `worktree` on `branch` at `base` without waiting for
    /// it: the gate the worker waits at, and the filling to await later.
    fn fill_worktree(
        &self,
        worktree: &std::path::Path,
        branch: &str,
        base: &str,
    ) -> (orch_agent::Workspace, Fill) {
        let (filled, workspace) = orch_agent::Workspace::pending();
        let (git, dir, branch, base) = (
            self.git.clone(),
            worktree.to_path_buf(),
            branch.to_string(),
            base.to_string(),
        );
        let handle = tokio::spawn(async move {
            let result = git.worktree_add(&dir, &branch, &base).await;
            filled.done(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            result
        });
        (workspace, std::sync::Mutex::new(Some(handle)))
    }

    /// Waits for the worktree to be filled (at once when it was already
    /// awaited); its error is the attempt's.
    async fn await_fill(fill: &Fill) -> Result<()> {
        let handle = fill.lock().ok().and_then(|mut h| h.take());
        match handle {
            None => Ok(()),
            Some(h) => h
                .await
                .map_err(|e| {
                    crate::EngineError::Config(format!("filling the worktree panicked: {e}"))
                })?
                .map_err(Into::into),
        }
    }

    /// The worker of `kind` (routing's choice for a task): the project's own,
    /// built when the engine started, or the one a task names, built and
    /// checked now (a CLI that is not there is a configuration error).
    pub(crate) fn worker_for(
        &self,
        kind: orch_config::WorkerKind,
    ) -> Result<std::sync::Arc<dyn orch_agent::Worker>> {
        if kind == self.project.worker {
            return Ok(self.worker.clone());
        }
        orch_agent::external::factory::worker_for_task(&self.config, &self.project.name, kind)
            .map_err(|e| crate::EngineError::Config(format!("the task's `worker`: {e}")))
    }

    fn call_context(
        &self,
        role: &'static str,
        task: &Task,
        attempt: &Attempt,
    ) -> crate::metered::CallContext {
        crate::metered::CallContext {
            role,
            task_id: Some(task.id.as_str().to_string()),
            attempt_id: Some(attempt.id),
        }
    }
}

impl Run<'_> {
    fn tid(&self) -> &str {
        self.task.id.as_str()
    }

    /// Stage 2: the agent loop in the sandbox; its transcript goes to the
    /// audit trail whatever happens next. The worktree is there when this
    /// returns, whatever the worker did (a worker may finish without ever
    /// touching it); failing to fill it fails the attempt as before.
    async fn work(&self) -> Result<WorkerOutcome> {
        let worked = self.run_worker().await;
        Engine::await_fill(&self.fill).await?;
        worked
    }

    async fn run_worker(&self) -> Result<WorkerOutcome> {
        let e = self.engine;
        let route = crate::routing::route(&e.project, self.task, &e.meter.prices);
        let routed = || {
            route
                .model_for_attempt(self.attempt.number)
                .cloned()
                .unwrap_or_else(|| e.project.worker_model.clone())
        };
        // A candidate may have its own model and worker.
        let slot = self.slot.as_ref();
        let worker_model = slot.and_then(|s| s.model.clone()).unwrap_or_else(routed);
        let worker = match slot {
            Some(s) => s.worker.clone(),
            None => e.worker_for(route.worker)?,
        };
        let ctx = e.call_context("worker", self.task, &self.attempt);
        let (provider, model) = e.provider_for(&worker_model, ctx)?;
        e.rec.note(
            Some(self.tid()),
            protocol::StageStarted {
                attempt: Some(self.attempt.number),
                model: Some(worker_model.to_string()),
                worker: Some(worker.name().to_string()),
                workflow: Some(route.workflow.as_str().to_string()),
                ..protocol::StageStarted::new(Stage::Work)
            },
            format!(
                "attempt {}: worker {worker_model} started",
                self.attempt.number
            ),
        );
        let started = Instant::now();
        let mut spec = e.worker_spec(
            self.task,
            (provider, model),
            &self.worktree,
            (&self.system_prompt, &self.task_prompt),
            self.cancel,
        );
        spec.workspace = self.workspace.clone();
        spec.interlude = self
            .early
            .clone()
            .map(|e| e as std::sync::Arc<dyn orch_agent::Interlude>);
        let observer = EventObserver {
            rec: e.rec.clone(),
            task: self.tid().to_string(),
            attempt_id: self.attempt.id,
            attempt: self.attempt.number,
        };
        let outcome = worker.run(spec, &observer).await;
        let finished = matches!(outcome.end, WorkerEnd::Finished { .. });
        self.stage_finished(Stage::Work, started, finished);
        e.store.add_task_usage(&self.task.id, &outcome.usage)?;
        let json = serde_json::to_string_pretty(&outcome.transcript).unwrap_or_default();
        write_atomic(&self.audit_md.with_extension("json"), &json)
            .map_err(io_err("writing the attempt transcript"))?;
        Ok(outcome)
    }

    /// Writes the attempt's markdown file.
    fn write_audit(
        &self,
        outcome: &WorkerOutcome,
        outcome_name: &str,
        diff_stat: &str,
        report: Option<&VerificationReport>,
        feedback: Option<&str>,
    ) -> Result<()> {
        let md = attempt_markdown(&AttemptRecord {
            task: self.task,
            attempt: &self.attempt,
            outcome: outcome_name,
            system_prompt: &self.system_prompt,
            task_prompt: &self.task_prompt,
            transcript: &outcome.transcript,
            diff_stat,
            usage: outcome.usage,
            turns: outcome.turns,
            duration_ms: self.started.elapsed().as_millis() as u64,
            report,
            feedback,
        });
        write_atomic(&self.audit_md, &md)
            .map_err(io_err(format!("writing {}", self.audit_md.display())))
    }

    /// The attempt's end record, with the worker's usage and turns.
    fn finish(&self, outcome: &WorkerOutcome, status: AttemptStatus) -> AttemptFinish {
        let mut fin = AttemptFinish::new(status);
        fin.usage = outcome.usage;
        fin.turns = outcome.turns;
        fin.audit_path = Some(self.audit_md.display().to_string());
        fin
    }

    /// Records that `stage`, begun at `started`, ended.
    fn stage_finished(&self, stage: Stage, started: Instant, ok: bool) {
        let number = self.attempt.number;
        self.engine.rec.note(
            Some(self.tid()),
            protocol::StageFinished::new(stage, Some(number), started.elapsed(), ok),
            format!(
                "attempt {number}: {stage} {}",
                if ok { "done" } else { "did not pass" }
            ),
        );
    }

    /// Ends the attempt as cancelled during `stage` and frees the worktree.
    async fn cancelled(&self, outcome: &WorkerOutcome, stage: Stage) -> Result<AttemptEnd> {
        // The token is tripped by a person's cancel, and also by a shutdown
        // or the patrol, which interrupt (the store records which).
        let by_person = self.engine.store.task(self.tid())?.status == TaskStatus::Cancelled;
        let (outcome_name, verb) = if by_person {
            ("cancelled", "cancelled")
        } else {
            ("interrupted", "interrupted")
        };
        self.write_audit(outcome, outcome_name, "", None, None)?;
        let during = match stage {
            Stage::Verify => "verification",
            Stage::Judge => "judging",
            other => other.as_str(),
        };
        let why = format!("{verb} during {during}");
        let mut fin = self.finish(outcome, AttemptStatus::Cancelled);
        fin.error = Some(why.clone());
        self.engine.store.finish_attempt(self.attempt.id, &fin)?;
        let (attempt_id, number) = (self.attempt.id, self.attempt.number);
        let payload: protocol::Payload = if by_person {
            protocol::Cancelled {
                attempt_id,
                number,
                stage: Some(stage),
            }
            .into()
        } else {
            protocol::AttemptInterrupted {
                attempt_id,
                number,
                reason: why.clone(),
                stage: Some(stage),
            }
            .into()
        };
        self.engine.rec.note(
            Some(self.tid()),
            payload,
            format!("attempt {number} stopped: {why}"),
        );
        self.engine.remove_worktree(&self.worktree).await?;
        Ok(AttemptEnd::Cancelled)
    }

    /// True when the attempt may go on into `to`: not cancelled, and the
    /// task was still in `from`.
    fn advance(&self, from: TaskStatus, to: TaskStatus, note: &str) -> Result<bool> {
        if self.cancel.is_cancelled() {
            return Ok(false);
        }
        if self.slot.is_some() {
            // N candidates cannot all move the task; the round does, once.
            return Ok(true);
        }
        Ok(self
            .engine
            .store
            .transition(&self.task.id, &[from], to, note)?)
    }

    /// The worker stopped without calling finish: a question, a cancel, a
    /// limit, or a model failure.
    async fn unfinished(&self, outcome: &WorkerOutcome) -> Result<AttemptEnd> {
        let e = self.engine;
        match &outcome.end {
            WorkerEnd::Cancelled => return self.cancelled(outcome, Stage::Work).await,
            WorkerEnd::AskedHuman { question } => {
                self.write_audit(outcome, "needs a person", "", None, None)?;
                let fin = self.finish(outcome, AttemptStatus::NeedsHuman);
                e.store.finish_attempt(self.attempt.id, &fin)?;
                let asked = e.store.ask_human(&self.task.id, question);
                e.remove_worktree(&self.worktree).await?;
                return match asked {
                    Ok(()) => Ok(AttemptEnd::NeedsHuman),
                    // Cancelled while the worker was asking.
                    Err(orch_state::StateError::InvalidTransition { .. }) => {
                        Ok(AttemptEnd::Cancelled)
                    }
                    Err(err) => Err(err.into()),
                };
            }
            _ => {}
        }
        let Short {
            why,
            budget,
            paused,
            outage,
            status,
        } = self.stopped_short(outcome);
        self.write_audit(outcome, "failed", "", None, Some(&why))?;
        let mut fin = self.finish(outcome, status);
        fin.error = Some(why.clone());
        let attempts = e.store.finish_attempt(self.attempt.id, &fin)?;
        e.remove_worktree(&self.worktree).await?;
        Ok(if budget {
            AttemptEnd::OutOfBudget {
                reason: format!("stopped before going over its budget: {why}"),
            }
        } else if paused {
            AttemptEnd::Paused
        } else if outage {
            AttemptEnd::Infra { message: why }
        } else {
            e.store.set_feedback(&self.task.id, Some(&why))?;
            AttemptEnd::Failed { attempts }
        })
    }

    /// Why the worker stopped without calling finish (a limit, a model
    /// failure), and what that means for the attempt.
    fn stopped_short(&self, outcome: &WorkerOutcome) -> Short {
        let p = &self.engine.project;
        let why = match &outcome.end {
            WorkerEnd::TurnLimit => format!("The worker used all {} turns (max_turns) without calling finish. Work in fewer, larger steps.", p.max_turns),
            WorkerEnd::TimedOut => format!("The worker ran out of time ({} s, worker_timeout_seconds) before calling finish.", p.worker_timeout_seconds),
            WorkerEnd::Stuck { detail } => format!("The worker was stopped as stuck: {detail}"),
            WorkerEnd::ModelError { message } => format!("The model call failed: {message}"),
            _ => String::new(),
        };
        let refused_for = |marker: &str| matches!(&outcome.end, WorkerEnd::ModelError { message } if message.contains(marker));
        let budget = refused_for(crate::metered::TASK_BUDGET_REACHED);
        let paused = refused_for(crate::metered::DAILY_BUDGET_REACHED);
        let outage = matches!(outcome.end, WorkerEnd::ModelError { .. }) && !budget && !paused;
        let status = if outage {
            // A provider outage (retries exhausted, breaker open) is not the
            // worker's fault: no counted attempt, no feedback.
            AttemptStatus::Error
        } else if paused {
            // Stopped from outside, like a crash: not counted.
            AttemptStatus::Interrupted
        } else {
            AttemptStatus::Failed
        };
        Short {
            why,
            budget,
            paused,
            outage,
            status,
        }
    }

    /// Stage 3: the commit boundary. Changes that break the task's limits
    /// are reverted and recorded; the rest is committed and kept on the
    /// attempt's ref whatever happens next.
    async fn commit(&self, summary: &str) -> Result<Committed> {
        let e = self.engine;
        let early = match &self.early {
            Some(early) => early.finish(self.cancel).await,
            None => None,
        };
        let (snapshot, early_steps) = match early {
            Some(r) => (Some(r.snapshot), Some(r.steps)),
            None => (None, None),
        };
        let refused = e
            .enforce_change_set(self.task, self.attempt.number, &self.worktree, snapshot)
            .await?;
        // A refusal reverted part of the snapshot: its checks do not count.
        // Nor does a failure: the early run saw the work uncommitted (HEAD
        // still at the base), and a check such as `git diff --exit-code`
        // fails there and passes on the commit. A pass stands.
        let early_steps = early_steps.filter(|steps| {
            refused.is_empty() && steps.iter().all(orch_core::StepResult::succeeded)
        });
        let message = format!(
            "orch: {}\n\nTask: {}\nAttempt: {}\n\n{summary}",
            self.task.title,
            self.tid(),
            self.attempt.number
        );
        // The boundary staged what may be committed; no second add.
        let head = e.git.commit_staged(&self.worktree, &message).await?;
        if let Some(h) = &head {
            let refname = self.task.id.attempt_ref(self.attempt.number);
            e.git.keep_ref(&refname, h).await?;
        }
        let head_sha = head.clone().unwrap_or_else(|| self.base.clone());
        let diff_stat = e.git.diff_stat(&self.base, &head_sha).await?;
        Ok(Committed {
            head,
            head_sha,
            diff_stat,
            refused,
            early_steps,
        })
    }

    /// Stage 4: the project's own commands in the sandbox, assessed against
    /// the task's goal. None when the attempt was cancelled.
    async fn verify(
        &self,
        outcome: &WorkerOutcome,
        c: &Committed,
    ) -> Result<Option<VerificationReport>> {
        let e = self.engine;
        if !self.advance(
            TaskStatus::Running,
            TaskStatus::Verifying,
            "worker finished",
        )? {
            self.cancelled(outcome, Stage::Verify).await?;
            return Ok(None);
        }
        let started = Instant::now();
        let steps = match &c.early_steps {
            Some(steps) => steps.clone(),
            None => {
                let (commands, options) = (e.verify_commands(), e.verify_options());
                let run =
                    orch_verify::run_steps(e.sandbox.as_ref(), &self.worktree, &commands, &options);
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => {
                        self.cancelled(outcome, Stage::Verify).await?;
                        return Ok(None);
                    }
                    steps = run => steps?,
                }
            }
        };
        let baseline = e.baseline_if_needed(&self.base, &steps).await?;
        let goal = e.test_goal(self.task);
        let report = orch_verify::assess(steps, baseline.as_ref(), c.head.is_none(), &goal);
        let early = c.early_steps.is_some();
        e.rec.note(
            Some(self.tid()),
            protocol::VerificationFinished {
                early,
                ..protocol::VerificationFinished::from_report(
                    &report,
                    None,
                    None,
                    Some(&self.attempt),
                )
            },
            format!(
                "verification {}{}: {}",
                if report.passed { "passed" } else { "failed" },
                if early {
                    " (checked while the model was thinking)"
                } else {
                    ""
                },
                first_line(&report.summary)
            ),
        );
        self.stage_finished(Stage::Verify, started, report.passed);
        Ok(Some(report))
    }

    /// Stage 5: the deterministic gates, then the judge model. None when
    /// the attempt was cancelled.
    async fn judge(
        &self,
        outcome: &WorkerOutcome,
        c: &Committed,
        report: &VerificationReport,
    ) -> Result<Option<Verdict>> {
        let e = self.engine;
        if !self.advance(
            TaskStatus::Verifying,
            TaskStatus::Judging,
            "verification finished",
        )? {
            self.cancelled(outcome, Stage::Judge).await?;
            return Ok(None);
        }
        let started = Instant::now();
        let judge_provider = match &e.project.judge_model {
            Some(m) => Some(e.provider_for(m, e.call_context("judge", self.task, &self.attempt))?),
            None => None,
        };
        // Only the judge model reads the diff; the gates do not.
        let diff = match judge_provider {
            Some(_) => {
                e.git
                    .diff(&self.base, &c.head_sha, JUDGE_DIFF_BYTES)
                    .await?
            }
            None => String::new(),
        };
        let input = orch_judge::JudgeInput {
            task: self.task,
            diff: &diff,
            diff_stat: &c.diff_stat,
            report,
        };
        let model = judge_provider
            .as_ref()
            .map(|(p, m)| (p.as_ref(), m.as_str()));
        let judging = orch_judge::judge(model, &input, e.project.judge_min_score);
        let judged = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {
                self.cancelled(outcome, Stage::Judge).await?;
                return Ok(None);
            }
            judged = judging => judged,
        };
        let (verdict, usage) = judged.unwrap_or_else(|err| {
            let verdict = Verdict {
                passed: false,
                score: None,
                reasoning: format!("the judge could not be consulted: {err}"),
                issues: vec![format!("judge error: {err}")],
                gates: orch_judge::gates(report),
            };
            (verdict, Usage::default())
        });
        // No judge model, no usage: nothing to add.
        if usage != Usage::default() {
            e.store.add_task_usage(&self.task.id, &usage)?;
        }
        self.record_verdict(&input, &verdict, report)?;
        self.stage_finished(Stage::Judge, started, verdict.passed);
        Ok(Some(verdict))
    }

    fn record_verdict(
        &self,
        input: &orch_judge::JudgeInput<'_>,
        verdict: &Verdict,
        report: &VerificationReport,
    ) -> Result<()> {
        let e = self.engine;
        let path = e.paths.verdicts(&e.project.name).join(format!(
            "{}-{}.md",
            self.tid(),
            self.attempt.number
        ));
        let mut md = orch_judge::render_markdown(input, verdict);
        md.push_str("\n## Verification output\n\n");
        md.push_str(&report_markdown(report));
        write_atomic(&path, &md).map_err(io_err(format!("writing {}", path.display())))?;
        e.rec.note(
            Some(self.tid()),
            protocol::VerdictRecorded {
                passed: verdict.passed,
                score: verdict.score,
                issues: verdict.issues.clone(),
                file: path.display().to_string(),
                attempt_id: Some(self.attempt.id),
                attempt: Some(self.attempt.number),
            },
            format!(
                "verdict: {}{}",
                if verdict.passed { "passed" } else { "failed" },
                verdict
                    .score
                    .map(|s| format!(" (score {s:.1})"))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// Stage 6: passed work is queued for merge; failed work gets its
    /// feedback, and its commit stays on the attempt ref.
    fn conclude(
        &self,
        outcome: &WorkerOutcome,
        c: Committed,
        summary: String,
        report: &VerificationReport,
        verdict: &Verdict,
    ) -> Result<AttemptEnd> {
        let e = self.engine;
        let mut fin = self.finish(outcome, AttemptStatus::Passed);
        fin.head_commit = c.head.clone();
        fin.summary = Some(summary);
        fin.diff_stat = Some(c.diff_stat.clone());
        fin.verification = serde_json::to_value(report).ok();
        fin.verdict = serde_json::to_value(verdict).ok();
        if verdict.passed {
            if !self.advance(TaskStatus::Judging, TaskStatus::Passed, "verdict passed")? {
                self.write_audit(outcome, "cancelled", &c.diff_stat, Some(report), None)?;
                fin.status = AttemptStatus::Cancelled;
                fin.error = Some("cancelled during judging".into());
                e.store.finish_attempt(self.attempt.id, &fin)?;
                return Ok(AttemptEnd::Cancelled);
            }
            self.write_audit(outcome, "passed", &c.diff_stat, Some(report), None)?;
            fin.head_commit = Some(c.head_sha);
            e.store.finish_attempt(self.attempt.id, &fin)?;
            e.store.set_feedback(&self.task.id, None)?;
            e.store.reset_consecutive_failures(&e.project.name)?;
            e.rec.note(
                Some(self.tid()),
                protocol::MergeQueued {
                    branch: self.task.branch(),
                },
                "queued for merge",
            );
            return Ok(AttemptEnd::Passed);
        }
        let mut feedback = feedback_text(report, verdict);
        if !c.refused.is_empty() {
            feedback.push('\n');
            feedback.push_str(&crate::changeset::feedback(&c.refused));
        }
        if let Some(h) = &c.head {
            feedback.push_str(&format!(
                "\nThis attempt's commit is kept as {} ({}); start from the current main.\n",
                self.task.id.attempt_ref(self.attempt.number),
                &h[..h.len().min(12)]
            ));
        }
        self.write_audit(
            outcome,
            "failed",
            &c.diff_stat,
            Some(report),
            Some(&feedback),
        )?;
        fin.status = AttemptStatus::Failed;
        let attempts = e.store.finish_attempt(self.attempt.id, &fin)?;
        e.store.set_feedback(&self.task.id, Some(&feedback))?;
        Ok(AttemptEnd::Failed { attempts })
    }
}
