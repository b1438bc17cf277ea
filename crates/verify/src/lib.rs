//! Verification: runs the project's own setup, format, lint and test commands
//! inside the sandbox, parses the test runner's output into counts and
//! failing test names, and decides whether an attempt passed — failures that
//! already happen on the base commit are not blamed on the attempt.
//!
//! - [`run_step`] / [`run_steps`] execute commands through a [`Sandbox`].
//! - [`parse_test_output`] understands pytest, cargo test, go test and jest.
//! - [`assess`] turns step results (plus a baseline run on the base commit)
//!   into a [`VerificationReport`].

pub mod assess;
pub mod parse;
pub mod target;

pub use assess::{assess, classify_tests, counts_text, failure_feedback, TestOutcome};
pub use parse::parse_test_output;
pub use target::targets;

use orch_core::{StepKind, StepResult};
use orch_sandbox::{ExecRequest, Sandbox, SandboxError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The project's verification commands. An empty string skips that step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyCommands {
    pub setup: String,
    pub format: String,
    pub lint: String,
    pub test: String,
}

impl VerifyCommands {
    /// The configured steps in the order they run, empty ones left out.
    pub fn steps(&self) -> Vec<(StepKind, &str)> {
        [
            (StepKind::Setup, self.setup.as_str()),
            (StepKind::Format, self.format.as_str()),
            (StepKind::Lint, self.lint.as_str()),
            (StepKind::Test, self.test.as_str()),
        ]
        .into_iter()
        .filter(|(_, cmd)| !cmd.trim().is_empty())
        .collect()
    }
}

/// How verification commands are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Per step; a step that runs longer is killed and counts as failed.
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept from each step (each).
    pub output_limit: usize,
    /// Environment given to every step.
    pub env: Vec<(String, String)>,
    /// Extra host paths visible read-only inside the sandbox.
    pub extra_ro: Vec<PathBuf>,
    /// Bytes of combined output kept in `StepResult::output_tail`.
    pub tail_bytes: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            timeout: Duration::from_secs(600),
            output_limit: 1024 * 1024,
            env: Vec::new(),
            extra_ro: Vec::new(),
            tail_bytes: 4000,
        }
    }
}

/// Runs one verification command in `worktree` through `sandbox`. For
/// [`StepKind::Test`] the full output (not just the tail) is parsed for test
/// counts.
pub async fn run_step(
    sandbox: &dyn Sandbox,
    worktree: &Path,
    kind: StepKind,
    command: &str,
    opts: &VerifyOptions,
) -> Result<StepResult, SandboxError> {
    let request = ExecRequest {
        command: command.to_string(),
        workdir: worktree.to_path_buf(),
        env: opts.env.clone(),
        extra_ro: opts.extra_ro.clone(),
        timeout: opts.timeout,
        output_limit: opts.output_limit,
    };
    tracing::debug!(step = kind.as_str(), command, "running verification step");
    let out = sandbox.exec(&request).await?;
    let combined = out.combined();
    let counts = match kind {
        StepKind::Test => parse_test_output(&combined),
        _ => None,
    };
    Ok(StepResult {
        kind,
        command: command.to_string(),
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        duration_ms: u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
        output_tail: tail(&combined, opts.tail_bytes),
        counts,
    })
}

/// Runs setup, format, lint and test in that order, skipping empty commands.
/// A failed setup stops the run (nothing after it can be trusted); a failed
/// format or lint step does not, so the attempt gets all the feedback at once.
pub async fn run_steps(
    sandbox: &dyn Sandbox,
    worktree: &Path,
    cmds: &VerifyCommands,
    opts: &VerifyOptions,
) -> Result<Vec<StepResult>, SandboxError> {
    let mut results = Vec::new();
    for (kind, command) in cmds.steps() {
        let result = run_step(sandbox, worktree, kind, command, opts).await?;
        let stop = kind == StepKind::Setup && !result.succeeded();
        results.push(result);
        if stop {
            break;
        }
    }
    Ok(results)
}

/// The last `max_bytes` bytes of `s`, cut at a character boundary, with a
/// marker when something was dropped.
pub fn tail(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut start = s.len() - max_bytes;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} earlier bytes omitted]\n{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_at_a_char_boundary() {
        assert_eq!(tail("short", 10), "short");
        let t = tail("ééééé", 3);
        // 10 bytes; the cut lands inside an `é`, so it moves forward.
        assert!(t.ends_with("é"), "{t}");
        assert!(t.starts_with("[… 8 earlier bytes omitted]"), "{t}");
    }

    #[test]
    fn commands_list_only_configured_steps_in_order() {
        let cmds = VerifyCommands {
            setup: "make deps".into(),
            format: "  ".into(),
            lint: String::new(),
            test: "make test".into(),
        };
        let kinds: Vec<_> = cmds.steps().into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, vec![StepKind::Setup, StepKind::Test]);
    }
}
