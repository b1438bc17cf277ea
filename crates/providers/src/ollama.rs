//! Ollama's native chat API (`POST {base}/api/chat`).
//!
//! Ollama also speaks the OpenAI format on `/v1` (use the `openai` provider
//! for that); the native API is what its own clients use, and differs in
//! the details kept in here:
//! - tool-call arguments are JSON objects, not strings, and calls carry no
//!   id (ids are generated as `call_<n>`); tool results name the tool in
//!   `tool_name`, looked up from the matching call in the earlier messages;
//! - structured output is `format: <JSON schema>`; `max_tokens` and
//!   `temperature` go in `options` (`num_predict`, `temperature`);
//! - there is no `tool_choice`: a request for one specific tool offers only
//!   that tool, and "some tool" cannot be forced;
//! - streaming is NDJSON: one object per line, text in `message.content`,
//!   tool calls whole in one line, and a final line with `done: true`,
//!   `done_reason` and the token counts. A stream without that line was cut.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolChoice};
use crate::http::{self, cap, error_chain, error_text, preview, MAX_ERROR_BODY_BYTES};
use crate::{Capabilities, DeltaSink, Provider, ProviderError, StreamDelta};
use async_trait::async_trait;
use orch_core::Usage;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a local Ollama listens, used when `base_url` is empty.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

/// Largest non-streamed response body read; a bigger one is refused.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Largest streamed response read in total.
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// A client for one Ollama server.
pub struct OllamaProvider {
    name: String,
    /// `{base_url}/api/chat`.
    endpoint: String,
    client: reqwest::Client,
    timeout: Duration,
    /// `options.num_ctx`, when set; Ollama's default window is small and
    /// it silently drops the start of a longer prompt.
    num_ctx: Option<u32>,
    next_call: AtomicU64,
}

impl fmt::Debug for OllamaProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OllamaProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("num_ctx", &self.num_ctx)
            .finish()
    }
}

impl OllamaProvider {
    /// `base_url` is the server root (empty means [`DEFAULT_BASE_URL`]); a
    /// trailing slash or a trailing `/api` is fine.
    pub fn new(
        name: &str,
        base_url: &str,
        request_timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let base_url = if base_url.trim().is_empty() {
            DEFAULT_BASE_URL
        } else {
            base_url
        };
        let base = base_url.trim().trim_end_matches('/');
        let base = base.strip_suffix("/api").unwrap_or(base);
        let parsed = http::parse_base_url(name, base_url, base, DEFAULT_BASE_URL)?;
        if parsed.path().trim_end_matches('/').ends_with("/v1") {
            return Err(ProviderError::Config(format!(
                "provider {name}: base_url {base_url:?} is Ollama's OpenAI-compatible API; \
                 the native provider wants the server root ({DEFAULT_BASE_URL}), \
                 or use the openai provider for /v1"
            )));
        }
        let client = http::client(name, request_timeout, true)?;
        Ok(OllamaProvider {
            name: name.to_string(),
            endpoint: format!("{base}/api/chat"),
            client,
            timeout: request_timeout,
            num_ctx: None,
            next_call: AtomicU64::new(1),
        })
    }

    /// Ask for a context window of `tokens` (`options.num_ctx`) on every request.
    pub fn with_context_length(mut self, tokens: u32) -> Self {
        self.num_ctx = Some(tokens).filter(|n| *n > 0);
        self
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
        let mut body = request_body(request)
            .map_err(|e| ProviderError::Config(format!("provider {}: {e}", self.name)))?;
        body["stream"] = json!(stream);
        if let Some(n) = self.num_ctx {
            if body.get("options").is_none() {
                body["options"] = json!({});
            }
            body["options"]["num_ctx"] = json!(n);
        }
        Ok(body)
    }

