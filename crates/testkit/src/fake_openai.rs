//! A fake OpenAI-compatible server on loopback, answering from a replay
//! script.
//!
//! It runs axum on its own thread with its own tokio runtime, so it works
//! the same from a plain `#[test]` and from inside `#[tokio::test]`, and it
//! stops when dropped. It records every request body exactly as received so
//! tests can assert on the real wire JSON.
//!
//! Requests with `"stream": true` get the scripted reply as server-sent
//! events, the content and tool-call arguments split into small pieces
//! ([`FakeOpenAi::set_stream_chunk_chars`]), with a usage event when the
//! client asks for `stream_options.include_usage`.
//!
//! Fault injection: [`FakeOpenAi::push_faults`] queues [`Fault`]s that the
//! next requests get instead of their reply, one each, in arrival order
//! (HTTP errors with or without `Retry-After`, a stream cut off mid-way, a
//! dropped connection). A faulted request does not use up a script entry,
//! so the retry gets the reply the script meant for it. [`Fault::mixed`]
//! makes a reproducible mix for soak-style tests.
//!
//! Strict messages ([`FakeOpenAi::set_strict_messages`]): the server then
//! checks the conversation as llama-cpp-python's server does and answers
//! what it answers, HTTP 500 with its pydantic-style message, to an
//! assistant message whose `content` is missing or not a string (a `null`
//! next to tool calls) and to a tool message without `tool_call_id`
//! ([`llama_cpp_python_rejection`]).

use crate::wire::{
    chat_request_from_wire, chat_response_to_sse, chat_response_to_wire, error_body,
};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use orch_core::Usage;
use orch_providers::replay::{to_chat_response, Script, ScriptCursor};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Request bodies larger than this get a 413, like a real server's limit.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Characters of content or arguments per stream event, by default.
const DEFAULT_STREAM_CHUNK_CHARS: usize = 8;

/// What a cut or dropped reply gets through before it breaks off.
const PARTIAL_TEXT: &str = "This reply is cut off befo";

/// A failure the server injects instead of a request's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an OpenAI-style error body;
    /// `retry_after_s` is sent as `Retry-After`.
    Http {
        status: u16,
        message: String,
        retry_after_s: Option<u64>,
    },
    /// A streamed request gets the start of a reply, then the body ends
    /// cleanly with no finish reason and no `[DONE]`. A plain request gets
    /// half a JSON body and a dropped connection.
    CutStream,
    /// The start of the reply, then the connection is aborted (a network
    /// failure mid-body), streamed or not.
    DropConnection,
}

impl Fault {
    /// 429 rate limited, optionally with `Retry-After: retry_after_s`.
    pub fn http_429(retry_after_s: Option<u64>) -> Fault {
        Fault::Http {
            status: 429,
            message: "Rate limit reached for requests. Please try again later.".into(),
            retry_after_s,
        }
    }

    /// 500 with OpenAI's wording.
    pub fn http_500() -> Fault {
        Fault::Http {
            status: 500,
            message: "The server had an error while processing your request. Sorry about that!"
                .into(),
            retry_after_s: None,
        }
    }

