//! Test helpers: builders for tasks and verification reports. The scripted
//! `Provider` lives in `orch_testkit::scripted`.

use orch_core::{
    StepKind, StepResult, Task, TaskId, TaskSource, TaskStatus, TaskType, VerificationReport,
};

pub fn task() -> Task {
    let now = chrono::Utc::now();
    Task {
        id: TaskId::from("abc123def456"),
        project: "demo".into(),
        title: "Add an add() function".into(),
        description: "Implement add(a, b) in src/lib.rs and test it.".into(),
        task_type: TaskType::Code,
        priority: 1,
        allowed_files: vec!["src/**".into()],
        acceptance_tests: Vec::new(),
        infra_failures: 0,
        not_before: None,
        depends_on: Vec::new(),
        plan_key: None,
        candidates: None,
        worker: None,
        source: TaskSource::Manual,
        status: TaskStatus::Judging,
        attempts: 1,
        feedback: None,
        question: None,
        answer: None,
        failure_reason: None,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        created_at: now,
        updated_at: now,
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
