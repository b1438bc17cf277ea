//! orch's HTTP API: the routes `orch serve` answers on, their OpenAPI 3
//! document, bearer-token auth and the JSON error shape.
//!
//! The daemon (crates/service) owns scheduling; it hands this crate a
//! [`Control`] for the one thing the API cannot do through the store alone:
//! start work now. Everything else reads or writes the [`Store`] directly,
//! with the same compare-and-set operations the CLI uses, so a request the
//! store refuses writes nothing.

pub mod auth;
mod dashboard;
pub mod error;
mod metrics;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use orch_config::Config;
use orch_state::StateStore;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What `POST /api/v1/projects/{project}/run` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunStarted {
    /// True when a run was started by this request; false when one was
    /// already in progress (nothing is started twice).
    pub started: bool,
    /// What happened, in words.
    pub detail: String,
}

/// The daemon's side of the API.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    /// Start work on `project` now (the design notes' `/run/next`).
    /// `Err(message)` for unknown projects and the like.
    async fn run_now(&self, project: &str) -> Result<RunStarted, String>;
}

/// How the server listens. (`Debug` does not show the token.)
#[derive(Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` and `/openapi.json`
    /// must carry; None means no auth, which is allowed on loopback only.
    pub token: Option<String>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {addr} without a token: only loopback addresses (127.0.0.1, ::1) may serve the API unauthenticated. Set `[server] token_env` to the name of an environment variable holding a token, or listen on 127.0.0.1"
    )]
    NoTokenOffLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}. Is another process using the port? Pick another with --listen or `[server] listen`")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("no address to listen on: give one with `orch serve --listen 127.0.0.1:7777` or `[server] listen`")]
    NoListen,
    #[error("`{text}` is not an address to listen on: expected IP:PORT, e.g. 127.0.0.1:7777 or [::1]:7777")]
    BadListen { text: String },
    #[error("`[server] token_env` names the variable `{var}`, but it is not set (or empty): export {var}=<a long random token> (or put it in the .env beside the config), or remove token_env to serve on loopback without auth")]
    TokenUnset { var: String },
}

impl ServerOptions {
    /// The options `[server]` gives, `listen` overriding `[server] listen`
    /// (as `orch serve --listen` does), the token read from the variable
    /// `token_env` names (the environment first, then the `.env` beside the
    /// config). Checks that the address may be served (see [`check_options`]).
    pub fn from_config(
        config: &Config,
        listen: Option<&str>,
    ) -> Result<ServerOptions, ServerError> {
        let text = listen
            .map(str::to_string)
            .or_else(|| config.server.listen.clone())
            .ok_or(ServerError::NoListen)?;
        let addr = parse_listen(&text)?;
        let token = match &config.server.token_env {
            None => None,
            Some(var) => {
                let value = std::env::var(var)
                    .ok()
                    .or_else(|| config.dotenv.get(var).cloned())
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty());
                match value {
                    Some(v) => {
                        // Never printed: not in logs, events or output.
                        orch_core::redact::register(&v);
                        Some(v)
                    }
                    None => return Err(ServerError::TokenUnset { var: var.clone() }),
                }
            }
        };
        let opts = ServerOptions {
            listen: addr,
            token,
            max_body_bytes: config.server.max_body_bytes,
        };
        check_options(&opts)?;
        Ok(opts)
    }
}

/// `127.0.0.1:7777`, `[::1]:7777` or `localhost:7777`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ServerError> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(ServerError::BadListen {
        text: text.to_string(),
    })
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) control: Arc<dyn Control>,
    /// SHA-256 of the expected bearer token; None = no auth (loopback only).
    pub(crate) token_digest: Option<[u8; 32]>,
    /// Ends the event streams, so a graceful shutdown does not wait on them.
    pub(crate) shutdown: CancellationToken,
}

/// Runs store work (short, synchronous SQLite transactions that may wait
/// on the busy timeout) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request handler failed: {e}")))?
}

/// The API's routes, ready to serve.
pub fn router(
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    control: Arc<dyn Control>,
    opts: &ServerOptions,
) -> axum::Router {
    build(config, store, control, opts, CancellationToken::new())
}

fn build(
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    control: Arc<dyn Control>,
    opts: &ServerOptions,
    shutdown: CancellationToken,
) -> axum::Router {
    let state = AppState {
        config,
        store,
        control,
        token_digest: opts.token.as_deref().map(auth::digest),
        shutdown,
    };
    let api = axum::Router::new()
        .route(
            "/api/v1/projects/:project/tasks",
            post(routes::add_task).get(routes::list_tasks),
        )
        .route("/api/v1/projects/:project/run", post(routes::run))
        .route("/api/v1/projects/:project/pause", post(routes::pause))
        .route("/api/v1/projects/:project/resume", post(routes::resume))
        .route("/api/v1/tasks/:id", get(routes::get_task))
        .route(
            "/api/v1/tasks/:id/attempts/:n/transcript",
            get(routes::transcript),
        )
        .route("/api/v1/tasks/:id/answer", post(routes::answer))
        .route("/api/v1/tasks/:id/cancel", post(routes::cancel))
        .route("/api/v1/tasks/:id/retry", post(routes::retry))
        .route("/api/v1/status", get(routes::status))
        .route("/api/v1/cost", get(routes::cost))
        .route("/api/v1/events", get(sse::events))
        // Prometheus' scrape target; not in the OpenAPI document.
        .route("/metrics", get(metrics::metrics))
        // Only matched routes: an unknown path is a 404, not a 401.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    axum::Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/openapi.json", get(openapi_json))
        .merge(api)
        // The web dashboard (`/`, `/tasks/…`): not in the OpenAPI document.
        .merge(dashboard::router(state.clone()))
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_method_not_allowed))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(state)
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::document())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route `{}`; the routes are listed in /openapi.json (the API lives under /api/v1)",
        uri.path()
    ))
}

/// axum answers a known path with the wrong method by an empty 405; give it
/// the API's error shape. (axum adds the `Allow` header after this runs.)
async fn json_method_not_allowed(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; the `Allow` header lists the ones it takes, and /openapi.json describes them",
    )
    .into_response()
}

/// Checks that `opts` may be served: without a token, only loopback.
pub fn check_options(opts: &ServerOptions) -> Result<(), ServerError> {
    if opts.token.is_none() && !opts.listen.ip().is_loopback() {
        return Err(ServerError::NoTokenOffLoopback { addr: opts.listen });
    }
    Ok(())
}

/// Binds `opts.listen` and serves the API until `shutdown` is cancelled;
/// then open event streams end and in-flight requests finish.
pub async fn serve(
    opts: ServerOptions,
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    control: Arc<dyn Control>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    check_options(&opts)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    serve_on(listener, opts, config, store, control, shutdown).await
}

/// Like [`serve`] on a listener the caller bound (tests bind port 0). The
/// listener's own address is what the loopback rule checks.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    control: Arc<dyn Control>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    check_options(&ServerOptions {
        listen: addr,
        ..opts.clone()
    })?;
    let app = build(config, store, control, &opts, shutdown.child_token());
    tracing::info!("HTTP API listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ServerError::Serve)
}
