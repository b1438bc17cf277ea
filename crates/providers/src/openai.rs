//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).
//!
//! Works with OpenAI itself and with the many servers that speak its wire
//! format (llama.cpp, vLLM, Ollama, LiteLLM, OpenRouter, ...). Replies are
//! read tolerantly (null content, arguments sent as an object instead of a
//! string, missing usage) because those servers differ in the details, but
//! never without bound: bodies over [`MAX_RESPONSE_BYTES`] are refused.
//!
//! Streaming (`chat_stream`) sends `"stream": true` with
//! `"stream_options": {"include_usage": true}` and reads the server-sent
//! events with [`StreamParser`]: text deltas, tool calls assembled by index
//! from their fragments, the finish reason and the closing usage chunk. An
//! answer is complete once its finish reason arrives: a stream that ends
//! before that, whether the connection drops, the body just ends, or the
//! server sends `[DONE]` early (llama-cpp-python does when another request
//! queues up), is a [`ProviderError::StreamCut`], which the retry policy
//! retries as a whole.
//!
//! Structured output is sent as OpenAI's `json_schema` response format, or
//! as `{"type": "json_object", "schema": ...}` for servers that only read
//! that form ([`SchemaStyle`]; the llama.cpp preset uses it).
//!
//! The API key is only ever put in the `Authorization` header: it is
//! redacted from `Debug` output and from error bodies that echo it.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolChoice};
#[cfg(test)]
use crate::http::parse_retry_after;
use crate::http::{
    self, cap, error_chain, error_message, error_text, preview, replay_to_sink,
    MAX_ERROR_BODY_BYTES,
};
use crate::{Capabilities, DeltaSink, Provider, ProviderError, StreamDelta};
use async_trait::async_trait;
use orch_core::Usage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Largest response body read; a bigger one is refused as hostile or broken.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Largest streamed body read. Larger than [`MAX_RESPONSE_BYTES`] because
/// every token of a stream carries a whole JSON chunk of framing.
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// How `response_format` is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaStyle {
    /// OpenAI's `{"type": "json_schema", "json_schema": {"name", "schema",
    /// "strict": true}}` (OpenAI, vLLM, LM Studio, Mistral, xAI, ...).
    #[default]
    JsonSchema,
    /// `{"type": "json_object", "schema": {...}}`: the only form
    /// llama-cpp-python's server accepts; llama.cpp's own server reads it
    /// too.
    JsonObjectSchema,
}

/// A client for one OpenAI-compatible server.
pub struct OpenAiProvider {
    name: String,
    /// `{base_url}/chat/completions`.
    endpoint: String,
    api_key: Option<String>,
    client: reqwest::Client,
    capabilities: Capabilities,
    schema_style: SchemaStyle,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("capabilities", &self.capabilities)
            .field("schema_style", &self.schema_style)
            .finish()
    }
}

