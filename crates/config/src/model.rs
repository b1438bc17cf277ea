//! Typed configuration, with the defaults a new user gets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The one retry policy for every model call, and the circuit breaker.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Prices per million tokens, by model name (overrides and additions to
    /// the shipped table; the longest matching prefix wins).
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// Send every role to the simulated provider (also `--dry-run` or
    /// `ORCH_DRY_RUN=true`): try a config end to end without spending.
    #[serde(default)]
    pub dry_run: bool,
    /// Put tool arguments and output, the architect's plan, judge issues and
    /// error texts into exported trace spans (off: spans carry only names,
    /// timings, counts and ids).
    #[serde(default)]
    pub trace_content: bool,
    /// `orch serve`: the HTTP API and the daemon's shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[new_projects]`: the project settings `orch new` (and `orch serve`'s
    /// requirements folder) give each project they create: any
    /// `[[projects]]` key but `name` and `path`, copied as written into the
    /// new project's entry. Checked at load as a project would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_projects: Option<toml::Table>,
    /// Directory of the config file (set by the loader, not read from it).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Path of the config file (set by the loader).
    #[serde(skip)]
    pub source: PathBuf,
    /// Values read from the `.env` file beside the config (set by the
    /// loader). Debug output shows only the names, never the values.
    #[serde(skip)]
    pub dotenv: DotEnv,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            providers: BTreeMap::new(),
            projects: Vec::new(),
            retry: RetryConfig::default(),
            prices: BTreeMap::new(),
            dry_run: false,
            trace_content: false,
            server: ServerConfig::default(),
            new_projects: None,
            base_dir: PathBuf::new(),
            source: PathBuf::new(),
            dotenv: DotEnv::default(),
        }
    }
}

/// `[server]`: how `orch serve` listens and stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API (`127.0.0.1:7777`); unset = no API unless
    /// `orch serve --listen` gives one.
    pub listen: Option<String>,
    /// Environment variable holding the API's bearer token. Without a token
    /// the server refuses to listen on anything but loopback.
    pub token_env: Option<String>,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
    /// On SIGTERM or Ctrl-C, how long running attempts may go on before
    /// they are interrupted (a restart resumes them).
    pub shutdown_grace_seconds: u64,
    /// A folder `orch serve` watches for requirements files (`*.md`,
    /// `*.txt`): each new one becomes a project, as `orch new` makes it.
    /// Relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            token_env: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 60,
            requirements_dir: None,
        }
    }
}

/// `KEY=VALUE` pairs from a `.env` file. Cheap to clone (shared), and its
/// `Debug` output redacts the values because they are usually secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DotEnv(Arc<BTreeMap<String, String>>);

impl DotEnv {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        DotEnv(Arc::new(values))
    }
}

impl std::ops::Deref for DotEnv {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for DotEnv {
    fn from(values: BTreeMap<String, String>) -> Self {
        DotEnv::new(values)
    }
}

impl std::fmt::Debug for DotEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names are useful when debugging; values are secrets.
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".orch")
}

