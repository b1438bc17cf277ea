//! The built-in coding agent: a tool-calling loop that lets a model read,
//! search, edit and run things inside one task's worktree.
//!
//! [`run_worker`] sends `[system, task, ...turns]` with [`tool_specs`] to the
//! provider, executes the tool calls in the reply in order, appends their
//! results and repeats until the model calls `finish` or `ask_human`, or a
//! limit enforced here stops it: `max_turns` (model calls), the wall-clock
//! `deadline` (every model call and command is raced against the time left),
//! a cancel (the same race, against [`WorkerSpec::cancel`]), or loop
//! detection (the same call [`STUCK_REPEATS`] times in a row, or
//! [`NO_TOOL_REPEATS`] replies in a row that call no tool).
//!
//! Safety is enforced in code, not in the prompt: see [`paths`] for path
//! checks; writes outside `allowed_files` and oversized files are refused.
//! Refusals go back to the model as the tool result (so it can correct
//! itself) and are recorded in [`ToolRecord::refused`].
//!
//! Module map: `specs` (tool names and schemas), `tools` (implementations),
//! `paths` (path safety), this file (the loop and its public types);
//! `external` runs agent CLIs (Claude Code, Codex, aider, mini-swe-agent)
//! as workers behind a metering proxy, and picks the worker a project's
//! config asks for (`external::factory`).

pub mod external;
pub mod paths;
pub mod specs;
mod tools;
mod workspace;

pub use specs::{tool_spec, tool_specs, TOOL_NAMES};
pub use workspace::{Workspace, WorkspaceFilled};

use orch_core::Usage;
use orch_providers::{ChatRequest, Message, Provider, Role, ToolChoice};
use orch_sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tools::{Control, ToolContext};

/// The user message sent after a reply that called no tool.
pub const NUDGE: &str = "Use the tools to make the change, then call finish{summary}.";
/// The same call (name + arguments) this many times in a row means stuck.
pub const STUCK_REPEATS: usize = 5;
/// Replies in a row without a tool call that mean stuck: a model (or a
/// server) that cannot call tools under `tool_choice: "auto"` would
/// otherwise burn every turn on nudges.
pub const NO_TOOL_REPEATS: u32 = 3;
/// Bytes of a call's arguments kept in its [`ToolRecord`].
pub const RECORD_ARGS_LIMIT: usize = 2000;
/// Bytes of a tool's output kept in its [`ToolRecord`].
pub const RECORD_PREVIEW_LIMIT: usize = 500;

/// Everything one worker run needs.
#[derive(Clone)]
pub struct WorkerSpec {
    pub provider: Arc<dyn Provider>,
    /// Model name as the provider knows it.
    pub model: String,
    pub sandbox: Arc<dyn Sandbox>,
    /// The task's worktree: every path is relative to it, commands run in it.
    pub worktree: PathBuf,
    /// Host paths the sandbox shows read-only (e.g. the repository's git dir).
    pub extra_ro: Vec<PathBuf>,
    /// Environment for commands run in the sandbox.
    pub sandbox_env: Vec<(String, String)>,
    pub system_prompt: String,
    pub task_prompt: String,
    /// Glob patterns the worker may write; empty means any file.
    pub allowed_files: Vec<String>,
    /// Most model calls.
    pub max_turns: u32,
    /// Wall clock for the whole run.
    pub deadline: Duration,
    /// Bytes of tool output given back to the model per call.
    pub output_limit: usize,
    /// Longest a single `run` command may take.
    pub max_run_timeout: Duration,
    /// Largest file `write_file`/`edit_file` may produce.
    pub max_file_bytes: usize,
    /// Cancelled when the task is cancelled: the loop makes no further model
    /// call, and a running command is dropped (which kills its process tree).
    pub cancel: CancellationToken,
    /// Whether the worktree is there yet: orch fills it while the first
    /// model call is under way, and nothing touches it before this says so.
    pub workspace: Workspace,
    /// Work the engine does in the worktree while the model thinks (an
    /// early verification); the built-in agent tells it when.
    pub interlude: Option<Arc<dyn Interlude>>,
}

