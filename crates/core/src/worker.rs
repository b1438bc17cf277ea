//! What does a task's work: orch's own tool loop or an agent CLI. A
//! project names one (`worker` in the config) and a task may name its
//! own, so the kind lives here, beside the task, rather than in the config.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What does a task's work: orch's own tool loop or an agent CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WorkerKind {
    /// orch's built-in tool-calling agent.
    #[default]
    Builtin,
    /// Anthropic's Claude Code CLI (`claude -p`), over the Messages API.
    ClaudeCode,
    /// OpenAI's Codex CLI (`codex exec`), over the Responses API.
    Codex,
    /// aider (`aider --message`), over Chat Completions.
    Aider,
    /// mini-swe-agent (`mini`), over Chat Completions.
    MiniSweAgent,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 5] = [
        WorkerKind::Builtin,
        WorkerKind::ClaudeCode,
        WorkerKind::Codex,
        WorkerKind::Aider,
        WorkerKind::MiniSweAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Builtin => "builtin",
            WorkerKind::ClaudeCode => "claude-code",
            WorkerKind::Codex => "codex",
            WorkerKind::Aider => "aider",
            WorkerKind::MiniSweAgent => "mini-swe-agent",
        }
    }

    /// `builtin, claude-code, codex, aider, mini-swe-agent`: for error messages.
    pub fn names() -> String {
        Self::ALL.map(WorkerKind::as_str).join(", ")
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown worker `{s}`; expected one of {}",
                    WorkerKind::names()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_kinds() {
        for k in WorkerKind::ALL {
            assert_eq!(k.as_str().parse::<WorkerKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        let e = "cursor".parse::<WorkerKind>().unwrap_err();
        assert!(e.contains("`cursor`"), "{e}");
        assert!(
            e.contains("builtin, claude-code, codex, aider, mini-swe-agent"),
            "{e}"
        );
    }
}
