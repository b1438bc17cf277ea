//! Anthropic Messages API (`POST {base_url}/v1/messages`), whole and streamed.
//!
//! The neutral chat model maps onto the wire format like this:
//! - system messages (wherever they are) become the top-level `system`
//!   block list, in order, with a prompt-caching marker on the last block;
//! - tool definitions become `{name, description, input_schema}`, the last
//!   one carrying a caching marker so the whole tool list is cached;
//! - assistant tool calls become `tool_use` blocks, and `Role::Tool` results
//!   become `tool_result` blocks in a `user` message; consecutive messages
//!   of the same wire role are merged because the API wants user and
//!   assistant to alternate;
//! - structured output has no native `response_format` here, so it is done
//!   with a forced tool whose input schema is the requested schema; the
//!   tool's input comes back as the message content, not as a tool call;
//! - usage: Anthropic's `input_tokens` excludes cache reads and writes, so
//!   orch's `input_tokens` is their sum and `cached_tokens` the cache reads.
//!
//! Tool-call arguments that are not a JSON object (the model may produce
//! broken JSON, which the agent answers with an error result) are sent back
//! as `{"_raw": "<the text>"}` rather than refused: the conversation stays
//! valid and the model can see what it wrote.
//!
//! The API key is only ever put in the `x-api-key` header (marked
//! sensitive): it is redacted from `Debug` output and from error bodies that
//! echo it. Bodies over [`MAX_RESPONSE_BYTES`] are refused.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolChoice};
use crate::http::{self, error_chain, error_message, error_text, preview, retry_after};
use crate::{Capabilities, DeltaSink, Provider, ProviderError, StreamDelta};
use async_trait::async_trait;
use orch_core::Usage;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Where the API lives when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header this module speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the API; this is sent when the request has none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Largest response body read, and the largest a streamed answer may grow
/// to; anything bigger is refused as hostile or broken.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Tool names must match `^[a-zA-Z0-9_-]{1,64}$`.
const MAX_TOOL_NAME: usize = 64;

