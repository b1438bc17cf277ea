//! The conflict resolver (`resolve_conflicts = "agent"`, the default): a
//! passing branch that no longer merges onto the merge queue's candidate is
//! merged for real in a scratch worktree (detached at the candidate), so
//! the conflict markers are in the files, and the task's own worker — its
//! routing model, the same limits, the sandbox, metered as role `worker` —
//! is asked to resolve them, keeping both sides' intent.
//!
//! Nothing the resolver does is trusted: a file still holding a marker
//! line fails it, and so does a merge that was undone or a resolution that
//! drops the task's change; then the merge commit (both parents) must pass
//! the whole verification against the task's test goal. Only then does it
//! become the candidate's head. Anything else sends the task back with the
//! conflict as feedback, as `resolve_conflicts = "feedback"` always does,
//! plus why the resolution failed.
//!
//! The resolver is an attempt of the task (kind `resolve`): its usage
//! counts against the task's budget, but it never uses up one of the
//! task's `max_attempts` — the work itself already passed. Each time the
//! queue builds a candidate a conflicting task gets at most one resolver
//! attempt. A person's cancel stops it (the task's token is watched while
//! it runs); an interruption (the patrol, a shutdown) or orch's own
//! failure puts the batch back in the queue untouched. The scratch
//! worktree is removed whatever happens, and the user's checkout is never
//! touched.

use crate::attempt::{feedback_text, first_line, EventObserver};
use crate::audit::{attempt_markdown, AttemptRecord};
use crate::cycle::Engine;
use crate::paths::write_atomic;
use crate::{io_err, EngineError, Result};
use orch_agent::{WorkerEnd, WorkerOutcome};
use orch_config::ResolveConflicts;
use orch_core::{
    Attempt, AttemptKind, AttemptStatus, Task, TaskStatus, Usage, Verdict, VerificationReport,
};
use orch_git::MergeOutcome;
use orch_protocol::{self as protocol, ResolutionOutcome, Stage};
use orch_state::AttemptFinish;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Line starts of git's conflict markers (diff3 style: ours, base, theirs).
const MARKERS: [&str; 3] = ["<<<<<<<", "|||||||", ">>>>>>>"];

/// Most commits that landed shown to the resolver.
const LANDED_SHOWN: usize = 20;

/// What the merge queue does with a conflicting branch.
pub(crate) enum Resolution {
    /// Verified green: this merge commit is the candidate's new head.
    Resolved { head: String },
    /// Not resolved; why, for the task's feedback.
    Failed { why: String },
    /// The task was cancelled meanwhile: it neither lands nor goes back.
    Cancelled,
    /// `resolve_conflicts = "feedback"`: no resolver was asked.
    NotTried,
}

/// How one resolver run ended, before it is recorded.
enum Ended {
    Resolved {
        head: String,
        summary: String,
        report: VerificationReport,
    },
    Failed {
        why: String,
        head: Option<String>,
        report: Option<VerificationReport>,
    },
    /// The token tripped: a person's cancel, the patrol or a shutdown.
    Stopped,
}

impl Ended {
    fn failed(why: impl Into<String>) -> Ended {
        Ended::Failed {
            why: why.into(),
            head: None,
            report: None,
        }
    }
}

/// One resolver attempt in progress.
struct Resolver<'a> {
    e: &'a Engine,
    task: &'a Task,
    attempt: Attempt,
    /// The candidate head the branch is merged onto.
    onto: &'a str,
    branch_sha: String,
    dir: PathBuf,
    cancel: CancellationToken,
    started: Instant,
    system_prompt: String,
    task_prompt: String,
    /// The files git could not merge.
    files: Vec<String>,
    /// The worker's run, once it ran.
    outcome: Option<WorkerOutcome>,
    diff_stat: String,
}