    /// POST `body`; a non-2xx answer becomes `Http` with Ollama's message.
    async fn post(&self, body: &Value) -> Result<reqwest::Response, ProviderError> {
        let response = self
            .client
            .post(&self.endpoint)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = http::retry_after(response.headers());
        let (bytes, _) = self.read_capped(response, MAX_ERROR_BODY_BYTES * 4).await?;
        let mut message = error_message(&bytes);
        if status.as_u16() == 404 && message.contains("not found") {
            message.push_str(" (pull it first: ollama pull <model>)");
        }
        Err(ProviderError::Http {
            provider: self.name.clone(),
            status: status.as_u16(),
            body: message,
            retry_after,
        })
    }

    /// Read the body, stopping once it passes `max`; the flag says it was cut.
    async fn read_capped(
        &self,
        response: reqwest::Response,
        max: usize,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        http::read_capped(response, max, None, |e| self.transport(e)).await
    }

    fn transport(&self, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return ProviderError::Timeout {
                provider: self.name.clone(),
                seconds: self.timeout.as_secs(),
            };
        }
        // No key to redact: Ollama takes none.
        http::unreachable(
            &self.name,
            &self.endpoint,
            e,
            "is Ollama running (`ollama serve`) and is base_url right?",
            None,
        )
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name.clone(),
            detail,
        }
    }

    fn cut(&self, detail: String) -> ProviderError {
        ProviderError::StreamCut {
            provider: self.name.clone(),
            detail,
        }
    }

    fn parse_line(&self, line: &[u8]) -> Result<WireChunk, ProviderError> {
        serde_json::from_slice(line).map_err(|e| {
            self.bad(format!(
                "not an Ollama chat response ({e}); it starts with: {}",
                preview(line, 200)
            ))
        })
    }

    /// Fold one response object (the whole answer, or one NDJSON line) into
    /// `asm`, sending deltas to `sink` when streaming.
    fn absorb(
        &self,
        asm: &mut Assembly,
        chunk: WireChunk,
        sink: Option<DeltaSink<'_>>,
    ) -> Result<(), ProviderError> {
        if let Some(err) = chunk.error {
            let message = cap(&error_text(&err), MAX_ERROR_BODY_BYTES);
            // In a 200 stream this means the runner failed mid-answer: a
            // retry may well succeed.
            return Err(self.cut(format!("Ollama reported an error mid-answer: {message}")));
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            asm.model = Some(model);
        }
        if let Some(message) = chunk.message {
            if let Some(text) = message.content.filter(|t| !t.is_empty()) {
                if let Some(sink) = sink {
                    sink(&StreamDelta::Text(text.clone()));
                }
                asm.content.push_str(&text);
            }
            for call in message.tool_calls.unwrap_or_default() {
                let index = asm.tool_calls.len();
                let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
                    format!("call_{}", self.next_call.fetch_add(1, Ordering::Relaxed))
                });
                let arguments = match call.function.arguments {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                };
                if let Some(sink) = sink {
                    sink(&StreamDelta::ToolCallStart {
                        index,
                        id: id.clone(),
                        name: call.function.name.clone(),
                    });
                    sink(&StreamDelta::ToolCallArgs {
                        index,
                        fragment: arguments.clone(),
                    });
                }
                asm.tool_calls.push(ToolCall {
                    id,
                    name: call.function.name,
                    arguments,
                });
            }
        }
        if chunk.done == Some(true) {
            asm.done = true;
            asm.done_reason = chunk.done_reason;
            asm.prompt_eval_count = chunk.prompt_eval_count;
            asm.eval_count = chunk.eval_count;
        }
        Ok(())
    }

    fn finish(&self, asm: Assembly, model_fallback: &str) -> ChatResponse {
        let finish_reason = match asm.done_reason.as_deref() {
            _ if !asm.tool_calls.is_empty() => "tool_calls".to_string(),
            None | Some("") => "stop".to_string(),
            Some(reason) => reason.to_string(),
        };
        ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: asm.content,
                tool_calls: asm.tool_calls,
                tool_call_id: None,
            },
            usage: Usage {
                input_tokens: asm.prompt_eval_count.unwrap_or(0),
                output_tokens: asm.eval_count.unwrap_or(0),
                cached_tokens: 0,
                cost_usd: 0.0,
            },
            finish_reason,
            model: asm.model.unwrap_or_else(|| model_fallback.to_string()),
        }
    }
}

