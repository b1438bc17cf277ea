//! The built-in coding agent: a tool-calling loop that lets a model read,
//! search, edit and run things inside one task's worktree.
//!
//! [`run_worker`] sends `[system, task, ...turns]` with [`tool_specs`] to the
//! provider, executes the tool calls in the reply in order, appends their
//! results and repeats until the model calls `finish` or `ask_human`, or a
//! limit enforced here stops it: `max_turns` (model calls), the wall-clock
//! `deadline` (every model call and command is raced against the time left),
//! or loop detection (the same call [`STUCK_REPEATS`] times in a row).
//!
//! Safety is enforced in code, not in the prompt: see [`paths`] for path
//! checks; writes outside `allowed_files` and oversized files are refused.
//! Refusals go back to the model as the tool result (so it can correct
//! itself) and are recorded in [`ToolRecord::refused`].
//!
//! Module map: `specs` (tool names and schemas), `tools` (implementations),
//! `paths` (path safety), this file (the loop and its public types).

pub mod paths;
pub mod specs;
mod tools;

pub use specs::{tool_spec, tool_specs, TOOL_NAMES};

use orch_core::Usage;
use orch_providers::{ChatRequest, Message, Provider, Role, ToolChoice};
use orch_sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tools::{Control, ToolContext};

/// The user message sent after a reply that called no tool.
pub const NUDGE: &str = "Use the tools to make the change, then call finish{summary}.";
/// The same call (name + arguments) this many times in a row means stuck.
pub const STUCK_REPEATS: usize = 5;
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

/// Runs the loop to its end. Never fails: every way of stopping is a
/// [`WorkerEnd`], and the transcript so far is always returned.
pub async fn run_worker(spec: WorkerSpec, observer: &dyn AgentObserver) -> WorkerOutcome {
    let started = Instant::now();
    let deadline_at = started.checked_add(spec.deadline);
    let remaining = || deadline_at.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));

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

    let end = 'turns: loop {
        if turns >= spec.max_turns {
            break WorkerEnd::TurnLimit;
        }
        let left = remaining();
        if left.is_zero() {
            break WorkerEnd::TimedOut;
        }
        turns += 1;
        let turn = turns;
        let response = match tokio::time::timeout(left, spec.provider.chat(&request)).await {
            Err(_) => break WorkerEnd::TimedOut,
            Ok(Err(e)) => break WorkerEnd::ModelError { message: e.to_string() },
            Ok(Ok(response)) => response,
        };
        usage += response.usage;
        observer.on_event(&AgentEvent::ModelCall { turn, usage: response.usage });

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
            request.messages.push(Message::user(NUDGE));
            continue;
        }

        for (i, call) in calls.iter().enumerate() {
            let left = remaining();
            if left.is_zero() {
                skip_rest(&mut request.messages, &calls[i..], "not executed: the worker ran out of time");
                break 'turns WorkerEnd::TimedOut;
            }
            if streak.push(&call.name, &call.arguments) >= STUCK_REPEATS {
                skip_rest(&mut request.messages, &calls[i..], "not executed: the same call was repeated too often");
                let args = orch_process::cap_output(&call.arguments, 200).0;
                break 'turns WorkerEnd::Stuck {
                    detail: format!("the same call `{} {args}` was made {STUCK_REPEATS} times in a row", call.name),
                };
            }

            let result = tools::execute(&ctx, &call.name, &call.arguments, left).await;
            let record = ToolRecord {
                turn,
                tool: call.name.clone(),
                arguments: orch_process::cap_output(&call.arguments, RECORD_ARGS_LIMIT).0,
                ok: result.ok,
                refused: result.refused.clone(),
                output_preview: orch_process::cap_output(&result.content, RECORD_PREVIEW_LIMIT).0,
            };
            if let Some(reason) = &record.refused {
                tracing::info!(tool = %record.tool, %reason, "tool call refused");
            }
            observer.on_event(&AgentEvent::ToolCall(record.clone()));
            records.push(record);
            request.messages.push(Message::tool_result(call.id.clone(), result.content));

            match result.control {
                Control::Continue => {}
                Control::Finish(summary) => {
                    skip_rest(&mut request.messages, &calls[i + 1..], "not executed: finish ended the work");
                    break 'turns WorkerEnd::Finished { summary };
                }
                Control::AskHuman(question) => {
                    skip_rest(&mut request.messages, &calls[i + 1..], "not executed: ask_human ended the work");
                    break 'turns WorkerEnd::AskedHuman { question };
                }
            }
        }
    };

    WorkerOutcome { end, transcript: request.messages, usage, turns, tools: records }
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