impl Engine {
    /// Tries to resolve `task`'s conflict (in `files`) with the candidate
    /// at `onto`; `main_sha` is main under the candidate.
    pub(crate) async fn resolve_conflict(
        &self,
        task: &Task,
        onto: &str,
        main_sha: &str,
        files: &[String],
    ) -> Result<Resolution> {
        if self.project.resolve_conflicts == ResolveConflicts::Feedback {
            return Ok(Resolution::NotTried);
        }
        if self.store.task(task.id.as_str())?.status != TaskStatus::Merging {
            // Cancelled since the batch was taken.
            return Ok(Resolution::Cancelled);
        }
        // A resolution is slow: idle slots stop waiting for this landing.
        self.slow_merge.set();
        let cancel = self.cancels.register(&task.id);
        let result = self
            .resolve_watched(task, onto, main_sha, files, cancel)
            .await;
        self.cancels.unregister(&task.id);
        result
    }

    async fn resolve_watched(
        &self,
        task: &Task,
        onto: &str,
        main_sha: &str,
        files: &[String],
        cancel: CancellationToken,
    ) -> Result<Resolution> {
        let tid = task.id.as_str();
        let branch_sha = self.git.rev_parse(&task.branch()).await?;
        let attempt = self
            .store
            .start_attempt_of_kind(&task.id, onto, AttemptKind::Resolve)?;
        let dir = self
            .paths
            .worktree(&self.project.name, &format!("resolve-{tid}"));
        let mut r = Resolver {
            e: self,
            task,
            attempt,
            onto,
            branch_sha,
            dir,
            cancel,
            started: Instant::now(),
            system_prompt: String::new(),
            task_prompt: String::new(),
            files: files.to_vec(),
            outcome: None,
            diff_stat: String::new(),
        };
        let ran = r.run().await;
        let removed = self.remove_worktree(&r.dir).await;
        let ended = match ran.and_then(|ended| removed.map(|()| ended)) {
            Ok(ended) => ended,
            Err(err) => {
                r.record_error(&err.to_string());
                return Err(err);
            }
        };
        r.record(&ended)?;
        match ended {
            Ended::Resolved { head, .. } => {
                if onto == main_sha {
                    r.keep_on_branch(&head).await;
                }
                Ok(Resolution::Resolved { head })
            }
            Ended::Failed { why, .. } => Ok(Resolution::Failed { why }),
            Ended::Stopped => {
                if self.store.task(tid)?.status == TaskStatus::Cancelled {
                    return Ok(Resolution::Cancelled);
                }
                let reason = self
                    .cancels
                    .interrupt_reason(&task.id)
                    .unwrap_or_else(|| "stopped from outside".into());
                Err(EngineError::Interrupted(format!(
                    "the conflict resolution of task {tid} was interrupted ({reason})"
                )))
            }
        }
    }
}

