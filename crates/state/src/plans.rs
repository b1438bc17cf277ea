//! Importing a milestone plan: its sections become tasks in file order,
//! each depending on the one before, in one transaction.
//!
//! A section is identified by its plan key (`<file>#<N.M>`), unique per
//! project, so importing the same plan again adds nothing twice: sections
//! whose key exists are skipped (their task stays as it is) and new ones
//! are appended after the section before them. Because the order lives in
//! the store as dependencies, a run cut off at any point resumes at the
//! first unfinished task.

use crate::Cached;

use crate::codec::insert_event;
use crate::error::{Result, StateError};
use crate::projects::load_project;
use crate::tasks::{insert_task, load_task};
use crate::Store;
use orch_core::{NewTask, Task, TaskId};
use orch_protocol::{self as protocol, Event};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanImport {
    pub project: String,
    /// Tasks created by this import, in plan order.
    pub created: Vec<Task>,
    /// Sections whose plan key already had a task, in plan order; the task
    /// as it is now (any status).
    pub skipped: Vec<Task>,
}

fn task_by_plan_key(conn: &Connection, project: &str, key: &str) -> Result<Option<Task>> {
    let id: Option<String> = conn
        .row_cached(
            "SELECT id FROM tasks WHERE project = ?1 AND plan_key = ?2",
            params![project, key],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => load_task(conn, &id),
        None => Ok(None),
    }
}

impl Store {
    /// Imports a plan's tasks into `project`, in order: each task gets the
    /// task of the section before it as a dependency (plus any it names
    /// itself), so it starts only when that one merged. Every task needs a
    /// `plan_key`; a key that already has a task is skipped. All or
    /// nothing: on any error nothing is written.
    pub fn import_plan(&self, project: &str, tasks: &[NewTask]) -> Result<PlanImport> {
        let mut seen = BTreeSet::new();
        for (i, t) in tasks.iter().enumerate() {
            let Some(key) = t.plan_key.as_deref().filter(|k| !k.trim().is_empty()) else {
                return Err(StateError::Invalid(format!(
                    "plan task {} (\"{}\") has no plan key; every task of a plan needs one \
                     (`<file>#<N.M>`) so a re-import can skip it",
                    i + 1,
                    t.title
                )));
            };
            if !seen.insert(key) {
                return Err(StateError::Invalid(format!(
                    "plan key `{key}` appears twice in the plan; give each section its own number"
                )));
            }
            if t.project != project {
                return Err(StateError::Invalid(format!(
                    "plan task `{key}` is for project `{}`, but the plan is imported into `{project}`",
                    t.project
                )));
            }
        }
        self.write(|tx| {
            load_project(tx, project)?;
            let mut out = PlanImport {
                project: project.to_string(),
                created: Vec::new(),
                skipped: Vec::new(),
            };
            let mut previous: Option<TaskId> = None;
            for t in tasks {
                let key = t.plan_key.as_deref().unwrap_or_default();
                if let Some(existing) = task_by_plan_key(tx, project, key)? {
                    previous = Some(existing.id.clone());
                    out.skipped.push(existing);
                    continue;
                }
                let mut new = t.clone();
                if let Some(prev) = &previous {
                    if !new.depends_on.contains(prev) {
                        new.depends_on.insert(0, prev.clone());
                    }
                }
                let task = insert_task(tx, &new).map_err(|e| match e {
                    StateError::InvalidTransition { task, from, wanted } => {
                        StateError::InvalidTransition {
                            task,
                            from,
                            wanted: format!(
                                "{wanted} (plan section `{key}` would wait for it; \
                                 nothing was imported)"
                            ),
                        }
                    }
                    other => other,
                })?;
                previous = Some(task.id.clone());
                out.created.push(task);
            }
            if out.created.is_empty() {
                // Nothing changed: a re-import (a watcher firing) adds no noise.
                return Ok(out);
            }
            let key_of = |t: &Task| t.plan_key.clone().unwrap_or_default();
            let ev = Event::new(
                project,
                protocol::PlanCreated {
                    source: protocol::PlanSource::PlanFile,
                    created: out
                        .created
                        .iter()
                        .map(|t| protocol::PlannedTask {
                            id: t.id.to_string(),
                            plan_key: t.plan_key.clone(),
                        })
                        .collect(),
                    skipped: out.skipped.iter().map(key_of).collect(),
                    ..Default::default()
                },
                format!(
                    "imported a plan: {} task(s) created, {} already present",
                    out.created.len(),
                    out.skipped.len()
                ),
            );
            insert_event(tx, &ev)?;
            Ok(out)
        })
    }

