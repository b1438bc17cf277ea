//! Test helpers: stored tasks and a small planning context. The scripted
//! `Provider` lives in `orch_testkit::scripted`.

use crate::PlanContext;
use orch_core::{Task, TaskId, TaskSource, TaskStatus};

pub fn stored_task(title: &str, description: &str, status: TaskStatus) -> Task {
    Task {
        id: TaskId::new(),
        project: "demo".into(),
        title: title.into(),
        description: description.into(),
        source: TaskSource::Planner,
        status,
        attempts: 2,
        ..orch_testkit::fixtures::task()
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
