//! Domain types for orch: tasks, attempts, verdicts, verification reports and
//! the one event type that every component records.
//!
//! This crate does no IO. Every other crate depends on it; it depends on none
//! of them, so the vocabulary of the system lives in one place.

pub mod event;
pub mod ids;
pub mod redact;
pub mod task;
pub mod usage;
pub mod verdict;
pub mod verify;

pub use event::{Event, EventKind};
pub use ids::{new_id, TaskId};
pub use task::{Attempt, AttemptStatus, NewTask, Task, TaskSource, TaskStatus, TaskType};
pub use usage::Usage;
pub use verdict::{GateResult, Verdict};
pub use verify::{StepKind, StepResult, TestCounts, TestGoal, VerificationReport};
