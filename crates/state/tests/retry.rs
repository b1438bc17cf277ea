//! `Store::retry_task`: a failed or cancelled task goes back to pending,
//! compare-and-set, with its event, counters kept and failure reason cleared.

#![allow(clippy::unwrap_used)]

use orch_core::{AttemptStatus, NewTask, TaskStatus};
use orch_protocol::EventKind;
use orch_state::{AttemptFinish, EventFilter, StateError, Store};

fn store_with_task() -> (Store, orch_core::Task) {
    let s = Store::open_in_memory().unwrap();
    s.ensure_project("p", "/repo").unwrap();
    let t = s
        .add_task(&NewTask {
            project: "p".into(),
            title: "t".into(),
            ..Default::default()
        })
        .unwrap();
    (s, t)
}

#[test]
fn a_failed_task_goes_back_to_pending_keeping_its_attempts() {
    let (s, t) = store_with_task();
    s.claim_pending("p", 1).unwrap();
    let a = s.start_attempt(&t.id, "base").unwrap();
    s.finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Failed))
        .unwrap();
    s.fail_task(&t.id, "max attempts reached").unwrap();
    let before = s.task(t.id.as_str()).unwrap();
    assert_eq!(before.status, TaskStatus::Failed);
    assert_eq!(before.attempts, 1);

    let retried = s.retry_task(&t.id.0[..6]).unwrap();
    assert_eq!(retried.status, TaskStatus::Pending);
    assert_eq!(retried.attempts, 1, "the counter is kept");
    assert_eq!(retried.failure_reason, None);
    let last = s
        .events(&EventFilter {
            task_id: Some(t.id.0.clone()),
            ..Default::default()
        })
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.kind(), EventKind::StatusChanged);
    assert_eq!(last.data_json()["from"], "failed");
    assert_eq!(last.data_json()["to"], "pending");
}

#[test]
fn only_failed_or_cancelled_tasks_and_nothing_written_otherwise() {
    let (s, t) = store_with_task();
    let count = || s.events(&EventFilter::default()).unwrap().len();
    let n = count();
    let err = s.retry_task(t.id.as_str()).unwrap_err();
    assert!(
        matches!(err, StateError::InvalidTransition { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("only failed or cancelled"),
        "{err}"
    );
    assert_eq!(count(), n);

    s.cancel_task(t.id.as_str()).unwrap();
    assert_eq!(
        s.retry_task(t.id.as_str()).unwrap().status,
        TaskStatus::Pending
    );
}

#[test]
fn refused_while_a_cancelled_attempt_is_still_running() {
    let (s, t) = store_with_task();
    s.claim_pending("p", 1).unwrap();
    let a = s.start_attempt(&t.id, "base").unwrap();
    s.cancel_task(t.id.as_str()).unwrap();
    let err = s.retry_task(t.id.as_str()).unwrap_err();
    assert!(err.to_string().contains("still stopping"), "{err}");
    s.finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Cancelled))
        .unwrap();
    assert_eq!(
        s.retry_task(t.id.as_str()).unwrap().status,
        TaskStatus::Pending
    );
}
