//! Agent CLIs as workers: Claude Code, Codex, aider and mini-swe-agent run
//! headless in the task's sandbox and worktree, behind the [`Worker`]
//! trait, so their work goes through the same commit boundary,
//! verification, judge and merge queue as the built-in worker's.
//!
//! One run ([`ExternalWorker::run`]):
//! 1. A private run directory on the host (`$TMPDIR/orch-agent-*`, mode
//!    0700) gets the prompt (`prompt.md`: orch's rules for external agents,
//!    then `spec.task_prompt`, which already carries the task, the feedback
//!    of earlier attempts and a person's answers), the start script
//!    (`agent.sh`) and any config file the agent reads.
//! 2. The metering [`proxy`] listens on `proxy.sock` in that directory and
//!    answers every model call with `spec.provider` (metered: priced,
//!    recorded as role `worker`, refused over the task budget).
//! 3. The sandbox runs `orch __relay --listen 127.0.0.1:PORT --unix
//!    proxy.sock -- sh agent.sh` in the worktree, with the run directory
//!    and the orch binary shown read-only ([`relay`]: bwrap's network
//!    namespace cuts the sandbox off from the host's loopback, so the agent
//!    reaches the proxy through the relay and nothing else). The agent is
//!    given `http://127.0.0.1:PORT` as its API base URL and a dummy key;
//!    `HOME` is a fresh directory under the sandbox's private `/tmp`.
//! 4. The run ends when the agent exits, at the deadline (the sandbox's
//!    runner kills the whole tree), on a cancel (the dropped command is
//!    killed with its tree), or [`STOP_GRACE`] after the proxy refused a
//!    call for good (budget, turn limit, provider failure), which the agent
//!    was shown as an API error first.
//! 5. The agent's own record (its event stream on stdout, or a file the
//!    start script prints after it) is read into tool calls and the final
//!    message ([`Report`]); turns, tokens and cost are the proxy's metered
//!    count, the transcript the longest conversation the proxy saw.
//!
//! How it ends: the proxy's refusal first (budget or outage →
//! [`WorkerEnd::ModelError`] with the provider's message, so the engine's
//! budget and outage handling apply; turns → `TurnLimit`), then the
//! deadline, then the final message: a line `ORCH_ASK_HUMAN: <question>`
//! ([`ASK_SENTINEL`], which the prompt tells the agent to use) →
//! `AskedHuman`; exit code 0 → `Finished` with the final message as the
//! summary; anything else → `Stuck` with the agent's error. An agent that
//! could not start at all (exit 126/127, a sandbox failure) is an
//! infrastructure failure (`ModelError`), not a counted attempt.
//!
//! Limits: `max_turns` and the budgets at the proxy, the deadline and a
//! cancel at the sandbox, `allowed_files`, `.git` and file sizes at the
//! engine's commit boundary (what an agent writes is checked there like
//! any other change). An agent's own tool output caps are its own; orch
//! keeps up to [`STREAM_LIMIT`] bytes of its stdout and stderr.
//!
//! Modules: [`claude_code`], [`codex`], [`aider`], [`mini_swe_agent`] (one
//! per agent: how it is started and read), [`proxy`], [`relay`],
//! [`factory`] (the worker a project's config asks for).

pub mod aider;
pub mod claude_code;
pub mod codex;
pub mod factory;
pub mod mini_swe_agent;
pub mod proxy;
pub mod relay;