/// Work done in the worktree between turns, while the model thinks. The
/// loop calls [`Self::settled`] when a turn's tools may have changed the
/// worktree and the model is asked next, and awaits [`Self::before_write`]
/// before a tool that may write runs: whatever was started must be over by
/// then, finished or stopped.
#[async_trait::async_trait]
pub trait Interlude: Send + Sync {
    fn settled(&self);
    async fn before_write(&self);
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .field("sandbox", &self.sandbox.name())
            .field("worktree", &self.worktree)
            .field("allowed_files", &self.allowed_files)
            .field("max_turns", &self.max_turns)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum WorkerEnd {
    /// The model called `finish`.
    Finished { summary: String },
    /// The model called `ask_human`: the task needs a person.
    AskedHuman { question: String },
    /// `max_turns` model calls were made without finishing.
    TurnLimit,
    /// The deadline passed.
    TimedOut,
    /// The model repeated the same call; `detail` names it.
    Stuck { detail: String },
    /// The provider failed; `message` is its error.
    ModelError { message: String },
    /// The task was cancelled while the worker ran.
    Cancelled,
}

impl WorkerEnd {
    /// Short snake_case name, for events and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerEnd::Finished { .. } => "finished",
            WorkerEnd::AskedHuman { .. } => "asked_human",
            WorkerEnd::TurnLimit => "turn_limit",
            WorkerEnd::TimedOut => "timed_out",
            WorkerEnd::Stuck { .. } => "stuck",
            WorkerEnd::ModelError { .. } => "model_error",
            WorkerEnd::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for WorkerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerEnd::Finished { summary } => write!(f, "finished: {summary}"),
            WorkerEnd::AskedHuman { question } => write!(f, "asked a human: {question}"),
            WorkerEnd::TurnLimit => f.write_str("stopped at the turn limit without finishing"),
            WorkerEnd::TimedOut => f.write_str("stopped at the deadline without finishing"),
            WorkerEnd::Stuck { detail } => write!(f, "stuck: {detail}"),
            WorkerEnd::ModelError { message } => write!(f, "model error: {message}"),
            WorkerEnd::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// One executed tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRecord {
    /// The model call (1-based) whose reply made this call.
    pub turn: u32,
    pub tool: String,
    /// The raw arguments, capped at [`RECORD_ARGS_LIMIT`] bytes.
    pub arguments: String,
    /// The tool did what was asked (for `run`: the command exited 0).
    pub ok: bool,
    /// Why the call was refused for safety, when it was.
    pub refused: Option<String>,
    /// The start of what the model was told, capped at [`RECORD_PREVIEW_LIMIT`] bytes.
    pub output_preview: String,
    /// How long the tool ran.
    #[serde(default)]
    pub duration_ms: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    pub end: WorkerEnd,
    /// Every message: system, task, replies, tool results, nudges.
    pub transcript: Vec<Message>,
    /// Summed over all model calls.
    pub usage: Usage,
    /// Model calls made.
    pub turns: u32,
    pub tools: Vec<ToolRecord>,
}

/// Live progress, reported as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    ModelCall { turn: u32, usage: Usage },
    ToolCall(ToolRecord),
}

pub trait AgentObserver: Send + Sync {
    fn on_event(&self, event: &AgentEvent);
}

