//! What runs beside the workers while the engine runs: the patrol, which
//! interrupts an attempt that recorded no event for `stuck_after_seconds`
//! (it is retried and does not count), and the lease heartbeat, which
//! keeps this process's running attempts from being taken over.
//!
//! The patrol follows the store's live event bus, so it costs no database
//! reads: any event of a task (a model answer, a tool call, a stage) is a
//! sign of life.

use crate::cycle::Engine;
use orch_core::TaskId;
use orch_state::StateStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How often the patrol looks for stuck attempts.
const PATROL_TICK: Duration = Duration::from_millis(500);

impl Engine {
    /// Interrupts the task's running attempt for `reason`: the reason is
    /// kept on the attempt first (so it is recorded as `interrupted` with
    /// it), then the task's token is tripped. False when this engine is not
    /// working on the task or already interrupted it.
    pub(crate) fn interrupt_task(&self, id: &TaskId, reason: &str) -> bool {
        if self.cancels.interrupt_reason(id).is_some() {
            return false;
        }
        if let Err(e) = self.store.request_interrupt(id, reason) {
            tracing::warn!("cannot record the interrupt of task {id}: {e}");
        }
        self.cancels.interrupt(id, reason)
    }

    /// Interrupts every attempt this engine runs; returns how many.
    pub(crate) fn interrupt_all(&self, reason: &str) -> usize {
        self.cancels
            .watched()
            .into_iter()
            .filter(|(id, _, _)| self.interrupt_task(id, reason))
            .count()
    }

    /// Runs until `stop`: interrupts attempts with no event for
    /// `stuck_after_seconds`.
    pub(crate) async fn patrol(self: Arc<Self>, stop: CancellationToken) {
        let stuck_after = Duration::from_secs(self.project.stuck_after_seconds.max(1));
        let mut events = match self.store.subscribe() {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!("patrol cannot follow events, stuck attempts go unnoticed: {e}");
                return;
            }
        };
        let mut last_seen: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(PATROL_TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        if let Some(t) = ev.task_id {
                            last_seen.insert(t, Instant::now());
                        }
                    }
                    // Fell behind: everything was busy, so nothing is stuck.
                    Err(RecvError::Lagged(_)) => {
                        let now = Instant::now();
                        last_seen.values_mut().for_each(|t| *t = now);
                        for (id, _, _) in self.cancels.watched() {
                            last_seen.insert(id.0, now);
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let watched = self.cancels.watched();
                    last_seen.retain(|id, _| watched.iter().any(|(w, _, _)| w.as_str() == id));
                    for (id, since, stopped) in watched {
                        let last = last_seen.get(id.as_str()).copied().unwrap_or(since).max(since);
                        if stopped || last.elapsed() < stuck_after {
                            continue;
                        }
                        let secs = self.project.stuck_after_seconds;
                        let reason = format!("stuck: no event for {secs} s");
                        if self.interrupt_task(&id, &reason) {
                            self.rec.note(
                                Some(id.as_str()),
                                orch_protocol::PatrolInterrupted {
                                    reason: reason.clone(),
                                    stuck_after_seconds: secs,
                                },
                                format!("patrol: {reason} (stuck_after_seconds = {secs}); interrupting the attempt, which does not count, and retrying the task"),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Renews this process's leases every `LEASE_HEARTBEAT` until `stop`.
pub(crate) async fn heartbeat(store: Arc<dyn StateStore>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(orch_state::LEASE_HEARTBEAT) => {}
        }
        let st = store.clone();
        // SQLite writes block; keep them off the async workers.
        match tokio::task::spawn_blocking(move || st.renew_leases()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("lease heartbeat failed (retrying): {e}"),
            Err(e) => tracing::warn!("lease heartbeat panicked: {e}"),
        }
    }
}
