//! Loop detection: a task whose attempts keep failing the same way, or
//! whose worker goes back and forth between two versions of its change, is
//! stopped and handed to a person instead of burning its remaining
//! attempts. The design notes stop at a similarity of 0.8 between
//! consecutive failures; `loop_similarity` sets it, `stop_on_oscillation`
//! turns the A → B → A check on or off.
//!
//! Best-of-N rounds are compared as rounds: candidates differ by design, so
//! two failed candidates of one round say nothing. Two rounds in a row
//! repeat when every candidate that failed in the later one failed like
//! some candidate of the one before (at least `loop_similarity` alike).
//! The A → B → A check compares single attempts only.

use crate::cycle::Engine;
use crate::Result;
use orch_core::{Attempt, AttemptKind, AttemptStatus, Task, VerificationReport};
use orch_protocol::{LoopDetected, LoopKind};

/// Characters of each failure compared; enough for a test run's tail.
const SIGNATURE_CHARS: usize = 4000;

/// What a failed attempt failed with, normalised so that run-to-run noise
/// (timings, ports, temporary paths with numbers) does not hide a repeat.
pub(crate) fn failure_signature(attempt: &Attempt) -> String {
    let mut text = String::new();
    if let Some(e) = &attempt.error {
        text.push_str(e);
        text.push('\n');
    }
    let report = attempt
        .verification
        .clone()
        .and_then(|v| serde_json::from_value::<VerificationReport>(v).ok());
    if let Some(r) = report {
        for step in r.steps.iter().filter(|s| !s.succeeded()) {
            text.push_str(&step.output_tail);
            text.push('\n');
        }
        for t in r.new_failures.iter().chain(&r.targeted_failures) {
            text.push_str(t);
            text.push('\n');
        }
    }
    if let Some(issues) = attempt
        .verdict
        .as_ref()
        .and_then(|v| v.get("issues"))
        .and_then(|i| i.as_array())
    {
        for i in issues.iter().filter_map(|i| i.as_str()) {
            text.push_str(i);
            text.push('\n');
        }
    }
    normalise(&text)
}

fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(SIGNATURE_CHARS));
    let mut last_digit = false;
    let mut last_space = false;
    for c in text.chars() {
        if out.len() >= SIGNATURE_CHARS {
            break;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
            last_space = false;
        } else if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            last_digit = false;
        } else {
            out.push(c);
            last_digit = false;
            last_space = false;
        }
    }
    out.trim().to_string()
}

/// How alike two failures are, from 0 to 1 (difflib's ratio over chars).
pub(crate) fn similarity(a: &str, b: &str) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    f64::from(similar::TextDiff::from_chars(a, b).ratio())
}

