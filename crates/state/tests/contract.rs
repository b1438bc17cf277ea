//! The contract every `StateStore` implementation keeps, written against
//! the trait alone. SQLite runs it here; a Postgres implementation adds its
//! factory to `implementations()` and must pass the same checks.

#![allow(clippy::unwrap_used)]

use orch_core::{AttemptStatus, NewTask, TaskStatus};
use orch_protocol::{EventKind, Payload};
use orch_state::{AttemptFinish, EventFilter, StateError, StateStore, Store};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};

type Factory = fn(&Path) -> Arc<dyn StateStore>;

/// Each implementation, opened on a fresh location under the given dir;
/// opening the same location twice gives two handles on one database.
fn implementations() -> Vec<(&'static str, Factory)> {
    vec![("sqlite", |dir| {
        Arc::new(Store::open(&dir.join("state.db")).unwrap())
    })]
}

fn each(check: impl Fn(Factory, &Path)) {
    for (name, factory) in implementations() {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("contract: {name}");
        check(factory, dir.path());
    }
}

fn new_task(title: &str) -> NewTask {
    NewTask {
        project: "p".into(),
        title: title.into(),
        ..NewTask::default()
    }
}

#[test]
fn claims_are_exclusive_across_handles_and_threads() {
    each(|open, dir| {
        let seed = open(dir);
        seed.ensure_project("p", "/repo").unwrap();
        for i in 0..40 {
            seed.add_task(&new_task(&format!("t{i}"))).unwrap();
        }
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, barrier) = (open(dir), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut got = Vec::new();
                    loop {
                        let claimed = store.claim_pending("p", 3).unwrap();
                        if claimed.is_empty() {
                            return got;
                        }
                        got.extend(claimed.into_iter().map(|t| t.id));
                    }
                })
            })
            .collect();
        let all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(all.len(), 40, "every task claimed once");
        assert_eq!(unique.len(), 40, "no task claimed twice");
    });
}

#[test]
fn a_refused_compare_and_set_writes_nothing() {
    each(|open, dir| {
        let s = open(dir);
        s.ensure_project("p", "/repo").unwrap();
        let t = s.add_task(&new_task("one")).unwrap();
        let before = s.events(&EventFilter::default()).unwrap().len();
        let moved = s
            .transition(&t.id, &[TaskStatus::Verifying], TaskStatus::Judging, "x")
            .unwrap();
        assert!(!moved);
        assert_eq!(s.task(t.id.as_str()).unwrap().status, TaskStatus::Pending);
        assert_eq!(s.events(&EventFilter::default()).unwrap().len(), before);
        assert!(matches!(
            s.task("no-such-task"),
            Err(StateError::NotFound { .. })
        ));
    });
}

#[test]
fn every_change_records_its_event_and_subscribers_see_them_in_order() {
    each(|open, dir| {
        let s = open(dir);
        s.ensure_project("p", "/repo").unwrap();
        let mut rx = s.subscribe().unwrap();
        let t = s.add_task(&new_task("one")).unwrap();
        s.claim_pending("p", 1).unwrap();
        let a = s.start_attempt(&t.id, "abc").unwrap();
        s.finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Failed))
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind()).collect();
        for want in [
            EventKind::TaskCreated,
            EventKind::TaskClaimed,
            EventKind::AttemptStarted,
            EventKind::AttemptFinished,
        ] {
            assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
        }
        assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "in id order");
        let stored = s.events(&EventFilter::default()).unwrap();
        assert_eq!(stored.last().map(|e| e.id), seen.last().map(|e| e.id));
        let Some(Payload::AttemptFinished(f)) = seen.iter().rev().map(|e| &e.payload).next() else {
            panic!("the last event is the attempt's end: {seen:?}");
        };
        assert_eq!(f.status, AttemptStatus::Failed);
        assert_eq!(s.task(t.id.as_str()).unwrap().attempts, 1);
    });
}

#[test]
fn a_restart_recovers_its_own_attempts_without_counting_them() {
    each(|open, dir| {
        let s = open(dir);
        s.ensure_project("p", "/repo").unwrap();
        let t = s.add_task(&new_task("one")).unwrap();
        s.claim_pending("p", 1).unwrap();
        s.start_attempt(&t.id, "abc").unwrap();
        drop(s);
        // The same runner starting again (its lease owner) takes over.
        let again = open(dir);
        let recovery = again.recover_expired("p").unwrap();
        assert_eq!(recovery.requeued, vec![t.id.clone()]);
        let task = again.task(t.id.as_str()).unwrap();
        assert_eq!(task.status, TaskStatus::Pending);
        assert_eq!(task.attempts, 0, "an interrupted attempt is not counted");
        let attempts = again.attempts(&t.id).unwrap();
        assert_eq!(attempts[0].status, AttemptStatus::Interrupted);
    });
}