impl Config {
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// The project named `name`, or a message that names the config file
    /// and lists the configured projects (for every caller's own error).
    pub fn project_or_hint(&self, name: &str) -> Result<&ProjectConfig, String> {
        self.project(name).ok_or_else(|| {
            let names: Vec<_> = self.projects.iter().map(|p| p.name.as_str()).collect();
            format!(
                "no project named `{name}` in {}; configured projects: {}",
                self.source.display(),
                if names.is_empty() {
                    "(none; add one with `orch init PATH`)".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
    }
    /// A path from the file, resolved against the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
    /// `provider`'s API key: its `api_key_env` variable from the process
    /// environment, else from this config's `.env` values. Same as
    /// [`ProviderConfig::api_key`], but also works for a `ProviderConfig`
    /// built in code rather than loaded.
    pub fn api_key(&self, provider: &ProviderConfig) -> Option<String> {
        lookup_key(provider.api_key_env.as_deref()?, &self.dotenv).or_else(|| provider.api_key())
    }
    /// The project's repository, resolved against the config file's directory.
    pub fn project_path(&self, p: &ProjectConfig) -> PathBuf {
        self.resolve_path(&p.path)
    }
    /// A replay provider's script, resolved against the config file's directory.
    pub fn provider_script_path(&self, p: &ProviderConfig) -> Option<PathBuf> {
        p.script.as_deref().map(|s| self.resolve_path(s))
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
    /// Any OpenAI-compatible chat-completions server (see `preset`).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Ollama's native `/api/chat`.
    Ollama,
    /// Scripted responses from a file (tests and `orch demo`).
    Replay,
    /// Plausible answers made up locally, for dry runs; costs nothing.
    Simulated,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Replay => "replay",
            ProviderKind::Simulated => "simulated",
        }
    }
}

/// `[retry]`: the one retry policy and the per-provider circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Waits between tries, in seconds; after the last, give up. The default
    /// starts short, then follows the design notes' long outage schedule.
    #[serde(default = "default_schedule")]
    pub schedule_seconds: Vec<u64>,
    /// Random spread added to each wait, as a fraction (0.2 = up to 20 %).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Longest `Retry-After` honoured, in seconds.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_seconds: u64,
    /// Consecutive failed calls that open a provider's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker rests the provider, in seconds.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_seconds: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            schedule_seconds: default_schedule(),
            jitter: default_jitter(),
            max_retry_after_seconds: default_max_retry_after(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_seconds: default_breaker_cooldown(),
        }
    }
}

fn default_schedule() -> Vec<u64> {
    vec![2, 30, 60, 120, 300, 600]
}
fn default_jitter() -> f64 {
    0.2
}
fn default_max_retry_after() -> u64 {
    600
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u64 {
    60
}

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Input tokens served from the provider's prompt cache; defaults to
    /// the input price.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// What verification does with failing tests that also fail on the base
/// commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PreexistingPolicy {
    /// Tolerate them, unless the task targets them (its acceptance tests, or
    /// tests its title or description names); always list them.
    #[default]
    TolerateUntargeted,
    /// Any failing test blocks, whoever broke it.
    Block,
}

/// What the merge queue does with passing work that no longer merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveConflicts {
    /// The task's worker resolves the conflict in a scratch worktree; only
    /// a resolution that passes the whole verification lands.
    #[default]
    Agent,
    /// The task goes back to its worker with the conflict as feedback.
    Feedback,
}

/// The `max_tokens` sent with each role's requests, so no model can
/// generate without end (a single-slot local server would hang on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleTokens {
    pub worker: u32,
    pub planner: u32,
    pub judge: u32,
    pub architect: u32,
    pub reviewer: u32,
}

impl Default for RoleTokens {
    fn default() -> Self {
        RoleTokens {
            worker: 4096,
            planner: 4096,
            judge: 1024,
            architect: 2048,
            reviewer: 4096,
        }
    }
}

impl RoleTokens {
    /// The cap for `role` (the roles metered calls are recorded under);
    /// unknown roles get the worker's.
    pub fn for_role(&self, role: &str) -> u32 {
        match role {
            "planner" => self.planner,
            "judge" => self.judge,
            "architect" => self.architect,
            "reviewer" => self.reviewer,
            _ => self.worker,
        }
    }
}

/// `[projects.refine]`: one attempt iterates on its branch, with the
/// verifier's report and the judge's issues as feedback, until the judge's
/// score reaches `threshold`; it keeps the best-scoring snapshot and stops
/// after `max_iterations`, or after `plateau` iterations in a row that did
/// not beat the best score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefineConfig {
    /// Judge score (0–10) that ends refinement.
    pub threshold: f64,
    /// Most iterations per attempt.
    pub max_iterations: u32,
    /// Iterations in a row without a better score that end refinement.
    pub plateau: u32,
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            threshold: 8.0,
            max_iterations: 10,
            plateau: 3,
        }
    }
}

