//! Cancel means stop. `orch cancel` (often another process) only marks the
//! task cancelled in the database; a watcher in the running engine polls the
//! tasks it is working on and trips their tokens. A tripped token stops the
//! agent loop before its next model call, drops any running command (which
//! kills its process tree) and ends the attempt as cancelled; every
//! compare-and-set transition after that fails, so nothing is queued.

use orch_core::{TaskId, TaskStatus};
use orch_state::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks for cancelled tasks.
const POLL: Duration = Duration::from_millis(250);

/// The tokens of the tasks this engine is working on.
#[derive(Default)]
pub(crate) struct Cancels {
    tokens: Mutex<HashMap<TaskId, CancellationToken>>,
}

impl Cancels {
    pub(crate) fn register(&self, id: &TaskId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id.clone(), token.clone());
        token
    }

    pub(crate) fn unregister(&self, id: &TaskId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        // A panic while holding this map cannot leave it inconsistent.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Trips the token of every watched task the store shows cancelled.
    fn check(&self, store: &Store) {
        let watched: Vec<(TaskId, CancellationToken)> = self
            .lock()
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
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
    pub(crate) async fn watch(self: Arc<Self>, store: Arc<Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let (me, st) = (self.clone(), store.clone());
            // SQLite reads block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.check(&st)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::NewTask;

    #[tokio::test]
    async fn a_task_cancelled_in_the_store_trips_its_token() {
        let store = Arc::new(Store::open_in_memory().unwrap());
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
        stop.cancel();
        watcher.await.unwrap();
    }
}
