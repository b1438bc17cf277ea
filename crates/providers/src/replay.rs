//! The `replay` provider: plays scripted responses from a file.
//!
//! A script is a list of canned replies. For each request the first entry
//! (in file order) that still has uses left and matches the request is used:
//! `model` must equal the requested model when set, and `when` must occur in
//! some message of the conversation when set. This lets tests and `orch demo`
//! drive the whole pipeline (planner, worker, judge) without a real model.
//!
//! [`ScriptCursor`] does the matching and is public on its own so the
//! testkit's fake OpenAI server can serve the same scripts over HTTP.

use crate::chat::{ChatRequest, ChatResponse, Message, Role, ToolCall};
use crate::{Provider, ProviderError};
use async_trait::async_trait;
use orch_core::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A whole script file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub responses: Vec<ScriptedResponse>,
}

/// One canned reply and the rule for when to give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResponse {
    /// Only answer requests for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Only answer when this text occurs in some message of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How many times this entry may be used: default 1, 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Plain text reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Structured reply; serialized into the content (wins over `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ScriptedToolCall>,
    /// Default: `tool_calls` when there are tool calls, else `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Default: a rough estimate (characters / 4) of request and reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ScriptedUsage>,
    /// Wait this long before answering (to exercise timeouts and concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Answer with this HTTP error status instead of a reply (simulates a
    /// provider error such as 429 or 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The provider's error message that goes with `http_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// A tool call the scripted model makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    /// Default: `call_<n>`, numbered on from the calls already in the
    /// conversation so ids stay unique within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// An object (or any non-string JSON) is serialized; a string is used
    /// as the raw argument text, so scripts can send malformed JSON.
    #[serde(default)]
    pub arguments: Value,
}

impl ScriptedToolCall {
    /// The argument text as the model would send it.
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(raw) => raw.clone(),
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        }
    }
}

/// Usage reported by a scripted reply; missing numbers are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptedUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
}

impl From<ScriptedUsage> for Usage {
    fn from(u: ScriptedUsage) -> Usage {
        Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_tokens: u.cached_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

impl Script {
    /// Parse a script from JSON text. `origin` names the source in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Script, ProviderError> {
        let script: Script = serde_json::from_str(text).map_err(|e| {
            ProviderError::Config(format!(
                "replay script {origin} is not a valid script: {e}; fix the JSON there \
                 (format: {{\"responses\": [{{\"content\": \"...\"}}]}})"
            ))
        })?;
        script.validate(origin)?;
        Ok(script)
    }

    /// Parse a script from YAML text (same shape as the JSON form).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Script, ProviderError> {
        let script: Script = serde_yaml::from_str(text).map_err(|e| {
            ProviderError::Config(format!(
                "replay script {origin} is not a valid script: {e}; fix the YAML there"
            ))
        })?;
        script.validate(origin)?;
        Ok(script)
    }

    /// Read a script file: YAML when it ends in `.yaml`/`.yml`, else JSON.
    pub fn from_file(path: &Path) -> Result<Script, ProviderError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ProviderError::Config(format!(
                "cannot read replay script {origin}: {e}; check the script path in the provider config"
            ))
        })?;
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        );
        if is_yaml {
            Script::from_yaml_str(&text, &origin)
        } else {
            Script::from_json_str(&text, &origin)
        }
    }

    /// Catch mistakes serde cannot: contradictory or empty entries.
    fn validate(&self, origin: &str) -> Result<(), ProviderError> {
        for (i, entry) in self.responses.iter().enumerate() {
            let bad = |what: &str| {
                ProviderError::Config(format!("replay script {origin}: responses[{i}] {what}"))
            };
            if entry.content.is_some() && entry.json.is_some() {
                return Err(bad("has both `content` and `json`; keep one"));
            }
            if let Some(status) = entry.http_status {
                if !(400..=599).contains(&status) {
                    return Err(bad(&format!(
                        "has http_status {status}; use an error status between 400 and 599"
                    )));
                }
            }
            if entry.tool_calls.iter().any(|tc| tc.name.trim().is_empty()) {
                return Err(bad("has a tool call with an empty `name`; name the tool"));
            }
        }
        Ok(())
    }
}