/// A client for the Anthropic Messages API (or a proxy speaking it).
pub struct AnthropicProvider {
    name: String,
    /// `{base_url}/v1/messages`.
    endpoint: String,
    api_key: Option<String>,
    client: reqwest::Client,
    request_timeout: Duration,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl AnthropicProvider {
    /// `base_url` is the API root, e.g. [`DEFAULT_BASE_URL`] (empty means
    /// that; a trailing `/` or `/v1` is fine). `api_key` goes in `x-api-key`
    /// when set. `request_timeout` bounds a whole `chat` call and each wait
    /// for the next piece of a stream (a long stream may take longer).
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let trimmed = base_url.trim();
        let base = if trimmed.is_empty() {
            DEFAULT_BASE_URL
        } else {
            trimmed.trim_end_matches('/')
        };
        http::parse_base_url(name, base_url, base, DEFAULT_BASE_URL)?;
        // No client-wide timeout: `chat` sets one per request, and a stream
        // is bounded per read instead so long answers are not cut.
        let client = http::client(name, request_timeout, false)?;
        let api_key = api_key.filter(|k| !k.trim().is_empty());
        if let Some(key) = &api_key {
            if reqwest::header::HeaderValue::from_str(key).is_err() {
                return Err(ProviderError::Config(format!(
                    "provider {name}: the API key contains characters that cannot go in an \
                     HTTP header (a newline or control character?); check the key variable"
                )));
            }
        }
        let root = base.strip_suffix("/v1").unwrap_or(base);
        Ok(AnthropicProvider {
            name: name.to_string(),
            endpoint: format!("{root}/v1/messages"),
            api_key,
            client,
            request_timeout,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn post(&self, body: &Value) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "anthropic-version",
            reqwest::header::HeaderValue::from_static(API_VERSION),
        );
        if let Some(key) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
                ProviderError::Config(format!(
                    "provider {}: the API key cannot go in an HTTP header; check the key variable",
                    self.name
                ))
            })?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        // `.json` sets `content-type: application/json`.
        Ok(self.client.post(&self.endpoint).headers(headers).json(body))
    }

    async fn send_once(
        &self,
        body: &Value,
        structured: Option<&str>,
    ) -> Result<ChatResponse, ProviderError> {
        let request = self.post(body)?.timeout(self.request_timeout);
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let (bytes, too_big) = self.read_capped(response).await?;
        if !status.is_success() {
            return Err(self.http_error(status.as_u16(), &bytes, retry_after));
        }
        if too_big {
            return Err(self.too_big());
        }
        let fallback = model_of(body);
        let wire: Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.bad(format!(
                "not a Messages API response ({e}); body starts with: {}",
                preview(&bytes, 200)
            ))
        })?;
        let answer = Answer::from_message(&wire).map_err(|detail| self.bad(detail))?;
        Ok(answer.finish(structured, fallback))
    }

    async fn stream_once(
        &self,
        body: &Value,
        structured: Option<&str>,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let send = self.post(body)?.send();
        let mut response = tokio::time::timeout(self.request_timeout, send)
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let (bytes, _) = self.read_capped(response).await?;
            return Err(self.http_error(status.as_u16(), &bytes, retry_after));
        }
        let fallback = model_of(body);
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            // A proxy that ignored `stream: true` answered whole; pass it on.
            let (bytes, too_big) = self.read_capped(response).await?;
            if too_big {
                return Err(self.too_big());
            }
            let wire: Value = serde_json::from_slice(&bytes).map_err(|e| {
                self.bad(format!(
                    "not a Messages API response ({e}); body starts with: {}",
                    preview(&bytes, 200)
                ))
            })?;
            let answer = Answer::from_message(&wire).map_err(|detail| self.bad(detail))?;
            let resp = answer.finish(structured, fallback);
            http::replay_to_sink(&resp, sink);
            return Ok(resp);
        }

        let mut parser = SseParser::default();
        let mut stream = StreamState::new(structured);
        let mut events = 0usize;
        loop {
            let chunk = tokio::time::timeout(self.request_timeout, response.chunk())
                .await
                .map_err(|_| self.timeout())?;
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(self.timeout()),
                Err(e) => {
                    return Err(self.cut(format!(
                        "the connection failed after {events} events: {}",
                        error_chain(&e)
                    )))
                }
            };
            parser.push(&chunk);
            while let Some(event) = parser.next_event().map_err(|d| self.bad(d))? {
                events += 1;
                let data: Value = serde_json::from_str(&event.data).map_err(|e| {
                    self.bad(format!(
                        "stream event {events} is not JSON ({e}): {}",
                        preview(event.data.as_bytes(), 200)
                    ))
                })?;
                match stream.on_event(&event.name, &data, sink) {
                    Ok(()) => {}
                    Err(StreamError::Api {
                        status,
                        kind,
                        message,
                    }) => {
                        tracing::debug!(provider = %self.name, %kind, "error event in the stream");
                        return Err(ProviderError::Http {
                            provider: self.name.clone(),
                            status,
                            body: self.redact(&message),
                            retry_after: None,
                        });
                    }
                    Err(StreamError::Bad(detail)) => return Err(self.bad(self.redact(&detail))),
                }
                if stream.done {
                    return Ok(stream.answer.finish(structured, fallback));
                }
            }
        }
        // Lenient about a last event without its blank line, if it is whole.
        if let Some(event) = parser.finish() {
            if let Ok(data) = serde_json::from_str::<Value>(&event.data) {
                if data.get("type").and_then(Value::as_str) == Some("message_stop") {
                    return Ok(stream.answer.finish(structured, fallback));
                }
            }
        }
        Err(self.cut(format!(
            "the server closed the stream after {events} events without message_stop"
        )))
    }

    /// Read the body, stopping once it passes [`MAX_RESPONSE_BYTES`]; the
    /// flag says it was cut.
    async fn read_capped(
        &self,
        response: reqwest::Response,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        let idle = || self.timeout();
        http::read_capped(
            response,
            MAX_RESPONSE_BYTES,
            Some((self.request_timeout, &idle)),
            |e| self.transport(e),
        )
        .await
    }

    fn http_error(&self, status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Http {
            provider: self.name.clone(),
            status,
            body: self.redact(&error_message(body)),
            retry_after,
        }
    }

    fn transport(&self, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return self.timeout();
        }
        http::unreachable(
            &self.name,
            &self.endpoint,
            e,
            "is the server running and is base_url right?",
            self.api_key.as_deref(),
        )
    }

    fn timeout(&self) -> ProviderError {
        ProviderError::Timeout {
            provider: self.name.clone(),
            seconds: self.request_timeout.as_secs().max(1),
        }
    }

    fn cut(&self, detail: String) -> ProviderError {
        ProviderError::StreamCut {
            provider: self.name.clone(),
            detail: self.redact(&detail),
        }
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name.clone(),
            detail,
        }
    }

    fn too_big(&self) -> ProviderError {
        self.bad(format!(
            "the response is larger than {} MiB; refusing to read it \
             (check that base_url points at the Anthropic Messages API)",
            MAX_RESPONSE_BYTES / (1024 * 1024)
        ))
    }

    fn redact(&self, text: &str) -> String {
        http::redact(text, self.api_key.as_deref())
    }

    fn body_for(&self, request: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
        request_body(request, stream)
            .map_err(|e| ProviderError::Config(format!("provider {}: {e}", self.name)))
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            // Through a forced tool; see the module docs.
            json_schema: true,
            streaming: true,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = self.body_for(request, false)?;
        http::debug_request!(self.name, request, "anthropic messages request");
        let structured = structured_tool_name(request);
        self.send_once(&body, structured.as_deref()).await
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let body = self.body_for(request, true)?;
        http::debug_request!(self.name, request, "anthropic messages request (streamed)");
        let structured = structured_tool_name(request);
        self.stream_once(&body, structured.as_deref(), sink).await
    }
}