#[async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            json_schema: true,
            streaming: true,
        }
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = self.body(request, false)?;
        http::debug_request!(self.name, request, "ollama chat request");
        let response = self.post(&body).await?;
        let (bytes, too_big) = self.read_capped(response, MAX_RESPONSE_BYTES).await?;
        if too_big {
            return Err(self.bad(format!(
                "the response body is larger than {} MiB; refusing to read it \
                 (check that base_url points at an Ollama server)",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            )));
        }
        let chunk = self.parse_line(&bytes)?;
        if let Some(err) = chunk.error.as_ref() {
            return Err(self.bad(format!(
                "Ollama answered 200 with an error: {}",
                cap(&error_text(err), MAX_ERROR_BODY_BYTES)
            )));
        }
        if chunk.message.is_none() {
            return Err(self.bad(format!(
                "the response has no message; it starts with: {}",
                preview(&bytes, 200)
            )));
        }
        let mut asm = Assembly::default();
        self.absorb(&mut asm, chunk, None)?;
        Ok(self.finish(asm, &request.model))
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let body = self.body(request, true)?;
        http::debug_request!(self.name, request, "ollama streamed chat request");
        let mut response = self.post(&body).await?;
        let mut asm = Assembly::default();
        let mut line: Vec<u8> = Vec::new();
        let mut total = 0usize;
        while !asm.done {
            let bytes = match response.chunk().await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(self.transport(&e)),
                Err(e) => {
                    return Err(self.cut(format!(
                        "the connection failed mid-stream: {}",
                        error_chain(&e)
                    )))
                }
            };
            total += bytes.len();
            if total > MAX_STREAM_BYTES {
                return Err(self.bad(format!(
                    "the stream is larger than {} MiB; refusing to read more",
                    MAX_STREAM_BYTES / (1024 * 1024)
                )));
            }
            for &b in bytes.iter() {
                if b != b'\n' {
                    line.push(b);
                    if line.len() > MAX_RESPONSE_BYTES {
                        return Err(self.bad(format!(
                            "a stream line is longer than {} MiB; refusing to read it",
                            MAX_RESPONSE_BYTES / (1024 * 1024)
                        )));
                    }
                    continue;
                }
                let text = std::mem::take(&mut line);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let chunk = self.parse_line(&text)?;
                self.absorb(&mut asm, chunk, Some(sink))?;
                if asm.done {
                    break;
                }
            }
        }
        if !asm.done && !line.iter().all(u8::is_ascii_whitespace) {
            // A last line without its newline: whole is fine, half is a cut.
            if let Ok(chunk) = serde_json::from_slice::<WireChunk>(&line) {
                self.absorb(&mut asm, chunk, Some(sink))?;
            }
        }
        if !asm.done {
            return Err(self.cut(format!(
                "the stream ended without its final `done` line after {} characters of text and {} tool call(s)",
                asm.content.len(),
                asm.tool_calls.len()
            )));
        }
        Ok(self.finish(asm, &request.model))
    }
}

/// What has arrived so far of one answer.
#[derive(Default)]
struct Assembly {
    content: String,
    tool_calls: Vec<ToolCall>,
    model: Option<String>,
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
}

