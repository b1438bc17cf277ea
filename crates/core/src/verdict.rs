//! The judge's verdict: deterministic gates first, then the model's rubric.

use serde::{Deserialize, Serialize};

/// One deterministic check (tests green, no new failures, non-empty diff…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verdict {
    /// True only when every gate passed and the model passed the work.
    pub passed: bool,
    /// The model's score, 0–10; None when the model was not consulted
    /// (a gate failed first).
    pub score: Option<f64>,
    pub reasoning: String,
    pub issues: Vec<String>,
    pub gates: Vec<GateResult>,
}

impl Verdict {
    pub fn failed_gates(&self) -> impl Iterator<Item = &GateResult> {
        self.gates.iter().filter(|g| !g.passed)
    }
}
