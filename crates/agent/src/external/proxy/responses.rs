//! The server side of OpenAI's Responses API (`POST /v1/responses`), as
//! Codex calls it: the request into a [`ChatRequest`], the answer back as a
//! `response` object or as its server-sent events.
//!
//! Request: `instructions` and `developer`/`system` messages become system
//! messages; `input` (a string, or items) is read in order: `message` items
//! (text parts joined), `function_call` items (consecutive ones, and the
//! assistant text before them, form one assistant message with tool calls;
//! keyed by `call_id`), `function_call_output` items (tool results);
//! `reasoning` and other items are dropped. Tools of type `function` are
//! offered (namespaced, custom and hosted tools are not).
//!
//! Streamed answer, in the order Codex's item state machine requires (an
//! item is announced before its deltas): `response.created`,
//! `response.in_progress`; for the text a `message` item
//! (`output_item.added`, `content_part.added`, `output_text.delta`,
//! `output_text.done`, `content_part.done`, `output_item.done`); for each
//! tool call a `function_call` item (`output_item.added`,
//! `function_call_arguments.delta`, `…done`, `output_item.done`); then
//! `response.completed` with the whole response and its usage.

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
        let response = state.complete(request).await?;
        let id = state.next_id("resp");
        Ok::<_, ProxyError>(if stream {
            sse(response_to_sse(&response, &id, asked))
        } else {
            axum::Json(response_object(&response, &id, asked)).into_response()
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A Responses body as a [`ChatRequest`]; the error names the item.
pub fn request_from_wire(body: &Value) -> Result<ChatRequest, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut messages = Vec::new();
    let instructions = text_of(body.get("instructions"));
    if !instructions.trim().is_empty() {
        messages.push(Message::system(instructions));
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(Message::user(s.clone())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                read_item(item, &mut messages).map_err(|e| format!("input[{i}]: {e}"))?;
            }
        }
        _ => return Err("`input` is missing or neither a string nor items".into()),
    }
    let mut request = ChatRequest::new(model, messages);
    request.tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(tool_from_wire).collect())
        .unwrap_or_default();
    request.tool_choice = super::tool_choice(body.get("tool_choice"), "/name", &mut request.tools);
    request.max_tokens = body
        .get("max_output_tokens")
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    request.temperature = body
        .get("temperature")
        .and_then(Value::as_f64)
        .map(|t| t as f32);
    Ok(request)
}

fn tool_from_wire(t: &Value) -> Option<ToolSpec> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return None;
    }
    Some(ToolSpec {
        name: t.get("name")?.as_str()?.to_string(),
        description: t
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        parameters: t.get("parameters").cloned().unwrap_or(json!({})),
    })
}

fn read_item(item: &Value, out: &mut Vec<Message>) -> Result<(), String> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => return Err(format!("unknown message role {other:?}")),
            };
            let mut m = Message::user(text_of(item.get("content")));
            m.role = role;
            out.push(m);
        }
        "function_call" => {
            let call = ToolCall {
                id: str_field(item, "call_id"),
                name: str_field(item, "name"),
                arguments: str_field(item, "arguments"),
            };
            match out.last_mut() {
                Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                _ => {
                    let mut m = Message::assistant("");
                    m.tool_calls.push(call);
                    out.push(m);
                }
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                other => text_of(other),
            };
            out.push(Message::tool_result(str_field(item, "call_id"), output));
        }
        _ => {}
    }
    Ok(())
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The output items of the answer: the text as a message, then the calls.
fn output_items(response: &ChatResponse, id: &str) -> Vec<Value> {
    let m = &response.message;
    let mut items = Vec::new();
    if !m.content.is_empty() || m.tool_calls.is_empty() {
        items.push(json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": m.content, "annotations": []}],
        }));
    }
    for (i, call) in m.tool_calls.iter().enumerate() {
        items.push(json!({
            "type": "function_call", "id": format!("fc_{id}_{i}"), "status": "completed",
            "call_id": call.id, "name": call.name, "arguments": call.arguments,
        }));
    }
    items
}

