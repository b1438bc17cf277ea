//! The planner: asks a model for the next tasks of a project and keeps only
//! the ones worth running.
//!
//! - [`gather_context`] collects what the model sees: the file tree and a
//!   few documents (README, CLAUDE.md, AGENTS.md, BACKLOG.md).
//! - [`plan`] sends one structured-output request (`task_plan` schema) with
//!   that context, the open tasks and the recent failures; an unreadable
//!   answer gets one repair round.
//! - [`validate`] checks the answer field by field and drops duplicates,
//!   unchanged repeats of failed tasks and tasks with unsafe `allowed_files`,
//!   recording why.
//! - [`render_markdown`] writes the plan into the audit trail.

mod context;
pub mod plan_file;
mod prompt;
mod render;
pub mod task_file;
mod validate;

pub use context::{gather_context, PlanContext};
pub use prompt::{build_messages, system_prompt};
pub use render::render_markdown;
pub use validate::{
    normalize, validate, MAX_ACCEPTANCE_TESTS, MAX_ALLOWED_FILES, MAX_DESCRIPTION_CHARS,
    MAX_NOTES_CHARS, MAX_PATH_CHARS, MAX_PLAN_TASKS, MAX_TITLE_CHARS,
};

use orch_core::{NewTask, Task, TaskSource, TaskType, Usage};
use orch_providers::structured::{structured, StructuredError};
use orch_providers::{ChatRequest, Provider, ProviderError, ResponseFormat};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Bytes of an unreadable planner answer quoted in the error.
const RAW_ANSWER_CAP: usize = 1000;

/// A task the planner proposes (after validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedTask {
    pub title: String,
    pub description: String,
    pub task_type: TaskType,
    pub priority: i64,
    pub allowed_files: Vec<String>,
    /// Tests that prove the task done (test ids or files).
    #[serde(default)]
    pub acceptance_tests: Vec<String>,
}

impl ProposedTask {
    /// The task to store, marked as coming from the planner.
    pub fn to_new_task(&self, project: &str) -> NewTask {
        NewTask {
            project: project.to_string(),
            title: self.title.clone(),
            description: self.description.clone(),
            task_type: self.task_type,
            priority: self.priority,
            allowed_files: self.allowed_files.clone(),
            source: TaskSource::Planner,
            acceptance_tests: self.acceptance_tests.clone(),
            ..NewTask::default()
        }
    }
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Tasks to create, highest priority first.
    pub tasks: Vec<ProposedTask>,
    /// The model's notes for humans.
    pub notes: String,
    /// Tasks the model proposed that were not kept: (title, reason).
    pub dropped: Vec<(String, String)>,
    /// The model's answer as it came.
    pub raw: serde_json::Value,
}

/// Everything the planner is told.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub project: &'a str,
    pub context: &'a PlanContext,
    /// Tasks not yet finished (new tasks must not duplicate them).
    pub open_tasks: &'a [Task],
    /// Recently failed tasks, with their failure reasons.
    pub recent_failures: &'a [Task],
    /// How many tasks are wanted at most.
    pub want: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("planner model call failed: {0}")]
    Provider(#[from] ProviderError),
    /// The answer does not match the `task_plan` schema.
    #[error("invalid task plan: {0}")]
    Invalid(String),
    /// The model answered with an invalid plan twice.
    #[error(
        "the planner model's answer was not a valid task plan, even after one repair round: \
         {error}. Its last answer began: {raw}. Try a more capable planner model, or add tasks by hand"
    )]
    Malformed { error: String, raw: String },
}