impl OpenAiProvider {
    /// `base_url` is the API root, e.g. `http://127.0.0.1:8080/v1` (a
    /// trailing slash is fine). `api_key` is sent as a bearer token when set.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let base = base_url.trim().trim_end_matches('/');
        http::parse_base_url(name, base_url, base, "http://127.0.0.1:8080/v1")?;
        let client = http::client(name, request_timeout, true)?;
        let api_key = api_key.filter(|k| !k.trim().is_empty());
        Ok(OpenAiProvider {
            name: name.to_string(),
            endpoint: format!("{base}/chat/completions"),
            api_key,
            client,
            capabilities: Capabilities {
                tools: true,
                json_schema: true,
                streaming: true,
            },
            schema_style: SchemaStyle::default(),
        })
    }

    /// Write `response_format` in this form (see [`SchemaStyle`]).
    pub fn with_schema_style(mut self, style: SchemaStyle) -> Self {
        self.schema_style = style;
        self
    }

    /// Declare what this server can do (presets know; the default claims
    /// tools, JSON-schema output and streaming). Streaming stays on: it is
    /// this client's own feature, not the server's, and a server that
    /// ignores `"stream": true` is read as a whole answer.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Capabilities {
            streaming: true,
            ..capabilities
        };
        self
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POST `body`; a 2xx response is returned unread, any other status
    /// becomes [`ProviderError::Http`] with the server's own message.
    async fn post(&self, body: &Value) -> Result<reqwest::Response, ProviderError> {
        let mut builder = self.client.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = http::retry_after(response.headers());
        let (bytes, _) = self.read_capped(response).await?;
        Err(ProviderError::Http {
            provider: self.name.clone(),
            status: status.as_u16(),
            body: self.redact(&error_message(&bytes)),
            retry_after,
        })
    }

    /// One request, no retries: [`crate::resilient::ResilientProvider`]
    /// wraps this with the retry policy.
    async fn send_once(&self, body: &Value) -> Result<ChatResponse, ProviderError> {
        let response = self.post(body).await?;
        let (bytes, too_big) = self.read_capped(response).await?;
        if too_big {
            return Err(self.bad(format!(
                "the response body is larger than {} MiB; refusing to read it \
                 (check that base_url points at a chat-completions API)",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            )));
        }
        let model_fallback = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        parse_response(&bytes, model_fallback).map_err(|detail| self.bad(self.redact(&detail)))
    }

    /// Read the body, stopping once it passes [`MAX_RESPONSE_BYTES`]; the
    /// flag says it was cut.
    async fn read_capped(
        &self,
        response: reqwest::Response,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        http::read_capped(response, MAX_RESPONSE_BYTES, None, |e| self.unreachable(e)).await
    }

    /// One streamed request, no retries. Deltas go to `sink` as they are
    /// parsed; the assembled answer is returned.
    async fn stream_once(
        &self,
        body: &Value,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let model_fallback = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut response = self.post(body).await?;
        let is_event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        if !is_event_stream {
            // A server that ignores `"stream": true` answers as a whole;
            // accept that and replay it to the sink.
            let (bytes, too_big) = self.read_capped(response).await?;
            if too_big {
                return Err(self.bad(format!(
                    "the response body is larger than {} MiB; refusing to read it",
                    MAX_RESPONSE_BYTES / (1024 * 1024)
                )));
            }
            let whole = parse_response(&bytes, &model_fallback)
                .map_err(|detail| self.bad(self.redact(&detail)))?;
            replay_to_sink(&whole, sink);
            return Ok(whole);
        }
        let mut parser = StreamParser::new(&self.name);
        let mut read = 0usize;
        let mut emit = |d: &StreamDelta| sink(d);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    if read > MAX_STREAM_BYTES {
                        return Err(self.bad(format!(
                            "the stream is longer than {} MiB; refusing to read more",
                            MAX_STREAM_BYTES / (1024 * 1024)
                        )));
                    }
                    parser
                        .feed(&chunk, &mut emit)
                        .map_err(|e| self.redact_error(e))?;
                    // Stop at `[DONE]` even if the server keeps the
                    // connection open.
                    if parser.is_done() {
                        break;
                    }
                }
                Ok(None) => break,
                // The answer is whole once a finish reason came; only a
                // late usage chunk is lost, and a retry would be billed again.
                Err(_) if parser.is_complete() => break,
                Err(e) => {
                    return Err(ProviderError::StreamCut {
                        provider: self.name.clone(),
                        detail: self.redact(&format!(
                            "after {read} bytes the connection failed: {}",
                            error_chain(&e)
                        )),
                    })
                }
            }
        }
        parser
            .finish(&model_fallback, &mut emit)
            .map_err(|e| self.redact_error(e))
    }

    /// Adjust a body to what this server accepts:
    /// - OpenAI itself: its strict mode lists `minLength`/`maxLength` among
    ///   the keywords it does not support, so they are left out (the answer
    ///   is still checked against them); and the token cap goes as
    ///   `max_completion_tokens`, since its reasoning models refuse
    ///   `max_tokens`.
    /// - llama.cpp-style servers turn the schema into a grammar, and a
    ///   string bound over about a thousand characters breaks it
    ///   (llama.cpp refuses the grammar, "number of rules that are going to
    ///   be repeated ... exceeds sane defaults"; llama-cpp-python 0.3 dies
    ///   on it). Larger `maxLength`s are lowered to [`GRAMMAR_MAX_LENGTH`],
    ///   which still bounds the answer.
    fn fit_schema_to_server(&self, body: &mut Value) {
        if self.endpoint.starts_with("https://api.openai.com/") {
            if let Some(schema) = body.pointer_mut("/response_format/json_schema/schema") {
                strip_length_bounds(schema);
            }
            if let Some(max) = body.as_object_mut().and_then(|b| b.remove("max_tokens")) {
                body["max_completion_tokens"] = max;
            }
        }
        if self.schema_style == SchemaStyle::JsonObjectSchema {
            if let Some(schema) = body.pointer_mut("/response_format/schema") {
                clamp_length_bounds(schema, GRAMMAR_MAX_LENGTH);
            }
        }
    }

    /// Keep the key out of the text of parser errors (they quote the body).
    fn redact_error(&self, e: ProviderError) -> ProviderError {
        match e {
            ProviderError::BadResponse { provider, detail } => ProviderError::BadResponse {
                provider,
                detail: self.redact(&detail),
            },
            ProviderError::Http {
                provider,
                status,
                body,
                retry_after,
            } => ProviderError::Http {
                provider,
                status,
                body: self.redact(&body),
                retry_after,
            },
            ProviderError::StreamCut { provider, detail } => ProviderError::StreamCut {
                provider,
                detail: self.redact(&detail),
            },
            other => other,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> ProviderError {
        let hint = if e.is_timeout() {
            "timed out; the server may be overloaded, or raise request_timeout_seconds"
        } else {
            "is the server running and is base_url right?"
        };
        http::unreachable(&self.name, &self.endpoint, e, hint, self.api_key.as_deref())
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name.clone(),
            detail,
        }
    }

    fn redact(&self, text: &str) -> String {
        http::redact(text, self.api_key.as_deref())
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let mut body = request_body_styled(request, self.schema_style);
        self.fit_schema_to_server(&mut body);
        http::debug_request!(self.name, request, "chat completion request");
        // No retries here: `ResilientProvider` wraps every provider with
        // the one retry policy.
        self.send_once(&body).await
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let mut body = request_body_styled(request, self.schema_style);
        self.fit_schema_to_server(&mut body);
        add_stream_options(&mut body);
        http::debug_request!(self.name, request, "streamed chat completion request");
        self.stream_once(&body, sink).await
    }
}

/// The request body in OpenAI wire format.
pub fn request_body(request: &ChatRequest) -> Value {
    request_body_styled(request, SchemaStyle::JsonSchema)
}

