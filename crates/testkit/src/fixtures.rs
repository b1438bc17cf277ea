//! Plain domain values for unit tests: a task and an attempt with every
//! field at a neutral value, to be adjusted with struct update syntax
//! (`Task { title: "…".into(), ..fixtures::task() }`).

use orch_core::{
    Attempt, AttemptKind, AttemptStatus, Task, TaskId, TaskSource, TaskStatus, TaskType,
};

/// A pending manual code task `t` of project `p`, created now.
pub fn task() -> Task {
    let now = chrono::Utc::now();
    Task {
        id: TaskId::from("t"),
        project: "p".into(),
        title: "x".into(),
        description: String::new(),
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
        source: TaskSource::Manual,
        status: TaskStatus::Pending,
        attempts: 0,
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

/// Attempt `number` (row id the same) of task `t`, a work attempt that
/// ended with `status` after one turn, started and finished now.
pub fn attempt(number: u32, status: AttemptStatus) -> Attempt {
    let now = chrono::Utc::now();
    Attempt {
        id: i64::from(number),
        task_id: TaskId::from("t"),
        number,
        kind: AttemptKind::Work,
        status,
        base_commit: None,
        head_commit: None,
        summary: None,
        diff_stat: None,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        turns: 1,
        started_at: now,
        finished_at: Some(now),
        duration_ms: None,
        verification: None,
        verdict: None,
        audit_path: None,
        error: None,
        iterations: Vec::new(),
        candidate: None,
        round: None,
        branch: None,
        rank: None,
        rank_reason: None,
    }
}
