//! Registered projects, their pause flag and consecutive-failure counter.

use crate::Cached;

use crate::codec::{insert_event, now};
use crate::error::{Result, StateError};
use crate::Store;
use orch_protocol::{self as protocol, Event};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRow {
    pub name: String,
    /// Path of the project's git repository.
    pub path: String,
    pub paused: bool,
    pub pause_reason: Option<String>,
    /// Attempts that failed in a row; the engine pauses a project when this
    /// grows too large.
    pub consecutive_failures: u32,
    /// A digest of what the planner saw when it last planned; the planner is
    /// not asked again while it is unchanged.
    pub plan_fingerprint: Option<String>,
    /// When the planner last planned (RFC 3339).
    pub planned_at: Option<String>,
}

const PROJECT_COLUMNS: &str =
    "name, path, paused, pause_reason, consecutive_failures, plan_fingerprint, planned_at";

fn project_from_row(row: &Row<'_>) -> rusqlite::Result<ProjectRow> {
    Ok(ProjectRow {
        name: row.get("name")?,
        path: row.get("path")?,
        paused: row.get("paused")?,
        pause_reason: row.get("pause_reason")?,
        consecutive_failures: row.get("consecutive_failures")?,
        plan_fingerprint: row.get("plan_fingerprint")?,
        planned_at: row.get("planned_at")?,
    })
}

/// The NotFound error for an unknown project, listing the known ones so the
/// user can spot a typo.
pub(crate) fn project_not_found(conn: &Connection, name: &str) -> StateError {
    let known: Vec<String> = conn
        .prepare_cached("SELECT name FROM projects ORDER BY name")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    let what = if known.is_empty() {
        format!(
            "project `{name}` is not registered and no project is yet; register the project first"
        )
    } else {
        format!(
            "project `{name}` is not registered; registered projects: {}",
            known.join(", ")
        )
    };
    StateError::NotFound { what }
}

pub(crate) fn load_project(conn: &Connection, name: &str) -> Result<ProjectRow> {
    conn.row_cached(
        &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE name = ?1"),
        [name],
        project_from_row,
    )
    .optional()?
    .ok_or_else(|| project_not_found(conn, name))
}

impl Store {
    /// Registers a project, or updates its path if it exists. Only a new
    /// registration records `ProjectRegistered`.
    pub fn ensure_project(&self, name: &str, path: &str) -> Result<()> {
        if name.trim().is_empty() {
            return Err(StateError::Invalid(
                "project name is empty; give the project a name".into(),
            ));
        }
        self.write(|tx| {
            let at = now();
            let inserted = tx.run_cached(
                "INSERT INTO projects (name, path, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, path, at],
            )?;
            if inserted == 1 {
                let ev = Event::new(
                    name,
                    protocol::ProjectRegistered {
                        path: path.to_string(),
                    },
                    format!("registered project {name} at {path}"),
                );
                insert_event(tx, &ev)?;
            } else {
                tx.run_cached(
                    "UPDATE projects SET path = ?2, updated_at = ?3 WHERE name = ?1 AND path <> ?2",
                    params![name, path, at],
                )?;
            }
            Ok(())
        })
    }

    pub fn project(&self, name: &str) -> Result<ProjectRow> {
        self.read(|tx| load_project(tx, name))
    }