// ---------------------------------------------------------------------------
// Request

/// The request body in Messages API wire format. The error says what in the
/// request cannot be expressed and how to fix it.
pub fn request_body(request: &ChatRequest, stream: bool) -> Result<Value, String> {
    let ephemeral = json!({"type": "ephemeral"});

    let mut system: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| json!({"type": "text", "text": m.content}))
        .collect();
    if let Some(last) = system.last_mut() {
        last["cache_control"] = ephemeral.clone();
    }

    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => ("user", text_blocks(&m.content)),
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let mut block = json!({"type": "tool_result", "tool_use_id": wire_id(id)});
                if !m.content.is_empty() {
                    block["content"] = json!(m.content);
                }
                ("user", vec![block])
            }
            Role::Assistant => {
                let mut blocks = text_blocks(&m.content);
                for call in &m.tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": wire_id(&call.id),
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    }));
                }
                ("assistant", blocks)
            }
        };
        if blocks.is_empty() {
            // The API refuses empty messages and empty text blocks.
            continue;
        }
        match messages.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    if messages.is_empty() {
        return Err(
            "the request has no user or assistant message with content; \
             add at least one non-empty user message"
                .to_string(),
        );
    }
    // In a user message, tool results must come before any text.
    for (role, blocks) in &mut messages {
        if *role == "user" {
            blocks.sort_by_key(|b| b["type"] != "tool_result");
        }
    }
    // A conversation that already has an assistant turn is a loop that will
    // come back with this same prefix: cache up to its end. One-shot calls
    // skip the marker, so they don't pay the cache-write premium for
    // nothing. (System, tools and this make 3 of the 4 allowed markers.)
    if messages.iter().any(|(role, _)| *role == "assistant") {
        if let Some(block) = messages.last_mut().and_then(|(_, b)| b.last_mut()) {
            block["cache_control"] = ephemeral.clone();
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            let schema = if t.parameters.is_null() {
                json!({"type": "object", "properties": {}})
            } else {
                t.parameters.clone()
            };
            json!({"name": t.name, "description": t.description, "input_schema": schema})
        })
        .collect();
    let mut tool_choice = match &request.tool_choice {
        _ if tools.is_empty() => None,
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Tool(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if let Some(format) = &request.response_format {
        if !format.schema.is_object() || format.schema.get("type").is_some_and(|t| t != "object") {
            return Err(format!(
                "structured output `{}` needs a schema of type object (Anthropic takes it as a \
                 tool's input schema); wrap the value in an object property",
                format.name
            ));
        }
        let name = schema_tool_name(&format.name);
        if request.tools.iter().any(|t| t.name == name) {
            return Err(format!(
                "structured output `{}` and a tool are both named `{name}`; rename one of them",
                format.name
            ));
        }
        tools.push(json!({
            "name": name,
            "description": format!(
                "Give your final answer by calling this tool: its input is the `{}` \
                 result and must match the schema exactly.",
                format.name
            ),
            "input_schema": format.schema,
        }));
        // The answer must be this tool's input; other tools stay listed so
        // the cached tool prefix is the same on every turn.
        tool_choice = Some(json!({"type": "tool", "name": name}));
    }
    if let Some(last) = tools.last_mut() {
        last["cache_control"] = ephemeral;
    }

    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = Value::Array(system);
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(choice) = tool_choice {
        body["tool_choice"] = choice;
    }
    if let Some(t) = request.temperature {
        // Anthropic takes 0..=1; OpenAI-style values up to 2 would be a 400.
        body["temperature"] = json!(t.clamp(0.0, 1.0));
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(body)
}

fn text_blocks(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

/// The arguments as a JSON object, which `tool_use.input` must be. Empty
/// means no arguments; anything else that is not an object is kept verbatim
/// under `_raw` (see the module docs).
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"_raw": arguments}),
    }
}

