//! One project under `orch serve`: a runner that starts the engine when a
//! trigger arrives (startup, schedule, file change, the API), one run at a
//! time, and the tasks that produce those triggers.

use crate::schedule::Schedule;
use crate::watch::FileWatch;
use crate::Log;
use chrono::Utc;
use orch_core::TaskStatus;
use orch_engine::{Engine, EngineError, RunOptions, Shutdown};
use orch_protocol::{Event, Stage};
use orch_state::StateStore;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Cycles one triggered run may take before it waits for the next trigger
/// (a run ends earlier once nothing is pending or waiting to merge).
pub const RUN_CYCLES: u32 = 10;

/// Why a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `orch serve` started: resume whatever a previous process left.
    Startup,
    Schedule(String),
    /// Watched files changed (paths relative to the repository).
    Files(Vec<String>),
    /// `POST /api/v1/projects/{project}/run`.
    Api,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Startup => f.write_str("startup"),
            Trigger::Schedule(s) => write!(f, "schedule {s}"),
            Trigger::Files(files) => write!(f, "changed: {}", files.join(", ")),
            Trigger::Api => f.write_str("API request"),
        }
    }
}

/// A served project: its engine and whether a run is under way.
pub struct Served {
    pub name: String,
    pub engine: Arc<Engine>,
    pub repo: PathBuf,
    triggers: mpsc::UnboundedSender<Trigger>,
    running: AtomicBool,
    /// A trigger is waiting for the runner (not yet taken).
    queued: AtomicBool,
}

impl Served {
    pub fn new(
        engine: Arc<Engine>,
        repo: PathBuf,
    ) -> (Arc<Served>, mpsc::UnboundedReceiver<Trigger>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let served = Served {
            name: engine.project().name.clone(),
            engine,
            repo,
            triggers: tx,
            running: AtomicBool::new(false),
            queued: AtomicBool::new(false),
        };
        (Arc::new(served), rx)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Queues a run. Triggers that arrive while one waits are folded into
    /// it; one that arrives during a run starts one more run after it.
    pub fn trigger(&self, why: Trigger) {
        self.queued.store(true, Ordering::SeqCst);
        let _ = self.triggers.send(why);
    }

    /// True when a run is under way or already queued: a schedule tick then
    /// adds nothing (a run in progress is not started twice).
    pub fn busy(&self) -> bool {
        self.is_running() || self.queued.load(Ordering::SeqCst)
    }
}

/// Runs the project's engine once per (folded) trigger until shutdown.
pub async fn runner(
    p: Arc<Served>,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
    shutdown: Shutdown,
    log: Log,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.requested() => return,
            t = triggers.recv() => match t {
                Some(t) => t,
                None => return,
            },
        };
        let mut why = vec![first];
        while let Ok(t) = triggers.try_recv() {
            if !why.contains(&t) {
                why.push(t);
            }
        }
        p.running.store(true, Ordering::SeqCst);
        p.queued.store(false, Ordering::SeqCst);
        let reasons: Vec<String> = why.iter().map(|t| t.to_string()).collect();
        log(&format!("{}: run started ({})", p.name, reasons.join("; ")));
        let opts = RunOptions {
            cycles: RUN_CYCLES,
            until_idle: true,
        };
        let result = p.engine.run_until(opts, &shutdown).await;
        p.running.store(false, Ordering::SeqCst);
        match result {
            Ok(s) => {
                let mut line = if s.claimed == 0 && s.planned == 0 && s.tasks.is_empty() {
                    format!("{}: run finished: nothing to do", p.name)
                } else {
                    format!(
                        "{}: run finished: {} planned, {} claimed; {} merged, {} waiting to merge, {} need a person, {} failed",
                        p.name,
                        s.planned,
                        s.claimed,
                        s.count(TaskStatus::Merged),
                        s.count(TaskStatus::Passed),
                        s.count(TaskStatus::NeedsHuman),
                        s.count(TaskStatus::Failed),
                    )
                };
                if let Some(reason) = &s.paused {
                    line.push_str(&format!("; project paused: {reason}"));
                }
                if let Some(stopped) = &s.stopped {
                    line.push_str(&format!("; {stopped}"));
                }
                log(&line);
            }
            Err(EngineError::Lock(e)) => log(&format!(
                "{}: not run: {e} (orch serve tries again at the next trigger)",
                p.name
            )),
            Err(e) => log(&format!(
                "{}: run failed: {e} (orch serve tries again at the next trigger)",
                p.name
            )),
        }
    }
}

