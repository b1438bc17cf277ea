//! Cancel means stop. `orch cancel` (often another process) only marks the
//! task cancelled in the database; a watcher in the running engine polls the
//! tasks it is working on and trips their tokens. A tripped token stops the
//! agent loop before its next model call, drops any running command (which
//! kills its process tree) and ends the attempt as cancelled; every
//! compare-and-set transition after that fails, so nothing is queued.
//!
//! The same tokens carry interruptions, which are not cancels: shutdown
//! (after its grace) and the patrol (a stuck attempt) interrupt a task with
//! a reason. The task itself is not cancelled, so its attempt is recorded
//! as `interrupted` (not counted) and the task goes back to pending.

use orch_core::{TaskId, TaskStatus};
use orch_state::StateStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the watcher looks for cancelled tasks.
const POLL: Duration = Duration::from_millis(250);

/// One task being worked on.
struct Watched {
    token: CancellationToken,
    /// When this engine started working on it (the patrol's first sign of life).
    since: Instant,
    /// Why it was interrupted, if it was (shutdown, patrol).
    interrupt: Option<String>,
}

/// The tokens of the tasks this engine is working on.
#[derive(Default)]
pub(crate) struct Cancels {
    tokens: Mutex<HashMap<TaskId, Watched>>,
    /// Set once shutdown is requested: workers start no further attempt.
    draining: AtomicBool,
}

impl Cancels {
    pub(crate) fn register(&self, id: &TaskId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(
            id.clone(),
            Watched {
                token: token.clone(),
                since: Instant::now(),
                interrupt: None,
            },
        );
        token
    }

    pub(crate) fn unregister(&self, id: &TaskId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Watched>> {
        // A panic while holding this map cannot leave it inconsistent.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Trips the task's token for `reason`: an interruption, not a cancel.
    /// False when the task is not being worked on or was already
    /// interrupted (the first reason stays).
    pub(crate) fn interrupt(&self, id: &TaskId, reason: &str) -> bool {
        let mut map = self.lock();
        let Some(w) = map.get_mut(id) else {
            return false;
        };
        if w.interrupt.is_some() {
            return false;
        }
        w.interrupt = Some(reason.to_string());
        w.token.cancel();
        true
    }

    /// Why the task was interrupted, if it was.
    pub(crate) fn interrupt_reason(&self, id: &TaskId) -> Option<String> {
        self.lock().get(id).and_then(|w| w.interrupt.clone())
    }

    /// The tasks being worked on, when each started, and whether each was
    /// already interrupted or cancelled.
    pub(crate) fn watched(&self) -> Vec<(TaskId, Instant, bool)> {
        self.lock()
            .iter()
            .map(|(id, w)| (id.clone(), w.since, w.token.is_cancelled()))
            .collect()
    }

    pub(crate) fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::SeqCst);
    }

    /// True once shutdown was requested: no new attempt starts.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Trips the token of every watched task the store shows cancelled.
    fn check(&self, store: &dyn StateStore) {
        let watched: Vec<(TaskId, CancellationToken)> = self
            .lock()
            .iter()
            .map(|(id, w)| (id.clone(), w.token.clone()))
            .collect();
        for (id, token) in watched {
            if token.is_cancelled() {
                continue;
            }
            match store.task(id.as_str()) {
                Ok(t) if t.status == TaskStatus::Cancelled => token.cancel(),
                Ok(_) => {}
                Err(e) => tracing::warn!("cancel watcher cannot read task {id}: {e}"),
            }
        }
    }

    /// Polls until `stop` is cancelled.
    pub(crate) async fn watch(
        self: Arc<Self>,
        store: Arc<dyn StateStore>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let (me, st) = (self.clone(), store.clone());
            // SQLite reads block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.check(st.as_ref())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::NewTask;

    #[tokio::test]
    async fn a_task_cancelled_in_the_store_trips_its_token() {
        let store = Arc::new(orch_state::Store::open_in_memory().unwrap());
        store.ensure_project("p", "/repo").unwrap();
        let task = store
            .add_task(&NewTask {
                project: "p".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        let other = store
            .add_task(&NewTask {
                project: "p".into(),
                title: "u".into(),
                ..Default::default()
            })
            .unwrap();
        let cancels = Arc::new(Cancels::default());
        let token = cancels.register(&task.id);
        let untouched = cancels.register(&other.id);
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(cancels.clone().watch(store.clone(), stop.clone()));
        store.cancel_task(task.id.as_str()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .unwrap();
        assert!(!untouched.is_cancelled());
        assert_eq!(
            cancels.interrupt_reason(&task.id),
            None,
            "a cancel is no interrupt"
        );
        stop.cancel();
        watcher.await.unwrap();
    }

    #[test]
    fn an_interrupt_trips_the_token_and_keeps_its_first_reason() {
        let cancels = Cancels::default();
        let id = TaskId("t1".into());
        assert!(!cancels.interrupt(&id, "not watched"));
        let token = cancels.register(&id);
        assert!(cancels.interrupt(&id, "stuck: no event for 2 s"));
        assert!(token.is_cancelled());
        assert!(!cancels.interrupt(&id, "shutdown"));
        assert_eq!(
            cancels.interrupt_reason(&id).as_deref(),
            Some("stuck: no event for 2 s")
        );
        assert!(cancels.watched()[0].2);
        cancels.unregister(&id);
        assert!(cancels.watched().is_empty());
        assert!(!cancels.draining());
        cancels.set_draining(true);
        assert!(cancels.draining());
    }
}
