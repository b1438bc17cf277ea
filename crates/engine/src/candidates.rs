//! Best-of-N candidates (`candidates = N`, per project or per task): a
//! round runs N attempts of one task at once, inside the task's worker
//! slot, each on its own branch (`orch/<task>-c<k>`) and worktree and each
//! through the usual stages (prepare → work → commit → verify → judge),
//! without moving the task's status: the round does that once, at its end.
//! Candidate k works with the k-th of `candidate_models` and
//! `candidate_workers` (cycling; empty = the usual routing and `worker`).
//! With `[projects.refine]` each candidate refines on its own branch (its
//! iterations on its own attempt row) and offers its best snapshot —
//! score, verdict, report, commit — to the round.
//!
//! When every candidate has ended:
//! - one or more passed their gates and their verdict: with two or more the
//!   judge model ranks them (`orch_judge::rank`, the `ranking` schema; an
//!   unusable ranking falls back to the scores, with a warning); one wins
//!   outright. The winner's commit becomes the task branch `orch/<task>`,
//!   which the merge queue lands; the others stay on their branches and
//!   their attempt refs, to be inspected.
//! - none passed: the task gets every candidate's feedback together for the
//!   next round.
//!
//! A round counts as one attempt against max_attempts, however many
//! candidates it ran: each candidate is an attempt row of its own (numbered
//! as usual, with its candidate number, branch and rank), and one row of
//! the round carries the count. Every candidate's model calls, and the
//! ranking's, are charged to the task, so max_budget_per_task_usd covers
//! them all. Loop detection compares rounds: two in a row whose failures
//! repeat stop the task (see `loops`).
//!
//! Why `orch/<task>-c<k>` and not `orch/<task>/c<k>`: git cannot hold a
//! branch `orch/<task>` and branches under `orch/<task>/` at once (a ref
//! cannot be both a file and a directory), and the task branch is what the
//! merge queue lands.

use super::refine::{Refined, Snapshot};
use super::{Committed, Run, Short};
use crate::attempt::{feedback_text, AttemptEnd};
use crate::cycle::Engine;
use crate::{EngineError, Result};
use orch_agent::{Worker, WorkerEnd, WorkerOutcome};
use orch_config::{Config, ModelRef, RefineConfig};
use orch_core::{AttemptStatus, Task, TaskStatus, Verdict, VerificationReport};
use orch_judge::ranking::{RankCandidate, RankMethod, Ranking, RANK_DIFF_BYTES};
use orch_protocol::{self as protocol, Stage};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What one candidate works with, and where.
pub(super) struct Slot {
    /// From 1.
    pub(super) candidate: u32,
    pub(super) branch: String,
    pub(super) worktree: PathBuf,
    /// Its worker model; None = the usual routing.
    pub(super) model: Option<ModelRef>,
    pub(super) worker: Arc<dyn Worker>,
}

/// The workers `candidate_workers` names, built (and checked) when the
/// engine starts, so a missing agent CLI is a configuration error before
/// any task is claimed.
pub(crate) fn candidate_workers(config: &Config, project: &str) -> Result<Vec<Arc<dyn Worker>>> {
    let pc = config
        .project_or_hint(project)
        .map_err(EngineError::Config)?;
    pc.candidate_workers
        .iter()
        .map(|kind| {
            orch_agent::external::factory::worker_of_kind(config, project, *kind)
                .map_err(EngineError::Config)
        })
        .collect()
}