/// Any `Fn(&AgentEvent)` observes.
impl<F: Fn(&AgentEvent) + Send + Sync> AgentObserver for F {
    fn on_event(&self, event: &AgentEvent) {
        self(event)
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl AgentObserver for NoopObserver {
    fn on_event(&self, _event: &AgentEvent) {}
}

/// Something that does a task's work in its worktree: the built-in agent,
/// or an agent CLI (Claude Code, Codex, aider). The engine only knows this
/// trait; whatever runs, its result goes through the same commit boundary,
/// verification, judge and merge queue.
#[async_trait::async_trait]
pub trait Worker: Send + Sync {
    /// Short name for events and logs (`builtin`, `claude-code`, …).
    fn name(&self) -> &str;
    /// Does the work to its end; every way of stopping is a [`WorkerEnd`].
    async fn run(&self, spec: WorkerSpec, observer: &dyn AgentObserver) -> WorkerOutcome;
}

/// orch's own tool-calling agent ([`run_worker`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinWorker;

#[async_trait::async_trait]
impl Worker for BuiltinWorker {
    fn name(&self) -> &str {
        "builtin"
    }

    async fn run(&self, spec: WorkerSpec, observer: &dyn AgentObserver) -> WorkerOutcome {
        run_worker(spec, observer).await
    }
}

/// Runs the loop to its end. Never fails: every way of stopping is a
/// [`WorkerEnd`], and the transcript so far is always returned.
pub async fn run_worker(spec: WorkerSpec, observer: &dyn AgentObserver) -> WorkerOutcome {
    let started = Instant::now();
    let deadline_at = started.checked_add(spec.deadline);
    let remaining = || {
        deadline_at.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    };

    let ctx = Arc::new(ToolContext {
        worktree: spec.worktree.clone(),
        allow: paths::AllowList::new(&spec.allowed_files),
        output_limit: spec.output_limit,
        max_file_bytes: spec.max_file_bytes,
        sandbox: Arc::clone(&spec.sandbox),
        extra_ro: spec.extra_ro.clone(),
        sandbox_env: spec.sandbox_env.clone(),
        max_run_timeout: spec.max_run_timeout,
    });

    let mut messages = Vec::new();
    // Some servers reject an empty system message; nothing is lost by leaving it out.
    if !spec.system_prompt.is_empty() {
        messages.push(Message::system(spec.system_prompt.clone()));
    }
    messages.push(Message::user(spec.task_prompt.clone()));
    let mut request = ChatRequest::new(spec.model.clone(), messages);
    request.tools = tool_specs();
    request.tool_choice = Some(ToolChoice::Auto);

    let mut usage = Usage::default();
    let mut turns = 0u32;
    let mut records = Vec::new();
    let mut streak = Streak::default();
    let mut toolless = 0u32;
    let cancel = spec.cancel.clone();
    // Whether a tool that may write ran since the interlude last heard.
    let mut unsettled = false;

    let end = 'turns: loop {
        if cancel.is_cancelled() {
            break WorkerEnd::Cancelled;
        }
        if turns >= spec.max_turns {
            break WorkerEnd::TurnLimit;
        }
        let left = remaining();
        if left.is_zero() {
            break WorkerEnd::TimedOut;
        }
        if std::mem::take(&mut unsettled) {
            if let Some(interlude) = &spec.interlude {
                interlude.settled();
            }
        }
        turns += 1;
        let turn = turns;
        let call = tokio::time::timeout(left, spec.provider.chat(&request));
        let response = tokio::select! {
            biased;
            _ = cancel.cancelled() => break WorkerEnd::Cancelled,
            answer = call => match answer {
                Err(_) => break WorkerEnd::TimedOut,
                Ok(Err(e)) => {
                    break WorkerEnd::ModelError {
                        message: e.to_string(),
                    }
                }
                Ok(Ok(response)) => response,
            },
        };
        usage += response.usage;
        observer.on_event(&AgentEvent::ModelCall {
            turn,
            usage: response.usage,
        });

        let mut reply = response.message;
        reply.role = Role::Assistant;
        reply.tool_call_id = None;
        // Tool results must name their call; make up ids a server left out.
        for (i, call) in reply.tool_calls.iter_mut().enumerate() {
            if call.id.is_empty() {
                call.id = format!("call_{turn}_{i}");
            }
        }
        let calls = reply.tool_calls.clone();
        request.messages.push(reply);
        if calls.is_empty() {
            toolless += 1;
            if toolless >= NO_TOOL_REPEATS {
                break WorkerEnd::Stuck {
                    detail: format!(
                        "the model answered {NO_TOOL_REPEATS} times in a row without calling a tool; \
                         the server may not support tool calls under tool_choice: \"auto\" \
                         (`orch doctor` checks), or the model is too weak for tool use"
                    ),
                };
            }
            request.messages.push(Message::user(NUDGE));
            continue;
        }
        toolless = 0;

        for (i, call) in calls.iter().enumerate() {
            let left = remaining();
            if left.is_zero() {
                skip_rest(
                    &mut request.messages,
                    &calls[i..],
                    "not executed: the worker ran out of time",
                );
                break 'turns WorkerEnd::TimedOut;
            }
            if streak.push(&call.name, &call.arguments) >= STUCK_REPEATS {
                skip_rest(
                    &mut request.messages,
                    &calls[i..],
                    "not executed: the same call was repeated too often",
                );
                let args = orch_process::cap_output(&call.arguments, 200).0;
                break 'turns WorkerEnd::Stuck {
                    detail: format!(
                        "the same call `{} {args}` was made {STUCK_REPEATS} times in a row",
                        call.name
                    ),
                };
            }

            // The first call to touch the worktree waits for it to be there.
            let ready = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(String::new()),
                ready = spec.workspace.ready() => ready,
            };
            if let Err(why) = ready {
                let note = match why.is_empty() {
                    true => "not executed: the task was cancelled".to_string(),
                    false => format!("not executed: the worktree could not be made: {why}"),
                };
                skip_rest(&mut request.messages, &calls[i..], &note);
                break 'turns WorkerEnd::Cancelled;
            }
            if specs::may_write(&call.name) {
                if let Some(interlude) = &spec.interlude {
                    interlude.before_write().await;
                }
                unsettled = true;
            }
            let started = std::time::Instant::now();
            let run = tools::execute(&ctx, &call.name, &call.arguments, left);
            // Dropping a running tool kills its sandboxed process tree.
            let mut result = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    skip_rest(&mut request.messages, &calls[i..], "not executed: the task was cancelled");
                    break 'turns WorkerEnd::Cancelled;
                }
                result = run => result,
            };
            // A secret a command printed or a file held never reaches the
            // model, the transcript or the audit trail.
            if let std::borrow::Cow::Owned(clean) = orch_core::redact::redact(&result.content) {
                result.content = clean;
            }
            let record = ToolRecord {
                turn,
                tool: call.name.clone(),
                arguments: orch_process::cap_output(&call.arguments, RECORD_ARGS_LIMIT).0,
                ok: result.ok,
                refused: result.refused.clone(),
                output_preview: orch_process::cap_output(&result.content, RECORD_PREVIEW_LIMIT).0,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            if let Some(reason) = &record.refused {
                tracing::info!(tool = %record.tool, %reason, "tool call refused");
            }
            observer.on_event(&AgentEvent::ToolCall(record.clone()));
            records.push(record);
            request
                .messages
                .push(Message::tool_result(call.id.clone(), result.content));

            match result.control {
                Control::Continue => {}
                Control::Finish(summary) => {
                    skip_rest(
                        &mut request.messages,
                        &calls[i + 1..],
                        "not executed: finish ended the work",
                    );
                    break 'turns WorkerEnd::Finished { summary };
                }
                Control::AskHuman(question) => {
                    skip_rest(
                        &mut request.messages,
                        &calls[i + 1..],
                        "not executed: ask_human ended the work",
                    );
                    break 'turns WorkerEnd::AskedHuman { question };
                }
            }
        }
    };

    WorkerOutcome {
        end,
        transcript: request.messages,
        usage,
        turns,
        tools: records,
    }
}

