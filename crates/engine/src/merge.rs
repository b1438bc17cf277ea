//! The merge queue: one landing at a time per project, in batches, as bors
//! and Zuul do. Up to `merge_batch_max` passing branches are merged onto
//! the current main, one after another, without a worktree (in-process
//! when clean, else `git merge-tree`; a branch built on the candidate so
//! far is taken as it is, a fast-forward); a branch that conflicts is sent back. The candidate is
//! verified once; green lands the whole batch by one compare-and-swap
//! fast-forward of main, red splits the batch in halves to find the culprit
//! and land the rest. A single branch whose merged tree is exactly the tree
//! that already passed (main did not move under it) lands without a second
//! verification. main only ever moves to a tested tree, so a merge cut off
//! half-way leaves main as it was.

use crate::attempt::{feedback_text, first_line};
use crate::cycle::Engine;
use crate::resolve::Resolution;
use crate::Result;
use orch_core::{Task, TaskId, TaskStatus, TestGoal, Verdict, VerificationReport};
use orch_git::{AdvanceOutcome, MergeOutcome};
use orch_protocol::{self as protocol, Stage};
use std::future::Future;
use std::pin::Pin;

/// Times a batch is rebuilt when main moves under it (a person pushing).
const MOVED_RETRIES: usize = 3;

/// What one pass of the merge queue did.
#[derive(Debug, Default)]
pub(crate) struct MergeRound {
    /// Tasks it took out of `passed` (merged, sent back or deferred).
    pub handled: Vec<TaskId>,
    /// Messages a person should act on (a deferred landing).
    pub notices: Vec<String>,
    /// True when the queue cannot make progress now (a deferred landing, a
    /// merge that failed inside orch): no further round this cycle.
    pub blocked: bool,
}

/// A candidate of a window: its head, the tasks it holds, and its check
/// (None when none was needed).
struct Built {
    head: String,
    kept: Vec<Task>,
    report: Result<Option<VerificationReport>>,
}

impl Built {
    /// Its check passed, or none was needed.
    fn green(&self) -> bool {
        matches!(&self.report, Ok(r) if r.as_ref().is_none_or(|r| r.passed))
    }
}

