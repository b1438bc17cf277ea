//! The server side of Anthropic's Messages API (`POST /v1/messages`), as
//! Claude Code calls it: the request into a [`ChatRequest`], the answer
//! back as a message or as its server-sent events.
//!
//! Request: `system` (a string or text blocks) becomes one system message;
//! user text blocks become a user message, `tool_result` blocks tool
//! messages (before the user's text, as the API orders them); assistant
//! `text` and `tool_use` blocks an assistant message with tool calls;
//! `thinking` blocks, images and documents are dropped (the neutral model
//! has no place for them). Tools with an `input_schema` are offered; server
//! tools (web search, …) are not. `tool_choice` `auto`/`any`/`tool` map to
//! auto/required/the tool, `none` to no tools.
//!
//! Answer: `text` and `tool_use` blocks, `stop_reason` `tool_use`,
//! `end_turn` or `max_tokens`, usage in Anthropic's terms (cache reads
//! apart). Streamed: `message_start`, per block `content_block_start`, one
//! delta (`text_delta` or `input_json_delta`) and `content_block_stop`,
//! then `message_delta` with the stop reason and `message_stop`.
//! `count_tokens` answers an estimate (characters / 4).

use super::{arguments_object, json_body, sse, text_of, ProxyError, State};
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use orch_providers::{ChatRequest, ChatResponse, Message, ToolCall, ToolChoice, ToolSpec};
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) async fn handle(AxState(state): AxState<Arc<State>>, body: bytes::Bytes) -> Response {
    let result = async {
        let body = json_body(&body)?;
        let request = request_from_wire(&body).map_err(ProxyError::bad_request)?;
        let asked = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let response = state.complete(request).await?;
        let id = state.next_id("msg");
        Ok::<_, ProxyError>(if stream {
            sse(response_to_sse(&response, &id, asked))
        } else {
            axum::Json(response_to_wire(&response, &id, asked)).into_response()
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/messages/count_tokens`: a rough estimate, never a model call.
pub(crate) async fn count_tokens(body: bytes::Bytes) -> Response {
    let chars = match json_body(&body) {
        Ok(v) => v.to_string().len(),
        Err(e) => return e.into_response(),
    };
    axum::Json(json!({ "input_tokens": chars.div_ceil(4) })).into_response()
}

/// A Messages request body as a [`ChatRequest`]; the error names the field.
pub fn request_from_wire(body: &Value) -> Result<ChatRequest, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut messages = Vec::new();
    let system = text_of(body.get("system"));
    if !system.trim().is_empty() {
        messages.push(Message::system(system));
    }
    let wire = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing or not an array")?;
    for (i, m) in wire.iter().enumerate() {
        read_message(m, &mut messages).map_err(|e| format!("messages[{i}]: {e}"))?;
    }
    let mut request = ChatRequest::new(model, messages);
    request.tools = tools_from_wire(body.get("tools"));
    request.tool_choice = match body.pointer("/tool_choice/type").and_then(Value::as_str) {
        Some("any") => Some(ToolChoice::Required),
        Some("tool") => body
            .pointer("/tool_choice/name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_string())),
        Some("none") => {
            request.tools.clear();
            None
        }
        _ if request.tools.is_empty() => None,
        _ => Some(ToolChoice::Auto),
    };
    request.max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    request.temperature = body
        .get("temperature")
        .and_then(Value::as_f64)
        .map(|t| t as f32);
    Ok(request)
}

/// Appends the neutral messages of one wire message.
fn read_message(m: &Value, out: &mut Vec<Message>) -> Result<(), String> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or("`role` is missing")?;
    let blocks: Vec<Value> = match m.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => return Err("`content` is neither a string nor blocks".into()),
    };
    match role {
        "user" => {
            let mut texts = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_result") => out.push(tool_result(b)),
                    Some("text") => texts.push(text_of(b.get("text"))),
                    _ => {}
                }
            }
            if !texts.is_empty() {
                out.push(Message::user(texts.join("\n\n")));
            }
        }
        "assistant" => {
            let mut reply = Message::assistant("");
            let mut texts = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(text_of(b.get("text"))),
                    Some("tool_use") => reply.tool_calls.push(ToolCall {
                        id: str_field(b, "id"),
                        name: str_field(b, "name"),
                        arguments: b.get("input").map(Value::to_string).unwrap_or_default(),
                    }),
                    _ => {}
                }
            }
            reply.content = texts.join("\n\n");
            out.push(reply);
        }
        // Not in Anthropic's API, but some clients send it.
        "system" => {
            let texts: Vec<String> = blocks.iter().map(|b| text_of(b.get("text"))).collect();
            out.push(Message::system(texts.join("\n\n")));
        }
        other => return Err(format!("unknown role {other:?}")),
    }
    Ok(())
}

fn tool_result(b: &Value) -> Message {
    let mut text = text_of(b.get("content"));
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("error: {text}");
    }
    Message::tool_result(str_field(b, "tool_use_id"), text)
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn tools_from_wire(tools: Option<&Value>) -> Vec<ToolSpec> {
    tools
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter(|t| t.get("input_schema").is_some())
                .map(|t| ToolSpec {
                    name: str_field(t, "name"),
                    description: str_field(t, "description"),
                    parameters: t.get("input_schema").cloned().unwrap_or(json!({})),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn stop_reason(response: &ChatResponse) -> &'static str {
    if !response.message.tool_calls.is_empty() {
        "tool_use"
    } else if response.finish_reason == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn blocks(response: &ChatResponse) -> Vec<Value> {
    let m = &response.message;
    let mut blocks = Vec::new();
    if !m.content.is_empty() || m.tool_calls.is_empty() {
        blocks.push(json!({"type": "text", "text": m.content}));
    }
    for call in &m.tool_calls {
        blocks.push(json!({
            "type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments_object(&call.arguments),
        }));
    }
    blocks
}

fn usage(response: &ChatResponse) -> Value {
    let u = &response.usage;
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_tokens),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// The answer as a whole Messages response.
pub fn response_to_wire(response: &ChatResponse, id: &str, model: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks(response),
        "stop_reason": stop_reason(response),
        "stop_sequence": null,
        "usage": usage(response),
    })
}

/// The answer as the Messages stream's events.
pub fn response_to_sse(response: &ChatResponse, id: &str, model: &str) -> String {
    let mut out = String::new();
    let mut event = |name: &str, data: Value| {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    let mut start_usage = usage(response);
    start_usage["output_tokens"] = json!(1);
    event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage,
        }}),
    );
    for (index, block) in blocks(response).into_iter().enumerate() {
        let (start, delta) = if block["type"] == "tool_use" {
            let input = block["input"].to_string();
            let mut start = block.clone();
            start["input"] = json!({});
            (
                start,
                json!({"type": "input_json_delta", "partial_json": input}),
            )
        } else {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": block["text"]}),
            )
        };
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(response), "stop_sequence": null},
               "usage": usage(response)}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orch_core::Usage;
    use orch_providers::Role;

    #[test]
    fn a_claude_code_conversation_reads_into_neutral_messages() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 32000,
            "stream": true,
            "system": [{"type": "text", "text": "You are Claude."}, {"type": "text", "text": "Be brief."}],
            "tools": [
                {"name": "Bash", "description": "runs", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"}
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                             {"type": "text", "text": "fix calc"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Fixing."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "calc.py"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "go on"}]}
            ]
        });
        let r = request_from_wire(&body).unwrap();
        assert_eq!(r.max_tokens, Some(32000));
        assert_eq!(r.tools.len(), 1, "server tools are not offered");
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(r.messages[0].content, "You are Claude.\nBe brief.");
        assert!(r.messages[1].content.ends_with("fix calc"));
        assert_eq!(r.messages[2].content, "Fixing.");
        assert_eq!(r.messages[2].tool_calls[0].arguments, r#"{"command":"ls"}"#);
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(r.messages[3].content, "calc.py");
        assert_eq!(r.messages[4].content, "error: boom");
    }

    fn answer() -> ChatResponse {
        let mut message = Message::assistant("Running it.");
        message.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "Bash".into(),
            arguments: r#"{"command":"pytest"}"#.into(),
        });
        ChatResponse {
            message,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 7,
                cached_tokens: 40,
                cost_usd: 0.0,
            },
            finish_reason: "tool_calls".into(),
            model: "worker".into(),
        }
    }

    #[test]
    fn answers_are_written_as_messages_and_as_events() {
        let whole = response_to_wire(&answer(), "msg_1", "claude-sonnet-4-5");
        assert_eq!(whole["stop_reason"], "tool_use");
        assert_eq!(whole["model"], "claude-sonnet-4-5");
        assert_eq!(whole["content"][1]["input"]["command"], "pytest");
        assert_eq!(whole["usage"]["input_tokens"], 60);
        assert_eq!(whole["usage"]["cache_read_input_tokens"], 40);

        let events = response_to_sse(&answer(), "msg_1", "m");
        let names: Vec<&str> = events
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let deltas: Vec<Value> = events
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .filter(|v: &Value| v["type"] == "content_block_delta")
            .collect();
        assert_eq!(deltas[0]["delta"]["text"], "Running it.");
        let json: Value =
            serde_json::from_str(deltas[1]["delta"]["partial_json"].as_str().unwrap()).unwrap();
        assert_eq!(json["command"], "pytest");
    }
}
