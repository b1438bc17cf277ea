//! Google Gemini (`POST {base}/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`).
//!
//! Gemini's quirks, all kept in here:
//! - the system prompt goes in `systemInstruction`, roles are `user` and
//!   `model`, and consecutive turns of the same role are merged;
//! - tool calls are `functionCall` parts with the arguments as an object and
//!   no call id (ids are generated as `call_<n>`); tool results are
//!   `functionResponse` parts in a `user` turn that name the function, so
//!   the name is looked up from the matching call in the earlier messages;
//! - schemas (tool parameters and `responseSchema`) accept only an OpenAPI
//!   subset: other keys (`additionalProperties`, `$schema`, ...) are
//!   stripped, local `$ref`s inlined, `["string", "null"]` types turned into
//!   `nullable`;
//! - thinking models attach a `thoughtSignature` to function calls that must
//!   be sent back with the call (Gemini 3 refuses the next request without
//!   it): signatures are remembered per call id, and when one is unknown
//!   (another process made the call) Gemini's documented bypass value is
//!   sent for models that enforce it;
//! - the API key travels only in the `x-goog-api-key` header, never in the
//!   URL, so it cannot leak into logs or error messages; it is also redacted
//!   from `Debug` output and from error bodies that echo it.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall, ToolChoice};
use crate::http::{self, error_chain, parse_retry_after, preview, MAX_ERROR_BODY_BYTES};
use crate::{Capabilities, DeltaSink, Provider, ProviderError, StreamDelta};
use async_trait::async_trait;
use orch_core::Usage;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The public Gemini API root, used when `base_url` is empty.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Largest non-streamed response body read; a bigger one is refused.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Largest streamed response read in total.
pub const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// How many thought signatures are remembered (oldest forgotten first).
const MAX_SIGNATURES: usize = 4096;

/// Gemini's documented value for "no signature available": it makes models
/// that enforce signatures accept a function call from another source.
const SIGNATURE_BYPASS: &str = "skip_thought_signature_validator";

/// Schema keys Gemini's OpenAPI subset accepts; everything else is dropped.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// `format` values Gemini accepts; others are refused by the API.
const SCHEMA_FORMATS: &[&str] = &["enum", "date-time", "int32", "int64", "float", "double"];

/// `$ref`s are inlined at most this deep (recursive schemas stop here).
const MAX_REF_DEPTH: usize = 8;

/// A client for the Gemini API (or a server speaking its wire format).
pub struct GeminiProvider {
    name: String,
    /// API root without a trailing slash, e.g. `.../v1beta`.
    base: String,
    api_key: Option<String>,
    client: reqwest::Client,
    timeout: Duration,
    /// Generated call ids (`call_<n>`) are unique per provider, so a
    /// remembered signature can never be attached to the wrong call.
    next_call: AtomicU64,
    signatures: Mutex<Signatures>,
}

