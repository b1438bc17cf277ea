//! The architect for a whole project (`orch new`): from the requirements,
//! the project's `PLAN.md` in the milestone format (`## Task N.M: Title`
//! sections), which the caller checks, commits and imports. The call is the
//! architect role's, metered like every other (priced, recorded, budgets
//! checked) through the engine's providers; its model is the project's
//! `architect_model`, else its worker model.

use crate::cycle::Engine;
use crate::metered::CallContext;
use crate::{EngineError, Result};
use orch_protocol::{self as protocol, Stage};
use orch_providers::{ChatRequest, Message};

/// The architect's job for a new project: the plan, in the one format the
/// plan importer reads.
pub const PROJECT_ARCHITECT_PROMPT: &str = "You are the architect of a new software project. \
Its requirements are below; they are committed as REQUIREMENTS.md in an otherwise empty git repository. \
Write the project's PLAN.md: a milestone plan that workers with file and shell tools carry out one task at a time, \
in file order, each task verified with the project's tests and merged before the next one starts.\n\n\
Use exactly this format (a plan without `## Task` sections is refused):\n\n\
# Milestone 1: <name>\n\n\
## Task 1.1: <short title>\n\
**Type:** code\n\
**Files:** `path/one.py`, `path/test_one.py`\n\n\
<what to build, in a few sentences>\n\n\
**Acceptance criteria:**\n\
- <an observable result>\n\n\
Rules: 2 to 10 tasks; each small enough for one worker session and building on the ones before; \
each adds or updates the tests for what it builds; `Files:` lists every file the task may create or change, \
as paths relative to the repository root; `Type:` is code, test, fix or review. \
Answer with the plan only: no preamble and no code fence around it.";

impl Engine {
    /// Asks the architect for the project's PLAN.md from `requirements`.
    /// The answer is returned as written (the caller checks it); a failed
    /// call or an empty answer is an error.
    pub async fn architect_project_plan(&self, requirements: &str) -> Result<String> {
        let model = self
            .project
            .architect_model
            .clone()
            .unwrap_or_else(|| self.project.worker_model.clone());
        let repo = self.config.project_path(&self.project);
        let files = orch_planner::gather_context(&repo, 300, 8_000).file_tree;
        let tests = if self.project.test_command.is_empty() {
            "The project has no test command yet.".to_string()
        } else {
            format!(
                "The project's tests run with `{}`.",
                self.project.test_command
            )
        };
        let request = ChatRequest::new(
            String::new(),
            vec![
                Message::system(PROJECT_ARCHITECT_PROMPT),
                Message::user(format!(
                    "# Requirements\n\n{}\n\n# Repository\n\n{tests}\n\nFiles:\n{files}\n",
                    requirements.trim()
                )),
            ],
        );
        self.rec.note(
            None,
            protocol::StageStarted {
                model: Some(model.to_string()),
                ..protocol::StageStarted::new(Stage::Architect)
            },
            format!("architect {model} is writing the project's PLAN.md"),
        );
        let started = std::time::Instant::now();
        let ctx = CallContext {
            role: "architect",
            task_id: None,
            attempt_id: None,
        };
        let answer = match self.provider_for(&model, ctx) {
            Ok((provider, name)) => {
                let mut request = request;
                request.model = name;
                provider.chat(&request).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let text = answer
            .map(|r| r.message.content)
            .and_then(|t| match t.trim().is_empty() {
                true => Err("the answer was empty".to_string()),
                false => Ok(t),
            });
        self.rec.note(
            None,
            protocol::StageFinished::new(Stage::Architect, None, started.elapsed(), text.is_ok()),
            match &text {
                Ok(_) => format!("architect {model} wrote the project's PLAN.md"),
                Err(e) => format!("architect {model} wrote no PLAN.md: {e}"),
            },
        );
        text.map_err(|e| EngineError::Provider(format!("architect {model}: {e}")))
    }
}
