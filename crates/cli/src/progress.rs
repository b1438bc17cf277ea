//! Live progress: the event bus, printed as readable lines (elapsed time,
//! task, stage, message). The store broadcasts each event after it commits
//! it, so this shows exactly what was recorded, and nothing more. Events
//! whose payload says more than their message (best-of-N rounds,
//! refinement, conflict resolution, archives) get a line of their own,
//! written from the payload ([`describe`]).

use orch_protocol::{
    CandidatesRanked, CandidatesStarted, ConflictResolved, ConflictResolving, Event, Payload,
    RefineIteration, RefineStop, RefineStopped, ResolutionOutcome,
};
use orch_state::StateStore;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

pub struct Progress {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// Prints the events of one project.
struct Printer {
    store: Arc<dyn StateStore>,
    project: String,
    to_stderr: bool,
    started: Instant,
    titles: HashMap<String, String>,
}

impl Printer {
    fn print(&mut self, e: &Event) {
        if e.project != self.project {
            return;
        }
        let Some(line) = render(e, self.started.elapsed(), &self.store, &mut self.titles) else {
            return;
        };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }

    async fn follow(mut self, mut rx: Receiver<Event>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = rx.recv() => match ev {
                    Ok(e) => self.print(&e),
                    // Too far behind to show every line: skip ahead.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
            }
        }
        // What was committed before the stop is already in the channel.
        loop {
            match rx.try_recv() {
                Ok(e) => self.print(&e),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    }
}

impl Progress {
    /// Starts following events of `project` recorded after now. Lines go to
    /// stderr when `to_stderr` (so `--json` keeps stdout clean). Must be
    /// called inside the tokio runtime.
    pub fn start(store: Arc<dyn StateStore>, project: &str, to_stderr: bool) -> Progress {
        let stop = CancellationToken::new();
        let handle = match store.subscribe() {
            Ok(rx) => {
                let printer = Printer {
                    store: store.clone(),
                    project: project.to_string(),
                    to_stderr,
                    started: Instant::now(),
                    titles: HashMap::new(),
                };
                Some(tokio::spawn(printer.follow(rx, stop.clone())))
            }
            Err(e) => {
                eprintln!("orch: no live progress: {e}");
                None
            }
        };
        Progress { stop, handle }
    }