impl fmt::Debug for GeminiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiProvider")
            .field("name", &self.name)
            .field("base_url", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Thought signatures by call id, bounded.
#[derive(Default)]
struct Signatures {
    by_id: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Signatures {
    fn insert(&mut self, id: String, signature: String) {
        if self.by_id.insert(id.clone(), signature).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_SIGNATURES {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

impl GeminiProvider {
    /// `base_url` is the API root (empty means [`DEFAULT_BASE_URL`]; a
    /// trailing slash is fine). `api_key` is sent as `x-goog-api-key`.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        request_timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let base_url = if base_url.trim().is_empty() {
            DEFAULT_BASE_URL
        } else {
            base_url
        };
        let base = base_url.trim().trim_end_matches('/');
        let parsed = http::parse_base_url(name, base_url, base, DEFAULT_BASE_URL)?;
        if parsed.query().is_some() {
            // A `?key=...` here would put the key in every URL and log line.
            return Err(ProviderError::Config(format!(
                "provider {name}: base_url must not have a query string; \
                 give the API key through the key variable instead (it is sent as a header)"
            )));
        }
        let client = http::client(name, request_timeout, true)?;
        let api_key = api_key.filter(|k| !k.trim().is_empty());
        Ok(GeminiProvider {
            name: name.to_string(),
            base: base.to_string(),
            api_key,
            client,
            timeout: request_timeout,
            next_call: AtomicU64::new(1),
            signatures: Mutex::new(Signatures::default()),
        })
    }

    /// The API root requests go under.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL for `model`, streamed or not. The key is never part of it.
    fn url(&self, model: &str, stream: bool) -> Result<String, ProviderError> {
        let model = model.trim();
        let model = model.strip_prefix("models/").unwrap_or(model);
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(ProviderError::Config(format!(
                "provider {}: model {model:?} is not a Gemini model name; \
                 use a name such as gemini-2.5-flash (letters, digits, '-', '.', '_')",
                self.name
            )));
        }
        Ok(if stream {
            format!("{}/models/{model}:streamGenerateContent?alt=sse", self.base)
        } else {
            format!("{}/models/{model}:generateContent", self.base)
        })
    }

    /// The request body, with remembered thought signatures attached.
    fn body(&self, request: &ChatRequest) -> Result<Value, ProviderError> {
        let signatures = self
            .signatures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        build_body(request, &|id| signatures.by_id.get(id).cloned())
            .map_err(|e| ProviderError::Config(format!("provider {}: {e}", self.name)))
    }

    /// POST `body`; a non-2xx answer becomes `Http` with Gemini's message.
    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, ProviderError> {
        let mut builder = self.client.post(url).json(body);
        if let Some(key) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
                ProviderError::Config(format!(
                    "provider {}: the API key contains characters that cannot go in an HTTP header; \
                     check the key variable for stray quotes or newlines",
                    self.name
                ))
            })?;
            value.set_sensitive(true);
            builder = builder.header("x-goog-api-key", value);
        }
        let response = builder.send().await.map_err(|e| self.transport(&e, url))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let header_wait = http::retry_after(response.headers());
        let (bytes, _) = self
            .read_capped(response, url, MAX_ERROR_BODY_BYTES * 4)
            .await?;
        let (message, body_wait) = error_details(&bytes);
        Err(ProviderError::Http {
            provider: self.name.clone(),
            status: status.as_u16(),
            body: self.redact(&message),
            retry_after: header_wait.or(body_wait),
        })
    }

    /// Read the body, stopping once it passes `max`; the flag says it was cut.
    async fn read_capped(
        &self,
        response: reqwest::Response,
        url: &str,
        max: usize,
    ) -> Result<(Vec<u8>, bool), ProviderError> {
        http::read_capped(response, max, None, |e| self.transport(e, url)).await
    }

    fn transport(&self, e: &reqwest::Error, url: &str) -> ProviderError {
        if e.is_timeout() {
            return ProviderError::Timeout {
                provider: self.name.clone(),
                seconds: self.timeout.as_secs(),
            };
        }
        http::unreachable(
            &self.name,
            url,
            e,
            "is the server reachable and is base_url right?",
            self.api_key.as_deref(),
        )
    }

    fn bad(&self, detail: String) -> ProviderError {
        ProviderError::BadResponse {
            provider: self.name.clone(),
            detail: self.redact(&detail),
        }
    }

    fn cut(&self, detail: String) -> ProviderError {
        ProviderError::StreamCut {
            provider: self.name.clone(),
            detail: self.redact(&detail),
        }
    }

    fn redact(&self, text: &str) -> String {
        http::redact(text, self.api_key.as_deref())
    }

    /// Fold one `GenerateContentResponse` (the whole answer, or one stream
    /// chunk) into `asm`, sending deltas to `sink` when streaming.
    fn absorb(
        &self,
        asm: &mut Assembly,
        chunk: WireResponse,
        sink: Option<DeltaSink<'_>>,
    ) -> Result<(), ProviderError> {
        if let Some(err) = chunk.error {
            // An error object inside a 200 (or mid-stream): treat like the status.
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(ProviderError::Http {
                provider: self.name.clone(),
                status,
                body: self.redact(&error_text(&err)),
                retry_after: retry_delay(&err),
            });
        }
        if let Some(model) = chunk.model_version.filter(|m| !m.is_empty()) {
            asm.model = Some(model);
        }
        if let Some(usage) = chunk.usage_metadata {
            // Streams repeat the running totals; the last one wins.
            asm.usage = Some(usage);
        }
        let candidate = chunk.candidates.unwrap_or_default().into_iter().next();
        let Some(candidate) = candidate else {
            if let Some(reason) = chunk.prompt_feedback.and_then(|f| f.block_reason) {
                return Err(self.bad(format!(
                    "Gemini blocked the prompt ({reason}) and gave no answer; \
                     rephrase the task or relax the safety settings of the project"
                )));
            }
            return Ok(());
        };
        asm.saw_candidate = true;
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(call) = part.function_call {
                let index = asm.tool_calls.len();
                let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
                    format!("call_{}", self.next_call.fetch_add(1, Ordering::Relaxed))
                });
                let arguments = match call.args {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(args) => args.to_string(),
                };
                if let Some(signature) = part.thought_signature.filter(|s| !s.is_empty()) {
                    asm.signatures.push((id.clone(), signature));
                }
                if let Some(sink) = sink {
                    sink(&StreamDelta::ToolCallStart {
                        index,
                        id: id.clone(),
                        name: call.name.clone(),
                    });
                    sink(&StreamDelta::ToolCallArgs {
                        index,
                        fragment: arguments.clone(),
                    });
                }
                asm.tool_calls.push(ToolCall {
                    id,
                    name: call.name,
                    arguments,
                });
            } else if let Some(text) = part.text {
                // Thought summaries are the model's notes, not its answer.
                if part.thought == Some(true) || text.is_empty() {
                    continue;
                }
                if let Some(sink) = sink {
                    sink(&StreamDelta::Text(text.clone()));
                }
                asm.content.push_str(&text);
            }
        }
        if let Some(reason) = candidate.finish_reason.filter(|r| !r.is_empty()) {
            asm.finish = Some(reason);
            asm.finish_message = candidate.finish_message;
        }
        Ok(())
    }

    /// The assembled answer. `streamed` answers must have seen a finish reason.
    fn finish(
        &self,
        asm: Assembly,
        model_fallback: &str,
        streamed: bool,
    ) -> Result<ChatResponse, ProviderError> {
        let raw_finish = match asm.finish {
            Some(reason) => reason,
            None if streamed => {
                return Err(self.cut(format!(
                    "the stream ended without a finish reason after {} characters of text and {} tool call(s)",
                    asm.content.len(),
                    asm.tool_calls.len()
                )))
            }
            None if !asm.saw_candidate => {
                return Err(self.bad("the response has no candidates".to_string()))
            }
            None => "STOP".to_string(),
        };
        let finish_reason = finish_reason(&raw_finish, !asm.tool_calls.is_empty());
        if finish_reason == "content_filter" && asm.content.is_empty() && asm.tool_calls.is_empty()
        {
            let why = asm
                .finish_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(self.bad(format!(
                "Gemini withheld the answer ({raw_finish}){why}; \
                 rephrase the task or relax the safety settings of the project"
            )));
        }
        if !asm.signatures.is_empty() {
            let mut signatures = self
                .signatures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, signature) in asm.signatures {
                signatures.insert(id, signature);
            }
        }
        let usage = asm.usage.map_or(Usage::default(), |u| Usage {
            input_tokens: u.prompt_token_count.unwrap_or(0),
            // Thinking tokens are billed as output.
            output_tokens: u.candidates_token_count.unwrap_or(0)
                + u.thoughts_token_count.unwrap_or(0),
            cached_tokens: u.cached_content_token_count.unwrap_or(0),
            cost_usd: 0.0,
        });
        Ok(ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: asm.content,
                tool_calls: asm.tool_calls,
                tool_call_id: None,
            },
            usage,
            finish_reason,
            model: asm.model.unwrap_or_else(|| model_fallback.to_string()),
        })
    }

    fn parse_chunk(&self, data: &[u8]) -> Result<WireResponse, String> {
        serde_json::from_slice(data).map_err(|e| {
            format!(
                "not a Gemini GenerateContentResponse ({e}); it starts with: {}",
                preview(data, 200)
            )
        })
    }
}

