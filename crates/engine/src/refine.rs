//! Refinement to a score (`[projects.refine]`): one attempt is a series of
//! iterations on the same worktree and branch — work → commit → verify →
//! judge — each worker told what the verifier and the judge said about the
//! one before. The best-scoring snapshot is kept: an iteration that does
//! not beat it is undone (`git reset --hard` to the best commit, recorded as
//! a revert). Refinement stops when the best score reaches the threshold,
//! after `max_iterations`, after `plateau` iterations in a row without a
//! better score, or when the worker cannot go on (its model failed, the
//! budget ran out). The loop ([`Run::refine_loop`]) hands back the best
//! snapshot, its files and ref in place, without concluding: a lone
//! attempt ([`Run::refine`]) then concludes with it through the usual path
//! — queued for merge when its verdict passed, failed with feedback
//! otherwise — and a best-of-N candidate offers it to its round's ranking.
//!
//! The hard limits hold per iteration (max_turns, worker_timeout_seconds)
//! and across them (the task's budget, which the metered provider
//! enforces; the cancel token, checked between iterations).
//!
//! This is a child module of `stages`, so it drives the stages of [`Run`]
//! without widening their visibility.

use super::{Committed, Run};
use crate::attempt::{feedback_text, AttemptEnd};
use crate::paths::write_atomic;
use crate::{io_err, Result};
use orch_agent::{ToolRecord, WorkerEnd, WorkerOutcome};
use orch_config::RefineConfig;
use orch_core::refine::score_text;
use orch_core::{
    IterationOutcome, RefineIteration, TaskStatus, Usage, Verdict, VerificationReport,
};
use orch_protocol::{self as protocol, RefineStop, Stage};
use orch_providers::{Message, Role};
use std::path::{Path, PathBuf};

/// What an iteration offers the bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Offer {
    /// A judged snapshot and the judge's score (None: no score, e.g. a
    /// gate failed).
    Judged(Option<f64>),
    /// Nothing to judge: the worker stopped short, or changed nothing.
    Nothing,
}

/// Where refinement stands after some iterations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Standing {
    pub(crate) iterations: u32,
    /// The best snapshot's iteration and score; None before any judged one.
    pub(crate) best: Option<(u32, Option<f64>)>,
    /// Iterations in a row that did not beat the best score.
    pub(crate) without_improvement: u32,
}

/// What one iteration changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepResult {
    /// The iteration's snapshot is the new best.
    pub(crate) improved: bool,
    /// Refinement ends here, and why.
    pub(crate) stop: Option<RefineStop>,
}

/// A missing score ranks below every score.
fn rank(score: Option<f64>) -> f64 {
    score.unwrap_or(f64::NEG_INFINITY)
}

/// The bookkeeping of one iteration: the first judged snapshot is the
/// best, a later one only when its score is strictly higher (a tie keeps
/// the earlier snapshot); anything else counts towards the plateau.
pub(crate) fn step(s: &mut Standing, offer: Offer, cfg: &RefineConfig) -> StepResult {
    s.iterations += 1;
    let improved = match (offer, s.best) {
        (Offer::Nothing, _) => false,
        (Offer::Judged(_), None) => true,
        (Offer::Judged(score), Some((_, best))) => rank(score) > rank(best),
    };
    if let (true, Offer::Judged(score)) = (improved, offer) {
        s.best = Some((s.iterations, score));
        s.without_improvement = 0;
    } else {
        s.without_improvement += 1;
    }
    let best_score = s.best.and_then(|(_, score)| score);
    let stop = if best_score.is_some_and(|b| b >= cfg.threshold) {
        Some(RefineStop::Threshold)
    } else if s.without_improvement >= cfg.plateau {
        Some(RefineStop::Plateau)
    } else if s.iterations >= cfg.max_iterations {
        Some(RefineStop::MaxIterations)
    } else {
        None
    };
    StepResult { improved, stop }
}

/// The best snapshot so far: what the attempt concludes with.
pub(super) struct Snapshot {
    pub(super) iteration: u32,
    pub(super) committed: Committed,
    pub(super) summary: String,
    pub(super) report: VerificationReport,
    pub(super) verdict: Verdict,
}