fn ids_of(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// A window whose candidates were built and verified, not yet landed.
struct Checked {
    /// What the first candidate was built on: main, or the head of the
    /// window ahead when that had not landed yet.
    base: String,
    /// Every task the window took.
    ids: Vec<TaskId>,
    started: std::time::Instant,
    built: Vec<Built>,
    /// The error that stopped the building, if any.
    unbuilt: Option<crate::EngineError>,
}

impl Checked {
    /// The head main moves to when every candidate is green and nothing
    /// stopped the building (the window lands whole, barring a cancel or
    /// a push to main); None otherwise.
    fn green_head(&self) -> Option<&str> {
        if self.unbuilt.is_some() || !self.built.iter().all(Built::green) {
            return None;
        }
        self.built.last().map(|b| b.head.as_str())
    }
}

/// How landing a batch ended.
enum Landing {
    /// Everything in it was merged, sent back or abandoned.
    Done,
    /// The user's checkout holds uncommitted work; the batch waits.
    Deferred(String),
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Tells the scheduler that the merge queue started verifying a candidate,
/// so an idle slot stops waiting for the landing (see `Engine::cycle`).
#[derive(Debug, Default)]
pub(crate) struct SlowMerge {
    verifying: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl SlowMerge {
    pub(crate) fn set(&self) {
        self.verifying
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // A stored permit: a waiter that starts late still wakes.
        self.wake.notify_one();
    }

    pub(crate) fn clear(&self) {
        self.verifying
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.verifying.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once a verification started (at once if one already did).
    pub(crate) async fn started(&self) {
        while !self.is_set() {
            self.wake.notified().await;
        }
    }
}

impl Engine {
    /// Lands every passed task it can, a window of batches at a time (see
    /// `land_window`). While a window whose candidates are all green lands,
    /// the next window is built and verified on top of it, so the landing's
    /// git and bookkeeping overlap the next verification; when the window
    /// does not land as built, the one behind it goes back to the queue.
    pub(crate) async fn merge_queue(&self) -> Result<MergeRound> {
        let mut round = MergeRound::default();
        let mut ahead: Option<Checked> = None;
        loop {
            let checked = match ahead.take() {
                Some(checked) => checked,
                None => {
                    let window = self.take_window(&mut round)?;
                    if window.is_empty() {
                        return Ok(round);
                    }
                    let base = self.git.rev_parse(&self.main_branch).await?;
                    self.check_window(&base, window, false).await
                }
            };
            let ids = checked.ids.clone();
            let started = checked.started;
            let next = match checked.green_head() {
                Some(head) => Some((head.to_string(), self.take_window(&mut round)?)),
                None => None,
            };
            let (landed, next) = match next.filter(|(_, window)| !window.is_empty()) {
                Some((head, window)) => {
                    let (landed, next) = tokio::join!(
                        self.land_window(checked),
                        self.check_window(&head, window, true)
                    );
                    (landed, Some(next))
                }
                None => (self.land_window(checked).await, None),
            };
            match landed {
                Ok(Landing::Done) => {
                    self.merge_finished(&ids, started)?;
                    ahead = match next {
                        Some(next) => self.still_ahead(next).await?,
                        None => None,
                    };
                }
                Ok(Landing::Deferred(message)) => {
                    self.drop_speculation(next)?;
                    round.notices.push(message);
                    round.blocked = true;
                    return Ok(round);
                }
                Err(e) => {
                    self.drop_speculation(next)?;
                    // main was not touched; the tasks wait for the next cycle.
                    self.requeue(
                        &ids,
                        &format!("merge failed inside orch, will retry next cycle: {e}"),
                    )?;
                    round.blocked = true;
                    return Ok(round);
                }
            }
        }
    }

    /// The window checked on top of the one that just landed, if main is
    /// now where it was built; otherwise its tasks go back to the queue.
    async fn still_ahead(&self, next: Checked) -> Result<Option<Checked>> {
        if self.git.rev_parse(&self.main_branch).await? == next.base {
            return Ok(Some(next));
        }
        self.drop_speculation(Some(next))?;
        Ok(None)
    }

    /// Puts the tasks of a window built on work that did not land back in
    /// the queue, to be rebuilt on main as it is.
    fn drop_speculation(&self, next: Option<Checked>) -> Result<()> {
        match next {
            Some(next) => self.requeue(
                &next.ids,
                "back in the merge queue: the work it was built on did not land as built",
            ),
            None => Ok(()),
        }
    }

    /// Records how long each task of a landed batch spent in the merge
    /// stage, and whether it landed.
    fn merge_finished(&self, ids: &[TaskId], started: std::time::Instant) -> Result<()> {
        let mut events = Vec::with_capacity(ids.len());
        for id in ids {
            let landed = self.store.task(id.as_str())?.status == TaskStatus::Merged;
            events.push(self.rec.event(
                Some(id.as_str()),
                protocol::StageFinished::new(Stage::Merge, None, started.elapsed(), landed),
                format!("merge {}", if landed { "landed" } else { "sent it back" }),
            ));
        }
        self.rec.emit_all(events);
        Ok(())
    }

    /// Moves up to `merge_window` batches of `merge_batch_max` passed
    /// tasks, highest priority first, into `merging`.
    fn take_window(&self, round: &mut MergeRound) -> Result<Vec<Vec<Task>>> {
        let max = self.project.merge_batch_max.max(1) as usize;
        let window = self.project.merge_window.max(1) as usize;
        let mut waiting = self
            .store
            .tasks(Some(&self.project.name), Some(TaskStatus::Passed))?;
        waiting.truncate(max * window);
        let ids = ids_of(&waiting);
        // One write for the window; a task that left `passed` meanwhile
        // (cancelled) is not taken.
        let moved = self.store.transition_all(
            &ids,
            &[TaskStatus::Passed],
            TaskStatus::Merging,
            "merge queue",
        )?;
        let taken: Vec<Task> = waiting
            .into_iter()
            .zip(moved)
            .filter_map(|(task, moved)| moved.then_some(task))
            .collect();
        round.handled.extend(ids_of(&taken));
        Ok(taken.chunks(max).map(<[Task]>::to_vec).collect())
    }

    /// Lands `batch` onto main, splitting it when its candidate is red.
    fn land(&self, batch: Vec<Task>) -> Boxed<'_, Result<Landing>> {
        Box::pin(async move {
            let mut batch = batch;
            for _ in 0..MOVED_RETRIES {
                if batch.is_empty() {
                    return Ok(Landing::Done);
                }
                let main_sha = self.git.rev_parse(&self.main_branch).await?;
                let (head, kept) = self.build_candidate(&main_sha, batch, false).await?;
                if kept.is_empty() {
                    return Ok(Landing::Done);
                }
                let report = self.verify_candidate(&head, &main_sha, &kept).await?;
                if let Some(report) = report.filter(|r| !r.passed) {
                    return self.after_red(kept, &report).await;
                }
                // A task cancelled while its candidate was verified does not
                // land, and neither does its work: the rest is rebuilt.
                let still = self.still_merging(kept.clone())?;
                if still.len() < kept.len() {
                    batch = still;
                    continue;
                }
                match self
                    .git
                    .advance_branch(&self.main_branch, &head, &main_sha)
                    .await?
                {
                    AdvanceOutcome::Advanced => {
                        self.record_merged(&kept, &head).await?;
                        return Ok(Landing::Done);
                    }
                    AdvanceOutcome::Moved { .. } => batch = kept,
                    AdvanceOutcome::Deferred { checkout, reason } => {
                        return self.defer(&kept, &checkout, &reason);
                    }
                }
            }
            let ids = ids_of(&batch);
            self.requeue(
                &ids,
                &format!(
                    "{} kept moving while orch tried to land this work; it will be retried",
                    self.main_branch
                ),
            )?;
            Ok(Landing::Done)
        })
    }

    /// Zuul's dependent pipeline: each batch of the window is merged on
    /// top of the candidate before it (the first on `base`), and each
    /// candidate is verified as soon as it is built, while the next is
    /// built. `speculative` when `base` is a candidate that has not landed
    /// yet: a branch that conflicts there is not judged on it but goes back
    /// to the queue, to meet main as it will be.
    async fn check_window(&self, base: &str, window: Vec<Vec<Task>>, speculative: bool) -> Checked {
        let started = std::time::Instant::now();
        let ids = window.iter().flat_map(|batch| ids_of(batch)).collect();
        let (built, unbuilt) = self.build_and_verify(base, window, speculative).await;
        Checked {
            base: base.to_string(),
            ids,
            started,
            built,
            unbuilt,
        }
    }

    /// Lands a checked window. The green candidates at the front land
    /// together, by one move of main to the last of them (it holds all the
    /// batches ahead of it, and each of them passed). The first that does
    /// not land as built (red, a task gone) is handled as `land` would,
    /// and the batches behind it, built on it, go back to the queue. main
    /// still only moves to a verified tree.
    async fn land_window(&self, checked: Checked) -> Result<Landing> {
        let Checked {
            base: main_sha,
            built,
            unbuilt,
            ..
        } = checked;
        let why = "back in the merge queue: a batch ahead of it did not land as built";
        let mut green: Vec<Built> = Vec::new();
        let mut rest = built.into_iter();
        let mut stop = None;
        for b in rest.by_ref() {
            if !b.green() || self.still_merging(b.kept.clone())?.len() < b.kept.len() {
                stop = Some(b);
                break;
            }
            green.push(b);
        }
        let behind: Vec<TaskId> = rest.flat_map(|b| b.kept).map(|t| t.id).collect();
        self.requeue(&behind, why)?;
        if let Some(last) = green.last() {
            let head = last.head.clone();
            match self
                .git
                .advance_branch(&self.main_branch, &head, &main_sha)
                .await?
            {
                AdvanceOutcome::Advanced => {
                    for b in &green {
                        self.record_merged(&b.kept, &b.head).await?;
                    }
                }
                moved_or_deferred => {
                    if let Some(b) = &stop {
                        self.requeue(&ids_of(&b.kept), why)?;
                    }
                    let tasks: Vec<Task> = green.into_iter().flat_map(|b| b.kept).collect();
                    return match moved_or_deferred {
                        AdvanceOutcome::Deferred { checkout, reason } => {
                            self.defer(&tasks, &checkout, &reason)
                        }
                        _ => self.land(tasks).await,
                    };
                }
            }
        }
        if let Some(e) = unbuilt {
            // merge_queue puts whatever is still merging back in the queue.
            return Err(e);
        }
        let Some(b) = stop else {
            return Ok(Landing::Done);
        };
        match b.report {
            Err(e) => Err(e),
            Ok(Some(report)) if !report.passed => self.after_red(b.kept, &report).await,
            // A task gone while its candidate was verified: the rest is
            // rebuilt on main as it now is.
            Ok(_) => {
                let still = self.still_merging(b.kept)?;
                self.land(still).await
            }
        }
    }

    /// Builds each batch's candidate on the one before it and verifies it
    /// as soon as it is built, while the next one is built. The candidates
    /// in order, and the error that stopped the building, if any (the
    /// batches from there on are left merging).
    async fn build_and_verify(
        &self,
        main_sha: &str,
        window: Vec<Vec<Task>>,
        speculative: bool,
    ) -> (Vec<Built>, Option<crate::EngineError>) {
        use futures_util::stream::{FuturesOrdered, StreamExt};
        let mut verifying = FuturesOrdered::new();
        let mut done = Vec::new();
        let mut base = main_sha.to_string();
        for batch in window {
            let building = self.build_candidate(&base, batch, speculative);
            // Verifications already under way progress while this builds.
            let built = {
                tokio::pin!(building);
                loop {
                    tokio::select! {
                        biased;
                        built = &mut building => break built,
                        Some(b) = verifying.next(), if !verifying.is_empty() => done.push(b),
                    }
                }
            };
            match built {
                Ok((head, kept)) if !kept.is_empty() => {
                    let on = std::mem::replace(&mut base, head.clone());
                    verifying.push_back(async move {
                        let report = self.verify_candidate(&head, &on, &kept).await;
                        Built { head, kept, report }
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    done.extend(verifying.collect::<Vec<_>>().await);
                    return (done, Some(e));
                }
            }
        }
        done.extend(verifying.collect::<Vec<_>>().await);
        (done, None)
    }

    /// The user's checkout of main holds uncommitted work: `kept` passed
    /// but waits, and the person is told what to do.
    fn defer(&self, kept: &[Task], checkout: &std::path::Path, reason: &str) -> Result<Landing> {
        let ids: Vec<&str> = kept.iter().map(|t| t.id.as_str()).collect();
        let message = format!(
            "{} passed but {} not landed: {} is checked out in {} with uncommitted changes ({reason}). orch left your checkout alone. Commit or stash your changes and run `orch run --project {}` again, or merge it yourself with `git merge {}`.",
            ids.join(", "),
            if ids.len() == 1 { "was" } else { "were" },
            self.main_branch,
            checkout.display(),
            self.project.name,
            kept[0].branch(),
        );
        for t in kept {
            self.store.transition(
                &t.id,
                &[TaskStatus::Merging],
                TaskStatus::Passed,
                "merge deferred",
            )?;
            self.rec.note(
                Some(t.id.as_str()),
                protocol::MergeDeferred {
                    reason: reason.to_string(),
                },
                message.clone(),
            );
        }
        Ok(Landing::Deferred(message))
    }

    /// Merges each branch of `batch` onto `main_sha` in turn, without a
    /// worktree. Branches that conflict (or vanished) are sent back; the
    /// rest are returned with the candidate's head. On a `speculative`
    /// base (work not landed yet) a conflict is not the branch's fault
    /// until that work lands: the branch goes back to the queue instead.
    async fn build_candidate(
        &self,
        main_sha: &str,
        batch: Vec<Task>,
        speculative: bool,
    ) -> Result<(String, Vec<Task>)> {
        let mut head = main_sha.to_string();
        let mut kept = Vec::new();
        for task in batch {
            let branch = task.branch();
            let tid = task.id.as_str();
            self.rec.note(
                Some(tid),
                protocol::StageStarted {
                    commit: Some(head.clone()),
                    ..protocol::StageStarted::new(Stage::Merge)
                },
                format!("merging {branch} into {}", self.main_branch),
            );
            let message = format!("Merge {branch}: {}\n\nTask: {tid}", task.title);
            let merged = match self.fast_forward_or_merge(&head, &branch, &message).await {
                // Only a failed merge asks whether the branch still exists.
                Err(_) if !self.git.branch_exists(&branch).await? => {
                    let gone =
                        format!("the branch {branch} is gone; the work has to be done again");
                    self.reject(&task, &gone)?;
                    continue;
                }
                other => other?,
            };
            match merged {
                MergeOutcome::Clean { head: merged } => {
                    head = merged;
                    kept.push(task);
                }
                MergeOutcome::Conflict { .. } if speculative => self.requeue(
                    std::slice::from_ref(&task.id),
                    "back in the merge queue: it conflicts with work that has not landed yet",
                )?,
                MergeOutcome::Conflict { files, .. } => {
                    let feedback = format!(
                        "Your change conflicts with work that landed on {} since you started, in: {}. Start again from the current {} and make your change fit what is there now.",
                        self.main_branch,
                        files.join(", "),
                        self.main_branch
                    );
                    // The resolver (resolve.rs) first, unless configured off.
                    match self
                        .resolve_conflict(&task, &head, main_sha, &files)
                        .await?
                    {
                        Resolution::Resolved { head: resolved } => {
                            head = resolved;
                            kept.push(task);
                        }
                        Resolution::Failed { why } => self.reject(
                            &task,
                            &format!(
                                "{feedback}\n\norch's conflict resolver could not land it: {why}"
                            ),
                        )?,
                        Resolution::Cancelled => {}
                        Resolution::NotTried => self.reject(&task, &feedback)?,
                    }
                }
            }
        }
        Ok((head, kept))
    }

    /// A branch built on `head` itself lands as a fast-forward: its own
    /// commit, already verified, with no merge commit (two git runs fewer,
    /// and the merged tree is the tested one). Any other branch gets a merge
    /// commit.
    async fn fast_forward_or_merge(
        &self,
        head: &str,
        branch: &str,
        message: &str,
    ) -> std::result::Result<MergeOutcome, orch_git::GitError> {
        if self.git.is_ancestor(head, branch).await? {
            let tip = self.git.rev_parse(branch).await?;
            return Ok(MergeOutcome::Clean { head: tip });
        }
        self.git.merge_commit(head, branch, message).await
    }

    /// Verifies the candidate in a scratch worktree; None when verification
    /// is not needed because the merged tree is the one that already passed.
    async fn verify_candidate(
        &self,
        head: &str,
        main_sha: &str,
        kept: &[Task],
    ) -> Result<Option<VerificationReport>> {
        if let [only] = kept {
            if self.git.same_tree(head, &only.branch()).await? {
                self.rec.note(
                    Some(only.id.as_str()),
                    protocol::StageFinished {
                        skipped: true,
                        ok: true,
                        ..protocol::StageFinished::new(Stage::Verify, None, Default::default(), true)
                    },
                    "post-merge verification skipped: the merged tree is the one that already passed",
                );
                return Ok(None);
            }
        }
        self.slow_merge.set();
        let dir = self
            .paths
            .worktree(&self.project.name, &format!("merge-{}", kept[0].id));
        self.git.worktree_add_detached(&dir, head).await?;
        let (commands, options) = (self.verify_commands(), self.verify_options());
        let steps = orch_verify::run_steps(self.sandbox.as_ref(), &dir, &commands, &options).await;
        self.remove_worktree(&dir).await?;
        let steps = steps?;
        let baseline = self.baseline_if_needed(main_sha, &steps).await?;
        let goal = match kept {
            [only] => self.test_goal(only),
            many => self.batch_goal(many),
        };
        let report = orch_verify::assess(steps, baseline.as_ref(), false, &goal);
        let mut events = Vec::with_capacity(kept.len());
        for t in kept {
            events.push(self.rec.event(
                Some(t.id.as_str()),
                protocol::VerificationFinished::from_report(
                    &report,
                    Some(Stage::Merge),
                    Some(kept.len()),
                    None,
                ),
                format!(
                    "post-merge verification {} (batch of {})",
                    if report.passed { "passed" } else { "failed" },
                    kept.len()
                ),
            ));
        }
        self.rec.emit_all(events);
        Ok(Some(report))
    }

    /// A batch targets every test any of its tasks targets.
    fn batch_goal(&self, tasks: &[Task]) -> TestGoal {
        let mut goal = TestGoal {
            block_preexisting: self.test_goal(&tasks[0]).block_preexisting,
            ..TestGoal::default()
        };
        for t in tasks {
            let g = self.test_goal(t);
            goal.acceptance.extend(g.acceptance);
            goal.mentions.push_str(&g.mentions);
            goal.mentions.push('\n');
        }
        goal
    }

    /// A red candidate: one task is sent back with the failure; a larger
    /// batch is split in halves, each landed on its own.
    async fn after_red(&self, kept: Vec<Task>, report: &VerificationReport) -> Result<Landing> {
        if kept.len() == 1 {
            let verdict = Verdict {
                passed: false,
                score: None,
                reasoning: String::new(),
                issues: vec![],
                gates: vec![],
            };
            let feedback = format!(
                "After merging with the current {}, verification fails.\n\n{}",
                self.main_branch,
                feedback_text(report, &verdict)
            );
            self.reject(&kept[0], &feedback)?;
            return Ok(Landing::Done);
        }
        let mut first = kept;
        let second = first.split_off(first.len() / 2);
        self.rec.note(
            None,
            protocol::StageStarted {
                split: Some((first.len(), second.len())),
                ..protocol::StageStarted::new(Stage::Merge)
            },
            format!(
                "merge batch of {} is red; splitting it to find the culprit",
                first.len() + second.len()
            ),
        );
        if let Landing::Deferred(m) = self.land(first).await? {
            self.requeue(
                &second.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
                "merge deferred",
            )?;
            return Ok(Landing::Deferred(m));
        }
        self.land(second).await
    }

    /// The tasks of `kept` still in `merging` (a cancel takes a task out).
    fn still_merging(&self, kept: Vec<Task>) -> Result<Vec<Task>> {
        let mut left = Vec::new();
        for t in kept {
            if self.store.task(t.id.as_str())?.status == TaskStatus::Merging {
                left.push(t);
            }
        }
        Ok(left)
    }

    async fn record_merged(&self, kept: &[Task], head: &str) -> Result<()> {
        let short = &head[..head.len().min(12)];
        // One write for the batch's moves, one for its events.
        let recorded = self.store.transition_all(
            &ids_of(kept),
            &[TaskStatus::Merging],
            TaskStatus::Merged,
            "landed on main",
        )?;
        let mut events = Vec::with_capacity(kept.len());
        for (task, recorded) in kept.iter().zip(recorded) {
            let tid = task.id.as_str();
            if !recorded {
                // Cancelled in the instant between the last check and the
                // landing: say so rather than hide it.
                events.push(self.rec.event(
                    Some(tid),
                    protocol::Warning {
                        stage: Some(Stage::Merge),
                        commit: Some(head.to_string()),
                        ..Default::default()
                    },
                    format!(
                        "the task was cancelled while it landed; its work is on {} at {short}",
                        self.main_branch
                    ),
                ));
            }
            events.push(self.rec.event(
                Some(tid),
                protocol::Merged {
                    commit: head.to_string(),
                    branch: self.main_branch.clone(),
                    batch: kept.len(),
                },
                format!(
                    "{} now at {short}{}",
                    self.main_branch,
                    if kept.len() > 1 {
                        format!(" (batch of {})", kept.len())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        self.rec.emit_all(events);
        // One git run for the whole batch; a branch left behind is only
        // clutter, which the next recovery removes.
        let branches: Vec<String> = kept.iter().map(|t| t.branch()).collect();
        let names: Vec<&str> = branches.iter().map(String::as_str).collect();
        let _ = self.git.delete_branches(&names).await;
        Ok(())
    }

    /// Sends a task back to its worker with `feedback`, or fails it when
    /// its attempts are used up.
    fn reject(&self, task: &Task, feedback: &str) -> Result<()> {
        let tid = task.id.as_str();
        self.rec.note(
            Some(tid),
            protocol::MergeRejected {
                feedback: feedback.to_string(),
            },
            first_line(feedback).to_string(),
        );
        self.store.set_feedback(&task.id, Some(feedback))?;
        let current = self.store.task(tid)?;
        if current.attempts >= self.project.max_attempts {
            if current.status == TaskStatus::Merging {
                self.store.fail_task(
                    &task.id,
                    &format!(
                        "could not be merged after {} attempt(s): {}",
                        current.attempts,
                        first_line(feedback)
                    ),
                )?;
            }
        } else {
            self.store.transition(
                &task.id,
                &[TaskStatus::Merging],
                TaskStatus::Pending,
                "merge rejected; retry with feedback",
            )?;
        }
        Ok(())
    }

    /// Puts tasks back in the queue untouched (main did not move for them).
    fn requeue(&self, ids: &[TaskId], why: &str) -> Result<()> {
        for id in ids {
            if self
                .store
                .transition(id, &[TaskStatus::Merging], TaskStatus::Passed, why)?
            {
                self.rec.note(
                    Some(id.as_str()),
                    protocol::Warning::at(Stage::Merge),
                    why.to_string(),
                );
            }
        }
        Ok(())
    }
}