/// Answers calls that will not run, so every call in the transcript has a
/// result (chat APIs reject transcripts with unanswered calls).
fn skip_rest(messages: &mut Vec<Message>, calls: &[orch_providers::ToolCall], why: &str) {
    for call in calls {
        messages.push(Message::tool_result(call.id.clone(), why));
    }
}

/// Counts identical consecutive calls.
#[derive(Default)]
struct Streak {
    last: Option<(String, String)>,
    count: usize,
}

impl Streak {
    /// Registers a call and returns how many times in a row it has been made.
    fn push(&mut self, name: &str, arguments: &str) -> usize {
        // Compare parsed JSON so whitespace and key order do not hide a repeat.
        let args = serde_json::from_str::<serde_json::Value>(arguments)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| arguments.trim().to_string());
        let key = (name.to_string(), args);
        if self.last.as_ref() == Some(&key) {
            self.count += 1;
        } else {
            self.last = Some(key);
            self.count = 1;
        }
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use orch_providers::{ChatResponse, ProviderError, ToolCall};
    use orch_sandbox::none::NoSandbox;
    use serde_json::json;
    use std::sync::Mutex;

    type Script = dyn Fn(usize) -> Result<ChatResponse, ProviderError> + Send + Sync;

    /// A provider that answers from a script (call index → response),
    /// optionally after a delay, and remembers every request.
    struct Scripted {
        script: Box<Script>,
        delay: Duration,
        requests: Mutex<Vec<ChatRequest>>,
    }

