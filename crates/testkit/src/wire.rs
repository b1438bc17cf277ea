//! The server side of the OpenAI chat-completions wire format: request JSON
//! into a [`ChatRequest`] (the inverse of what the `openai` provider sends)
//! and a [`ChatResponse`] into reply JSON, as a real server would write it.

use orch_providers::chat::{
    ChatRequest, ChatResponse, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};

/// Read an OpenAI chat-completions request body. The error says which
/// field is wrong, as a server's 400 would.
pub fn chat_request_from_wire(body: &Value) -> Result<ChatRequest, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("`model` is missing or not a string")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing or not an array")?
        .iter()
        .enumerate()
        .map(|(i, m)| message_from_wire(m).map_err(|e| format!("messages[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut request = ChatRequest::new(model, messages);

    if let Some(tools) = non_null(body, "tools") {
        let tools = tools.as_array().ok_or("`tools` is not an array")?;
        for (i, t) in tools.iter().enumerate() {
            let f = t
                .get("function")
                .ok_or(format!("tools[{i}] has no `function`"))?;
            request.tools.push(ToolSpec {
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("tools[{i}].function.name is missing"))?
                    .to_string(),
                description: f
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                parameters: f.get("parameters").cloned().unwrap_or(json!({})),
            });
        }
    }

    request.tool_choice = match non_null(body, "tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            // ChatRequest has no "none"; not offering tools is the same.
            "none" => None,
            other => return Err(format!("unknown tool_choice {other:?}")),
        },
        Some(obj) => {
            let name = obj
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or("tool_choice object has no function.name")?;
            Some(ToolChoice::Tool(name.to_string()))
        }
    };

    request.response_format = match non_null(body, "response_format") {
        None => None,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let js = rf
                    .get("json_schema")
                    .ok_or("response_format has no json_schema")?;
                Some(ResponseFormat {
                    name: js
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("response_format.json_schema.name is missing")?
                        .to_string(),
                    schema: js.get("schema").cloned().unwrap_or(json!({})),
                })
            }
            Some("text") | Some("json_object") => None,
            _ => return Err(format!("unsupported response_format {rf}")),
        },
    };

    let max_tokens =
        non_null(body, "max_tokens").or_else(|| non_null(body, "max_completion_tokens"));
    if let Some(v) = max_tokens {
        let n = v
            .as_u64()
            .ok_or("max_tokens is not a non-negative integer")?;
        request.max_tokens = Some(u32::try_from(n).map_err(|_| "max_tokens is too large")?);
    }
    if let Some(v) = non_null(body, "temperature") {
        request.temperature = Some(v.as_f64().ok_or("temperature is not a number")? as f32);
    }
    Ok(request)
}

fn non_null<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn message_from_wire(m: &Value) -> Result<Message, String> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => return Err(format!("unknown role {other:?}")),
        None => return Err("`role` is missing".to_string()),
    };
    let content = match non_null(m, "content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => return Err(format!("content is neither a string nor parts: {other}")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = non_null(m, "tool_calls") {
        let calls = calls.as_array().ok_or("tool_calls is not an array")?;
        for (i, c) in calls.iter().enumerate() {
            let f = c
                .get("function")
                .ok_or(format!("tool_calls[{i}] has no function"))?;
            tool_calls.push(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("tool_calls[{i}].function.name is missing"))?
                    .to_string(),
                arguments: match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => String::new(),
                    Some(other) => other.to_string(),
                },
            });
        }
    }
    let tool_call_id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if role == Role::Tool && tool_call_id.is_none() {
        return Err("a tool message needs `tool_call_id`".to_string());
    }
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id,
    })
}

/// A reply as OpenAI writes it. `id` becomes the completion id.
pub fn chat_response_to_wire(response: &ChatResponse, id: &str, created: u64) -> Value {
    let m = &response.message;
    let mut message = json!({ "role": "assistant" });
    if m.tool_calls.is_empty() {
        message["content"] = json!(m.content);
    } else {
        message["content"] = if m.content.is_empty() {
            Value::Null
        } else {
            json!(m.content)
        };
        message["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|tc| {
                json!({
                    "id": tc.id,
                    "type": "function",
                    "function": { "name": tc.name, "arguments": tc.arguments },
                })
            })
            .collect();
    }
    let u = &response.usage;
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": response.finish_reason,
        }],
        "usage": {
            "prompt_tokens": u.input_tokens,
            "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
        },
    })
}