/// How `route(task)` orders candidate models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Cheapest capable model first; stronger ones only on retries.
    #[default]
    CostFirst,
    /// Strongest model first.
    QualityFirst,
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
    /// For `openai`: a known service whose base URL and key variable are
    /// filled in (openai, groq, together, openrouter, xai, deepseek,
    /// mistral, vllm, llamacpp, lmstudio, ollama).
    #[serde(default)]
    pub preset: Option<String>,
    /// `provider:model` that takes over when this provider is down (its
    /// circuit breaker is open or its retries ran out).
    #[serde(default)]
    pub fallback: Option<ModelRef>,
    /// The `.env` values loaded beside the config, so [`Self::api_key`] can
    /// fall back to them (set by the loader; redacted in Debug output).
    #[serde(skip)]
    pub dotenv: DotEnv,
}

fn default_request_timeout() -> u64 {
    300
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: None,
            api_key_env: None,
            script: None,
            request_timeout_seconds: default_request_timeout(),
            preset: None,
            fallback: None,
            dotenv: DotEnv::default(),
        }
    }
}

impl ProviderConfig {
    /// The API key: the variable named by `api_key_env`, from the process
    /// environment, else from the `.env` file beside the config. The process
    /// environment wins when both have it. `None` when no variable is
    /// configured or it is unset or empty.
    pub fn api_key(&self) -> Option<String> {
        lookup_key(self.api_key_env.as_deref()?, &self.dotenv)
    }
}

/// Process environment first (even when set but empty), then `.env`.
fn lookup_key(name: &str, dotenv: &DotEnv) -> Option<String> {
    let value = match std::env::var_os(name) {
        Some(v) => v.to_string_lossy().into_owned(),
        None => dotenv.get(name)?.clone(),
    };
    (!value.is_empty()).then_some(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxKind {
    #[default]
    Bwrap,
    /// A long-lived container per worker slot, through the Docker Engine API.
    Docker,
    /// Docker when an engine answers, else bwrap; refuses to run
    /// model-written code when neither works.
    Auto,
    /// No isolation at all; orch says so loudly every run.
    None,
}

impl SandboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Bwrap => "bwrap",
            SandboxKind::Docker => "docker",
            SandboxKind::Auto => "auto",
            SandboxKind::None => "none",
        }
    }
}

/// `[projects.docker]`: the Docker backend's image and volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Image to run (built or imported beforehand).
    #[serde(default)]
    pub image: Option<String>,
    /// Dockerfile to build the image from instead (relative to the config).
    #[serde(default)]
    pub dockerfile: Option<PathBuf>,
    /// Named volumes that persist across resets: volume name → mount path
    /// (caches, models, generated data).
    #[serde(default)]
    pub volumes: BTreeMap<String, String>,
    /// Mount path of the logs volume, cleared on every reset.
    #[serde(default = "default_logs_path")]
    pub logs_path: String,
    /// Host directory mounted read-only at `shared_data_path`.
    #[serde(default)]
    pub shared_data: Option<PathBuf>,
    #[serde(default = "default_shared_data_path")]
    pub shared_data_path: String,
}

fn default_logs_path() -> String {
    "/env/logs".into()
}
fn default_shared_data_path() -> String {
    "/shared/data".into()
}

/// What does a task's work (defined beside the task, which may name its own).
pub use orch_core::WorkerKind;

/// `[projects.agents.<name>]`: how one agent CLI is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The program: a path (relative to the config file) or a name on PATH.
    pub binary: Option<String>,
    /// Extra arguments, appended to the ones orch passes.
    pub args: Vec<String>,
    /// The model name the CLI is told to use (some pick prompts, tools or
    /// edit formats by it). The calls still go to the project's worker
    /// model: orch's proxy answers every call with it.
    pub model: Option<String>,
}

/// `[projects.agents]`: settings per agent CLI, by worker name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    #[serde(rename = "claude-code")]
    pub claude_code: AgentConfig,
    pub codex: AgentConfig,
    pub aider: AgentConfig,
    #[serde(rename = "mini-swe-agent")]
    pub mini_swe_agent: AgentConfig,
}

