//! Refinement to a score (`[projects.refine]`): one attempt iterates on its
//! branch until the judge's score reaches a threshold. Each iteration is
//! recorded on its attempt; the branch keeps the best-scoring snapshot.

use serde::{Deserialize, Serialize};

/// What became of an iteration's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IterationOutcome {
    /// It beat the best score so far and became the best snapshot.
    Kept,
    /// It did not beat the best score (or the worker stopped short): the
    /// branch went back to the best snapshot.
    Reverted,
    /// It changed nothing on top of the best snapshot.
    Unchanged,
}

impl IterationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IterationOutcome::Kept => "kept",
            IterationOutcome::Reverted => "reverted",
            IterationOutcome::Unchanged => "unchanged",
        }
    }
}

/// One iteration of a refining attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefineIteration {
    /// 1-based within its attempt.
    pub iteration: u32,
    /// The judge's score (0–10); None when a gate failed (the model was not
    /// asked), the judge could not be consulted, or nothing was judged.
    pub score: Option<f64>,
    /// The iteration's commit; None when it committed nothing.
    pub commit: Option<String>,
    /// Whether verification (the project's tests and other steps) passed.
    pub tests_passed: bool,
    /// Whether the judge's verdict passed.
    pub verdict_passed: bool,
    pub outcome: IterationOutcome,
    /// The best score once this iteration was judged, and its iteration.
    pub best_score: Option<f64>,
    pub best_iteration: u32,
    /// Why the iteration has nothing judged (the worker stopped short, it
    /// changed nothing), when that is so.
    #[serde(default)]
    pub note: Option<String>,
}

impl RefineIteration {
    /// `score 7.0` or `no score`.
    pub fn score_text(&self) -> String {
        score_text(self.score)
    }
}

/// `score 7.0`, or `no score` for None.
pub fn score_text(score: Option<f64>) -> String {
    match score {
        Some(s) => format!("score {s:.1}"),
        None => "no score".to_string(),
    }
}
