//! The server side of OpenAI Chat Completions (`POST /v1/chat/completions`),
//! as aider and mini-swe-agent call it through litellm: the request into a
//! [`ChatRequest`], the answer back as a `chat.completion` or as its
//! `chat.completion.chunk` events ending in `data: [DONE]`.
//!
//! Request: `system`/`developer` messages become system messages, content
//! given as parts is joined, assistant `tool_calls` and `tool` messages
//! keep their ids, legacy `function` messages are read as tool results.
//! `tools` (type `function`), `tool_choice`, `max_tokens` /
//! `max_completion_tokens` and `temperature` are kept; `response_format`
//! is not (agents do not use it).
//!
//! Streamed answer: a role chunk, the text, one chunk per tool call (id,
//! name and its whole arguments), the finish chunk, and a usage chunk when
//! `stream_options.include_usage` asks for it.

use super::{json_body, now_secs, sse, text_of, ProxyError, State};
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use orch_providers::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolSpec};
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
        let usage_chunk = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        let response = state.complete(request).await?;
        let id = state.next_id("chatcmpl");
        Ok::<_, ProxyError>(if stream {
            sse(response_to_sse(&response, &id, asked, usage_chunk))
        } else {
            axum::Json(response_to_wire(&response, &id, asked)).into_response()
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A Chat Completions body as a [`ChatRequest`]; the error names the field.
pub fn request_from_wire(body: &Value) -> Result<ChatRequest, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing or not an array")?
        .iter()
        .enumerate()
        .map(|(i, m)| message_from_wire(m).map_err(|e| format!("messages[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut request = ChatRequest::new(model, messages);
    request.tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(tool_from_wire).collect())
        .unwrap_or_default();
    request.tool_choice = super::tool_choice(
        body.get("tool_choice"),
        "/function/name",
        &mut request.tools,
    );
    request.max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    request.temperature = body
        .get("temperature")
        .and_then(Value::as_f64)
        .map(|t| t as f32);
    Ok(request)
}

fn tool_from_wire(t: &Value) -> Option<ToolSpec> {
    let f = t.get("function")?;
    Some(ToolSpec {
        name: f.get("name")?.as_str()?.to_string(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        parameters: f.get("parameters").cloned().unwrap_or(json!({})),
    })
}

fn message_from_wire(m: &Value) -> Result<Message, String> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") | Some("function") => Role::Tool,
        Some(other) => return Err(format!("unknown role {other:?}")),
        None => return Err("`role` is missing".into()),
    };
    let mut message = Message::user(text_of(m.get("content")));
    message.role = role;
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function").ok_or("a tool call has no `function`")?;
            message.tool_calls.push(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => String::new(),
                    Some(other) => other.to_string(),
                },
            });
        }
    }
    if role == Role::Tool {
        let id = m
            .get("tool_call_id")
            .or_else(|| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        message.tool_call_id = Some(id.to_string());
    }
    Ok(message)
}

fn finish_reason(response: &ChatResponse) -> &str {
    if !response.message.tool_calls.is_empty() {
        "tool_calls"
    } else if response.finish_reason == "length" {
        "length"
    } else {
        "stop"
    }
}

fn wire_calls(response: &ChatResponse) -> Vec<Value> {
    response
        .message
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": i, "id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments}})
        })
        .collect()
}

fn usage(response: &ChatResponse) -> Value {
    let u = &response.usage;
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// The answer as a whole `chat.completion`.
pub fn response_to_wire(response: &ChatResponse, id: &str, model: &str) -> Value {
    let mut message = json!({"role": "assistant", "content": response.message.content});
    if !response.message.tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(wire_calls(response));
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(response)}],
        "usage": usage(response),
    })
}

/// The answer as `chat.completion.chunk` events, `[DONE]` last.
pub fn response_to_sse(
    response: &ChatResponse,
    id: &str,
    model: &str,
    usage_chunk: bool,
) -> String {
    let created = now_secs();
    let chunk = |choices: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created,
               "model": model, "choices": choices})
    };
    let mut events = vec![chunk(json!([{"index": 0,
        "delta": {"role": "assistant", "content": response.message.content},
        "finish_reason": null}]))];
    for call in wire_calls(response) {
        events.push(chunk(
            json!([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]),
        ));
    }
    events.push(chunk(json!([{"index": 0, "delta": {},
        "finish_reason": finish_reason(response)}])));
    if usage_chunk {
        let mut last = chunk(json!([]));
        last["usage"] = usage(response);
        events.push(last);
    }
    let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orch_core::Usage;

    #[test]
    fn requests_read_with_tools_calls_and_results() {
        let body = json!({
            "model": "openai/gpt-4o",
            "max_tokens": 9000,
            "tools": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "fix it"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "calc.py"}
            ]
        });
        let r = request_from_wire(&body).unwrap();
        assert_eq!(r.max_tokens, Some(9000));
        assert_eq!(r.tool_choice, Some(orch_providers::ToolChoice::Auto));
        assert_eq!(r.messages[1].content, "fix it");
        assert_eq!(r.messages[2].content, "");
        assert_eq!(r.messages[2].tool_calls[0].name, "bash");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert!(request_from_wire(&json!({"model": "m"}))
            .unwrap_err()
            .contains("messages"));
    }

    #[test]
    fn answers_are_written_whole_and_streamed() {
        let mut message = Message::assistant("THOUGHT: run it");
        message.tool_calls.push(ToolCall {
            id: "c9".into(),
            name: "bash".into(),
            arguments: "{\"command\":\"pytest\"}".into(),
        });
        let response = ChatResponse {
            message,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
                cached_tokens: 0,
                cost_usd: 0.0,
            },
            finish_reason: "tool_calls".into(),
            model: "worker".into(),
        };
        let whole = response_to_wire(&response, "x", "gpt-4o");
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(whole["choices"][0]["message"]["tool_calls"][0]["id"], "c9");
        assert_eq!(whole["usage"]["total_tokens"], 13);
        let stream = response_to_sse(&response, "x", "gpt-4o", true);
        assert!(stream.ends_with("data: [DONE]\n\n"));
        let chunks: Vec<Value> = stream
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks[0]["choices"][0]["delta"]["content"],
            "THOUGHT: run it"
        );
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"pytest\"}"
        );
        assert_eq!(chunks[3]["usage"]["prompt_tokens"], 10);
    }
}
