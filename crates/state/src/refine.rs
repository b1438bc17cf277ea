//! Refinement iterations: each judged iteration of a refining attempt is
//! appended to the attempt's `iterations` while it runs, with its
//! `refine_iteration` event in the same transaction. A finished attempt is
//! never rewritten, so its iterations are final when it ends.

use crate::Cached;

use crate::codec::{attempt_from_row, insert_event, ATTEMPT_COLUMNS};
use crate::error::{Result, StateError};
use crate::tasks::require_task;
use crate::Store;
use orch_core::refine::score_text;
use orch_core::{AttemptStatus, IterationOutcome, RefineIteration};
use orch_protocol::{self as protocol, Event};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Appends `iteration` to the running attempt's iterations and records
    /// its `refine_iteration` event. Fails for an attempt that is not
    /// running.
    pub fn record_iteration(&self, attempt_id: i64, iteration: &RefineIteration) -> Result<()> {
        self.write(|tx| {
            let attempt = tx
                .row_cached(
                    &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?1"),
                    [attempt_id],
                    attempt_from_row,
                )
                .optional()?
                .ok_or_else(|| StateError::NotFound {
                    what: format!("no attempt has id {attempt_id}; list a task's attempts with `orch show <task>`"),
                })?;
            if attempt.status != AttemptStatus::Running {
                return Err(StateError::AttemptNotRunning {
                    attempt_id,
                    status: attempt.status.as_str().to_string(),
                });
            }
            let mut all = attempt.iterations;
            all.push(iteration.clone());
            let json = serde_json::to_string(&all).map_err(|e| {
                StateError::Invalid(format!("iterations are not serialisable: {e}"))
            })?;
            tx.run_cached(
                "UPDATE attempts SET iterations = ?1 WHERE id = ?2 AND status = 'running'",
                params![json, attempt_id],
            )?;
            let reverted_to = (iteration.outcome == IterationOutcome::Reverted)
                .then(|| {
                    all.iter()
                        .find(|i| i.iteration == iteration.best_iteration)
                        .and_then(|best| best.commit.clone())
                        .or_else(|| attempt.base_commit.clone())
                })
                .flatten();
            let task = require_task(tx, attempt.task_id.as_str())?;
            let message = iteration_message(attempt.number, iteration, reverted_to.as_deref());
            let ev = Event::new(
                &task.project,
                protocol::RefineIteration {
                    attempt_id,
                    number: attempt.number,
                    iteration: iteration.iteration,
                    score: iteration.score,
                    outcome: iteration.outcome,
                    best_score: iteration.best_score,
                    best_iteration: iteration.best_iteration,
                    commit: iteration.commit.clone(),
                    reverted_to,
                },
                message,
            )
            .task(task.id.as_str());
            insert_event(tx, &ev)?;
            Ok(())
        })
    }
}

/// `attempt 1, iteration 3: score 6.0, reverted to iteration 2 (score 7.0, 1a2b3c4d5e6f)`.
fn iteration_message(number: u32, it: &RefineIteration, reverted_to: Option<&str>) -> String {
    let head = format!(
        "attempt {number}, iteration {}: {}",
        it.iteration,
        score_text(it.score)
    );
    let best = format!(
        "iteration {} ({})",
        it.best_iteration,
        score_text(it.best_score)
    );
    match it.outcome {
        IterationOutcome::Kept => format!("{head}, kept as the best snapshot"),
        IterationOutcome::Unchanged => format!("{head}, changed nothing; the best is {best}"),
        IterationOutcome::Reverted => format!(
            "{head}, reverted to {best}{}",
            reverted_to
                .map(|c| format!(" at {}", &c[..c.len().min(12)]))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::AttemptFinish;
    use orch_core::NewTask;
    use orch_protocol::EventKind;

    fn iteration(n: u32, score: f64, outcome: IterationOutcome, best: u32) -> RefineIteration {
        RefineIteration {
            iteration: n,
            score: Some(score),
            commit: Some(format!("{n:0>40}")),
            tests_passed: true,
            verdict_passed: score >= 6.0,
            outcome,
            best_score: Some(7.0),
            best_iteration: best,
            note: None,
        }
    }

    #[test]
    fn iterations_append_with_their_events_until_the_attempt_finishes() {
        let store = Store::open_in_memory().unwrap();
        store.ensure_project("p", "/r").unwrap();
        let t = store
            .add_task(&NewTask {
                project: "p".into(),
                title: "t".into(),
                ..NewTask::default()
            })
            .unwrap();
        let a = store.start_attempt(&t.id, "base").unwrap();
        assert!(a.iterations.is_empty());
        store
            .record_iteration(a.id, &iteration(1, 7.0, IterationOutcome::Kept, 1))
            .unwrap();
        store
            .record_iteration(a.id, &iteration(2, 6.0, IterationOutcome::Reverted, 1))
            .unwrap();
        let stored = &store.attempts(&t.id).unwrap()[0];
        let scores: Vec<_> = stored.iterations.iter().map(|i| i.score).collect();
        assert_eq!(scores, [Some(7.0), Some(6.0)]);
        assert_eq!(stored.iterations[1].outcome, IterationOutcome::Reverted);

        let events = store
            .events(&crate::EventFilter {
                task_id: Some(t.id.to_string()),
                ..Default::default()
            })
            .unwrap();
        let refined: Vec<_> = events
            .iter()
            .filter(|e| e.kind() == EventKind::RefineIteration)
            .collect();
        assert_eq!(refined.len(), 2);
        match &refined[1].payload {
            protocol::Payload::RefineIteration(p) => {
                assert_eq!(p.reverted_to.as_deref(), Some(&*format!("{:0>40}", 1)));
                assert_eq!(p.outcome, IterationOutcome::Reverted);
            }
            other => panic!("unexpected payload {other:?}"),
        }
        assert!(
            refined[1].message.contains("reverted to iteration 1"),
            "{}",
            refined[1].message
        );

        store
            .finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Failed))
            .unwrap();
        let late = store.record_iteration(a.id, &iteration(3, 9.0, IterationOutcome::Kept, 3));
        assert!(matches!(late, Err(StateError::AttemptNotRunning { .. })));
        assert_eq!(store.attempts(&t.id).unwrap()[0].iterations.len(), 2);
    }
}