/// The request body with `response_format` in the given form.
pub fn request_body_styled(request: &ChatRequest, schema_style: SchemaStyle) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| wire_message(m, &request.messages[..i]))
        .collect();
    let mut body = json!({ "model": request.model, "messages": messages });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
    }
    if let Some(choice) = &request.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
    }
    if let Some(format) = &request.response_format {
        body["response_format"] = match schema_style {
            SchemaStyle::JsonSchema => json!({
                "type": "json_schema",
                "json_schema": {
                    "name": format.name,
                    "schema": strict_schema(&format.schema),
                    "strict": true
                }
            }),
            SchemaStyle::JsonObjectSchema => json!({
                "type": "json_object",
                "schema": format.schema,
            }),
        };
    }
    if let Some(max) = request.max_tokens {
        body["max_tokens"] = json!(max);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// `schema` as OpenAI's strict mode accepts it: every object lists all of
/// its properties in `required` (strict mode refuses a schema otherwise).
/// An optional property thus becomes one the model always writes, which
/// every reader of the answer accepts; the answer is still validated
/// against the original schema, where it stays optional.
pub fn strict_schema(schema: &Value) -> Value {
    let mut out = schema.clone();
    require_all(&mut out);
    out
}

fn require_all(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        let keys: Vec<String> = props.keys().cloned().collect();
        props.values_mut().for_each(require_all);
        let mut required: Vec<Value> = obj
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for key in keys {
            if !required.iter().any(|r| r.as_str() == Some(key.as_str())) {
                required.push(Value::String(key));
            }
        }
        obj.insert("required".into(), Value::Array(required));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner) = obj.get_mut(key) {
            require_all(inner);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            list.iter_mut().for_each(require_all);
        }
    }
}

/// The largest `maxLength` sent to a server that builds a grammar from the
/// schema ([`SchemaStyle::JsonObjectSchema`]): llama-cpp-python 0.3.36
/// accepted 1000 and died on 1500 (measured with Gemma 3 270M).
pub const GRAMMAR_MAX_LENGTH: u64 = 1000;

fn clamp_length_bounds(schema: &mut Value, max: u64) {
    match schema {
        Value::Object(obj) => {
            for key in ["minLength", "maxLength"] {
                if obj
                    .get(key)
                    .and_then(Value::as_u64)
                    .is_some_and(|n| n > max)
                {
                    obj.insert(key.into(), json!(max));
                }
            }
            obj.values_mut().for_each(|v| clamp_length_bounds(v, max));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| clamp_length_bounds(v, max)),
        _ => {}
    }
}

fn strip_length_bounds(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            obj.remove("minLength");
            obj.remove("maxLength");
            obj.values_mut().for_each(strip_length_bounds);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_length_bounds),
        _ => {}
    }
}

/// [`request_body`] asking for a stream with a closing usage chunk.
pub fn stream_request_body(request: &ChatRequest) -> Value {
    let mut body = request_body(request);
    add_stream_options(&mut body);
    body
}

fn add_stream_options(body: &mut Value) {
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
}

/// One message on the wire. `earlier` is the conversation before it, used
/// to name the call a tool result answers when the message itself does not.
///
/// Strict servers validate these shapes: llama-cpp-python answers HTTP 500
/// ("Input should be a valid string") to an assistant message whose
/// `content` is `null`, and to a tool message without `tool_call_id`. So
/// content is always a string (`""` next to tool calls) and every tool
/// message names its call.
fn wire_message(m: &Message, earlier: &[Message]) -> Value {
    match m.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": tool_call_id_for(m, earlier),
            "content": m.content,
        }),
        Role::Assistant if !m.tool_calls.is_empty() => {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, tc)| {
                    // An id-less call gets the id its result will name.
                    let id = if tc.id.is_empty() {
                        format!("call_{}", i + 1)
                    } else {
                        tc.id.clone()
                    };
                    json!({
                        "id": id,
                        "type": "function",
                        "function": { "name": tc.name, "arguments": tc.arguments },
                    })
                })
                .collect();
            json!({ "role": "assistant", "content": m.content, "tool_calls": calls })
        }
        role => json!({ "role": role, "content": m.content }),
    }
}

/// The call id a tool result answers: its own, or else the id of the call
/// in the latest assistant turn at the same position (the n-th tool result
/// after that turn answers its n-th call), or else a stable made-up id.
fn tool_call_id_for(m: &Message, earlier: &[Message]) -> String {
    if let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let turn = earlier
        .iter()
        .rposition(|e| e.role == Role::Assistant && !e.tool_calls.is_empty());
    if let Some(turn) = turn {
        let position = earlier[turn + 1..]
            .iter()
            .filter(|e| e.role == Role::Tool)
            .count();
        if let Some(call) = earlier[turn].tool_calls.get(position) {
            if !call.id.is_empty() {
                return call.id.clone();
            }
        }
        return format!("call_{}", position + 1);
    }
    "call_1".to_string()
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WireTokenDetails>,
}

#[derive(Deserialize)]
struct WireTokenDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Parse a 2xx body; the error is the detail for `BadResponse`.
fn parse_response(bytes: &[u8], model_fallback: &str) -> Result<ChatResponse, String> {
    let wire: WireResponse = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a chat completion ({e}); body starts with: {}",
            preview(bytes, 200)
        )
    })?;
    let Some(choice) = wire.choices.and_then(|c| c.into_iter().next()) else {
        // Some proxies answer 200 with an error object.
        return Err(match wire.error {
            Some(err) => format!("no choices, error: {}", error_text(&err)),
            None => "the response has no choices".to_string(),
        });
    };
    let mut content = match choice.message.content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        // Content as a list of parts: keep the text parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => return Err(format!("message content is neither text nor null: {other}")),
    };
    if content.is_empty() {
        if let Some(refusal) = choice.message.refusal {
            content = refusal;
        }
    }
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, tc)| ToolCall {
            id: tc.id.unwrap_or_else(|| format!("call_{}", i + 1)),
            name: tc.function.name,
            arguments: match tc.function.arguments {
                Some(Value::String(s)) => s,
                None | Some(Value::Null) => "{}".to_string(),
                // Some servers send the arguments as an object.
                Some(other) => other.to_string(),
            },
        })
        .collect();
    let finish_reason = choice.finish_reason.unwrap_or_else(|| {
        if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
        .to_string()
    });
    let usage = wire.usage.map_or(Usage::default(), usage_from_wire);
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        usage,
        finish_reason,
        model: wire
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model_fallback.to_string()),
    })
}

