//! The store's interface: every operation orch's engine, service, server
//! and CLI need from durable state, as one object-safe trait. [`Store`]
//! (SQLite) is the default and, today, the only implementation; a Postgres
//! implementation implements the same trait and passes the same contract
//! suite (`tests/contract.rs`), so nothing above this crate changes.
//!
//! What an implementation must keep (the contract the suite checks):
//! - every state change records its event(s) atomically with the change,
//!   and a committed event reaches [`StateStore::subscribe`]rs in id order;
//! - claims and status changes are compare-and-set: two runners never
//!   claim the same task, and a refused change writes nothing;
//! - events are append-only; finished attempts are never rewritten;
//! - leases: a running attempt is taken over only after its lease expired.
//!
//! The methods are synchronous short transactions (a Postgres client would
//! use a pool of blocking connections); async callers call them directly or
//! through `spawn_blocking`, as the server does.

use crate::dashboard::{AttemptModel, EventLine, StatusSpan};
use crate::{
    AttemptFinish, CandidateStart, CostRow, EventFilter, ModelCall, PlanImport, ProjectRow,
    Recovery, RequirementsFile, RequirementsStatus, Result, Store,
};
use orch_core::{Attempt, AttemptKind, NewTask, Task, TaskId, TaskStatus, Usage};
use orch_protocol::Event;
use std::collections::BTreeMap;
use tokio::sync::broadcast;

/// Declares the trait and the SQLite implementation from one list of
/// signatures, so the two cannot drift apart.
macro_rules! state_store {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        /// Durable state, behind an interface (see the module docs).
        pub trait StateStore: Send + Sync + 'static {
            $( $(#[$doc])* fn $name(&self $(, $arg: $ty)*) -> $ret; )*
        }

        impl StateStore for Store {
            $(
                fn $name(&self $(, $arg: $ty)*) -> $ret {
                    Store::$name(self $(, $arg)*)
                }
            )*
        }

        /// A shared store is a store: `&Arc<dyn StateStore>` passes where
        /// `&dyn StateStore` is asked for.
        impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
            $(
                fn $name(&self $(, $arg: $ty)*) -> $ret {
                    (**self).$name($($arg),*)
                }
            )*
        }
    };
}

