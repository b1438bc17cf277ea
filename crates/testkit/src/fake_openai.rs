//! A fake OpenAI-compatible server on loopback, answering from a replay
//! script.
//!
//! It runs axum on its own thread with its own tokio runtime, so it works
//! the same from a plain `#[test]` and from inside `#[tokio::test]`, and it
//! stops when dropped. It records every request body exactly as received so
//! tests can assert on the real wire JSON.

use crate::wire::{chat_request_from_wire, chat_response_to_wire, error_body};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orch_providers::replay::{to_chat_response, Script, ScriptCursor};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Request bodies larger than this get a 413, like a real server's limit.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

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

    let request = match chat_request_from_wire(&raw) {
        Ok(r) => r,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, &e, "invalid_request_error", None)
        }
    };
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
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(chat_response_to_wire(
        &reply,
        &format!("chatcmpl-fake-{n}"),
        created,
    ))
    .into_response()
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
