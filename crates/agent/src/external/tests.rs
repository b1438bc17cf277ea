//! Tests of the shared machinery: the prompt, the question sentinel, how a
//! run's end is decided, and the proxy itself over its unix socket (real
//! HTTP/1.1 on a real socket; only the model behind it is scripted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use orch_providers::{ChatRequest, ChatResponse, Provider, ProviderError, Role, ToolCall};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Answer = Box<dyn Fn(usize) -> Result<ChatResponse, ProviderError> + Send + Sync>;

/// A model that answers call `i` with `answer(i)` and keeps every request.
struct Model {
    answer: Answer,
    seen: Mutex<Vec<ChatRequest>>,
}

#[async_trait::async_trait]
impl Provider for Model {
    fn name(&self) -> &str {
        "model"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let i = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(request.clone());
            seen.len() - 1
        };
        (self.answer)(i)
    }
}

fn model(
    answer: impl Fn(usize) -> Result<ChatResponse, ProviderError> + Send + Sync + 'static,
) -> Arc<Model> {
    Arc::new(Model {
        answer: Box::new(answer),
        seen: Mutex::new(Vec::new()),
    })
}

fn reply(text: &str, calls: &[(&str, &str)]) -> ChatResponse {
    let mut message = Message::assistant(text);
    message.tool_calls = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| ToolCall {
            id: format!("call_{i}"),
            name: name.to_string(),
            arguments: args.to_string(),
        })
        .collect();
    ChatResponse {
        message,
        usage: Usage {
            input_tokens: 50,
            output_tokens: 5,
            cached_tokens: 0,
            cost_usd: 0.002,
        },
        finish_reason: "stop".into(),
        model: "real-model".into(),
    }
}

struct Served {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    proxy: proxy::Proxy,
    events: tokio::sync::mpsc::UnboundedReceiver<AgentEvent>,
}

fn serve(provider: Arc<Model>, max_turns: u32) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let config = proxy::ProxyConfig {
        provider,
        model: "worker-model".into(),
        max_turns,
    };
    let proxy = proxy::Proxy::start(&socket, config, tx).unwrap();
    Served {
        _dir: dir,
        socket,
        proxy,
        events,
    }
}

/// One HTTP/1.1 request over the socket: (status, body).
async fn post(socket: &Path, path: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        proxy::DUMMY_API_KEY,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Data lines of an SSE body (chunked transfer framing aside).
fn data_lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn every_wire_format_is_answered_through_the_provider() {
    let provider = model(|i| {
        Ok(reply(
            &format!("answer {i}"),
            &[("bash", "{\"command\":\"ls\"}")],
        ))
    });
    let mut s = serve(provider.clone(), 10);
    let (status, body) = post(
        &s.socket,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["model"], "gpt-4o",
        "the agent sees the model it asked for"
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "bash"
    );

    let (status, body) = post(
        &s.socket,
        "/v1/messages?beta=true",
        &json!({"model": "claude", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: message_stop"), "{body}");

    let (status, body) = post(
        &s.socket,
        "/v1/responses",
        &json!({"model": "gpt-5", "stream": true, "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = data_lines(&body);
    assert_eq!(events.last().unwrap()["type"], "response.completed");

    let seen = provider.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|r| r.model == "worker-model"),
        "every call goes to the worker model"
    );
    let tally = s.proxy.tally();
    assert_eq!(tally.turns, 3);
    assert_eq!(tally.usage.input_tokens, 150);
    assert!((tally.usage.cost_usd - 0.006).abs() < 1e-12);
    assert_eq!(tally.last_text.as_deref(), Some("answer 2"));
    assert_eq!(tally.transcript.last().unwrap().role, Role::Assistant);
    let mut turns = Vec::new();
    while let Ok(AgentEvent::ModelCall { turn, .. }) = s.events.try_recv() {
        turns.push(turn);
    }
    assert_eq!(turns, [1, 2, 3], "each call is reported live");
    assert!(!s.proxy.stopped().is_cancelled());
}

#[tokio::test]
async fn a_budget_refusal_is_shown_to_the_agent_and_ends_the_run() {
    let provider = model(|i| match i {
        0 => Ok(reply("first", &[])),
        _ => Err(ProviderError::Budget(
            "task budget reached: $0.0100 spent, max_budget_per_task_usd = $0.01".into(),
        )),
    });
    let s = serve(provider.clone(), 10);
    let ask =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&s.socket, "/v1/messages", &ask).await.0, 200);
    let (status, body) = post(&s.socket, "/v1/messages", &ask).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("task budget reached"));
    assert!(s.proxy.stopped().is_cancelled());
    // Later calls get the same answer without reaching the provider.
    let (status, body) = post(
        &s.socket,
        "/v1/chat/completions",
        &json!({
        "model": "m", "messages": [{"role": "user", "content": "again"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("task budget reached"));
    assert_eq!(provider.seen.lock().unwrap().len(), 2);
    assert!(matches!(s.proxy.tally().fatal, Some(proxy::Fatal::Model(m)) if m.contains("budget")));
}

#[tokio::test]
async fn the_call_after_the_last_turn_is_refused() {
    let provider = model(|_| Ok(reply("ok", &[])));
    let s = serve(provider.clone(), 2);
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        assert_eq!(post(&s.socket, "/chat/completions", &ask).await.0, 200);
    }
    let (status, body) = post(&s.socket, "/chat/completions", &ask).await;
    assert_eq!(status, 400);
    assert!(body.contains("max_turns"), "{body}");
    assert_eq!(provider.seen.lock().unwrap().len(), 2);
    assert_eq!(s.proxy.tally().fatal, Some(proxy::Fatal::TurnLimit));
    assert_eq!(s.proxy.tally().turns, 2);
}

#[tokio::test]
async fn secrets_in_tool_output_never_reach_the_model() {
    let secret = "sk-proxytest-0123456789abcdef0123";
    orch_core::redact::register(secret);
    let provider = model(|_| Ok(reply("ok", &[])));
    let s = serve(provider.clone(), 5);
    let ask = json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "bash", "arguments": format!("{{\"command\":\"echo {secret}\"}}")}}]},
        {"role": "tool", "tool_call_id": "c1", "content": format!("KEY={secret}")}
    ]});
    assert_eq!(post(&s.socket, "/v1/chat/completions", &ask).await.0, 200);
    let seen = format!("{:?}", provider.seen.lock().unwrap());
    assert!(!seen.contains(secret), "{seen}");
}

