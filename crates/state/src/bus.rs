//! The in-process event bus: after each committed write, the events it
//! added are broadcast to every subscriber, so live progress and the
//! server's event stream follow the log without each polling the database.
//! A subscriber that falls more than [`BUS_CAPACITY`] events behind is told
//! it lagged and can catch up from the table by id.

use crate::Cached;

use crate::codec::{event_from_row, EVENT_COLUMNS};
use orch_protocol::Event;
use rusqlite::Connection;
use std::sync::{Mutex, PoisonError};
use tokio::sync::broadcast;

/// Events a subscriber may fall behind before it lags.
pub const BUS_CAPACITY: usize = 4096;

pub(crate) struct Bus {
    sender: broadcast::Sender<Event>,
    /// The id of the last event published; None until the first subscriber.
    published: Mutex<Option<i64>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            sender: broadcast::channel(BUS_CAPACITY).0,
            published: Mutex::new(None),
        }
    }
}

fn max_id(conn: &Connection) -> i64 {
    conn.row_cached("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
        .unwrap_or(0)
}

impl Bus {
    /// A receiver of every event committed from now on.
    pub(crate) fn subscribe(&self, conn: &Connection) -> broadcast::Receiver<Event> {
        let rx = self.sender.subscribe();
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if published.is_none() {
            *published = Some(max_id(conn));
        }
        rx
    }

    /// Broadcasts the events committed since the last call: `written`,
    /// the ones this write inserted, when they follow the last published
    /// event directly; otherwise (another handle or process wrote in
    /// between, or this write inserted none) what the table holds after
    /// it. Nothing is read while nobody listens.
    pub(crate) fn publish(&self, conn: &Connection, written: Vec<Event>) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.sender.receiver_count() == 0 {
            // The next subscriber starts from the table as it is then.
            *published = None;
            return;
        }
        let after = published.unwrap_or_else(|| max_id(conn));
        let fresh = match written.first() {
            Some(first) if first.id == after + 1 => written,
            _ => read_after(conn, after),
        };
        if let Some(last) = fresh.last() {
            *published = Some(last.id);
        }
        for event in fresh {
            // No receiver left is not an error: nobody is listening.
            let _ = self.sender.send(event);
        }
    }
}

/// Every event with an id above `after`, in order.
fn read_after(conn: &Connection, after: i64) -> Vec<Event> {
    conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id"
    ))
    .and_then(|mut st| st.query_map([after], event_from_row)?.collect())
    .unwrap_or_else(|e| {
        tracing::warn!("event bus cannot read new events: {e}");
        Vec::new()
    })
}

impl crate::Store {
    /// Follows the event log live: every event committed after this call,
    /// in order. Read older events with [`crate::Store::events`].
    pub fn subscribe(&self) -> crate::Result<broadcast::Receiver<Event>> {
        let conn = self.lock()?;
        Ok(self.bus.subscribe(&conn))
    }
}

#[cfg(test)]
mod tests {
    use crate::{EventFilter, Store};
    use orch_core::NewTask;
    use orch_protocol::Event;
    use orch_protocol::EventKind;

    #[test]
    fn subscribers_get_each_committed_event_once_in_order() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        let mut rx = s.subscribe().unwrap();
        let t = s
            .add_task(&NewTask {
                project: "p".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        s.claim_pending("p", 1).unwrap();
        let mut kinds = Vec::new();
        while let Ok(e) = rx.try_recv() {
            assert_eq!(e.project, "p");
            kinds.push(e.kind());
        }
        assert_eq!(
            kinds,
            [
                EventKind::TaskCreated,
                EventKind::StatusChanged,
                EventKind::TaskClaimed
            ]
        );
        // A failed write publishes nothing.
        assert!(s
            .transition(
                &t.id,
                &[orch_core::TaskStatus::Merged],
                orch_core::TaskStatus::Failed,
                "x"
            )
            .is_ok());
        assert!(rx.try_recv().is_err());
    }

    fn warning(message: &str) -> Event {
        Event::new("p", orch_protocol::Warning::default(), message)
    }

    fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn published_events_are_the_stored_rows_secrets_redacted() {
        orch_core::redact::register("sk-bus-test-secret-0042");
        let s = Store::open_in_memory().unwrap();
        let mut rx = s.subscribe().unwrap();
        s.record(&warning("token sk-bus-test-secret-0042 leaked"))
            .unwrap();
        let stored = s.events(&EventFilter::default()).unwrap();
        let published = drain(&mut rx);
        assert_eq!(published, stored);
        assert!(!published[0].message.contains("sk-bus-test"));
    }

    #[test]
    fn events_another_handle_wrote_are_published_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orch.db");
        let (a, b) = (Store::open(&path).unwrap(), Store::open(&path).unwrap());
        let mut rx = a.subscribe().unwrap();
        b.record(&warning("from b")).unwrap();
        a.record(&warning("from a")).unwrap();
        let messages: Vec<String> = drain(&mut rx).into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["from b", "from a"]);
    }

    #[test]
    fn a_late_subscriber_gets_nothing_from_before_it_subscribed() {
        let s = Store::open_in_memory().unwrap();
        let first = s.subscribe().unwrap();
        s.record(&warning("seen by the first")).unwrap();
        drop(first);
        s.record(&warning("nobody listening")).unwrap();
        let mut late = s.subscribe().unwrap();
        s.record(&warning("after")).unwrap();
        let messages: Vec<String> = drain(&mut late).into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["after"]);
    }

    #[test]
    fn a_failed_write_publishes_nothing_and_the_next_publishes_only_its_own() {
        let s = Store::open_in_memory().unwrap();
        let mut rx = s.subscribe().unwrap();
        let failed: crate::Result<()> = s.write(|tx| {
            crate::codec::insert_event(tx, &warning("rolled back"))?;
            Err(crate::StateError::Invalid("no".into()))
        });
        assert!(failed.is_err());
        s.record(&warning("kept")).unwrap();
        let messages: Vec<String> = drain(&mut rx).into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["kept"]);
    }
}
