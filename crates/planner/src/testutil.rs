//! Test helpers: stored tasks and a small planning context. The scripted
//! `Provider` lives in `orch_testkit::scripted`.

use crate::PlanContext;
use orch_core::{Task, TaskId, TaskSource, TaskStatus, TaskType};

pub fn stored_task(title: &str, description: &str, status: TaskStatus) -> Task {
    let now = chrono::Utc::now();
    Task {
        id: TaskId::new(),
        project: "demo".into(),
        title: title.into(),
        description: description.into(),
        task_type: TaskType::Code,
        priority: 0,
        allowed_files: Vec::new(),
        acceptance_tests: Vec::new(),
        infra_failures: 0,
        not_before: None,
        depends_on: Vec::new(),
        plan_key: None,
        candidates: None,
        worker: None,
        source: TaskSource::Planner,
        status,
        attempts: 2,
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

pub fn context() -> PlanContext {
    PlanContext {
        file_tree: "src/parser.py\ntests/test_parser.py".into(),
        docs: vec![(
            "README.md".into(),
            "# Demo\n\nA tiny parser.\nEnjoy.".into(),
        )],
    }
}