/// Tool-use ids must match `^[a-zA-Z0-9_-]+$`; ids from other providers
/// (after a fallback) may not. The same mapping is used for `tool_use` and
/// `tool_result`, so they still pair up.
fn wire_id(id: &str) -> String {
    if id.is_empty() {
        return "call".to_string();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The forced tool's name for a structured-output schema name.
fn schema_tool_name(schema: &str) -> String {
    let mut name: String = schema
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TOOL_NAME)
        .collect();
    if name.is_empty() {
        name = "structured_output".to_string();
    }
    name
}

fn structured_tool_name(request: &ChatRequest) -> Option<String> {
    request
        .response_format
        .as_ref()
        .map(|f| schema_tool_name(&f.name))
}

fn model_of(body: &Value) -> &str {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Response

/// An answer being assembled, from a whole message or from stream events.
#[derive(Debug, Default)]
struct Answer {
    model: Option<String>,
    text: String,
    /// (id, name, arguments JSON text), in order.
    calls: Vec<(String, String, String)>,
    stop_reason: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Answer {
    /// A whole `message` object (the non-streamed response).
    fn from_message(wire: &Value) -> Result<Answer, String> {
        if wire.get("type").and_then(Value::as_str) == Some("error") {
            return Err(format!(
                "the server answered 2xx with an error: {}",
                error_text(wire.get("error").unwrap_or(wire))
            ));
        }
        let Some(content) = wire.get("content").and_then(Value::as_array) else {
            return Err(format!(
                "the response has no content list; it starts with: {}",
                preview(wire.to_string().as_bytes(), 200)
            ));
        };
        let mut answer = Answer {
            model: wire
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
            stop_reason: wire
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            ..Answer::default()
        };
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    answer
                        .text
                        .push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
                }
                Some("tool_use") => {
                    let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("a tool_use block has no name")?;
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    let id = if id.is_empty() {
                        format!("toolu_{}", answer.calls.len() + 1)
                    } else {
                        id.to_string()
                    };
                    answer.calls.push((id, name.to_string(), input.to_string()));
                }
                // thinking, redacted_thinking, server tool blocks: not ours.
                _ => {}
            }
        }
        if let Some(usage) = wire.get("usage") {
            answer.add_usage(usage);
        }
        Ok(answer)
    }

    /// Usage counts are cumulative where they appear; take the latest.
    fn add_usage(&mut self, usage: &Value) {
        let get = |key: &str| usage.get(key).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.input_tokens = n;
        }
        if let Some(n) = get("output_tokens") {
            self.output_tokens = n;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read = n;
        }
    }

    fn finish(self, structured: Option<&str>, model_fallback: &str) -> ChatResponse {
        let mut content = self.text;
        let mut calls = self.calls;
        let mut answered_structured = false;
        if let Some(tool) = structured {
            if let Some(pos) = calls.iter().position(|(_, name, _)| name == tool) {
                let (_, _, args) = calls.remove(pos);
                // The forced tool's input is the answer; any preamble text
                // would break the caller's JSON parse.
                content = if args.trim().is_empty() {
                    "{}".to_string()
                } else {
                    args
                };
                answered_structured = true;
            }
        }
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(id, name, arguments)| ToolCall {
                id,
                name,
                arguments: if arguments.trim().is_empty() {
                    "{}".to_string()
                } else {
                    arguments
                },
            })
            .collect();
        let finish_reason = match self.stop_reason.as_deref() {
            Some("tool_use") if answered_structured && tool_calls.is_empty() => "stop".to_string(),
            Some("tool_use") => "tool_calls".to_string(),
            Some("end_turn") | Some("stop_sequence") => "stop".to_string(),
            Some("max_tokens") => "length".to_string(),
            Some("refusal") => "content_filter".to_string(),
            Some(other) => other.to_string(),
            None if tool_calls.is_empty() => "stop".to_string(),
            None => "tool_calls".to_string(),
        };
        // Anthropic's input_tokens excludes both cache reads and cache
        // writes; orch's input_tokens is everything the prompt held. Cache
        // writes (billed at 1.25x input) have no field of their own, so they
        // count as ordinary input here.
        let usage = Usage {
            input_tokens: self.input_tokens + self.cache_creation + self.cache_read,
            output_tokens: self.output_tokens,
            cached_tokens: self.cache_read,
            cost_usd: 0.0,
        };
        ChatResponse {
            message: Message {
                role: Role::Assistant,
                content,
                tool_calls,
                tool_call_id: None,
            },
            usage,
            finish_reason,
            model: self
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model_fallback.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------
// Streaming

/// One server-sent event: its `event:` name and joined `data:` lines.
#[derive(Debug, PartialEq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Incremental SSE parser: bytes in, whole events out, across any chunking.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed as whole lines.
    pos: usize,
    name: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the buffer holds one.
    fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() + self.data.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "a stream event is larger than {} MiB; refusing it",
                        MAX_RESPONSE_BYTES / (1024 * 1024)
                    ));
                }
                return Ok(None);
            };
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.pos += nl + 1;
            if line.is_empty() {
                if let Some(event) = self.take() {
                    return Ok(Some(event));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.name = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                    if self.data.len() > MAX_RESPONSE_BYTES {
                        return Err(format!(
                            "a stream event is larger than {} MiB; refusing it",
                            MAX_RESPONSE_BYTES / (1024 * 1024)
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// At end of input: the event still pending, if any (its final line may
    /// lack the newline).
    fn finish(&mut self) -> Option<SseEvent> {
        if self.pos < self.buf.len() {
            self.push(b"\n");
        }
        match self.next_event() {
            Ok(Some(event)) => Some(event),
            _ => self.take(),
        }
    }

    fn take(&mut self) -> Option<SseEvent> {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let had = std::mem::replace(&mut self.has_data, false);
        had.then_some(SseEvent { name, data })
    }
}

enum StreamError {
    /// An `error` event: the API failed mid-stream.
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    Bad(String),
}

/// A content block being streamed.
enum Block {
    Text,
    /// `call`: index into `Answer::calls`; `initial`: the start event's
    /// `input`, used when no `input_json_delta` follows.
    Tool {
        call: usize,
        initial: String,
        structured: bool,
        got_delta: bool,
    },
    Other,
}

struct StreamState<'s> {
    answer: Answer,
    blocks: std::collections::HashMap<u64, Block>,
    structured: Option<&'s str>,
    /// Tool calls announced to the sink (the schema tool is not one).
    announced: usize,
    /// Index in the sink's numbering, per entry of `answer.calls`.
    sink_index: Vec<Option<usize>>,
    bytes: usize,
    done: bool,
}

impl<'s> StreamState<'s> {
    fn new(structured: Option<&'s str>) -> Self {
        StreamState {
            answer: Answer::default(),
            blocks: std::collections::HashMap::new(),
            structured,
            announced: 0,
            sink_index: Vec::new(),
            bytes: 0,
            done: false,
        }
    }

    fn grow(&mut self, n: usize) -> Result<(), StreamError> {
        self.bytes += n;
        if self.bytes > MAX_RESPONSE_BYTES {
            return Err(StreamError::Bad(format!(
                "the streamed answer is larger than {} MiB; refusing it",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        event_name: &str,
        data: &Value,
        sink: DeltaSink<'_>,
    ) -> Result<(), StreamError> {
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event_name);
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.answer.model = Some(model.to_string());
                }
                if let Some(usage) = message.get("usage") {
                    self.answer.add_usage(usage);
                }
            }
            "content_block_start" => {
                let index = block_index(data)?;
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        self.blocks.insert(index, Block::Text);
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        self.text(text, sink)?;
                    }
                    Some("tool_use") => {
                        let name = block
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                StreamError::Bad("a tool_use block starts without a name".into())
                            })?
                            .to_string();
                        let id = match block.get("id").and_then(Value::as_str) {
                            Some(id) if !id.is_empty() => id.to_string(),
                            _ => format!("toolu_{}", self.answer.calls.len() + 1),
                        };
                        let initial = match block.get("input") {
                            Some(v @ Value::Object(m)) if !m.is_empty() => v.to_string(),
                            _ => String::new(),
                        };
                        let structured = self.structured == Some(name.as_str());
                        let sink_index = if structured {
                            None
                        } else {
                            let i = self.announced;
                            self.announced += 1;
                            sink(&StreamDelta::ToolCallStart {
                                index: i,
                                id: id.clone(),
                                name: name.clone(),
                            });
                            Some(i)
                        };
                        self.blocks.insert(
                            index,
                            Block::Tool {
                                call: self.answer.calls.len(),
                                initial,
                                structured,
                                got_delta: false,
                            },
                        );
                        self.answer.calls.push((id, name, String::new()));
                        self.sink_index.push(sink_index);
                    }
                    _ => {
                        self.blocks.insert(index, Block::Other);
                    }
                }
            }
            "content_block_delta" => {
                let index = block_index(data)?;
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match (
                    self.blocks.get_mut(&index),
                    delta.get("type").and_then(Value::as_str),
                ) {
                    (Some(Block::Text), Some("text_delta")) => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.text(text, sink)?;
                    }
                    (
                        Some(Block::Tool {
                            call,
                            structured,
                            got_delta,
                            ..
                        }),
                        Some("input_json_delta"),
                    ) => {
                        *got_delta = true;
                        let (call, structured) = (*call, *structured);
                        let fragment = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.args(call, structured, fragment, sink)?;
                    }
                    (None, _) => {
                        return Err(StreamError::Bad(format!(
                            "a content_block_delta for block {index}, which never started"
                        )))
                    }
                    // thinking/signature deltas and the like: not ours.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = block_index(data)?;
                if let Some(Block::Tool {
                    call,
                    initial,
                    structured,
                    got_delta: false,
                }) = self.blocks.get(&index)
                {
                    // The whole input came with the start event.
                    let (call, structured, initial) = (*call, *structured, initial.clone());
                    if !initial.is_empty() {
                        self.args(call, structured, &initial, sink)?;
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.answer.stop_reason = Some(reason.to_string());
                }
                if let Some(usage) = data.get("usage") {
                    self.answer.add_usage(usage);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let err = data.get("error").unwrap_or(data);
                let kind = err
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_string();
                return Err(StreamError::Api {
                    status: status_for_error_type(&kind),
                    message: error_text(err),
                    kind,
                });
            }
            // `ping`, and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str, sink: DeltaSink<'_>) -> Result<(), StreamError> {
        if text.is_empty() {
            return Ok(());
        }
        self.grow(text.len())?;
        self.answer.text.push_str(text);
        sink(&StreamDelta::Text(text.to_string()));
        Ok(())
    }

    fn args(
        &mut self,
        call: usize,
        structured: bool,
        fragment: &str,
        sink: DeltaSink<'_>,
    ) -> Result<(), StreamError> {
        if fragment.is_empty() {
            return Ok(());
        }
        self.grow(fragment.len())?;
        if let Some(entry) = self.answer.calls.get_mut(call) {
            entry.2.push_str(fragment);
        }
        if structured {
            // The schema tool's input is the answer text.
            sink(&StreamDelta::Text(fragment.to_string()));
        } else if let Some(Some(index)) = self.sink_index.get(call) {
            sink(&StreamDelta::ToolCallArgs {
                index: *index,
                fragment: fragment.to_string(),
            });
        }
        Ok(())
    }
}

fn block_index(data: &Value) -> Result<u64, StreamError> {
    data.get("index").and_then(Value::as_u64).ok_or_else(|| {
        StreamError::Bad(format!(
            "a {} event has no block index",
            data.get("type").and_then(Value::as_str).unwrap_or("?")
        ))
    })
}

/// The HTTP status the API uses for each error type, for `error` events
/// that arrive inside a 200 stream (so retry decisions stay the same).
fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ResponseFormat, ToolSpec};
    use std::sync::Mutex;

    fn provider(key: Option<&str>) -> AnthropicProvider {
        AnthropicProvider::new(
            "anthropic",
            "",
            key.map(str::to_string),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn endpoint_debug_and_config_errors() {
        let p = provider(Some("sk-ant-secret-1"));
        assert_eq!(p.endpoint(), "https://api.anthropic.com/v1/messages");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk-ant-secret-1"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert_eq!(p.redact("key sk-ant-secret-1 bad"), "key <redacted> bad");

        for base in [
            "http://127.0.0.1:9/",
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/v1/",
        ] {
            let p = AnthropicProvider::new("a", base, None, Duration::from_secs(1)).unwrap();
            assert_eq!(p.endpoint(), "http://127.0.0.1:9/v1/messages", "{base}");
        }
        let err = AnthropicProvider::new("a", "api.anthropic.com", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://api.anthropic.com"), "{err}");
        let err = AnthropicProvider::new("a", "ftp://h", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http:// or https://"), "{err}");
        let err = AnthropicProvider::new("a", "", None, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("request_timeout_seconds"));
        let err = AnthropicProvider::new("a", "", Some("k\ney".into()), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTP header") && !err.contains("k\ney"),
            "{err}"
        );

        let caps = p.capabilities();
        assert!(caps.tools && caps.json_schema && caps.streaming);
    }

    #[test]
    fn messages_merge_order_and_odd_arguments() {
        let mut req = ChatRequest::new(
            "claude-x",
            vec![
                Message::system("one"),
                Message::user("a"),
                Message::user("b"),
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "call.1".into(),
                            name: "f".into(),
                            arguments: "{\"x\": ".into(),
                        },
                        ToolCall {
                            id: "c2".into(),
                            name: "g".into(),
                            arguments: String::new(),
                        },
                        ToolCall {
                            id: "c3".into(),
                            name: "h".into(),
                            arguments: "[1,2]".into(),
                        },
                    ],
                    tool_call_id: None,
                },
                Message::system("two"),
                Message::user("text before results"),
                Message::tool_result("call.1", "bad json"),
                Message::tool_result("c2", ""),
                Message::tool_result("c3", "ok"),
                Message::assistant(""),
            ],
        );
        req.temperature = Some(1.7);
        req.max_tokens = Some(0);
        req.tool_choice = Some(ToolChoice::Required);
        let body = request_body(&req, false).unwrap();
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "one"},
                   {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"_raw": "{\"x\": "}},
                    {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
                    {"type": "tool_use", "id": "c3", "name": "h", "input": {"_raw": "[1,2]"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "bad json"},
                    {"type": "tool_result", "tool_use_id": "c2"},
                    {"type": "tool_result", "tool_use_id": "c3", "content": "ok"},
                    {"type": "text", "text": "text before results", "cache_control": {"type": "ephemeral"}},
                ]},
            ])
        );
        assert_eq!(body["temperature"], json!(1.0));
        assert_eq!(body["max_tokens"], json!(1));
        // tool_choice without tools would be a 400: dropped.
        assert!(body.get("tool_choice").is_none() && body.get("tools").is_none());
        assert!(body.get("stream").is_none());

        let only_system = ChatRequest::new("m", vec![Message::system("s"), Message::user("")]);
        let err = request_body(&only_system, false).unwrap_err();
        assert!(err.contains("non-empty user message"), "{err}");
    }

    #[test]
    fn one_shot_requests_have_no_message_cache_marker() {
        let req = ChatRequest::new("m", vec![Message::user("hi")]);
        let body = request_body(&req, true).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "max_tokens": DEFAULT_MAX_TOKENS, "stream": true,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
    }

    #[test]
    fn structured_output_conflicts_are_refused_with_a_fix() {
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "array"}),
        });
        let err = request_body(&req, false).unwrap_err();
        assert!(err.contains("type object"), "{err}");
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "object"}),
        });
        req.tools = vec![ToolSpec {
            name: "verdict".into(),
            description: String::new(),
            parameters: Value::Null,
        }];
        let err = request_body(&req, false).unwrap_err();
        assert!(err.contains("rename one"), "{err}");
        assert_eq!(schema_tool_name("my plan/v2"), "my_plan_v2");
        assert_eq!(schema_tool_name(""), "structured_output");
        assert_eq!(schema_tool_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn sse_parser_handles_any_chunking_comments_and_crlf() {
        let raw = ": comment\r\nevent: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\nevent: b\ndata:2\n\ndata: tail";
        // Byte by byte gives the same events as all at once.
        let mut one = SseParser::default();
        one.push(raw.as_bytes());
        let mut whole = Vec::new();
        while let Some(e) = one.next_event().unwrap() {
            whole.push(e);
        }
        let mut byte = SseParser::default();
        let mut split = Vec::new();
        for b in raw.as_bytes() {
            byte.push(std::slice::from_ref(b));
            while let Some(e) = byte.next_event().unwrap() {
                split.push(e);
            }
        }
        assert_eq!(whole, split);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    name: "a".into(),
                    data: "{\"x\":\n1}".into()
                },
                SseEvent {
                    name: "b".into(),
                    data: "2".into()
                },
            ]
        );
        assert_eq!(
            byte.finish(),
            Some(SseEvent {
                name: String::new(),
                data: "tail".into()
            })
        );
        assert_eq!(byte.finish(), None);
    }

    #[test]
    fn split_tool_stream_fixture_assembles_byte_by_byte() {
        let raw = include_str!("../tests/fixtures/anthropic/stream_tool_split.sse");
        let seen = Mutex::new(Vec::new());
        let sink = |d: &StreamDelta| seen.lock().unwrap().push(d.clone());
        let mut parser = SseParser::default();
        let mut state = StreamState::new(None);
        for b in raw.as_bytes() {
            parser.push(std::slice::from_ref(b));
            while let Some(e) = parser.next_event().unwrap() {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                assert!(state.on_event(&e.name, &data, &sink).is_ok());
            }
        }
        assert!(state.done);
        let resp = state.answer.finish(None, "m");
        assert_eq!(resp.finish_reason, "tool_calls");
        assert_eq!(resp.message.tool_calls.len(), 1);
        let args: Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
        assert_eq!(args["path"], "src/lib.rs");
        let fragments = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|d| matches!(d, StreamDelta::ToolCallArgs { .. }))
            .count();
        assert!(fragments >= 3, "{fragments}");
    }

    #[test]
    fn error_types_map_to_their_statuses() {
        assert_eq!(status_for_error_type("overloaded_error"), 529);
        assert_eq!(status_for_error_type("rate_limit_error"), 429);
        assert_eq!(status_for_error_type("invalid_request_error"), 400);
        assert_eq!(status_for_error_type("something_new"), 500);
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"x","message":"m"}}"#),
            "m"
        );
        assert_eq!(error_message(b"  "), "(empty body)");
        let big = "é".repeat(5000);
        assert!(error_message(big.as_bytes()).contains("bytes cut"));
    }
}