/// How refinement ended, for the caller to conclude.
pub(super) enum Refined {
    /// Cancelled or interrupted; the attempt is already recorded.
    Cancelled,
    /// The worker stopped without finishing and there is no snapshot to go
    /// on with (the first iteration stopped short), or it asked a person.
    /// The attempt is not recorded yet and its worktree is still there.
    Unfinished(WorkerOutcome),
    /// Refinement stopped: the iterations' workers summed into one outcome,
    /// and the best snapshot. The branch, the attempt's ref, its verdict
    /// file and transcript are the best's; the worktree is gone.
    Best(WorkerOutcome, Box<Snapshot>),
}

impl Snapshot {
    /// What the judge and the verifier said about it.
    fn feedback(&self) -> String {
        let mut f = feedback_text(&self.report, &self.verdict);
        if !self.committed.refused.is_empty() {
            f.push('\n');
            f.push_str(&crate::changeset::feedback(&self.committed.refused));
        }
        f
    }
}

/// The iterations' workers summed into one outcome for the attempt.
#[derive(Default)]
struct Totals {
    usage: Usage,
    turns: u32,
    transcript: Vec<Message>,
    tools: Vec<ToolRecord>,
}

impl Totals {
    fn add(&mut self, o: &WorkerOutcome) {
        self.usage += o.usage;
        self.turns += o.turns;
        // Later iterations repeat the system prompt; their task prompt (with
        // the feedback) stays in the transcript.
        let skip = usize::from(
            !self.transcript.is_empty()
                && o.transcript.first().map(|m| m.role) == Some(Role::System),
        );
        self.transcript
            .extend(o.transcript.iter().skip(skip).cloned());
        self.tools.extend(o.tools.iter().cloned());
    }

    fn outcome(&self, end: WorkerEnd) -> WorkerOutcome {
        WorkerOutcome {
            end,
            transcript: self.transcript.clone(),
            usage: self.usage,
            turns: self.turns,
            tools: self.tools.clone(),
        }
    }
}

/// What became of one iteration before the bookkeeping.
enum Iterated {
    /// Judged: its snapshot, ready to be the best.
    Judged(Box<Snapshot>),
    /// It changed nothing on top of the best snapshot (why, for the next
    /// worker).
    Unchanged(String),
    /// The worker stopped short (a limit); its changes are dropped.
    Dropped(String),
    /// The worker cannot go on (its model failed); its changes are
    /// dropped and refinement stops with the best.
    Stopped(String),
    /// The attempt ended here (cancelled, a question for a person, or the
    /// first iteration's worker stopping short).
    Ended(Refined),
}

