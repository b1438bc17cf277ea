//! Typed configuration, with the defaults a new user gets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where state, worktrees and the audit trail live. Relative paths are
    /// resolved against the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Directory of the config file (set by the loader, not read from it).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Path of the config file (set by the loader).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".orch")
}

impl Config {
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }
    /// data_dir resolved against the config file's directory.
    pub fn data_dir_abs(&self) -> PathBuf {
        if self.data_dir.is_absolute() {
            self.data_dir.clone()
        } else {
            self.base_dir.join(&self.data_dir)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat-completions server.
    Openai,
    /// Scripted responses from a file (tests and `orch demo`).
    Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// For `openai`: e.g. `http://127.0.0.1:8080/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key. The key itself
    /// never goes in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// For `replay`: the script file (relative to the config file).
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
}

fn default_request_timeout() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxKind {
    #[default]
    Bwrap,
    /// No isolation at all; orch says so loudly every run.
    None,
}

/// `provider:model`, e.g. `local:qwen2.5-coder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl TryFrom<String> for ModelRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.split_once(':') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(ModelRef {
                provider: p.to_string(),
                model: m.to_string(),
            }),
            _ => Err(format!(
                "expected `provider:model` (for example `local:qwen2.5-coder`), found `{s}`"
            )),
        }
    }
}

impl From<ModelRef> for String {
    fn from(m: ModelRef) -> String {
        format!("{}:{}", m.provider, m.model)
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.model)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// The git repository. Relative paths resolve against the config file.
    pub path: PathBuf,
    /// Branch that passing work lands on; detected from the repository's
    /// HEAD when empty.
    #[serde(default)]
    pub main_branch: String,
    #[serde(default)]
    pub setup_command: String,
    #[serde(default)]
    pub format_command: String,
    #[serde(default)]
    pub lint_command: String,
    #[serde(default)]
    pub test_command: String,
    pub worker_model: ModelRef,
    pub planner_model: Option<ModelRef>,
    pub judge_model: Option<ModelRef>,
    #[serde(default = "default_max_workers")]
    pub max_workers: u32,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    #[serde(default = "default_worker_timeout")]
    pub worker_timeout_seconds: u64,
    /// Timeout for each verification command (setup, format, lint, test).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_seconds: u64,
    /// Cap on any one tool output or command output kept, in bytes.
    #[serde(default = "default_output_limit")]
    pub output_limit_bytes: usize,
    #[serde(default)]
    pub sandbox: SandboxKind,
    /// Allow network inside the sandbox.
    #[serde(default)]
    pub network: bool,
    /// Environment variables passed into the sandbox (names only; values are
    /// read from orch's environment). Nothing else leaks in.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Ask the planner for tasks when fewer than max_workers are pending.
    #[serde(default = "default_true")]
    pub auto_plan: bool,
    /// Minimum judge score (0–10) for a pass.
    #[serde(default = "default_pass_score")]
    pub judge_min_score: f64,
}

fn default_max_workers() -> u32 {
    3
}
fn default_max_attempts() -> u32 {
    3
}
fn default_max_turns() -> u32 {
    50
}
fn default_worker_timeout() -> u64 {
    600
}
fn default_command_timeout() -> u64 {
    600
}
fn default_output_limit() -> usize {
    64 * 1024
}
fn default_true() -> bool {
    true
}
fn default_pass_score() -> f64 {
    6.0
}
