//! A request the server refuses for what it is (not because it is down) is
//! not retried through the whole outage schedule, over real HTTP against
//! the testkit's byte-exact server.
//!
//! llama-cpp-python answers a message it cannot validate (an assistant
//! turn with `"content": null`) with HTTP 500 and a pydantic error, the
//! same every time. Two identical failures in a row plus an answered probe
//! end the call with `RejectedTwice`; an identical failure during a real
//! outage (the probe fails too), overload statuses and `Retry-After` keep
//! the schedule. Waits go through a `VirtualTimer`, so nothing really waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_providers::openai::OpenAiProvider;
use orch_providers::resilient::{Observer, ResilienceEvent, ResilientProvider};
use orch_providers::retry::{RetryPolicy, TryRecord, VirtualTimer};
use orch_providers::{ChatRequest, Message, Provider, ProviderError, Role, ToolCall};
use orch_testkit::raw_http::{serve, RawReply, RawServer};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What llama-cpp-python 0.3 answers to an assistant message whose
/// content is `null` (its own wording, one line).
fn llama_rejection() -> RawReply {
    let message =
        "[{'type': 'string_type', 'loc': ('body', 'messages', 2, 'typed_dict', 'content'), \
                   'msg': 'Input should be a valid string', 'input': None}]";
    RawReply::json(
        500,
        json!({"error": {"code": 500, "message": message, "type": "InternalServerError"}})
            .to_string(),
    )
}

fn error(status: u16, message: &str) -> RawReply {
    RawReply::json(
        status,
        json!({"error": {"message": message, "type": "server_error"}}).to_string(),
    )
}

fn ok(text: &str) -> RawReply {
    RawReply::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}
        })
        .to_string(),
    )
}

struct Rig {
    server: RawServer,
    provider: ResilientProvider,
    timer: Arc<VirtualTimer>,
    events: Arc<Mutex<Vec<ResilienceEvent>>>,
}

async fn start(replies: Vec<RawReply>) -> Rig {
    let server = serve(replies).await;
    let timer = Arc::new(VirtualTimer::new());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let observer: Observer =
        Arc::new(move |e: &ResilienceEvent| sink.lock().unwrap().push(e.clone()));
    let client: Arc<dyn Provider> = Arc::new(
        OpenAiProvider::new(
            "local",
            &format!("{}/v1", server.base_url),
            None,
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    // The default schedule: 2 s, then the long outage schedule.
    let provider = ResilientProvider::new(client, RetryPolicy::default().with_timer(timer.clone()))
        .with_observer(observer);
    Rig {
        server,
        provider,
        timer,
        events,
    }
}

impl Rig {
    fn tries(&self) -> Vec<TryRecord> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ResilienceEvent::Try(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Turn 2 of a tool conversation, the request llama-cpp-python refused.
fn turn_two() -> ChatRequest {
    let mut req = ChatRequest::new(
        "gemma3-270m",
        vec![
            Message::system("You are a coding agent."),
            Message::user("Fix add()."),
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "read_file".into(),
                    arguments: "{\"path\":\"calc.py\"}".into(),
                }],
                tool_call_id: None,
            },
            Message::tool_result("call_1", "def add(a, b):\n    return a - b\n"),
        ],
    );
    req.max_tokens = Some(256);
    req
}

#[tokio::test]
async fn the_same_rejection_twice_with_the_server_up_stops_after_two_tries() {
    let rig = start(vec![llama_rejection(), llama_rejection(), ok("OK")]).await;
    let err = rig.provider.chat(&turn_two()).await.unwrap_err();
    match &err {
        ProviderError::RejectedTwice {
            provider,
            status,
            body,
        } => {
            assert_eq!((provider.as_str(), *status), ("local", 500));
            assert!(body.contains("Input should be a valid string"), "{body}");
        }
        other => panic!("expected RejectedTwice, got {other:?}"),
    }
    assert!(
        !err.is_retryable(),
        "the engine must not treat it as an outage"
    );
    let text = err.to_string();
    assert!(
        text.contains("rejected the same request twice with the same answer")
            && text.contains("this is not an outage, retrying will not help"),
        "{text}"
    );

    // Two tries and one probe; one short wait, not the outage schedule.
    let requests = rig.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body, requests[1].body, "the same request twice");
    let probe = &requests[2].body;
    assert_eq!(probe["model"], "gemma3-270m");
    assert_eq!(probe["max_tokens"], 1);
    assert_eq!(probe["messages"].as_array().unwrap().len(), 1);
    assert!(probe.get("tools").is_none());
    let sleeps = rig.timer.sleeps();
    assert_eq!(sleeps.len(), 1, "{sleeps:?}");
    assert!(sleeps[0] < Duration::from_secs(3), "{sleeps:?}");

    let tries = rig.tries();
    assert_eq!(tries.len(), 2);
    assert!(tries[0].retryable && tries[0].wait.is_some());
    assert!(!tries[1].retryable && tries[1].wait.is_none());
    assert!(
        tries[1].message().contains("a retry cannot fix this"),
        "{}",
        tries[1].message()
    );
}

#[tokio::test]
async fn the_same_500_during_an_outage_keeps_the_schedule() {
    let outage = "The server had an error while processing your request. Sorry about that!";
    // Try 1, try 2, the probe (down too), try 3 (answered).
    let rig = start(vec![
        error(500, outage),
        error(500, outage),
        error(500, outage),
        ok("back"),
    ])
    .await;
    let answer = rig.provider.chat(&turn_two()).await.unwrap();
    assert_eq!(answer.message.content, "back");
    assert_eq!(rig.server.requests().len(), 4);
    let sleeps = rig.timer.sleeps();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(
        sleeps[1] >= Duration::from_secs(30),
        "the outage schedule: {sleeps:?}"
    );
}

#[tokio::test]
async fn overload_statuses_and_retry_after_are_never_probed() {
    // 503 three times: no probe, the schedule goes on.
    let rig = start(vec![
        error(503, "overloaded"),
        error(503, "overloaded"),
        error(503, "overloaded"),
        ok("fine"),
    ])
    .await;
    assert_eq!(
        rig.provider
            .chat(&turn_two())
            .await
            .unwrap()
            .message
            .content,
        "fine"
    );
    assert_eq!(rig.server.requests().len(), 4);
    assert_eq!(rig.timer.sleeps().len(), 3);

    // A 500 that says when to come back is waited out, not probed.
    let mut later = error(500, "warming up");
    later.headers.push(("retry-after", "7".into()));
    let rig2 = start(vec![later.clone(), later.clone(), later, ok("warm")]).await;
    assert_eq!(
        rig2.provider
            .chat(&turn_two())
            .await
            .unwrap()
            .message
            .content,
        "warm"
    );
    assert_eq!(rig2.server.requests().len(), 4);
    assert_eq!(rig2.timer.sleeps(), vec![Duration::from_secs(7); 3]);
}

#[tokio::test]
async fn different_answers_are_retried_as_before() {
    let rig = start(vec![
        error(500, "worker 1 crashed"),
        error(500, "worker 2 crashed"),
        error(500, "worker 3 crashed"),
        ok("done"),
    ])
    .await;
    assert_eq!(
        rig.provider
            .chat(&turn_two())
            .await
            .unwrap()
            .message
            .content,
        "done"
    );
    assert_eq!(rig.server.requests().len(), 4, "no probe");
    assert_eq!(rig.tries().len(), 4);
}
