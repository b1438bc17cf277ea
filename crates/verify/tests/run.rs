//! Running verification steps as real processes through the `none` sandbox:
//! step order, stopping after a failed setup, timeouts, environment, output
//! tails, test-count parsing, and the baseline comparison end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_core::StepKind;
use orch_sandbox::none::NoSandbox;
use orch_verify::{assess, run_step, run_steps, VerifyCommands, VerifyOptions};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn opts() -> VerifyOptions {
    VerifyOptions {
        timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// Writes a script into `dir` that prints pytest-style output and exits.
fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

#[tokio::test]
async fn steps_run_in_order_and_test_output_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "out.txt",
        "=========================== short test summary info ============================\n\
         FAILED tests/test_a.py::test_b - assert 1 == 2\n\
         1 failed, 2 passed in 0.03s\n",
    );
    let cmds = VerifyCommands {
        setup: "echo setup >> order.log".into(),
        format: "echo format >> order.log".into(),
        lint: "echo lint >> order.log; exit 3".into(),
        test: "echo test >> order.log; cat out.txt; exit 1".into(),
    };
    let steps = run_steps(&NoSandbox::new(), dir.path(), &cmds, &opts())
        .await
        .unwrap();
    let kinds: Vec<_> = steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StepKind::Setup,
            StepKind::Format,
            StepKind::Lint,
            StepKind::Test
        ]
    );
    let order = std::fs::read_to_string(dir.path().join("order.log")).unwrap();
    assert_eq!(
        order, "setup\nformat\nlint\ntest\n",
        "a failed lint does not stop the tests"
    );
    assert_eq!(steps[2].exit_code, Some(3));
    let test = &steps[3];
    assert_eq!(test.exit_code, Some(1));
    assert!(!test.timed_out);
    let counts = test.counts.as_ref().expect("pytest output is parsed");
    assert_eq!((counts.passed, counts.failed), (2, 1));
    assert_eq!(counts.failed_tests, vec!["tests/test_a.py::test_b"]);
    assert!(
        steps[..3].iter().all(|s| s.counts.is_none()),
        "only the test step is parsed"
    );

    let report = assess(steps, None, false, &Default::default());
    assert!(!report.passed);
    assert!(
        report.summary.contains("The lint step"),
        "{}",
        report.summary
    );
}

#[tokio::test]
async fn failed_setup_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cmds = VerifyCommands {
        setup: "echo cannot install >&2; exit 2".into(),
        format: String::new(),
        lint: "touch lint-ran".into(),
        test: "touch test-ran".into(),
    };
    let steps = run_steps(&NoSandbox::new(), dir.path(), &cmds, &opts())
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].exit_code, Some(2));
    assert!(
        steps[0].output_tail.contains("cannot install"),
        "{}",
        steps[0].output_tail
    );
    assert!(!dir.path().join("lint-ran").exists());
    assert!(!dir.path().join("test-ran").exists());
}

#[tokio::test]
async fn timeout_marks_the_step_and_fails_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let o = VerifyOptions {
        timeout: Duration::from_millis(300),
        ..opts()
    };
    let step = run_step(
        &NoSandbox::new(),
        dir.path(),
        StepKind::Test,
        "sleep 30",
        &o,
    )
    .await
    .unwrap();
    assert!(step.timed_out);
    assert!(!step.succeeded());
    assert!(
        step.duration_ms < 20_000,
        "killed well before sleep ended: {}ms",
        step.duration_ms
    );
    let report = assess(vec![step], None, false, &Default::default());
    assert!(!report.passed);
    assert!(report.summary.contains("timed out"), "{}", report.summary);
}

#[tokio::test]
async fn env_is_passed_and_the_tail_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let o = VerifyOptions {
        env: vec![("ORCH_VERIFY_PROBE".into(), "probe-value".into())],
        tail_bytes: 200,
        ..opts()
    };
    let cmd = "seq 1 5000; echo \"probe=$ORCH_VERIFY_PROBE\"";
    let step = run_step(&NoSandbox::new(), dir.path(), StepKind::Lint, cmd, &o)
        .await
        .unwrap();
    assert!(step.succeeded());
    assert!(
        step.output_tail.ends_with("probe=probe-value\n"),
        "{}",
        step.output_tail
    );
    assert!(
        step.output_tail.len() < 300,
        "tail kept {} bytes",
        step.output_tail.len()
    );
    assert!(step.output_tail.contains("earlier bytes omitted"));
    assert_eq!(step.command, cmd);
}

/// A real pytest project where one test already fails on the base commit
/// and the attempt adds a second failure. Skipped when pytest is missing.
#[tokio::test]
async fn real_pytest_with_baseline() {
    let has_pytest = Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_pytest {
        eprintln!("skipping: python3 -m pytest is not available");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let attempt = tempfile::tempdir().unwrap();
    let old = "def test_ok():\n    assert True\n\ndef test_old():\n    assert 1 == 2\n";
    write(base.path(), "test_a.py", old);
    write(
        attempt.path(),
        "test_a.py",
        &format!("{old}\ndef test_new():\n    assert {{}}['x']\n"),
    );
    let cmd = "python3 -m pytest -q -p no:cacheprovider";
    let sb = NoSandbox::new();
    let baseline = run_step(&sb, base.path(), StepKind::Test, cmd, &opts())
        .await
        .unwrap();
    let cmds = VerifyCommands {
        test: cmd.into(),
        ..Default::default()
    };
    let steps = run_steps(&sb, attempt.path(), &cmds, &opts())
        .await
        .unwrap();

    let counts = steps[0]
        .counts
        .clone()
        .expect("real pytest output is parsed");
    assert_eq!((counts.passed, counts.failed), (1, 2));
    let report = assess(steps, Some(&baseline), false, &Default::default());
    assert!(!report.passed);
    assert_eq!(report.new_failures, vec!["test_a.py::test_new"]);
    assert_eq!(report.preexisting_failures, vec!["test_a.py::test_old"]);

    // Only the pre-existing failure left: the attempt passes.
    write(attempt.path(), "test_a.py", old);
    let steps = run_steps(&sb, attempt.path(), &cmds, &opts())
        .await
        .unwrap();
    let report = assess(steps, Some(&baseline), false, &Default::default());
    assert!(report.passed, "{}", report.summary);
    assert!(report
        .summary
        .contains("not targeted by this task (tolerated): test_a.py::test_old"));
}
