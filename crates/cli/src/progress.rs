//! Live progress: a tail of the events table, printed as readable lines
//! (elapsed time, task, stage, message). Because it reads the database, it
//! shows exactly what was recorded, and nothing more.

use orch_core::{Event, EventKind};
use orch_state::{EventFilter, Store};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts tailing events of `project` recorded after now. Lines go to
    /// stderr when `to_stderr` (so `--json` keeps stdout clean).
    pub fn start(store: Arc<Store>, project: &str, to_stderr: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let after = store
            .events(&EventFilter {
                project: Some(project.to_string()),
                ..Default::default()
            })
            .ok()
            .and_then(|e| e.last().map(|e| e.id))
            .unwrap_or(0);
        let project = project.to_string();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut after = after;
            let mut titles: HashMap<String, String> = HashMap::new();
            loop {
                let done = stop2.load(Ordering::SeqCst);
                let filter = EventFilter {
                    project: Some(project.clone()),
                    after_id: Some(after),
                    ..Default::default()
                };
                if let Ok(events) = store.events(&filter) {
                    for e in events {
                        after = after.max(e.id);
                        if let Some(line) = render(&e, started.elapsed(), &store, &mut titles) {
                            if to_stderr {
                                eprintln!("{line}");
                            } else {
                                println!("{line}");
                                let _ = std::io::stdout().flush();
                            }
                        }
                    }
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        Progress {
            stop,
            handle: Some(handle),
        }
    }

    /// Prints what is left and stops.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn render(
    e: &Event,
    elapsed: Duration,
    store: &Store,
    titles: &mut HashMap<String, String>,
) -> Option<String> {
    let stage = match e.kind {
        EventKind::StatusChanged => e
            .data
            .get("to")
            .and_then(|v| v.as_str())
            .unwrap_or("status")
            .to_string(),
        EventKind::StageStarted => e
            .data
            .get("stage")
            .and_then(|v| v.as_str())
            .unwrap_or("stage")
            .to_string(),
        EventKind::ModelCall => "model".into(),
        EventKind::ToolCall => "tool".into(),
        EventKind::ToolRefused => "REFUSED".into(),
        EventKind::Warning => "WARNING".into(),
        EventKind::TaskClaimed => return None,
        // Successful tries are the normal case; show only failed ones.
        EventKind::ModelTry if e.data.get("error").is_none_or(|v| v.is_null()) => return None,
        EventKind::ModelTry => "retry".into(),
        EventKind::ProviderHealth => "provider".into(),
        EventKind::CycleStarted | EventKind::CycleFinished => "cycle".into(),
        EventKind::TaskCreated => "created".into(),
        EventKind::PlanCreated => "planned".into(),
        EventKind::AttemptStarted | EventKind::AttemptFinished => "attempt".into(),
        EventKind::AttemptInterrupted => "interrupted".into(),
        EventKind::VerificationFinished => "verified".into(),
        EventKind::VerdictRecorded => "verdict".into(),
        EventKind::MergeQueued => "queued".into(),
        EventKind::MergeRejected => "merge-rejected".into(),
        EventKind::MergeDeferred => "merge-deferred".into(),
        other => other.as_str(),
    };
    let task = match &e.task_id {
        Some(id) => {
            let title = titles
                .entry(id.clone())
                .or_insert_with(|| store.task(id).map(|t| t.title).unwrap_or_default())
                .clone();
            format!("{id} {}", shorten(&title, 28))
        }
        None => String::new(),
    };
    let mut message = e.message.clone();
    if e.kind == EventKind::ToolCall || e.kind == EventKind::ToolRefused {
        if let Some(args) = e.data.get("arguments").and_then(|a| a.as_str()) {
            message = format!("{message} {}", shorten(args, 70));
        }
    }
    Some(format!(
        "{:>7.1}s  {:<42} {:<14} {}",
        elapsed.as_secs_f64(),
        task,
        stage,
        shorten(&message, 160)
    ))
}

fn shorten(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let cut: String = one_line.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
