//! The one event type. Every state change, stage transition, tool refusal,
//! model call and merge is recorded as an `Event`: appended to SQLite, shown
//! as live progress, and never rewritten.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened. Stored as its snake_case name; the details go in `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    ProjectRegistered,
    ProjectPaused,
    ProjectResumed,
    CycleStarted,
    CycleFinished,
    PlanCreated,
    TaskCreated,
    TaskClaimed,
    /// A task moved from one status to another; `data` has `from` and `to`.
    StatusChanged,
    AttemptStarted,
    AttemptFinished,
    AttemptInterrupted,
    ModelCall,
    /// One try of a model call (the retry policy records every try).
    ModelTry,
    /// A provider's circuit breaker opened or closed, or a fallback model
    /// took over.
    ProviderHealth,
    ToolCall,
    /// A tool call the worker was not allowed to make (path escape, file
    /// outside allowed_files, oversized argument).
    ToolRefused,
    StageStarted,
    StageFinished,
    VerificationFinished,
    BaselineComputed,
    VerdictRecorded,
    HumanAsked,
    HumanAnswered,
    MergeQueued,
    Merged,
    MergeRejected,
    MergeDeferred,
    /// orch's own failure (git, filesystem, sandbox start-up, provider
    /// outage) cost an attempt; the task waits for a backoff and does not
    /// lose one of its max_attempts.
    InfraFailure,
    /// A person cancelled a task; its running attempt was stopped.
    Cancelled,
    /// The planner was not asked, and why (nothing changed since its last plan).
    PlanSkipped,
    Recovered,
    Warning,
}

impl EventKind {
    pub fn as_str(self) -> String {
        // serde gives the canonical snake_case name.
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Assigned by the store; 0 before it is recorded.
    #[serde(default)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub project: String,
    pub task_id: Option<String>,
    pub kind: EventKind,
    pub message: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(project: impl Into<String>, kind: EventKind, message: impl Into<String>) -> Self {
        Event {
            id: 0,
            at: Utc::now(),
            project: project.into(),
            task_id: None,
            kind,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    pub fn task(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_snake_case_names() {
        assert_eq!(EventKind::StatusChanged.as_str(), "status_changed");
        assert_eq!(EventKind::ToolRefused.as_str(), "tool_refused");
        let e = Event::new("p", EventKind::Merged, "m").task("abc");
        assert_eq!(e.task_id.as_deref(), Some("abc"));
    }
}
