//! Records events. State changes record their own events inside the store's
//! transactions; everything else (tool calls, model calls, stages, warnings)
//! is recorded here. The store redacts every event on its way in and then
//! broadcasts it, so live progress, the event stream, metrics and traces see
//! exactly what the database keeps.

use orch_protocol::{Event, Payload};
use orch_state::StateStore;
use std::sync::Arc;

#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn StateStore>,
    project: String,
}

impl Recorder {
    pub fn new(store: Arc<dyn StateStore>, project: &str) -> Self {
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
        if let Err(e) = self.store.record(&event) {
            tracing::warn!("could not record event {}: {e}", event.kind());
        }
    }

    pub fn note(
        &self,
        task: Option<&str>,
        payload: impl Into<Payload>,
        message: impl Into<String>,
    ) {
        self.emit(self.event(task, payload, message));
    }

    /// The event [`Self::note`] would record, stamped now, to record later
    /// with others through [`Self::emit_all`].
    pub fn event(
        &self,
        task: Option<&str>,
        payload: impl Into<Payload>,
        message: impl Into<String>,
    ) -> Event {
        let e = Event::new(self.project.clone(), payload, message);
        match task {
            Some(t) => e.task(t),
            None => e,
        }
    }

    /// Records `events` in order, in one transaction (a batch's events:
    /// one write, not one per task). A failure is logged, as for `emit`.
    pub fn emit_all(&self, events: Vec<Event>) {
        if let Err(e) = self.store.record_all(&events) {
            tracing::warn!("could not record {} events: {e}", events.len());
        }
    }
}

/// The event a retry or circuit-breaker report becomes.
pub(crate) fn resilience_payload(event: &orch_providers::resilient::ResilienceEvent) -> Payload {
    use orch_protocol::{HealthChange, ModelTry, ProviderHealth};
    use orch_providers::resilient::ResilienceEvent as R;
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let health = |change, provider: &str| ProviderHealth {
        change,
        provider: provider.to_string(),
        ..Default::default()
    };
    match event {
        R::Try(t) => ModelTry {
            provider: t.provider.clone(),
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            error: t.error.clone(),
            retryable: t.retryable,
            wait_ms: t.wait.map(millis),
            wait_reason: t
                .wait_reason
                .and_then(|r| serde_json::to_value(r).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            took_ms: millis(t.took),
        }
        .into(),
        R::CircuitOpened {
            provider,
            failures,
            cool_down,
        } => ProviderHealth {
            failures: Some(*failures),
            cool_down_seconds: Some(cool_down.as_secs_f64()),
            ..health(HealthChange::CircuitOpened, provider)
        }
        .into(),
        R::CircuitHalfOpen { provider } => health(HealthChange::CircuitHalfOpen, provider).into(),
        R::CircuitClosed { provider } => health(HealthChange::CircuitClosed, provider).into(),
        R::Fallback {
            from_provider,
            from_model,
            to_provider,
            to_model,
            reason,
        } => ProviderHealth {
            from_model: Some(from_model.clone()),
            to_provider: Some(to_provider.clone()),
            to_model: Some(to_model.clone()),
            reason: Some(reason.clone()),
            ..health(HealthChange::Fallback, from_provider)
        }
        .into(),
    }
}
