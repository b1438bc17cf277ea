//! The `simulated` provider: plausible answers made up locally, for dry
//! runs (`--dry-run`, `ORCH_DRY_RUN=true`). A new config can be tried end to
//! end — planner, worker, judge — without spending anything. Roles are told
//! apart by what the request asks for:
//!
//! - a structured request (planner, judge) gets a minimal instance of its
//!   schema; a judge's verdict passes with the top score, so what decides
//!   is orch's own deterministic gates. The first `task_plan` a provider
//!   is asked for proposes one sample task, so a dry run of a config with a
//!   planner and an empty queue still shows the whole cycle; later plans
//!   are empty, so `--until-idle` ends;
//! - a tool-using request (the worker) makes a small visible change through
//!   the ordinary tools: `write_file` of `ORCH_DRY_RUN/<task>.md`, a note
//!   describing the task, then `finish`. The real tool loop, commit,
//!   verification, judge and merge queue then run on it, so a dry run walks
//!   the path a real run takes (in a scratch clone: the CLI never lets a
//!   dry run touch the real repository);
//! - anything else gets a short note.
//!
//! Usage is estimated and costs nothing.

use crate::{ChatRequest, ChatResponse, Message, Provider, ProviderError, Role, ToolCall};
use async_trait::async_trait;
use orch_core::Usage;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct SimulatedProvider {
    name: String,
    /// Set once this provider proposed its one sample task.
    planned: AtomicBool,
}

impl SimulatedProvider {
    pub fn new(name: &str) -> Self {
        SimulatedProvider {
            name: name.to_string(),
            planned: AtomicBool::new(false),
        }
    }

    /// A `task_plan` answer: one sample task the first time, none after.
    fn plan(&self, schema: &Value) -> Value {
        let mut plan = example_of(schema);
        let Some(item_schema) = schema.pointer("/properties/tasks/items") else {
            return plan;
        };
        if self.planned.swap(true, Ordering::SeqCst) {
            plan["notes"] =
                json!("dry run: the simulated planner proposes one sample task per run");
            return plan;
        }
        let mut task = example_of(item_schema);
        if let Some(obj) = task.as_object_mut() {
            obj.insert("title".into(), json!(SAMPLE_TASK_TITLE));
            obj.insert(
                "description".into(),
                json!(
                    "A task the simulated planner proposes in a dry run, so the run shows \
                       the whole cycle. The simulated worker writes a note describing it."
                ),
            );
            obj.insert("type".into(), json!("code"));
        }
        plan["tasks"] = json!([task]);
        plan["notes"] = json!("dry run: the simulated planner proposes one sample task per run");
        plan
    }
}

/// The title of the task the simulated planner proposes.
pub const SAMPLE_TASK_TITLE: &str = "Dry run: a sample task from the simulated planner";

/// A small value that satisfies `schema` (the subset orch's schemas use).
pub fn example_of(schema: &Value) -> Value {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.first().cloned().unwrap_or(Value::Null);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), example_of(v));
                }
            }
            Value::Object(out)
        }
        Some("array") => json!([]),
        Some("string") => json!("simulated"),
        Some("integer") => json!(schema
            .get("minimum")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0)),
        Some("number") => {
            // A simulated judge passes with a high score within the range.
            let max = schema.get("maximum").and_then(Value::as_f64).unwrap_or(1.0);
            json!(max)
        }
        Some("boolean") => json!(true),
        _ => Value::Null,
    }
}

/// Where the simulated worker writes its note: one file per task, so
/// parallel tasks of one dry run do not conflict when they merge.
pub fn dry_run_note_path(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    format!(
        "ORCH_DRY_RUN/{}.md",
        if slug.is_empty() { "task" } else { slug }
    )
}