/// JSON schema of the planner's answer, used as the `task_plan` response
/// format, for a plan of at most `want` tasks.
///
/// Every size is bounded (`maxItems`, `maxLength`): a server that enforces
/// the schema with a grammar then cannot generate until its context is
/// full, and one that does not gets a repair round when it overshoots.
/// `acceptance_tests` is optional, so plans written before it existed still
/// validate; OpenAI's strict mode, which wants every property required, is
/// satisfied on the wire by [`orch_providers::openai`].
pub fn task_plan_schema(want: usize) -> serde_json::Value {
    let bounded_paths = |description: &str, max: usize| {
        json!({
            "type": "array",
            "items": { "type": "string", "maxLength": MAX_PATH_CHARS },
            "maxItems": max,
            "description": description
        })
    };
    json!({
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "maxItems": want.clamp(1, MAX_PLAN_TASKS),
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {
                            "type": "string",
                            "maxLength": MAX_TITLE_CHARS,
                            "description": "short imperative sentence"
                        },
                        "description": {
                            "type": "string",
                            "maxLength": MAX_DESCRIPTION_CHARS,
                            "description": "self-contained instructions with acceptance criteria"
                        },
                        "type": {
                            "type": "string",
                            "enum": ["code", "test", "fix", "review"]
                        },
                        "priority": {
                            "type": "integer",
                            "description": "higher runs first"
                        },
                        "allowed_files": bounded_paths(
                            "relative paths or globs the worker may change; empty = any file",
                            MAX_ALLOWED_FILES
                        ),
                        "acceptance_tests": bounded_paths(
                            "tests that must pass when the task is done: test ids like \
                             tests/test_x.py::test_y, or test files; empty = none named",
                            MAX_ACCEPTANCE_TESTS
                        )
                    },
                    "required": ["title", "description", "type", "priority", "allowed_files"],
                    "additionalProperties": false
                }
            },
            "notes": {
                "type": "string",
                "maxLength": MAX_NOTES_CHARS,
                "description": "anything a human should know about this plan"
            }
        },
        "required": ["tasks", "notes"],
        "additionalProperties": false
    })
}

/// Asks `model` for a plan and validates it. An answer that is not valid
/// JSON or not a valid plan is sent back once with the error; a second
/// failure is [`PlanError::Malformed`]. Usage is summed over the calls.
pub async fn plan(
    provider: &dyn Provider,
    model: &str,
    input: &PlanInput<'_>,
) -> Result<(Plan, Usage), PlanError> {
    let mut request = ChatRequest::new(model, build_messages(input));
    request.response_format = Some(ResponseFormat {
        name: "task_plan".to_string(),
        schema: task_plan_schema(input.want),
    });
    // The shared structured-output layer: native schema where the API has
    // it, else the schema in the prompt; validation; one repair round.
    let (value, usage) = match structured(provider, request).await {
        Ok((value, _, usage)) => (value, usage),
        Err(StructuredError::Invalid { problems, raw, .. }) => {
            return Err(PlanError::Malformed {
                error: problems.join("; "),
                raw: cap(&raw, RAW_ANSWER_CAP),
            })
        }
        Err(StructuredError::Provider { source, .. }) => return Err(PlanError::Provider(source)),
        Err(e @ StructuredError::MissingFormat) => return Err(PlanError::Invalid(e.to_string())),
    };
    let plan = validate(&value, input)?;
    Ok((plan, usage))
}

/// The first `max` bytes of `s` (at a char boundary), marked when cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}[… {} more bytes]", &s[..end], s.len() - end)
}