    impl Scripted {
        fn new(
            script: impl Fn(usize) -> Result<ChatResponse, ProviderError> + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Scripted {
                script: Box::new(script),
                delay: Duration::ZERO,
                requests: Mutex::new(Vec::new()),
            })
        }
        /// Replies in order; errors once the list runs out.
        fn replies(replies: Vec<ChatResponse>) -> Arc<Self> {
            Self::new(move |i| {
                replies
                    .get(i)
                    .cloned()
                    .ok_or_else(|| ProviderError::Replay {
                        script: "test".into(),
                        detail: format!("no reply left for call {}", i + 1),
                    })
            })
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            let index = {
                let mut requests = self.requests.lock().unwrap();
                requests.push(request.clone());
                requests.len() - 1
            };
            tokio::time::sleep(self.delay).await;
            (self.script)(index)
        }
    }

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: 0,
            cost_usd: 0.001,
        }
    }

    fn calls(calls: &[(&str, serde_json::Value)]) -> ChatResponse {
        let tool_calls = calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("c{i}"),
                name: name.to_string(),
                arguments: args.to_string(),
            })
            .collect();
        let message = Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls,
            tool_call_id: None,
        };
        ChatResponse {
            message,
            usage: usage(10, 5),
            finish_reason: "tool_calls".into(),
            model: "m".into(),
        }
    }

    fn call(name: &str, args: serde_json::Value) -> ChatResponse {
        calls(&[(name, args)])
    }

    fn text(content: &str) -> ChatResponse {
        ChatResponse {
            message: Message::assistant(content),
            usage: usage(10, 5),
            finish_reason: "stop".into(),
            model: "m".into(),
        }
    }

    struct Env {
        _dir: tempfile::TempDir,
        wt: PathBuf,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        std::fs::create_dir_all(wt.join("src")).unwrap();
        std::fs::write(
            wt.join("src/lib.rs"),
            "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n",
        )
        .unwrap();
        Env { _dir: dir, wt }
    }

    fn spec(env: &Env, provider: Arc<dyn Provider>) -> WorkerSpec {
        WorkerSpec {
            provider,
            model: "test-model".into(),
            sandbox: Arc::new(NoSandbox::new()),
            worktree: env.wt.clone(),
            extra_ro: Vec::new(),
            sandbox_env: Vec::new(),
            system_prompt: "You are a careful engineer.".into(),
            task_prompt: "Fix add.".into(),
            allowed_files: Vec::new(),
            max_turns: 20,
            deadline: Duration::from_secs(60),
            output_limit: 16 * 1024,
            max_run_timeout: Duration::from_secs(30),
            max_file_bytes: 1024 * 1024,
            cancel: Default::default(),
            workspace: crate::Workspace::present(),
            interlude: None,
        }
    }

    /// Collects events for assertions.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<AgentEvent>>);

    impl AgentObserver for Recorder {
        fn on_event(&self, event: &AgentEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[tokio::test]
    async fn edits_runs_and_finishes() {
        let env = env();
        let provider = Scripted::replies(vec![
            call("read_file", json!({"path": "src/lib.rs"})),
            calls(&[
                (
                    "edit_file",
                    json!({"path": "src/lib.rs", "old": "a - b", "new": "a + b"}),
                ),
                ("run", json!({"command": "grep -c 'a + b' src/lib.rs"})),
            ]),
            call("finish", json!({"summary": "add now adds"})),
        ]);
        let recorder = Recorder::default();
        let out = run_worker(spec(&env, provider.clone()), &recorder).await;

        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "add now adds".into()
            }
        );
        assert_eq!(out.turns, 3);
        assert_eq!(out.usage.input_tokens, 30);
        assert_eq!(out.usage.output_tokens, 15);
        assert!(std::fs::read_to_string(env.wt.join("src/lib.rs"))
            .unwrap()
            .contains("a + b"));

        let tools: Vec<_> = out
            .tools
            .iter()
            .map(|t| (t.turn, t.tool.as_str(), t.ok))
            .collect();
        assert_eq!(
            tools,
            vec![
                (1, "read_file", true),
                (2, "edit_file", true),
                (2, "run", true),
                (3, "finish", true)
            ]
        );
        assert!(
            out.tools[2].output_preview.starts_with("exit code: 0\n1"),
            "{}",
            out.tools[2].output_preview
        );

        // system, task, then per turn the reply and its results.
        let roles: Vec<_> = out.transcript.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(
            roles,
            vec![System, User, Assistant, Tool, Assistant, Tool, Tool, Assistant, Tool]
        );
        assert_eq!(out.transcript[6].tool_call_id.as_deref(), Some("c1"));

        // The request carries the prompts, every tool and tool_choice auto.
        let requests = provider.requests.lock().unwrap();
        let first = &requests[0];
        assert_eq!(first.model, "test-model");
        assert_eq!(
            first.messages[0],
            Message::system("You are a careful engineer.")
        );
        assert_eq!(first.messages[1], Message::user("Fix add."));
        assert_eq!(first.tools, tool_specs());
        assert_eq!(first.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(
            requests[2].messages.len(),
            7,
            "the third call sees the whole conversation so far"
        );

        let events = recorder.0.lock().unwrap();
        let model_calls = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ModelCall { .. }))
            .count();
        let tool_calls = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ToolCall(_)))
            .count();
        assert_eq!((model_calls, tool_calls), (3, 4));
        assert!(
            matches!(events[0], AgentEvent::ModelCall { turn: 1, usage: u } if u.input_tokens == 10)
        );
    }

    #[tokio::test]
    async fn the_first_model_call_does_not_wait_for_the_worktree_but_tools_do() {
        let env = env();
        let provider = Scripted::replies(vec![
            call("write_file", json!({"path": "new.txt", "content": "hi\n"})),
            call("finish", json!({"summary": "done"})),
        ]);
        let (filled, workspace) = Workspace::pending();
        let mut s = spec(&env, provider.clone());
        s.workspace = workspace;
        let worker = tokio::spawn(async move { run_worker(s, &NoopObserver).await });
        // The model was asked while the worktree is still "filling"...
        for _ in 0..200 {
            if !provider.requests.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(provider.requests.lock().unwrap().len(), 1);
        // ...but its write waits for the worktree.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!env.wt.join("new.txt").exists());
        assert_eq!(provider.requests.lock().unwrap().len(), 1);
        filled.done(Ok(()));
        let out = worker.await.unwrap();
        assert!(
            matches!(out.end, WorkerEnd::Finished { .. }),
            "{:?}",
            out.end
        );
        assert_eq!(
            std::fs::read_to_string(env.wt.join("new.txt")).unwrap(),
            "hi\n"
        );
    }

    #[tokio::test]
    async fn a_worktree_that_could_not_be_made_stops_the_worker_before_any_tool() {
        let env = env();
        let provider = Scripted::replies(vec![call(
            "write_file",
            json!({"path": "new.txt", "content": "hi\n"}),
        )]);
        let (filled, workspace) = Workspace::pending();
        filled.done(Err("git worktree add failed: disk full".into()));
        let mut s = spec(&env, provider);
        s.workspace = workspace;
        let out = run_worker(s, &NoopObserver).await;
        assert!(matches!(out.end, WorkerEnd::Cancelled), "{:?}", out.end);
        assert!(!env.wt.join("new.txt").exists());
        let last = out.transcript.last().unwrap();
        assert!(last.content.contains("disk full"), "{}", last.content);
    }

    #[tokio::test]
    async fn ask_human_ends_the_loop_and_skips_later_calls() {
        let env = env();
        let provider = Scripted::replies(vec![calls(&[
            ("ask_human", json!({"question": "Should add saturate?"})),
            ("write_file", json!({"path": "after.txt", "content": "x"})),
        ])]);
        let out = run_worker(spec(&env, provider), &NoopObserver).await;
        assert_eq!(
            out.end,
            WorkerEnd::AskedHuman {
                question: "Should add saturate?".into()
            }
        );
        assert_eq!(out.turns, 1);
        assert_eq!(out.tools.len(), 1);
        assert!(
            !env.wt.join("after.txt").exists(),
            "calls after ask_human must not run"
        );
        // Every call still has an answer in the transcript.
        let last = out.transcript.last().unwrap();
        assert_eq!(last.tool_call_id.as_deref(), Some("c1"));
        assert!(last.content.contains("not executed"));
    }

    #[tokio::test]
    async fn max_turns_is_enforced_against_a_model_that_never_finishes() {
        let env = env();
        // Different arguments each time, so loop detection does not fire first.
        let provider = Scripted::new(|i| {
            Ok(call(
                "read_file",
                json!({"path": "src/lib.rs", "offset": 1 + i % 3, "limit": 1 + i}),
            ))
        });
        let mut s = spec(&env, provider.clone());
        s.max_turns = 4;
        let out = run_worker(s, &NoopObserver).await;
        assert_eq!(out.end, WorkerEnd::TurnLimit);
        assert_eq!(out.turns, 4);
        assert_eq!(provider.requests.lock().unwrap().len(), 4);
        assert_eq!(out.tools.len(), 4);
    }

    #[tokio::test]
    async fn text_replies_get_a_nudge_and_count_as_turns() {
        let env = env();
        let provider = Scripted::replies(vec![
            text("I think the bug is in add."),
            call("finish", json!({"summary": "done"})),
        ]);
        let out = run_worker(spec(&env, provider.clone()), &NoopObserver).await;
        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "done".into()
            }
        );
        assert_eq!(out.turns, 2);
        assert_eq!(out.transcript[3], Message::user(NUDGE));
        assert_eq!(
            provider.requests.lock().unwrap()[1].messages.last(),
            Some(&Message::user(NUDGE))
        );

        // A model that only talks is stopped as stuck after NO_TOOL_REPEATS
        // replies, with a hint about tool support.
        let chatty = Scripted::new(|_| Ok(text("thinking...")));
        let mut s = spec(&env, chatty.clone());
        s.max_turns = 10;
        let out = run_worker(s, &NoopObserver).await;
        let WorkerEnd::Stuck { detail } = &out.end else {
            panic!("expected stuck, got {:?}", out.end);
        };
        assert!(detail.contains("tool_choice"), "{detail}");
        assert_eq!(out.turns, NO_TOOL_REPEATS);
        assert_eq!(
            chatty.requests.lock().unwrap().len(),
            NO_TOOL_REPEATS as usize
        );

        // A tool call in between resets the count.
        let mixed = Scripted::replies(vec![
            text("a"),
            text("b"),
            call("list_files", json!({})),
            text("c"),
            text("d"),
            call("finish", json!({"summary": "done"})),
        ]);
        let out = run_worker(spec(&env, mixed), &NoopObserver).await;
        assert!(
            matches!(out.end, WorkerEnd::Finished { .. }),
            "{:?}",
            out.end
        );
    }

    #[tokio::test]
    async fn a_cancel_stops_the_loop_before_the_next_model_call() {
        let env = env();
        let provider = Arc::new(Scripted {
            script: Box::new(|_| Ok(call("run", json!({"command": "sleep 30"})))),
            delay: Duration::ZERO,
            requests: Mutex::new(Vec::new()),
        });
        let s = spec(&env, provider.clone());
        let cancel = s.cancel.clone();
        let started = Instant::now();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let out = run_worker(s, &NoopObserver).await;
        canceller.await.unwrap();
        assert_eq!(out.end, WorkerEnd::Cancelled);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // The first call's `sleep 30` was dropped mid-way; no second model call.
        assert_eq!(provider.requests.lock().unwrap().len(), 1);
        assert!(out
            .transcript
            .iter()
            .any(|m| m.content.contains("the task was cancelled")));
    }

    #[tokio::test]
    async fn deadline_is_enforced_against_a_slow_model() {
        let env = env();
        let provider = Arc::new(Scripted {
            script: Box::new(|_| Ok(call("finish", json!({"summary": "too late"})))),
            delay: Duration::from_secs(30),
            requests: Mutex::new(Vec::new()),
        });
        let mut s = spec(&env, provider);
        s.deadline = Duration::from_millis(300);
        let started = Instant::now();
        let out = run_worker(s, &NoopObserver).await;
        assert_eq!(out.end, WorkerEnd::TimedOut);
        assert_eq!(out.turns, 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn deadline_caps_commands_too() {
        let env = env();
        let provider = Scripted::new(|i| {
            Ok(if i == 0 {
                call("run", json!({"command": "sleep 30", "timeout_s": 600}))
            } else {
                call("finish", json!({"summary": "x"}))
            })
        });
        let mut s = spec(&env, provider);
        s.deadline = Duration::from_secs(1);
        let started = Instant::now();
        let out = run_worker(s, &NoopObserver).await;
        assert_eq!(out.end, WorkerEnd::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
        assert!(!out.tools[0].ok);
        assert!(
            out.tools[0].output_preview.contains("timed out"),
            "{}",
            out.tools[0].output_preview
        );
    }

    #[tokio::test]
    async fn repeating_the_same_call_is_stuck() {
        let env = env();
        // Whitespace differences do not hide a repeat.
        let provider = Scripted::new(|i| {
            let mut r = call("read_file", json!({"path": "src/lib.rs"}));
            if i % 2 == 1 {
                r.message.tool_calls[0].arguments = "{ \"path\" : \"src/lib.rs\" }".into();
            }
            Ok(r)
        });
        let out = run_worker(spec(&env, provider), &NoopObserver).await;
        match &out.end {
            WorkerEnd::Stuck { detail } => assert!(
                detail.contains("read_file") && detail.contains("5 times"),
                "{detail}"
            ),
            other => panic!("expected Stuck, got {other:?}"),
        }
        assert_eq!(out.turns, STUCK_REPEATS as u32);
        assert_eq!(
            out.tools.len(),
            STUCK_REPEATS - 1,
            "the fifth repeat is not executed"
        );
    }

    #[tokio::test]
    async fn different_calls_in_between_reset_the_streak() {
        let env = env();
        let provider = Scripted::new(|i| {
            Ok(match i {
                0..=3 | 5..=8 => call("read_file", json!({"path": "src/lib.rs"})),
                4 => call("list_files", json!({})),
                _ => call("finish", json!({"summary": "ok"})),
            })
        });
        let out = run_worker(spec(&env, provider), &NoopObserver).await;
        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "ok".into()
            }
        );
    }

    #[tokio::test]
    async fn malformed_and_unknown_calls_are_answered_and_count_as_turns() {
        let env = env();
        let provider = Scripted::new(|i| {
            Ok(match i {
                0 => {
                    let mut r = call("write_file", json!({}));
                    r.message.tool_calls[0].arguments = "{\"path\": \"a.txt\", ".into();
                    r
                }
                1 => call("write_file", json!({"path": "a.txt"})),
                2 => call("shell", json!({"cmd": "ls"})),
                _ => call("finish", json!({"summary": "gave up"})),
            })
        });
        let out = run_worker(spec(&env, provider.clone()), &NoopObserver).await;
        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "gave up".into()
            }
        );
        assert_eq!(out.turns, 4);
        assert!(out.tools[..3].iter().all(|t| !t.ok && t.refused.is_none()));
        let requests = provider.requests.lock().unwrap();
        let seen = |i: usize| requests[i].messages.last().unwrap().content.clone();
        assert!(seen(1).contains("not valid JSON"), "{}", seen(1));
        assert!(seen(2).contains("missing field `content`"), "{}", seen(2));
        assert!(
            seen(3).contains("unknown tool `shell`") && seen(3).contains("read_file"),
            "{}",
            seen(3)
        );
    }

    #[tokio::test]
    async fn refusals_are_recorded_and_the_loop_continues() {
        let env = env();
        let provider = Scripted::replies(vec![
            call(
                "write_file",
                json!({"path": "../escaped.txt", "content": "x"}),
            ),
            call("write_file", json!({"path": "Cargo.toml", "content": "x"})),
            call("write_file", json!({"path": "src/ok.rs", "content": "x"})),
            call("finish", json!({"summary": "ok"})),
        ]);
        let mut s = spec(&env, provider);
        s.allowed_files = vec!["src/*.rs".into()];
        let recorder = Recorder::default();
        let out = run_worker(s, &recorder).await;
        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "ok".into()
            }
        );
        assert!(out.tools[0]
            .refused
            .as_deref()
            .unwrap()
            .contains("leaves the worktree"));
        assert!(out.tools[1]
            .refused
            .as_deref()
            .unwrap()
            .contains("src/*.rs"));
        assert!(out.tools[2].ok && out.tools[2].refused.is_none());
        assert!(!env.wt.parent().unwrap().join("escaped.txt").exists());
        assert!(!env.wt.join("Cargo.toml").exists());
        assert!(env.wt.join("src/ok.rs").exists());
        let refused_events = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, AgentEvent::ToolCall(r) if r.refused.is_some()))
            .count();
        assert_eq!(refused_events, 2);
    }

    #[tokio::test]
    async fn provider_errors_end_with_model_error() {
        let env = env();
        let provider = Scripted::replies(vec![call("list_files", json!({}))]);
        let out = run_worker(spec(&env, provider), &NoopObserver).await;
        match out.end {
            WorkerEnd::ModelError { message } => {
                assert!(message.contains("no reply left for call 2"), "{message}")
            }
            other => panic!("expected ModelError, got {other:?}"),
        }
        assert_eq!(out.turns, 2);
        assert_eq!(
            out.usage.input_tokens, 10,
            "only successful calls have usage"
        );
    }

    #[tokio::test]
    async fn records_cap_arguments_and_previews() {
        let env = env();
        let big = "y".repeat(50_000);
        let provider = Scripted::replies(vec![
            call("write_file", json!({"path": "big.txt", "content": big})),
            call("read_file", json!({"path": "big.txt"})),
            call("finish", json!({"summary": "ok"})),
        ]);
        let out = run_worker(spec(&env, provider), &NoopObserver).await;
        assert!(out.tools[0].arguments.len() < RECORD_ARGS_LIMIT + 100);
        assert!(out.tools[0].arguments.contains("orch cut"));
        assert!(out.tools[1].output_preview.len() < RECORD_PREVIEW_LIMIT + 100);
        // The model itself got up to output_limit bytes, with a marker.
        let result = &out.transcript[5].content;
        assert!(
            result.len() < 16 * 1024 + 200 && result.contains("orch cut"),
            "{}",
            result.len()
        );
    }

    #[tokio::test]
    async fn zero_max_turns_makes_no_call() {
        let env = env();
        let provider = Scripted::replies(vec![]);
        let mut s = spec(&env, provider.clone());
        s.max_turns = 0;
        let out = run_worker(s, &NoopObserver).await;
        assert_eq!(out.end, WorkerEnd::TurnLimit);
        assert_eq!(out.turns, 0);
        assert!(provider.requests.lock().unwrap().is_empty());
        assert_eq!(out.transcript.len(), 2);
    }

    #[tokio::test]
    async fn unbounded_limits_do_not_overflow() {
        let env = env();
        let provider = Scripted::replies(vec![
            call("run", json!({"command": "echo hi", "timeout_s": 1e300})),
            call("finish", json!({"summary": "ok"})),
        ]);
        let mut s = spec(&env, provider);
        s.deadline = Duration::MAX;
        s.max_run_timeout = Duration::MAX;
        let out = run_worker(s, &NoopObserver).await;
        assert_eq!(
            out.end,
            WorkerEnd::Finished {
                summary: "ok".into()
            }
        );
        assert_eq!(out.tools[0].output_preview, "exit code: 0\nhi\n");
    }

    #[test]
    fn worker_end_names_and_serde() {
        let end = WorkerEnd::Stuck { detail: "d".into() };
        assert_eq!(end.as_str(), "stuck");
        let v = serde_json::to_value(&end).unwrap();
        assert_eq!(v, json!({"end": "stuck", "detail": "d"}));
        assert_eq!(serde_json::from_value::<WorkerEnd>(v).unwrap(), end);
        assert_eq!(
            WorkerEnd::TurnLimit.to_string(),
            "stopped at the turn limit without finishing"
        );
    }
}