    /// All projects, by name.
    pub fn projects(&self) -> Result<Vec<ProjectRow>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name"
            ))?;
            let rows = st
                .query_map([], project_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Pauses or resumes a project. An event is recorded only when the flag
    /// actually flips. Resuming clears the reason and resets the
    /// consecutive-failure counter, so a resumed project is not paused again
    /// by its very next failure.
    pub fn set_paused(&self, project: &str, paused: bool, reason: Option<&str>) -> Result<()> {
        self.write(|tx| {
            let before = load_project(tx, project)?;
            let at = now();
            if paused {
                tx.run_cached(
                    "UPDATE projects SET paused = 1, pause_reason = ?2, updated_at = ?3 WHERE name = ?1",
                    params![project, reason, at],
                )?;
            } else {
                tx.run_cached(
                    "UPDATE projects SET paused = 0, pause_reason = NULL, consecutive_failures = 0, updated_at = ?2
                     WHERE name = ?1",
                    params![project, at],
                )?;
            }
            if before.paused != paused {
                let reason_owned = reason.map(str::to_string);
                let (payload, verb): (protocol::Payload, _) = if paused {
                    (protocol::ProjectPaused { reason: reason_owned }.into(), "paused")
                } else {
                    (protocol::ProjectResumed { reason: reason_owned }.into(), "resumed")
                };
                let message = match reason {
                    Some(r) => format!("project {project} {verb}: {r}"),
                    None => format!("project {project} {verb}"),
                };
                let ev = Event::new(project, payload, message);
                insert_event(tx, &ev)?;
            }
            Ok(())
        })
    }

    pub fn is_paused(&self, project: &str) -> Result<bool> {
        Ok(self.project(project)?.paused)
    }

    /// Adds one to the counter in SQL and returns the new value.
    pub fn bump_consecutive_failures(&self, project: &str) -> Result<u32> {
        self.write(|tx| {
            tx.row_cached(
                "UPDATE projects SET consecutive_failures = consecutive_failures + 1, updated_at = ?2
                 WHERE name = ?1 RETURNING consecutive_failures",
                params![project, now()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| project_not_found(tx, project))
        })
    }

    /// Remembers what the planner saw when it planned (or was asked to).
    pub fn set_plan_fingerprint(&self, project: &str, fingerprint: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx.run_cached(
                "UPDATE projects SET plan_fingerprint = ?2, planned_at = ?3, updated_at = ?3 WHERE name = ?1",
                params![project, fingerprint, now()],
            )?;
            if n == 0 {
                return Err(project_not_found(tx, project));
            }
            Ok(())
        })
    }

    pub fn reset_consecutive_failures(&self, project: &str) -> Result<()> {
        self.write(|tx| {
            // Already 0 (the usual pass) writes no page.
            let n = tx.run_cached(
                "UPDATE projects SET consecutive_failures = 0, updated_at = ?2 WHERE name = ?1 AND consecutive_failures != 0",
                params![project, now()],
            )?;
            if n == 0 && !tx.exists_cached("SELECT 1 FROM projects WHERE name = ?1", [project])? {
                return Err(project_not_found(tx, project));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{EventFilter, StateError, Store};
    use orch_protocol::EventKind;

    fn kinds(store: &Store) -> Vec<EventKind> {
        store
            .events(&EventFilter::default())
            .unwrap()
            .into_iter()
            .map(|e| e.kind())
            .collect()
    }

    #[test]
    fn ensure_project_registers_once_and_updates_path() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/a").unwrap();
        s.ensure_project("p", "/b").unwrap();
        let p = s.project("p").unwrap();
        assert_eq!(p.path, "/b");
        assert!(!p.paused);
        assert_eq!(p.consecutive_failures, 0);
        assert_eq!(kinds(&s), vec![EventKind::ProjectRegistered]);
        assert!(matches!(
            s.ensure_project(" ", "/x"),
            Err(StateError::Invalid(_))
        ));
    }

    #[test]
    fn unknown_project_lists_registered_ones() {
        let s = Store::open_in_memory().unwrap();
        let err = s.project("x").unwrap_err();
        assert!(err.to_string().contains("no project is yet"), "{err}");
        s.ensure_project("alpha", "/a").unwrap();
        s.ensure_project("beta", "/b").unwrap();
        let err = s.is_paused("alhpa").unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }));
        assert!(
            err.to_string().contains("registered projects: alpha, beta"),
            "{err}"
        );
        assert!(matches!(
            s.bump_consecutive_failures("nope"),
            Err(StateError::NotFound { .. })
        ));
        assert!(matches!(
            s.reset_consecutive_failures("nope"),
            Err(StateError::NotFound { .. })
        ));
        assert!(matches!(
            s.set_paused("nope", true, None),
            Err(StateError::NotFound { .. })
        ));
    }

    #[test]
    fn pause_and_resume_record_events_only_on_change() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/a").unwrap();
        assert_eq!(s.bump_consecutive_failures("p").unwrap(), 1);
        assert_eq!(s.bump_consecutive_failures("p").unwrap(), 2);
        s.set_paused("p", true, Some("3 failures in a row"))
            .unwrap();
        s.set_paused("p", true, Some("still failing")).unwrap();
        let p = s.project("p").unwrap();
        assert!(p.paused && s.is_paused("p").unwrap());
        assert_eq!(p.pause_reason.as_deref(), Some("still failing"));
        assert_eq!(p.consecutive_failures, 2);

        s.set_paused("p", false, None).unwrap();
        s.set_paused("p", false, None).unwrap();
        let p = s.project("p").unwrap();
        assert!(!p.paused);
        assert_eq!(p.pause_reason, None);
        assert_eq!(
            p.consecutive_failures, 0,
            "resume gives a fresh failure budget"
        );
        assert_eq!(
            kinds(&s),
            vec![
                EventKind::ProjectRegistered,
                EventKind::ProjectPaused,
                EventKind::ProjectResumed
            ]
        );
        let paused = &s.events(&EventFilter::default()).unwrap()[1];
        assert_eq!(paused.data_json()["reason"], "3 failures in a row");
    }

    #[test]
    fn failure_counter_bumps_and_resets() {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/a").unwrap();
        for i in 1..=5 {
            assert_eq!(s.bump_consecutive_failures("p").unwrap(), i);
        }
        s.reset_consecutive_failures("p").unwrap();
        assert_eq!(s.project("p").unwrap().consecutive_failures, 0);
        // Already 0: nothing written, no error.
        s.reset_consecutive_failures("p").unwrap();
        assert_eq!(s.bump_consecutive_failures("p").unwrap(), 1);
    }
}