/// Wraps text in a code fence longer than any backtick run inside it.
pub(crate) fn fenced(info: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{info}\n{}\n{fence}", text.trim_end_matches('\n'))
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use orch_providers::Role;
    use orch_testkit::scripted::{answer, ScriptedProvider};

    fn good_plan() -> serde_json::Value {
        json!({
            "tasks": [
                {"title": "Add tests for the parser", "description": "Cover empty input.", "type": "test", "priority": 2, "allowed_files": ["tests/test_parser.py"]},
                {"title": "Fix crash on empty input", "description": "parse('') raises.", "type": "fix", "priority": 9, "allowed_files": ["src/parser.py", "tests/**"]}
            ],
            "notes": "parser first"
        })
    }

    #[test]
    fn schema_is_strict_and_complete() {
        let s = task_plan_schema(3);
        assert_eq!(s["required"], json!(["tasks", "notes"]));
        assert_eq!(s["additionalProperties"], false);
        let item = &s["properties"]["tasks"]["items"];
        assert_eq!(item["additionalProperties"], false);
        assert_eq!(
            item["required"],
            json!(["title", "description", "type", "priority", "allowed_files"])
        );
        assert_eq!(
            item["properties"]["type"]["enum"],
            json!(["code", "test", "fix", "review"])
        );
        assert_eq!(item["properties"]["priority"]["type"], "integer");
        assert_eq!(
            item["properties"]["acceptance_tests"]["items"]["type"],
            "string"
        );
    }

    /// A grammar built from the schema must end: every array and string
    /// has a bound, and the tasks are bounded by the number wanted.
    #[test]
    fn schema_bounds_every_size() {
        fn unbounded(at: &str, s: &serde_json::Value, out: &mut Vec<String>) {
            match s["type"].as_str() {
                Some("string") if s.get("enum").is_none() && s.get("maxLength").is_none() => {
                    out.push(at.to_string())
                }
                Some("array") if s.get("maxItems").is_none() => out.push(at.to_string()),
                _ => {}
            }
            if let Some(items) = s.get("items") {
                unbounded(&format!("{at}[]"), items, out);
            }
            if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
                for (k, v) in props {
                    unbounded(&format!("{at}.{k}"), v, out);
                }
            }
        }
        let s = task_plan_schema(3);
        let mut out = Vec::new();
        unbounded("", &s, &mut out);
        assert_eq!(out, Vec::<String>::new(), "unbounded: {out:?}");
        assert_eq!(s["properties"]["tasks"]["maxItems"], 3);
        assert_eq!(task_plan_schema(0)["properties"]["tasks"]["maxItems"], 1);
        assert_eq!(
            task_plan_schema(1000)["properties"]["tasks"]["maxItems"],
            MAX_PLAN_TASKS
        );
        let item = &s["properties"]["tasks"]["items"]["properties"];
        assert_eq!(item["title"]["maxLength"], MAX_TITLE_CHARS);
        assert_eq!(item["description"]["maxLength"], MAX_DESCRIPTION_CHARS);
        assert_eq!(item["allowed_files"]["maxItems"], MAX_ALLOWED_FILES);
        assert_eq!(item["acceptance_tests"]["maxItems"], MAX_ACCEPTANCE_TESTS);
    }

    /// The structured-output layer checks the bounds: a plan over the
    /// number wanted gets the repair round, which names the limit.
    #[tokio::test]
    async fn a_plan_over_the_number_wanted_is_sent_back_once() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 1,
        };
        let provider = ScriptedProvider::new(vec![
            answer(&good_plan().to_string()),
            answer(&json!({"tasks": [good_plan()["tasks"][1]], "notes": ""}).to_string()),
        ]);
        let (plan, _) = plan(&provider, "m", &input).await.unwrap();
        assert_eq!(plan.tasks.len(), 1);
        let reqs = provider.requests();
        assert_eq!(reqs.len(), 2);
        let repair = &reqs[1].messages[3].content;
        assert!(
            repair.contains("`/tasks` has 2 items, more than 1"),
            "{repair}"
        );
    }

    #[tokio::test]
    async fn acceptance_tests_flow_from_the_plan_to_the_new_task() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let mut raw = good_plan();
        raw["tasks"][1]["acceptance_tests"] =
            json!(["tests/test_parser.py::test_empty", "tests/test_parser.py"]);
        let provider = ScriptedProvider::new(vec![answer(&raw.to_string())]);
        let (plan, _) = plan(&provider, "m", &input).await.unwrap();
        assert_eq!(plan.tasks[0].title, "Fix crash on empty input");
        let task = plan.tasks[0].to_new_task("demo");
        assert_eq!(
            task.acceptance_tests,
            vec!["tests/test_parser.py::test_empty", "tests/test_parser.py"]
        );
        assert!(plan.tasks[1].acceptance_tests.is_empty(), "optional");
    }

    #[tokio::test]
    async fn plan_sends_one_structured_request_and_validates() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let provider = ScriptedProvider::new(vec![answer(&good_plan().to_string())]);
        let (plan, usage) = plan(&provider, "planner-model", &input).await.unwrap();
        assert_eq!(plan.tasks.len(), 2);
        assert_eq!(
            plan.tasks[0].title, "Fix crash on empty input",
            "highest priority first"
        );
        assert_eq!(plan.tasks[0].task_type, TaskType::Fix);
        assert_eq!(plan.notes, "parser first");
        assert_eq!(plan.raw, good_plan());
        assert_eq!(usage.input_tokens, 100);

        let reqs = provider.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].model, "planner-model");
        let rf = reqs[0].response_format.as_ref().unwrap();
        assert_eq!(rf.name, "task_plan");
        assert_eq!(rf.schema, task_plan_schema(5));
        assert_eq!(reqs[0].messages.len(), 2);
        assert_eq!(reqs[0].messages[0].role, Role::System);
    }

    #[tokio::test]
    async fn malformed_answer_gets_one_repair_round() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let bad = json!({"tasks": [{"title": "X", "description": "d", "type": "feature", "priority": 1, "allowed_files": []}], "notes": ""});
        let provider = ScriptedProvider::new(vec![
            answer(&bad.to_string()),
            answer(&format!("```json\n{}\n```", good_plan())),
        ]);
        let (plan, usage) = plan(&provider, "m", &input).await.unwrap();
        assert_eq!(plan.tasks.len(), 2);
        assert_eq!(usage.input_tokens, 200);
        let reqs = provider.requests();
        assert_eq!(reqs.len(), 2);
        let msgs = &reqs[1].messages;
        assert_eq!(msgs[2].role, Role::Assistant);
        assert_eq!(msgs[2].content, bad.to_string());
        assert_eq!(msgs[3].role, Role::User);
        assert!(
            msgs[3].content.contains("/tasks/0/type"),
            "{}",
            msgs[3].content
        );
        assert!(msgs[3].content.contains("feature"), "{}", msgs[3].content);
        assert!(msgs[3]
            .content
            .contains("Answer again with only the corrected JSON"));
    }

    #[tokio::test]
    async fn second_malformed_answer_is_an_error_naming_the_problem() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let provider = ScriptedProvider::new(vec![
            answer("Sure! Here are some tasks: 1. fix it"),
            answer(r#"{"tasks": "none"}"#),
        ]);
        let err = plan(&provider, "m", &input).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PlanError::Malformed { .. }), "{msg}");
        assert!(
            msg.contains("`/tasks` must be array, not a string"),
            "{msg}"
        );
        assert!(msg.contains(r#"{"tasks": "none"}"#), "{msg}");
        assert_eq!(provider.requests().len(), 2);
    }

    #[tokio::test]
    async fn provider_failure_is_reported() {
        let ctx = context();
        let input = PlanInput {
            project: "demo",
            context: &ctx,
            open_tasks: &[],
            recent_failures: &[],
            want: 5,
        };
        let err = plan(&ScriptedProvider::new(vec![]), "m", &input)
            .await
            .unwrap_err();
        assert!(matches!(err, PlanError::Provider(_)), "{err}");
    }

    #[test]
    fn proposed_task_becomes_a_planner_task() {
        let p = ProposedTask {
            title: "t".into(),
            description: "d".into(),
            task_type: TaskType::Test,
            priority: 3,
            allowed_files: vec!["tests/**".into()],
            acceptance_tests: Vec::new(),
        };
        let n = p.to_new_task("demo");
        assert_eq!(
            (n.project.as_str(), n.source, n.priority),
            ("demo", TaskSource::Planner, 3)
        );
        assert_eq!(n.allowed_files, vec!["tests/**"]);
    }
}
