//! Requirements files `orch serve` found in its requirements folder. Each
//! file is claimed once, by its path, before its project is made: a claim
//! that finds the path taken does nothing, so neither a second look at the
//! folder nor a restart makes the same project twice. The row then says
//! how it went (`done`, or `failed` with why).
//!
//! The events of the work itself (`project_created`, `project_archived`,
//! warnings) are recorded by the flow that does it, under the project.

use crate::Cached;

use crate::codec::now;
use crate::error::{Result, StateError};
use crate::Store;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Where a requirements file's project got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequirementsStatus {
    /// Claimed; its project is being made (or orch stopped while it was).
    Started,
    Done,
    Failed,
}

impl RequirementsStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequirementsStatus::Started => "started",
            RequirementsStatus::Done => "done",
            RequirementsStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "started" => Ok(RequirementsStatus::Started),
            "done" => Ok(RequirementsStatus::Done),
            "failed" => Ok(RequirementsStatus::Failed),
            other => Err(StateError::Corrupt(format!(
                "requirements file status `{other}` is not one of started, done, failed"
            ))),
        }
    }
}

/// One claimed requirements file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequirementsFile {
    /// The file's absolute path when it was claimed.
    pub path: String,
    /// SHA-256 of its contents then, hex.
    pub sha256: String,
    /// The project it makes.
    pub project: String,
    pub status: RequirementsStatus,
    /// What happened: the archive, or why it failed.
    pub detail: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Store {
    /// Claims `path` for `project`: true when this call claimed it, false
    /// when it was claimed before (by anyone, whatever came of it).
    pub fn claim_requirements_file(&self, path: &str, sha256: &str, project: &str) -> Result<bool> {
        self.write(|tx| {
            let at = now();
            let inserted = tx.run_cached(
                "INSERT INTO requirements_files (path, sha256, project, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'started', ?4, ?4)
                 ON CONFLICT(path) DO NOTHING",
                params![path, sha256, project, at],
            )?;
            Ok(inserted == 1)
        })
    }

    /// Records how the claimed file's project went.
    pub fn finish_requirements_file(
        &self,
        path: &str,
        status: RequirementsStatus,
        detail: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| {
            let changed = tx.run_cached(
                "UPDATE requirements_files SET status = ?2, detail = ?3, updated_at = ?4 WHERE path = ?1",
                params![path, status.as_str(), detail, now()],
            )?;
            if changed == 0 {
                return Err(StateError::NotFound {
                    what: format!("requirements file {path} (it was never claimed)"),
                });
            }
            Ok(())
        })
    }

    /// The claim on `path`, if any.
    pub fn requirements_file(&self, path: &str) -> Result<Option<RequirementsFile>> {
        self.read(|tx| {
            let row = tx
                .row_cached(
                    "SELECT path, sha256, project, status, detail, created_at, updated_at
                     FROM requirements_files WHERE path = ?1",
                    [path],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    },
                )
                .optional()?;
            row.map(
                |(path, sha256, project, status, detail, created_at, updated_at)| {
                    Ok(RequirementsFile {
                        path,
                        sha256,
                        project,
                        status: RequirementsStatus::parse(&status)?,
                        detail,
                        created_at,
                        updated_at,
                    })
                },
            )
            .transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_is_claimed_once_and_keeps_its_outcome_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orch.db");
        let s = Store::open(&db).unwrap();
        assert_eq!(s.requirements_file("/r/todo.md").unwrap(), None);
        assert!(s
            .claim_requirements_file("/r/todo.md", "ab", "todo")
            .unwrap());
        assert!(!s
            .claim_requirements_file("/r/todo.md", "cd", "todo")
            .unwrap());
        let row = s.requirements_file("/r/todo.md").unwrap().unwrap();
        assert_eq!(row.status, RequirementsStatus::Started);
        assert_eq!((row.sha256.as_str(), row.project.as_str()), ("ab", "todo"));

        s.finish_requirements_file("/r/todo.md", RequirementsStatus::Done, Some("/a.tar.gz"))
            .unwrap();
        drop(s);
        // Another process (a restart) sees the claim and its outcome.
        let again = Store::open(&db).unwrap();
        assert!(!again
            .claim_requirements_file("/r/todo.md", "ab", "todo")
            .unwrap());
        let row = again.requirements_file("/r/todo.md").unwrap().unwrap();
        assert_eq!(row.status, RequirementsStatus::Done);
        assert_eq!(row.detail.as_deref(), Some("/a.tar.gz"));
    }

    #[test]
    fn finishing_an_unclaimed_file_is_an_error() {
        let s = Store::open_in_memory().unwrap();
        let err = s
            .finish_requirements_file("/nope.md", RequirementsStatus::Failed, None)
            .unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }), "{err}");
    }
}
