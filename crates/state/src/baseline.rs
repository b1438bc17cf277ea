//! Cache of test results on base commits, keyed by (project, commit,
//! command), so verification does not rerun the base's tests every attempt.

use crate::Cached;

use crate::codec::now;
use crate::error::{Result, StateError};
use crate::Store;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// The cached result for this commit and command, if any.
    pub fn baseline(
        &self,
        project: &str,
        commit: &str,
        command: &str,
    ) -> Result<Option<serde_json::Value>> {
        self.read(|tx| {
            let raw: Option<String> = tx
                .row_cached(
                    "SELECT value FROM baselines WHERE project = ?1 AND commit_sha = ?2 AND command = ?3",
                    params![project, commit, command],
                    |r| r.get(0),
                )
                .optional()?;
            raw.map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| StateError::Corrupt(format!("baseline for commit {commit} is not JSON: {e}")))
            })
            .transpose()
        })
    }

    /// Stores (or replaces) the result for this commit and command.
    pub fn put_baseline(
        &self,
        project: &str,
        commit: &str,
        command: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| StateError::Invalid(format!("baseline value is not serialisable: {e}")))?;
        self.write(|tx| {
            tx.run_cached(
                "INSERT INTO baselines (project, commit_sha, command, value, computed_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(project, commit_sha, command) DO UPDATE SET value = excluded.value,
                     computed_at = excluded.computed_at",
                params![project, commit, command, text, now()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;
    use serde_json::json;

    #[test]
    fn baseline_round_trip_keyed_by_project_commit_command() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.baseline("p", "c1", "cargo test").unwrap(), None);
        let v = json!({"passed": 3, "failed": 1, "failed_tests": ["a::b"]});
        s.put_baseline("p", "c1", "cargo test", &v).unwrap();
        assert_eq!(
            s.baseline("p", "c1", "cargo test").unwrap(),
            Some(v.clone())
        );
        assert_eq!(s.baseline("p", "c2", "cargo test").unwrap(), None);
        assert_eq!(s.baseline("p", "c1", "pytest").unwrap(), None);
        assert_eq!(s.baseline("q", "c1", "cargo test").unwrap(), None);

        let v2 = json!({"passed": 4, "failed": 0});
        s.put_baseline("p", "c1", "cargo test", &v2).unwrap();
        assert_eq!(s.baseline("p", "c1", "cargo test").unwrap(), Some(v2));
    }
}