impl Run<'_> {
    /// Runs a lone attempt as refinement iterations, then concludes it with
    /// the best snapshot.
    pub(super) async fn refine(mut self, cfg: RefineConfig) -> Result<AttemptEnd> {
        match self.refine_loop(cfg).await? {
            Refined::Cancelled => Ok(AttemptEnd::Cancelled),
            Refined::Unfinished(outcome) => self.unfinished(&outcome).await,
            Refined::Best(outcome, best) => {
                let Snapshot {
                    committed,
                    summary,
                    report,
                    verdict,
                    ..
                } = *best;
                self.conclude(&outcome, committed, summary, &report, &verdict)
            }
        }
    }

    /// The refinement iterations of this attempt, up to the best snapshot
    /// (see [`Refined`]). The task's status moves only for a lone attempt
    /// (see `advance`): it ends in `judging` when there is a best.
    pub(super) async fn refine_loop(&mut self, cfg: RefineConfig) -> Result<Refined> {
        let base_prompt = self.task_prompt.clone();
        let main_md = self.audit_md.clone();
        let mut standing = Standing::default();
        let mut best: Option<Box<Snapshot>> = None;
        let mut totals = Totals::default();
        // What the last iteration left to say, when it was not the best.
        let mut last_word: Option<String> = None;
        let mut judged = false;
        let stop = loop {
            let i = standing.iterations + 1;
            // A judged iteration left the task in `judging`; one that was
            // not is still `running`.
            let going_on = match (i, judged) {
                (1, _) => true,
                (_, true) => self.advance(
                    TaskStatus::Judging,
                    TaskStatus::Running,
                    &format!("refining: iteration {i}"),
                )?,
                (_, false) => !self.cancel.is_cancelled(),
            };
            if !going_on {
                let outcome = totals.outcome(WorkerEnd::Cancelled);
                self.cancelled(&outcome, Stage::Work).await?;
                return Ok(Refined::Cancelled);
            }
            self.task_prompt = match &best {
                Some(b) => refine_prompt(&base_prompt, i, &cfg, b, last_word.as_deref()),
                None => base_prompt.clone(),
            };
            let (iterated, end) = self
                .iteration(i, &main_md, &mut totals, best.as_deref())
                .await?;
            judged = matches!(iterated, Iterated::Judged(_));
            let offer = match iterated {
                Iterated::Ended(e) => return Ok(e),
                Iterated::Judged(ref s) => Offer::Judged(s.verdict.score),
                Iterated::Unchanged(_) | Iterated::Dropped(_) | Iterated::Stopped(_) => {
                    Offer::Nothing
                }
            };
            // The worker could not go on: this iteration is the last.
            let stopped = match &iterated {
                Iterated::Stopped(why) => Some(why.clone()),
                _ => None,
            };
            let result = step(&mut standing, offer, &cfg);
            let outcome = match &iterated {
                _ if result.improved => IterationOutcome::Kept,
                Iterated::Unchanged(_) => IterationOutcome::Unchanged,
                _ => IterationOutcome::Reverted,
            };
            let record = self.iteration_record(i, &iterated, outcome, &standing);
            last_word = self
                .settle(i, iterated, result.improved, &mut best, &standing)
                .await?;
            self.engine
                .store
                .record_iteration(self.attempt.id, &record)?;
            self.attempt.iterations.push(record);
            if let Some(why) = stopped {
                break (RefineStop::WorkerStopped, Some(why), end);
            }
            if let Some(reason) = result.stop {
                break (reason, None, end);
            }
        };
        let (reason, detail, last_end) = stop;
        self.task_prompt = base_prompt;
        let outcome = totals.outcome(last_end);
        let Some(best) = best else {
            // Cannot happen: the first iteration is judged or ends the
            // attempt itself. Were it to, the attempt ends as unfinished.
            return Ok(Refined::Unfinished(outcome));
        };
        self.stopped(reason, detail, &best, &standing);
        if !judged
            && !self.advance(
                TaskStatus::Running,
                TaskStatus::Judging,
                "refinement stopped; concluding with the best snapshot",
            )?
        {
            self.cancelled(&outcome, Stage::Judge).await?;
            return Ok(Refined::Cancelled);
        }
        self.keep_best(&outcome, &main_md, &best).await?;
        Ok(Refined::Best(outcome, best))
    }

    /// Keeps an improving iteration's snapshot as the best, or puts the
    /// branch back at the best one. Returns what the next worker is told
    /// about an iteration that was not kept.
    async fn settle(
        &self,
        i: u32,
        iterated: Iterated,
        improved: bool,
        best: &mut Option<Box<Snapshot>>,
        standing: &Standing,
    ) -> Result<Option<String>> {
        let word = match iterated {
            Iterated::Judged(s) if improved => {
                *best = Some(s);
                return Ok(None);
            }
            Iterated::Judged(s) => format!(
                "Iteration {i} ({}) was no better than the best, so it was undone: the worktree is back at iteration {}'s snapshot. What was said about iteration {i}:\n\n{}",
                score_text(s.verdict.score),
                standing.best.map_or(1, |b| b.0),
                s.feedback().trim()
            ),
            Iterated::Unchanged(why) | Iterated::Dropped(why) | Iterated::Stopped(why) => {
                format!("Iteration {i}: {why}")
            }
            Iterated::Ended(_) => return Ok(None),
        };
        self.back_to_best(best.as_deref()).await?;
        Ok(Some(word))
    }

    /// One iteration: work, commit, verify, judge. The worker's transcript
    /// goes to the iteration's own file. Returns what became of it and the
    /// worker's end.
    async fn iteration(
        &mut self,
        i: u32,
        main_md: &Path,
        totals: &mut Totals,
        best: Option<&Snapshot>,
    ) -> Result<(Iterated, WorkerEnd)> {
        self.audit_md = iteration_file(main_md, i);
        let worked = self.work().await;
        self.audit_md = main_md.to_path_buf();
        let outcome = worked?;
        totals.add(&outcome);
        let all = totals.outcome(outcome.end.clone());
        let summary = match &outcome.end {
            WorkerEnd::Finished { summary } => summary.clone(),
            WorkerEnd::Cancelled => {
                self.cancelled(&all, Stage::Work).await?;
                return Ok((Iterated::Ended(Refined::Cancelled), outcome.end));
            }
            WorkerEnd::AskedHuman { .. } => {
                return Ok((Iterated::Ended(Refined::Unfinished(all)), outcome.end));
            }
            _ if best.is_none() => {
                return Ok((Iterated::Ended(Refined::Unfinished(all)), outcome.end));
            }
            WorkerEnd::ModelError { message } => {
                let why = format!("the model call failed: {message}");
                return Ok((Iterated::Stopped(why), outcome.end));
            }
            other => {
                let why = stopped_short(other, &self.engine.project);
                return Ok((Iterated::Dropped(why), outcome.end));
            }
        };
        let committed = self.commit(&summary).await?;
        if let Some(h) = &committed.head {
            let refname = iteration_ref(self.tid(), self.attempt.number, i);
            self.engine.git.keep_ref(&refname, h).await?;
        } else if best.is_some() {
            let mut why = String::from(UNCHANGED);
            if !committed.refused.is_empty() {
                why.push('\n');
                why.push_str(&crate::changeset::feedback(&committed.refused));
            }
            return Ok((Iterated::Unchanged(why), outcome.end));
        }
        let Some(report) = self.verify(&all, &committed).await? else {
            return Ok((Iterated::Ended(Refined::Cancelled), outcome.end));
        };
        let Some(verdict) = self.judge(&all, &committed, &report).await? else {
            return Ok((Iterated::Ended(Refined::Cancelled), outcome.end));
        };
        self.keep_verdict_file(i)?;
        let snapshot = Snapshot {
            iteration: i,
            committed,
            summary,
            report,
            verdict,
        };
        Ok((Iterated::Judged(Box::new(snapshot)), outcome.end))
    }

    fn iteration_record(
        &self,
        i: u32,
        iterated: &Iterated,
        outcome: IterationOutcome,
        standing: &Standing,
    ) -> RefineIteration {
        let (best_iteration, best_score) = standing.best.unwrap_or((0, None));
        let mut record = RefineIteration {
            iteration: i,
            score: None,
            commit: None,
            tests_passed: false,
            verdict_passed: false,
            outcome,
            best_score,
            best_iteration,
            note: None,
        };
        match iterated {
            Iterated::Judged(s) => {
                record.score = s.verdict.score;
                record.commit = s.committed.head.clone();
                record.tests_passed = s.report.passed;
                record.verdict_passed = s.verdict.passed;
            }
            Iterated::Unchanged(why) | Iterated::Dropped(why) | Iterated::Stopped(why) => {
                record.note = Some(why.clone());
            }
            Iterated::Ended(_) => {}
        }
        record
    }

    /// Puts the worktree and branch back at the best snapshot (or the base
    /// before there is one), dropping what the last iteration left.
    async fn back_to_best(&self, best: Option<&Snapshot>) -> Result<()> {
        let sha = best.map_or(self.base.as_str(), |b| b.committed.head_sha.as_str());
        self.engine.git.reset_worktree(&self.worktree, sha).await?;
        Ok(())
    }

    /// The judge stage writes `<task>-<n>.md`; each iteration keeps a copy
    /// of its own beside it.
    fn keep_verdict_file(&self, i: u32) -> Result<()> {
        let path = self.verdict_file();
        let copy = iteration_file(&path, i);
        let text = std::fs::read_to_string(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        write_atomic(&copy, &text).map_err(io_err(format!("writing {}", copy.display())))
    }

    fn verdict_file(&self) -> PathBuf {
        let e = self.engine;
        e.paths
            .verdicts(&e.project.name)
            .join(format!("{}-{}.md", self.tid(), self.attempt.number))
    }

    fn stopped(
        &self,
        reason: RefineStop,
        detail: Option<String>,
        best: &Snapshot,
        standing: &Standing,
    ) {
        let number = self.attempt.number;
        let message = format!(
            "attempt {number}: refinement stopped ({}) after {} iteration(s); best: iteration {} ({}), {}",
            stop_text(reason),
            standing.iterations,
            best.iteration,
            score_text(best.verdict.score),
            if best.verdict.passed {
                "passed"
            } else {
                "not passed"
            }
        );
        self.engine.rec.note(
            Some(self.tid()),
            protocol::RefineStopped {
                attempt_id: self.attempt.id,
                number,
                reason,
                iterations: standing.iterations,
                best_iteration: best.iteration,
                best_score: best.verdict.score,
                passed: best.verdict.passed,
                detail,
            },
            message,
        );
    }

    /// The attempt ends with its best snapshot: the branch and the
    /// attempt's ref point at it, its verdict is the attempt's verdict file,
    /// the iterations' transcripts together are the attempt's transcript,
    /// and the worktree goes.
    async fn keep_best(
        &self,
        outcome: &WorkerOutcome,
        main_md: &Path,
        best: &Snapshot,
    ) -> Result<()> {
        let e = self.engine;
        if let Some(h) = &best.committed.head {
            e.git
                .keep_ref(&self.task.id.attempt_ref(self.attempt.number), h)
                .await?;
        }
        let best_verdict = iteration_file(&self.verdict_file(), best.iteration);
        if let Ok(text) = std::fs::read_to_string(&best_verdict) {
            let path = self.verdict_file();
            write_atomic(&path, &text).map_err(io_err(format!("writing {}", path.display())))?;
        }
        let json = serde_json::to_string_pretty(&outcome.transcript).unwrap_or_default();
        write_atomic(&main_md.with_extension("json"), &json)
            .map_err(io_err("writing the attempt transcript"))?;
        e.remove_worktree(&self.worktree).await
    }
}