    /// Any status with the provider's message.
    pub fn http(status: u16, message: &str) -> Fault {
        Fault::Http {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// `requests` entries, about `share` of them faults (429 with a
    /// `Retry-After` of 1-5 s, 500, a cut stream or a dropped connection,
    /// in turn) and the rest `None` (answer normally), never more than
    /// `max_in_a_row` faults in a row so a retry policy with more tries
    /// than that always gets through. The same `seed` gives the same list.
    pub fn mixed(
        seed: u64,
        requests: usize,
        share: f64,
        max_in_a_row: usize,
    ) -> Vec<Option<Fault>> {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: reproducible without a dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut in_a_row = 0;
        let mut kind = 0u64;
        (0..requests)
            .map(|_| {
                let roll = (next() >> 11) as f64 / (1u64 << 53) as f64;
                if roll >= share || in_a_row >= max_in_a_row {
                    in_a_row = 0;
                    return None;
                }
                in_a_row += 1;
                kind += 1;
                Some(match kind % 4 {
                    0 => Fault::http_429(Some(1 + next() % 5)),
                    1 => Fault::http_500(),
                    2 => Fault::CutStream,
                    _ => Fault::DropConnection,
                })
            })
            .collect()
    }
}

/// A running fake server; dropping it stops the server.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    cursor: ScriptCursor,
    /// Distinct `model` names of the script, for `GET /v1/models`.
    models: Vec<String>,
    requests: Mutex<Vec<Value>>,
    api_key: Mutex<Option<String>>,
    completions: AtomicU64,
    /// Faults for the next requests, one each (`None` = answer normally).
    faults: Mutex<VecDeque<Option<Fault>>>,
    /// What each chat request got: the fault injected, or `None`.
    fault_log: Mutex<Vec<Option<Fault>>>,
    /// Usage of every reply sent whole.
    served_usage: Mutex<Usage>,
    stream_chunk_chars: AtomicUsize,
    /// Pause between stream events, in microseconds.
    stream_event_delay_us: AtomicU64,
    /// Check messages as llama-cpp-python does.
    strict_messages: AtomicBool,
}

/// Test data stays usable after a panicking test thread poisoned a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeOpenAi {
    /// Start serving `script` on `127.0.0.1:<free port>`.
    ///
    /// Panics if the server cannot start (no loopback, no threads): this is
    /// test support, and a test cannot go on without it. Use
    /// [`FakeOpenAi::try_start`] to handle that case.
    pub fn start(script: Script) -> FakeOpenAi {
        match FakeOpenAi::try_start(script) {
            Ok(server) => server,
            Err(e) => panic!("cannot start the fake OpenAI server on 127.0.0.1: {e}"),
        }
    }

    /// Like [`FakeOpenAi::start`], returning the error instead of panicking.
    pub fn try_start(script: Script) -> std::io::Result<FakeOpenAi> {
        let mut models: Vec<String> = Vec::new();
        for m in script.responses.iter().filter_map(|r| r.model.clone()) {
            if !models.contains(&m) {
                models.push(m);
            }
        }
        let shared = Arc::new(Shared {
            cursor: ScriptCursor::new(script),
            models,
            requests: Mutex::new(Vec::new()),
            api_key: Mutex::new(None),
            completions: AtomicU64::new(0),
            faults: Mutex::new(VecDeque::new()),
            fault_log: Mutex::new(Vec::new()),
            served_usage: Mutex::new(Usage::default()),
            stream_chunk_chars: AtomicUsize::new(DEFAULT_STREAM_CHUNK_CHARS),
            stream_event_delay_us: AtomicU64::new(0),
            strict_messages: AtomicBool::new(false),
        });

        // Bind here so the port is known (and taken) before `start` returns.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fake-openai-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let server = async move { axum::serve(listener, app).await };
                    tokio::select! {
                        result = server => {
                            if let Err(e) = result {
                                eprintln!("fake OpenAI server on {addr} stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime here cancels open connections, so a
                // client holding a keep-alive socket cannot block shutdown.
                drop(runtime);
            })?;
        Ok(FakeOpenAi {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The API root to configure a client with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every chat-completion request body received, in order, as sent.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// Require `Authorization: Bearer <key>`; other requests get a 401.
    pub fn set_api_key(&self, key: &str) {
        *lock(&self.shared.api_key) = Some(key.to_string());
    }

    /// Script entries that still have uses left (unlimited ones count).
    pub fn remaining(&self) -> usize {
        self.shared.cursor.remaining()
    }

    /// The next chat requests get these faults, one each, in arrival
    /// order (queued after any already pending).
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.faults).extend(faults.into_iter().map(Some));
    }

    /// Like [`FakeOpenAi::push_faults`] with gaps: `None` entries answer
    /// normally (the shape [`Fault::mixed`] returns).
    pub fn push_fault_plan(&self, plan: impl IntoIterator<Item = Option<Fault>>) {
        lock(&self.shared.faults).extend(plan);
    }

    /// Faults queued and not yet served.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    /// For every chat request so far, in order: the fault it got, or
    /// `None` when it was answered from the script.
    pub fn fault_log(&self) -> Vec<Option<Fault>> {
        lock(&self.shared.fault_log).clone()
    }

    /// Replies sent whole (streamed or not), and their usage summed: what
    /// a real provider would bill.
    pub fn served(&self) -> (u64, Usage) {
        (
            self.shared.completions.load(Ordering::Relaxed),
            *lock(&self.shared.served_usage),
        )
    }

    /// Characters of content or tool arguments per stream event (default 8).
    pub fn set_stream_chunk_chars(&self, n: usize) {
        self.shared
            .stream_chunk_chars
            .store(n.max(1), Ordering::Relaxed);
    }

    /// Check every conversation as llama-cpp-python's server does, and
    /// answer what it answers (HTTP 500) when a message does not pass: see
    /// [`llama_cpp_python_rejection`]. A rejected request uses up no
    /// script entry and no fault.
    pub fn set_strict_messages(&self, on: bool) {
        self.shared.strict_messages.store(on, Ordering::Relaxed);
    }

    /// Pause between stream events, so they leave in separate TCP writes.
    pub fn set_stream_event_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .stream_event_delay_us
            .store(us, Ordering::Relaxed);
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (status, Json(error_body(message, kind, code))).into_response()
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request: {e}"),
                "invalid_request_error",
                None,
            )
        }
    };
    lock(&shared.requests).push(raw.clone());

