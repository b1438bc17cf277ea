//! Test helpers: builders for tasks and verification reports. The scripted
//! `Provider` lives in `orch_testkit::scripted`.

use orch_core::{StepKind, StepResult, Task, TaskId, TaskStatus, VerificationReport};

pub fn task() -> Task {
    Task {
        id: TaskId::from("abc123def456"),
        project: "demo".into(),
        title: "Add an add() function".into(),
        description: "Implement add(a, b) in src/lib.rs and test it.".into(),
        priority: 1,
        allowed_files: vec!["src/**".into()],
        status: TaskStatus::Judging,
        attempts: 1,
        ..orch_testkit::fixtures::task()
    }
}

pub fn step(kind: StepKind, exit: i32) -> StepResult {
    StepResult {
        kind,
        command: kind.as_str().into(),
        exit_code: Some(exit),
        timed_out: false,
        duration_ms: 5,
        output_tail: String::new(),
        counts: None,
    }
}

pub fn test_step(exit: i32, output: &str) -> StepResult {
    StepResult {
        command: "pytest -q".into(),
        counts: orch_verify::parse_test_output(output),
        output_tail: output.into(),
        ..step(StepKind::Test, exit)
    }
}

pub fn report_with(steps: Vec<StepResult>, passed: bool, summary: &str) -> VerificationReport {
    VerificationReport {
        passed,
        steps,
        preexisting_failures: Vec::new(),
        new_failures: Vec::new(),
        targeted_failures: Vec::new(),
        goal_unmet: None,
        empty_diff: false,
        summary: summary.into(),
    }
}

pub fn green_report() -> VerificationReport {
    orch_verify::assess(
        vec![test_step(0, "3 passed in 0.10s\n")],
        None,
        false,
        &Default::default(),
    )
}
