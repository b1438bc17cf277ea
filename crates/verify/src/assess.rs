//! Deciding whether an attempt's verification passed.
//!
//! Setup, format and lint must succeed. The test step must succeed, or every
//! test it reports failing must also fail on the base commit (the baseline):
//! an attempt is not blamed for breakage it inherited. When failures cannot
//! be attributed to named tests (unparseable output, unnamed failures, a
//! timeout) the attempt fails, because "maybe pre-existing" is not good
//! enough to merge.

use orch_core::{StepKind, StepResult, TestCounts, TestGoal, VerificationReport};

/// Names listed in a summary before "and N more".
const MAX_LISTED: usize = 20;

/// What the test step says about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// No test step ran (no test command configured).
    NotConfigured,
    /// The test command exited 0.
    Passed,
    /// The test command was killed at the timeout.
    TimedOut,
    /// The command failed, but every failing test also fails on the base.
    OnlyPreexisting { preexisting: Vec<String> },
    /// At least one failing test does not fail on the base commit.
    NewFailures {
        new: Vec<String>,
        preexisting: Vec<String>,
    },
    /// The command failed and its failures cannot be attributed to named
    /// tests; `reason` completes "the test step exited with code N and …".
    Unattributable { reason: String },
}

impl TestOutcome {
    /// True when the test step does not stop the attempt from passing.
    pub fn accepted(&self) -> bool {
        matches!(
            self,
            TestOutcome::NotConfigured | TestOutcome::Passed | TestOutcome::OnlyPreexisting { .. }
        )
    }
}

/// Classifies a test step. `baseline_failures` are the names of tests that
/// fail on the base commit; `None` when unknown (no baseline, or its output
/// could not be parsed), in which case every failure counts as new.
pub fn classify_tests(
    test: Option<&StepResult>,
    baseline_failures: Option<&[String]>,
) -> TestOutcome {
    let Some(step) = test else {
        return TestOutcome::NotConfigured;
    };
    if step.timed_out {
        return TestOutcome::TimedOut;
    }
    if step.succeeded() {
        return TestOutcome::Passed;
    }
    let Some(counts) = &step.counts else {
        return TestOutcome::Unattributable {
            reason: "its output was not recognised as pytest, cargo test, go test or jest output"
                .into(),
        };
    };
    let named = counts.failed_tests.len();
    if counts.failed == 0 {
        return TestOutcome::Unattributable {
            reason: format!(
                "{} reported no failing tests ({} passed), so the failure is unexplained",
                counts.runner, counts.passed
            ),
        };
    }
    if named == 0 {
        return TestOutcome::Unattributable {
            reason: format!(
                "{} reported {} failing tests but named none",
                counts.runner, counts.failed
            ),
        };
    }
    if named < counts.failed as usize {
        return TestOutcome::Unattributable {
            reason: format!(
                "{} reported {} failing tests but only {named} could be identified by name",
                counts.runner, counts.failed
            ),
        };
    }
    let base = baseline_failures.unwrap_or(&[]);
    let (preexisting, new): (Vec<String>, Vec<String>) = counts
        .failed_tests
        .iter()
        .cloned()
        .partition(|name| base.contains(name));
    if new.is_empty() {
        TestOutcome::OnlyPreexisting { preexisting }
    } else {
        TestOutcome::NewFailures { new, preexisting }
    }
}

/// Failing test names of a baseline run, or `None` when they are unknown.
fn baseline_failures(baseline: &StepResult) -> Option<Vec<String>> {
    if baseline.timed_out {
        return None;
    }
    if baseline.succeeded() {
        return Some(Vec::new());
    }
    baseline.counts.as_ref().map(|c| c.failed_tests.clone())
}