/// A reply as an OpenAI stream: the `data: ...` events (each ending in a
/// blank line) in order, `[DONE]` last. The content and each tool call's
/// arguments are split into pieces of `chunk_chars` characters, one event
/// per piece, the way a model emits tokens; a tool call's first event
/// carries its id and name. With `include_usage` (the client's
/// `stream_options.include_usage`) a usage event with no choices precedes
/// `[DONE]`, as OpenAI sends it.
pub fn chat_response_to_sse(
    response: &ChatResponse,
    id: &str,
    created: u64,
    chunk_chars: usize,
    include_usage: bool,
) -> Vec<String> {
    let chunk = |choices: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": response.model,
            "choices": choices,
        })
    };
    let mut events = vec![chunk(json!([{
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": null,
        "finish_reason": null,
    }]))];
    for piece in split_chars(&response.message.content, chunk_chars) {
        events.push(chunk(json!([{
            "index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null,
        }])));
    }
    for (i, call) in response.message.tool_calls.iter().enumerate() {
        events.push(chunk(json!([{
            "index": 0,
            "delta": {"tool_calls": [{
                "index": i, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]},
            "logprobs": null,
            "finish_reason": null,
        }])));
        for piece in split_chars(&call.arguments, chunk_chars) {
            events.push(chunk(json!([{
                "index": 0,
                "delta": {"tool_calls": [{"index": i, "function": {"arguments": piece}}]},
                "logprobs": null,
                "finish_reason": null,
            }])));
        }
    }
    events.push(chunk(json!([{
        "index": 0, "delta": {}, "logprobs": null, "finish_reason": response.finish_reason,
    }])));
    if include_usage {
        let mut usage = chunk(json!([]));
        let u = &response.usage;
        usage["usage"] = json!({
            "prompt_tokens": u.input_tokens,
            "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
        });
        events.push(usage);
    }
    let mut out: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push("data: [DONE]\n\n".to_string());
    out
}

/// `text` in pieces of at most `n` characters (at least 1).
fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// An error body as OpenAI writes it.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::Usage;

    #[test]
    fn request_round_trips_through_the_provider_wire_format() {
        let mut req = ChatRequest::new(
            "worker",
            vec![
                Message::system("sys"),
                Message::user("hi"),
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "read_file".into(),
                        arguments: "{\"path\":\"a\"}".into(),
                    }],
                    tool_call_id: None,
                },
                Message::tool_result("call_1", "contents"),
            ],
        );
        req.tools.push(ToolSpec {
            name: "read_file".into(),
            description: "Read".into(),
            parameters: json!({"type": "object", "properties": {}}),
        });
        req.tool_choice = Some(ToolChoice::Required);
        req.response_format = Some(ResponseFormat {
            name: "plan".into(),
            schema: json!({}),
        });
        req.max_tokens = Some(64);
        req.temperature = Some(0.5);
        let wire = orch_providers::openai::request_body(&req);
        assert_eq!(chat_request_from_wire(&wire).unwrap(), req);
    }

    #[test]
    fn rejects_malformed_requests_with_the_field_named() {
        let err = chat_request_from_wire(&json!({"messages": []})).unwrap_err();
        assert!(err.contains("model"), "{err}");
        let err = chat_request_from_wire(&json!({"model": "m", "messages": [{"role": "robot"}]}))
            .unwrap_err();
        assert!(
            err.contains("messages[0]") && err.contains("robot"),
            "{err}"
        );
        let err = chat_request_from_wire(
            &json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
        )
        .unwrap_err();
        assert!(err.contains("tool_call_id"), "{err}");
    }

    #[test]
    fn stream_rendering_splits_content_and_arguments() {
        let resp = ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: "héllo wörld".into(),
                tool_calls: vec![ToolCall {
                    id: "c9".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                tool_call_id: None,
            },
            usage: Usage {
                input_tokens: 7,
                output_tokens: 3,
                cached_tokens: 0,
                cost_usd: 0.0,
            },
            finish_reason: "tool_calls".into(),
            model: "worker".into(),
        };
        let events = chat_response_to_sse(&resp, "chatcmpl-1", 5, 4, true);
        assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| {
                assert!(e.starts_with("data: ") && e.ends_with("\n\n"), "{e}");
                serde_json::from_str(&e[6..]).unwrap()
            })
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let text: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(text, vec!["héll", "o wö", "rld"]);
        let args: Vec<&str> = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(args, vec!["{\"a\"", ":1}"]);
        let first_call = chunks
            .iter()
            .find(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
            .unwrap();
        assert_eq!(
            first_call["choices"][0]["delta"]["tool_calls"][0]["id"],
            "c9"
        );
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 7);
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
        // Without include_usage there is no usage event.
        let plain = chat_response_to_sse(&resp, "x", 5, 100, false);
        assert!(plain.iter().all(|e| !e.contains("\"usage\"")));
    }

    #[test]
    fn response_is_rendered_like_openai() {
        let resp = ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{".into(),
                }],
                tool_call_id: None,
            },
            usage: Usage {
                input_tokens: 7,
                output_tokens: 3,
                cached_tokens: 2,
                cost_usd: 0.0,
            },
            finish_reason: "tool_calls".into(),
            model: "worker".into(),
        };
        let v = chat_response_to_wire(&resp, "chatcmpl-1", 5);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["type"],
            "function"
        );
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{"
        );
        assert_eq!(v["usage"]["total_tokens"], 10);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    }
}
