//! Live progress: the event bus, printed as readable lines (elapsed time,
//! task, stage, message). The store broadcasts each event after it commits
//! it, so this shows exactly what was recorded, and nothing more.

use orch_protocol::{Event, Payload};
use orch_state::StateStore;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

pub struct Progress {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// Prints the events of one project.
struct Printer {
    store: Arc<dyn StateStore>,
    project: String,
    to_stderr: bool,
    started: Instant,
    titles: HashMap<String, String>,
}

impl Printer {
    fn print(&mut self, e: &Event) {
        if e.project != self.project {
            return;
        }
        let Some(line) = render(e, self.started.elapsed(), &self.store, &mut self.titles) else {
            return;
        };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }

    async fn follow(mut self, mut rx: Receiver<Event>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = rx.recv() => match ev {
                    Ok(e) => self.print(&e),
                    // Too far behind to show every line: skip ahead.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
            }
        }
        // What was committed before the stop is already in the channel.
        loop {
            match rx.try_recv() {
                Ok(e) => self.print(&e),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    }
}

impl Progress {
    /// Starts following events of `project` recorded after now. Lines go to
    /// stderr when `to_stderr` (so `--json` keeps stdout clean). Must be
    /// called inside the tokio runtime.
    pub fn start(store: Arc<dyn StateStore>, project: &str, to_stderr: bool) -> Progress {
        let stop = CancellationToken::new();
        let handle = match store.subscribe() {
            Ok(rx) => {
                let printer = Printer {
                    store: store.clone(),
                    project: project.to_string(),
                    to_stderr,
                    started: Instant::now(),
                    titles: HashMap::new(),
                };
                Some(tokio::spawn(printer.follow(rx, stop.clone())))
            }
            Err(e) => {
                eprintln!("orch: no live progress: {e}");
                None
            }
        };
        Progress { stop, handle }
    }

    /// Prints what is left and stops.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

fn render(
    e: &Event,
    elapsed: Duration,
    store: &dyn StateStore,
    titles: &mut HashMap<String, String>,
) -> Option<String> {
    let stage = match &e.payload {
        Payload::StatusChanged(c) => c.to.as_str().to_string(),
        Payload::StageStarted(s) => s.stage.as_str().to_string(),
        Payload::StageFinished(_) => return None,
        Payload::ModelCall(_) => "model".into(),
        Payload::ToolCall(_) => "tool".into(),
        Payload::ToolRefused(_) => "REFUSED".into(),
        Payload::Warning(_) => "WARNING".into(),
        Payload::TaskClaimed(_) => return None,
        // Successful tries are the normal case; show only failed ones.
        Payload::ModelTry(t) if t.error.is_none() => return None,
        Payload::ModelTry(_) => "retry".into(),
        Payload::ProviderHealth(_) => "provider".into(),
        Payload::CycleStarted(_) | Payload::CycleFinished(_) => "cycle".into(),
        Payload::TaskCreated(_) => "created".into(),
        Payload::PlanCreated(_) => "planned".into(),
        Payload::AttemptStarted(_) | Payload::AttemptFinished(_) => "attempt".into(),
        Payload::AttemptInterrupted(_) => "interrupted".into(),
        Payload::VerificationFinished(_) => "verified".into(),
        Payload::VerdictRecorded(_) => "verdict".into(),
        Payload::MergeQueued(_) => "queued".into(),
        Payload::MergeRejected(_) => "merge-rejected".into(),
        Payload::MergeDeferred(_) => "merge-deferred".into(),
        Payload::PatrolInterrupted(_) => "patrol".into(),
        other => other.kind().as_str().to_string(),
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
    let args = match &e.payload {
        Payload::ToolCall(t) => Some(t.arguments.as_str()),
        Payload::ToolRefused(t) => t.arguments.as_deref(),
        _ => None,
    };
    if let Some(args) = args {
        message = format!("{message} {}", shorten(args, 70));
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
