//! The `simulated` provider: plausible answers made up locally, for dry
//! runs (`--dry-run`, `ORCH_DRY_RUN=true`). A new config can be tried end to
//! end — planner, worker, judge — without spending anything: structured
//! requests get a minimal instance of their schema, tool-using requests get
//! a `finish` call, everything else a short note. Usage is estimated and
//! costs nothing.

use crate::{ChatRequest, ChatResponse, Message, Provider, ProviderError, Role, ToolCall};
use async_trait::async_trait;
use orch_core::Usage;
use serde_json::{json, Value};

pub struct SimulatedProvider {
    name: String,
}

impl SimulatedProvider {
    pub fn new(name: &str) -> Self {
        SimulatedProvider {
            name: name.to_string(),
        }
    }
}

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
            (
                Message::assistant(example_of(&format.schema).to_string()),
                "stop",
            )
        } else if request.tools.iter().any(|t| t.name == "finish") {
            let call = ToolCall {
                id: "call_simulated".into(),
                name: "finish".into(),
                arguments: json!({"summary": "dry run: the simulated provider made no change"})
                    .to_string(),
            };
            (
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![call],
                    tool_call_id: None,
                },
                "tool_calls",
            )
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

    #[tokio::test]
    async fn workers_are_told_to_finish() {
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
}