#[async_trait]
impl Provider for GeminiProvider {
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
        let url = self.url(&request.model, false)?;
        let body = self.body(request)?;
        http::debug_request!(self.name, request, "gemini generateContent request");
        let response = self.post(&url, &body).await?;
        let (bytes, too_big) = self.read_capped(response, &url, MAX_RESPONSE_BYTES).await?;
        if too_big {
            return Err(self.bad(format!(
                "the response body is larger than {} MiB; refusing to read it \
                 (check that base_url points at the Gemini API)",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            )));
        }
        let chunk = self.parse_chunk(&bytes).map_err(|d| self.bad(d))?;
        let mut asm = Assembly::default();
        self.absorb(&mut asm, chunk, None)?;
        self.finish(asm, &request.model, false)
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let url = self.url(&request.model, true)?;
        let body = self.body(request)?;
        http::debug_request!(self.name, request, "gemini streamGenerateContent request");
        let mut response = self.post(&url, &body).await?;
        let mut sse = SseParser::default();
        let mut asm = Assembly::default();
        let mut total = 0usize;
        loop {
            let bytes = match response.chunk().await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                // Everything needed already arrived; a late hiccup loses nothing.
                Err(_) if asm.finish.is_some() => break,
                Err(e) if e.is_timeout() => return Err(self.transport(&e, &url)),
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
            let events = sse.push(&bytes).map_err(|d| self.bad(d))?;
            for data in events {
                let chunk = self.parse_chunk(data.as_bytes()).map_err(|d| self.bad(d))?;
                self.absorb(&mut asm, chunk, Some(sink))?;
            }
        }
        if let Some(data) = sse.finish() {
            // An event without its closing blank line: whole JSON is fine,
            // half of one means the stream was cut inside it.
            match self.parse_chunk(data.as_bytes()) {
                Ok(chunk) => self.absorb(&mut asm, chunk, Some(sink))?,
                Err(_) if asm.finish.is_none() => {
                    return Err(self.cut("the stream ended inside an event".to_string()))
                }
                Err(_) => {}
            }
        }
        self.finish(asm, &request.model, true)
    }
}

