//! What verification found: one result per step (setup, format, lint, test),
//! test counts parsed from the runner's output, and the failures that are new
//! compared with the base commit.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepKind {
    Setup,
    Format,
    Lint,
    Test,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Setup => "setup",
            StepKind::Format => "format",
            StepKind::Lint => "lint",
            StepKind::Test => "test",
        }
    }
}

/// Pass/fail counts parsed from a test runner's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestCounts {
    /// Which parser understood the output: pytest, cargo, go, jest.
    pub runner: String,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Names of failing tests, as the runner prints them.
    pub failed_tests: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepResult {
    pub kind: StepKind,
    pub command: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last part of combined stdout/stderr.
    pub output_tail: String,
    pub counts: Option<TestCounts>,
}

impl StepResult {
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerificationReport {
    pub passed: bool,
    pub steps: Vec<StepResult>,
    /// Failing tests that also fail on the base commit and that the task
    /// does not target: tolerated under `preexisting_failures =
    /// "tolerate-untargeted"`, but always listed.
    pub preexisting_failures: Vec<String>,
    /// Failing tests that pass (or do not exist) on the base commit.
    pub new_failures: Vec<String>,
    /// Failing tests the task targets (its acceptance tests, or tests its
    /// title or description names) that still fail: the goal is not reached.
    #[serde(default)]
    pub targeted_failures: Vec<String>,
    /// Set when the task's goal is not shown to be reached for another
    /// reason (a fix over a red base that turned none of its failures green).
    #[serde(default)]
    pub goal_unmet: Option<String>,
    /// True when the attempt changed no files.
    pub empty_diff: bool,
    /// One-paragraph explanation for humans and for the next attempt's prompt.
    pub summary: String,
}

/// What the task asks verification to prove, beyond "nothing new broke".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestGoal {
    /// The task's acceptance tests (test ids or test files).
    pub acceptance: Vec<String>,
    /// The task's title and description: a failing test named here is
    /// targeted too.
    pub mentions: String,
    /// A fix task over a red base with no acceptance list must turn at least
    /// one of the base's failures green.
    pub must_fix_a_base_failure: bool,
    /// Block on every failing test, pre-existing or not.
    pub block_preexisting: bool,
}