fn usage_from_wire(u: WireUsage) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
        cached_tokens: u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        // The price table fills in cost; the wire never carries it.
        cost_usd: 0.0,
    }
}

/// One `data:` event of a chat-completions stream.
#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Groq puts the usage of a stream here.
    #[serde(default)]
    x_groq: Option<WireGroq>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireGroq {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolDelta>>,
}

#[derive(Deserialize)]
struct WireToolDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

/// A tool call being assembled from its stream fragments.
#[derive(Debug)]
struct PartialCall {
    /// The wire `index`: which call of the message this is.
    index: usize,
    id: String,
    name: String,
    arguments: String,
    /// `ToolCallStart` was emitted (it needs the name, so arguments that
    /// arrive before the name wait here).
    started: bool,
}

/// Incremental reader of an OpenAI chat-completions event stream.
///
/// Feed it the body in whatever pieces the network delivers (lines and
/// UTF-8 characters may be split anywhere); it emits [`StreamDelta`]s as
/// complete events arrive, and [`StreamParser::finish`] returns the
/// assembled answer, or [`ProviderError::StreamCut`] when the stream ended
/// before the finish reason (with or without `[DONE]`).
///
/// SSE details handled: `\r\n` line ends, comment lines (`: keep-alive`),
/// `event:`/`id:`/`retry:` fields (ignored), `data:` with or without the
/// space, and events whose JSON spans several `data:` lines. Tool-call
/// fragments are assembled by their `index` (servers that omit it get one
/// per new `id`); `id` and `name` come in the first fragment, arguments are
/// concatenated. When several chunks carry usage the last one wins (vLLM's
/// continuous usage is cumulative).
#[derive(Debug)]
pub struct StreamParser {
    provider: String,
    /// An unfinished line (the bytes after the last newline fed).
    line: Vec<u8>,
    /// `data:` lines of an event that did not parse on its own line.
    pending: String,
    content: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
    events: usize,
}

impl StreamParser {
    /// `provider` names the server in errors.
    pub fn new(provider: &str) -> Self {
        StreamParser {
            provider: provider.to_string(),
            line: Vec::new(),
            pending: String::new(),
            content: String::new(),
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            model: None,
            done: false,
            events: 0,
        }
    }

