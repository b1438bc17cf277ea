//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).
//!
//! Works with OpenAI itself and with the many servers that speak its wire
//! format (llama.cpp, vLLM, Ollama, LiteLLM, OpenRouter, ...). Replies are
//! read tolerantly (null content, arguments sent as an object instead of a
//! string, missing usage) because those servers differ in the details, but
//! never without bound: bodies over [`MAX_RESPONSE_BYTES`] are refused.
//!
//! The API key is only ever put in the `Authorization` header: it is
//! redacted from `Debug` output and from error bodies that echo it.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolChoice};
use crate::{Provider, ProviderError};
use async_trait::async_trait;
use orch_core::Usage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// Largest response body read; a bigger one is refused as hostile or broken.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Error bodies are cut to this many bytes before they go into an error.
const MAX_ERROR_BODY_BYTES: usize = 2048;

/// A client for one OpenAI-compatible server.
pub struct OpenAiProvider {
    name: String,
    /// `{base_url}/chat/completions`.
    endpoint: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
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
        let parsed = reqwest::Url::parse(base).map_err(|e| {
            ProviderError::Config(format!(
                "provider {name}: base_url {base_url:?} is not a valid URL ({e}); \
                 use something like http://127.0.0.1:8080/v1"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::Config(format!(
                "provider {name}: base_url {base_url:?} must start with http:// or https://"
            )));
        }
        if request_timeout.is_zero() {
            return Err(ProviderError::Config(format!(
                "provider {name}: the request timeout is 0; set request_timeout_seconds above 0"
            )));
        }
        let api_key = api_key.filter(|k| !k.trim().is_empty());
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| {
                ProviderError::Config(format!(
                    "provider {name}: cannot build the HTTP client: {e}"
                ))
            })?;
        Ok(OpenAiProvider {
            name: name.to_string(),
            endpoint: format!("{base}/chat/completions"),
            api_key,
            client,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One request, no retries. The retry policy (a later issue) wraps this.
    async fn send_once(&self, body: &Value) -> Result<ChatResponse, ProviderError> {
        let mut builder = self.client.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let (bytes, too_big) = self.read_capped(response).await?;
        if !status.is_success() {
            return Err(ProviderError::Http {
                provider: self.name.clone(),
                status: status.as_u16(),
                body: self.redact(&error_message(&bytes)),
                retry_after,
            });
        }
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
        mut response: reqwest::Response,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Ok((Vec::new(), true));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Ok((buf, true));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((buf, false))
    }

    fn unreachable(&self, e: &reqwest::Error) -> ProviderError {
        let hint = if e.is_timeout() {
            "timed out; the server may be overloaded, or raise request_timeout_seconds"
        } else {
            "is the server running and is base_url right?"
        };
        ProviderError::Unreachable {
            provider: self.name.clone(),
            url: self.endpoint.clone(),
            detail: self.redact(&format!("{} ({hint})", error_chain(e))),
        }
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name.clone(),
            detail,
        }
    }

    /// Servers sometimes echo the credentials they rejected; never pass that on.
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if text.contains(key.as_str()) => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = request_body(request);
        tracing::debug!(
            provider = %self.name,
            model = %request.model,
            messages = request.messages.len(),
            tools = request.tools.len(),
            "chat completion request"
        );
        // The retry policy plugs in here (a later issue): retry `send_once`
        // on Unreachable and on HTTP 429/5xx.
        self.send_once(&body).await
    }
}

/// A reqwest error with its causes ("error sending request: ... connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The request body in OpenAI wire format.
pub fn request_body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(wire_message).collect();
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
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": format.name, "schema": format.schema, "strict": true }
        });
    }
    if let Some(max) = request.max_tokens {
        body["max_tokens"] = json!(max);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    body
}

fn wire_message(m: &Message) -> Value {
    match m.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.content,
        }),
        Role::Assistant if !m.tool_calls.is_empty() => {
            let calls: Vec<Value> = m
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
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                json!(m.content)
            };
            json!({ "role": "assistant", "content": content, "tool_calls": calls })
        }
        role => json!({ "role": role, "content": m.content }),
    }
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
    let usage = wire.usage.map_or(Usage::default(), |u| Usage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
        cached_tokens: u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        // Pricing comes later; until then cost is unknown, i.e. 0.
        cost_usd: 0.0,
    });
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

/// The provider's own message from an error body, else the body, capped.
fn error_message(bytes: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        if let Some(err) = v.get("error") {
            return cap(&error_text(err), MAX_ERROR_BODY_BYTES);
        }
        if let Some(msg) = v.get("message").and_then(Value::as_str) {
            return cap(msg, MAX_ERROR_BODY_BYTES);
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        cap(text, MAX_ERROR_BODY_BYTES)
    }
}

/// `{"message": ...}` or a bare string; otherwise the JSON itself.
fn error_text(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        other => match other.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => other.to_string(),
        },
    }
}

fn preview(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max * 4)]);
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        format!("{:?}", cap(&text, max))
    }
}

/// At most `max` bytes, cut at a character boundary, with a marker.
fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
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
                    {"role": "assistant", "content": null, "tool_calls": [
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
}