    /// The task a plan section became, if it was imported.
    pub fn task_by_plan_key(&self, project: &str, key: &str) -> Result<Option<Task>> {
        self.read(|tx| task_by_plan_key(tx, project, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventFilter;
    use orch_core::TaskStatus;

    fn store() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project("p", "/repo").unwrap();
        s
    }

    fn section(n: &str) -> NewTask {
        NewTask {
            project: "p".into(),
            title: format!("task {n}"),
            description: format!("do {n}"),
            plan_key: Some(format!("m1.md#{n}")),
            ..NewTask::default()
        }
    }

    fn claim_one(s: &Store) -> Option<Task> {
        let mut got = s.claim_pending("p", 10).unwrap();
        assert!(got.len() <= 1, "at most one plan task is claimable at once");
        got.pop()
    }

    fn merge(s: &Store, t: &Task) {
        assert!(s
            .transition(&t.id, &[TaskStatus::Running], TaskStatus::Merged, "test")
            .unwrap());
    }

    #[test]
    fn tasks_run_in_file_order_each_after_the_one_before_merged() {
        let s = store();
        let plan = [section("1.1"), section("1.2"), section("1.3")];
        let out = s.import_plan("p", &plan).unwrap();
        assert_eq!(out.created.len(), 3);
        assert!(out.skipped.is_empty());
        let ids: Vec<TaskId> = out.created.iter().map(|t| t.id.clone()).collect();
        assert!(out.created[0].depends_on.is_empty());
        assert_eq!(out.created[1].depends_on, vec![ids[0].clone()]);
        assert_eq!(out.created[2].depends_on, vec![ids[1].clone()]);
        assert_eq!(out.created[1].plan_key.as_deref(), Some("m1.md#1.2"));

        for (i, id) in ids.iter().enumerate() {
            let t = claim_one(&s).unwrap();
            assert_eq!(&t.id, id, "task {i} comes next");
            // While it runs (or passed, or merges), nothing else starts.
            assert!(claim_one(&s).is_none());
            assert!(s
                .transition(&t.id, &[TaskStatus::Running], TaskStatus::Passed, "t")
                .unwrap());
            assert!(claim_one(&s).is_none());
            assert!(s
                .transition(&t.id, &[TaskStatus::Passed], TaskStatus::Running, "t")
                .unwrap());
            merge(&s, &t);
        }
        assert!(claim_one(&s).is_none());
        let ev = s
            .events(&EventFilter {
                project: Some("p".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| e.kind() == orch_protocol::EventKind::PlanCreated));
    }

    #[test]
    fn re_import_adds_nothing_twice_and_appends_new_sections_after_the_last() {
        let s = store();
        let first = s
            .import_plan("p", &[section("1.1"), section("1.2")])
            .unwrap();
        let again = s
            .import_plan("p", &[section("1.1"), section("1.2")])
            .unwrap();
        assert!(again.created.is_empty());
        assert_eq!(again.skipped.len(), 2);
        assert_eq!(s.tasks(Some("p"), None).unwrap().len(), 2);

        // Task 1.1 is done by now; a new section 1.3 waits for 1.2.
        let t = claim_one(&s).unwrap();
        merge(&s, &t);
        let more = s
            .import_plan("p", &[section("1.1"), section("1.2"), section("1.3")])
            .unwrap();
        assert_eq!(more.created.len(), 1);
        assert_eq!(more.skipped.len(), 2);
        assert_eq!(more.skipped[0].status, TaskStatus::Merged);
        assert_eq!(
            more.created[0].depends_on,
            vec![first.created[1].id.clone()]
        );
        assert_eq!(s.tasks(Some("p"), None).unwrap().len(), 3);
        // The next claim is 1.2, not the new section.
        assert_eq!(claim_one(&s).unwrap().id, first.created[1].id);
    }

    #[test]
    fn a_bad_plan_writes_nothing() {
        let s = store();
        s.import_plan("p", &[section("1.1")]).unwrap();
        let events_before = s.events(&EventFilter::default()).unwrap().len();

        // An empty title in the third section: the first two are not kept.
        let mut bad = section("1.3");
        bad.title = " ".into();
        let err = s
            .import_plan("p", &[section("1.1"), section("1.2"), bad])
            .unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)), "{err:?}");
        assert!(s.task_by_plan_key("p", "m1.md#1.2").unwrap().is_none());

        // Duplicate keys, missing keys, another project's tasks.
        let err = s
            .import_plan("p", &[section("2.1"), section("2.1")])
            .unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let mut keyless = section("2.2");
        keyless.plan_key = None;
        assert!(s
            .import_plan("p", &[keyless])
            .unwrap_err()
            .to_string()
            .contains("no plan key"));
        let mut other = section("2.3");
        other.project = "q".into();
        assert!(s.import_plan("p", &[other]).is_err());
        assert!(matches!(
            s.import_plan("nope", &[]),
            Err(StateError::NotFound { .. })
        ));

        assert_eq!(s.tasks(Some("p"), None).unwrap().len(), 1);
        assert_eq!(
            s.events(&EventFilter::default()).unwrap().len(),
            events_before
        );
    }

    #[test]
    fn appending_after_a_failed_section_is_refused_with_the_fix() {
        let s = store();
        let out = s.import_plan("p", &[section("1.1")]).unwrap();
        let t = claim_one(&s).unwrap();
        s.fail_task(&t.id, "3 attempts failed").unwrap();
        let err = s
            .import_plan("p", &[section("1.1"), section("1.2")])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(out.created[0].id.as_str())
                && msg.contains("is failed")
                && msg.contains("m1.md#1.2")
                && msg.contains("nothing was imported"),
            "{msg}"
        );
        assert_eq!(s.tasks(Some("p"), None).unwrap().len(), 1);
    }

    #[test]
    fn a_failed_section_fails_the_rest_of_the_plan_with_a_reason() {
        let s = store();
        let out = s
            .import_plan("p", &[section("1.1"), section("1.2"), section("1.3")])
            .unwrap();
        let t = claim_one(&s).unwrap();
        s.fail_task(&t.id, "3 attempts failed\nmore detail")
            .unwrap();
        let second = s.task(out.created[1].id.as_str()).unwrap();
        let third = s.task(out.created[2].id.as_str()).unwrap();
        assert_eq!(second.status, TaskStatus::Failed);
        assert_eq!(third.status, TaskStatus::Failed);
        let why = second.failure_reason.unwrap();
        assert!(
            why.contains(t.id.as_str()) && why.contains("failed (3 attempts failed)"),
            "{why}"
        );
        let why = third.failure_reason.unwrap();
        assert!(why.contains(second.id.as_str()), "{why}");
    }
}
