//! `OpenAiProvider::chat_stream` over real HTTP on loopback: against the
//! testkit's fake server (scripted replies rendered as server-sent events,
//! split into small pieces, and injected faults) and against hand-written
//! servers for what the fake never sends (a server that ignores
//! `"stream": true`, an error event mid-stream).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::routing::post;
use axum::Router;
use orch_core::Usage;
use orch_providers::openai::OpenAiProvider;
use orch_providers::replay::Script;
use orch_providers::{ChatRequest, Message, Provider, ProviderError, StreamDelta};
use orch_testkit::{FakeOpenAi, Fault};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

fn script(v: Value) -> Script {
    serde_json::from_value(v).unwrap()
}

fn client(base_url: &str, key: Option<&str>) -> OpenAiProvider {
    OpenAiProvider::new(
        "local",
        base_url,
        key.map(str::to_string),
        Duration::from_secs(30),
    )
    .unwrap()
}

fn request(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user("go")])
}

/// Stream `req` and collect the deltas.
async fn stream(
    p: &OpenAiProvider,
    req: &ChatRequest,
) -> (
    Vec<StreamDelta>,
    Result<orch_providers::ChatResponse, ProviderError>,
) {
    let deltas = Mutex::new(Vec::new());
    let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
    let result = p.chat_stream(req, &sink).await;
    (deltas.into_inner().unwrap(), result)
}

fn texts(deltas: &[StreamDelta]) -> Vec<String> {
    deltas
        .iter()
        .filter_map(|d| match d {
            StreamDelta::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// Serve `router` on a free loopback port; returns the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A server whose chat endpoint answers `body` with `content_type`.
async fn serve_fixed(content_type: &'static str, body: String) -> String {
    serve(Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let body = body.clone();
            async move { ([("content-type", content_type)], body) }
        }),
    ))
    .await
}

#[tokio::test]
async fn text_arrives_in_several_deltas_that_add_up_to_the_answer() {
    const ANSWER: &str = "The off-by-one is in paginate(): the slice end must be page * size, not page * size - 1. ✓";
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": ANSWER,
         "usage": {"input_tokens": 120, "output_tokens": 31, "cached_tokens": 64}},
    ]})));
    server.set_stream_chunk_chars(5);
    // Events leave in separate writes, so the client really reads pieces.
    server.set_stream_event_delay(Duration::from_millis(1));
    let p = client(&server.base_url(), None);
    assert!(p.capabilities().streaming);

    let (deltas, result) = stream(&p, &request("worker")).await;
    let response = result.unwrap();
    let texts = texts(&deltas);
    assert_eq!(texts.len(), ANSWER.chars().count().div_ceil(5), "{texts:?}");
    assert!(texts.iter().all(|t| t.chars().count() <= 5));
    assert_eq!(texts.concat(), ANSWER);
    assert_eq!(response.message.content, ANSWER);
    assert!(response.message.tool_calls.is_empty());
    assert_eq!(response.finish_reason, "stop");
    assert_eq!(response.model, "worker");
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 120,
            output_tokens: 31,
            cached_tokens: 64,
            cost_usd: 0.0
        }
    );

    let sent = &server.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent["model"], "worker");
}