use crate::{AgentEvent, AgentObserver, ToolRecord, Worker, WorkerEnd, WorkerOutcome, WorkerSpec};
use orch_config::{AgentConfig, WorkerKind};
use orch_core::Usage;
use orch_providers::Message;
use orch_sandbox::{ExecRequest, ProcessOutput, SandboxError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The line an agent ends with to ask a person (the prompt tells it to).
pub const ASK_SENTINEL: &str = "ORCH_ASK_HUMAN:";
/// Bytes of the agent's stdout and of its stderr kept.
pub const STREAM_LIMIT: usize = 32 * 1024 * 1024;
/// How long an agent may take to show a refused call and exit before it
/// is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The longest run, when the deadline is unbounded.
const MAX_RUN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The rules every external agent gets before the task.
const RULES: &str = "\
You work in the current directory, a git worktree of the project, inside a sandbox without \
network access. orch commits, verifies (with the project's tests) and reviews your work after you \
stop: do not commit, push, create branches or change git settings, and do not disable, skip or \
weaken tests.

When the change is done, stop, and end with a short summary of what you changed.

If the task is ambiguous or blocked and you need a person to decide, do not guess: end with one \
line `ORCH_ASK_HUMAN: <your question>` and stop.";

/// How one agent CLI is started and its record read.
pub trait Agent: Send + Sync {
    /// The worker name (`claude-code`, …).
    fn name(&self) -> &'static str;
    /// The program when the config names none.
    fn default_binary(&self) -> &'static str;
    /// The start script and its environment.
    fn launch(&self, launch: &Launch<'_>) -> Launched;
    /// Tool calls, the final message and errors from what the agent printed.
    fn read(&self, output: &ProcessOutput) -> Report;
}

/// What an agent's start script is built from.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The program (a path or a name on the sandbox's PATH).
    pub binary: &'a str,
    /// The config's extra arguments, appended.
    pub args: &'a [String],
    /// The model name the agent is told.
    pub model: &'a str,
    /// The proxy as the agent reaches it: `http://127.0.0.1:PORT`.
    pub base_url: &'a str,
    /// The run directory (read-only in the sandbox).
    pub run_dir: &'a Path,
    /// `prompt.md` in the run directory.
    pub prompt_file: &'a Path,
    /// A fresh writable directory for the agent's HOME and scratch files.
    pub home: &'a Path,
    pub max_turns: u32,
    /// Longest a single command may take, in seconds (for agents that
    /// take a per-command timeout).
    pub command_timeout_s: u64,
    /// Files the task may write (empty: any).
    pub allowed_files: &'a [String],
}

/// An agent's start: `script` runs under `sh` in the worktree.
#[derive(Debug, Clone, Default)]
pub struct Launched {
    pub script: String,
    pub env: Vec<(String, String)>,
    /// Files written into the run directory first (name, content).
    pub files: Vec<(String, String)>,
}

/// What the agent's own record says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub tools: Vec<ToolRecord>,
    /// Its last message to the user.
    pub final_text: Option<String>,
    /// The error it reported, when it failed.
    pub error: Option<String>,
    /// Turns, tokens and cost as the agent counted them (orch keeps its
    /// own, metered, count; these go to the log).
    pub turns: Option<u32>,
    pub usage: Option<Usage>,
}

/// An agent CLI as a [`Worker`].
pub struct ExternalWorker {
    agent: Box<dyn Agent>,
    settings: AgentConfig,
    /// The program that relays the sandbox's loopback to the proxy.
    relay: PathBuf,
}

impl ExternalWorker {
    /// `kind`'s agent with `settings`; `relay` is the orch binary.
    pub fn new(kind: WorkerKind, settings: AgentConfig, relay: PathBuf) -> Option<Self> {
        let agent: Box<dyn Agent> = match kind {
            WorkerKind::Builtin => return None,
            WorkerKind::ClaudeCode => Box::new(claude_code::ClaudeCode),
            WorkerKind::Codex => Box::new(codex::Codex),
            WorkerKind::Aider => Box::new(aider::Aider),
            WorkerKind::MiniSweAgent => Box::new(mini_swe_agent::MiniSweAgent),
        };
        Some(ExternalWorker {
            agent,
            settings,
            relay,
        })
    }

    fn binary(&self) -> String {
        self.settings
            .binary
            .clone()
            .unwrap_or_else(|| self.agent.default_binary().to_string())
    }
}

