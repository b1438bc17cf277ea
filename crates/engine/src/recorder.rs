//! Records events. State changes record their own events inside the store's
//! transactions; everything else (tool calls, model calls, stages, warnings)
//! is recorded here. Live progress is a tail of the same events table, so
//! what a person sees is exactly what the database keeps.

use orch_core::{Event, EventKind};
use orch_state::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct Recorder {
    store: Arc<Store>,
    project: String,
}

impl Recorder {
    pub fn new(store: Arc<Store>, project: &str) -> Self {
        Recorder {
            store,
            project: project.to_string(),
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// Records an informational event. A failure to record is logged, not
    /// raised: losing one informational event must not stop work whose
    /// state changes are recorded transactionally anyway.
    pub fn emit(&self, event: Event) {
        let mut event = event;
        event.message = orch_core::redact::redact(&event.message).into_owned();
        orch_core::redact::redact_json(&mut event.data);
        if let Err(e) = self.store.record(&event) {
            tracing::warn!("could not record event {:?}: {e}", event.kind);
        }
    }

    pub fn note(
        &self,
        task: Option<&str>,
        kind: EventKind,
        message: impl Into<String>,
        data: serde_json::Value,
    ) {
        let mut e = Event::new(self.project.clone(), kind, message).data(data);
        if let Some(t) = task {
            e = e.task(t);
        }
        self.emit(e);
    }
}