/// The task prompt (the first user message) and the title in its
/// `# Task: …` line, when there is one.
fn task_of(request: &ChatRequest) -> (String, String) {
    let prompt = request
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default();
    let title = prompt
        .lines()
        .find_map(|l| l.strip_prefix("# Task:"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| "task".to_string());
    (title, prompt)
}

/// One turn of the simulated worker: write the note (once per attempt, as
/// a real worker would use the tool), then finish.
fn simulated_worker_turn(request: &ChatRequest) -> Message {
    let (title, prompt) = task_of(request);
    let path = dry_run_note_path(&title);
    let wrote = request
        .messages
        .iter()
        .any(|m| m.tool_calls.iter().any(|c| c.name == "write_file"));
    let can_write = request.tools.iter().any(|t| t.name == "write_file");
    let call = if can_write && !wrote {
        let quoted: String = prompt
            .chars()
            .take(4000)
            .collect::<String>()
            .lines()
            .map(|l| format!("> {l}\n"))
            .collect();
        let content = format!(
            "# Dry run: {title}\n\n\
             orch's simulated worker wrote this file during a dry run (`orch --dry-run run`), \
             in a scratch clone of the repository, so that the run could walk the path a real \
             run takes: commit, verification, judge and merge queue. A real worker would have \
             done the task instead. It was asked:\n\n{quoted}"
        );
        ToolCall {
            id: "call_simulated_write".into(),
            name: "write_file".into(),
            arguments: json!({"path": path, "content": content}).to_string(),
        }
    } else {
        ToolCall {
            id: "call_simulated_finish".into(),
            name: "finish".into(),
            arguments: json!({"summary": format!(
                "dry run: the simulated worker wrote {path} describing the task; a real worker would have done the task"
            )})
            .to_string(),
        }
    };
    Message {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![call],
        tool_call_id: None,
    }
}

fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[async_trait]
impl Provider for SimulatedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let prompt: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let (message, finish) = if let Some(format) = &request.response_format {
            let answer = if format.name == "task_plan" {
                self.plan(&format.schema)
            } else {
                example_of(&format.schema)
            };
            (Message::assistant(answer.to_string()), "stop")
        } else if request.tools.iter().any(|t| t.name == "finish") {
            (simulated_worker_turn(request), "tool_calls")
        } else {
            (Message::assistant("dry run: simulated answer"), "stop")
        };
        let usage = Usage {
            input_tokens: estimate_tokens(&" ".repeat(prompt)),
            output_tokens: estimate_tokens(&message.content).max(1),
            cached_tokens: 0,
            cost_usd: 0.0,
        };
        Ok(ChatResponse {
            message,
            usage,
            finish_reason: finish.into(),
            model: format!("simulated:{}", request.model),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ResponseFormat, ToolSpec};

    #[tokio::test]
    async fn structured_requests_get_a_schema_instance() {
        let p = SimulatedProvider::new("sim");
        let mut req = ChatRequest::new("judge", vec![Message::user("judge this")]);
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "object", "properties": {
                "passed": {"type": "boolean"}, "score": {"type": "number", "minimum": 0, "maximum": 10},
                "reasoning": {"type": "string"}, "issues": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["code", "test"]}
            }}),
        });
        let r = p.chat(&req).await.unwrap();
        let v: Value = serde_json::from_str(&r.message.content).unwrap();
        assert_eq!(v["passed"], true);
        assert_eq!(v["score"], 10.0);
        assert_eq!(v["kind"], "code");
        assert_eq!(r.usage.cost_usd, 0.0);
        assert!(r.usage.input_tokens > 0);
    }

    fn worker_request(messages: Vec<Message>) -> ChatRequest {
        let mut req = ChatRequest::new("worker", messages);
        req.tools = ["read_file", "write_file", "finish"]
            .iter()
            .map(|n| ToolSpec {
                name: (*n).into(),
                description: String::new(),
                parameters: json!({}),
            })
            .collect();
        req
    }

    #[tokio::test]
    async fn workers_write_a_note_about_the_task_then_finish() {
        let p = SimulatedProvider::new("sim");
        let prompt = "# Task: Fix add() so test_add passes!\n\nType: fix\n\nadd subtracts";
        let first = p
            .chat(&worker_request(vec![
                Message::system("tools"),
                Message::user(prompt),
            ]))
            .await
            .unwrap();
        assert_eq!(first.finish_reason, "tool_calls");
        let call = &first.message.tool_calls[0];
        assert_eq!(call.name, "write_file");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["path"], "ORCH_DRY_RUN/fix-add-so-test-add-passes.md");
        let content = args["content"].as_str().unwrap();
        assert!(
            content.starts_with("# Dry run: Fix add() so test_add passes!\n"),
            "{content}"
        );
        assert!(content.contains("> add subtracts"), "{content}");

        // The tool result comes back: the worker finishes.
        let mut result = Message::user("wrote it");
        result.role = Role::Tool;
        result.tool_call_id = Some(call.id.clone());
        let second = p
            .chat(&worker_request(vec![
                Message::user(prompt),
                first.message.clone(),
                result,
            ]))
            .await
            .unwrap();
        assert_eq!(second.message.tool_calls[0].name, "finish");
        assert!(second.message.tool_calls[0]
            .arguments
            .contains("ORCH_DRY_RUN/fix-add-so-test-add-passes.md"));
    }

    #[tokio::test]
    async fn workers_without_a_write_tool_just_finish() {
        let p = SimulatedProvider::new("sim");
        let mut req = ChatRequest::new("worker", vec![Message::user("do it")]);
        req.tools = vec![ToolSpec {
            name: "finish".into(),
            description: String::new(),
            parameters: json!({}),
        }];
        let r = p.chat(&req).await.unwrap();
        assert_eq!(r.message.tool_calls[0].name, "finish");
        assert_eq!(r.finish_reason, "tool_calls");
    }

    #[tokio::test]
    async fn the_first_plan_proposes_one_sample_task_and_later_ones_none() {
        let p = SimulatedProvider::new("sim");
        let mut req = ChatRequest::new("planner", vec![Message::user("plan")]);
        req.response_format = Some(ResponseFormat {
            name: "task_plan".into(),
            schema: json!({"type": "object", "properties": {
                "tasks": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
                    "title": {"type": "string"}, "description": {"type": "string"},
                    "type": {"type": "string", "enum": ["code", "test", "fix", "review"]},
                    "priority": {"type": "integer"},
                    "allowed_files": {"type": "array", "items": {"type": "string"}}
                }}},
                "notes": {"type": "string"}
            }}),
        });
        let first: Value =
            serde_json::from_str(&p.chat(&req).await.unwrap().message.content).unwrap();
        assert_eq!(first["tasks"].as_array().unwrap().len(), 1);
        assert_eq!(first["tasks"][0]["title"], SAMPLE_TASK_TITLE);
        assert_eq!(first["tasks"][0]["type"], "code");
        assert_eq!(first["tasks"][0]["allowed_files"], json!([]));
        let second: Value =
            serde_json::from_str(&p.chat(&req).await.unwrap().message.content).unwrap();
        assert_eq!(second["tasks"], json!([]));
    }

    #[test]
    fn note_paths_are_safe_slugs() {
        assert_eq!(
            dry_run_note_path("../../etc/passwd"),
            "ORCH_DRY_RUN/etc-passwd.md"
        );
        assert_eq!(dry_run_note_path("修正"), "ORCH_DRY_RUN/task.md");
        assert!(dry_run_note_path(&"a".repeat(200)).len() < 70);
    }
}