#[tokio::test]
async fn tool_call_arguments_split_across_chunks_are_assembled_exactly() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "Two edits.", "tool_calls": [
            {"id": "call_w", "name": "write_file",
             "arguments": {"path": "src/pages.py", "content": "def paginate(items, page, size):\n    return items[page*size:(page+1)*size]  # «fixed»\n"}},
            // Raw text (not valid JSON) must come through byte for byte.
            {"name": "run", "arguments": "{\"cmd\": \"pytest -q\", \"timeout\": 6"},
        ]},
    ]})));
    server.set_stream_chunk_chars(3);
    let p = client(&server.base_url(), None);
    let (deltas, result) = stream(&p, &request("worker")).await;
    let response = result.unwrap();

    let mut starts = Vec::new();
    let mut fragments: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for d in &deltas {
        match d {
            StreamDelta::ToolCallStart { index, id, name } => {
                starts.push((*index, id.clone(), name.clone()))
            }
            StreamDelta::ToolCallArgs { index, fragment } => {
                fragments.entry(*index).or_default().push(fragment.clone())
            }
            StreamDelta::Text(_) => {}
        }
    }
    assert_eq!(
        starts,
        vec![
            (0, "call_w".to_string(), "write_file".to_string()),
            (1, "call_2".to_string(), "run".to_string())
        ]
    );
    let calls = &response.message.tool_calls;
    assert_eq!(calls.len(), 2);
    for (i, call) in calls.iter().enumerate() {
        let pieces = &fragments[&i];
        assert!(
            pieces.len() > 5,
            "call {i} came in {} piece(s)",
            pieces.len()
        );
        assert_eq!(pieces.concat(), call.arguments, "call {i}");
    }
    let written: Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(written["path"], "src/pages.py");
    assert!(written["content"].as_str().unwrap().contains("# «fixed»\n"));
    assert_eq!(
        calls[1].arguments,
        "{\"cmd\": \"pytest -q\", \"timeout\": 6"
    );
    assert_eq!(
        (calls[0].name.as_str(), calls[1].id.as_str()),
        ("write_file", "call_2")
    );
    assert_eq!(texts(&deltas).concat(), "Two edits.");
    assert_eq!(response.finish_reason, "tool_calls");
}

#[tokio::test]
async fn a_cut_stream_is_stream_cut_and_the_next_try_gets_the_answer() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "whole answer", "times": 0},
    ]})));
    server.push_faults([Fault::CutStream, Fault::DropConnection]);
    let p = client(&server.base_url(), None);

    for what in ["clean end without [DONE]", "connection aborted"] {
        let (deltas, result) = stream(&p, &request("worker")).await;
        match result {
            Err(e @ ProviderError::StreamCut { .. }) => {
                assert!(e.is_retryable());
                assert!(e.to_string().contains("cut the stream off"), "{e}");
            }
            other => panic!("{what}: expected StreamCut, got {other:?}"),
        }
        // The sink saw the part that arrived before the cut.
        assert!(
            texts(&deltas).concat().starts_with("This rep"),
            "{what}: {deltas:?}"
        );
    }
    let (_, result) = stream(&p, &request("worker")).await;
    assert_eq!(result.unwrap().message.content, "whole answer");
    assert_eq!(server.served().0, 1);
}

#[tokio::test]
async fn errors_before_the_stream_are_http_errors_with_retry_after() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "ok"},
    ]})));
    server.push_faults([
        Fault::http_429(Some(3)),
        Fault::http(400, "Invalid 'messages': too long"),
    ]);
    let p = client(&server.base_url(), None);
    match stream(&p, &request("worker")).await.1 {
        Err(e @ ProviderError::Http { status: 429, .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
            assert!(e.to_string().contains("Rate limit reached"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let err = stream(&p, &request("worker")).await.1.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("Invalid 'messages': too long"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_is_read_whole() {
    let body = json!({
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "one go",
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    });
    let url = serve_fixed("application/json", body.to_string()).await;
    let p = client(&url, None);
    let (deltas, result) = stream(&p, &request("m")).await;
    let response = result.unwrap();
    assert_eq!(response.message.content, "one go");
    assert_eq!(response.usage.input_tokens, 4);
    assert_eq!(
        deltas,
        vec![
            StreamDelta::Text("one go".into()),
            StreamDelta::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "f".into()
            },
            StreamDelta::ToolCallArgs {
                index: 0,
                fragment: "{\"a\":1}".into()
            },
        ]
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_keeps_its_status_and_hides_the_key() {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"upstream overloaded (key sk-live-secret)\",\"code\":503}}\n\n",
    );
    let url = serve_fixed("text/event-stream", body.to_string()).await;
    let p = client(&url, Some("sk-live-secret"));
    let (deltas, result) = stream(&p, &request("m")).await;
    assert_eq!(texts(&deltas), vec!["par"]);
    match result {
        Err(e @ ProviderError::Http { status: 503, .. }) => {
            assert!(e.is_retryable());
            let text = e.to_string();
            assert!(text.contains("upstream overloaded"), "{text}");
            assert!(
                !text.contains("sk-live-secret") && text.contains("<redacted>"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}
