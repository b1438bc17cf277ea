//! The metering proxy: for one external agent run, orch serves a model
//! endpoint on a unix socket, in the wire format the agent speaks, and
//! answers every call with the task's own (metered) provider.
//!
//! Routes (each also without the `/v1` prefix):
//! - `POST /v1/chat/completions`: OpenAI Chat Completions, whole and
//!   streamed ([`chat_completions`]; aider, mini-swe-agent);
//! - `POST /v1/responses`: OpenAI Responses, whole and streamed
//!   ([`responses`]; Codex);
//! - `POST /v1/messages` (and `/v1/messages/count_tokens`): Anthropic
//!   Messages, whole and streamed ([`messages`]; Claude Code);
//! - `GET /v1/models`: the one model.
//!
//! Each call is read into a [`ChatRequest`] (the model name replaced by the
//! worker model orch routed this attempt to; message text and tool
//! arguments redacted, as the built-in worker redacts tool output before
//! the model sees it), sent through [`ProxyConfig::provider`] — the metered
//! provider, so the call is priced, recorded in `model_calls` with role
//! `worker` and refused when it would pass the task budget — and the answer
//! (text and tool calls) is written back in the agent's format. A streamed
//! request gets its events once the answer is complete (the provider is
//! called whole), so a refused or failed call is an HTTP error with the
//! reason, never a stream cut half-way.
//!
//! The proxy enforces what the agent cannot be trusted with: `max_turns`
//! (the call after the last turn is refused) and the end of a run whose
//! model call failed for good (the budget, an outage after the retries):
//! such a call is answered with an error naming the reason — the agent
//! shows it — every later call gets the same error without reaching the
//! provider, and [`Proxy::stopped`] fires so the worker can end the run.
//!
//! The agent gets a dummy API key; the real one stays in orch's provider.

pub mod chat_completions;
pub mod messages;
pub mod responses;

use crate::AgentEvent;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use orch_core::Usage;
use orch_providers::{ChatRequest, ChatResponse, Message, Provider, ProviderError, Role};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// The dummy API key agents are given; any key is accepted.
pub const DUMMY_API_KEY: &str = "orch-proxy-dummy-key";
/// Largest request body accepted (agents resend the whole conversation).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What one run's proxy answers with.
pub struct ProxyConfig {
    /// The metered provider of the attempt.
    pub provider: Arc<dyn Provider>,
    /// The worker model, as the provider knows it.
    pub model: String,
    /// Most model calls.
    pub max_turns: u32,
}

/// Why the proxy stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// `max_turns` calls were made.
    TurnLimit,
    /// The provider refused or failed for good; its message (a budget
    /// refusal starts with the metered provider's marker).
    Model(String),
}

/// What the proxy saw, at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Model calls made (answered or failed), not counting refused ones.
    pub turns: u32,
    /// Summed over the answered calls, as metered.
    pub usage: Usage,
    /// The longest conversation sent (the agent's main thread), with its
    /// answer appended.
    pub transcript: Vec<Message>,
    /// The last answer's text.
    pub last_text: Option<String>,
    pub fatal: Option<Fatal>,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub(crate) struct State {
    config: ProxyConfig,
    tally: Mutex<Tally>,
    events: UnboundedSender<AgentEvent>,
    stopped: CancellationToken,
    ids: AtomicU64,
}

impl Proxy {
    /// Serves `config` on a new unix socket at `socket`; live model-call
    /// events go to `events`.
    pub fn start(
        socket: &Path,
        config: ProxyConfig,
        events: UnboundedSender<AgentEvent>,
    ) -> std::io::Result<Proxy> {
        let listener = tokio::net::UnixListener::bind(socket)?;
        let state = Arc::new(State {
            config,
            tally: Mutex::new(Tally::default()),
            events,
            stopped: CancellationToken::new(),
            ids: AtomicU64::new(0),
        });
        let app = router(state.clone());
        let server = tokio::spawn(serve(listener, app));
        Ok(Proxy {
            state,
            server,
            socket: socket.to_path_buf(),
        })
    }

    /// Fires when a call failed for good or the turn limit was reached.
    pub fn stopped(&self) -> CancellationToken {
        self.state.stopped.clone()
    }

    /// What was seen so far.
    pub fn tally(&self) -> Tally {
        self.state.tally().clone()
    }
}

/// Accepts connections until aborted, one HTTP/1 connection task each;
/// aborting it drops the connections and any model call in flight.
async fn serve(listener: tokio::net::UnixListener, app: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

fn router(state: Arc<State>) -> Router {
    let mut app = Router::new();
    for prefix in ["/v1", ""] {
        app = app
            .route(
                &format!("{prefix}/chat/completions"),
                post(chat_completions::handle),
            )
            .route(&format!("{prefix}/responses"), post(responses::handle))
            .route(&format!("{prefix}/messages"), post(messages::handle))
            .route(
                &format!("{prefix}/messages/count_tokens"),
                post(messages::count_tokens),
            )
            .route(&format!("{prefix}/models"), get(models));
    }
    app.fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn models(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let model = &state.config.model;
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "owned_by": "orch", "type": "model",
                  "display_name": model, "created_at": "1970-01-01T00:00:00Z"}],
        "has_more": false,
    }))
    .into_response()
}

async fn unknown_route(uri: axum::http::Uri) -> Response {
    ProxyError::bad_request(format!(
        "orch's model proxy does not serve {}; it answers POST /v1/chat/completions, \
         /v1/responses and /v1/messages",
        uri.path()
    ))
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

/// A call the proxy did not answer with a model reply.
#[derive(Debug, Clone)]
pub(crate) struct ProxyError {
    pub status: StatusCode,
    pub message: String,
}

impl ProxyError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ProxyError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The Anthropic/OpenAI error type for the status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            _ => "api_error",
        }
    }
}