/// How the wait for the agent ended.
enum Ended {
    Exited(Result<ProcessOutput, SandboxError>),
    Cancelled,
    /// The proxy refused a call for good and the grace passed.
    Stopped,
    /// orch could not prepare the run.
    Setup(String),
}

#[async_trait::async_trait]
impl Worker for ExternalWorker {
    fn name(&self) -> &str {
        self.agent.name()
    }

    async fn run(&self, spec: WorkerSpec, observer: &dyn AgentObserver) -> WorkerOutcome {
        let prompt = compose_prompt(&spec.system_prompt, &spec.task_prompt);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The CLI starts in the worktree: it has to be there first.
        let ready = tokio::select! {
            biased;
            _ = spec.cancel.cancelled() => Err("the task was cancelled".to_string()),
            ready = spec.workspace.ready() => ready,
        };
        if ready.is_err() {
            return outcome(
                WorkerEnd::Cancelled,
                proxy::Tally::default(),
                Report::default(),
                &prompt,
            );
        }
        let prepared = self.prepare(&spec, &prompt, tx);
        let (ended, tally) = match prepared {
            Err(e) => (Ended::Setup(e), proxy::Tally::default()),
            Ok(run) => {
                let ended = wait(&spec, &run, &mut rx, observer).await;
                (ended, run.proxy.tally())
            }
        };
        while let Ok(event) = rx.try_recv() {
            observer.on_event(&event);
        }
        let report = match &ended {
            Ended::Exited(Ok(out)) => self.agent.read(out),
            _ => Report::default(),
        };
        for record in &report.tools {
            observer.on_event(&AgentEvent::ToolCall(record.clone()));
        }
        let end = decide(self.agent.name(), &ended, &tally, &report);
        tracing::info!(
            agent = self.agent.name(),
            end = end.as_str(),
            turns = tally.turns,
            agent_turns = ?report.turns,
            "external agent finished"
        );
        outcome(end, tally, report, &prompt)
    }
}

/// A prepared run: the directory, the proxy and the command.
struct Run {
    _dir: tempfile::TempDir,
    home: PathBuf,
    proxy: proxy::Proxy,
    request: ExecRequest,
}