/// Builds the verification report for an attempt. `baseline` is the same
/// test command run on the base commit; `empty_diff` fails the attempt
/// outright; `goal` says which tests the task targets (a targeted test that
/// still fails blocks, even when it failed on the base too).
pub fn assess(
    steps: Vec<StepResult>,
    baseline: Option<&StepResult>,
    empty_diff: bool,
    goal: &TestGoal,
) -> VerificationReport {
    if empty_diff {
        return VerificationReport {
            passed: false,
            steps,
            preexisting_failures: Vec::new(),
            new_failures: Vec::new(),
            targeted_failures: Vec::new(),
            goal_unmet: None,
            empty_diff: true,
            summary: "the attempt changed no files".into(),
        };
    }

    let mut sentences = Vec::new();
    let failed_other: Vec<&StepResult> = steps
        .iter()
        .filter(|s| s.kind != StepKind::Test && !s.succeeded())
        .collect();
    for step in &failed_other {
        sentences.push(format!(
            "The {} step (`{}`) {}.",
            step.kind.as_str(),
            step.command,
            how_it_ended(step)
        ));
    }
    let setup_failed = failed_other.iter().any(|s| s.kind == StepKind::Setup);

    let test = steps.iter().find(|s| s.kind == StepKind::Test);
    let base_failures = baseline.and_then(baseline_failures);
    let outcome = classify_tests(test, base_failures.as_deref());
    let (preexisting, new) = match &outcome {
        TestOutcome::OnlyPreexisting { preexisting } => (preexisting.clone(), Vec::new()),
        TestOutcome::NewFailures { new, preexisting } => (preexisting.clone(), new.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    let (targeted_old, preexisting): (Vec<String>, Vec<String>) = preexisting
        .into_iter()
        .partition(|t| crate::target::targets(goal, t));
    let targeted: Vec<String> = new
        .iter()
        .filter(|t| crate::target::targets(goal, t))
        .chain(targeted_old.iter())
        .cloned()
        .collect();
    let goal_unmet = unmet_fix(goal, &outcome, base_failures.as_deref());

    match (&outcome, test) {
        (TestOutcome::NotConfigured, _) if setup_failed => {
            sentences.push("The later steps were not run because setup failed.".into());
        }
        (TestOutcome::NotConfigured, _) => {
            sentences.push("No test command is configured, so no tests were run.".into());
        }
        (TestOutcome::Passed, Some(step)) => {
            sentences.push(format!(
                "The test step (`{}`) passed{}.",
                step.command,
                counts_suffix(step)
            ));
        }
        (TestOutcome::TimedOut, Some(step)) => {
            sentences.push(format!(
                "The test step (`{}`) {}; a hanging test suite counts as a failure.",
                step.command,
                how_it_ended(step)
            ));
        }
        (TestOutcome::OnlyPreexisting { .. }, Some(step)) => {
            sentences.push(format!(
                "The test step (`{}`) {}{}, but every failing test also fails on the base commit, so none of the failures are new.",
                step.command,
                how_it_ended(step),
                counts_suffix(step)
            ));
        }
        (TestOutcome::NewFailures { new, .. }, Some(step)) => {
            sentences.push(format!(
                "The test step (`{}`) {}{}. New failing tests: {}.",
                step.command,
                how_it_ended(step),
                counts_suffix(step),
                list(new)
            ));
            match (baseline, &base_failures) {
                (None, _) => sentences.push(
                    "There was no test run on the base commit to compare with, so every failure counts as new."
                        .into(),
                ),
                (Some(_), None) => sentences.push(
                    "The base commit's test output could not be parsed, so every failure counts as new."
                        .into(),
                ),
                _ => {}
            }
        }
        (TestOutcome::Unattributable { reason }, Some(step)) => {
            sentences.push(format!(
                "The test step (`{}`) {}{} and {reason}, so its failures could not be told apart from failures that already exist on the base commit.",
                step.command,
                how_it_ended(step),
                counts_suffix(step)
            ));
        }
        // classify_tests only returns these with a test step present.
        (_, None) => {}
    }
    if !targeted.is_empty() {
        sentences.push(format!(
            "Tests this task targets still fail: {}; the task is not done until they pass.",
            list(&targeted)
        ));
    }
    if let Some(why) = &goal_unmet {
        sentences.push(why.clone());
    }
    let blocked_old = goal.block_preexisting && !preexisting.is_empty();
    if !preexisting.is_empty() {
        sentences.push(format!(
            "Tests that already failed on the base commit{}: {}.",
            if blocked_old {
                " (blocking: preexisting_failures = \"block\")"
            } else {
                ", not targeted by this task (tolerated)"
            },
            list(&preexisting)
        ));
    }

    let passed = failed_other.is_empty()
        && outcome.accepted()
        && targeted.is_empty()
        && goal_unmet.is_none()
        && !blocked_old;
    sentences.insert(
        0,
        if passed {
            "Verification passed."
        } else {
            "Verification failed."
        }
        .into(),
    );
    VerificationReport {
        passed,
        steps,
        preexisting_failures: preexisting,
        new_failures: new,
        targeted_failures: targeted,
        goal_unmet,
        empty_diff: false,
        summary: sentences.join(" "),
    }
}

/// A fix over a red base with no acceptance list must turn at least one of
/// the base's failures green; otherwise it proves nothing.
fn unmet_fix(goal: &TestGoal, outcome: &TestOutcome, base: Option<&[String]>) -> Option<String> {
    if !goal.must_fix_a_base_failure || !goal.acceptance.is_empty() {
        return None;
    }
    let base = base.filter(|b| !b.is_empty())?;
    let TestOutcome::OnlyPreexisting { preexisting } = outcome else {
        return None;
    };
    let fixed = base.iter().filter(|t| !preexisting.contains(t)).count();
    (fixed == 0).then(|| {
        format!(
            "This fix task turned none of the {} test(s) failing on the base commit green, so it fixed nothing the tests can see; make one of them pass, or give the task acceptance tests (`orch add-task --accept`).",
            base.len()
        )
    })
}

/// The summary followed by the output tail of each failed step, for the
/// next attempt's prompt. Each tail is cut to its last `max_tail_bytes`.
pub fn failure_feedback(report: &VerificationReport, max_tail_bytes: usize) -> String {
    let mut out = report.summary.clone();
    for step in report.steps.iter().filter(|s| !s.succeeded()) {
        let tail = crate::tail(step.output_tail.trim_end(), max_tail_bytes);
        out.push_str(&format!(
            "\n\nOutput of the {} step (`{}`), last part:\n{}",
            step.kind.as_str(),
            step.command,
            fenced(&tail)
        ));
    }
    out
}

/// Wraps text in a code fence longer than any backtick run inside it.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{text}\n{fence}")
}

fn how_it_ended(step: &StepResult) -> String {
    if step.timed_out {
        format!("timed out after {}s", step.duration_ms.div_ceil(1000))
    } else {
        match step.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".into(),
        }
    }
}

