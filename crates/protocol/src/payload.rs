//! The payload of each event kind. Field names are the wire names; a field
//! that older rows may lack has a default.

use chrono::{DateTime, Utc};
use orch_core::{AttemptKind, AttemptStatus, TaskStatus};
use serde::{Deserialize, Serialize};

/// The common derives of every payload type.
macro_rules! payloads {
    ($( $(#[$m:meta])* pub struct $name:ident { $($body:tt)* } )*) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
            $(#[$m])*
            pub struct $name { $($body)* }
        )*
    };
}

/// How the merge queue's resolver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ResolutionOutcome {
    /// Verified green: the resolution is the task's merge.
    Resolved,
    /// Markers left, a side dropped, the worker failed or verification was
    /// red: the task goes back with the conflict as feedback.
    #[default]
    Failed,
    /// The task was cancelled, or the resolution interrupted (a shutdown,
    /// the patrol); nothing landed.
    Stopped,
}

/// Where in orch's work an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Stage {
    /// The planner proposing tasks.
    Plan,
    /// A plan file being imported.
    PlanImport,
    /// The architect writing a plan for the worker.
    Architect,
    /// The test command on the base commit.
    Baseline,
    /// The worker (an agent) changing the worktree.
    Work,
    /// The attempt's change set being checked and committed.
    Commit,
    /// The project's own checks on the attempt.
    Verify,
    /// The deterministic gates and the judge model.
    Judge,
    /// The merge queue landing passing work.
    Merge,
    Recovery,
    Patrol,
    Shutdown,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::PlanImport => "plan_import",
            Stage::Architect => "architect",
            Stage::Baseline => "baseline",
            Stage::Work => "work",
            Stage::Commit => "commit",
            Stage::Verify => "verify",
            Stage::Judge => "judge",
            Stage::Merge => "merge",
            Stage::Recovery => "recovery",
            Stage::Patrol => "patrol",
            Stage::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PlanSource {
    #[default]
    Planner,
    PlanFile,
}

payloads! {
    #[derive(Default)]
    #[serde(default)]
    pub struct ProjectRegistered {
        /// The repository's path.
        pub path: String,
    }

    /// `orch new` (or a requirements file under `orch serve`) made a
    /// project: its repository, with the requirements committed.
    #[derive(Default)]
    #[serde(default)]
    pub struct ProjectCreated {
        /// The new repository's path.
        pub path: String,
        /// The requirements file it was made from.
        pub requirements: String,
        /// The first commit (REQUIREMENTS.md).
        pub commit: String,
    }

    /// A project's main tree was archived.
    #[derive(Default)]
    #[serde(default)]
    pub struct ProjectArchived {
        /// The archive file.
        pub path: String,
        /// Its size.
        pub bytes: u64,
        /// The commit of main that was archived.
        pub commit: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ProjectPaused {
        pub reason: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ProjectResumed {
        pub reason: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct CycleStarted {
        /// 1 for the run's first cycle.
        pub cycle: u64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct CycleFinished {
        pub cycle: u64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct PlannedTask {
        pub id: String,
        pub plan_key: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct DroppedTask {
        pub title: String,
        pub reason: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct PlanCreated {
        pub source: PlanSource,
        /// The tasks the plan created.
        pub created: Vec<PlannedTask>,
        /// Plan keys already imported (a re-import adds nothing twice).
        pub skipped: Vec<String>,
        /// Proposals the planner's checks refused, with why.
        pub dropped: Vec<DroppedTask>,
        pub notes: Option<String>,
        /// The plan as written to disk, or the plan file imported.
        pub file: Option<String>,
        pub input_tokens: u64,
        pub output_tokens: u64,
        pub cost_usd: f64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct PlanSkipped {
        pub fingerprint: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct TaskCreated {
        pub title: String,
        #[serde(rename = "type")]
        pub task_type: String,
        pub priority: i64,
        pub source: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub depends_on: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub plan_key: Option<String>,
        /// The task's own worker (`claude-code`, `codex`…), when it names
        /// one instead of the project's.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub worker: Option<String>,
        /// Best-of-N: how many candidates each round runs, when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub candidates: Option<u32>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct TaskClaimed {}

    pub struct StatusChanged {
        pub from: TaskStatus,
        pub to: TaskStatus,
        #[serde(default)]
        pub note: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct AttemptStarted {
        pub attempt_id: i64,
        pub number: u32,
        pub base_commit: Option<String>,
        /// The task's work, or the merge queue's conflict resolver; older
        /// rows lack it and read as work.
        pub kind: AttemptKind,
    }

    pub struct AttemptFinished {
        pub attempt_id: i64,
        pub number: u32,
        pub status: AttemptStatus,
        /// Work or resolve, as at its start; older rows read as work.
        #[serde(default)]
        pub kind: AttemptKind,
        #[serde(default)]
        pub turns: u32,
        #[serde(default)]
        pub input_tokens: u64,
        #[serde(default)]
        pub output_tokens: u64,
        #[serde(default)]
        pub cost_usd: f64,
        #[serde(default)]
        pub error: Option<String>,
        /// The task's counted attempts after this one.
        #[serde(default)]
        pub task_attempts: u32,
        #[serde(default)]
        pub infra_failures: u32,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct AttemptInterrupted {
        pub attempt_id: i64,
        pub number: u32,
        pub reason: String,
        /// The stage it was in, when known.
        pub stage: Option<Stage>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct Cancelled {
        pub attempt_id: i64,
        pub number: u32,
        pub stage: Option<Stage>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ModelCall {
        /// planner, architect, worker, judge, ...
        pub role: String,
        /// The attempt the call was made for, when it was.
        pub attempt_id: Option<i64>,
        pub provider: String,
        pub model: String,
        pub input_tokens: u64,
        pub output_tokens: u64,
        pub cached_tokens: u64,
        pub cost_usd: f64,
        pub duration_ms: u64,
        pub ok: bool,
        pub error: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ModelTry {
        pub provider: String,
        /// 1 for the first try.
        pub attempt: u32,
        pub max_attempts: u32,
        /// None when the try succeeded.
        pub error: Option<String>,
        pub retryable: bool,
        /// The wait before the next try, when there is one.
        pub wait_ms: Option<u64>,
        /// Why that wait (a Retry-After header, the backoff schedule).
        pub wait_reason: Option<String>,
        pub took_ms: u64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ProviderHealth {
        pub change: HealthChange,
        pub provider: String,
        /// Consecutive failures that opened the circuit.
        pub failures: Option<u32>,
        pub cool_down_seconds: Option<f64>,
        /// For a fallback: the model that took over, and why.
        pub to_provider: Option<String>,
        pub to_model: Option<String>,
        pub from_model: Option<String>,
        pub reason: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ToolCall {
        /// The model call (1-based) whose reply made this call.
        pub turn: u32,
        pub tool: String,
        /// The raw arguments, capped.
        pub arguments: String,
        pub ok: bool,
        /// The start of what the model was told, capped.
        pub output: String,
        pub duration_ms: u64,
        /// The attempt whose worker made the call (its row id and number);
        /// None in rows from before they were recorded.
        pub attempt_id: Option<i64>,
        pub attempt: Option<u32>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct ToolRefused {
        /// Where it was refused: while working (a tool call) or at the
        /// commit boundary.
        pub stage: Option<Stage>,
        pub turn: Option<u32>,
        pub tool: Option<String>,
        pub arguments: Option<String>,
        /// The offending path, for a change refused at commit.
        pub path: Option<String>,
        /// Why.
        pub refused: String,
        pub attempt: Option<u32>,
    }

    pub struct StageStarted {
        pub stage: Stage,
        #[serde(default)]
        pub attempt: Option<u32>,
        #[serde(default)]
        pub model: Option<String>,
        #[serde(default)]
        pub worker: Option<String>,
        #[serde(default)]
        pub workflow: Option<String>,
        /// The commit a baseline or merge is about.
        #[serde(default)]
        pub commit: Option<String>,
        /// A red merge batch split in two: the halves' sizes.
        #[serde(default)]
        pub split: Option<(usize, usize)>,
    }

    pub struct StageFinished {
        pub stage: Stage,
        #[serde(default)]
        pub attempt: Option<u32>,
        #[serde(default)]
        pub duration_ms: u64,
        /// The stage reached its goal (the work finished, the checks
        /// passed, the verdict passed, the batch landed).
        #[serde(default)]
        pub ok: bool,
        /// The stage had nothing to do (a post-merge check of a tree that
        /// already passed).
        #[serde(default)]
        pub skipped: bool,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct StepSummary {
        /// setup, format, lint or test.
        pub kind: String,
        pub exit_code: Option<i32>,
        pub timed_out: bool,
        pub duration_ms: u64,
        pub passed: Option<u32>,
        pub failed: Option<u32>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct VerificationFinished {
        /// Merge for the merge queue's check of a candidate; None for an
        /// attempt's own verification.
        pub stage: Option<Stage>,
        pub passed: bool,
        pub new_failures: Vec<String>,
        pub targeted_failures: Vec<String>,
        pub preexisting_failures: Vec<String>,
        pub goal_unmet: Option<String>,
        /// The merge batch's size, for a merge check.
        pub batch: Option<usize>,
        pub steps: Vec<StepSummary>,
        /// The attempt verified (its row id and number): an attempt's own
        /// check or a conflict resolver's; None for the merge queue's check
        /// of a batch, and in older rows.
        pub attempt_id: Option<i64>,
        pub attempt: Option<u32>,
        /// The checks ran while the model was thinking, on the snapshot
        /// that was then committed (early verification).
        pub early: bool,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct BaselineComputed {
        pub commit: String,
        pub failed: u32,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct VerdictRecorded {
        pub passed: bool,
        pub score: Option<f64>,
        pub issues: Vec<String>,
        /// The verdict's audit file.
        pub file: String,
        /// The attempt judged (its row id and number); None in older rows.
        pub attempt_id: Option<i64>,
        pub attempt: Option<u32>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct HumanAsked {
        pub question: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct HumanAnswered {
        pub question: Option<String>,
        pub answer: String,
    }

    /// Best-of-N: a round of candidates started for a task.
    #[derive(Default)]
    #[serde(default)]
    pub struct CandidatesStarted {
        /// How many candidates run in this round.
        pub candidates: u32,
        /// Each candidate, in order.
        pub slots: Vec<CandidateSlot>,
    }

    /// One candidate of a round: what works on it, and where.
    #[derive(Default)]
    #[serde(default)]
    pub struct CandidateSlot {
        /// From 1.
        pub candidate: u32,
        /// `provider:model`.
        pub model: String,
        /// `builtin` or an agent CLI.
        pub worker: String,
        /// `orch/<task>-c<k>`.
        pub branch: String,
    }

    /// Best-of-N: the round's candidates that passed their gates and judge,
    /// best first; the first goes to the merge queue.
    #[derive(Default)]
    #[serde(default)]
    pub struct CandidatesRanked {
        /// Candidate numbers, best first (only those that passed).
        pub order: Vec<u32>,
        /// Why each is where it is, in the same order.
        pub reasons: Vec<String>,
        /// Their attempt numbers, in the same order.
        pub attempts: Vec<u32>,
        /// The candidate that goes to the merge queue; None when none passed.
        pub winner: Option<u32>,
        /// How the order was decided: `judge` (the ranking model), `scores`
        /// (the judges' scores, when the ranking is not asked for or not
        /// usable), `only` (one passed), `none` (none passed).
        pub method: String,
        /// Why the judge's ranking was not used, when it was asked for.
        pub warning: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct MergeQueued {
        pub branch: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct Merged {
        /// The main branch's new commit.
        pub commit: String,
        /// The main branch.
        pub branch: String,
        /// How many tasks landed together.
        pub batch: usize,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct MergeRejected {
        pub feedback: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct MergeDeferred {
        pub reason: String,
    }

    /// The resolver started on a passing branch that no longer merges.
    #[derive(Default)]
    #[serde(default)]
    pub struct ConflictResolving {
        pub attempt_id: i64,
        pub number: u32,
        /// The files git could not merge.
        pub files: Vec<String>,
        /// The commit the branch is merged onto: main, or main with the
        /// batch's earlier branches.
        pub onto: String,
        pub model: Option<String>,
        pub worker: Option<String>,
    }

    /// How a conflict resolution ended.
    #[derive(Default)]
    #[serde(default)]
    pub struct ConflictResolved {
        pub attempt_id: i64,
        pub number: u32,
        pub files: Vec<String>,
        pub outcome: ResolutionOutcome,
        /// Why it did not land, when it did not.
        pub reason: Option<String>,
        /// The verified merge commit, when resolved.
        pub commit: Option<String>,
        pub duration_ms: u64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct InfraFailure {
        pub infra_failures: u32,
        pub max_infra_failures: u32,
        pub backoff_seconds: u64,
        pub error: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct PatrolInterrupted {
        pub reason: String,
        pub stuck_after_seconds: u64,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct LoopDetected {
        pub kind: LoopKind,
        /// How alike the last two failures were (repeated failures only).
        pub similarity: Option<f64>,
        /// The project's loop_similarity.
        pub threshold: Option<f64>,
        /// The attempt numbers involved.
        pub attempts: Vec<u32>,
        /// Best-of-N: the two rounds whose candidates failed the same way;
        /// empty for single attempts.
        pub rounds: Vec<u32>,
        /// The repeated failure, as people read it (capped).
        pub excerpt: String,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct Shutdown {
        /// Attempts still running when this was written.
        pub running: usize,
        pub grace_seconds: u64,
        pub interrupted: usize,
        pub abandoned: usize,
    }

    pub struct LeaseHeld {
        pub attempt_id: i64,
        pub owner: String,
        pub lease_expires_at: DateTime<Utc>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct Recovered {
        /// The dead process whose lock was taken over.
        pub pid: Option<String>,
        /// One task's status before and after recovery.
        pub from: Option<TaskStatus>,
        pub to: Option<TaskStatus>,
        /// A recovery summary: tasks requeued, worktrees and branches removed.
        pub tasks: Vec<String>,
        pub worktrees: usize,
        pub branches: usize,
    }

    /// One refinement iteration was judged (`[projects.refine]`).
    pub struct RefineIteration {
        pub attempt_id: i64,
        /// The attempt's number.
        pub number: u32,
        pub iteration: u32,
        pub score: Option<f64>,
        pub outcome: orch_core::IterationOutcome,
        /// The best score so far, and its iteration.
        pub best_score: Option<f64>,
        pub best_iteration: u32,
        /// The iteration's commit.
        #[serde(default)]
        pub commit: Option<String>,
        /// When reverted: the commit the branch went back to.
        #[serde(default)]
        pub reverted_to: Option<String>,
    }

    /// Refinement stopped; the attempt concludes with its best snapshot.
    pub struct RefineStopped {
        pub attempt_id: i64,
        pub number: u32,
        pub reason: RefineStop,
        pub iterations: u32,
        pub best_iteration: u32,
        pub best_score: Option<f64>,
        /// Whether the best snapshot's verdict passed (it is queued for merge).
        pub passed: bool,
        /// What stopped the worker, for `worker_stopped`.
        #[serde(default)]
        pub detail: Option<String>,
    }

    #[derive(Default)]
    #[serde(default)]
    pub struct Warning {
        pub stage: Option<Stage>,
        /// A file the warning is about.
        pub file: Option<String>,
        /// A commit the warning is about.
        pub commit: Option<String>,
    }
}

/// How a task was found to loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LoopKind {
    /// Consecutive failures at least `loop_similarity` alike.
    #[default]
    RepeatedFailure,
    /// An attempt produced the same tree as the one two before it.
    Oscillation,
}

impl LoopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopKind::RepeatedFailure => "repeated_failure",
            LoopKind::Oscillation => "oscillation",
        }
    }
}

/// Why refinement stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RefineStop {
    /// The best score reached the threshold.
    Threshold,
    /// `max_iterations` iterations ran.
    MaxIterations,
    /// `plateau` iterations in a row did not beat the best score.
    Plateau,
    /// The worker could not go on (its model failed or the budget ran out).
    WorkerStopped,
}

impl RefineStop {
    pub fn as_str(self) -> &'static str {
        match self {
            RefineStop::Threshold => "threshold",
            RefineStop::MaxIterations => "max_iterations",
            RefineStop::Plateau => "plateau",
            RefineStop::WorkerStopped => "worker_stopped",
        }
    }
}

/// What changed in a provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HealthChange {
    #[default]
    CircuitOpened,
    CircuitHalfOpen,
    CircuitClosed,
    Fallback,
}

impl StageStarted {
    /// A stage starting, with no details yet.
    pub fn new(stage: Stage) -> Self {
        StageStarted {
            stage,
            attempt: None,
            model: None,
            worker: None,
            workflow: None,
            commit: None,
            split: None,
        }
    }
}

impl StageFinished {
    /// A stage that ended after `elapsed`, `ok` when it reached its goal.
    pub fn new(stage: Stage, attempt: Option<u32>, elapsed: std::time::Duration, ok: bool) -> Self {
        StageFinished {
            stage,
            attempt,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            ok,
            skipped: false,
        }
    }
}

impl Warning {
    /// A warning about `stage`.
    pub fn at(stage: Stage) -> Self {
        Warning {
            stage: Some(stage),
            ..Default::default()
        }
    }
}

impl From<&orch_core::StepResult> for StepSummary {
    fn from(s: &orch_core::StepResult) -> Self {
        StepSummary {
            kind: s.kind.as_str().to_string(),
            exit_code: s.exit_code,
            timed_out: s.timed_out,
            duration_ms: s.duration_ms,
            passed: s.counts.as_ref().map(|c| c.passed),
            failed: s.counts.as_ref().map(|c| c.failed),
        }
    }
}

impl VerificationFinished {
    /// What a verification report says, for the event log: `stage` is
    /// Merge for the merge queue's check of a batch of `batch`; `attempt`
    /// is the attempt verified (None for a batch, which is no attempt's).
    pub fn from_report(
        report: &orch_core::VerificationReport,
        stage: Option<Stage>,
        batch: Option<usize>,
        attempt: Option<&orch_core::Attempt>,
    ) -> Self {
        VerificationFinished {
            stage,
            passed: report.passed,
            new_failures: report.new_failures.clone(),
            targeted_failures: report.targeted_failures.clone(),
            preexisting_failures: report.preexisting_failures.clone(),
            goal_unmet: report.goal_unmet.clone(),
            batch,
            steps: report.steps.iter().map(StepSummary::from).collect(),
            attempt_id: attempt.map(|a| a.id),
            attempt: attempt.map(|a| a.number),
            early: false,
        }
    }
}

#[cfg(test)]
mod attempt_field_tests {
    //! The per-attempt fields: they round-trip, and rows written before
    //! them still decode (as no attempt, and as work).
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Event, Payload};

    fn round_trip(p: impl Into<Payload>) -> Payload {
        let e = Event::new("p", p, "m").task("t");
        let back = Event::payload_from_parts(e.kind().as_str(), e.data_json()).unwrap();
        assert_eq!(back, e.payload);
        back
    }

    #[test]
    fn the_attempt_of_tool_calls_verifications_and_verdicts_round_trips() {
        let tool = ToolCall {
            tool: "write_file".into(),
            attempt_id: Some(12),
            attempt: Some(2),
            ..Default::default()
        };
        let Payload::ToolCall(t) = round_trip(tool) else {
            panic!("not a tool call");
        };
        assert_eq!((t.attempt_id, t.attempt), (Some(12), Some(2)));
        let verified = VerificationFinished {
            passed: true,
            attempt_id: Some(13),
            attempt: Some(3),
            ..Default::default()
        };
        let e = Event::new("p", verified.clone(), "m");
        assert_eq!(e.data_json()["attempt_id"], 13);
        assert_eq!(e.data_json()["attempt"], 3);
        round_trip(verified);
        round_trip(VerdictRecorded {
            passed: true,
            attempt_id: Some(14),
            attempt: Some(4),
            ..Default::default()
        });
        let started = AttemptStarted {
            attempt_id: 5,
            number: 2,
            base_commit: None,
            kind: AttemptKind::Resolve,
        };
        assert_eq!(
            Event::new("p", started.clone(), "m").data_json()["kind"],
            "resolve"
        );
        round_trip(started);
        let finished = AttemptFinished {
            attempt_id: 5,
            number: 2,
            status: AttemptStatus::Passed,
            kind: AttemptKind::Resolve,
            turns: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            error: None,
            task_attempts: 1,
            infra_failures: 0,
        };
        let Payload::AttemptFinished(f) = round_trip(finished) else {
            panic!("not an attempt's end");
        };
        assert_eq!(f.kind, AttemptKind::Resolve);
    }

    #[test]
    fn rows_from_before_the_attempt_fields_still_decode() {
        let old =
            |kind: &str, data: serde_json::Value| Event::payload_from_parts(kind, data).unwrap();
        let Payload::ToolCall(t) = old(
            "tool_call",
            serde_json::json!({"turn": 1, "tool": "run", "arguments": "{}", "ok": true,
                               "output": "", "duration_ms": 5}),
        ) else {
            panic!("not a tool call");
        };
        assert_eq!(
            (t.tool.as_str(), t.attempt_id, t.attempt),
            ("run", None, None)
        );
        let Payload::VerificationFinished(v) = old(
            "verification_finished",
            serde_json::json!({"stage": null, "passed": false, "new_failures": ["t"],
                               "steps": [{"kind": "test", "duration_ms": 3}]}),
        ) else {
            panic!("not a verification");
        };
        assert_eq!(
            (v.new_failures.len(), v.attempt_id, v.attempt),
            (1, None, None)
        );
        let Payload::VerdictRecorded(d) = old(
            "verdict_recorded",
            serde_json::json!({"passed": true, "score": 8.0, "issues": [], "file": "v.md"}),
        ) else {
            panic!("not a verdict");
        };
        assert_eq!((d.score, d.attempt_id, d.attempt), (Some(8.0), None, None));
        let Payload::AttemptStarted(s) = old(
            "attempt_started",
            serde_json::json!({"attempt_id": 3, "number": 1, "base_commit": "abc"}),
        ) else {
            panic!("not an attempt's start");
        };
        assert_eq!(s.kind, AttemptKind::Work);
        let Payload::AttemptFinished(f) = old(
            "attempt_finished",
            serde_json::json!({"attempt_id": 3, "number": 1, "status": "failed", "turns": 2}),
        ) else {
            panic!("not an attempt's end");
        };
        assert_eq!(
            (f.status, f.kind),
            (AttemptStatus::Failed, AttemptKind::Work)
        );
    }
}