impl Engine {
    /// Why `task` should stop and ask a person rather than try again, from
    /// its counted attempts so far.
    pub(crate) async fn loop_detected(&self, task: &Task) -> Result<Option<LoopDetected>> {
        let failed: Vec<Attempt> = self
            .store
            .attempts(&task.id)?
            .into_iter()
            // A failed conflict resolution is not the work failing again.
            .filter(|a| a.status == AttemptStatus::Failed && a.kind == AttemptKind::Work)
            .collect();
        let threshold = self.project.loop_similarity;
        if failed.last().is_some_and(|a| a.candidate.is_some()) {
            return Ok(repeated_round(&failed, threshold));
        }
        if let [.., before, last] = failed.as_slice() {
            let (a, b) = (failure_signature(before), failure_signature(last));
            let score = similarity(&a, &b);
            if threshold > 0.0 && !a.is_empty() && score >= threshold {
                return Ok(Some(LoopDetected {
                    kind: LoopKind::RepeatedFailure,
                    similarity: Some(score),
                    threshold: Some(threshold),
                    attempts: vec![before.number, last.number],
                    rounds: Vec::new(),
                    excerpt: excerpt(&last_failure_text(last)),
                }));
            }
        }
        if self.project.stop_on_oscillation {
            if let [.., first, middle, last] = failed.as_slice() {
                if let (Some(a), Some(b), Some(c)) =
                    (&first.head_commit, &middle.head_commit, &last.head_commit)
                {
                    if self.git.same_tree(a, c).await? && !self.git.same_tree(b, c).await? {
                        return Ok(Some(LoopDetected {
                            kind: LoopKind::Oscillation,
                            similarity: None,
                            threshold: None,
                            attempts: vec![first.number, middle.number, last.number],
                            rounds: Vec::new(),
                            excerpt: excerpt(&last_failure_text(last)),
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Stops `task` for a person with what repeated; true when it did.
    pub(crate) async fn stop_if_looping(&self, task: &Task) -> Result<bool> {
        let Some(found) = self.loop_detected(task).await? else {
            return Ok(false);
        };
        let question = match found.kind {
            LoopKind::RepeatedFailure if !found.rounds.is_empty() => format!(
                "Rounds {} of candidates failed the same way: each candidate that failed in the last round failed as one of the round before did (similarity at least {:.2} ≥ loop_similarity {:.2}; attempts {}), so another round is unlikely to help. The repeated failures:\n\n{}\n\nHow should the workers proceed? Answer with a hint, or cancel the task.",
                join(&found.rounds),
                found.similarity.unwrap_or(1.0),
                found.threshold.unwrap_or(1.0),
                join(&found.attempts),
                found.excerpt
            ),
            LoopKind::RepeatedFailure => format!(
                "Attempts {} failed the same way (similarity {:.2} ≥ loop_similarity {:.2}), so another try is unlikely to help. The repeated failure:\n\n{}\n\nHow should the worker proceed? Answer with a hint, or cancel the task.",
                join(&found.attempts),
                found.similarity.unwrap_or(1.0),
                found.threshold.unwrap_or(1.0),
                found.excerpt
            ),
            LoopKind::Oscillation => format!(
                "Attempts {} went back and forth: the last one produced the same files as the one two before it. The last failure:\n\n{}\n\nWhich way is right? Answer with a hint, or cancel the task.",
                join(&found.attempts),
                found.excerpt
            ),
        };
        self.rec.note(
            Some(task.id.as_str()),
            found.clone(),
            format!("loop detected ({}); asking a person", found.kind.as_str()),
        );
        self.store.ask_human(&task.id, &question)?;
        Ok(true)
    }
}

/// Best-of-N: the last two rounds with failed candidates (`failed` is in
/// attempt order), when every failure of the later round has a
/// near-identical one in the round before; the similarity reported is the
/// weakest of those matches.
fn repeated_round(failed: &[Attempt], threshold: f64) -> Option<LoopDetected> {
    if threshold <= 0.0 {
        return None;
    }
    // Only the trailing run of candidates: single attempts before them
    // are another way of working the task.
    let start = failed
        .iter()
        .rposition(|a| a.candidate.is_none())
        .map_or(0, |i| i + 1);
    let candidates = &failed[start..];
    let last_round = candidates.last()?.round?;
    let last: Vec<&Attempt> = candidates
        .iter()
        .filter(|a| a.round == Some(last_round))
        .collect();
    let before_round = candidates
        .iter()
        .filter_map(|a| a.round)
        .filter(|r| *r < last_round)
        .max()?;
    let before: Vec<&Attempt> = candidates
        .iter()
        .filter(|a| a.round == Some(before_round))
        .collect();
    let earlier: Vec<String> = before.iter().map(|a| failure_signature(a)).collect();
    let mut weakest = f64::INFINITY;
    for a in &last {
        let sig = failure_signature(a);
        if sig.is_empty() {
            return None;
        }
        let best = earlier
            .iter()
            .map(|e| similarity(e, &sig))
            .fold(0.0, f64::max);
        if best < threshold {
            return None;
        }
        weakest = weakest.min(best);
    }
    let repeated = last
        .iter()
        .map(|a| {
            format!(
                "Candidate {} (attempt {}):\n{}",
                a.candidate.unwrap_or(0),
                a.number,
                orch_verify::tail(last_failure_text(a).trim(), 600)
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    Some(LoopDetected {
        kind: LoopKind::RepeatedFailure,
        similarity: Some(weakest),
        threshold: Some(threshold),
        attempts: before.iter().chain(&last).map(|a| a.number).collect(),
        rounds: vec![before_round, last_round],
        excerpt: excerpt(&repeated),
    })
}

fn join(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The failure as people read it (not normalised).
fn last_failure_text(a: &Attempt) -> String {
    let report = a
        .verification
        .clone()
        .and_then(|v| serde_json::from_value::<VerificationReport>(v).ok());
    match (report, &a.error) {
        (Some(r), _) if !r.passed => r
            .steps
            .iter()
            .filter(|s| !s.succeeded())
            .map(|s| s.output_tail.clone())
            .collect::<Vec<_>>()
            .join("\n"),
        (_, Some(e)) => e.clone(),
        _ => a.summary.clone().unwrap_or_default(),
    }
}

fn excerpt(text: &str) -> String {
    orch_verify::tail(text.trim(), 1500)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digits_and_spacing_do_not_hide_a_repeat() {
        let a = normalise("FAILED test_calc.py::test_add - assert -1 == 3\n1 failed in 0.03s");
        let b = normalise("FAILED test_calc.py::test_add - assert -1 == 3\n1 failed in  0.11s");
        assert_eq!(a, b);
        assert!(similarity(&a, &b) >= 0.999);
    }

    #[test]
    fn different_failures_are_not_similar() {
        let a = normalise("ImportError: cannot import name 'sub' from 'calc'");
        let b = normalise("FAILED test_calc.py::test_mul - AssertionError: 6 != 5");
        assert!(similarity(&a, &b) < 0.5, "{}", similarity(&a, &b));
    }

    /// A failed candidate of `round` whose failure is `error`.
    fn candidate(number: u32, round: u32, k: u32, error: &str) -> Attempt {
        Attempt {
            error: Some(error.into()),
            candidate: Some(k),
            round: Some(round),
            ..orch_testkit::fixtures::attempt(number, AttemptStatus::Failed)
        }
    }
    const IMPORT: &str = "ImportError: cannot import name 'sub' from 'calc'";
    const MUL: &str = "FAILED test_calc.py::test_mul - AssertionError: 6 != 5";

    #[test]
    fn rounds_repeat_when_every_later_failure_was_seen_the_round_before() {
        // Candidate 2 now fails as candidate 1 did: still nothing new.
        let failed = [
            candidate(1, 1, 1, IMPORT),
            candidate(2, 1, 2, MUL),
            candidate(3, 2, 1, MUL),
            candidate(4, 2, 2, IMPORT),
        ];
        let found = repeated_round(&failed, 0.8).unwrap();
        assert_eq!(found.rounds, [1, 2]);
        assert_eq!(found.attempts, [1, 2, 3, 4]);
        assert!(found.similarity.unwrap() >= 0.999);
        assert!(
            found.excerpt.contains("Candidate 2 (attempt 4)"),
            "{}",
            found.excerpt
        );
    }

    #[test]
    fn a_new_failure_or_a_single_round_is_no_loop() {
        let one_new = [
            candidate(1, 1, 1, IMPORT),
            candidate(2, 1, 2, IMPORT),
            candidate(3, 2, 1, IMPORT),
            candidate(4, 2, 2, MUL),
        ];
        assert!(repeated_round(&one_new, 0.8).is_none());
        // Two candidates of one round failing alike are not a loop.
        let one_round = [candidate(1, 1, 1, IMPORT), candidate(2, 1, 2, IMPORT)];
        assert!(repeated_round(&one_round, 0.8).is_none());
        // 0 turns it off.
        let twice = [candidate(1, 1, 1, IMPORT), candidate(2, 2, 1, IMPORT)];
        assert!(repeated_round(&twice, 0.8).is_some());
        assert!(repeated_round(&twice, 0.0).is_none());
    }

    #[test]
    fn nearly_identical_failures_pass_the_default_threshold() {
        let a = "FAILED test_calc.py::test_add - assert -1 == 3 where -1 = add(1, 2)";
        let b = "FAILED test_calc.py::test_add - assert -1 == 3 where -1 = add(1, 2)\n";
        assert!(similarity(&normalise(a), &normalise(b)) >= 0.8);
    }
}