/// How one candidate's stages ended.
enum Outcome<'a> {
    /// Judged; its row is finished with the round.
    Judged(Box<Judged<'a>>),
    /// The worker stopped without calling finish (a limit, a model failure,
    /// a question); its row is finished with the round.
    Unfinished(Box<(Run<'a>, WorkerOutcome)>),
    /// Cancelled or interrupted; its row is already recorded.
    Stopped,
    /// orch's own failure; its row, if it has one, is recorded as an error.
    Broken(EngineError),
}

/// A candidate that went through every stage.
struct Judged<'a> {
    run: Run<'a>,
    outcome: WorkerOutcome,
    committed: Committed,
    summary: String,
    report: VerificationReport,
    verdict: Verdict,
}

/// A candidate's end, decided with its round.
struct Decided {
    status: AttemptStatus,
    rank: Option<(u32, String)>,
    /// What it is told (and the next round), for one that did not pass.
    feedback: Option<String>,
}

impl Engine {
    /// Candidates per round for `task`: its own `candidates`, else the
    /// project's.
    pub(crate) fn candidate_count(&self, task: &Task) -> u32 {
        task.candidates
            .unwrap_or(self.project.candidates)
            .clamp(1, orch_core::MAX_CANDIDATES)
    }

    /// One round of best-of-N for `task` (see the module docs).
    pub(super) async fn best_of_n(
        &self,
        task: &Task,
        cancel: &CancellationToken,
    ) -> Result<AttemptEnd> {
        let n = self.candidate_count(task);
        let slots: Vec<Slot> = (1..=n).map(|k| self.slot(task, k)).collect::<Result<_>>()?;
        let infos: Vec<protocol::CandidateSlot> = slots
            .iter()
            .map(|s| protocol::CandidateSlot {
                candidate: s.candidate,
                model: s.model.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                worker: s.worker.name().to_string(),
                branch: s.branch.clone(),
            })
            .collect();
        let models: Vec<&str> = infos.iter().map(|i| i.model.as_str()).collect();
        self.rec.note(
            Some(task.id.as_str()),
            protocol::CandidatesStarted {
                candidates: n,
                slots: infos.clone(),
            },
            format!("{n} candidates started ({})", models.join(", ")),
        );
        let runs = slots
            .into_iter()
            .map(|slot| self.run_candidate(task, cancel, slot));
        let outcomes = futures_util::future::join_all(runs).await;
        self.end_round(task, cancel, outcomes).await
    }

    /// Candidate `k`'s branch, worktree, model and worker (`candidate_workers`
    /// first, else routing's: the task's own worker or the project's).
    fn slot(&self, task: &Task, k: u32) -> Result<Slot> {
        let i = (k - 1) as usize;
        let p = &self.project;
        let route = crate::routing::route(p, task, &self.meter.prices);
        let model = match p.candidate_models.len() {
            0 => route.model_for_attempt(task.attempts + 1).cloned(),
            len => Some(p.candidate_models[i % len].clone()),
        };
        let worker = match self.candidate_workers.len() {
            0 => self.worker_for(route.worker)?,
            len => self.candidate_workers[i % len].clone(),
        };
        let name = format!("{}-c{k}", task.id);
        Ok(Slot {
            candidate: k,
            branch: format!("{}-c{k}", task.branch()),
            worktree: self.paths.worktree(&p.name, &name),
            model,
            worker,
        })
    }

    async fn run_candidate<'a>(
        &'a self,
        task: &'a Task,
        cancel: &'a CancellationToken,
        slot: Slot,
    ) -> Outcome<'a> {
        match self.candidate_stages(task, cancel, slot).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Broken(e),
        }
    }

    /// The stages of one candidate, up to its verdict.
    async fn candidate_stages<'a>(
        &'a self,
        task: &'a Task,
        cancel: &'a CancellationToken,
        slot: Slot,
    ) -> Result<Outcome<'a>> {
        let run = self.prepare_in(task, cancel, Some(slot)).await?;
        if let Some(cfg) = self.project.refine {
            return self.refined_candidate(run, cfg).await;
        }
        let outcome = run.work().await?;
        let summary = match &outcome.end {
            WorkerEnd::Finished { summary } => summary.clone(),
            WorkerEnd::Cancelled => {
                run.cancelled(&outcome, Stage::Work).await?;
                return Ok(Outcome::Stopped);
            }
            _ => {
                self.remove_worktree(&run.worktree).await?;
                return Ok(Outcome::Unfinished(Box::new((run, outcome))));
            }
        };
        let committed = run.commit(&summary).await?;
        let Some(report) = run.verify(&outcome, &committed).await? else {
            return Ok(Outcome::Stopped);
        };
        let Some(verdict) = run.judge(&outcome, &committed, &report).await? else {
            return Ok(Outcome::Stopped);
        };
        self.remove_worktree(&run.worktree).await?;
        Ok(Outcome::Judged(Box::new(Judged {
            run,
            outcome,
            committed,
            summary,
            report,
            verdict,
        })))
    }

    /// A candidate that refines to a score: its best snapshot is what the
    /// round ranks.
    async fn refined_candidate<'a>(
        &'a self,
        mut run: Run<'a>,
        cfg: RefineConfig,
    ) -> Result<Outcome<'a>> {
        Ok(match run.refine_loop(cfg).await? {
            Refined::Cancelled => Outcome::Stopped,
            Refined::Unfinished(outcome) => {
                self.remove_worktree(&run.worktree).await?;
                Outcome::Unfinished(Box::new((run, outcome)))
            }
            Refined::Best(outcome, best) => {
                let Snapshot {
                    committed,
                    summary,
                    report,
                    verdict,
                    ..
                } = *best;
                Outcome::Judged(Box::new(Judged {
                    run,
                    outcome,
                    committed,
                    summary,
                    report,
                    verdict,
                }))
            }
        })
    }

    /// Decides the round: ranks the candidates that passed, lands the best
    /// on the task branch, records every candidate, and tells the task loop
    /// how the round went.
    async fn end_round(
        &self,
        task: &Task,
        cancel: &CancellationToken,
        outcomes: Vec<Outcome<'_>>,
    ) -> Result<AttemptEnd> {
        let mut judged = Vec::new();
        let mut unfinished = Vec::new();
        let mut broken = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Judged(j) => judged.push(*j),
                Outcome::Unfinished(u) => unfinished.push(*u),
                Outcome::Stopped => {}
                Outcome::Broken(e) => broken.push(e),
            }
        }
        if cancel.is_cancelled() {
            self.cancel_round(task, &judged, &unfinished, &broken)
                .await?;
            return Ok(AttemptEnd::Cancelled);
        }
        if judged.is_empty() && unfinished.is_empty() {
            // Every candidate was lost to orch's own failures (or stopped):
            // the loop records it as an infrastructure failure.
            return match broken.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(AttemptEnd::Cancelled),
            };
        }
        let (ranking, usage) = self.rank_round(task, &judged).await?;
        self.store.add_task_usage(&task.id, &usage)?;
        let winner = ranking
            .as_ref()
            .and_then(|r| r.order.first())
            .map(|r| r.candidate);
        if let Some(k) = winner {
            let Some(w) = judged.iter().find(|j| j.run.attempt.candidate == Some(k)) else {
                return Err(EngineError::Config(format!(
                    "the ranking named candidate {k}, which did not run"
                )));
            };
            self.git
                .set_branch(&task.branch(), &w.committed.head_sha)
                .await?;
            if !self.move_to_passed(task, k)? {
                self.cancel_round(task, &judged, &unfinished, &broken)
                    .await?;
                return Ok(AttemptEnd::Cancelled);
            }
        }
        let decided = self.decide(&judged, &unfinished, ranking.as_ref());
        self.record_round(&judged, &unfinished, &decided)?;
        self.record_broken(task, &broken)?;
        self.note_ranking(task, &judged, ranking.as_ref());
        if let Some(k) = winner {
            self.store.set_feedback(&task.id, None)?;
            self.store.reset_consecutive_failures(&self.project.name)?;
            self.rec.note(
                Some(task.id.as_str()),
                protocol::MergeQueued {
                    branch: task.branch(),
                },
                format!("candidate {k} queued for merge"),
            );
            return Ok(AttemptEnd::Passed);
        }
        self.round_failed(task, &judged, &unfinished, &decided, &broken)
    }

    /// Orders the candidates that passed; None when none did. Only this
    /// step talks to the ranking model, and only for two or more.
    async fn rank_round(
        &self,
        task: &Task,
        judged: &[Judged<'_>],
    ) -> Result<(Option<Ranking>, orch_core::Usage)> {
        let passed: Vec<&Judged<'_>> = judged.iter().filter(|j| j.verdict.passed).collect();
        if passed.is_empty() {
            return Ok((None, orch_core::Usage::default()));
        }
        let mut diffs = Vec::with_capacity(passed.len());
        for j in &passed {
            let diff = self
                .git
                .diff(&j.run.base, &j.committed.head_sha, RANK_DIFF_BYTES)
                .await?;
            diffs.push(diff);
        }
        let inputs: Vec<RankCandidate<'_>> = passed
            .iter()
            .zip(&diffs)
            .map(|(j, diff)| RankCandidate {
                candidate: j.run.attempt.candidate.unwrap_or(0),
                diff,
                diff_stat: &j.committed.diff_stat,
                verdict: &j.verdict,
                report: &j.report,
            })
            .collect();
        let provider = match (&self.project.judge_model, inputs.len()) {
            (Some(m), 2..) => {
                let ctx = crate::metered::CallContext {
                    role: "judge",
                    task_id: Some(task.id.to_string()),
                    attempt_id: None,
                };
                Some(self.provider_for(m, ctx)?)
            }
            _ => None,
        };
        let model = provider.as_ref().map(|(p, m)| (p.as_ref(), m.as_str()));
        let (ranking, usage) = orch_judge::rank(model, task, &inputs).await;
        Ok((Some(ranking), usage))
    }

    /// Running → verifying → judging → passed, once for the whole round;
    /// false when the task left those states (a cancel).
    fn move_to_passed(&self, task: &Task, winner: u32) -> Result<bool> {
        let steps = [
            (
                TaskStatus::Running,
                TaskStatus::Verifying,
                "candidates verified".to_string(),
            ),
            (
                TaskStatus::Verifying,
                TaskStatus::Judging,
                "candidates judged and ranked".to_string(),
            ),
            (
                TaskStatus::Judging,
                TaskStatus::Passed,
                format!("candidate {winner} ranked first"),
            ),
        ];
        for (from, to, note) in steps {
            if !self.store.transition(&task.id, &[from], to, &note)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The task was cancelled (or interrupted) under the round: every
    /// candidate still open is recorded so.
    async fn cancel_round(
        &self,
        task: &Task,
        judged: &[Judged<'_>],
        unfinished: &[(Run<'_>, WorkerOutcome)],
        broken: &[EngineError],
    ) -> Result<()> {
        for j in judged {
            j.run.cancelled(&j.outcome, Stage::Judge).await?;
        }
        for (run, outcome) in unfinished {
            run.cancelled(outcome, Stage::Work).await?;
        }
        self.record_broken(task, broken)
    }

    /// Each candidate's status, rank and feedback, in the order of
    /// `judged` then `unfinished`.
    fn decide(
        &self,
        judged: &[Judged<'_>],
        unfinished: &[(Run<'_>, WorkerOutcome)],
        ranking: Option<&Ranking>,
    ) -> Vec<Decided> {
        let mut out = Vec::new();
        for j in judged {
            let k = j.run.attempt.candidate.unwrap_or(0);
            let place = ranking.and_then(|r| {
                r.order
                    .iter()
                    .position(|x| x.candidate == k)
                    .map(|i| (i as u32 + 1, r.order[i].reason.clone()))
            });
            let feedback = (!j.verdict.passed).then(|| {
                let mut f = feedback_text(&j.report, &j.verdict);
                if !j.committed.refused.is_empty() {
                    f.push('\n');
                    f.push_str(&crate::changeset::feedback(&j.committed.refused));
                }
                f
            });
            out.push(Decided {
                status: if j.verdict.passed {
                    AttemptStatus::Passed
                } else {
                    AttemptStatus::Failed
                },
                rank: place,
                feedback,
            });
        }
        for (run, outcome) in unfinished {
            let (status, feedback) = match &outcome.end {
                WorkerEnd::AskedHuman { question } => (
                    AttemptStatus::NeedsHuman,
                    Some(format!("It asked: {question}")),
                ),
                _ => {
                    let Short { why, status, .. } = run.stopped_short(outcome);
                    (status, Some(why))
                }
            };
            out.push(Decided {
                status,
                rank: None,
                feedback,
            });
        }
        out
    }

    /// Finishes every candidate's row; exactly one passed or failed row of
    /// the round counts against max_attempts (the winner's when there is
    /// one).
    fn record_round(
        &self,
        judged: &[Judged<'_>],
        unfinished: &[(Run<'_>, WorkerOutcome)],
        decided: &[Decided],
    ) -> Result<()> {
        let counts =
            |d: &Decided| matches!(d.status, AttemptStatus::Passed | AttemptStatus::Failed);
        let counted = decided
            .iter()
            .position(|d| d.rank.as_ref().is_some_and(|(r, _)| *r == 1))
            .or_else(|| decided.iter().position(counts));
        for (i, (j, d)) in judged.iter().zip(decided).enumerate() {
            let run = &j.run;
            let name = match &d.rank {
                Some((1, _)) => "passed, ranked first".to_string(),
                Some((r, _)) => format!("passed, ranked {r}"),
                None => "failed".to_string(),
            };
            run.write_audit(
                &j.outcome,
                &name,
                &j.committed.diff_stat,
                Some(&j.report),
                d.feedback.as_deref(),
            )?;
            let mut fin = run.finish(&j.outcome, d.status);
            fin.head_commit = match d.status {
                AttemptStatus::Passed => Some(j.committed.head_sha.clone()),
                _ => j.committed.head.clone(),
            };
            fin.summary = Some(j.summary.clone());
            fin.diff_stat = Some(j.committed.diff_stat.clone());
            fin.verification = serde_json::to_value(&j.report).ok();
            fin.verdict = serde_json::to_value(&j.verdict).ok();
            fin.counted = counted == Some(i);
            if let Some((r, why)) = &d.rank {
                fin.rank = Some(*r);
                fin.rank_reason = Some(why.clone());
            }
            self.store.finish_attempt(run.attempt.id, &fin)?;
        }
        let offset = judged.len();
        for (i, ((run, outcome), d)) in unfinished.iter().zip(&decided[offset..]).enumerate() {
            let name = match d.status {
                AttemptStatus::NeedsHuman => "needs a person",
                _ => "failed",
            };
            run.write_audit(outcome, name, "", None, d.feedback.as_deref())?;
            let mut fin = run.finish(outcome, d.status);
            fin.error = d.feedback.clone();
            fin.counted = counted == Some(offset + i);
            self.store.finish_attempt(run.attempt.id, &fin)?;
        }
        Ok(())
    }

    /// Rows of candidates orch itself failed on are still running: they end
    /// as errors (not counted), with what went wrong.
    fn record_broken(&self, task: &Task, broken: &[EngineError]) -> Result<()> {
        if broken.is_empty() {
            return Ok(());
        }
        let message = broken
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        for a in self.store.attempts(&task.id)? {
            if a.status == AttemptStatus::Running && a.candidate.is_some() {
                let mut fin = orch_state::AttemptFinish::new(AttemptStatus::Error);
                fin.error = Some(format!("failed inside orch: {message}"));
                self.store.finish_attempt(a.id, &fin)?;
            }
        }
        self.rec.note(
            Some(task.id.as_str()),
            protocol::Warning::default(),
            format!(
                "{} candidate(s) failed inside orch: {message}",
                broken.len()
            ),
        );
        Ok(())
    }

    fn note_ranking(&self, task: &Task, judged: &[Judged<'_>], ranking: Option<&Ranking>) {
        let attempt_of = |k: u32| {
            judged
                .iter()
                .find(|j| j.run.attempt.candidate == Some(k))
                .map(|j| j.run.attempt.number)
                .unwrap_or(0)
        };
        let (payload, message) = match ranking {
            Some(r) => {
                let order: Vec<u32> = r.order.iter().map(|x| x.candidate).collect();
                let listed = order
                    .iter()
                    .map(|k| format!("c{k}"))
                    .collect::<Vec<_>>()
                    .join(" > ");
                let message = match &r.warning {
                    Some(w) => format!("candidates ranked {listed} ({}); {w}", r.method.as_str()),
                    None => format!("candidates ranked {listed} ({})", r.method.as_str()),
                };
                let payload = protocol::CandidatesRanked {
                    attempts: order.iter().map(|k| attempt_of(*k)).collect(),
                    reasons: r.order.iter().map(|x| x.reason.clone()).collect(),
                    winner: order.first().copied(),
                    order,
                    method: r.method.as_str().to_string(),
                    warning: r.warning.clone(),
                };
                (payload, message)
            }
            None => (
                protocol::CandidatesRanked {
                    method: "none".into(),
                    ..Default::default()
                },
                "no candidate passed; nothing to rank".to_string(),
            ),
        };
        // A refused ranking is worth a warning of its own.
        let refused = ranking.filter(|r| r.method == RankMethod::Scores);
        if let Some(w) = refused.and_then(|r| r.warning.as_ref()) {
            self.rec.note(
                Some(task.id.as_str()),
                protocol::Warning::at(Stage::Judge),
                format!("ranking: {w}"),
            );
        }
        self.rec.note(Some(task.id.as_str()), payload, message);
    }

    /// No candidate passed: the round's outcome, worst first — the task's
    /// budget spent, the project paused, a question for a person, a failed
    /// round (with every candidate's feedback), or orch's own failures.
    fn round_failed(
        &self,
        task: &Task,
        judged: &[Judged<'_>],
        unfinished: &[(Run<'_>, WorkerOutcome)],
        decided: &[Decided],
        broken: &[EngineError],
    ) -> Result<AttemptEnd> {
        let shorts: Vec<Short> = unfinished
            .iter()
            .filter(|(_, o)| !matches!(o.end, WorkerEnd::AskedHuman { .. }))
            .map(|(run, o)| run.stopped_short(o))
            .collect();
        if let Some(s) = shorts.iter().find(|s| s.budget) {
            return Ok(AttemptEnd::OutOfBudget {
                reason: format!(
                    "stopped before going over its budget (the {} candidates share it): {}",
                    decided.len(),
                    s.why
                ),
            });
        }
        if shorts.iter().any(|s| s.paused) {
            return Ok(AttemptEnd::Paused);
        }
        let question = unfinished.iter().find_map(|(_, o)| match &o.end {
            WorkerEnd::AskedHuman { question } => Some(question.clone()),
            _ => None,
        });
        if let Some(q) = question {
            return Ok(match self.store.ask_human(&task.id, &q) {
                Ok(()) => AttemptEnd::NeedsHuman,
                Err(orch_state::StateError::InvalidTransition { .. }) => AttemptEnd::Cancelled,
                Err(e) => return Err(e.into()),
            });
        }
        let failed = decided.iter().any(|d| d.status == AttemptStatus::Failed);
        if !failed {
            let message = shorts
                .iter()
                .map(|s| s.why.clone())
                .chain(broken.iter().map(|e| e.to_string()))
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(AttemptEnd::Infra { message });
        }
        let feedback = round_feedback(task, judged, unfinished, decided);
        self.store.set_feedback(&task.id, Some(&feedback))?;
        let attempts = self.store.task(task.id.as_str())?.attempts;
        Ok(AttemptEnd::Failed { attempts })
    }
}

/// What the next round is told: each candidate's failure, by candidate.
fn round_feedback(
    task: &Task,
    judged: &[Judged<'_>],
    unfinished: &[(Run<'_>, WorkerOutcome)],
    decided: &[Decided],
) -> String {
    let runs = judged
        .iter()
        .map(|j| (&j.run, j.committed.head.as_deref()))
        .chain(unfinished.iter().map(|(r, _)| (r, None)));
    let mut f = format!(
        "None of the {} candidates of the last round passed. What each one got wrong:\n",
        decided.len()
    );
    for ((run, head), d) in runs.zip(decided) {
        let Some(text) = &d.feedback else { continue };
        let k = run.attempt.candidate.unwrap_or(0);
        f.push_str(&format!(
            "\n### Candidate {k} (attempt {})\n\n{}\n",
            run.attempt.number,
            text.trim()
        ));
        if let Some(h) = head {
            f.push_str(&format!(
                "\nIts commit is kept as {} ({}).\n",
                task.id.attempt_ref(run.attempt.number),
                &h[..h.len().min(12)]
            ));
        }
    }
    f.push_str("\nStart again from the current main.\n");
    f
}