#[tokio::test]
async fn bad_requests_and_unknown_routes_say_what_is_served() {
    let s = serve(model(|_| Ok(reply("ok", &[]))), 5);
    let (status, body) = post(&s.socket, "/v1/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(status, 400);
    assert!(body.contains("messages"), "{body}");
    let (status, body) = post(&s.socket, "/v1/embeddings", &json!({})).await;
    assert_eq!(status, 404);
    assert!(body.contains("/v1/chat/completions"), "{body}");
    assert_eq!(s.proxy.tally().turns, 0, "no model call was made");
}

#[test]
fn the_prompt_keeps_role_and_rules_but_not_the_builtin_tools() {
    let system =
        "You fix a defect in a git repository.\n\nYou work inside your own worktree. Tools:\n\
                  - read_file{path}: read\n- finish{summary}: stop\n\n\
                  Rules: make the smallest change. The project's tests run with `pytest`.\n";
    let p = compose_prompt(
        system,
        "# Task: Fix add\n\n## Previous attempt failed\n\nboom\n",
    );
    assert!(p.starts_with("You fix a defect"));
    assert!(p.contains("Rules: make the smallest change"));
    assert!(p.contains("`pytest`"));
    assert!(!p.contains("read_file"), "{p}");
    assert!(p.contains(ASK_SENTINEL));
    assert!(p.trim_end().ends_with("boom"), "the task comes last: {p}");
}

#[test]
fn questions_are_read_from_the_last_sentinel_line() {
    assert_eq!(
        asked_question("I looked.\nORCH_ASK_HUMAN: Which API version?\n"),
        Some("Which API version?".into())
    );
    assert_eq!(
        asked_question("`ORCH_ASK_HUMAN: Use v2?`"),
        Some("Use v2?".into())
    );
    assert_eq!(asked_question("Done. No questions."), None);
    assert_eq!(asked_question("ORCH_ASK_HUMAN:   \n"), None);
}

fn exited(code: i32, stderr: &str) -> Ended {
    Ended::Exited(Ok(ProcessOutput {
        exit_code: Some(code),
        signal: None,
        timed_out: false,
        stdout: String::new(),
        stderr: stderr.into(),
        truncated: false,
        duration: Duration::from_secs(1),
        killed_by: None,
    }))
}

#[test]
fn the_end_follows_the_proxy_then_the_deadline_then_the_final_message() {
    let tally = |fatal: Option<proxy::Fatal>, last: &str| proxy::Tally {
        fatal,
        last_text: Some(last.into()),
        ..Default::default()
    };
    let report = Report::default();
    let budget = proxy::Fatal::Model("task budget reached: $1".into());
    assert_eq!(
        decide("x", &exited(0, ""), &tally(Some(budget), "done"), &report),
        WorkerEnd::ModelError {
            message: "task budget reached: $1".into()
        }
    );
    assert_eq!(
        decide(
            "x",
            &Ended::Stopped,
            &tally(Some(proxy::Fatal::TurnLimit), ""),
            &report
        ),
        WorkerEnd::TurnLimit
    );
    assert_eq!(
        decide("x", &Ended::Cancelled, &tally(None, ""), &report),
        WorkerEnd::Cancelled
    );
    assert_eq!(
        decide(
            "x",
            &exited(0, ""),
            &tally(None, "ORCH_ASK_HUMAN: Why?"),
            &report
        ),
        WorkerEnd::AskedHuman {
            question: "Why?".into()
        }
    );
    assert_eq!(
        decide("x", &exited(0, ""), &tally(None, "Fixed it."), &report),
        WorkerEnd::Finished {
            summary: "Fixed it.".into()
        }
    );
    let WorkerEnd::Stuck { detail } = decide("x", &exited(1, "boom"), &tally(None, ""), &report)
    else {
        panic!("a failed CLI is stuck");
    };
    assert!(
        detail.contains("exit code 1") && detail.contains("boom"),
        "{detail}"
    );
    let WorkerEnd::ModelError { message } =
        decide("x", &exited(127, "not found"), &tally(None, ""), &report)
    else {
        panic!("a CLI that cannot start is orch's problem, not the attempt's");
    };
    assert!(message.contains("install-agents.sh"), "{message}");
    let mut timed_out = exited(137, "");
    if let Ended::Exited(Ok(out)) = &mut timed_out {
        out.timed_out = true;
    }
    assert_eq!(
        decide("x", &timed_out, &tally(None, ""), &report),
        WorkerEnd::TimedOut
    );
}

#[test]
fn shell_quoting_survives_quotes() {
    assert_eq!(sh_quote("it's"), "'it'\\''s'");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", sh_quote("a 'b' $c")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a 'b' $c");
}
