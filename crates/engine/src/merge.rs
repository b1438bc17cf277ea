//! The merge queue: one merge at a time per project. A passing branch is
//! merged with the current main in a scratch worktree, verified again there,
//! and only a green result advances main, by a compare-and-swap fast-forward.
//! main is never moved to an untested commit, so a merge cut off half-way
//! leaves main as it was.

use crate::attempt::{feedback_text, first_line};
use crate::cycle::Engine;
use crate::Result;
use orch_core::{EventKind, Task, TaskId, TaskStatus, Verdict};
use orch_git::{AdvanceOutcome, MergeOutcome};

enum MergeResult {
    Merged {
        head: String,
    },
    /// Sent back to the worker with this feedback.
    Rejected {
        feedback: String,
    },
    /// Landing would touch the user's uncommitted work; nothing was changed.
    Deferred {
        message: String,
    },
    /// The task left the merge queue (cancelled) before it landed.
    Abandoned,
}

/// What one pass of the merge queue did.
#[derive(Debug, Default)]
pub(crate) struct MergeRound {
    /// Tasks it took out of `passed` (merged, sent back or deferred).
    pub handled: Vec<TaskId>,
    /// Messages a person should act on (a deferred landing).
    pub notices: Vec<String>,
}

impl Engine {
    /// Lands every passed task it can.
    pub(crate) async fn merge_queue(&self) -> Result<MergeRound> {
        let mut round = MergeRound::default();
        let handled = &mut round.handled;
        let queue = self
            .store
            .tasks(Some(&self.project.name), Some(TaskStatus::Passed))?;
        for task in queue {
            if !self.store.transition(
                &task.id,
                &[TaskStatus::Passed],
                TaskStatus::Merging,
                "merge queue",
            )? {
                continue;
            }
            handled.push(task.id.clone());
            let tid = task.id.as_str().to_string();
            self.rec.note(
                Some(&tid),
                EventKind::StageStarted,
                format!("merging {} into {}", task.branch(), self.main_branch),
                serde_json::json!({"stage": "merge"}),
            );
            let result = match self.merge_one(&task).await {
                Ok(r) => r,
                Err(e) => {
                    // Leave the task queued; main was not touched.
                    self.store.transition(
                        &task.id,
                        &[TaskStatus::Merging],
                        TaskStatus::Passed,
                        "merge error; will retry",
                    )?;
                    self.rec.note(
                        Some(&tid),
                        EventKind::Warning,
                        format!("merge failed inside orch, will retry next cycle: {e}"),
                        serde_json::Value::Null,
                    );
                    continue;
                }
            };
            match result {
                MergeResult::Abandoned => {}
                MergeResult::Merged { head } => {
                    let recorded = self.store.transition(
                        &task.id,
                        &[TaskStatus::Merging],
                        TaskStatus::Merged,
                        "landed on main",
                    )?;
                    if !recorded {
                        // Cancelled in the instant between the last check
                        // and the landing: say so rather than hide it.
                        self.rec.note(
                            Some(&tid),
                            EventKind::Warning,
                            format!(
                                "the task was cancelled while it landed; its work is on {} at {}",
                                self.main_branch,
                                &head[..head.len().min(12)]
                            ),
                            serde_json::json!({"commit": head}),
                        );
                    }
                    self.rec.note(
                        Some(&tid),
                        EventKind::Merged,
                        format!(
                            "{} now at {}",
                            self.main_branch,
                            &head[..head.len().min(12)]
                        ),
                        serde_json::json!({"commit": head, "branch": self.main_branch}),
                    );
                    let _ = self.git.delete_branch(&task.branch()).await;
                }
                MergeResult::Rejected { feedback } => {
                    self.rec.note(
                        Some(&tid),
                        EventKind::MergeRejected,
                        first_line(&feedback).to_string(),
                        serde_json::json!({"feedback": feedback}),
                    );
                    self.store.set_feedback(&task.id, Some(&feedback))?;
                    let current = self.store.task(&tid)?;
                    if current.attempts >= self.project.max_attempts {
                        self.store.fail_task(
                            &task.id,
                            &format!(
                                "could not be merged after {} attempt(s): {}",
                                current.attempts,
                                first_line(&feedback)
                            ),
                        )?;
                    } else {
                        self.store.transition(
                            &task.id,
                            &[TaskStatus::Merging],
                            TaskStatus::Pending,
                            "merge rejected; retry with feedback",
                        )?;
                    }
                }
                MergeResult::Deferred { message } => {
                    self.store.transition(
                        &task.id,
                        &[TaskStatus::Merging],
                        TaskStatus::Passed,
                        "merge deferred",
                    )?;
                    self.rec.note(
                        Some(&tid),
                        EventKind::MergeDeferred,
                        message.clone(),
                        serde_json::Value::Null,
                    );
                    round.notices.push(message);
                    // Every later merge would meet the same checkout.
                    break;
                }
            }
        }
        Ok(round)
    }

