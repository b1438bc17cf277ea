//! Tasks and attempts: the units of work orch plans, runs, judges and merges.

use crate::ids::TaskId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a task is in its life.
///
/// ```text
/// pending → running → verifying → judging → passed → merging → merged
///    ↑         │           │          │                  │
///    └─────────┴───────────┴──────────┴──── retry ───────┘   (until max_attempts → failed)
/// running → needs_human → (orch answer) → pending
/// any open state → cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskStatus {
    Pending,
    Running,
    Verifying,
    Judging,
    NeedsHuman,
    Passed,
    Merging,
    Merged,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 10] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Verifying,
        TaskStatus::Judging,
        TaskStatus::NeedsHuman,
        TaskStatus::Passed,
        TaskStatus::Merging,
        TaskStatus::Merged,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Verifying => "verifying",
            TaskStatus::Judging => "judging",
            TaskStatus::NeedsHuman => "needs_human",
            TaskStatus::Passed => "passed",
            TaskStatus::Merging => "merging",
            TaskStatus::Merged => "merged",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// States a worker process owns while it runs; after a crash they are
    /// reset so the task is retried.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            TaskStatus::Running | TaskStatus::Verifying | TaskStatus::Judging | TaskStatus::Merging
        )
    }

    /// No further work will happen without a person.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Merged | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown task status `{s}`; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// What kind of change a task asks for; selects the worker prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskType {
    #[default]
    Code,
    Test,
    Fix,
    Review,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Code => "code",
            TaskType::Test => "test",
            TaskType::Fix => "fix",
            TaskType::Review => "review",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "code" => Ok(TaskType::Code),
            "test" => Ok(TaskType::Test),
            "fix" => Ok(TaskType::Fix),
            "review" => Ok(TaskType::Review),
            other => Err(format!(
                "unknown task type `{other}`; expected one of: code, test, fix, review"
            )),
        }
    }
}

/// Who created a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskSource {
    #[default]
    Manual,
    Planner,
}

impl TaskSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Manual => "manual",
            TaskSource::Planner => "planner",
        }
    }
}

impl FromStr for TaskSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(TaskSource::Manual),
            "planner" => Ok(TaskSource::Planner),
            other => Err(format!("unknown task source `{other}`")),
        }
    }
}

/// Most candidates (best-of-N attempts per round) a project or task may ask for.
pub const MAX_CANDIDATES: u32 = 8;

/// Input for creating a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewTask {
    pub project: String,
    pub title: String,
    pub description: String,
    pub task_type: TaskType,
    /// Higher runs first. Default 0.
    pub priority: i64,
    /// Glob patterns (relative to the repository root) the worker may write.
    /// Empty means any file inside the worktree.
    pub allowed_files: Vec<String>,
    pub source: TaskSource,
    /// Tests that prove the task's goal: a test id (`test_calc.py::test_add`)
    /// or a test file. They must pass for the task to pass.
    #[serde(default)]
    pub acceptance_tests: Vec<String>,
    /// Tasks that must be merged before this one starts.
    #[serde(default)]
    pub depends_on: Vec<TaskId>,
    /// Where a plan file defined the task (`plans/m1.md#1.2`); a project
    /// holds one task per key, so re-importing a plan adds nothing twice.
    #[serde(default)]
    pub plan_key: Option<String>,
    /// Best-of-N: attempts run in parallel per round for this task (1–8);
    /// None = the project's `candidates`.
    #[serde(default)]
    pub candidates: Option<u32>,
    /// What does this task's work (`builtin` or an agent CLI); None = the
    /// project's `worker`.
    #[serde(default)]
    pub worker: Option<crate::WorkerKind>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: TaskId,
    pub project: String,
    pub title: String,
    pub description: String,
    pub task_type: TaskType,
    pub priority: i64,
    pub allowed_files: Vec<String>,
    pub source: TaskSource,
    /// Tests that prove the task's goal (see [`NewTask::acceptance_tests`]).
    #[serde(default)]
    pub acceptance_tests: Vec<String>,
    /// Tasks that must be merged before this one starts.
    #[serde(default)]
    pub depends_on: Vec<TaskId>,
    /// See [`NewTask::plan_key`].
    #[serde(default)]
    pub plan_key: Option<String>,
    /// See [`NewTask::candidates`].
    #[serde(default)]
    pub candidates: Option<u32>,
    /// See [`NewTask::worker`].
    #[serde(default)]
    pub worker: Option<crate::WorkerKind>,
    pub status: TaskStatus,
    /// Attempts that counted against max_attempts (interrupted, cancelled and
    /// infrastructure-failed ones do not).
    pub attempts: u32,
    /// Attempts lost to orch's own failures (git, filesystem, sandbox start,
    /// provider outage); capped by `max_infra_failures`.
    #[serde(default)]
    pub infra_failures: u32,
    /// The task is not claimed before this time (backoff after an
    /// infrastructure failure).
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Feedback for the next attempt: failing output, judge issues, merge conflicts.
    pub feedback: Option<String>,
    /// The question the worker asked while in needs_human.
    pub question: Option<String>,
    /// A person's answer, given to the next attempt.
    pub answer: Option<String>,
    /// Why the task failed, when it did.
    pub failure_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    pub fn branch(&self) -> String {
        self.id.branch()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttemptStatus {
    Running,
    Passed,
    Failed,
    NeedsHuman,
    /// The process died mid-attempt; the task is retried and this attempt
    /// does not count against max_attempts.
    Interrupted,
    /// orch or what it depends on failed (git, filesystem, sandbox start-up,
    /// a provider outage): not the worker's fault, so it does not count
    /// against max_attempts; it counts against max_infra_failures instead.
    Error,
    /// A person cancelled the task while this attempt ran.
    Cancelled,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Running => "running",
            AttemptStatus::Passed => "passed",
            AttemptStatus::Failed => "failed",
            AttemptStatus::NeedsHuman => "needs_human",
            AttemptStatus::Interrupted => "interrupted",
            AttemptStatus::Error => "error",
            AttemptStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for AttemptStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => AttemptStatus::Running,
            "passed" => AttemptStatus::Passed,
            "failed" => AttemptStatus::Failed,
            "needs_human" => AttemptStatus::NeedsHuman,
            "interrupted" => AttemptStatus::Interrupted,
            "error" => AttemptStatus::Error,
            "cancelled" => AttemptStatus::Cancelled,
            other => return Err(format!("unknown attempt status `{other}`")),
        })
    }
}

