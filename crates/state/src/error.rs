//! Errors of the state store. Every message names the problem and what to do
//! about it, because most of them end up printed by the CLI.

use orch_core::TaskStatus;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `what` is a complete sentence: what was missing and how to find a
    /// valid name or id.
    #[error("{what}")]
    NotFound { what: String },

    /// A task id prefix matched more than one task.
    #[error(
        "task id prefix `{prefix}` is ambiguous: it matches {}; type more characters of the id",
        .matches.join(", ")
    )]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },

    /// The task is not in a status that allows the requested change.
    /// `wanted` reads as the end of "so it cannot …".
    #[error("task `{task}` is {from}, so it cannot {wanted}")]
    InvalidTransition {
        task: String,
        from: TaskStatus,
        wanted: String,
    },

    /// `finish_attempt` on an attempt that already finished: finished
    /// attempts are never rewritten.
    #[error(
        "attempt {attempt_id} already finished as `{status}` and is never rewritten; \
         start a new attempt with `start_attempt` instead"
    )]
    AttemptNotRunning { attempt_id: i64, status: String },

    /// The database file or its directory could not be created or opened.
    #[error(
        "cannot open the state database at {path}: {detail}; check the data_dir setting \
         and that orch may create and write files there"
    )]
    Open { path: String, detail: String },

    /// The caller passed an argument the store cannot act on.
    #[error("invalid state store request: {0}")]
    Invalid(String),

    #[error(
        "state database error: {0}; if it says the database is locked or busy, \
         another orch process is holding it: wait for it or stop it and retry"
    )]
    Sqlite(#[source] rusqlite::Error),

    #[error(
        "state database holds a value orch cannot read: {0}; it may have been edited by hand \
         or written by a newer orch: upgrade orch or restore the database from a backup"
    )]
    Corrupt(String),

    #[error("state store lock was poisoned by a panic in another thread; restart orch")]
    Poisoned,
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        // Values that SQLite stored fine but that do not decode into domain
        // types mean the data is bad, not that SQLite failed.
        match e {
            rusqlite::Error::FromSqlConversionFailure(idx, _, inner) => {
                StateError::Corrupt(format!("column {idx}: {inner}"))
            }
            rusqlite::Error::InvalidColumnType(idx, name, ty) => {
                StateError::Corrupt(format!("column {idx} `{name}` has unexpected type {ty}"))
            }
            rusqlite::Error::IntegralValueOutOfRange(idx, v) => {
                StateError::Corrupt(format!("column {idx} holds out-of-range integer {v}"))
            }
            other => StateError::Sqlite(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_actionable() {
        let e = StateError::Ambiguous {
            prefix: "abcd".into(),
            matches: vec!["abcd1".into(), "abcd2".into()],
        };
        let msg = e.to_string();
        assert!(
            msg.contains("abcd1, abcd2") && msg.contains("more characters"),
            "{msg}"
        );

        let e = StateError::InvalidTransition {
            task: "t1".into(),
            from: TaskStatus::Pending,
            wanted: "take an answer".into(),
        };
        assert_eq!(
            e.to_string(),
            "task `t1` is pending, so it cannot take an answer"
        );
    }

    #[test]
    fn conversion_failures_become_corrupt() {
        let e: StateError = rusqlite::Error::IntegralValueOutOfRange(3, -1).into();
        assert!(matches!(e, StateError::Corrupt(_)), "{e:?}");
        let e: StateError = rusqlite::Error::QueryReturnedNoRows.into();
        assert!(matches!(e, StateError::Sqlite(_)), "{e:?}");
    }
}