/// What has arrived so far of one answer.
#[derive(Default)]
struct Assembly {
    content: String,
    tool_calls: Vec<ToolCall>,
    /// Gemini's raw `finishReason`.
    finish: Option<String>,
    finish_message: Option<String>,
    usage: Option<WireUsage>,
    model: Option<String>,
    saw_candidate: bool,
    /// (call id, thought signature), remembered once the answer is complete.
    signatures: Vec<(String, String)>,
}

/// Gemini's finish reason in the shared vocabulary (`stop`, `length`,
/// `tool_calls`, `content_filter`, ...).
fn finish_reason(raw: &str, has_calls: bool) -> String {
    match raw {
        "STOP" | "FINISH_REASON_UNSPECIFIED" if has_calls => "tool_calls".to_string(),
        "STOP" => "stop".to_string(),
        "MAX_TOKENS" => "length".to_string(),
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

/// The request body in Gemini wire format, as sent when no thought
/// signature is remembered (a fresh provider).
pub fn request_body(request: &ChatRequest) -> Result<Value, String> {
    build_body(request, &|_| None)
}

/// The request body; `signature` gives the remembered thought signature of
/// a call id.
fn build_body(
    request: &ChatRequest,
    signature: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    let enforces_signatures = enforces_signatures(&request.model);
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, m) in request.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System => {
                if !m.content.is_empty() {
                    system.push(json!({ "text": m.content }));
                }
                continue;
            }
            Role::User => ("user", text_part(&m.content)),
            Role::Assistant => {
                let mut parts = text_part(&m.content);
                let mut signed = false;
                let first_call = parts.len();
                for call in &m.tool_calls {
                    let mut part = json!({
                        "functionCall": { "name": call.name, "args": crate::chat::arguments_object(&call.arguments) }
                    });
                    if let Some(sig) = signature(&call.id) {
                        part["thoughtSignature"] = json!(sig);
                        signed = true;
                    }
                    parts.push(part);
                }
                if !m.tool_calls.is_empty() && !signed && enforces_signatures {
                    // Only the first call of a step carries the signature.
                    parts[first_call]["thoughtSignature"] = json!(SIGNATURE_BYPASS);
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = crate::chat::call_name(&request.messages[..i], id).ok_or_else(|| {
                    format!(
                        "the tool result at message {} answers call {id:?}, but no earlier \
                         assistant message made that call; Gemini needs the function's name, \
                         so keep the assistant message with the call in the conversation",
                        i + 1
                    )
                })?;
                let part = json!({
                    "functionResponse": { "name": name, "response": { "content": m.content } }
                });
                ("user", vec![part])
            }
        };
        if parts.is_empty() {
            // Gemini refuses a turn without parts.
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({ "role": role, "parts": parts })),
        }
    }
    let mut body = json!({ "contents": contents });
    if !system.is_empty() {
        body["systemInstruction"] = json!({ "parts": system });
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut decl = json!({ "name": t.name, "description": t.description });
                let parameters = sanitize_schema(&t.parameters);
                // Gemini refuses an OBJECT without properties: a tool that
                // takes no arguments simply has no `parameters`.
                let empty_object = parameters
                    .get("properties")
                    .is_none_or(|p| p.as_object().is_some_and(Map::is_empty))
                    && parameters.get("type").and_then(Value::as_str) == Some("object");
                if !empty_object && parameters.as_object().is_some_and(|o| !o.is_empty()) {
                    decl["parameters"] = parameters;
                }
                decl
            })
            .collect();
        body["tools"] = json!([{ "functionDeclarations": declarations }]);
        if let Some(choice) = &request.tool_choice {
            body["toolConfig"] = json!({
                "functionCallingConfig": match choice {
                    ToolChoice::Auto => json!({ "mode": "AUTO" }),
                    ToolChoice::Required => json!({ "mode": "ANY" }),
                    ToolChoice::Tool(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
                }
            });
        }
    }
    let mut config = Map::new();
    if let Some(format) = &request.response_format {
        config.insert("responseMimeType".into(), json!("application/json"));
        config.insert("responseSchema".into(), sanitize_schema(&format.schema));
    }
    if let Some(max) = request.max_tokens {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        config.insert("temperature".into(), json!(decimal(t)));
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    Ok(body)
}

