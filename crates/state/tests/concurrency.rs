//! Several `Store` handles on one database file, used from several threads
//! at once, as two orch processes would: claims stay exclusive, counters
//! stay exact, attempt numbers stay unique.

// Helpers outside #[test] fns panic on failure on purpose: this is a test.
#![allow(clippy::unwrap_used)]

use orch_core::{AttemptStatus, NewTask, TaskId, TaskStatus, Usage};
use orch_protocol::EventKind;
use orch_state::{AttemptFinish, EventFilter, Store};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 2;

fn seeded(path: &Path, tasks: usize) -> Vec<TaskId> {
    let s = Store::open(path).unwrap();
    s.ensure_project("p", "/repo").unwrap();
    (0..tasks)
        .map(|i| {
            s.add_task(&NewTask {
                project: "p".into(),
                title: format!("task {i}"),
                priority: (i % 3) as i64,
                ..Default::default()
            })
            .unwrap()
            .id
        })
        .collect()
}

/// Runs `f(handle, thread_index)` on THREADS threads, each with its own
/// Store handle on `path`, started together.
fn on_threads<T: Send + 'static>(
    path: &Path,
    f: impl Fn(Store, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            let store = Store::open(path).unwrap();
            thread::spawn(move || {
                barrier.wait();
                f(store, i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_claimers_never_get_the_same_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let all = seeded(&path, 60);

    let claimed = on_threads(&path, |store, i| {
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_pending("p", 1 + i).unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.iter().all(|t| t.status == TaskStatus::Running));
            mine.extend(batch.into_iter().map(|t| t.id));
            // Stand-in for the work between claims; lets the other claimer
            // in so the claims actually interleave (correctness does not
            // depend on it).
            thread::sleep(std::time::Duration::from_millis(1));
        }
        mine
    });

    let mut seen = BTreeSet::new();
    for id in claimed.iter().flatten() {
        assert!(seen.insert(id.clone()), "task {id} was claimed twice");
    }
    assert_eq!(
        seen,
        all.iter().cloned().collect::<BTreeSet<_>>(),
        "every task claimed exactly once"
    );

    let store = Store::open(&path).unwrap();
    assert_eq!(store.count_by_status("p").unwrap()["running"], 60);
    let claims = store
        .events(&EventFilter {
            project: Some("p".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|e| e.kind() == EventKind::TaskClaimed)
        .count();
    assert_eq!(claims, 60, "one TaskClaimed event per task");
}

#[test]
fn claims_follow_priority_then_age_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let all = seeded(&path, 6); // priorities 0,1,2,0,1,2
    let other = Store::open(&path).unwrap();
    let got: Vec<TaskId> = other
        .claim_pending("p", 6)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        got,
        vec![
            all[2].clone(),
            all[5].clone(),
            all[1].clone(),
            all[4].clone(),
            all[0].clone(),
            all[3].clone()
        ]
    );
}

#[test]
fn counters_incremented_concurrently_are_exact() {
    const N: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = seeded(&path, 1).remove(0);

    let id2 = id.clone();
    on_threads(&path, move |store, _| {
        for _ in 0..N {
            store.bump_consecutive_failures("p").unwrap();
            let usage = Usage {
                input_tokens: 3,
                output_tokens: 2,
                cached_tokens: 1,
                cost_usd: 0.5,
            };
            store.add_task_usage(&id2, &usage).unwrap();
            // Lets the other thread in between increments (see above).
            thread::sleep(std::time::Duration::from_millis(1));
        }
    });

    let store = Store::open(&path).unwrap();
    let total = N * THREADS as u32;
    assert_eq!(store.project("p").unwrap().consecutive_failures, total);
    let t = store.task(id.as_str()).unwrap();
    assert_eq!(t.input_tokens, 3 * u64::from(total));
    assert_eq!(t.output_tokens, 2 * u64::from(total));
    assert!((t.cost_usd - 0.5 * f64::from(total)).abs() < 1e-6);
    assert_eq!(
        store.usage_totals(Some("p")).unwrap().cached_tokens,
        u64::from(total)
    );
}

#[test]
fn concurrent_attempts_get_unique_numbers_and_exact_attempt_count() {
    const N: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = seeded(&path, 1).remove(0);

    let id2 = id.clone();
    let counts = on_threads(&path, move |store, _| {
        (0..N)
            .map(|_| {
                let a = store.start_attempt(&id2, "base").unwrap();
                let n = store
                    .finish_attempt(a.id, &AttemptFinish::new(AttemptStatus::Failed))
                    .unwrap();
                thread::sleep(std::time::Duration::from_millis(1));
                n
            })
            .collect::<Vec<u32>>()
    });

    // Each finish saw a distinct post-increment value.
    let mut all_counts: Vec<u32> = counts.into_iter().flatten().collect();
    all_counts.sort_unstable();
    assert_eq!(all_counts, (1..=(N * THREADS) as u32).collect::<Vec<_>>());

    let store = Store::open(&path).unwrap();
    let numbers: Vec<u32> = store
        .attempts(&id)
        .unwrap()
        .iter()
        .map(|a| a.number)
        .collect();
    assert_eq!(numbers, (1..=(N * THREADS) as u32).collect::<Vec<_>>());
    assert_eq!(
        store.task(id.as_str()).unwrap().attempts,
        (N * THREADS) as u32
    );
}

#[test]
fn fresh_database_opened_concurrently_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("new/state.db"));
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (path, barrier) = (path.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let s = Store::open(&path).unwrap();
                s.ensure_project(&format!("p{i}"), "/repo").unwrap();
                s.schema_version().unwrap()
            })
        })
        .collect();
    let versions: BTreeSet<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(versions.len(), 1, "all openers agree on the schema version");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.projects().unwrap().len(), 4);
}

#[test]
fn data_survives_reopen_and_writes_from_one_handle_are_seen_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let ids = seeded(&path, 2);
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    assert!(a
        .transition(&ids[0], &[TaskStatus::Pending], TaskStatus::Running, "a")
        .unwrap());
    // b's compare-and-set sees a's change and loses.
    assert!(!b
        .transition(&ids[0], &[TaskStatus::Pending], TaskStatus::Running, "b")
        .unwrap());
    assert_eq!(b.task(ids[0].as_str()).unwrap().status, TaskStatus::Running);
    drop((a, b));
    let c = Store::open(&path).unwrap();
    assert_eq!(
        c.tasks(Some("p"), Some(TaskStatus::Pending)).unwrap().len(),
        1
    );
}