/// Picks script entries for requests; thread-safe.
#[derive(Debug)]
pub struct ScriptCursor {
    state: Mutex<CursorState>,
}

#[derive(Debug)]
struct CursorState {
    entries: Vec<ScriptedResponse>,
    /// Uses left per entry; `None` = unlimited.
    left: Vec<Option<u32>>,
}

impl ScriptCursor {
    pub fn new(script: Script) -> Self {
        let left = script
            .responses
            .iter()
            .map(|r| match r.times.unwrap_or(1) {
                0 => None,
                n => Some(n),
            })
            .collect();
        ScriptCursor {
            state: Mutex::new(CursorState {
                entries: script.responses,
                left,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CursorState> {
        // A panic elsewhere while holding the lock leaves the counters
        // consistent (they are only decremented), so keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The entry for this request; uses it up once.
    pub fn next(&self, request: &ChatRequest) -> Result<ScriptedResponse, String> {
        let mut state = self.lock();
        let found = (0..state.entries.len())
            .find(|&i| state.left[i] != Some(0) && entry_matches(&state.entries[i], request));
        match found {
            Some(i) => {
                if let Some(n) = state.left[i].as_mut() {
                    *n -= 1;
                }
                Ok(state.entries[i].clone())
            }
            None => {
                let remaining = state.left.iter().filter(|l| **l != Some(0)).count();
                let last_user = request
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| truncate_chars(&m.content, 200))
                    .unwrap_or_else(|| "(none)".to_string());
                Err(format!(
                    "no scripted response matches this request for model `{}` \
                     (last user message: {:?}); {remaining} of {} entries still have uses left \
                     but none matches; add an entry with \"model\": \"{}\" and a \"when\" that \
                     occurs in the conversation, or raise \"times\" (0 = unlimited)",
                    request.model,
                    last_user,
                    state.entries.len(),
                    request.model,
                ))
            }
        }
    }

    /// How many entries still have uses left (unlimited ones count).
    pub fn remaining(&self) -> usize {
        self.lock().left.iter().filter(|l| **l != Some(0)).count()
    }
}

fn entry_matches(entry: &ScriptedResponse, request: &ChatRequest) -> bool {
    if let Some(model) = &entry.model {
        if *model != request.model {
            return false;
        }
    }
    match &entry.when {
        Some(needle) => request
            .messages
            .iter()
            .any(|m| m.content.contains(needle.as_str())),
        None => true,
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Rough token estimate: one token per four characters, rounded up.
fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

fn message_chars(m: &Message) -> usize {
    m.content.chars().count()
        + m.tool_calls
            .iter()
            .map(|tc| tc.name.chars().count() + tc.arguments.chars().count())
            .sum::<usize>()
}

/// Turn a script entry into the reply to `request`.
pub fn to_chat_response(entry: &ScriptedResponse, request: &ChatRequest) -> ChatResponse {
    let content = match (&entry.json, &entry.content) {
        (Some(json), _) => json.to_string(),
        (None, Some(text)) => text.clone(),
        (None, None) => String::new(),
    };
    // Number generated ids after the calls already in the conversation so a
    // multi-turn exchange never repeats an id.
    let earlier_calls: usize = request.messages.iter().map(|m| m.tool_calls.len()).sum();
    let tool_calls: Vec<ToolCall> = entry
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, tc)| ToolCall {
            id: tc
                .id
                .clone()
                .unwrap_or_else(|| format!("call_{}", earlier_calls + i + 1)),
            name: tc.name.clone(),
            arguments: tc.arguments_text(),
        })
        .collect();
    let finish_reason = entry.finish_reason.clone().unwrap_or_else(|| {
        if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
        .to_string()
    });
    let message = Message {
        role: Role::Assistant,
        content,
        tool_calls,
        tool_call_id: None,
    };
    let usage = match entry.usage {
        Some(u) => u.into(),
        None => Usage {
            input_tokens: estimate_tokens(request.messages.iter().map(message_chars).sum()),
            output_tokens: estimate_tokens(message_chars(&message)),
            cached_tokens: 0,
            cost_usd: 0.0,
        },
    };
    ChatResponse {
        message,
        usage,
        finish_reason,
        model: request.model.clone(),
    }
}

/// Scripted responses as a [`Provider`].
#[derive(Debug)]
pub struct ReplayProvider {
    name: String,
    /// Where the script came from, for error messages.
    origin: String,
    cursor: ScriptCursor,
}

impl ReplayProvider {
    /// Load the script at `path` (JSON, or YAML for `.yaml`/`.yml`).
    pub fn from_file(name: &str, path: &Path) -> Result<Self, ProviderError> {
        let script = Script::from_file(path)?;
        Ok(ReplayProvider {
            name: name.to_string(),
            origin: path.display().to_string(),
            cursor: ScriptCursor::new(script),
        })
    }

    pub fn from_script(name: &str, script: Script) -> Self {
        ReplayProvider {
            name: name.to_string(),
            origin: "(inline script)".to_string(),
            cursor: ScriptCursor::new(script),
        }
    }

    /// The cursor, e.g. to check that a test used up its script.
    pub fn cursor(&self) -> &ScriptCursor {
        &self.cursor
    }
}

#[async_trait]
impl Provider for ReplayProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let entry = self
            .cursor
            .next(request)
            .map_err(|detail| ProviderError::Replay {
                script: self.origin.clone(),
                detail,
            })?;
        if let Some(ms) = entry.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = entry.http_status {
            return Err(ProviderError::Http {
                provider: self.name.clone(),
                status,
                body: entry
                    .error_message
                    .clone()
                    .unwrap_or_else(|| format!("scripted HTTP error {status}")),
                retry_after: None,
            });
        }
        Ok(to_chat_response(&entry, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn script(v: Value) -> Script {
        serde_json::from_value(v).unwrap()
    }

    fn req(model: &str, user: &str) -> ChatRequest {
        ChatRequest::new(
            model,
            vec![Message::system("You are a test."), Message::user(user)],
        )
    }

    #[test]
    fn matches_by_model_when_and_times() {
        let cursor = ScriptCursor::new(script(json!({"responses": [
            {"model": "worker", "when": "Fix the add function", "content": "w1"},
            {"model": "judge", "times": 2, "content": "j"},
            {"model": "worker", "content": "w-any"},
        ]})));
        // `when` not present: the first worker entry is skipped.
        let r = cursor.next(&req("worker", "Something else")).unwrap();
        assert_eq!(r.content.as_deref(), Some("w-any"));
        let r = cursor
            .next(&req("worker", "Please Fix the add function now"))
            .unwrap();
        assert_eq!(r.content.as_deref(), Some("w1"));
        // Used up (times default 1) and the fallback is used up too.
        let err = cursor
            .next(&req("worker", "Fix the add function"))
            .unwrap_err();
        assert!(err.contains("`worker`"), "{err}");
        assert_eq!(
            cursor.next(&req("judge", "x")).unwrap().content.as_deref(),
            Some("j")
        );
        assert_eq!(
            cursor.next(&req("judge", "y")).unwrap().content.as_deref(),
            Some("j")
        );
        assert!(cursor.next(&req("judge", "z")).is_err());
        assert_eq!(cursor.remaining(), 0);
    }

    #[test]
    fn when_matches_any_role_including_tool_results() {
        let cursor = ScriptCursor::new(script(json!({"responses": [
            {"when": "SECRET-TOOL-OUTPUT", "content": "saw tool"},
            {"content": "default", "times": 0},
        ]})));
        let mut r = req("m", "hi");
        assert_eq!(cursor.next(&r).unwrap().content.as_deref(), Some("default"));
        r.messages
            .push(Message::tool_result("call_1", "... SECRET-TOOL-OUTPUT ..."));
        assert_eq!(
            cursor.next(&r).unwrap().content.as_deref(),
            Some("saw tool")
        );
        let r2 = ChatRequest::new("m", vec![Message::system("system has SECRET-TOOL-OUTPUT")]);
        // Entry 0 is used up now; the unlimited default answers.
        assert_eq!(
            cursor.next(&r2).unwrap().content.as_deref(),
            Some("default")
        );
    }

    #[test]
    fn unlimited_times_never_runs_out() {
        let cursor = ScriptCursor::new(script(json!({"responses": [
            {"model": "judge", "times": 0, "json": {"passed": true}},
        ]})));
        for _ in 0..50 {
            assert!(cursor.next(&req("judge", "x")).is_ok());
        }
        assert_eq!(cursor.remaining(), 1);
        assert!(cursor.next(&req("worker", "x")).is_err());
    }

    #[test]
    fn exhausted_script_error_names_model_message_and_remaining() {
        let cursor = ScriptCursor::new(script(json!({"responses": [
            {"model": "judge", "content": "j"},
            {"model": "worker", "when": "never said", "content": "w"},
        ]})));
        let long = format!("Implement the thing {}", "x".repeat(500));
        let err = cursor.next(&req("planner", &long)).unwrap_err();
        assert!(err.contains("`planner`"), "{err}");
        assert!(err.contains("Implement the thing"), "{err}");
        assert!(err.contains("2 of 2 entries"), "{err}");
        // The user message is truncated, not dumped whole.
        assert!(err.len() < 700, "error too long: {} chars", err.len());
        assert!(err.contains('…'));
    }

    #[test]
    fn raw_string_arguments_are_preserved_and_objects_serialized() {
        let entry: ScriptedResponse = serde_json::from_value(json!({
            "tool_calls": [
                {"name": "write_file", "arguments": {"path": "a.py", "content": "x = 1\n"}},
                {"id": "mine", "name": "run", "arguments": "{\"cmd\": \"ls\", oops"},
            ]
        }))
        .unwrap();
        let request = req("worker", "go");
        let resp = to_chat_response(&entry, &request);
        assert_eq!(resp.finish_reason, "tool_calls");
        assert_eq!(resp.message.role, Role::Assistant);
        let calls = &resp.message.tool_calls;
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].name, "write_file");
        let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
        assert_eq!(args, json!({"path": "a.py", "content": "x = 1\n"}));
        assert_eq!(calls[1].id, "mine");
        assert_eq!(calls[1].arguments, "{\"cmd\": \"ls\", oops");
        assert_eq!(resp.model, "worker");
    }

    #[test]
    fn generated_ids_continue_after_earlier_calls() {
        let entry: ScriptedResponse =
            serde_json::from_value(json!({"tool_calls": [{"name": "a", "arguments": {}}]}))
                .unwrap();
        let mut request = req("worker", "go");
        request.messages.push(Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "a".into(),
                arguments: "{}".into(),
            }],
            tool_call_id: None,
        });
        request.messages.push(Message::tool_result("call_1", "ok"));
        let resp = to_chat_response(&entry, &request);
        assert_eq!(resp.message.tool_calls[0].id, "call_2");
    }