#[test]
fn model_calls_are_charged_to_their_task_and_day() {
    each(|open, dir| {
        let s = open(dir);
        s.ensure_project("p", "/repo").unwrap();
        let t = s.add_task(&new_task("one")).unwrap();
        let at = chrono::Utc::now();
        s.record_model_call(&orch_state::ModelCall {
            at,
            project: "p".into(),
            task_id: Some(t.id.to_string()),
            attempt_id: None,
            role: "worker".into(),
            provider: "replay".into(),
            model: "m".into(),
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            cost_usd: 0.25,
            duration_ms: 7,
            ok: true,
            error: None,
        })
        .unwrap();
        assert_eq!(s.spent_on_task(t.id.as_str()).unwrap(), 0.25);
        let day = at.format("%Y-%m-%d").to_string();
        assert_eq!(s.spent_on_day("p", &day).unwrap(), 0.25);
        let calls: Vec<_> = s
            .events(&EventFilter::default())
            .unwrap()
            .into_iter()
            .filter(|e| e.kind() == EventKind::ModelCall)
            .collect();
        assert_eq!(calls.len(), 1, "the call recorded its event");
        assert_eq!(calls[0].task_id.as_deref(), Some(t.id.as_str()));
    });
}

#[test]
fn a_requirements_file_is_claimed_once_across_handles_and_threads() {
    each(|open, dir| {
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, barrier) = (open(dir), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .claim_requirements_file("/in/todo.md", "ab12", "todo")
                        .unwrap()
                })
            })
            .collect();
        let won = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|claimed| *claimed)
            .count();
        assert_eq!(won, 1, "exactly one claim wins");
        let store = open(dir);
        store
            .finish_requirements_file(
                "/in/todo.md",
                orch_state::RequirementsStatus::Failed,
                Some("the architect wrote no plan"),
            )
            .unwrap();
        let row = store.requirements_file("/in/todo.md").unwrap().unwrap();
        assert_eq!(row.status, orch_state::RequirementsStatus::Failed);
        assert_eq!(row.project, "todo");
        assert!(!store
            .claim_requirements_file("/in/todo.md", "ab12", "todo")
            .unwrap());
    });
}

#[test]
fn batched_changes_are_one_transaction_and_keep_their_order() {
    each(|open, dir| {
        let s = open(dir);
        s.ensure_project("p", "/repo").unwrap();
        let a = s.add_task(&new_task("a")).unwrap();
        s.claim_pending("p", 1).unwrap();
        let b = s.add_task(&new_task("b")).unwrap();
        let mut rx = s.subscribe().unwrap();
        let ids = [a.id.clone(), b.id.clone()];
        let moved = s
            .transition_all(&ids, &[TaskStatus::Running], TaskStatus::Verifying, "x")
            .unwrap();
        assert_eq!(moved, [true, false], "each one a compare-and-set");
        assert_eq!(s.task(a.id.as_str()).unwrap().status, TaskStatus::Verifying);
        assert_eq!(s.task(b.id.as_str()).unwrap().status, TaskStatus::Pending);
        // An unknown task refuses the whole batch: nothing moved, nothing
        // recorded.
        let before = s.events(&EventFilter::default()).unwrap().len();
        let bad = [b.id.clone(), orch_core::TaskId("no-such-task".into())];
        assert!(s
            .transition_all(&bad, &[TaskStatus::Pending], TaskStatus::Cancelled, "x")
            .is_err());
        assert_eq!(s.task(b.id.as_str()).unwrap().status, TaskStatus::Pending);
        assert_eq!(s.events(&EventFilter::default()).unwrap().len(), before);
        let notes: Vec<orch_protocol::Event> = ["one", "two", "three"]
            .iter()
            .map(|m| orch_protocol::Event::new("p", orch_protocol::Warning::default(), *m))
            .collect();
        s.record_all(&notes).unwrap();
        let seen: Vec<orch_protocol::Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let messages: Vec<&str> = seen.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1..], ["one", "two", "three"]);
        assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    });
}