/// Why an iteration that committed nothing is not judged.
const UNCHANGED: &str = "it changed nothing on top of the best snapshot";

/// Why a worker stopped without finishing, as the next worker is told.
fn stopped_short(end: &WorkerEnd, p: &orch_config::ProjectConfig) -> String {
    match end {
        WorkerEnd::TurnLimit => format!(
            "the worker used all {} turns (max_turns) without calling finish; its changes were dropped. Work in fewer, larger steps.",
            p.max_turns
        ),
        WorkerEnd::TimedOut => format!(
            "the worker ran out of time ({} s, worker_timeout_seconds) before calling finish; its changes were dropped.",
            p.worker_timeout_seconds
        ),
        WorkerEnd::Stuck { detail } => {
            format!("the worker was stopped as stuck ({detail}); its changes were dropped.")
        }
        other => format!("the worker stopped ({}); its changes were dropped.", other.as_str()),
    }
}

fn stop_text(reason: RefineStop) -> &'static str {
    match reason {
        RefineStop::Threshold => "the score reached the threshold",
        RefineStop::MaxIterations => "max_iterations reached",
        RefineStop::Plateau => "no better score for `plateau` iterations",
        RefineStop::WorkerStopped => "the worker could not go on",
    }
}

/// `<dir>/<stem>-iteration-<i>.md` beside `file` (`<stem>.md`).
fn iteration_file(file: &Path, i: u32) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    file.with_file_name(format!("{stem}-iteration-{i}.md"))
}