/// An `f32` as the `f64` of its shortest decimal form, so a temperature of
/// 0.2 goes out as 0.2 and not 0.20000000298023224.
fn decimal(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

/// Models that refuse a function call sent back without its thought
/// signature (Gemini 3 and later; 1.x and 2.x do not check).
fn enforces_signatures(model: &str) -> bool {
    let model = model.trim();
    let model = model.strip_prefix("models/").unwrap_or(model);
    model.starts_with("gemini-")
        && !model.starts_with("gemini-1")
        && !model.starts_with("gemini-2")
        && !model.starts_with("gemini-exp")
}

fn text_part(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "text": text })]
    }
}

/// A JSON schema cut down to Gemini's OpenAPI subset.
pub fn sanitize_schema(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    sanitize(schema, &defs, 0)
}

fn sanitize(schema: &Value, defs: &Value, depth: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        let name = target
            .strip_prefix("#/$defs/")
            .or_else(|| target.strip_prefix("#/definitions/"));
        let resolved = name.and_then(|n| defs.get(n));
        let mut out = match resolved {
            Some(def) if depth < MAX_REF_DEPTH => sanitize(def, defs, depth + 1),
            // Unresolvable or too deep: any object.
            _ => json!({ "type": "object" }),
        };
        if let (Some(desc), Some(map)) = (obj.get("description"), out.as_object_mut()) {
            map.insert("description".into(), desc.clone());
        }
        return out;
    }
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "properties" => {
                if let Some(props) = value.as_object() {
                    let props: Map<String, Value> = props
                        .iter()
                        .map(|(k, v)| (k.clone(), sanitize(v, defs, depth)))
                        .collect();
                    out.insert(key.clone(), Value::Object(props));
                }
            }
            "items" if value.is_object() => {
                out.insert(key.clone(), sanitize(value, defs, depth));
            }
            "anyOf" | "oneOf" => {
                if let Some(options) = value.as_array() {
                    let options: Vec<Value> =
                        options.iter().map(|o| sanitize(o, defs, depth)).collect();
                    // oneOf is not in the subset; anyOf is close enough to generate from.
                    out.insert("anyOf".into(), Value::Array(options));
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let named: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if named.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    match named.as_slice() {
                        [one] => {
                            out.insert("type".into(), (*one).clone());
                        }
                        [] => {}
                        many => {
                            let options: Vec<Value> =
                                many.iter().map(|t| json!({ "type": t })).collect();
                            out.insert("anyOf".into(), Value::Array(options));
                        }
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" if value.is_string() && !obj.contains_key("enum") => {
                out.insert("enum".into(), json!([value]));
            }
            // Gemini's enums are strings only.
            "enum"
                if value
                    .as_array()
                    .is_some_and(|v| v.iter().all(Value::is_string)) =>
            {
                out.insert(key.clone(), value.clone());
            }
            "format" if value.as_str().is_some_and(|f| SCHEMA_FORMATS.contains(&f)) => {
                out.insert(key.clone(), value.clone());
            }
            // Whatever the guards above refused is dropped.
            "const" | "enum" | "format" => {}
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    if out.contains_key("enum") && !out.contains_key("type") {
        out.insert("type".into(), json!("string"));
    }
    Value::Object(out)
}

/// Splits a Server-Sent Events byte stream into the `data` of its events.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    data: String,
}

