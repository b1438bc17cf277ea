//! `GET /api/v1/events`: the event log as Server-Sent Events.
//!
//! A client gets the backlog after the id it names (`Last-Event-ID`, or the
//! `after` query parameter; from the start of the log without either), read
//! from the database in pages, then every event committed from then on,
//! from the store's in-process bus (no database polling per client). The
//! bus is subscribed to *before* the backlog is read and every event is sent
//! only if its id is above the last one sent, so nothing is missed between
//! the two and nothing is sent twice. A client that falls behind the bus
//! (it lagged) catches up from the database the same way. Each SSE message
//! has `id:` = the event id and `data:` = the event as JSON, so a
//! reconnecting `EventSource` resumes exactly where it stopped.

use crate::error::{ApiError, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use orch_protocol::Event;
use orch_state::{EventFilter, StateStore};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

/// Events read from the database at a time.
const PAGE: usize = 500;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this project.
    pub project: Option<String>,
    /// Only events of this task (id or unique prefix).
    pub task: Option<String>,
    /// Start after this event id (the `Last-Event-ID` header wins when both
    /// are given); without either the stream starts at the first event.
    pub after: Option<i64>,
    /// `false` ends the stream after the backlog (a snapshot of the log);
    /// default `true`: keep following.
    pub follow: Option<bool>,
}

/// Which events a client asked for.
#[derive(Debug, Clone)]
struct Wanted {
    project: Option<String>,
    task_id: Option<String>,
}

impl Wanted {
    fn matches(&self, e: &Event) -> bool {
        self.project.as_ref().is_none_or(|p| &e.project == p)
            && self
                .task_id
                .as_ref()
                .is_none_or(|t| e.task_id.as_ref() == Some(t))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id (what a reconnecting EventSource sends)."),
    ),
    responses(
        (status = 200, description = "A stream of Server-Sent Events: `id:` is the event id, `data:` one event as JSON (the `orch events --json` element).", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query parameter or Last-Event-ID.", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown project or task.", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let mut after = q.after.unwrap_or(0);
    if let Some(v) = headers.get("last-event-id") {
        after = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "`Last-Event-ID` must be an event id (a whole number), as sent in the stream's `id:` lines",
                )
                .field("Last-Event-ID")
            })?;
    }
    if after < 0 {
        return Err(
            ApiError::bad_request("`after` must be 0 or a positive event id").field("after"),
        );
    }
    let follow = q.follow.unwrap_or(true);
    let store = state.store.clone();
    let config = state.config.clone();
    let (wanted, bus) = crate::blocking(move || {
        if let Some(p) = &q.project {
            let known = config.project(p).is_some() || store.project(p).is_ok();
            if !known {
                return Err(ApiError::not_found(format!(
                    "no project named `{p}`; list the projects with GET /api/v1/status"
                ))
                .field("project"));
            }
        }
        let task_id = match &q.task {
            Some(t) => Some(
                store
                    .task(t)
                    .map_err(|e| ApiError::from(e).field("task"))?
                    .id
                    .0,
            ),
            None => None,
        };
        // Subscribed before the backlog is read: see the module doc.
        let bus = store.subscribe()?;
        Ok((
            Wanted {
                project: q.project.clone(),
                task_id,
            },
            bus,
        ))
    })
    .await?;

    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(pump(
        state.store.clone(),
        wanted,
        bus,
        after,
        follow,
        tx,
        state.shutdown.clone(),
    ));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse_event(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default().id(e.id.to_string()).data(data)
}

/// Sends the matching events after `cursor` from the database, in pages.
/// Returns the new cursor, or None when the client went away.
async fn catch_up(
    store: &Arc<dyn StateStore>,
    wanted: &Wanted,
    mut cursor: i64,
    tx: &mpsc::Sender<SseEvent>,
) -> Option<i64> {
    loop {
        let store = store.clone();
        let filter = EventFilter {
            project: wanted.project.clone(),
            task_id: wanted.task_id.clone(),
            after_id: Some(cursor),
            limit: Some(PAGE),
        };
        let page = match tokio::task::spawn_blocking(move || store.events(&filter)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::warn!("event stream cannot read the event log: {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!("event stream reader failed: {e}");
                return None;
            }
        };
        let full = page.len() == PAGE;
        for e in &page {
            tx.send(sse_event(e)).await.ok()?;
            cursor = e.id;
        }
        if !full {
            return Some(cursor);
        }
    }
}

/// Feeds one client: backlog, then live events, until the client leaves,
/// the server shuts down, or (without `follow`) the backlog is sent.
async fn pump(
    store: Arc<dyn StateStore>,
    wanted: Wanted,
    mut bus: broadcast::Receiver<Event>,
    after: i64,
    follow: bool,
    tx: mpsc::Sender<SseEvent>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(mut cursor) = catch_up(&store, &wanted, after, &tx).await else {
        return;
    };
    if !follow {
        return;
    }
    loop {
        let received = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
            r = bus.recv() => r,
        };
        match received {
            Ok(e) => {
                // Already sent from the backlog (or a catch-up).
                if e.id <= cursor {
                    continue;
                }
                cursor = e.id;
                if wanted.matches(&e) && tx.send(sse_event(&e)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!("event stream lagged by {missed} events; catching up from the log");
                match catch_up(&store, &wanted, cursor, &tx).await {
                    Some(c) => cursor = c,
                    None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client that reads nothing while more events than the bus holds are
    /// committed: its pump blocks on the one-slot channel, the bus lags, and
    /// the pump catches up from the database: every event once, in order.
    #[tokio::test]
    async fn a_lagged_pump_catches_up_from_the_database() {
        let store = Arc::new(orch_state::Store::open_in_memory().unwrap());
        store.ensure_project("p", "/r").unwrap();
        let bus = store.subscribe().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let wanted = Wanted {
            project: Some("p".into()),
            task_id: None,
        };
        let pump = tokio::spawn(pump(
            store.clone(),
            wanted,
            bus,
            0,
            true,
            tx,
            tokio_util::sync::CancellationToken::new(),
        ));
        let n = orch_state::BUS_CAPACITY + 500;
        let s2 = store.clone();
        let lagged = tokio::task::spawn_blocking(move || {
            let mut rx2 = s2.subscribe().unwrap();
            for i in 0..n {
                s2.record(&Event::new(
                    "p",
                    orch_protocol::Warning::default(),
                    format!("e{i}"),
                ))
                .unwrap();
            }
            // A second, idle subscriber shows the bus overflowed.
            matches!(
                rx2.try_recv(),
                Err(broadcast::error::TryRecvError::Lagged(_))
            )
        })
        .await
        .unwrap();
        assert!(lagged, "the burst overflowed the bus");
        let all = store.events(&EventFilter::default()).unwrap();
        for e in &all {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            // axum's SSE event has no accessors; its encoding carries the id.
            let text = format!("{got:?}");
            assert!(text.contains(&format!("id: {}\\n", e.id)), "{text}");
        }
        drop(rx);
        pump.abort();
    }

    #[test]
    fn wanted_filters_by_project_and_task() {
        let e = Event::new("p", orch_protocol::Merged::default(), "m").task("t1");
        let all = Wanted {
            project: None,
            task_id: None,
        };
        assert!(all.matches(&e));
        let other = Wanted {
            project: Some("q".into()),
            task_id: None,
        };
        assert!(!other.matches(&e));
        let task = Wanted {
            project: Some("p".into()),
            task_id: Some("t2".into()),
        };
        assert!(!task.matches(&e));
    }
}