    /// `[DONE]` has arrived; anything after it is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The finish reason has arrived: the answer is complete even if the
    /// connection now breaks (only a late usage chunk may be lost). `[DONE]`
    /// alone is not enough: servers send it when they stop early.
    pub fn is_complete(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// Read the next piece of the body. A server error sent as an event
    /// becomes [`ProviderError::Http`] (with the code it names) or
    /// [`ProviderError::BadResponse`]; so does an event that is not JSON.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        on_delta: &mut dyn FnMut(&StreamDelta),
    ) -> Result<(), ProviderError> {
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.done {
                return Ok(());
            }
            if self.line.is_empty() {
                self.line_done(head, on_delta)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, on_delta)?;
                // Keep the allocation for the next split line.
                line.clear();
                self.line = line;
            }
        }
        if !self.done {
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The stream has ended: the assembled answer, or why it is incomplete.
    /// `model_fallback` is used when no chunk named the model.
    pub fn finish(
        mut self,
        model_fallback: &str,
        on_delta: &mut dyn FnMut(&StreamDelta),
    ) -> Result<ChatResponse, ProviderError> {
        // A last line without its newline still counts; one that does not
        // parse was cut off mid-event, which the check below reports.
        let mut cut_event = false;
        if !self.done && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, on_delta)?;
        }
        if !self.done && !self.pending.is_empty() {
            let data = std::mem::take(&mut self.pending);
            cut_event = self.event(&data, true, on_delta).is_err();
        }
        if !self.is_complete() {
            let how = if self.done {
                "the server sent [DONE] before any finish_reason: it stopped generating early \
                 (llama-cpp-python does this when another request arrives unless started with \
                 --interrupt_requests False)"
            } else {
                "the stream ended without a finish_reason or [DONE]"
            };
            return Err(ProviderError::StreamCut {
                provider: self.provider,
                detail: format!(
                    "{how}, after {} event(s){} ({} characters of text and {} tool call(s) \
                     had arrived)",
                    self.events,
                    if cut_event {
                        " and half of another"
                    } else {
                        ""
                    },
                    self.content.chars().count(),
                    self.calls.len()
                ),
            });
        }
        self.calls.sort_by_key(|c| c.index);
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for call in self.calls {
            if call.name.is_empty() {
                return Err(ProviderError::BadResponse {
                    provider: self.provider,
                    detail: format!(
                        "streamed tool call at index {} never got a function name",
                        call.index
                    ),
                });
            }
            tool_calls.push(ToolCall {
                id: call.id,
                name: call.name,
                arguments: if call.arguments.is_empty() {
                    "{}".to_string()
                } else {
                    call.arguments
                },
            });
        }
        let finish_reason = self.finish_reason.unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            }
            .to_string()
        });
        Ok(ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: self.content,
                tool_calls,
                tool_call_id: None,
            },
            usage: self.usage.unwrap_or_default(),
            finish_reason,
            model: self.model.unwrap_or_else(|| model_fallback.to_string()),
        })
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.provider.clone(),
            detail,
        }
    }

    /// One complete line, without its `\n`.
    fn line_done(
        &mut self,
        line: &[u8],
        on_delta: &mut dyn FnMut(&StreamDelta),
    ) -> Result<(), ProviderError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // End of an event: dispatch a multi-line one.
            if !self.pending.is_empty() {
                let data = std::mem::take(&mut self.pending);
                self.event(&data, true, on_delta)?;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return Ok(());
        }
        let value = std::str::from_utf8(value).map_err(|_| {
            self.bad(format!(
                "a stream event is not UTF-8: {}",
                preview(value, 200)
            ))
        })?;
        if self.pending.is_empty() {
            self.event(value, false, on_delta)
        } else {
            self.pending.push('\n');
            self.pending.push_str(value);
            Ok(())
        }
    }

    /// The data of one event. When `last_chance` is false and the data is
    /// not JSON, it may be the first line of a multi-line event: keep it.
    fn event(
        &mut self,
        data: &str,
        last_chance: bool,
        on_delta: &mut dyn FnMut(&StreamDelta),
    ) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: WireChunk = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(_) if !last_chance => {
                self.pending.push_str(data);
                return Ok(());
            }
            Err(e) => {
                return Err(self.bad(format!(
                    "stream event {} is not a chat-completion chunk ({e}): {}",
                    self.events + 1,
                    preview(data.as_bytes(), 200)
                )))
            }
        };
        self.events += 1;
        self.chunk(chunk, on_delta)
    }

    fn chunk(
        &mut self,
        chunk: WireChunk,
        on_delta: &mut dyn FnMut(&StreamDelta),
    ) -> Result<(), ProviderError> {
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            return Err(mid_stream_error(&self.provider, &err));
        }
        if self.model.is_none() {
            self.model = chunk.model.filter(|m| !m.is_empty());
        }
        if let Some(u) = chunk.usage.or_else(|| chunk.x_groq.and_then(|x| x.usage)) {
            self.usage = Some(usage_from_wire(u));
        }
        for choice in chunk.choices.unwrap_or_default() {
            // orch asks for one choice; ignore any others.
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        self.content.push_str(&text);
                        on_delta(&StreamDelta::Text(text));
                    }
                }
                for fragment in delta.tool_calls.unwrap_or_default() {
                    self.tool_fragment(fragment, on_delta);
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
        }
        Ok(())
    }

    fn tool_fragment(&mut self, tc: WireToolDelta, on_delta: &mut dyn FnMut(&StreamDelta)) {
        let id = tc.id.filter(|id| !id.is_empty());
        let index = match tc.index {
            Some(i) => i,
            // No index: a new id starts a new call, else it continues the last.
            None => match &id {
                Some(id) if !self.calls.iter().any(|c| c.id == *id) => {
                    self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0)
                }
                _ => self.calls.last().map_or(0, |c| c.index),
            },
        };
        let pos = match self.calls.iter().position(|c| c.index == index) {
            Some(p) => p,
            None => {
                self.calls.push(PartialCall {
                    index,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                    started: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[pos];
        if let Some(id) = id {
            if call.id.is_empty() {
                call.id = id;
            }
        }
        let (name, arguments) = tc.function.map_or((None, None), |f| (f.name, f.arguments));
        let fragment = match arguments {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => String::new(),
            // Some servers send the arguments as an object, whole.
            Some(other) => other.to_string(),
        };
        if call.started {
            if !fragment.is_empty() {
                call.arguments.push_str(&fragment);
                on_delta(&StreamDelta::ToolCallArgs { index, fragment });
            }
            return;
        }
        if let Some(name) = name {
            call.name.push_str(&name);
        }
        call.arguments.push_str(&fragment);
        if !call.name.is_empty() {
            call.started = true;
            if call.id.is_empty() {
                call.id = format!("call_{}", index + 1);
            }
            on_delta(&StreamDelta::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            });
            if !call.arguments.is_empty() {
                on_delta(&StreamDelta::ToolCallArgs {
                    index,
                    fragment: call.arguments.clone(),
                });
            }
        }
    }
}

/// An `{"error": ...}` event in the middle of a stream. Servers that send
/// one (vLLM, llama.cpp, OpenRouter) give an HTTP-like `code`; without one
/// the error type decides whether a retry can help.
fn mid_stream_error(provider: &str, err: &Value) -> ProviderError {
    let message = cap(&error_text(err), MAX_ERROR_BODY_BYTES);
    let code = ["code", "status"]
        .iter()
        .filter_map(|k| err.get(*k))
        .find_map(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c));
    let kind = err.get("type").and_then(Value::as_str).unwrap_or_default();
    let status = code.or(if kind.contains("rate_limit") {
        Some(429)
    } else if kind.contains("overloaded") {
        Some(503)
    } else if kind.contains("server_error") {
        Some(500)
    } else {
        None
    });
    match status {
        Some(status) => ProviderError::Http {
            provider: provider.to_string(),
            status,
            body: format!("(sent mid-stream) {message}"),
            retry_after: None,
        },
        None => ProviderError::BadResponse {
            provider: provider.to_string(),
            detail: format!("the server sent an error mid-stream: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ResponseFormat, ToolSpec};

    #[test]
    fn debug_output_redacts_the_key() {
        let p = OpenAiProvider::new(
            "openai",
            "https://api.example.com/v1/",
            Some("sk-very-secret-123".into()),
            Duration::from_secs(5),
        )
        .unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk-very-secret-123"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert_eq!(p.endpoint(), "https://api.example.com/v1/chat/completions");
        assert_eq!(
            p.redact("bad key sk-very-secret-123!"),
            "bad key <redacted>!"
        );

        let p = OpenAiProvider::new("local", "http://h/v1", None, Duration::from_secs(5)).unwrap();
        assert!(format!("{p:?}").contains("api_key: None"));
    }

    #[test]
    fn bad_configuration_is_refused_with_a_fix() {
        let err = OpenAiProvider::new("x", "127.0.0.1:8080", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://"), "{err}");
        let err = OpenAiProvider::new("x", "ftp://h/v1", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http:// or https://"), "{err}");
        let err = OpenAiProvider::new("x", "http://h/v1", None, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("request_timeout_seconds"));
    }

    #[test]
    fn request_body_wire_format() {
        let mut req = ChatRequest::new(
            "gpt-x",
            vec![
                Message::system("sys"),
                Message::user("do it"),
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "read".into(),
                        arguments: "{\"p\":1}".into(),
                    }],
                    tool_call_id: None,
                },
                Message::tool_result("c1", "file text"),
                Message::assistant("done"),
            ],
        );
        req.tools = vec![ToolSpec {
            name: "read".into(),
            description: "read a file".into(),
            parameters: json!({"type": "object"}),
        }];
        req.tool_choice = Some(ToolChoice::Tool("read".into()));
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "object"}),
        });
        req.max_tokens = Some(100);
        let body = request_body(&req);
        assert_eq!(
            body,
            json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "do it"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{\"p\":1}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "file text"},
                    {"role": "assistant", "content": "done"},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "read", "description": "read a file", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "read"}},
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "verdict", "schema": {"type": "object"}, "strict": true}},
                "max_tokens": 100,
            })
        );
        assert!(body.get("temperature").is_none());
    }

    /// llama-cpp-python answers 500 to `"content": null` on an assistant
    /// turn and to a tool message without `tool_call_id`: the exact JSON of
    /// a two-call turn, with and without text, and of id-less results.
    #[test]
    fn tool_turns_never_send_null_content_and_results_always_name_their_call() {
        let call = |id: &str, name: &str| ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: "{}".into(),
        };
        let turn = |content: &str, calls: Vec<ToolCall>| Message {
            role: Role::Assistant,
            content: content.into(),
            tool_calls: calls,
            tool_call_id: None,
        };
        let id_less = |text: &str| Message {
            role: Role::Tool,
            content: text.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        let req = ChatRequest::new(
            "m",
            vec![
                Message::user("go"),
                turn("", vec![call("a1", "read_file"), call("a2", "run")]),
                id_less("first"),
                id_less("second"),
                turn("Now the edit.", vec![call("b1", "edit_file")]),
                Message::tool_result("", "edited"),
                turn("", vec![call("", "finish")]),
                id_less("done"),
            ],
        );
        let body = request_body(&req);
        let f = |name: &str| json!({"name": name, "arguments": "{}"});
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "a1", "type": "function", "function": f("read_file")},
                    {"id": "a2", "type": "function", "function": f("run")},
                ]},
                {"role": "tool", "tool_call_id": "a1", "content": "first"},
                {"role": "tool", "tool_call_id": "a2", "content": "second"},
                {"role": "assistant", "content": "Now the edit.", "tool_calls": [
                    {"id": "b1", "type": "function", "function": f("edit_file")},
                ]},
                {"role": "tool", "tool_call_id": "b1", "content": "edited"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": f("finish")},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
            ])
        );
        let text = body.to_string();
        assert!(!text.contains("null"), "no null anywhere: {text}");
        // The streamed body is built the same way.
        assert_eq!(stream_request_body(&req)["messages"], body["messages"]);
        // A tool result with nothing before it still names a call.
        let lone = ChatRequest::new("m", vec![id_less("x")]);
        assert_eq!(request_body(&lone)["messages"][0]["tool_call_id"], "call_1");
    }

    #[test]
    fn parse_tolerates_variants() {
        let body = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
            "tool_calls":[{"function":{"name":"f"}}]}}]}"#;
        let r = parse_response(body, "fallback").unwrap();
        assert_eq!(r.message.content, "ab");
        assert_eq!(r.message.tool_calls[0].id, "call_1");
        assert_eq!(r.message.tool_calls[0].arguments, "{}");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!(r.model, "fallback");
        assert_eq!(r.usage, Usage::default());

        let refusal = br#"{"choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_response(refusal, "m").unwrap().message.content,
            "I can't"
        );

        let err = parse_response(br#"{"error":{"message":"overloaded"}}"#, "m").unwrap_err();
        assert!(err.contains("overloaded"), "{err}");
        let err = parse_response(br#"{"choices":[]}"#, "m").unwrap_err();
        assert!(err.contains("no choices"), "{err}");
    }

    #[test]
    fn error_message_extraction_and_cap() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Invalid key","type":"x"}}"#),
            "Invalid key"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(br#"{"message":"nope"}"#), "nope");
        assert_eq!(error_message(b""), "(empty body)");
        let big = "é".repeat(5000);
        let capped = error_message(big.as_bytes());
        assert!(capped.len() < MAX_ERROR_BODY_BYTES + 40, "{}", capped.len());
        assert!(capped.contains("bytes cut"));
    }

    /// Run a whole body through the parser in pieces of `step` bytes.
    fn parse_stream(
        body: &[u8],
        step: usize,
    ) -> (Vec<StreamDelta>, Result<ChatResponse, ProviderError>) {
        let mut deltas = Vec::new();
        let mut parser = StreamParser::new("p");
        let mut push = |d: &StreamDelta| deltas.push(d.clone());
        for piece in body.chunks(step.max(1)) {
            if let Err(e) = parser.feed(piece, &mut push) {
                return (deltas, Err(e));
            }
        }
        let result = parser.finish("asked-model", &mut push);
        (deltas, result)
    }

    /// Interleaved tool calls, CRLF, comments, other fields, a multi-line
    /// event, multi-byte text, a usage chunk and `[DONE]`.
    const TRICKY_STREAM: &str = concat!(
        ": keep-alive\n\n",
        "event: message\r\nid: 1\r\n",
        "data: {\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Grüße, \"}}]}\n\n",
        "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"世界 🌍\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"write_file\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"run\",\"arguments\":\"{\\\"cmd\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\": \\\"a.py\\\", \"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\"ls\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\n",
        "data: \"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"content\\\": \\\"é\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n",
        "data: this is after the end and never read\n\n",
    );

    #[test]
    fn stream_assembles_the_same_answer_however_the_bytes_are_split() {
        let (want_deltas, want) = parse_stream(TRICKY_STREAM.as_bytes(), usize::MAX);
        let want = want.unwrap();
        assert_eq!(want.message.content, "Grüße, 世界 🌍");
        assert_eq!(want.model, "m-1");
        assert_eq!(want.finish_reason, "tool_calls");
        assert_eq!(
            want.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 30,
                cached_tokens: 4,
                cost_usd: 0.0
            }
        );
        assert_eq!(
            want.message.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "write_file".into(),
                    arguments: "{\"path\": \"a.py\", \"content\": \"é\"}".into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "run".into(),
                    arguments: "{\"cmd\":\"ls\"}".into(),
                },
            ]
        );
        assert_eq!(
            want_deltas,
            vec![
                StreamDelta::Text("Grüße, ".into()),
                StreamDelta::Text("世界 🌍".into()),
                StreamDelta::ToolCallStart {
                    index: 0,
                    id: "call_a".into(),
                    name: "write_file".into()
                },
                StreamDelta::ToolCallStart {
                    index: 1,
                    id: "call_b".into(),
                    name: "run".into()
                },
                StreamDelta::ToolCallArgs {
                    index: 1,
                    fragment: "{\"cmd\":".into()
                },
                StreamDelta::ToolCallArgs {
                    index: 0,
                    fragment: "{\"path\": \"a.py\", ".into()
                },
                StreamDelta::ToolCallArgs {
                    index: 1,
                    fragment: "\"ls\"}".into()
                },
                StreamDelta::ToolCallArgs {
                    index: 0,
                    fragment: "\"content\": \"é\"}".into()
                },
            ]
        );
        // Every piece size, down to one byte (which splits every UTF-8
        // character and every CRLF), gives the same deltas and answer.
        for step in 1..=64 {
            let (deltas, got) = parse_stream(TRICKY_STREAM.as_bytes(), step);
            assert_eq!(deltas, want_deltas, "step {step}");
            assert_eq!(got.unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn stream_without_done_or_finish_reason_is_cut() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hal\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"f an ans\"}}]}\n\n";
        let (deltas, result) = parse_stream(body.as_bytes(), 7);
        assert_eq!(deltas.len(), 2, "the sink saw the partial text");
        match result.unwrap_err() {
            ProviderError::StreamCut { provider, detail } => {
                assert_eq!(provider, "p");
                assert!(
                    detail.contains("2 event(s)") && detail.contains("11 characters"),
                    "{detail}"
                );
            }
            other => panic!("expected StreamCut, got {other:?}"),
        }
        // Cut in the middle of a line: still cut, not a parse error.
        let (_, result) = parse_stream(b"data: {\"choices\":[{\"delta\":{\"cont", 5);
        assert!(
            matches!(result, Err(ProviderError::StreamCut { .. })),
            "{result:?}"
        );
        // Empty body.
        let (_, result) = parse_stream(b"", 5);
        assert!(result.unwrap_err().is_retryable());
    }

    #[test]
    fn finish_reason_without_done_and_done_without_newline_are_complete() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"length\"}]}\n\n";
        let (_, r) = parse_stream(body.as_bytes(), 3);
        let r = r.unwrap();
        assert_eq!(
            (r.message.content.as_str(), r.finish_reason.as_str()),
            ("ok", "length")
        );
        assert_eq!(r.model, "asked-model");
        assert_eq!(r.usage, Usage::default());

        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]";
        let (_, r) = parse_stream(body.as_bytes(), 4);
        assert_eq!(r.unwrap().finish_reason, "stop");
    }

    #[test]
    fn done_before_any_finish_reason_is_an_interrupted_answer() {
        // llama-cpp-python's server ends a stream like this when another
        // request queues up: what came so far, then [DONE].
        let body = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"The\"}}]}\n\n\
                    data: [DONE]\n\n";
        match parse_stream(body.as_bytes(), 8).1.unwrap_err() {
            ProviderError::StreamCut { detail, .. } => {
                assert!(
                    detail.contains("[DONE] before any finish_reason"),
                    "{detail}"
                );
                assert!(detail.contains("--interrupt_requests False"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tool_calls_without_index_or_with_object_arguments() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"x1\",\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"k\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"x2\",\"function\":{\"name\":\"b\",\"arguments\":{\"n\":2}}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":2,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":2,\"function\":{\"name\":\"late\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"name\":\"bare\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (deltas, r) = parse_stream(body.as_bytes(), 9);
        let calls = r.unwrap().message.tool_calls;
        let got: Vec<(&str, &str, &str)> = calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x1", "a", "{\"k\":1}"),
                ("x2", "b", "{\"n\":2}"),
                ("call_3", "late", "{}"),
                ("call_4", "bare", "{}"),
            ]
        );
        // Arguments that came before the name follow its start.
        let late = deltas
            .iter()
            .position(|d| matches!(d, StreamDelta::ToolCallStart { name, .. } if name == "late"))
            .unwrap();
        assert_eq!(
            deltas[late + 1],
            StreamDelta::ToolCallArgs {
                index: 2,
                fragment: "{}".into()
            }
        );

        let nameless = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
        let err = parse_stream(nameless.as_bytes(), 100).1.unwrap_err();
        assert!(
            err.to_string().contains("never got a function name"),
            "{err}"
        );
    }

    #[test]
    fn errors_inside_the_stream() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                    data: {\"error\":{\"message\":\"Rate limit reached\",\"code\":429}}\n\n";
        match parse_stream(body.as_bytes(), 10).1.unwrap_err() {
            ProviderError::Http { status, body, .. } => {
                assert_eq!(status, 429);
                assert!(body.contains("Rate limit reached"), "{body}");
            }
            other => panic!("{other:?}"),
        }
        let body = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert!(parse_stream(body.as_bytes(), 10)
            .1
            .unwrap_err()
            .is_retryable());
        let body = "data: {\"error\":{\"message\":\"content policy\",\"type\":\"invalid_request_error\"}}\n\n";
        let err = parse_stream(body.as_bytes(), 10).1.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("content policy"), "{err}");

        let err = parse_stream(b"data: {not json}\n\n", 4).1.unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
        assert!(
            err.to_string().contains("not a chat-completion chunk"),
            "{err}"
        );
    }

    #[test]
    fn groq_usage_and_last_usage_wins() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}}\n\n",
            "data: [DONE]\n\n",
        );
        let r = parse_stream(body.as_bytes(), 100).1.unwrap();
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (5, 2));
    }

    #[test]
    fn stream_body_asks_for_usage() {
        let body = stream_request_body(&ChatRequest::new("m", vec![Message::user("hi")]));
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    /// Strict mode wants every property required; the llama.cpp form
    /// keeps the schema as it was written.
    #[test]
    fn strict_mode_gets_every_property_required() {
        let schema = json!({
            "type": "object",
            "properties": {
                "tasks": {"type": "array", "maxItems": 2, "items": {
                    "type": "object",
                    "properties": {"title": {"type": "string", "maxLength": 9}, "tests": {"type": "array"}},
                    "required": ["title"],
                    "additionalProperties": false
                }},
                "notes": {"type": "string"}
            },
            "required": ["notes"],
            "additionalProperties": false
        });
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.response_format = Some(ResponseFormat {
            name: "task_plan".into(),
            schema: schema.clone(),
        });
        let sent = &request_body(&req)["response_format"]["json_schema"]["schema"];
        assert_eq!(
            *sent,
            json!({
                "type": "object",
                "properties": {
                    "tasks": {"type": "array", "maxItems": 2, "items": {
                        "type": "object",
                        "properties": {"title": {"type": "string", "maxLength": 9}, "tests": {"type": "array"}},
                        "required": ["title", "tests"],
                        "additionalProperties": false
                    }},
                    "notes": {"type": "string"}
                },
                "required": ["notes", "tasks"],
                "additionalProperties": false
            })
        );
        assert_eq!(
            request_body_styled(&req, SchemaStyle::JsonObjectSchema)["response_format"]["schema"],
            schema
        );

        // Only OpenAI itself loses the length bounds it does not support,
        // and gets its token cap as max_completion_tokens.
        req.max_tokens = Some(300);
        let mut body = request_body(&req);
        let local = OpenAiProvider::new("l", "http://127.0.0.1:1/v1", None, Duration::from_secs(1))
            .unwrap();
        local.fit_schema_to_server(&mut body);
        assert!(body.to_string().contains("maxLength"));
        let openai = OpenAiProvider::new(
            "o",
            "https://api.openai.com/v1",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        openai.fit_schema_to_server(&mut body);
        assert!(!body.to_string().contains("maxLength"), "{body}");
        assert!(body.to_string().contains("maxItems"), "{body}");
        assert_eq!(body["max_completion_tokens"], 300);
        assert!(body.get("max_tokens").is_none());

        // A grammar-building server gets string bounds it can compile.
        req.response_format = Some(ResponseFormat {
            name: "task_plan".into(),
            schema: json!({"type": "object", "properties": {
                "short": {"type": "string", "maxLength": 200},
                "long": {"type": "array", "items": {"type": "string", "minLength": 5000, "maxLength": 8000}}
            }}),
        });
        let llama = OpenAiProvider::new("l", "http://127.0.0.1:1/v1", None, Duration::from_secs(1))
            .unwrap()
            .with_schema_style(SchemaStyle::JsonObjectSchema);
        let mut body = request_body_styled(&req, SchemaStyle::JsonObjectSchema);
        llama.fit_schema_to_server(&mut body);
        assert_eq!(
            body["response_format"]["schema"]["properties"],
            json!({
                "short": {"type": "string", "maxLength": 200},
                "long": {"type": "array", "items": {"type": "string", "minLength": 1000, "maxLength": 1000}}
            })
        );
        assert_eq!(body["max_tokens"], 300);
    }

    #[test]
    fn schema_styles() {
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.response_format = Some(ResponseFormat {
            name: "answer".into(),
            schema: json!({"type": "object"}),
        });
        assert_eq!(
            request_body(&req)["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(
            request_body_styled(&req, SchemaStyle::JsonObjectSchema)["response_format"],
            json!({"type": "json_object", "schema": {"type": "object"}})
        );
    }
}