impl SseParser {
    /// Feed bytes; returns the data of every event they completed.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "a stream line is longer than {} MiB; refusing to read it",
                        MAX_RESPONSE_BYTES / (1024 * 1024)
                    ));
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
                continue;
            }
            let line = String::from_utf8(line)
                .map_err(|_| "a stream line is not valid UTF-8".to_string())?;
            if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // Comments (`:`) and other fields (event, id, retry) carry nothing here.
        }
        Ok(events)
    }

    /// The data of an event the stream ended in, if any.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.line);
        if let Some(value) = std::str::from_utf8(&rest).ok().and_then(|l| {
            l.trim_end_matches('\r')
                .strip_prefix("data:")
                .map(str::to_string)
        }) {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data
                .push_str(value.strip_prefix(' ').unwrap_or(&value));
        }
        Some(std::mem::take(&mut self.data)).filter(|d| !d.trim().is_empty())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Option<Vec<WireCandidate>>,
    #[serde(default)]
    prompt_feedback: Option<WirePromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    finish_message: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    thought_signature: Option<String>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

/// Gemini's own message from an error body (else the body, capped), and the
/// wait its `google.rpc.RetryInfo` detail asks for.
fn error_details(bytes: &[u8]) -> (String, Option<Duration>) {
    let mut wait = None;
    let message = http::error_message_with(bytes, |v| {
        // Streaming endpoints answer errors as a one-element array.
        let v = match v {
            Value::Array(items) => items.first().unwrap_or(v),
            other => other,
        };
        let err = v.get("error")?;
        wait = retry_delay(err);
        Some(error_text(err))
    });
    (message, wait)
}