/// Triggers a run at each firing of `schedule` unless one is under way.
pub async fn scheduler(p: Arc<Served>, schedule: Schedule, shutdown: Shutdown, log: Log) {
    let label = schedule.to_string();
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            log(&format!("{}: schedule {label} never fires again", p.name));
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if p.busy() {
            // The run under way (or queued) covers this firing.
            tracing::debug!(
                "{}: schedule {label}: a run is under way; not started twice",
                p.name
            );
            continue;
        }
        p.trigger(Trigger::Schedule(label.clone()));
    }
}

/// Follows the project's watched files: a plan file (`## Task N.M`
/// sections) is imported, then any change triggers a run (the planner sees
/// a changed backlog through its fingerprint).
pub async fn watcher(
    p: Arc<Served>,
    mut watch: FileWatch,
    mut raw: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    store: Arc<dyn StateStore>,
    shutdown: Shutdown,
    log: Log,
) {
    loop {
        let batch = tokio::select! {
            _ = shutdown.requested() => return,
            b = raw.recv() => match b {
                Some(b) => b,
                None => return,
            },
        };
        let files = watch.filter(batch);
        if files.is_empty() {
            continue;
        }
        let mut names = Vec::new();
        for f in &files {
            import_if_plan(&store, &p, f, &log);
            names.push(f.strip_prefix(&p.repo).unwrap_or(f).display().to_string());
        }
        p.trigger(Trigger::Files(names));
    }
}

/// Imports `path` when it is a plan file; a backlog-like file is left to
/// the planner. A plan file with errors is reported (log and a warning
/// event) and not imported; a re-import adds nothing twice.
fn import_if_plan(store: &dyn StateStore, p: &Served, path: &Path, log: &Log) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return; // Deleted or unreadable: nothing to import.
    };
    let rel = path
        .strip_prefix(&p.repo)
        .unwrap_or(path)
        .display()
        .to_string();
    let warn = |message: String| {
        log(&format!("{}: {message}", p.name));
        let payload = orch_protocol::Warning {
            stage: Some(Stage::PlanImport),
            file: Some(rel.to_string()),
            ..Default::default()
        };
        let ev = Event::new(&p.name, payload, message);
        if let Err(e) = store.record(&ev) {
            tracing::warn!("cannot record event: {e}");
        }
    };
    if !looks_like_plan(&text) {
        return;
    }
    match orch_planner::plan_file::parse(&text) {
        Ok(plan) => {
            let source = orch_planner::plan_file::source_name(path);
            let tasks = plan.new_tasks(&p.name, &source);
            match store.import_plan(&p.name, &tasks) {
                Ok(r) => log(&format!(
                    "{}: imported plan {rel}: {} new task(s), {} already there",
                    p.name,
                    r.created.len(),
                    r.skipped.len()
                )),
                Err(e) => warn(format!("plan file {rel} not imported: {e}")),
            }
        }
        Err(e) => warn(format!(
            "plan file {rel} not imported: {e}; fix it and save it again"
        )),
    }
}

/// A plan file has `## Task …` headings; anything else is backlog-like.
fn looks_like_plan(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start()
            .strip_prefix("##")
            .filter(|r| !r.starts_with('#'))
            .is_some_and(|r| r.trim_start().to_ascii_lowercase().starts_with("task"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_files_are_told_from_backlogs_by_their_task_headings() {
        assert!(looks_like_plan("# M1\n\n## Task 1.1: Add sub()\nbody\n"));
        assert!(looks_like_plan("##   task 2: lower case\n"));
        assert!(!looks_like_plan("# Backlog\n- fix the thing\n## Ideas\n"));
        assert!(!looks_like_plan("### Task 1.1: a deeper heading is text\n"));
    }
}
