//! Serves the HTTP API on a config's store with no scheduler behind it, for
//! fuzzing the API against its OpenAPI document (CI runs schemathesis on
//! it) and for trying the routes by hand:
//!
//! ```sh
//! cargo run -p orch-server --example serve_fixture -- --config orch.toml --listen 127.0.0.1:7788
//! ```
//!
//! `POST …/run` answers `started: false`: there is no daemon to start work.
//! The token, if any, comes from `[server] token_env` as in `orch serve`.

use orch_server::{Control, RunStarted, ServerOptions};
use std::path::PathBuf;
use std::sync::Arc;

struct NoScheduler;

#[async_trait::async_trait]
impl Control for NoScheduler {
    async fn run_now(&self, project: &str) -> Result<RunStarted, String> {
        Ok(RunStarted {
            started: false,
            detail: format!("the fixture server has no scheduler; nothing started for {project}"),
        })
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let config_path = PathBuf::from(arg(&args, "--config").unwrap_or_else(|| "orch.toml".into()));
    let config = orch_config::load(&config_path).map_err(|e| e.to_string())?;
    let opts = ServerOptions::from_config(&config, arg(&args, "--listen").as_deref())
        .map_err(|e| e.to_string())?;
    let store = orch_state::Store::open(&config.data_dir_abs().join("orch.db"))
        .map_err(|e| e.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    println!("serving on http://{}", opts.listen);
    orch_server::serve(
        opts,
        Arc::new(config),
        Arc::new(store),
        Arc::new(NoScheduler),
        shutdown,
    )
    .await
    .map_err(|e| e.to_string())
}