    let expected = lock(&shared.api_key).clone();
    if let Some(key) = expected {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            // Echo what was sent, as some servers do, so tests can check that
            // the client keeps the key out of its errors.
            let message = match sent {
                Some(s) => format!("Incorrect API key provided: {s}."),
                None => "You didn't provide an API key.".to_string(),
            };
            return error_response(
                StatusCode::UNAUTHORIZED,
                &message,
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
    }

    if shared.strict_messages.load(Ordering::Relaxed) {
        if let Some(message) = llama_cpp_python_rejection(&raw) {
            // llama-cpp-python's own envelope for an unhandled exception.
            let body = json!({"error": {
                "message": message, "type": "internal_server_error", "param": null, "code": null
            }});
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
    }

    let request = match chat_request_from_wire(&raw) {
        Ok(r) => r,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, &e, "invalid_request_error", None)
        }
    };
    let stream = raw.get("stream").and_then(Value::as_bool) == Some(true);
    let fault = lock(&shared.faults).pop_front().flatten();
    lock(&shared.fault_log).push(fault.clone());
    if let Some(fault) = fault {
        return fault_response(&shared, fault, stream, &request.model);
    }
    let entry = match shared.cursor.next(&request) {
        Ok(entry) => entry,
        Err(e) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e, "server_error", None)
        }
    };
    if let Some(ms) = entry.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = entry.http_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = entry
            .error_message
            .clone()
            .unwrap_or_else(|| format!("scripted HTTP error {}", status.as_u16()));
        return error_response(status, &message, "server_error", None);
    }
    let reply = to_chat_response(&entry, &request);
    let n = shared.completions.fetch_add(1, Ordering::Relaxed) + 1;
    *lock(&shared.served_usage) += reply.usage;
    let id = format!("chatcmpl-fake-{n}");
    if stream {
        let include_usage = raw.pointer("/stream_options/include_usage") == Some(&json!(true));
        let events = chat_response_to_sse(
            &reply,
            &id,
            unix_now(),
            shared.stream_chunk_chars.load(Ordering::Relaxed),
            include_usage,
        );
        return sse_response(&shared, events, false);
    }
    Json(chat_response_to_wire(&reply, &id, unix_now())).into_response()
}