    async fn merge_one(&self, task: &Task) -> Result<MergeResult> {
        let branch = task.branch();
        if !self.git.branch_exists(&branch).await? {
            return Ok(MergeResult::Rejected {
                feedback: format!("the branch {branch} is gone; the work has to be done again"),
            });
        }
        let dir = self
            .paths
            .worktree(&self.project.name, &format!("merge-{}", task.id));
        // main may move under us (a person committing); retry a few times.
        for _ in 0..3 {
            let main_sha = self.git.rev_parse(&self.main_branch).await?;
            self.git.worktree_add_detached(&dir, &main_sha).await?;
            let result = self.merge_and_verify(task, &dir, &main_sha).await;
            self.remove_worktree(&dir).await?;
            let merged_head = match result? {
                Ok(head) => head,
                Err(rejected) => return Ok(rejected),
            };
            // A task cancelled while its merge was verified does not land.
            if self.store.task(task.id.as_str())?.status != TaskStatus::Merging {
                return Ok(MergeResult::Abandoned);
            }
            match self.git.advance_branch(&self.main_branch, &merged_head, &main_sha).await? {
                AdvanceOutcome::Advanced => return Ok(MergeResult::Merged { head: merged_head }),
                AdvanceOutcome::Moved { .. } => continue,
                AdvanceOutcome::Deferred { checkout, reason } => {
                    return Ok(MergeResult::Deferred {
                        message: format!(
                            "{} passed but was not landed: {} is checked out in {} with uncommitted changes ({reason}). orch left your checkout alone. Commit or stash your changes and run `orch run --project {}` again, or merge it yourself with `git merge {branch}`.",
                            task.id,
                            self.main_branch,
                            checkout.display(),
                            self.project.name
                        ),
                    })
                }
            }
        }
        Ok(MergeResult::Rejected {
            feedback: format!(
                "{} kept moving while orch tried to land this work; it will be retried",
                self.main_branch
            ),
        })
    }

    /// Merges the task branch into `dir` (detached at main) and re-runs
    /// verification. Ok(Ok(head)) is a green merge commit.
    async fn merge_and_verify(
        &self,
        task: &Task,
        dir: &std::path::Path,
        main_sha: &str,
    ) -> Result<std::result::Result<String, MergeResult>> {
        let message = format!(
            "Merge {}: {}\n\nTask: {}",
            task.branch(),
            task.title,
            task.id
        );
        match self.git.merge_into_worktree(dir, &task.branch(), &message).await? {
            MergeOutcome::Conflict { files, .. } => {
                return Ok(Err(MergeResult::Rejected {
                    feedback: format!(
                        "Your change conflicts with work that landed on {} since you started, in: {}. Start again from the current {} and make your change fit what is there now.",
                        self.main_branch,
                        files.join(", "),
                        self.main_branch
                    ),
                }))
            }
            MergeOutcome::Clean { .. } => {}
        }
        let cmds = orch_verify::VerifyCommands {
            setup: self.project.setup_command.clone(),
            format: self.project.format_command.clone(),
            lint: self.project.lint_command.clone(),
            test: self.project.test_command.clone(),
        };
        let steps =
            orch_verify::run_steps(self.sandbox.as_ref(), dir, &cmds, &self.verify_options())
                .await?;
        let baseline = self.baseline_if_needed(main_sha, &steps).await?;
        let report = orch_verify::assess(steps, baseline.as_ref(), false, &self.test_goal(task));
        self.rec.note(Some(task.id.as_str()), EventKind::VerificationFinished, format!("post-merge verification {}", if report.passed { "passed" } else { "failed" }), serde_json::json!({"stage": "merge", "passed": report.passed, "new_failures": report.new_failures}));
        if !report.passed {
            let verdict = Verdict {
                passed: false,
                score: None,
                reasoning: String::new(),
                issues: vec![],
                gates: vec![],
            };
            return Ok(Err(MergeResult::Rejected {
                feedback: format!(
                    "After merging with the current {}, verification fails.\n\n{}",
                    self.main_branch,
                    feedback_text(&report, &verdict)
                ),
            }));
        }
        Ok(Ok(self.git.head(dir).await?))
    }
}