/// `message (STATUS)` from `{"code", "message", "status"}`; other shapes as
/// every API's.
fn error_text(err: &Value) -> String {
    let message = err.get("message").and_then(Value::as_str);
    let status = err.get("status").and_then(Value::as_str);
    match (message, status) {
        (Some(m), Some(s)) => format!("{m} ({s})"),
        _ => http::error_text(err),
    }
}

/// The `retryDelay` (e.g. `"37s"`) of a `google.rpc.RetryInfo` detail.
fn retry_delay(err: &Value) -> Option<Duration> {
    err.get("details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay")?.as_str()?.strip_suffix('s'))
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolSpec;

    fn provider() -> GeminiProvider {
        GeminiProvider::new(
            "gemini",
            "",
            Some("AIza-secret-key".into()),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn default_base_url_and_key_kept_out_of_urls_and_debug() {
        let p = provider();
        assert_eq!(p.base_url(), DEFAULT_BASE_URL);
        let url = p.url("models/gemini-2.5-flash", true).unwrap();
        assert_eq!(
            url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(!url.contains("AIza"));
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("AIza-secret-key") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        assert_eq!(p.redact("key AIza-secret-key bad"), "key <redacted> bad");
    }

    #[test]
    fn bad_configuration_is_refused_with_a_fix() {
        let err = GeminiProvider::new("g", "localhost:1", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http"), "{err}");
        let err = GeminiProvider::new("g", "http://h/v1beta?key=abc", None, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("query string"), "{err}");
        let err = GeminiProvider::new("g", "", None, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("request_timeout_seconds"), "{err}");
        let err = provider().url("../admin?x", false).unwrap_err().to_string();
        assert!(err.contains("gemini-2.5-flash"), "{err}");
    }

    #[test]
    fn schema_is_cut_to_the_openapi_subset() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": {"type": ["string", "null"], "format": "uri", "minLength": 1},
                "kind": {"const": "fix"},
                "n": {"type": "integer", "enum": [1, 2], "exclusiveMinimum": 0},
                "when": {"type": "string", "format": "date-time"},
                "child": {"$ref": "#/$defs/Child", "description": "the child"},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "list": {"type": "array", "items": {"type": "object", "additionalProperties": true,
                          "properties": {"additionalProperties": {"type": "string"}}}}
            },
            "required": ["name"],
            "$defs": {"Child": {"type": "object", "properties": {"x": {"type": "number"}}, "additionalProperties": false}}
        });
        assert_eq!(
            sanitize_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "nullable": true, "minLength": 1},
                    "kind": {"type": "string", "enum": ["fix"]},
                    "n": {"type": "integer"},
                    "when": {"type": "string", "format": "date-time"},
                    "child": {"type": "object", "properties": {"x": {"type": "number"}}, "description": "the child"},
                    "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    // A property may be called anything, even a dropped keyword.
                    "list": {"type": "array", "items": {"type": "object",
                             "properties": {"additionalProperties": {"type": "string"}}}}
                },
                "required": ["name"]
            })
        );
        // A self-referencing schema stops instead of recursing forever.
        let looped = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                            "$ref": "#/$defs/N"});
        let out = sanitize_schema(&looped);
        assert_eq!(out["type"], "object");
    }

    fn call_conversation(model: &str) -> ChatRequest {
        ChatRequest::new(
            model,
            vec![
                Message::user("go"),
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "call_7".into(),
                            name: "read_file".into(),
                            arguments: r#"{"path":"a"}"#.into(),
                        },
                        ToolCall {
                            id: "call_8".into(),
                            name: "list_files".into(),
                            arguments: "{}".into(),
                        },
                    ],
                    tool_call_id: None,
                },
                Message::tool_result("call_8", "a\nb"),
                Message::tool_result("call_7", "text of a"),
            ],
        )
    }

    #[test]
    fn tool_results_name_their_function_and_merge_into_one_user_turn() {
        let body = request_body(&call_conversation("gemini-2.0-flash")).unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "go"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "read_file", "args": {"path": "a"}}},
                    {"functionCall": {"name": "list_files", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "list_files", "response": {"content": "a\nb"}}},
                    {"functionResponse": {"name": "read_file", "response": {"content": "text of a"}}}
                ]}
            ])
        );
        let mut orphan = call_conversation("gemini-2.0-flash");
        orphan.messages.push(Message::tool_result("call_99", "?"));
        let err = request_body(&orphan).unwrap_err();
        assert!(
            err.contains("call_99") && err.contains("keep the assistant message"),
            "{err}"
        );
    }

    #[test]
    fn thought_signatures_are_echoed_or_bypassed_where_enforced() {
        // Gemini 2.x does not check: nothing is added.
        let body = request_body(&call_conversation("gemini-2.5-pro")).unwrap();
        assert!(body["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none());
        // Gemini 3 without a remembered signature: the bypass on the first call only.
        let body = request_body(&call_conversation("gemini-3-pro-preview")).unwrap();
        assert_eq!(
            body["contents"][1]["parts"][0]["thoughtSignature"],
            SIGNATURE_BYPASS
        );
        assert!(body["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none());
        // A remembered signature is sent back exactly, on its own call.
        let lookup = |id: &str| (id == "call_7").then(|| "c2lnbmF0dXJl".to_string());
        let body = build_body(&call_conversation("gemini-3-pro-preview"), &lookup).unwrap();
        assert_eq!(
            body["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnbmF0dXJl"
        );
        assert!(body["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none());
    }

    #[test]
    fn a_tool_without_arguments_has_no_parameters() {
        let mut req = ChatRequest::new("gemini-2.0-flash", vec![Message::user("hi")]);
        req.tools = vec![ToolSpec {
            name: "finish".into(),
            description: "done".into(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        }];
        req.tool_choice = Some(ToolChoice::Required);
        let body = request_body(&req).unwrap();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "finish", "description": "done"}]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert!(body.get("generationConfig").is_none());
    }

    #[test]
    fn sse_parser_handles_any_split() {
        let stream = b": keepalive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: {\"b\":\ndata: 2}\n\ndata: {\"c\":3}";
        for step in 1..stream.len() {
            let mut p = SseParser::default();
            let mut events = Vec::new();
            for piece in stream.chunks(step) {
                events.extend(p.push(piece).unwrap());
            }
            assert_eq!(
                events,
                vec!["{\"a\":1}".to_string(), "{\"b\":\n2}".to_string()],
                "step {step}"
            );
            assert_eq!(p.finish().as_deref(), Some("{\"c\":3}"));
        }
    }

    #[test]
    fn error_details_read_google_errors() {
        let body = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        let (msg, wait) = error_details(body);
        assert_eq!(msg, "Resource has been exhausted (RESOURCE_EXHAUSTED)");
        assert_eq!(wait, Some(Duration::from_secs(37)));
        let (msg, wait) = error_details(br#"[{"error":{"code":400,"message":"bad"}}]"#);
        assert_eq!((msg.as_str(), wait), ("bad", None));
        assert_eq!(error_details(b"").0, "(empty body)");
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn finish_reasons_map_to_the_shared_vocabulary() {
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
        assert_eq!(
            finish_reason("MALFORMED_FUNCTION_CALL", false),
            "malformed_function_call"
        );
    }
}