/// What llama-cpp-python 0.3's server answers (as the error message of an
/// HTTP 500) to a chat request whose messages it cannot take, or `None`
/// when it takes them. Measured on its server: an assistant message whose
/// `content` is `null` (or not a string) fails pydantic validation, one
/// without `content` fails in the chat template (`KeyError: 'content'`),
/// and a tool message needs `tool_call_id`. Only the first bad message is
/// reported, in the wording the real server uses.
pub fn llama_cpp_python_rejection(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content");
        match role {
            "assistant" => match content {
                None => return Some("'content'".to_string()),
                Some(Value::String(_)) => {}
                Some(other) => {
                    let input = python_repr(other);
                    return Some(format!(
                        "1 validation error:\n  {{'type': 'string_type', 'loc': ('body', 'messages', {i}, \
                         'ChatCompletionRequestAssistantMessage', 'content'), \
                         'msg': 'Input should be a valid string', 'input': {input}}}"
                    ));
                }
            },
            "tool" if !m.get("tool_call_id").is_some_and(Value::is_string) => {
                return Some(format!(
                    "1 validation error:\n  {{'type': 'missing', 'loc': ('body', 'messages', {i}, \
                     'ChatCompletionRequestToolMessage', 'tool_call_id'), 'msg': 'Field required'}}"
                ));
            }
            _ => {}
        }
    }
    None
}

/// Python's spelling of a JSON scalar, as pydantic quotes inputs.
fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response for an injected fault.
fn fault_response(shared: &Shared, fault: Fault, stream: bool, model: &str) -> Response {
    match fault {
        Fault::Http {
            status,
            message,
            retry_after_s,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limit_exceeded"
            } else if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            };
            let mut response = error_response(status, &message, kind, None);
            if let Some(secs) = retry_after_s {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            }
            response
        }
        Fault::CutStream | Fault::DropConnection if stream => {
            let partial = partial_reply(model);
            let mut events = chat_response_to_sse(
                &partial,
                "chatcmpl-fake-cut",
                unix_now(),
                shared.stream_chunk_chars.load(Ordering::Relaxed),
                false,
            );
            // Keep the role event and the text; drop the finish reason and [DONE].
            events.truncate(events.len().saturating_sub(2));
            sse_response(shared, events, fault == Fault::DropConnection)
        }
        Fault::CutStream | Fault::DropConnection => {
            let whole =
                chat_response_to_wire(&partial_reply(model), "chatcmpl-fake-cut", unix_now())
                    .to_string();
            let half = whole[..whole.len() / 2].to_string();
            let items: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from(half)),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "fault injected: connection dropped mid-body",
                )),
            ];
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(paced_body(items, Duration::ZERO))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// The reply a cut stream was in the middle of.
fn partial_reply(model: &str) -> orch_providers::ChatResponse {
    orch_providers::ChatResponse {
        message: orch_providers::Message::assistant(PARTIAL_TEXT),
        usage: Usage::default(),
        finish_reason: "stop".into(),
        model: model.to_string(),
    }
}

/// A `text/event-stream` response of `events`; with `abort` the
/// connection is aborted after the last one instead of ending cleanly.
fn sse_response(shared: &Shared, events: Vec<String>, abort: bool) -> Response {
    let mut items: Vec<Result<Bytes, std::io::Error>> =
        events.into_iter().map(|e| Ok(Bytes::from(e))).collect();
    if abort {
        items.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault injected: connection dropped mid-stream",
        )));
    }
    let delay = Duration::from_micros(shared.stream_event_delay_us.load(Ordering::Relaxed));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(paced_body(items, delay))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A body that sends `items` with `delay` before each. Before an error
/// (which aborts the connection) it always pauses, so hyper flushes what
/// came before: the client sees a reply break off, not a refused request.
fn paced_body(items: Vec<Result<Bytes, std::io::Error>>, delay: Duration) -> Body {
    let stream = futures_util::stream::iter(items).then(move |item| async move {
        let pause = if item.is_err() {
            delay.max(Duration::from_millis(5))
        } else {
            delay
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        item
    });
    Body::from_stream(stream)
}

async fn list_models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let data: Vec<Value> = shared
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "orch-testkit"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn not_found(uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({uri}); the fake server serves /v1/chat/completions and /v1/models"),
        "invalid_request_error",
        None,
    )
}
