//! Routing: which workflow a task gets, which worker does it (the task's
//! own `worker`, else the project's) and which models may do it, in
//! order. Roles map to models in config; `route(task)` turns the task type
//! and the project's strategy into a ranked list of worker candidates. The
//! n-th attempt takes the n-th candidate (the last one repeats), so a
//! cost-first project starts cheap and escalates on retries, and a
//! quality-first project starts with its strongest model. When a
//! candidate's provider is down, its configured fallback takes over inside
//! the provider layer (circuit breaker), so routing stays a pure function.

use orch_config::{ModelRef, ProjectConfig, Strategy, WorkerKind};
use orch_core::{Task, TaskType};
use orch_providers::pricing::PriceTable;
use serde::Serialize;

/// The steps a task goes through; selects the worker's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workflow {
    /// Implement, verify with the tests, judge.
    Implement,
    /// Write or improve tests; the judge checks they test something.
    Test,
    /// Reproduce, fix, verify.
    Fix,
    /// Review the code and fix what is wrong.
    Review,
}

impl Workflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Implement => "implement",
            Workflow::Test => "test",
            Workflow::Fix => "fix",
            Workflow::Review => "review",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub workflow: Workflow,
    /// What does the work: the task's `worker`, else the project's.
    pub worker: WorkerKind,
    /// Worker candidates, best first for this strategy.
    pub candidates: Vec<ModelRef>,
}

impl Route {
    /// The model for attempt `number` (1-based).
    pub fn model_for_attempt(&self, number: u32) -> Option<&ModelRef> {
        let i = (number.max(1) as usize - 1).min(self.candidates.len().saturating_sub(1));
        self.candidates.get(i)
    }
}

/// A model's price per million tokens (input + output); unknown models
/// count as free, so local models rank cheapest.
fn price_of(prices: &PriceTable, m: &ModelRef) -> f64 {
    prices
        .price(&m.model)
        .map(|p| p.input + p.output)
        .unwrap_or(0.0)
}

pub fn route(project: &ProjectConfig, task: &Task, prices: &PriceTable) -> Route {
    let workflow = match task.task_type {
        TaskType::Code => Workflow::Implement,
        TaskType::Test => Workflow::Test,
        TaskType::Fix => Workflow::Fix,
        TaskType::Review => Workflow::Review,
    };
    let mut candidates: Vec<ModelRef> = Vec::new();
    let mut push = |m: &ModelRef| {
        if !candidates.contains(m) {
            candidates.push(m.clone());
        }
    };
    push(&project.worker_model);
    for m in &project.worker_models {
        push(m);
    }
    // A stable sort keeps config order among equally priced models.
    match project.strategy {
        Strategy::CostFirst => {
            candidates.sort_by(|a, b| price_of(prices, a).total_cmp(&price_of(prices, b)))
        }
        Strategy::QualityFirst => {
            candidates.sort_by(|a, b| price_of(prices, b).total_cmp(&price_of(prices, a)))
        }
    }
    // Reviews go to the reviewer model first when there is one.
    if workflow == Workflow::Review {
        if let Some(r) = &project.reviewer_model {
            candidates.retain(|m| m != r);
            candidates.insert(0, r.clone());
        }
    }
    Route {
        workflow,
        worker: task.worker.unwrap_or(project.worker),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(s: &str) -> ModelRef {
        ModelRef::try_from(s.to_string()).unwrap()
    }

    fn task(t: TaskType) -> Task {
        Task {
            task_type: t,
            ..orch_testkit::fixtures::task()
        }
    }
    fn project(strategy: Strategy) -> ProjectConfig {
        let mut p = ProjectConfig::new("p", "/r", model("oai:gpt-4o"));
        p.worker_models = vec![
            model("oai:gpt-4o-mini"),
            model("ant:claude-opus-4"),
            model("local:qwen"),
        ];
        p.strategy = strategy;
        p
    }

    #[test]
    fn cost_first_starts_cheap_and_escalates_on_retries() {
        let r = route(
            &project(Strategy::CostFirst),
            &task(TaskType::Code),
            &PriceTable::shipped(),
        );
        let names: Vec<String> = r.candidates.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            names,
            [
                "local:qwen",
                "oai:gpt-4o-mini",
                "oai:gpt-4o",
                "ant:claude-opus-4"
            ]
        );
        assert_eq!(r.workflow, Workflow::Implement);
        assert_eq!(r.model_for_attempt(1).unwrap().to_string(), "local:qwen");
        assert_eq!(
            r.model_for_attempt(2).unwrap().to_string(),
            "oai:gpt-4o-mini"
        );
        assert_eq!(
            r.model_for_attempt(9).unwrap().to_string(),
            "ant:claude-opus-4"
        );
    }

    #[test]
    fn quality_first_starts_strong_and_reviews_go_to_the_reviewer() {
        let mut p = project(Strategy::QualityFirst);
        assert_eq!(
            route(&p, &task(TaskType::Fix), &PriceTable::shipped()).candidates[0].to_string(),
            "ant:claude-opus-4"
        );
        p.reviewer_model = Some(model("oai:gpt-4o-mini"));
        let r = route(&p, &task(TaskType::Review), &PriceTable::shipped());
        assert_eq!(r.workflow, Workflow::Review);
        assert_eq!(r.candidates[0].to_string(), "oai:gpt-4o-mini");
        assert_eq!(r.candidates.len(), 4);
    }

    #[test]
    fn the_task_s_worker_wins_over_the_project_s() {
        let prices = PriceTable::shipped();
        let mut p = project(Strategy::CostFirst);
        let mut t = task(TaskType::Code);
        assert_eq!(route(&p, &t, &prices).worker, WorkerKind::Builtin);
        p.worker = WorkerKind::Aider;
        assert_eq!(route(&p, &t, &prices).worker, WorkerKind::Aider);
        t.worker = Some(WorkerKind::MiniSweAgent);
        let r = route(&p, &t, &prices);
        assert_eq!(r.worker, WorkerKind::MiniSweAgent);
        // The models are routed as before, whoever does the work.
        assert_eq!(r.model_for_attempt(1).unwrap().to_string(), "local:qwen");
        t.worker = Some(WorkerKind::Builtin);
        assert_eq!(route(&p, &t, &prices).worker, WorkerKind::Builtin);
    }
}