/// The request body in Ollama wire format, without `stream`.
pub fn request_body(request: &ChatRequest) -> Result<Value, String> {
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        let wire = match m.role {
            Role::Tool => {
                let mut wire = json!({ "role": "tool", "content": m.content });
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                if let Some(name) = crate::chat::call_name(&request.messages[..i], id) {
                    wire["tool_name"] = json!(name);
                }
                wire
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "function": { "name": c.name, "arguments": crate::chat::arguments_object(&c.arguments) }
                        })
                    })
                    .collect();
                json!({ "role": "assistant", "content": m.content, "tool_calls": calls })
            }
            role => json!({ "role": role, "content": m.content }),
        };
        messages.push(wire);
    }
    let mut body = json!({ "model": request.model, "messages": messages });
    let tools: Vec<Value> = request
        .tools
        .iter()
        .filter(|t| match &request.tool_choice {
            // No tool_choice in Ollama: offer only the tool that must be called.
            Some(ToolChoice::Tool(name)) => &t.name == name,
            _ => true,
        })
        .map(|t| {
            json!({
                "type": "function",
                "function": { "name": t.name, "description": t.description, "parameters": t.parameters }
            })
        })
        .collect();
    if let (Some(ToolChoice::Tool(name)), true) = (&request.tool_choice, tools.is_empty()) {
        if !request.tools.is_empty() {
            return Err(format!(
                "tool_choice names tool {name:?}, which is not among the request's tools"
            ));
        }
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(format) = &request.response_format {
        body["format"] = format.schema.clone();
    }
    let mut options = Map::new();
    if let Some(max) = request.max_tokens {
        options.insert("num_predict".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        options.insert("temperature".into(), json!(decimal(t)));
    }
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    Ok(body)
}

/// An `f32` as the `f64` of its shortest decimal form, so a temperature of
/// 0.2 goes out as 0.2 and not 0.20000000298023224.
fn decimal(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
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

/// Ollama's own message from an error body (`{"error": ...}`; other JSON is
/// quoted whole), else the body, capped.
fn error_message(bytes: &[u8]) -> String {
    http::error_message_with(bytes, |v| v.get("error").map(error_text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ResponseFormat, ToolSpec};

    #[test]
    fn base_url_forms_and_bad_configuration() {
        let p = OllamaProvider::new("ollama", "", Duration::from_secs(5)).unwrap();
        assert_eq!(p.endpoint(), "http://127.0.0.1:11434/api/chat");
        let p = OllamaProvider::new("o", "http://gpu:11434/api/", Duration::from_secs(5)).unwrap();
        assert_eq!(p.endpoint(), "http://gpu:11434/api/chat");
        let err = OllamaProvider::new("o", "http://h:11434/v1", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("openai provider"), "{err}");
        let err = OllamaProvider::new("o", "h:11434", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http"), "{err}");
        let err = OllamaProvider::new("o", "", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("request_timeout_seconds"), "{err}");
    }

    #[test]
    fn body_carries_options_format_and_context_length() {
        let p = OllamaProvider::new("o", "", Duration::from_secs(5))
            .unwrap()
            .with_context_length(32768);
        let mut req = ChatRequest::new("qwen3", vec![Message::user("hi")]);
        req.response_format = Some(ResponseFormat {
            name: "verdict".into(),
            schema: json!({"type": "object", "properties": {"ok": {"type": "boolean"}}}),
        });
        req.max_tokens = Some(64);
        let body = p.body(&req, true).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "qwen3",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "format": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                "options": {"num_predict": 64, "num_ctx": 32768}
            })
        );
    }

    #[test]
    fn a_named_tool_choice_offers_only_that_tool() {
        let tool = |name: &str| ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        };
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.tools = vec![tool("read_file"), tool("finish")];
        req.tool_choice = Some(ToolChoice::Tool("finish".into()));
        let body = request_body(&req).unwrap();
        let tools = body["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0]["function"]["name"], "finish");
        req.tool_choice = Some(ToolChoice::Tool("nope".into()));
        let err = request_body(&req).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn error_bodies_give_ollamas_message() {
        assert_eq!(
            error_message(br#"{"error":"model \"x\" not found, try pulling it first"}"#),
            "model \"x\" not found, try pulling it first"
        );
        assert_eq!(error_message(b"  "), "(empty body)");
        assert_eq!(error_message(b"Bad Gateway"), "Bad Gateway");
    }
}