state_store! {
    // Projects.
    /// Registers `name` at `path` (idempotent; a moved repository updates).
    fn ensure_project(&self, name: &str, path: &str) -> Result<()>;
    fn project(&self, name: &str) -> Result<ProjectRow>;
    fn projects(&self) -> Result<Vec<ProjectRow>>;
    fn set_paused(&self, project: &str, paused: bool, reason: Option<&str>) -> Result<()>;
    fn is_paused(&self, project: &str) -> Result<bool>;
    fn bump_consecutive_failures(&self, project: &str) -> Result<u32>;
    fn reset_consecutive_failures(&self, project: &str) -> Result<()>;
    fn set_plan_fingerprint(&self, project: &str, fingerprint: &str) -> Result<()>;

    // Requirements files (`orch serve`'s requirements folder).
    /// Claims a requirements file by path: true only for the first claim ever.
    fn claim_requirements_file(&self, path: &str, sha256: &str, project: &str) -> Result<bool>;
    fn finish_requirements_file(&self, path: &str, status: RequirementsStatus, detail: Option<&str>) -> Result<()>;
    fn requirements_file(&self, path: &str) -> Result<Option<RequirementsFile>>;

    // Tasks.
    fn add_task(&self, new: &NewTask) -> Result<Task>;
    /// A task by id or unique id prefix.
    fn task(&self, id_or_prefix: &str) -> Result<Task>;
    fn tasks(&self, project: Option<&str>, status: Option<TaskStatus>) -> Result<Vec<Task>>;
    fn count_by_status(&self, project: &str) -> Result<BTreeMap<String, u64>>;
    fn count_ready(&self, project: &str) -> Result<u64>;
    /// Moves up to `limit` ready tasks to `claimed`, atomically.
    fn claim_pending(&self, project: &str, limit: usize) -> Result<Vec<Task>>;
    /// Compare-and-set: moves `id` to `to` only if it is in one of `from`.
    fn transition(&self, id: &TaskId, from: &[TaskStatus], to: TaskStatus, note: &str) -> Result<bool>;
    /// `transition` of each of `ids` in one transaction: whether each moved.
    fn transition_all(&self, ids: &[TaskId], from: &[TaskStatus], to: TaskStatus, note: &str) -> Result<Vec<bool>>;
    fn defer_task(&self, id: &TaskId, not_before: chrono::DateTime<chrono::Utc>, note: &str) -> Result<bool>;
    fn set_feedback(&self, id: &TaskId, feedback: Option<&str>) -> Result<()>;
    fn ask_human(&self, id: &TaskId, question: &str) -> Result<()>;
    fn answer(&self, id_or_prefix: &str, answer: &str) -> Result<Task>;
    fn fail_task(&self, id: &TaskId, reason: &str) -> Result<()>;
    fn cancel_task(&self, id_or_prefix: &str) -> Result<Task>;
    fn retry_task(&self, id_or_prefix: &str) -> Result<Task>;
    fn add_task_usage(&self, id: &TaskId, usage: &Usage) -> Result<()>;
    fn usage_totals(&self, project: Option<&str>) -> Result<Usage>;
    /// Imports a milestone plan's tasks in order; a re-import adds nothing twice.
    fn import_plan(&self, project: &str, tasks: &[NewTask]) -> Result<PlanImport>;
    fn task_by_plan_key(&self, project: &str, key: &str) -> Result<Option<Task>>;

    // Attempts and leases.
    fn start_attempt(&self, task: &TaskId, base_commit: &str) -> Result<Attempt>;
    /// A running attempt of `kind`; a resolver attempt never counts against max_attempts.
    fn start_attempt_of_kind(&self, task: &TaskId, base_commit: &str, kind: AttemptKind) -> Result<Attempt>;
    /// A running attempt that is a candidate of a best-of-N round, on its own branch.
    fn start_candidate(&self, task: &TaskId, base_commit: &str, slot: &CandidateStart<'_>) -> Result<Attempt>;
    fn finish_attempt(&self, attempt_id: i64, fin: &AttemptFinish) -> Result<u32>;
    fn attempts(&self, task: &TaskId) -> Result<Vec<Attempt>>;
    /// Appends a refinement iteration to a running attempt, with its event.
    fn record_iteration(&self, attempt_id: i64, iteration: &orch_core::RefineIteration) -> Result<()>;
    /// Extends the leases this runner holds; the heartbeat.
    fn renew_leases(&self) -> Result<usize>;
    fn request_interrupt(&self, task: &TaskId, reason: &str) -> Result<bool>;
    fn interrupt_running(&self, task: &TaskId, reason: &str) -> Result<usize>;
    fn recover_interrupted(&self, project: &str) -> Result<Vec<TaskId>>;
    /// Takes over the attempts whose lease expired, and only those.
    fn recover_expired(&self, project: &str) -> Result<Recovery>;

    // The baseline cache.
    fn baseline(&self, project: &str, commit: &str, command: &str) -> Result<Option<serde_json::Value>>;
    fn put_baseline(&self, project: &str, commit: &str, command: &str, value: &serde_json::Value) -> Result<()>;

    // Costs.
    /// Records one model call and its event, atomically.
    fn record_model_call(&self, call: &ModelCall) -> Result<i64>;
    fn cost_report(&self, project: Option<&str>, since: Option<&str>) -> Result<Vec<CostRow>>;
    fn spent_on_day(&self, project: &str, day: &str) -> Result<f64>;
    fn spent_on_task(&self, task_id: &str) -> Result<f64>;

    // Events.
    /// Appends an informational event (redacted on its way in).
    fn record(&self, event: &Event) -> Result<i64>;
    /// Appends events in order, in one transaction.
    fn record_all(&self, events: &[Event]) -> Result<()>;
    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    /// Every event committed from now on, in order.
    fn subscribe(&self) -> Result<broadcast::Receiver<Event>>;

    // Read models for the dashboard.
    fn recent_tasks(&self, project: Option<&str>, limit: usize) -> Result<Vec<Task>>;
    fn tasks_in_flight(&self) -> Result<Vec<(Task, Option<Attempt>)>>;
    fn last_events(&self, ids: &[TaskId]) -> Result<BTreeMap<String, EventLine>>;
    fn last_event_id(&self) -> Result<i64>;
    fn attempt_models(&self, task: &TaskId) -> Result<Vec<AttemptModel>>;
    fn attempt_workers(&self, task: &TaskId) -> Result<BTreeMap<u32, String>>;
    fn merged_per_hour(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<(String, u64)>>;
    fn status_spans(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<StatusSpan>>;
    fn attempts_of(&self, ids: &[TaskId]) -> Result<BTreeMap<String, Vec<Attempt>>>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_sqlite_store_is_usable_through_the_interface() {
        let store: Arc<dyn StateStore> = Arc::new(Store::open_in_memory().unwrap());
        store.ensure_project("p", "/repo").unwrap();
        let t = store
            .add_task(&NewTask {
                project: "p".into(),
                title: "one".into(),
                ..NewTask::default()
            })
            .unwrap();
        assert_eq!(store.claim_pending("p", 5).unwrap().len(), 1);
        assert_eq!(
            store.task(t.id.as_str()).unwrap().status,
            TaskStatus::Running
        );
    }
}