/// What an attempt did: the task's work, or resolving the merge conflict of
/// work that already passed (which does not count against max_attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttemptKind {
    #[default]
    Work,
    /// The merge queue's resolver (`resolve_conflicts = "agent"`).
    Resolve,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Work => "work",
            AttemptKind::Resolve => "resolve",
        }
    }
}

impl FromStr for AttemptKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "work" => Ok(AttemptKind::Work),
            "resolve" => Ok(AttemptKind::Resolve),
            other => Err(format!(
                "unknown attempt kind `{other}` (expected work or resolve)"
            )),
        }
    }
}

/// One try at a task. Rows are appended, never overwritten: a finished
/// attempt only gains its end fields once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    pub id: i64,
    pub task_id: TaskId,
    /// 1-based sequence number within the task, interrupted attempts included.
    pub number: u32,
    /// Rows and documents from before attempt kinds existed are work.
    #[serde(default)]
    pub kind: AttemptKind,
    pub status: AttemptStatus,
    pub base_commit: Option<String>,
    pub head_commit: Option<String>,
    pub summary: Option<String>,
    pub diff_stat: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub turns: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Verification report, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::verify::VerificationReport>))]
    pub verification: Option<serde_json::Value>,
    /// Verdict, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::verdict::Verdict>))]
    pub verdict: Option<serde_json::Value>,
    /// Path of the attempt's markdown file in the audit trail.
    pub audit_path: Option<String>,
    pub error: Option<String>,
    /// Refinement iterations (`[projects.refine]`), in order; empty for an
    /// attempt that did not refine, and in documents from before refinement.
    #[serde(default)]
    pub iterations: Vec<crate::refine::RefineIteration>,
    /// Best-of-N (`candidates`): which candidate of its round this attempt
    /// was, from 1; None for a lone attempt.
    #[serde(default)]
    pub candidate: Option<u32>,
    /// Best-of-N: the round the candidate ran in (the task's counted
    /// attempts before it, plus one); its candidates share it.
    #[serde(default)]
    pub round: Option<u32>,
    /// The branch a candidate worked on (`orch/<task>-c<k>`); None for the
    /// task's own branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// The candidate's place in its round's ranking (1 = the one that went
    /// to the merge queue); None when it was not ranked (it did not pass).
    #[serde(default)]
    pub rank: Option<u32>,
    /// Why the ranking put it there.
    #[serde(default)]
    pub rank_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_strings() {
        for st in TaskStatus::ALL {
            assert_eq!(st.as_str().parse::<TaskStatus>(), Ok(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        let err = "nope".parse::<TaskStatus>().unwrap_err();
        assert!(err.contains("needs_human"), "{err}");
    }

    #[test]
    fn in_flight_and_terminal_are_disjoint() {
        for st in TaskStatus::ALL {
            assert!(!(st.is_in_flight() && st.is_terminal()), "{st}");
        }
        assert!(TaskStatus::Merging.is_in_flight());
        assert!(TaskStatus::Merged.is_terminal());
    }

    #[test]
    fn task_type_parse_error_lists_choices() {
        assert_eq!("fix".parse::<TaskType>(), Ok(TaskType::Fix));
        assert!("x"
            .parse::<TaskType>()
            .unwrap_err()
            .contains("code, test, fix, review"));
    }

    #[test]
    fn an_attempt_without_a_kind_reads_as_work() {
        let json = serde_json::json!({
            "id": 1, "task_id": "t", "number": 1, "status": "passed",
            "base_commit": null, "head_commit": null, "summary": null, "diff_stat": null,
            "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "turns": 0,
            "started_at": "2026-03-01T10:00:00Z", "finished_at": null, "duration_ms": null,
            "verification": null, "verdict": null, "audit_path": null, "error": null
        });
        let a: Attempt = serde_json::from_value(json).unwrap();
        assert_eq!(a.kind, AttemptKind::Work);
        let mut v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kind"], "work");
        v["kind"] = "resolve".into();
        let r: Attempt = serde_json::from_value(v).unwrap();
        assert_eq!(r.kind, AttemptKind::Resolve);
        assert_eq!("resolve".parse::<AttemptKind>(), Ok(AttemptKind::Resolve));
        assert!("x"
            .parse::<AttemptKind>()
            .unwrap_err()
            .contains("work or resolve"));
    }
}
