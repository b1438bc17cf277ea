//! `orch serve`: one process for the whole portfolio. Each served project
//! has a runner that starts its engine on a trigger — once at startup (to
//! resume what a previous process left), on its `schedule`, when one of its
//! `watch` files changes (a plan file is imported first), or on the API's
//! `POST /api/v1/projects/{project}/run` — one run at a time. The engines
//! keep every worker slot busy while a run lasts and bring their own
//! patrol (stuck attempts) and lease heartbeat. On shutdown (SIGTERM or
//! Ctrl-C, see `orch_runtime::on_signals`) nothing new starts, running
//! attempts get the grace, and the process exits once every run ended.
//! With `[server] requirements_dir`, each new requirements file dropped
//! there becomes a project, as `orch new` makes one (see [`requirements`]).

pub mod requirements;
pub mod runner;
pub mod schedule;
pub mod watch;

use orch_config::Config;
use orch_core::{AttemptStatus, TaskStatus};
use orch_engine::{Engine, Shutdown};
use orch_protocol::{Payload, Stage};
use orch_server::{Control, RunStarted};
pub use orch_server::{ServerError, ServerOptions};
use orch_state::StateStore;
use runner::{Served, Trigger};
use schedule::Schedule;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where `orch serve` says what it does (one line each; the CLI prints to
/// stderr with a timestamp).
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What to serve.
pub struct ServiceOptions {
    /// The HTTP API, when it is to listen.
    pub api: Option<ServerOptions>,
}

/// Why `orch serve` could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A project's `schedule` or `watch` is wrong: nothing was started.
    #[error("project `{project}`: {message}")]
    Config { project: String, message: String },
    #[error(transparent)]
    Server(#[from] orch_server::ServerError),
}

/// The daemon's answer to `POST /api/v1/projects/{project}/run`.
pub struct ServiceControl {
    projects: BTreeMap<String, Arc<Served>>,
    shutdown: Shutdown,
}

#[async_trait::async_trait]
impl Control for ServiceControl {
    async fn run_now(&self, project: &str) -> Result<RunStarted, String> {
        let Some(p) = self.projects.get(project) else {
            let served: Vec<&str> = self.projects.keys().map(String::as_str).collect();
            return Err(format!(
                "project `{project}` is not served by this orch serve (it serves {}); restart it with `--project {project}` or without --project to serve every project",
                served.join(", ")
            ));
        };
        if self.shutdown.is_requested() {
            return Err(
                "orch serve is shutting down; nothing new starts. Start work after it restarts"
                    .into(),
            );
        }
        let running = p.is_running();
        p.trigger(Trigger::Api);
        Ok(if running {
            RunStarted {
                started: false,
                detail: format!("a run of {project} is in progress (it takes pending tasks as worker slots free); another run follows it"),
            }
        } else {
            RunStarted {
                started: true,
                detail: format!("run of {project} started"),
            }
        })
    }
}

/// Checks every project's schedule and watch globs; the first error stops
/// `orch serve` before anything starts.
pub fn check(config: &Config, projects: &[String]) -> Result<(), ServiceError> {
    for name in projects {
        let Some(pc) = config.project(name) else {
            continue;
        };
        let bad = |message: String| ServiceError::Config {
            project: name.clone(),
            message,
        };
        if let Some(s) = &pc.schedule {
            Schedule::parse(s).map_err(bad)?;
        }
        watch::WatchSpec::new(&config.project_path(pc), &pc.watch).map_err(bad)?;
    }
    Ok(())
}

/// Serves `engines` until `shutdown` is requested and every run ended.
pub async fn serve(
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    engines: Vec<Arc<Engine>>,
    opts: ServiceOptions,
    shutdown: Shutdown,
    log: Log,
) -> Result<(), ServiceError> {
    let names: Vec<String> = engines.iter().map(|e| e.project().name.clone()).collect();
    check(&config, &names)?;
    // Metrics follow the event bus from before the first run starts to the
    // end of this function (`GET /metrics` renders them).
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _metrics =
        orch_telemetry::metrics::Metrics::install().follow(store.clone(), metrics_stop.clone());
    let _stop_metrics = metrics_stop.drop_guard();
    let mut projects: BTreeMap<String, Arc<Served>> = BTreeMap::new();
    let mut runners = Vec::new();
    let mut helpers = Vec::new();
    for engine in engines {
        let pc = engine.project().clone();
        let repo = config.project_path(&pc);
        let (served, triggers) = Served::new(engine, repo.clone());
        let bad = |message: String| ServiceError::Config {
            project: pc.name.clone(),
            message,
        };
        let mut what = Vec::new();
        if let Some(s) = &pc.schedule {
            let schedule = Schedule::parse(s).map_err(bad)?;
            what.push(format!("on schedule {schedule}"));
            helpers.push(tokio::spawn(runner::scheduler(
                served.clone(),
                schedule,
                shutdown.clone(),
                log.clone(),
            )));
        }
        if !pc.watch.is_empty() {
            let spec = watch::WatchSpec::new(&repo, &pc.watch).map_err(bad)?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let fw = watch::FileWatch::start(spec, tx).map_err(bad)?;
            what.push(format!("when {} change(s)", pc.watch.join(", ")));
            helpers.push(tokio::spawn(runner::watcher(
                served.clone(),
                fw,
                rx,
                store.clone(),
                shutdown.clone(),
                log.clone(),
            )));
        }
        what.push("on API requests".into());
        log(&format!(
            "{}: serving {} ({}; max_workers = {}, stuck_after_seconds = {}, pause_after_failures = {})",
            pc.name,
            repo.display(),
            what.join(", "),
            pc.max_workers,
            pc.stuck_after_seconds,
            pc.pause_after_failures
        ));
        served.trigger(Trigger::Startup);
        runners.push(tokio::spawn(runner::runner(
            served.clone(),
            triggers,
            shutdown.clone(),
            log.clone(),
        )));
        projects.insert(pc.name.clone(), served);
    }
    // `[server] requirements_dir`: new files there become projects. Awaited
    // like a run, so the project being made gets the shutdown's grace.
    if let Some(dir) = &config.server.requirements_dir {
        runners.push(tokio::spawn(requirements::follow(
            config.clone(),
            store.clone(),
            config.resolve_path(dir),
            shutdown.clone(),
            log.clone(),
        )));
    }
    // Narration outlives the runs, so their shutdown is told too.
    let narrated = tokio_util::sync::CancellationToken::new();
    let narrator = tokio::spawn(narrate(
        store.clone(),
        projects.keys().cloned().collect(),
        narrated.clone(),
        log.clone(),
    ));

    let control = Arc::new(ServiceControl {
        projects: projects.clone(),
        shutdown: shutdown.clone(),
    });
    let mut server = None;
    // The API stays up through the grace (status and events keep flowing)
    // and closes once every run has ended.
    let api_stop = tokio_util::sync::CancellationToken::new();
    if let Some(api) = opts.api {
        // Bind now, so a taken port stops `orch serve` with a clear error.
        let listener = tokio::net::TcpListener::bind(api.listen)
            .await
            .map_err(|source| orch_server::ServerError::Bind {
                addr: api.listen,
                source,
            })
            .inspect_err(|_| shutdown.request())?;
        log(&format!("HTTP API on http://{}", api.listen));
        server = Some(tokio::spawn(orch_server::serve_on(
            listener,
            api,
            config.clone(),
            store.clone(),
            control,
            api_stop.clone(),
        )));
    }

    let mut result = Ok(());
    match server.as_mut() {
        Some(handle) => {
            tokio::select! {
                _ = shutdown.requested() => {}
                ended = handle => {
                    // The server stopped on its own: that is an error.
                    shutdown.request();
                    if let Ok(Err(e)) = ended {
                        result = Err(ServiceError::Server(e));
                    }
                    server = None;
                }
            }
        }
        None => shutdown.requested().await,
    }
    for r in runners {
        let _ = r.await;
    }
    for h in helpers {
        h.abort();
        let _ = h.await;
    }
    narrated.cancel();
    let _ = narrator.await;
    api_stop.cancel();
    if let Some(handle) = server {
        // Open event streams end with the shutdown; do not wait for ever.
        if tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .is_err()
        {
            log("HTTP API: connections still open after 5 s; closing");
        }
    }
    log("orch serve stopped");
    result
}

/// Logs what matters of the served projects' events: merges, failures,
/// pauses, interruptions, questions, shutdown and patrol notes. Until
/// `done`, then what is left in the queue.
async fn narrate(
    store: Arc<dyn StateStore>,
    projects: Vec<String>,
    done: tokio_util::sync::CancellationToken,
    log: Log,
) {
    let Ok(mut rx) = store.subscribe() else {
        return;
    };
    loop {
        let ev = tokio::select! {
            _ = done.cancelled() => {
                while let Ok(ev) = rx.try_recv() {
                    tell(&ev, &projects, &log);
                }
                return;
            }
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(ev) => tell(&ev, &projects, &log),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

fn tell(ev: &orch_protocol::Event, projects: &[String], log: &Log) {
    if !projects.contains(&ev.project) {
        return;
    }
    let worth = match &ev.payload {
        Payload::Merged(_)
        | Payload::ProjectPaused(_)
        | Payload::ProjectResumed(_)
        | Payload::AttemptInterrupted(_)
        | Payload::HumanAsked(_)
        | Payload::PlanCreated(_)
        | Payload::PatrolInterrupted(_)
        | Payload::Shutdown(_)
        | Payload::LeaseHeld(_)
        | Payload::Recovered(_) => true,
        Payload::AttemptFinished(a) => a.status == AttemptStatus::Interrupted,
        Payload::StatusChanged(c) => c.to == TaskStatus::Failed,
        Payload::Warning(w) => matches!(
            w.stage,
            Some(Stage::Patrol | Stage::Shutdown | Stage::Recovery | Stage::PlanImport)
        ),
        _ => false,
    };
    if worth {
        let task = ev
            .task_id
            .as_deref()
            .map(|t| format!(" [{t}]"))
            .unwrap_or_default();
        log(&format!("{}{task}: {}", ev.project, ev.message));
    }
}