    #[test]
    fn json_content_usage_and_finish_reason() {
        let entry: ScriptedResponse = serde_json::from_value(json!({
            "json": {"passed": true, "score": 9}, "usage": {"input_tokens": 10, "output_tokens": 5}
        }))
        .unwrap();
        let resp = to_chat_response(&entry, &req("judge", "judge it"));
        let parsed: Value = serde_json::from_str(&resp.message.content).unwrap();
        assert_eq!(parsed, json!({"passed": true, "score": 9}));
        assert_eq!(resp.finish_reason, "stop");
        assert_eq!(
            resp.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_tokens: 0,
                cost_usd: 0.0
            }
        );

        // Without scripted usage: characters / 4, rounded up.
        let entry: ScriptedResponse =
            serde_json::from_value(json!({"content": "12345678", "finish_reason": "length"}))
                .unwrap();
        let request = ChatRequest::new("m", vec![Message::user("abcde")]);
        let resp = to_chat_response(&entry, &request);
        assert_eq!(resp.usage.input_tokens, 2);
        assert_eq!(resp.usage.output_tokens, 2);
        assert_eq!(resp.usage.cost_usd, 0.0);
        assert_eq!(resp.finish_reason, "length");
    }

    #[test]
    fn file_parse_error_names_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken-script.json");
        std::fs::write(
            &path,
            "{\"responses\": [\n  {\"content\": \"a\"},\n  {\"content\" \"b\"}\n]}",
        )
        .unwrap();
        let err = ReplayProvider::from_file("replay", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken-script.json"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("column"), "{err}");

        // A misspelled field is caught rather than silently ignored.
        std::fs::write(&path, "{\"responses\": [{\"contnet\": \"a\"}]}").unwrap();
        let err = ReplayProvider::from_file("replay", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("contnet"), "{err}");

        let missing = dir.path().join("nope.json");
        let err = ReplayProvider::from_file("replay", &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.json"), "{err}");
    }

    #[test]
    fn validation_rejects_contradictory_entries() {
        let err = Script::from_json_str(
            r#"{"responses": [{"content": "a", "json": {}}]}"#,
            "inline.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("responses[0]") && err.contains("both"),
            "{err}"
        );
        let err = Script::from_json_str(r#"{"responses": [{"http_status": 200}]}"#, "inline.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_status 200"), "{err}");
    }

    #[test]
    fn yaml_scripts_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            "responses:\n  - model: judge\n    times: 0\n    json: {passed: true}\n",
        )
        .unwrap();
        let script = Script::from_file(&path).unwrap();
        assert_eq!(script.responses[0].model.as_deref(), Some("judge"));
        assert_eq!(script.responses[0].json, Some(json!({"passed": true})));
    }

    #[tokio::test]
    async fn provider_plays_script_delay_and_http_errors() {
        let provider = ReplayProvider::from_script(
            "replay",
            script(json!({"responses": [
                {"content": "slow", "delay_ms": 50},
                {"http_status": 429, "error_message": "Rate limit reached"},
            ]})),
        );
        assert_eq!(provider.name(), "replay");
        let start = std::time::Instant::now();
        let resp = provider.chat(&req("m", "hi")).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(resp.message.content, "slow");
        match provider.chat(&req("m", "hi")).await.unwrap_err() {
            ProviderError::Http {
                provider,
                status,
                body,
                ..
            } => {
                assert_eq!(provider, "replay");
                assert_eq!(status, 429);
                assert_eq!(body, "Rate limit reached");
            }
            other => panic!("expected Http, got {other:?}"),
        }
        match provider.chat(&req("m", "hi")).await.unwrap_err() {
            ProviderError::Replay { script, detail } => {
                assert_eq!(script, "(inline script)");
                assert!(detail.contains("0 of 2 entries"), "{detail}");
            }
            other => panic!("expected Replay, got {other:?}"),
        }
    }

    #[test]
    fn cursor_is_shared_safely_across_threads() {
        let cursor = std::sync::Arc::new(ScriptCursor::new(script(json!({"responses": [
            {"content": "a", "times": 100},
        ]}))));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = cursor.clone();
                std::thread::spawn(move || {
                    (0..30).filter(|_| c.next(&req("m", "x")).is_ok()).count()
                })
            })
            .collect();
        let served: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Exactly `times` uses are handed out, never more.
        assert_eq!(served, 100);
    }
}