/// Keeps an iteration's commit reachable after the branch moves back.
fn iteration_ref(task: &str, attempt: u32, i: u32) -> String {
    format!("refs/orch/iterations/{task}/{attempt}/{i}")
}

/// The task prompt of iteration `i` > 1: the task, then where refinement
/// stands and the feedback on the best snapshot (and on the last
/// iteration, when it was undone).
fn refine_prompt(
    base: &str,
    i: u32,
    cfg: &RefineConfig,
    best: &Snapshot,
    last_word: Option<&str>,
) -> String {
    let mut p = base.to_string();
    p.push_str(&format!(
        "\n## Refinement: iteration {i} of at most {}\n\n\
Your earlier work on this task is already in the worktree: the best snapshot so far, from iteration {}, {} (the goal is a judge score of {:.1} of 10). \
Improve it: fix what the feedback below names, keep what is right, run the tests, and call finish when you are done.\n",
        cfg.max_iterations,
        best.iteration,
        match best.verdict.score {
            Some(s) => format!("with a judge score of {s:.1}"),
            None => "not scored yet (a gate failed, so the judge model was not asked)".to_string(),
        },
        cfg.threshold
    ));
    if let Some(w) = last_word {
        p.push_str(&format!("\n### The last iteration\n\n{}\n", w.trim()));
    }
    p.push_str(&format!(
        "\n### Feedback on the snapshot in the worktree\n\n{}\n",
        best.feedback().trim()
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: f64, max_iterations: u32, plateau: u32) -> RefineConfig {
        RefineConfig {
            threshold,
            max_iterations,
            plateau,
        }
    }

    /// Runs the bookkeeping over `offers`: (improved, stop) per iteration.
    fn run(offers: &[Offer], c: &RefineConfig) -> (Vec<StepResult>, Standing) {
        let mut s = Standing::default();
        let steps = offers.iter().map(|o| step(&mut s, *o, c)).collect();
        (steps, s)
    }

    fn judged(scores: &[f64]) -> Vec<Offer> {
        scores.iter().map(|s| Offer::Judged(Some(*s))).collect()
    }

    #[test]
    fn a_lower_score_is_reverted_and_the_threshold_stops() {
        let (steps, s) = run(&judged(&[5.0, 7.0, 6.0, 9.0]), &cfg(8.5, 10, 3));
        let improved: Vec<bool> = steps.iter().map(|r| r.improved).collect();
        assert_eq!(improved, [true, true, false, true]);
        let stops: Vec<_> = steps.iter().map(|r| r.stop).collect();
        assert_eq!(stops, [None, None, None, Some(RefineStop::Threshold)]);
        assert_eq!(s.best, Some((4, Some(9.0))));
        assert_eq!(s.without_improvement, 0);
    }

    #[test]
    fn ties_keep_the_earlier_snapshot_and_count_towards_the_plateau() {
        let (steps, s) = run(&judged(&[6.0, 6.0, 6.0]), &cfg(8.5, 10, 2));
        assert!(!steps[1].improved);
        assert_eq!(steps[1].stop, None);
        assert_eq!(steps[2].stop, Some(RefineStop::Plateau));
        assert_eq!(s.best, Some((1, Some(6.0))));
        assert_eq!(s.without_improvement, 2);
    }

    #[test]
    fn an_improvement_resets_the_plateau_and_max_iterations_stops() {
        let offers = judged(&[4.0, 3.0, 5.0, 5.0, 6.0]);
        let (steps, s) = run(&offers, &cfg(9.0, 5, 2));
        let stops: Vec<_> = steps.iter().map(|r| r.stop).collect();
        assert_eq!(
            stops,
            [None, None, None, None, Some(RefineStop::MaxIterations)]
        );
        assert_eq!(s.best, Some((5, Some(6.0))));
    }

    #[test]
    fn no_score_ranks_lowest_and_nothing_never_improves() {
        let offers = [
            Offer::Judged(None),
            Offer::Nothing,
            Offer::Judged(Some(2.0)),
            Offer::Judged(None),
        ];
        let (steps, s) = run(&offers, &cfg(8.0, 10, 3));
        let improved: Vec<bool> = steps.iter().map(|r| r.improved).collect();
        // A first snapshot without a score is still the best there is.
        assert_eq!(improved, [true, false, true, false]);
        assert_eq!(s.best, Some((3, Some(2.0))));
        // Nothing first: no best yet, and it counts as no improvement.
        let (steps, s) = run(&[Offer::Nothing], &cfg(8.0, 10, 1));
        assert_eq!(steps[0].stop, Some(RefineStop::Plateau));
        assert_eq!(s.best, None);
    }

    #[test]
    fn a_first_score_at_the_threshold_stops_at_once() {
        let (steps, _) = run(&judged(&[8.0]), &cfg(8.0, 10, 3));
        assert_eq!(steps[0].stop, Some(RefineStop::Threshold));
    }

    #[test]
    fn iteration_files_and_refs_sit_beside_the_attempts() {
        assert_eq!(
            iteration_file(Path::new("/a/attempts/t1-2.md"), 3),
            PathBuf::from("/a/attempts/t1-2-iteration-3.md")
        );
        assert_eq!(iteration_ref("t1", 2, 3), "refs/orch/iterations/t1/2/3");
    }
}
