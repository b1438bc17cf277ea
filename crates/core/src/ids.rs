//! Identifiers. Task ids are short lowercase hex strings so they fit in branch
//! names (`orch/<task-id>`) and are easy to type on a command line.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Returns a fresh 12-hex-digit identifier.
pub fn new_id() -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    raw[..12].to_string()
}

/// Identifier of a task; also the suffix of its branch `orch/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskId(pub String);

impl TaskId {
    pub fn new() -> Self {
        TaskId(new_id())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The git branch a task's work lives on.
    pub fn branch(&self) -> String {
        format!("orch/{}", self.0)
    }
    /// The ref that keeps attempt `number`'s commit, so failed work can be
    /// inspected or picked up after its branch moves on.
    pub fn attempt_ref(&self, number: u32) -> String {
        format!("refs/orch/attempts/{}/{number}", self.0)
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TaskId {
    fn from(s: &str) -> Self {
        TaskId(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_hex_and_unique() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(TaskId(a.clone()).branch(), format!("orch/{a}"));
    }
}