impl Drop for Run {
    fn drop(&mut self) {
        // Under sandbox = "none" the agent's HOME is a real host directory.
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

impl ExternalWorker {
    fn prepare(
        &self,
        spec: &WorkerSpec,
        prompt: &str,
        events: tokio::sync::mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<Run, String> {
        if spec.sandbox.name() == "docker" {
            return Err(format!(
                "the {} worker runs in the bwrap or none sandbox, not in Docker: set sandbox = \
                 \"bwrap\" for this project",
                self.agent.name()
            ));
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| format!("cannot prepare the agent's run ({what}): {e}")
        };
        let dir = tempfile::Builder::new()
            .prefix("orch-agent-")
            .tempdir()
            .map_err(io("run directory"))?;
        let socket = dir.path().join("proxy.sock");
        let proxy = proxy::Proxy::start(
            &socket,
            proxy::ProxyConfig {
                provider: spec.provider.clone(),
                model: spec.model.clone(),
                max_turns: spec.max_turns,
            },
            events,
        )
        .map_err(io("proxy socket"))?;
        let port = free_port().map_err(io("a port for the relay"))?;
        let base_url = format!("http://127.0.0.1:{port}");
        // Under bwrap /tmp is the sandbox's own (writable, private); under
        // `none` this is a fresh host directory, removed after the run.
        let home = Path::new("/tmp").join(format!(
            "{}-home",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "orch-agent".into())
        ));
        let prompt_file = dir.path().join("prompt.md");
        let binary = self.binary();
        let model = self
            .settings
            .model
            .clone()
            .unwrap_or_else(|| spec.model.clone());
        let launched = self.agent.launch(&Launch {
            binary: &binary,
            args: &self.settings.args,
            model: &model,
            base_url: &base_url,
            run_dir: dir.path(),
            prompt_file: &prompt_file,
            home: &home,
            max_turns: spec.max_turns,
            command_timeout_s: spec.max_run_timeout.as_secs().clamp(1, 86_400),
            allowed_files: &spec.allowed_files,
        });
        std::fs::write(&prompt_file, prompt).map_err(io("prompt.md"))?;
        let script = format!("mkdir -p {home}\n{}", launched.script, home = quote(&home));
        std::fs::write(dir.path().join("agent.sh"), script).map_err(io("agent.sh"))?;
        for (name, content) in &launched.files {
            std::fs::write(dir.path().join(name), content).map_err(io(name))?;
        }
        let request = self.request(spec, dir.path(), &socket, port, &home, launched.env);
        Ok(Run {
            _dir: dir,
            home,
            proxy,
            request,
        })
    }

    fn request(
        &self,
        spec: &WorkerSpec,
        run_dir: &Path,
        socket: &Path,
        port: u16,
        home: &Path,
        agent_env: Vec<(String, String)>,
    ) -> ExecRequest {
        let command = format!(
            "exec {relay} {sub} --listen 127.0.0.1:{port} --unix {socket} -- sh {script}",
            relay = quote(&self.relay),
            sub = relay::SUBCOMMAND,
            socket = quote(socket),
            script = quote(&run_dir.join("agent.sh")),
        );
        let mut env = spec.sandbox_env.clone();
        env.push(("HOME".into(), home.display().to_string()));
        env.push(("ORCH_RUN_DIR".into(), run_dir.display().to_string()));
        env.extend(agent_env);
        let mut extra_ro = spec.extra_ro.clone();
        extra_ro.push(run_dir.to_path_buf());
        extra_ro.push(self.relay.clone());
        ExecRequest {
            command,
            workdir: spec.worktree.clone(),
            env,
            extra_ro,
            timeout: spec.deadline.min(MAX_RUN),
            output_limit: STREAM_LIMIT,
        }
    }
}

/// Waits for the agent, a cancel, or the end of the grace after a refusal;
/// passes the proxy's live events on meanwhile. Dropping the command (on a
/// cancel or a stop) kills its whole tree.
async fn wait(
    spec: &WorkerSpec,
    run: &Run,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<AgentEvent>,
    observer: &dyn AgentObserver,
) -> Ended {
    let exec = spec.sandbox.exec(&run.request);
    tokio::pin!(exec);
    let stopped = run.proxy.stopped();
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        let grace = async move {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = spec.cancel.cancelled() => return Ended::Cancelled,
            out = &mut exec => return Ended::Exited(out),
            _ = stopped.cancelled(), if stop_at.is_none() => {
                stop_at = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            () = grace => return Ended::Stopped,
            Some(event) = events.recv() => observer.on_event(&event),
        }
    }
}

/// The prompt an external agent gets: the role and rules of orch's system
/// prompt (its tool list is the built-in worker's, not the agent's), the
/// rules for external agents, then the task.
pub fn compose_prompt(system_prompt: &str, task_prompt: &str) -> String {
    let paragraphs: Vec<&str> = system_prompt.split("\n\n").map(str::trim).collect();
    let mut parts: Vec<&str> = Vec::new();
    if let Some(role) = paragraphs.first().filter(|p| !p.is_empty()) {
        parts.push(role);
    }
    if let Some(rules) = paragraphs.iter().find(|p| p.starts_with("Rules:")) {
        parts.push(rules);
    }
    parts.push(RULES);
    parts.push(task_prompt.trim());
    let mut prompt = parts.join("\n\n");
    prompt.push('\n');
    prompt
}

/// The question in `text`'s last [`ASK_SENTINEL`] line, if any.
pub fn asked_question(text: &str) -> Option<String> {
    let at = text.rfind(ASK_SENTINEL)?;
    let rest = &text[at + ASK_SENTINEL.len()..];
    let question = rest.lines().next().unwrap_or_default().trim();
    let question = question.trim_matches(|c| c == '`' || c == '*').trim();
    (!question.is_empty()).then(|| question.to_string())
}

/// How the run ended, by the rules in the module doc.
fn decide(name: &str, ended: &Ended, tally: &proxy::Tally, report: &Report) -> WorkerEnd {
    let out = match ended {
        Ended::Cancelled => return WorkerEnd::Cancelled,
        Ended::Setup(e) => return WorkerEnd::ModelError { message: e.clone() },
        _ => match &tally.fatal {
            Some(proxy::Fatal::Model(message)) => {
                return WorkerEnd::ModelError {
                    message: message.clone(),
                }
            }
            Some(proxy::Fatal::TurnLimit) => return WorkerEnd::TurnLimit,
            None => match ended {
                Ended::Exited(out) => out,
                _ => return WorkerEnd::TurnLimit,
            },
        },
    };
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            return WorkerEnd::ModelError {
                message: format!("the sandbox could not run the {name} CLI: {e}"),
            }
        }
    };
    if out.timed_out {
        return WorkerEnd::TimedOut;
    }
    let last = report
        .final_text
        .clone()
        .or_else(|| tally.last_text.clone());
    if let Some(question) = last.as_deref().and_then(asked_question) {
        return WorkerEnd::AskedHuman { question };
    }
    if out.success() && report.error.is_none() {
        let summary = last
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("the {name} CLI finished"));
        return WorkerEnd::Finished { summary };
    }
    let detail = report
        .error
        .clone()
        .unwrap_or_else(|| tail(&out.stderr, 1500));
    match out.exit_code {
        Some(126) | Some(127) => WorkerEnd::ModelError {
            message: format!(
                "the {name} CLI could not start (exit code {}): {detail}; install it with \
                 scripts/install-agents.sh or set [projects.agents.{name}] binary",
                out.exit_code.unwrap_or_default()
            ),
        },
        code => WorkerEnd::Stuck {
            detail: format!(
                "the {name} CLI stopped without finishing ({}): {detail}",
                match (code, out.killed_by) {
                    (_, Some(limit)) => format!("killed at the {}", limit.as_str()),
                    (Some(c), None) => format!("exit code {c}"),
                    (None, None) => format!("signal {}", out.signal.unwrap_or_default()),
                }
            ),
        },
    }
}

