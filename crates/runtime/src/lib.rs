//! The composition root: from a loaded config, the store, the providers,
//! each project's sandbox and engine, and the signal handling that turns
//! SIGTERM and Ctrl-C into a graceful [`Shutdown`]. `orch run`, `orch
//! serve` and the commands that need a sandbox (`doctor`, `sandbox`) build
//! through here, so they all see a project the same way.

pub mod new_project;

use orch_config::{Config, ProjectConfig};
use orch_engine::{DataPaths, Engine, ProviderRegistry, Shutdown};
use orch_sandbox::docker::{DockerOptions, DEFAULT_IMAGE};
use orch_sandbox::{Sandbox, SandboxOptions};
use orch_state::StateStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why something could not be built. `Usage` is the caller's to fix (a
/// name, a setting: exit code 2); `Failed` is the machine's or the
/// repository's (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<orch_engine::EngineError> for RuntimeError {
    fn from(e: orch_engine::EngineError) -> Self {
        match e {
            orch_engine::EngineError::Config(m) => RuntimeError::Usage(m),
            other => RuntimeError::Failed(other.to_string()),
        }
    }
}

impl From<orch_state::StateError> for RuntimeError {
    fn from(e: orch_state::StateError) -> Self {
        RuntimeError::Failed(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// The project named `name`, or a usage error listing the configured ones.
pub fn project<'a>(config: &'a Config, name: &str) -> Result<&'a ProjectConfig> {
    config.project_or_hint(name).map_err(RuntimeError::Usage)
}

/// Opens the state database in the config's data_dir (creating it).
pub fn open_store(config: &Config) -> Result<Arc<dyn StateStore>> {
    let paths = DataPaths::new(config.data_dir_abs());
    paths.ensure().map_err(|e| {
        RuntimeError::Failed(format!(
            "cannot create data_dir {}: {e}",
            paths.root.display()
        ))
    })?;
    Ok(Arc::new(orch_state::Store::open(&paths.db())?))
}

/// Every configured provider; in a dry run every role answers from the
/// simulated provider.
pub fn providers(config: &Config) -> Result<ProviderRegistry> {
    Ok(ProviderRegistry::from_config(config, config.dry_run)?)
}

/// The sandbox settings of a project. Sandboxed commands never see orch's
/// secrets: the config file, the `.env` beside it and data_dir (in a dry
/// run also the real data_dir it sits in) are hidden.
pub fn sandbox_options(config: &Config, pc: &ProjectConfig) -> SandboxOptions {
    let source = std::path::absolute(&config.source).unwrap_or_else(|_| config.source.clone());
    let data_dir = config.data_dir_abs();
    let mut hidden = vec![source, config.base_dir.join(".env"), data_dir.clone()];
    if config.dry_run && data_dir.file_name().is_some_and(|n| n == "dry-run") {
        // A dry run's data_dir is `<real data_dir>/dry-run`.
        hidden.extend(data_dir.parent().map(Path::to_path_buf));
    }
    SandboxOptions {
        network: pc.network,
        limits: orch_sandbox::Limits {
            memory_bytes: Some(pc.memory_mb * 1024 * 1024),
            pids: Some(pc.pids_limit),
            cpus: pc.cpus,
        },
        hidden,
    }
}

/// The image a project runs: `docker.image`, else a per-project tag when it
/// builds its own Dockerfile, else the default image.
pub fn project_image(pc: &ProjectConfig) -> String {
    match (&pc.docker.image, &pc.docker.dockerfile) {
        (Some(image), _) => image.clone(),
        (None, Some(_)) => format!("orch-sandbox-{}:latest", pc.name.to_lowercase()),
        (None, None) => DEFAULT_IMAGE.to_string(),
    }
}

/// The Docker sandbox settings of a project (for `DockerSandbox::new`).
pub fn docker_options(config: &Config, pc: &ProjectConfig) -> DockerOptions {
    DockerOptions {
        image: project_image(pc),
        project: pc.name.clone(),
        volumes: pc
            .docker
            .volumes
            .iter()
            .map(|(name, path)| (name.clone(), path.clone()))
            .collect(),
        logs_path: pc.docker.logs_path.clone(),
        shared_data: pc
            .docker
            .shared_data
            .as_deref()
            .map(|p| (config.resolve_path(p), pc.docker.shared_data_path.clone())),
        user: None,
    }
}

/// The project's sandbox, checked, and what a person should know about the
/// choice (an `auto` fallback, no isolation).
pub async fn sandbox(
    config: &Config,
    pc: &ProjectConfig,
) -> Result<(Arc<dyn Sandbox>, Vec<String>)> {
    let selection = orch_sandbox::select(
        pc.sandbox.as_str(),
        sandbox_options(config, pc),
        docker_options(config, pc),
    )
    .await
    .map_err(|e| RuntimeError::Failed(e.to_string()))?;
    Ok((selection.sandbox, selection.notes))
}

/// A project's engine and the notes its construction produced.
pub struct ProjectRuntime {
    pub engine: Arc<Engine>,
    /// Sandbox notes for a person (printed as `sandbox: …`).
    pub notes: Vec<String>,
}

/// Builds the engine of `project`: providers, sandbox, git, store.
pub async fn engine(
    config: &Config,
    store: Arc<dyn StateStore>,
    project: &str,
) -> Result<ProjectRuntime> {
    let pc = self::project(config, project)?;
    let providers = providers(config)?;
    let (sandbox, notes) = sandbox(config, pc).await?;
    let engine = Engine::new(config, project, store, providers, sandbox).await?;
    Ok(ProjectRuntime { engine, notes })
}

/// Starts exporting OpenTelemetry traces of `projects`' events when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
/// set (None, and nothing started, otherwise). Keep the guard for the whole
/// run: dropping it exports what is left before it returns.
pub fn traces(
    config: &Config,
    store: &Arc<dyn StateStore>,
    projects: &[String],
) -> Option<orch_telemetry::traces::TraceGuard> {
    orch_telemetry::traces::start_for(store.clone(), config.trace_content, projects.to_vec())
}

/// The grace running attempts get on SIGTERM or Ctrl-C (`[server]
/// shutdown_grace_seconds`).
pub fn shutdown_grace(config: &Config) -> Duration {
    Duration::from_secs(config.server.shutdown_grace_seconds)
}

/// A signal [`on_signals`] acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalStep {
    /// The first SIGTERM or SIGINT: shutdown requested; the grace runs.
    Requested(&'static str),
    /// The second: running attempts are interrupted now.
    Forced(&'static str),
    /// The third: orch exits at once (the next start recovers).
    Exiting(&'static str),
}

/// Turns SIGTERM and SIGINT (Ctrl-C) into `shutdown`: the first requests
/// it, the second forces it, the third exits with status 130. `tell` hears
/// of each step (to print it). The handler lives until the process ends.
pub fn on_signals(
    shutdown: Shutdown,
    tell: impl Fn(SignalStep) + Send + Sync + 'static,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| RuntimeError::Failed(format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            seen += 1;
            match seen {
                1 => {
                    tell(SignalStep::Requested(name));
                    shutdown.request();
                }
                2 => {
                    tell(SignalStep::Forced(name));
                    shutdown.force();
                }
                _ => {
                    tell(SignalStep::Exiting(name));
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config() -> Config {
        let mut c = Config {
            source: "/etc/orch/orch.toml".into(),
            base_dir: "/etc/orch".into(),
            data_dir: "/var/lib/orch".into(),
            ..Default::default()
        };
        c.projects.push(ProjectConfig::new(
            "app",
            "/src/app",
            orch_config::ModelRef::new("p", "m"),
        ));
        c
    }

    #[test]
    fn an_unknown_project_is_a_usage_error_naming_the_known_ones() {
        let c = config();
        assert!(project(&c, "app").is_ok());
        let err = project(&c, "nope").err().unwrap();
        assert!(
            matches!(&err, RuntimeError::Usage(m) if m.contains("`nope`") && m.contains("app"))
        );
    }

    #[test]
    fn the_sandbox_hides_the_config_the_env_file_and_data_dir() {
        let c = config();
        let opts = sandbox_options(&c, &c.projects[0]);
        for p in ["/etc/orch/orch.toml", "/etc/orch/.env", "/var/lib/orch"] {
            assert!(
                opts.hidden.iter().any(|h| h == Path::new(p)),
                "{p} not hidden: {:?}",
                opts.hidden
            );
        }
        assert_eq!(
            opts.limits.memory_bytes,
            Some(c.projects[0].memory_mb * 1024 * 1024)
        );
        assert_eq!(docker_options(&c, &c.projects[0]).image, DEFAULT_IMAGE);
        assert_eq!(shutdown_grace(&c), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn sigterm_requests_the_shutdown_and_a_second_forces_it() {
        let shutdown = Shutdown::new(Duration::from_secs(3600));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        on_signals(shutdown.clone(), move |s| {
            let _ = tx.send(s);
        })
        .unwrap();
        // SAFETY: raise(3) sends the signal to this test process, whose
        // handler was installed above (tokio keeps it installed).
        unsafe { libc_raise(15) };
        assert_eq!(rx.recv().await, Some(SignalStep::Requested("SIGTERM")));
        assert!(shutdown.is_requested() && !shutdown.is_forced());
        unsafe { libc_raise(15) };
        assert_eq!(rx.recv().await, Some(SignalStep::Forced("SIGTERM")));
        assert!(shutdown.is_forced());
    }

    extern "C" {
        #[link_name = "raise"]
        fn libc_raise(sig: i32) -> i32;
    }
}