fn counts_suffix(step: &StepResult) -> String {
    match &step.counts {
        Some(c) => format!(" ({})", counts_text(c)),
        None => String::new(),
    }
}

/// `3 passed, 1 failed, 0 skipped (pytest)`.
pub fn counts_text(c: &TestCounts) -> String {
    format!(
        "{} passed, {} failed, {} skipped ({})",
        c.passed, c.failed, c.skipped, c.runner
    )
}

fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(MAX_LISTED).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if names.len() > MAX_LISTED {
        s.push_str(&format!(" and {} more", names.len() - MAX_LISTED));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: StepKind, command: &str, exit: i32) -> StepResult {
        StepResult {
            kind,
            command: command.into(),
            exit_code: Some(exit),
            timed_out: false,
            duration_ms: 10,
            output_tail: format!("output of {command}"),
            counts: None,
        }
    }

    fn test_step(exit: i32, output: &str) -> StepResult {
        StepResult {
            counts: crate::parse_test_output(output),
            output_tail: output.into(),
            ..step(StepKind::Test, "pytest -q", exit)
        }
    }

    const ONE_FAILS: &str =
        "=========================== short test summary info ============================\n\
        FAILED tests/test_a.py::test_old - assert 1 == 2\n\
        1 failed, 4 passed in 0.05s\n";
    const TWO_FAIL: &str =
        "=========================== short test summary info ============================\n\
        FAILED tests/test_a.py::test_old - assert 1 == 2\n\
        FAILED tests/test_a.py::test_new - KeyError: 'x'\n\
        2 failed, 3 passed in 0.05s\n";

    #[test]
    fn all_steps_green_passes() {
        let steps = vec![
            step(StepKind::Setup, "pip install -e .", 0),
            step(StepKind::Lint, "ruff check .", 0),
            test_step(0, "5 passed in 0.02s\n"),
        ];
        let r = assess(steps, None, false, &Default::default());
        assert!(r.passed, "{}", r.summary);
        assert!(
            r.summary.starts_with("Verification passed."),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("5 passed, 0 failed, 0 skipped (pytest)"),
            "{}",
            r.summary
        );
        assert!(r.new_failures.is_empty() && r.preexisting_failures.is_empty());
    }

    #[test]
    fn failures_that_also_fail_on_base_are_preexisting() {
        let baseline = test_step(1, ONE_FAILS);
        let r = assess(
            vec![test_step(1, ONE_FAILS)],
            Some(&baseline),
            false,
            &Default::default(),
        );
        assert!(r.passed, "{}", r.summary);
        assert_eq!(r.preexisting_failures, vec!["tests/test_a.py::test_old"]);
        assert!(r.new_failures.is_empty());
        assert!(
            r.summary.contains(
                "Tests that already failed on the base commit, not targeted by this task (tolerated): tests/test_a.py::test_old."
            ),
            "{}",
            r.summary
        );
    }

    #[test]
    fn a_new_failure_fails_and_is_named() {
        let baseline = test_step(1, ONE_FAILS);
        let r = assess(
            vec![test_step(1, TWO_FAIL)],
            Some(&baseline),
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert_eq!(r.new_failures, vec!["tests/test_a.py::test_new"]);
        assert_eq!(r.preexisting_failures, vec!["tests/test_a.py::test_old"]);
        assert!(r.summary.contains("exited with code 1"), "{}", r.summary);
        assert!(
            r.summary
                .contains("New failing tests: tests/test_a.py::test_new."),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("already failed on the base commit"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn without_a_baseline_every_failure_is_new() {
        let r = assess(
            vec![test_step(1, ONE_FAILS)],
            None,
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert_eq!(r.new_failures, vec!["tests/test_a.py::test_old"]);
        assert!(
            r.summary.contains("no test run on the base commit"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn green_baseline_makes_all_failures_new() {
        let baseline = test_step(0, "5 passed in 0.02s\n");
        let r = assess(
            vec![test_step(1, ONE_FAILS)],
            Some(&baseline),
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert_eq!(r.new_failures.len(), 1);
        assert!(
            !r.summary.contains("no test run on the base commit"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn unparseable_test_failure_fails_even_if_baseline_failed_too() {
        let garbage = "Segmentation fault (core dumped)\n";
        let baseline = test_step(139, garbage);
        let r = assess(
            vec![test_step(139, garbage)],
            Some(&baseline),
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert!(
            r.summary.contains("could not be told apart"),
            "{}",
            r.summary
        );
        assert!(r.summary.contains("exited with code 139"), "{}", r.summary);
    }

    #[test]
    fn failures_without_names_cannot_be_attributed() {
        let r = assess(
            vec![test_step(1, "2 failed, 1 passed in 0.1s\n")],
            None,
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert!(r.summary.contains("named none"), "{}", r.summary);
    }

    #[test]
    fn failing_exit_without_failing_tests_is_unexplained() {
        let out = include_str!("parse/fixtures/pytest_no_tests.txt");
        let r = assess(vec![test_step(5, out)], None, false, &Default::default());
        assert!(!r.passed);
        assert!(
            r.summary
                .contains("exited with code 5 (0 passed, 0 failed, 0 skipped (pytest))"),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("reported no failing tests (0 passed)"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn timed_out_test_step_fails() {
        let mut t = test_step(0, "5 passed in 0.02s\n");
        t.exit_code = None;
        t.timed_out = true;
        t.duration_ms = 600_000;
        let r = assess(vec![t], None, false, &Default::default());
        assert!(!r.passed);
        assert!(r.summary.contains("timed out after 600s"), "{}", r.summary);
    }

    #[test]
    fn lint_failure_fails_even_with_green_tests() {
        let steps = vec![
            step(StepKind::Lint, "cargo clippy", 101),
            test_step(0, "5 passed in 0.02s\n"),
        ];
        let r = assess(steps, None, false, &Default::default());
        assert!(!r.passed);
        assert!(
            r.summary
                .contains("The lint step (`cargo clippy`) exited with code 101."),
            "{}",
            r.summary
        );
    }

    #[test]
    fn setup_failure_explains_missing_steps() {
        let r = assess(
            vec![step(StepKind::Setup, "npm ci", 1)],
            None,
            false,
            &Default::default(),
        );
        assert!(!r.passed);
        assert!(
            r.summary
                .contains("setup step (`npm ci`) exited with code 1"),
            "{}",
            r.summary
        );
        assert!(
            r.summary.contains("not run because setup failed"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn no_test_command_passes_but_says_so() {
        let r = assess(
            vec![step(StepKind::Format, "black --check .", 0)],
            None,
            false,
            &Default::default(),
        );
        assert!(r.passed);
        assert!(
            r.summary.contains("No test command is configured"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn empty_diff_fails() {
        let r = assess(
            vec![test_step(0, "5 passed in 0.02s\n")],
            None,
            true,
            &Default::default(),
        );
        assert!(!r.passed);
        assert!(r.empty_diff);
        assert_eq!(r.summary, "the attempt changed no files");
    }

    #[test]
    fn long_name_lists_are_capped() {
        let names: Vec<String> = (0..25).map(|i| format!("t{i}")).collect();
        let s = list(&names);
        assert!(s.ends_with("t19 and 5 more"), "{s}");
    }

    #[test]
    fn feedback_includes_failed_step_output_in_a_safe_fence() {
        let mut lint = step(StepKind::Lint, "eslint .", 1);
        lint.output_tail = "src/a.js: ```weird``` 1 problem".into();
        let r = assess(
            vec![lint, test_step(0, "5 passed in 0.02s\n")],
            None,
            false,
            &Default::default(),
        );
        let fb = failure_feedback(&r, 1000);
        assert!(fb.starts_with(&r.summary));
        assert!(fb.contains("Output of the lint step (`eslint .`)"), "{fb}");
        assert!(
            fb.contains("````\nsrc/a.js: ```weird``` 1 problem\n````"),
            "{fb}"
        );
        assert!(
            !fb.contains("5 passed in 0.02s"),
            "passing steps are left out: {fb}"
        );
    }

    fn goal(acceptance: &[&str], mentions: &str, fix: bool) -> TestGoal {
        TestGoal {
            acceptance: acceptance.iter().map(|s| s.to_string()).collect(),
            mentions: mentions.into(),
            must_fix_a_base_failure: fix,
            block_preexisting: false,
        }
    }

    #[test]
    fn a_targeted_test_that_still_fails_blocks_even_if_it_failed_on_base() {
        let baseline = test_step(1, ONE_FAILS);
        let g = goal(&[], "make test_old pass in tests/test_a.py", false);
        let r = assess(vec![test_step(1, ONE_FAILS)], Some(&baseline), false, &g);
        assert!(!r.passed, "{}", r.summary);
        assert_eq!(r.targeted_failures, vec!["tests/test_a.py::test_old"]);
        assert!(r.preexisting_failures.is_empty());
        assert!(
            r.summary
                .contains("Tests this task targets still fail: tests/test_a.py::test_old"),
            "{}",
            r.summary
        );
        // Named through the acceptance list instead of the text.
        let g = goal(&["tests/test_a.py::test_old"], "unrelated words", false);
        let r = assess(vec![test_step(1, ONE_FAILS)], Some(&baseline), false, &g);
        assert!(!r.passed);
    }

    #[test]
    fn untargeted_preexisting_failures_are_tolerated_but_listed_or_blocked_by_policy() {
        let baseline = test_step(1, ONE_FAILS);
        let g = goal(&[], "add a README section", false);
        let r = assess(vec![test_step(1, ONE_FAILS)], Some(&baseline), false, &g);
        assert!(r.passed, "{}", r.summary);
        assert!(
            r.summary.contains("not targeted by this task (tolerated)"),
            "{}",
            r.summary
        );
        let mut g = g;
        g.block_preexisting = true;
        let r = assess(vec![test_step(1, ONE_FAILS)], Some(&baseline), false, &g);
        assert!(!r.passed);
        assert!(
            r.summary.contains("preexisting_failures = \"block\""),
            "{}",
            r.summary
        );
    }

    #[test]
    fn a_fix_over_a_red_base_must_turn_something_green() {
        let baseline = test_step(1, TWO_FAIL);
        let g = goal(&[], "repair the calculator", true);
        // Both base failures still fail: nothing fixed.
        let r = assess(vec![test_step(1, TWO_FAIL)], Some(&baseline), false, &g);
        assert!(!r.passed, "{}", r.summary);
        assert!(r.goal_unmet.is_some());
        assert!(
            r.summary.contains("turned none of the 2 test(s)"),
            "{}",
            r.summary
        );
        // One of them now passes: progress the tests can see.
        let r = assess(vec![test_step(1, ONE_FAILS)], Some(&baseline), false, &g);
        assert!(r.passed, "{}", r.summary);
        assert!(r.goal_unmet.is_none());
    }

    #[test]
    fn a_new_failing_acceptance_test_is_both_new_and_targeted() {
        let baseline = test_step(1, ONE_FAILS);
        let g = goal(&["tests/test_a.py::test_new"], "", false);
        let r = assess(vec![test_step(1, TWO_FAIL)], Some(&baseline), false, &g);
        assert!(!r.passed);
        assert_eq!(r.new_failures, vec!["tests/test_a.py::test_new"]);
        assert_eq!(r.targeted_failures, vec!["tests/test_a.py::test_new"]);
        assert_eq!(r.preexisting_failures, vec!["tests/test_a.py::test_old"]);
    }

    #[test]
    fn classify_uses_the_given_baseline_names() {
        let t = test_step(1, TWO_FAIL);
        let base = vec![
            "tests/test_a.py::test_old".to_string(),
            "tests/test_a.py::test_new".to_string(),
        ];
        assert!(classify_tests(Some(&t), Some(&base)).accepted());
        assert!(!classify_tests(Some(&t), None).accepted());
        assert_eq!(classify_tests(None, None), TestOutcome::NotConfigured);
    }
}