fn usage(response: &ChatResponse) -> Value {
    let u = &response.usage;
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// The whole `response` object.
pub fn response_object(response: &ChatResponse, id: &str, model: &str) -> Value {
    json!({
        "id": id, "object": "response", "created_at": now_secs(), "status": "completed",
        "model": model, "output": output_items(response, id), "usage": usage(response),
        "error": null, "incomplete_details": null,
    })
}

/// The answer as the Responses stream's events.
pub fn response_to_sse(response: &ChatResponse, id: &str, model: &str) -> String {
    let mut out = String::new();
    let mut seq = 0u64;
    let mut event = |mut data: Value| {
        data["sequence_number"] = json!(seq);
        seq += 1;
        let name = data["type"].as_str().unwrap_or_default().to_string();
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    let whole = response_object(response, id, model);
    let mut started = whole.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    event(json!({"type": "response.created", "response": started}));
    event(json!({"type": "response.in_progress", "response": started}));
    for (index, item) in output_items(response, id).into_iter().enumerate() {
        item_events(&item, index, &mut event);
    }
    event(json!({"type": "response.completed", "response": whole}));
    out
}

/// One output item: announced, its deltas, done.
fn item_events(item: &Value, index: usize, event: &mut impl FnMut(Value)) {
    let item_id = item["id"].clone();
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    if item["type"] == "message" {
        added["content"] = json!([]);
        event(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
        let text = item["content"][0]["text"].clone();
        let part = |t: Value| json!({"type": "output_text", "text": t, "annotations": []});
        let at = |kind: &str| json!({"type": kind, "item_id": item_id, "output_index": index, "content_index": 0});
        let mut e = at("response.content_part.added");
        e["part"] = part(json!(""));
        event(e);
        let mut e = at("response.output_text.delta");
        e["delta"] = text.clone();
        event(e);
        let mut e = at("response.output_text.done");
        e["text"] = text.clone();
        event(e);
        let mut e = at("response.content_part.done");
        e["part"] = part(text);
        event(e);
    } else {
        added["arguments"] = json!("");
        event(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
        let arguments = item["arguments"].clone();
        event(
            json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                     "output_index": index, "delta": arguments}),
        );
        event(
            json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                     "output_index": index, "arguments": arguments}),
        );
    }
    event(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orch_core::Usage;

    #[test]
    fn codex_items_read_into_neutral_messages() {
        let body = json!({
            "model": "gpt-5-codex", "stream": true, "instructions": "Be Codex.",
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "namespace", "name": "multi_agent_v1", "tools": []},
                {"type": "web_search"}
            ],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix calc"}]},
                {"type": "reasoning", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
                {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call", "call_id": "c2", "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "calc.py"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "/w"}]}
            ]
        });
        let r = request_from_wire(&body).unwrap();
        assert_eq!(r.tools.len(), 1);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool
            ]
        );
        assert_eq!(r.messages[3].content, "On it.");
        assert_eq!(r.messages[3].tool_calls.len(), 2);
        assert_eq!(r.messages[5].content, "/w");
    }

    #[test]
    fn items_are_announced_before_their_deltas() {
        let mut message = Message::assistant("Done.");
        message.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "exec_command".into(),
            arguments: "{\"cmd\":\"pytest\"}".into(),
        });
        let response = ChatResponse {
            message,
            usage: Usage {
                input_tokens: 50,
                output_tokens: 5,
                cached_tokens: 0,
                cost_usd: 0.0,
            },
            finish_reason: "tool_calls".into(),
            model: "worker".into(),
        };
        let events: Vec<Value> = response_to_sse(&response, "resp_1", "gpt-5")
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(kinds.last(), Some(&"response.completed"));
        let added = kinds
            .iter()
            .position(|k| *k == "response.output_item.added")
            .unwrap();
        let delta = kinds
            .iter()
            .position(|k| *k == "response.output_text.delta")
            .unwrap();
        assert!(added < delta);
        let done: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .collect();
        assert_eq!(done[1]["item"]["call_id"], "call_1");
        assert_eq!(done[1]["item"]["arguments"], "{\"cmd\":\"pytest\"}");
        let completed = events.last().unwrap();
        assert_eq!(completed["response"]["usage"]["input_tokens"], 50);
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
