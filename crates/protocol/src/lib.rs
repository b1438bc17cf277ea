//! orch's one event protocol: every event kind is a Rust type with a fixed
//! payload, and every component records, prints and streams events in the
//! one encoding this crate defines.
//!
//! The store appends events in the same transaction as the change they
//! describe and then feeds an in-process broadcast bus; `orch run`'s live
//! progress, the `/api/v1/events` stream, the metrics and the traces all
//! read that one stream. On the wire (JSON lines, SSE, the `events` table)
//! an event is `{id, at, project, task_id, message, kind, data}`, where
//! `kind` names the payload type and `data` is the payload.
//!
//! Depends on the domain types (orch-core) and nothing else.

mod payload;

pub use payload::*;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Declares the payload enum, the kind enum and the conversions between
/// them from one list, so a kind can never lack a payload type or the
/// reverse.
macro_rules! protocol {
    ($( $(#[$doc:meta])* $variant:ident($ty:ident), )*) => {
        /// What happened, with its fixed payload. Serialised adjacently
        /// tagged: `{"kind": "<snake_case>", "data": {...}}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "data", rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum Payload {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// The name of an event's payload type, for filtering and display.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum EventKind {
            $( $(#[$doc])* $variant, )*
        }

        impl Payload {
            pub fn kind(&self) -> EventKind {
                match self {
                    $( Payload::$variant(_) => EventKind::$variant, )*
                }
            }
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[ $( EventKind::$variant, )* ];
        }

        $(
            impl From<$ty> for Payload {
                fn from(p: $ty) -> Self {
                    Payload::$variant(p)
                }
            }
        )*
    };
}

protocol! {
    ProjectRegistered(ProjectRegistered),
    /// A project was made from a requirements file (`orch new`).
    ProjectCreated(ProjectCreated),
    /// A project's finished main tree was archived.
    ProjectArchived(ProjectArchived),
    ProjectPaused(ProjectPaused),
    ProjectResumed(ProjectResumed),
    CycleStarted(CycleStarted),
    CycleFinished(CycleFinished),
    /// Tasks were created from a plan: the planner's, or a plan file's.
    PlanCreated(PlanCreated),
    /// The planner was not asked, and why (nothing changed since its last plan).
    PlanSkipped(PlanSkipped),
    TaskCreated(TaskCreated),
    TaskClaimed(TaskClaimed),
    /// A task moved from one status to another.
    StatusChanged(StatusChanged),
    AttemptStarted(AttemptStarted),
    AttemptFinished(AttemptFinished),
    /// An attempt stopped before its end (a restart, patrol, shutdown); it
    /// does not count.
    AttemptInterrupted(AttemptInterrupted),
    /// A person cancelled a task; its running attempt was stopped.
    Cancelled(Cancelled),
    /// One model call, by any role, as metered.
    ModelCall(ModelCall),
    /// One try of a model call (the retry policy records every try).
    ModelTry(ModelTry),
    /// A provider's circuit breaker opened or closed, or a fallback model
    /// took over.
    ProviderHealth(ProviderHealth),
    ToolCall(ToolCall),
    /// A tool call or a change the worker was not allowed to make (path
    /// escape, file outside allowed_files, oversized argument).
    ToolRefused(ToolRefused),
    StageStarted(StageStarted),
    /// A stage ended; carries how long it took.
    StageFinished(StageFinished),
    VerificationFinished(VerificationFinished),
    BaselineComputed(BaselineComputed),
    VerdictRecorded(VerdictRecorded),
    /// A refinement iteration was judged: its score, and whether its
    /// snapshot was kept or the branch went back to the best one.
    RefineIteration(RefineIteration),
    /// Refinement stopped (threshold, max_iterations, plateau, or the worker
    /// could not go on) with its best snapshot.
    RefineStopped(RefineStopped),
    /// Best-of-N: a round of candidates started for a task.
    CandidatesStarted(CandidatesStarted),
    /// Best-of-N: the candidates that passed, ranked; the first is queued.
    CandidatesRanked(CandidatesRanked),
    HumanAsked(HumanAsked),
    HumanAnswered(HumanAnswered),
    MergeQueued(MergeQueued),
    Merged(Merged),
    MergeRejected(MergeRejected),
    MergeDeferred(MergeDeferred),
    /// The merge queue's resolver started on a branch that no longer merges.
    ConflictResolving(ConflictResolving),
    /// The resolver ended: resolved (verified green), failed or stopped.
    ConflictResolved(ConflictResolved),
    /// orch's own failure (git, filesystem, sandbox start-up, provider
    /// outage) cost an attempt; the task waits for a backoff and does not
    /// lose one of its max_attempts.
    InfraFailure(InfraFailure),
    /// Patrol interrupted an attempt that made no progress.
    PatrolInterrupted(PatrolInterrupted),
    /// Attempts kept failing the same way (or went in circles); the task
    /// was handed to a person.
    LoopDetected(LoopDetected),
    /// A graceful shutdown made progress (waiting, interrupting, abandoning).
    Shutdown(Shutdown),
    /// Recovery left an attempt alone: another runner's lease is live.
    LeaseHeld(LeaseHeld),
    Recovered(Recovered),
    Warning(Warning),
}

impl EventKind {
    /// The snake_case name used on the wire and in the `events` table.
    pub fn as_str(self) -> &'static str {
        // Generated from the serde names, once.
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let names = NAMES.get_or_init(|| {
            EventKind::ALL
                .iter()
                .map(|k| {
                    serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect()
        });
        let i = EventKind::ALL.iter().position(|k| *k == self).unwrap_or(0);
        names.get(i).map(String::as_str).unwrap_or("")
    }

    /// The kind named `name` (its snake_case name).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Assigned by the store; 0 before it is recorded.
    #[serde(default)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub project: String,
    pub task_id: Option<String>,
    /// One line for people.
    pub message: String,
    /// `kind` and `data`.
    #[serde(flatten)]
    pub payload: Payload,
}

impl Event {
    pub fn new(
        project: impl Into<String>,
        payload: impl Into<Payload>,
        message: impl Into<String>,
    ) -> Self {
        Event {
            id: 0,
            at: Utc::now(),
            project: project.into(),
            task_id: None,
            message: message.into(),
            payload: payload.into(),
        }
    }

    pub fn task(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    /// The payload as its `data` JSON, as stored.
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.payload)
            .ok()
            .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Rebuilds an event's payload from its stored `kind` and `data`. A
    /// missing or null `data` is read as an empty object, so payloads whose
    /// fields all have defaults decode from older rows.
    pub fn payload_from_parts(
        kind: &str,
        data: serde_json::Value,
    ) -> Result<Payload, serde_json::Error> {
        let data = if data.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            data
        };
        serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orch_core::TaskStatus;

    #[test]
    fn kinds_have_snake_case_names_that_parse_back() {
        assert_eq!(EventKind::StatusChanged.as_str(), "status_changed");
        assert_eq!(EventKind::ToolRefused.as_str(), "tool_refused");
        for k in EventKind::ALL {
            assert!(!k.as_str().is_empty());
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }

    #[test]
    fn an_event_is_kind_and_data_on_the_wire_and_round_trips() {
        let e = Event::new(
            "p",
            StatusChanged {
                from: TaskStatus::Pending,
                to: TaskStatus::Running,
                note: None,
            },
            "m",
        )
        .task("abc");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "status_changed");
        assert_eq!(v["data"]["from"], "pending");
        assert_eq!(v["data"]["to"], "running");
        assert_eq!(v["task_id"], "abc");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.kind(), EventKind::StatusChanged);
        assert_eq!(e.data_json()["to"], "running");
    }

    #[test]
    fn null_data_decodes_for_payloads_with_defaults_and_bad_data_is_an_error() {
        let p = Event::payload_from_parts("cycle_started", serde_json::Value::Null).unwrap();
        assert_eq!(p.kind(), EventKind::CycleStarted);
        let w =
            Event::payload_from_parts("warning", serde_json::json!({"stage": "patrol"})).unwrap();
        assert_eq!(
            w,
            Payload::Warning(Warning {
                stage: Some(Stage::Patrol),
                ..Default::default()
            })
        );
        assert!(Event::payload_from_parts("status_changed", serde_json::json!({})).is_err());
        assert!(Event::payload_from_parts("no_such_kind", serde_json::json!({})).is_err());
    }

    #[test]
    fn every_kind_has_a_payload_that_round_trips_from_defaults_where_it_has_them() {
        // A payload type added without wiring would not compile (the macro);
        // this checks the serde names agree between the two enums.
        for k in EventKind::ALL {
            let name = k.as_str();
            if let Ok(p) = Event::payload_from_parts(name, serde_json::json!({})) {
                assert_eq!(p.kind(), *k, "{name}");
            }
        }
    }
}