fn outcome(end: WorkerEnd, tally: proxy::Tally, report: Report, prompt: &str) -> WorkerOutcome {
    let mut transcript = tally.transcript;
    if transcript.is_empty() {
        transcript.push(Message::user(prompt));
        if let Some(text) = report.final_text.as_deref().or(report.error.as_deref()) {
            transcript.push(Message::assistant(text));
        }
    }
    for m in &mut transcript {
        if let std::borrow::Cow::Owned(clean) = orch_core::redact::redact(&m.content) {
            m.content = clean;
        }
    }
    WorkerOutcome {
        end,
        transcript,
        usage: tally.usage,
        turns: tally.turns,
        tools: report.tools,
    }
}

/// A free port on the host's loopback (inside bwrap's own network
/// namespace every port is free; under `none` this one is).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `s` quoted for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn quote(p: &Path) -> String {
    sh_quote(&p.to_string_lossy())
}

/// The last `bytes` of `text` (on a character boundary).
pub fn tail(text: &str, bytes: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A [`ToolRecord`] with its argument and output capped as the built-in
/// worker caps them.
pub fn record(turn: u32, tool: &str, arguments: &str, ok: bool, output: &str) -> ToolRecord {
    ToolRecord {
        turn,
        tool: tool.to_string(),
        arguments: orch_process::cap_output(arguments, crate::RECORD_ARGS_LIMIT).0,
        ok,
        refused: None,
        output_preview: orch_process::cap_output(output, crate::RECORD_PREVIEW_LIMIT).0,
        duration_ms: 0,
    }
}

/// The JSON lines of `text` that parse as objects.
pub fn json_lines(text: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
}

#[cfg(test)]
mod tests;
