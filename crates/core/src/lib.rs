//! Domain types for orch: tasks, attempts, verdicts and verification
//! reports. (The events every component records are in orch-protocol.)
//!
//! This crate does no IO. Every other crate depends on it; it depends on none
//! of them, so the vocabulary of the system lives in one place.

pub mod ids;
pub mod redact;
pub mod refine;
pub mod task;
pub mod usage;
pub mod verdict;
pub mod verify;
pub mod worker;

pub use ids::{new_id, TaskId};
pub use refine::{IterationOutcome, RefineIteration};
pub use task::{
    Attempt, AttemptKind, AttemptStatus, NewTask, Task, TaskSource, TaskStatus, TaskType,
    MAX_CANDIDATES,
};
pub use usage::Usage;
pub use verdict::{GateResult, Verdict};
pub use verify::{StepKind, StepResult, TestCounts, TestGoal, VerificationReport};
pub use worker::WorkerKind;