impl AgentsConfig {
    /// The settings of `kind`'s CLI (defaults for the built-in worker).
    pub fn for_kind(&self, kind: WorkerKind) -> AgentConfig {
        match kind {
            WorkerKind::Builtin => AgentConfig::default(),
            WorkerKind::ClaudeCode => self.claude_code.clone(),
            WorkerKind::Codex => self.codex.clone(),
            WorkerKind::Aider => self.aider.clone(),
            WorkerKind::MiniSweAgent => self.mini_swe_agent.clone(),
        }
    }
}

/// `provider:model`, e.g. `local:qwen2.5-coder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl ModelRef {
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        ModelRef {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl std::str::FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelRef::try_from(s.to_string())
    }
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
    /// Memory limit for sandboxed commands, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Most processes a sandboxed command may have at once.
    #[serde(default = "default_pids_limit")]
    pub pids_limit: u64,
    /// CPUs a sandboxed command may use (fractions allowed); unset = all.
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub docker: DockerConfig,
    /// Models for the other roles (`provider:model`); unset roles use the
    /// worker model (architect, reviewer) or are skipped (planner, judge).
    #[serde(default)]
    pub architect_model: Option<ModelRef>,
    #[serde(default)]
    pub reviewer_model: Option<ModelRef>,
    /// More worker candidates for routing, besides `worker_model`.
    #[serde(default)]
    pub worker_models: Vec<ModelRef>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Stop a task's worker before its model spending passes this.
    #[serde(default)]
    pub max_budget_per_task_usd: Option<f64>,
    /// Pause the project when a day's model spending reaches this (UTC day).
    #[serde(default)]
    pub daily_budget_usd: Option<f64>,
    /// Failing tests that also fail on the base commit.
    #[serde(default)]
    pub preexisting_failures: PreexistingPolicy,
    /// Attempts a task may lose to orch's own failures (git, filesystem,
    /// sandbox start-up, provider outage) before it fails as
    /// "infrastructure".
    #[serde(default = "default_max_infra_failures")]
    pub max_infra_failures: u32,
    /// First wait before a task that hit an infrastructure failure is
    /// claimed again; doubles with each one, up to 10 minutes.
    #[serde(default = "default_infra_backoff")]
    pub infra_backoff_seconds: u64,
    /// Ask the planner again after this long even if nothing changed;
    /// unset = only when something changed.
    #[serde(default)]
    pub planner_interval_seconds: Option<u64>,
    /// `max_tokens` per role.
    #[serde(default)]
    pub max_tokens: RoleTokens,
    /// Refinement to a score; unset = one pass per attempt.
    #[serde(default)]
    pub refine: Option<RefineConfig>,
    /// `orch serve` runs the project on this schedule: `every 30m` (s, m, h,
    /// d) or a cron expression. Unset = only on triggers, the API or by hand.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Files (globs, relative to the repository) whose change wakes the
    /// project under `orch serve`: a backlog asks the planner, a plan file
    /// (`## Task N.M` sections) is imported.
    #[serde(default)]
    pub watch: Vec<String>,
    /// An attempt with no event for this long is interrupted and retried by
    /// the patrol.
    #[serde(default = "default_stuck_after")]
    pub stuck_after_seconds: u64,
    /// Consecutive failed tasks that pause the project.
    #[serde(default = "default_pause_after_failures")]
    pub pause_after_failures: u32,
    /// Most passing branches the merge queue merges and verifies together.
    #[serde(default = "default_merge_batch_max")]
    pub merge_batch_max: u32,
    /// Most merge batches verified at once, each on top of the ones ahead
    /// of it (Zuul's window); 1 verifies one batch at a time.
    #[serde(default = "default_merge_window")]
    pub merge_window: u32,
    /// Run the checks while the model thinks, on a snapshot of what the
    /// built-in agent wrote so far; an agent that finishes without writing
    /// again is verified by that run (see `early.rs` in the engine).
    #[serde(default = "default_true")]
    pub early_verify: bool,
    /// A passing branch that no longer merges: resolved by the worker
    /// (`agent`) or sent back with the conflict (`feedback`).
    #[serde(default)]
    pub resolve_conflicts: ResolveConflicts,
    /// Two failed attempts in a row whose failure output is at least this
    /// similar (0–1, as difflib's ratio, digits ignored) stop the task and
    /// ask a person instead of retrying; 1.0 stops only identical output,
    /// 0 disables the check.
    #[serde(default = "default_loop_similarity")]
    pub loop_similarity: f64,
    /// Stop and ask a person when an attempt's tree is the one two attempts
    /// before it produced (A → B → A): the worker is going in circles.
    #[serde(default = "default_true")]
    pub stop_on_oscillation: bool,
    /// What does the work: `builtin` or an agent CLI.
    #[serde(default)]
    pub worker: WorkerKind,
    /// Per-agent settings (`binary`, `args`, `model`).
    #[serde(default)]
    pub agents: AgentsConfig,
    /// Best-of-N: attempts of one task run in parallel per round, each on
    /// its own branch and worktree; the judge ranks those that pass and the
    /// best goes to the merge queue. 1 = one attempt at a time.
    #[serde(default = "default_candidates")]
    pub candidates: u32,
    /// The worker model of each candidate: candidate k takes the k-th,
    /// cycling; empty = the usual routing (`worker_model`, `worker_models`).
    #[serde(default)]
    pub candidate_models: Vec<ModelRef>,
    /// The worker of each candidate, likewise; empty = `worker`.
    #[serde(default)]
    pub candidate_workers: Vec<WorkerKind>,
}

