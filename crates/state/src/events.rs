//! The append-only event log. There is deliberately no update or delete
//! code path, and triggers make the database refuse them too.

use crate::codec::{event_from_row, insert_event, EVENT_COLUMNS};
use crate::error::Result;
use crate::Store;
use orch_protocol::Event;
use rusqlite::params_from_iter;
use rusqlite::types::Value;

/// Which events to read. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub project: Option<String>,
    pub task_id: Option<String>,
    /// Only events with a larger id; for following the log.
    pub after_id: Option<i64>,
    /// At most this many, the oldest matching first.
    pub limit: Option<usize>,
}

impl Store {
    /// Appends an event and returns its id. (`event.id` is ignored.)
    pub fn record(&self, event: &Event) -> Result<i64> {
        self.write(|tx| insert_event(tx, event))
    }

    /// Appends `events` in order, in one transaction.
    pub fn record_all(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for event in events {
                insert_event(tx, event)?;
            }
            Ok(())
        })
    }

    /// Events matching `filter`, in ascending id order.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.read(|tx| {
            let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            if let Some(p) = &filter.project {
                args.push(Value::Text(p.clone()));
                sql.push_str(&format!(" AND project = ?{}", args.len()));
            }
            if let Some(t) = &filter.task_id {
                args.push(Value::Text(t.clone()));
                sql.push_str(&format!(" AND task_id = ?{}", args.len()));
            }
            if let Some(after) = filter.after_id {
                args.push(Value::Integer(after));
                sql.push_str(&format!(" AND id > ?{}", args.len()));
            }
            sql.push_str(" ORDER BY id ASC");
            if let Some(limit) = filter.limit {
                args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
                sql.push_str(&format!(" LIMIT ?{}", args.len()));
            }
            let mut st = tx.prepare_cached(&sql)?;
            let rows = st
                .query_map(params_from_iter(args), event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cached;
    use orch_protocol::EventKind;

    #[test]
    fn record_and_filter_events() {
        let s = Store::open_in_memory().unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let project = if i % 2 == 0 { "a" } else { "b" };
            let ev = Event::new(
                project,
                orch_protocol::CycleStarted { cycle: i },
                format!("w{i}"),
            )
            .task(format!("t{}", i % 3));
            ids.push(s.record(&ev).unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));

        let all = s.events(&EventFilter::default()).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].id, ids[0]);
        assert_eq!(all[0].message, "w0");
        assert_eq!(all[0].data_json()["cycle"], 0);
        assert_eq!(all[0].kind(), EventKind::CycleStarted);

        let a = s
            .events(&EventFilter {
                project: Some("a".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            a.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            vec!["w0", "w2", "w4"]
        );
        let t0 = s
            .events(&EventFilter {
                task_id: Some("t0".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            t0.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            vec!["w0", "w3"]
        );
        let tail = s
            .events(&EventFilter {
                after_id: Some(ids[1]),
                limit: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            tail.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![ids[2], ids[3]]
        );
        let both = s
            .events(&EventFilter {
                project: Some("a".into()),
                task_id: Some("t1".into()),
                after_id: Some(0),
                limit: Some(10),
            })
            .unwrap();
        assert_eq!(both.len(), 1);
        assert_eq!(both[0].message, "w4");
    }

    #[test]
    fn events_are_append_only_in_the_database() {
        let s = Store::open_in_memory().unwrap();
        let id = s
            .record(&Event::new(
                "p",
                orch_protocol::Warning::default(),
                "original",
            ))
            .unwrap();
        let conn = s.lock().unwrap();
        let err = conn
            .run_cached(
                "UPDATE events SET message = 'rewritten' WHERE id = ?1",
                [id],
            )
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn
            .run_cached("DELETE FROM events WHERE id = ?1", [id])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        drop(conn);
        let evs = s.events(&EventFilter::default()).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].message, "original");
    }
}