impl IntoResponse for ProxyError {
    /// The shape both OpenAI's and Anthropic's clients read:
    /// `{"type": "error", "error": {"type", "message"}}`.
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "error",
            "error": {"type": self.kind(), "code": self.kind(), "message": self.message},
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl State {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh id for answers (`<prefix>_orch_<n>`).
    pub(crate) fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}_orch_{}",
            self.ids.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Answers one call through the metered provider, enforcing the turn
    /// limit and the end of a failed run; records turns, usage and the
    /// conversation.
    pub(crate) async fn complete(
        &self,
        mut request: ChatRequest,
    ) -> Result<ChatResponse, ProxyError> {
        let turn = self.claim_turn()?;
        request.model = self.config.model.clone();
        redact_request(&mut request);
        let result = self.config.provider.chat(&request).await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e)),
        };
        response.message.role = Role::Assistant;
        response.message.tool_call_id = None;
        for (i, call) in response.message.tool_calls.iter_mut().enumerate() {
            if call.id.is_empty() {
                call.id = format!("call_orch_{turn}_{i}");
            }
        }
        self.record(turn, request.messages, &response);
        Ok(response)
    }

    /// The next turn's number, or the refusal when none is left.
    fn claim_turn(&self) -> Result<u32, ProxyError> {
        let mut tally = self.tally();
        if let Some(fatal) = &tally.fatal {
            return Err(refusal(fatal, self.config.max_turns));
        }
        if tally.turns >= self.config.max_turns {
            tally.fatal = Some(Fatal::TurnLimit);
            self.stopped.cancel();
            return Err(refusal(&Fatal::TurnLimit, self.config.max_turns));
        }
        tally.turns += 1;
        Ok(tally.turns)
    }

    /// A provider error: a budget refusal or a failure the retry policy
    /// already gave up on ends the run; the agent is told why.
    fn failed(&self, err: ProviderError) -> ProxyError {
        let message = err.to_string();
        let status = match &err {
            ProviderError::Budget(_) | ProviderError::Config(_) => StatusCode::BAD_REQUEST,
            ProviderError::Http { status, .. } if (400..500).contains(status) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        let mut tally = self.tally();
        if tally.fatal.is_none() {
            tally.fatal = Some(Fatal::Model(message.clone()));
        }
        self.stopped.cancel();
        ProxyError { status, message }
    }

    fn record(&self, turn: u32, mut messages: Vec<Message>, response: &ChatResponse) {
        let _ = self.events.send(AgentEvent::ModelCall {
            turn,
            usage: response.usage,
        });
        let mut tally = self.tally();
        tally.usage += response.usage;
        tally.last_text = Some(response.message.content.clone());
        if messages.len() + 1 >= tally.transcript.len() {
            messages.push(response.message.clone());
            tally.transcript = messages;
        }
    }
}

/// The error a refused call gets.
fn refusal(fatal: &Fatal, max_turns: u32) -> ProxyError {
    match fatal {
        Fatal::TurnLimit => ProxyError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "orch: the turn limit is reached ({max_turns} model calls, max_turns); stop now"
            ),
        },
        Fatal::Model(message) => ProxyError::bad_request(message.clone()),
    }
}

/// Secrets a file or a command printed never reach the model.
fn redact_request(request: &mut ChatRequest) {
    for m in &mut request.messages {
        if let std::borrow::Cow::Owned(clean) = orch_core::redact::redact(&m.content) {
            m.content = clean;
        }
        for call in &mut m.tool_calls {
            if let std::borrow::Cow::Owned(clean) = orch_core::redact::redact(&call.arguments) {
                call.arguments = clean;
            }
        }
    }
}

/// Reads a JSON body, with the reason when it is not one.
pub(crate) fn json_body(body: &bytes::Bytes) -> Result<serde_json::Value, ProxyError> {
    serde_json::from_slice(body)
        .map_err(|e| ProxyError::bad_request(format!("the request body is not JSON: {e}")))
}

/// A tool call's arguments as a JSON object (what Anthropic's `input`
/// wants); text that is not an object is passed on under `_raw`.
pub(crate) fn arguments_object(arguments: &str) -> serde_json::Value {
    if arguments.trim().is_empty() {
        return serde_json::json!({});
    }
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::json!({ "_raw": arguments }),
    }
}

/// A server-sent events body (`text/event-stream`).
pub(crate) fn sse(body: String) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Seconds since the epoch (the `created` of OpenAI answers).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Text of a content value that is a string or a list of parts with `text`.
pub(crate) fn text_of(content: Option<&serde_json::Value>) -> String {
    match content {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                serde_json::Value::String(s) => Some(s.as_str()),
                other => other.get("text").and_then(serde_json::Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An OpenAI-style `tool_choice` (`"auto"`, `"required"`, `"none"`, or an
/// object naming one tool at `name_at`, a JSON pointer): `"none"` drops the
/// tools, since orch's request has no way to offer tools and forbid them.
pub(crate) fn tool_choice(
    choice: Option<&serde_json::Value>,
    name_at: &str,
    tools: &mut Vec<orch_providers::ToolSpec>,
) -> Option<orch_providers::ToolChoice> {
    use orch_providers::ToolChoice;
    use serde_json::Value;
    match choice {
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Required),
        Some(Value::String(s)) if s == "none" => {
            tools.clear();
            None
        }
        Some(obj @ Value::Object(_)) => obj
            .pointer(name_at)
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_string())),
        _ if tools.is_empty() => None,
        _ => Some(ToolChoice::Auto),
    }
}