impl ProjectConfig {
    /// A project with every optional setting at its default (what a new
    /// user gets from `orch init`).
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, worker_model: ModelRef) -> Self {
        ProjectConfig {
            name: name.into(),
            path: path.into(),
            main_branch: String::new(),
            setup_command: String::new(),
            format_command: String::new(),
            lint_command: String::new(),
            test_command: String::new(),
            worker_model,
            planner_model: None,
            judge_model: None,
            max_workers: default_max_workers(),
            max_attempts: default_max_attempts(),
            max_turns: default_max_turns(),
            worker_timeout_seconds: default_worker_timeout(),
            command_timeout_seconds: default_command_timeout(),
            output_limit_bytes: default_output_limit(),
            sandbox: SandboxKind::default(),
            network: false,
            pass_env: Vec::new(),
            auto_plan: true,
            judge_min_score: default_pass_score(),
            memory_mb: default_memory_mb(),
            pids_limit: default_pids_limit(),
            cpus: None,
            docker: DockerConfig::default(),
            architect_model: None,
            reviewer_model: None,
            worker_models: Vec::new(),
            strategy: Strategy::default(),
            max_budget_per_task_usd: None,
            daily_budget_usd: None,
            preexisting_failures: PreexistingPolicy::default(),
            max_infra_failures: default_max_infra_failures(),
            infra_backoff_seconds: default_infra_backoff(),
            planner_interval_seconds: None,
            max_tokens: RoleTokens::default(),
            refine: None,
            schedule: None,
            watch: Vec::new(),
            stuck_after_seconds: default_stuck_after(),
            pause_after_failures: default_pause_after_failures(),
            merge_batch_max: default_merge_batch_max(),
            merge_window: default_merge_window(),
            early_verify: true,
            resolve_conflicts: ResolveConflicts::default(),
            loop_similarity: default_loop_similarity(),
            stop_on_oscillation: true,
            worker: WorkerKind::default(),
            agents: AgentsConfig::default(),
            candidates: default_candidates(),
            candidate_models: Vec::new(),
            candidate_workers: Vec::new(),
        }
    }
}

fn default_candidates() -> u32 {
    1
}

fn default_stuck_after() -> u64 {
    900
}
fn default_pause_after_failures() -> u32 {
    5
}
fn default_merge_batch_max() -> u32 {
    8
}
fn default_merge_window() -> u32 {
    2
}
fn default_loop_similarity() -> f64 {
    0.8
}
fn default_max_infra_failures() -> u32 {
    5
}
fn default_infra_backoff() -> u64 {
    5
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
fn default_memory_mb() -> u64 {
    4096
}
fn default_pids_limit() -> u64 {
    1024
}
fn default_pass_score() -> f64 {
    6.0
}