    /// Prints what is left and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

fn render(
    e: &Event,
    elapsed: Duration,
    store: &dyn StateStore,
    titles: &mut HashMap<String, String>,
) -> Option<String> {
    let (stage, message) = describe(e)?;
    let task = match &e.task_id {
        Some(id) => {
            let title = titles
                .entry(id.clone())
                .or_insert_with(|| store.task(id).map(|t| t.title).unwrap_or_default())
                .clone();
            format!("{id} {}", shorten(&title, 28))
        }
        None => String::new(),
    };
    Some(format!(
        "{:>7.1}s  {:<42} {:<14} {}",
        elapsed.as_secs_f64(),
        task,
        stage,
        shorten(&message, 160)
    ))
}

/// The label and the text of `e`'s line; None for events not shown.
fn describe(e: &Event) -> Option<(String, String)> {
    if let Some(line) = described_by_payload(&e.payload) {
        return Some(line);
    }
    let stage = match &e.payload {
        Payload::StatusChanged(c) => c.to.as_str().to_string(),
        Payload::StageStarted(s) => s.stage.as_str().to_string(),
        Payload::StageFinished(_) => return None,
        Payload::ModelCall(_) => "model".into(),
        Payload::ToolCall(_) => "tool".into(),
        Payload::ToolRefused(_) => "REFUSED".into(),
        Payload::Warning(_) => "WARNING".into(),
        Payload::TaskClaimed(_) => return None,
        // Successful tries are the normal case; show only failed ones.
        Payload::ModelTry(t) if t.error.is_none() => return None,
        Payload::ModelTry(_) => "retry".into(),
        Payload::ProviderHealth(_) => "provider".into(),
        Payload::CycleStarted(_) | Payload::CycleFinished(_) => "cycle".into(),
        Payload::TaskCreated(_) => "created".into(),
        Payload::PlanCreated(_) => "planned".into(),
        Payload::AttemptStarted(_) | Payload::AttemptFinished(_) => "attempt".into(),
        Payload::AttemptInterrupted(_) => "interrupted".into(),
        Payload::VerificationFinished(_) => "verified".into(),
        Payload::VerdictRecorded(_) => "verdict".into(),
        Payload::MergeQueued(_) => "queued".into(),
        Payload::MergeRejected(_) => "merge-rejected".into(),
        Payload::MergeDeferred(_) => "merge-deferred".into(),
        Payload::PatrolInterrupted(_) => "patrol".into(),
        other => other.kind().as_str().to_string(),
    };
    let mut message = e.message.clone();
    let args = match &e.payload {
        Payload::ToolCall(t) => Some(t.arguments.as_str()),
        Payload::ToolRefused(t) => t.arguments.as_deref(),
        _ => None,
    };
    if let Some(args) = args {
        message = format!("{message} {}", shorten(args, 70));
    }
    Some((stage, message))
}

/// Lines written from the payload, for the kinds whose payload tells more
/// than their message.
fn described_by_payload(p: &Payload) -> Option<(String, String)> {
    let line = match p {
        Payload::CandidatesStarted(c) => ("candidates", candidates_started(c)),
        Payload::CandidatesRanked(r) => ("ranked", candidates_ranked(r)),
        Payload::RefineIteration(i) => ("refine", refine_iteration(i)),
        Payload::RefineStopped(s) => ("refine", refine_stopped(s)),
        Payload::ConflictResolving(c) => ("conflict", conflict_resolving(c)),
        Payload::ConflictResolved(c) => ("conflict", conflict_resolved(c)),
        Payload::ProjectCreated(c) => (
            "project",
            format!("created at {} from {}", c.path, c.requirements),
        ),
        Payload::ProjectArchived(a) => (
            "archived",
            format!(
                "{} ({}, main at {})",
                a.path,
                bytes_text(a.bytes),
                short_sha(&a.commit)
            ),
        ),
        _ => return None,
    };
    Some((line.0.to_string(), line.1))
}

/// `3 started (c1 local:qwen, c2 oai:gpt-4o-mini, c3 ant:claude via aider)`.
fn candidates_started(c: &CandidatesStarted) -> String {
    let slots: Vec<String> = c
        .slots
        .iter()
        .map(|s| {
            let model = if s.model.is_empty() { "?" } else { &s.model };
            match s.worker.as_str() {
                "" | "builtin" => format!("c{} {model}", s.candidate),
                w => format!("c{} {model} via {w}", s.candidate),
            }
        })
        .collect();
    if slots.is_empty() {
        format!("{} started", c.candidates)
    } else {
        format!("{} started ({})", c.candidates, slots.join(", "))
    }
}

/// `c3 > c1 (c3: adds any two numbers)`, how the order was decided, and
/// why the judge's ranking was not used when it was not.
fn candidates_ranked(r: &CandidatesRanked) -> String {
    if r.order.is_empty() {
        return "no candidate passed; nothing to rank".into();
    }
    let order: Vec<String> = r.order.iter().map(|k| format!("c{k}")).collect();
    let why = r
        .reasons
        .first()
        .filter(|w| !w.trim().is_empty())
        .map(|w| format!(" ({}: {w})", order[0]))
        .unwrap_or_default();
    let method = match r.method.as_str() {
        "judge" => "",
        "scores" => ", by the judges' scores",
        "only" => ", the only one that passed",
        _ => "",
    };
    let warning = r
        .warning
        .as_deref()
        .map(|w| format!("; the judge's ranking was not used: {w}"))
        .unwrap_or_default();
    format!("{}{why}{method}{warning}", order.join(" > "))
}

/// `iteration 2 scored 7.0 (best 7.0, kept)`.
fn refine_iteration(i: &RefineIteration) -> String {
    let scored = match i.score {
        Some(s) => format!("scored {s:.1}"),
        None => "not scored".into(),
    };
    let best = match i.best_score {
        Some(b) if i.best_iteration == i.iteration => format!("best {b:.1}"),
        Some(b) => format!("best {b:.1} at iteration {}", i.best_iteration),
        None => "no best score yet".into(),
    };
    let outcome = match i.outcome {
        orch_core::IterationOutcome::Reverted => {
            format!("reverted to iteration {}", i.best_iteration)
        }
        other => other.as_str().to_string(),
    };
    format!(
        "attempt {} iteration {} {scored} ({best}, {outcome})",
        i.number, i.iteration
    )
}

/// `stopped after 3 iterations: the score reached the threshold; best iteration 2 (7.5), passed`.
fn refine_stopped(s: &RefineStopped) -> String {
    let why = match s.reason {
        RefineStop::Threshold => "the score reached the threshold".to_string(),
        RefineStop::MaxIterations => "max_iterations reached".to_string(),
        RefineStop::Plateau => "no better score for `plateau` iterations".to_string(),
        RefineStop::WorkerStopped => match &s.detail {
            Some(d) => format!("the worker stopped: {d}"),
            None => "the worker stopped".to_string(),
        },
    };
    let score = s
        .best_score
        .map(|b| format!(" ({b:.1})"))
        .unwrap_or_default();
    format!(
        "attempt {} stopped after {} iterations: {why}; best iteration {}{score}, {}",
        s.number,
        s.iterations,
        s.best_iteration,
        if s.passed { "passed" } else { "not passed" }
    )
}

/// `in calc.py: resolver started (local:qwen)`.
fn conflict_resolving(c: &ConflictResolving) -> String {
    let by = c
        .model
        .as_deref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    format!("in {}: resolver started{by}", files_text(&c.files))
}

/// `in calc.py: resolved and verified (1a2b3c4d5e, 12.3 s)`, or why not.
fn conflict_resolved(c: &ConflictResolved) -> String {
    let took = format!("{:.1} s", c.duration_ms as f64 / 1000.0);
    let why = c
        .reason
        .as_deref()
        .map(|r| format!(": {}", r.lines().next().unwrap_or("")))
        .unwrap_or_default();
    let files = files_text(&c.files);
    match c.outcome {
        ResolutionOutcome::Resolved => {
            let commit = c
                .commit
                .as_deref()
                .map(|h| format!("{}, ", short_sha(h)))
                .unwrap_or_default();
            format!("in {files}: resolved and verified ({commit}{took})")
        }
        ResolutionOutcome::Failed => format!("in {files}: resolver failed after {took}{why}"),
        ResolutionOutcome::Stopped => format!("in {files}: resolver stopped after {took}{why}"),
    }
}

/// `calc.py, util.py` (the first three, then how many more).
fn files_text(files: &[String]) -> String {
    match files.len() {
        0 => "the branch".into(),
        1..=3 => files.join(", "),
        n => format!("{} and {} more", files[..3].join(", "), n - 3),
    }
}

fn short_sha(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// `812 B`, `12.3 KiB`, `4.0 MiB`.
fn bytes_text(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / (KIB * KIB))
    }
}

fn shorten(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let cut: String = one_line.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use orch_core::IterationOutcome;
    use orch_protocol::CandidateSlot;

    fn line(payload: impl Into<Payload>) -> (String, String) {
        describe(&Event::new("calc", payload, "the recorded message")).expect("shown")
    }

    fn slot(k: u32, model: &str, worker: &str) -> CandidateSlot {
        CandidateSlot {
            candidate: k,
            model: model.into(),
            worker: worker.into(),
            branch: format!("orch/t-c{k}"),
        }
    }

    #[test]
    fn a_round_of_candidates_and_its_ranking() {
        let started = line(CandidatesStarted {
            candidates: 3,
            slots: vec![
                slot(1, "local:qwen", "builtin"),
                slot(2, "oai:gpt-4o-mini", "builtin"),
                slot(3, "ant:claude", "aider"),
            ],
        });
        assert_eq!(
            started,
            (
                "candidates".into(),
                "3 started (c1 local:qwen, c2 oai:gpt-4o-mini, c3 ant:claude via aider)".into()
            )
        );
        let ranked = |method: &str, warning: Option<&str>| {
            line(CandidatesRanked {
                order: vec![3, 1],
                reasons: vec!["adds any two numbers".into(), "special-cases".into()],
                attempts: vec![3, 1],
                winner: Some(3),
                method: method.into(),
                warning: warning.map(str::to_string),
            })
        };
        assert_eq!(
            ranked("judge", None),
            ("ranked".into(), "c3 > c1 (c3: adds any two numbers)".into())
        );
        assert_eq!(
            ranked("scores", Some("the answer named candidate 2, which failed")).1,
            "c3 > c1 (c3: adds any two numbers), by the judges' scores; the judge's ranking was not used: the answer named candidate 2, which failed"
        );
        let none = line(CandidatesRanked {
            method: "none".into(),
            ..Default::default()
        });
        assert_eq!(none.1, "no candidate passed; nothing to rank");
    }

    fn iteration(n: u32, score: Option<f64>, outcome: IterationOutcome, best: u32) -> Payload {
        RefineIteration {
            attempt_id: 7,
            number: 1,
            iteration: n,
            score,
            outcome,
            best_score: Some(7.0),
            best_iteration: best,
            commit: Some("1a2b3c4d5e6f".into()),
            reverted_to: None,
        }
        .into()
    }

    #[test]
    fn refinement_iterations_and_the_stop() {
        assert_eq!(
            line(iteration(2, Some(7.0), IterationOutcome::Kept, 2)),
            (
                "refine".into(),
                "attempt 1 iteration 2 scored 7.0 (best 7.0, kept)".into()
            )
        );
        assert_eq!(
            line(iteration(3, Some(6.0), IterationOutcome::Reverted, 2)).1,
            "attempt 1 iteration 3 scored 6.0 (best 7.0 at iteration 2, reverted to iteration 2)"
        );
        assert_eq!(
            line(iteration(4, None, IterationOutcome::Unchanged, 2)).1,
            "attempt 1 iteration 4 not scored (best 7.0 at iteration 2, unchanged)"
        );
        let stopped = |reason, detail: Option<&str>| {
            line(RefineStopped {
                attempt_id: 7,
                number: 1,
                reason,
                iterations: 4,
                best_iteration: 2,
                best_score: Some(7.0),
                passed: true,
                detail: detail.map(str::to_string),
            })
            .1
        };
        assert_eq!(
            stopped(RefineStop::Plateau, None),
            "attempt 1 stopped after 4 iterations: no better score for `plateau` iterations; best iteration 2 (7.0), passed"
        );
        assert!(
            stopped(RefineStop::WorkerStopped, Some("budget spent"))
                .contains(": the worker stopped: budget spent; "),
            "why the worker stopped is said"
        );
    }

    #[test]
    fn a_conflict_resolution_from_start_to_each_end() {
        let files = vec!["calc.py".to_string()];
        assert_eq!(
            line(ConflictResolving {
                attempt_id: 9,
                number: 2,
                files: files.clone(),
                onto: "abc".into(),
                model: Some("local:qwen".into()),
                worker: Some("builtin".into()),
            }),
            (
                "conflict".into(),
                "in calc.py: resolver started (local:qwen)".into()
            )
        );
        let ended = |outcome, reason: Option<&str>, commit: Option<&str>| {
            line(ConflictResolved {
                attempt_id: 9,
                number: 2,
                files: files.clone(),
                outcome,
                reason: reason.map(str::to_string),
                commit: commit.map(str::to_string),
                duration_ms: 12_345,
            })
            .1
        };
        assert_eq!(
            ended(ResolutionOutcome::Resolved, None, Some("1a2b3c4d5e6f7a8b")),
            "in calc.py: resolved and verified (1a2b3c4d5e, 12.3 s)"
        );
        assert_eq!(
            ended(
                ResolutionOutcome::Failed,
                Some("conflict markers left in calc.py\nline 3"),
                None
            ),
            "in calc.py: resolver failed after 12.3 s: conflict markers left in calc.py"
        );
        assert_eq!(
            ended(ResolutionOutcome::Stopped, Some("cancelled"), None),
            "in calc.py: resolver stopped after 12.3 s: cancelled"
        );
        assert_eq!(
            files_text(&["a", "b", "c", "d", "e"].map(String::from)),
            "a, b, c and 2 more"
        );
    }

    #[test]
    fn projects_made_and_archived() {
        assert_eq!(
            line(orch_protocol::ProjectCreated {
                path: "/data/projects/todo".into(),
                requirements: "todo.md".into(),
                commit: "abc".into(),
            }),
            (
                "project".into(),
                "created at /data/projects/todo from todo.md".into()
            )
        );
        assert_eq!(
            line(orch_protocol::ProjectArchived {
                path: "/data/archive/todo_20260301T120000Z.tar.gz".into(),
                bytes: 12_600,
                commit: "1a2b3c4d5e6f".into(),
            }),
            (
                "archived".into(),
                "/data/archive/todo_20260301T120000Z.tar.gz (12.3 KiB, main at 1a2b3c4d5e)".into()
            )
        );
        assert_eq!(bytes_text(812), "812 B");
        assert_eq!(bytes_text(4 * 1024 * 1024), "4.0 MiB");
    }

    #[test]
    fn other_kinds_keep_their_label_and_message() {
        let e = Event::new(
            "calc",
            orch_protocol::MergeQueued {
                branch: "orch/t".into(),
            },
            "queued for merge",
        );
        assert_eq!(
            describe(&e),
            Some(("queued".into(), "queued for merge".into()))
        );
        let finished = orch_protocol::StageFinished::new(
            orch_protocol::Stage::Work,
            Some(1),
            Duration::from_millis(5),
            true,
        );
        assert_eq!(describe(&Event::new("calc", finished, "m")), None);
    }
}
