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

    /// Broadcasts the events committed since the last call (from this
    /// handle or, through the shared file, any other). Nothing is read while
    /// nobody listens.
    pub(crate) fn publish_new(&self, conn: &Connection) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let after = published.unwrap_or_else(|| max_id(conn));
        let fresh: Vec<Event> = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id"
            ))
            .and_then(|mut st| st.query_map([after], event_from_row)?.collect())
            .unwrap_or_else(|e| {
                tracing::warn!("event bus cannot read new events: {e}");
                Vec::new()
            });
        if let Some(last) = fresh.last() {
            *published = Some(last.id);
        }
        for event in fresh {
            // No receiver left is not an error: nobody is listening.
            let _ = self.sender.send(event);
        }
    }
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
    use crate::Store;
    use orch_core::NewTask;
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
}