impl Resolver<'_> {
    fn tid(&self) -> &str {
        self.task.id.as_str()
    }

    /// The resolution from start to verdict; the caller records it and
    /// removes the worktree.
    async fn run(&mut self) -> Result<Ended> {
        let e = self.e;
        e.git.worktree_add_detached(&self.dir, self.onto).await?;
        let message = format!(
            "Merge {}: {}\n\nTask: {}\nConflict resolved by attempt {} (orch's resolver)",
            self.task.branch(),
            self.task.title,
            self.tid(),
            self.attempt.number
        );
        let merged = e
            .git
            .merge_keeping_conflicts(&self.dir, &self.task.branch(), &message)
            .await?;
        let (head, summary) = match merged {
            // git merged what merge-tree could not: nothing to resolve.
            MergeOutcome::Clean { head } => (head, "git merged it cleanly".to_string()),
            MergeOutcome::Conflict { files: marked, .. } => {
                if !marked.is_empty() {
                    self.files = marked;
                }
                let files = self.files.clone();
                let summary = match self.work(&files).await? {
                    Ok(summary) => summary,
                    Err(ended) => return Ok(ended),
                };
                match self.commit(&files, &message).await? {
                    Ok(head) => (head, summary),
                    Err(ended) => return Ok(ended),
                }
            }
        };
        self.diff_stat = e.git.diff_stat(self.onto, &head).await?;
        if e.git.same_tree(&head, self.onto).await? {
            return Ok(Ended::Failed {
                why: format!(
                    "the resolution drops the task's change: its files are exactly what {} already had",
                    e.main_branch
                ),
                head: Some(head),
                report: None,
            });
        }
        self.verify(head, summary).await
    }

    /// The worker resolves the markers. Ok(Err(..)) when it did not finish.
    async fn work(&mut self, files: &[String]) -> Result<std::result::Result<String, Ended>> {
        let e = self.e;
        let route = crate::routing::route(&e.project, self.task, &e.meter.prices);
        let model = route
            .model_for_attempt(self.task.attempts.max(1))
            .cloned()
            .unwrap_or_else(|| e.project.worker_model.clone());
        let ctx = crate::metered::CallContext {
            role: "worker",
            task_id: Some(self.tid().to_string()),
            attempt_id: Some(self.attempt.id),
        };
        let (provider, model_name) = e.provider_for(&model, ctx)?;
        let worker = e.worker_for(route.worker)?;
        self.system_prompt = format!(
            "{}\n{}",
            crate::prompts::worker_system_prompt(self.task.task_type, &e.project.test_command),
            RESOLVER_RULES
        );
        self.task_prompt = self.prompt(files).await?;
        e.rec.note(
            Some(self.tid()),
            protocol::ConflictResolving {
                attempt_id: self.attempt.id,
                number: self.attempt.number,
                files: files.to_vec(),
                onto: self.onto.to_string(),
                model: Some(model.to_string()),
                worker: Some(worker.name().to_string()),
            },
            format!(
                "attempt {}: {model} resolves the merge conflict in {}",
                self.attempt.number,
                files.join(", ")
            ),
        );
        let spec = e.worker_spec(
            self.task,
            (provider, model_name),
            &self.dir,
            (&self.system_prompt, &self.task_prompt),
            &self.cancel,
        );
        let observer = EventObserver {
            rec: e.rec.clone(),
            task: self.tid().to_string(),
            attempt_id: self.attempt.id,
            attempt: self.attempt.number,
        };
        let outcome = worker.run(spec, &observer).await;
        e.store.add_task_usage(&self.task.id, &outcome.usage)?;
        let end = outcome.end.clone();
        self.outcome = Some(outcome);
        let why = match end {
            WorkerEnd::Finished { summary } => return Ok(Ok(summary)),
            WorkerEnd::Cancelled => return Ok(Err(Ended::Stopped)),
            WorkerEnd::ModelError { message }
                if !message.contains(crate::metered::TASK_BUDGET_REACHED) =>
            {
                // An outage or the daily budget: not the work's fault; the
                // batch waits for the next cycle.
                return Err(EngineError::Provider(format!(
                    "the conflict resolver's model call failed: {message}"
                )));
            }
            WorkerEnd::ModelError { message } => format!("its model call was refused: {message}"),
            WorkerEnd::AskedHuman { question } => {
                format!("it asked a question instead of resolving: {question}")
            }
            WorkerEnd::TurnLimit => format!(
                "it used all {} turns (max_turns) without calling finish",
                e.project.max_turns
            ),
            WorkerEnd::TimedOut => format!(
                "it ran out of time ({} s, worker_timeout_seconds)",
                e.project.worker_timeout_seconds
            ),
            WorkerEnd::Stuck { detail } => format!("it was stopped as stuck: {detail}"),
        };
        Ok(Err(Ended::failed(format!("the resolver stopped: {why}"))))
    }

    /// The commit boundary: the task's limits, no marker left, then the
    /// merge commit with both parents. Ok(Err(..)) when it may not land.
    async fn commit(
        &self,
        files: &[String],
        message: &str,
    ) -> Result<std::result::Result<String, Ended>> {
        let e = self.e;
        // Refused changes are reverted and recorded; the rest may land.
        e.enforce_change_set(self.task, self.attempt.number, &self.dir, None)
            .await?;
        let marked = marker_files(&self.dir, files);
        if !marked.is_empty() {
            return Ok(Err(Ended::failed(format!(
                "conflict markers (lines starting with <<<<<<<, ||||||| or >>>>>>>) are still in: {}",
                marked.join(", ")
            ))));
        }
        let undone = || {
            Ended::failed(
                "the merge was undone in the worktree instead of resolved (orch commits the merge; do not run `git merge --abort`, `git commit` or `git reset`)",
            )
        };
        let Some(head) = e.git.commit_staged(&self.dir, message).await? else {
            return Ok(Err(undone()));
        };
        let first = e.git.rev_parse(&format!("{head}^1")).await.ok();
        let second = e.git.rev_parse(&format!("{head}^2")).await.ok();
        if first.as_deref() != Some(self.onto) || second.as_deref() != Some(&self.branch_sha) {
            return Ok(Err(undone()));
        }
        let refname = self.task.id.attempt_ref(self.attempt.number);
        e.git.keep_ref(&refname, &head).await?;
        Ok(Ok(head))
    }

    /// The whole verification on the merge commit, against the task's goal.
    async fn verify(&self, head: String, summary: String) -> Result<Ended> {
        let e = self.e;
        if self.cancel.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        let (commands, options) = (e.verify_commands(), e.verify_options());
        let run = orch_verify::run_steps(e.sandbox.as_ref(), &self.dir, &commands, &options);
        let steps = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Ok(Ended::Stopped),
            steps = run => steps?,
        };
        let baseline = e.baseline_if_needed(self.onto, &steps).await?;
        let report = orch_verify::assess(steps, baseline.as_ref(), false, &e.test_goal(self.task));
        e.rec.note(
            Some(self.tid()),
            protocol::VerificationFinished::from_report(
                &report,
                Some(Stage::Merge),
                None,
                Some(&self.attempt),
            ),
            format!(
                "verification of the conflict resolution {}: {}",
                if report.passed { "passed" } else { "failed" },
                first_line(&report.summary)
            ),
        );
        if !report.passed {
            let verdict = Verdict {
                passed: false,
                score: None,
                reasoning: String::new(),
                issues: vec![],
                gates: vec![],
            };
            return Ok(Ended::Failed {
                why: format!(
                    "the resolution fails verification.\n\n{}",
                    feedback_text(&report, &verdict)
                ),
                head: Some(head),
                report: Some(report),
            });
        }
        Ok(Ended::Resolved {
            head,
            summary,
            report,
        })
    }

    /// The resolver's prompt: the task, both sides' intent, the files.
    async fn prompt(&self, files: &[String]) -> Result<String> {
        let e = self.e;
        let work = e
            .store
            .attempts(&self.task.id)?
            .into_iter()
            .rev()
            .find(|a| a.kind == AttemptKind::Work && a.status == AttemptStatus::Passed);
        let landed = match work.as_ref().and_then(|a| a.base_commit.as_deref()) {
            Some(base) => e.git.log_subjects(base, self.onto, LANDED_SHOWN).await?,
            None => Vec::new(),
        };
        let summary = work
            .and_then(|a| a.summary)
            .unwrap_or_else(|| "(no summary recorded)".into());
        Ok(resolver_prompt(
            self.task,
            &e.main_branch,
            &summary,
            &landed,
            files,
            &e.project.test_command,
        ))
    }

    /// Points the task's branch at the verified resolution (it contains
    /// the branch), so a landing retried after main moves, and a lone
    /// landing's check, reuse it. Only for a resolution onto main itself:
    /// one onto batch-mates would carry their unlanded work.
    async fn keep_on_branch(&self, head: &str) {
        let branch = self.task.branch();
        if let Err(err) = self
            .e
            .git
            .advance_branch(&branch, head, &self.branch_sha)
            .await
        {
            self.e.rec.note(
                Some(self.tid()),
                protocol::Warning::at(Stage::Merge),
                format!("could not move {branch} to the resolution (it lands anyway): {err}"),
            );
        }
    }

    /// Writes the attempt's end, its audit files and the outcome event.
    fn record(&self, ended: &Ended) -> Result<()> {
        let e = self.e;
        let usage = self.outcome.as_ref().map(|o| o.usage).unwrap_or_default();
        let (status, outcome, reason, head, report, summary) = match ended {
            Ended::Resolved {
                head,
                summary,
                report,
            } => (
                AttemptStatus::Passed,
                ResolutionOutcome::Resolved,
                None,
                Some(head.clone()),
                Some(report),
                Some(summary.clone()),
            ),
            Ended::Failed { why, head, report } => (
                AttemptStatus::Failed,
                ResolutionOutcome::Failed,
                Some(why.clone()),
                head.clone(),
                report.as_ref(),
                None,
            ),
            Ended::Stopped => (
                AttemptStatus::Cancelled,
                ResolutionOutcome::Stopped,
                Some("stopped during the conflict resolution".to_string()),
                None,
                None,
                None,
            ),
        };
        let audit_md = self.e.paths.attempts(&e.project.name).join(format!(
            "{}-{}.md",
            self.tid(),
            self.attempt.number
        ));
        self.write_audit(&audit_md, status, report, reason.as_deref(), usage)?;
        let mut fin = AttemptFinish::new(status);
        fin.usage = usage;
        fin.turns = self.outcome.as_ref().map(|o| o.turns).unwrap_or(0);
        fin.head_commit = head.clone();
        fin.summary = summary;
        fin.diff_stat = Some(self.diff_stat.clone());
        fin.verification = report.and_then(|r| serde_json::to_value(r).ok());
        fin.audit_path = Some(audit_md.display().to_string());
        fin.error = reason.clone();
        e.store.finish_attempt(self.attempt.id, &fin)?;
        let word = match outcome {
            ResolutionOutcome::Resolved => "resolved; the merge passed verification",
            ResolutionOutcome::Failed => "failed",
            ResolutionOutcome::Stopped => "stopped",
        };
        e.rec.note(
            Some(self.tid()),
            protocol::ConflictResolved {
                attempt_id: self.attempt.id,
                number: self.attempt.number,
                files: self.files.clone(),
                outcome,
                reason: reason.clone(),
                commit: head,
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
            format!(
                "attempt {}: merge conflict {word}{}",
                self.attempt.number,
                reason
                    .as_deref()
                    .map(|r| format!(": {}", first_line(r)))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    fn write_audit(
        &self,
        path: &Path,
        status: AttemptStatus,
        report: Option<&VerificationReport>,
        feedback: Option<&str>,
        usage: Usage,
    ) -> Result<()> {
        let transcript = self
            .outcome
            .as_ref()
            .map(|o| o.transcript.as_slice())
            .unwrap_or_default();
        let json = serde_json::to_string_pretty(transcript).unwrap_or_default();
        write_atomic(&path.with_extension("json"), &json)
            .map_err(io_err("writing the resolver's transcript"))?;
        let md = attempt_markdown(&AttemptRecord {
            task: self.task,
            attempt: &self.attempt,
            outcome: &format!("conflict resolution {}", status.as_str()),
            system_prompt: &self.system_prompt,
            task_prompt: &self.task_prompt,
            transcript,
            diff_stat: &self.diff_stat,
            usage,
            turns: self.outcome.as_ref().map(|o| o.turns).unwrap_or(0),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            report,
            feedback,
        });
        write_atomic(path, &md).map_err(io_err(format!("writing {}", path.display())))
    }

    /// orch failed under the resolver: its attempt ends as an error (not
    /// counted), or as interrupted when it was stopped from outside.
    fn record_error(&self, message: &str) {
        let e = self.e;
        let interrupted = self.cancel.is_cancelled();
        let mut fin = AttemptFinish::new(if interrupted {
            AttemptStatus::Cancelled
        } else {
            AttemptStatus::Error
        });
        fin.usage = self.outcome.as_ref().map(|o| o.usage).unwrap_or_default();
        fin.turns = self.outcome.as_ref().map(|o| o.turns).unwrap_or(0);
        fin.error = Some(message.to_string());
        if let Err(err) = e.store.finish_attempt(self.attempt.id, &fin) {
            tracing::warn!(
                "cannot record the end of resolver attempt {}: {err}",
                self.attempt.id
            );
        }
        e.rec.note(
            Some(self.tid()),
            protocol::ConflictResolved {
                attempt_id: self.attempt.id,
                number: self.attempt.number,
                files: self.files.clone(),
                outcome: ResolutionOutcome::Stopped,
                reason: Some(message.to_string()),
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                ..Default::default()
            },
            format!(
                "attempt {}: merge conflict not resolved, orch failed under it: {}",
                self.attempt.number,
                first_line(message)
            ),
        );
    }
}

/// What the resolver is told on top of the worker's rules.
const RESOLVER_RULES: &str = "This time your job is different: your earlier change passed, but it clashes with changes \
merged into main since. The worktree is in the middle of a `git merge` of your branch into the current main. \
Resolve the conflicts in the files listed, keeping the intent of both sides; change nothing else. \
Do not run git commands: orch commits the merge when you call finish.\n";

/// The first user message of a resolver attempt.
fn resolver_prompt(
    task: &Task,
    main: &str,
    summary: &str,
    landed: &[String],
    files: &[String],
    test_command: &str,
) -> String {
    let mut p = format!(
        "# Resolve a merge conflict: {}\n\nType: {}\n\n{}\n",
        task.title,
        task.task_type,
        crate::prompts::description(task)
    );
    if !task.acceptance_tests.is_empty() {
        p.push_str(&format!(
            "\nThe task is done when these tests pass: {}\n",
            task.acceptance_tests.join(", ")
        ));
    }
    p.push_str(&format!(
        "\n## Your change (it passed on its own)\n\n{}\n",
        summary.trim()
    ));
    p.push_str(&format!("\n## What landed on {main} since you started\n\n"));
    if landed.is_empty() {
        p.push_str("(not recorded; read the other side of the markers)\n");
    }
    for s in landed {
        p.push_str(&format!("- {s}\n"));
    }
    p.push_str(&format!(
        "\n## Conflicted files\n\n{}\n\n\
Each conflict looks like this: `<<<<<<<` then the current {main}'s version, `|||||||` then the common \
base, `=======` then your branch's version, `>>>>>>>`. Replace every such block with code that keeps \
both changes' intent, remove every marker line, ",
        files
            .iter()
            .map(|f| format!("- {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    if test_command.is_empty() {
        p.push_str("and call finish with a summary of how you combined them.\n");
    } else {
        p.push_str(&format!(
            "run the tests (`{test_command}`), and call finish with a summary of how you combined them.\n"
        ));
    }
    p.push_str(
        "\nA file that still holds a marker line, or a resolution that drops your change, is rejected; \
so is one that fails verification.\n",
    );
    p
}

/// The files of `files` (relative to `dir`) that still hold a conflict
/// marker line; a deleted file holds none.
fn marker_files(dir: &Path, files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| {
            let Ok(bytes) = std::fs::read(dir.join(f)) else {
                return false;
            };
            String::from_utf8_lossy(&bytes)
                .lines()
                .any(|l| MARKERS.iter().any(|m| l.starts_with(m)))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::TaskId;

    fn task() -> Task {
        Task {
            id: TaskId::from("abc"),
            title: "Let add take three numbers".into(),
            description: "add(a, b, c=0)".into(),
            acceptance_tests: vec!["test_three.py".into()],
            status: TaskStatus::Merging,
            attempts: 1,
            ..orch_testkit::fixtures::task()
        }
    }
    #[test]
    fn a_marker_line_anywhere_in_a_conflicted_file_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("clean.py", "x = '<<<<<<< not at line start'\n=======\n");
        write("ours.py", "a\n<<<<<<< HEAD\nb\n");
        write("base.py", "a\n||||||| base\n");
        write("theirs.py", "a\n>>>>>>> orch/abc\n");
        let files: Vec<String> = ["clean.py", "ours.py", "base.py", "theirs.py", "deleted.py"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            marker_files(dir.path(), &files),
            ["ours.py", "base.py", "theirs.py"]
        );
    }

    #[test]
    fn the_prompt_carries_both_sides_the_files_and_the_rules() {
        let p = resolver_prompt(
            &task(),
            "main",
            "add takes a third number",
            &["Merge orch/def: Let add take strings".into()],
            &["calc.py".into()],
            "pytest -q",
        );
        assert!(p.starts_with("# Resolve a merge conflict: Let add take three numbers\n"));
        assert!(p.contains("add takes a third number"));
        assert!(p.contains("## What landed on main since you started"));
        assert!(p.contains("- Merge orch/def: Let add take strings"));
        assert!(p.contains("- calc.py"));
        assert!(p.contains("`pytest -q`"));
        assert!(p.contains("test_three.py"));
        assert!(!p.contains("# Task:"), "a work prompt's header: {p}");
    }
}
