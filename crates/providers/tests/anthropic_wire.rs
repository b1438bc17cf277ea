//! The `anthropic` provider over real HTTP on loopback, against local
//! servers that replay the Messages API's documented wire format from the
//! recorded payloads in `tests/fixtures/anthropic/`: whole and streamed
//! replies, tool use, structured output through a forced tool, usage with
//! cache reads and writes, error bodies, rate limits and cut streams.

// Test helpers outside #[test] fns are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use orch_core::Usage;
use orch_providers::anthropic::AnthropicProvider;
use orch_providers::{
    ChatRequest, Message, Provider, ProviderError, ResponseFormat, Role, StreamDelta, ToolCall,
    ToolChoice, ToolSpec,
};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MODEL: &str = "claude-sonnet-4-20250514";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// One canned answer: status, extra headers, content type, body.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: String,
}

fn json_reply(status: u16, body: String) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        content_type: "application/json",
        body,
    }
}

fn sse_reply(body: String) -> Canned {
    Canned {
        status: 200,
        headers: Vec::new(),
        content_type: "text/event-stream",
        body,
    }
}

/// What the server received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct ServerState {
    replies: Mutex<VecDeque<Canned>>,
    received: Mutex<Vec<Received>>,
}

/// A loopback server answering `POST /v1/messages` with `replies` in order
/// and recording every request.
struct Server {
    base_url: String,
    state: Arc<ServerState>,
}

impl Server {
    async fn start(replies: Vec<Canned>) -> Server {
        let state = Arc::new(ServerState {
            replies: Mutex::new(replies.into()),
            received: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/v1/messages", post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Server {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn answer(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("the client sent invalid JSON");
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let Some(reply) = state.replies.lock().unwrap().pop_front() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no canned reply left").into_response();
    };
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", reply.content_type)],
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn client(base_url: &str, key: Option<&str>) -> AnthropicProvider {
    AnthropicProvider::new(
        "anthropic",
        base_url,
        key.map(str::to_string),
        Duration::from_secs(30),
    )
    .unwrap()
}

/// Collects stream deltas.
#[derive(Default)]
struct Deltas(Mutex<Vec<StreamDelta>>);

impl Deltas {
    fn push(&self, d: &StreamDelta) {
        self.0.lock().unwrap().push(d.clone());
    }
    fn all(&self) -> Vec<StreamDelta> {
        self.0.lock().unwrap().clone()
    }
}

fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a file in the worktree".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "max_lines": {"type": "integer"}},
            "required": ["path"],
        }),
    }
}

fn write_file_tool() -> ToolSpec {
    ToolSpec {
        name: "write_file".into(),
        description: "Write a file in the worktree".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        }),
    }
}

#[tokio::test]
async fn plain_reply_sends_the_documented_headers_and_body() {
    let server = Server::start(vec![json_reply(200, fixture("plain_response.json"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let req = ChatRequest::new(
        MODEL,
        vec![
            Message::system("You review Python."),
            Message::user("Where is the bug?"),
        ],
    );
    let resp = p.chat(&req).await.unwrap();
    assert_eq!(
        resp.message.content,
        "The off-by-one is in paginate(): the slice end adds 1, so every page repeats the first item of the next."
    );
    assert_eq!(resp.message.role, Role::Assistant);
    assert!(resp.message.tool_calls.is_empty());
    assert_eq!(resp.finish_reason, "stop");
    assert_eq!(resp.model, MODEL);
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 31,
            output_tokens: 29,
            cached_tokens: 0,
            cost_usd: 0.0
        }
    );

    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/v1/messages");
    let h = &got[0].headers;
    assert_eq!(h["x-api-key"], "sk-ant-test-key");
    assert_eq!(h["anthropic-version"], "2023-06-01");
    assert_eq!(h["content-type"], "application/json");
    assert!(h.get("authorization").is_none());
    assert_eq!(
        got[0].body,
        json!({
            "model": MODEL,
            "max_tokens": 4096,
            "system": [{"type": "text", "text": "You review Python.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is the bug?"}]}],
        })
    );
}

#[tokio::test]
async fn tool_use_round_trip_matches_the_recorded_request() {
    let server = Server::start(vec![
        json_reply(200, fixture("tool_use_response.json")),
        json_reply(200, fixture("final_response.json")),
    ])
    .await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let mut req = ChatRequest::new(
        MODEL,
        vec![
            Message::system("You are orch's coding worker. Work only through the tools."),
            Message::user("Fix the off-by-one in paginate()."),
        ],
    );
    req.tools = vec![read_file_tool(), write_file_tool()];
    req.tool_choice = Some(ToolChoice::Auto);

    let first = p.chat(&req).await.unwrap();
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(
        first.message.content,
        "I'll read the implementation and its test first."
    );
    let calls = &first.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(calls[0].name, "read_file");
    let args: Value = serde_json::from_str(&calls[1].arguments).unwrap();
    assert_eq!(
        args,
        json!({"path": "tests/test_pager.py", "max_lines": 80})
    );
    // A cache write on the first turn counts as input.
    assert_eq!(first.usage.input_tokens, 384 + 1843);
    assert_eq!(first.usage.cached_tokens, 0);

    // The agent answers both calls, then asks again.
    req.messages.push(first.message.clone());
    req.messages.push(Message::tool_result(
        calls[0].id.clone(),
        "def paginate(items, page, size):\n    return items[page * size:(page + 1) * size + 1]\n",
    ));
    req.messages.push(Message::tool_result(
        calls[1].id.clone(),
        "from pager import paginate\n\ndef test_second_page():\n    assert paginate(list(range(10)), 1, 3) == [3, 4, 5]\n",
    ));
    let second = p.chat(&req).await.unwrap();
    assert_eq!(second.finish_reason, "stop");
    assert_eq!(
        second.message.content,
        "The slice end must be (page + 1) * size; I'll fix it."
    );
    assert_eq!(second.usage.input_tokens, 157 + 210 + 2227);
    assert_eq!(second.usage.cached_tokens, 2227);

    let got = server.received();
    assert_eq!(got.len(), 2);
    // The exact wire JSON: system blocks with a cache marker, tool_use
    // blocks, both results merged into one user message (the last block
    // marked for caching), tools with a marker on the last one.
    assert_eq!(got[1].body, fixture_json("tool_round_trip_request.json"));
}

#[tokio::test]
async fn streamed_text_arrives_as_deltas_and_assembles() {
    let server = Server::start(vec![sse_reply(fixture("stream_text.sse"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.push(d);
    let req = ChatRequest::new(MODEL, vec![Message::user("Where is the bug?")]);
    let resp = p.chat_stream(&req, &sink).await.unwrap();
    assert_eq!(
        deltas.all(),
        vec![
            StreamDelta::Text("The bug is".into()),
            StreamDelta::Text(" the +1 in".into()),
            StreamDelta::Text(" the slice end.".into()),
        ]
    );
    assert_eq!(resp.message.content, "The bug is the +1 in the slice end.");
    assert_eq!(resp.finish_reason, "stop");
    assert_eq!(resp.model, MODEL);
    // Input from message_start, output from message_delta (cumulative).
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 25,
            output_tokens: 15,
            cached_tokens: 0,
            cost_usd: 0.0
        }
    );
    assert_eq!(server.received()[0].body["stream"], json!(true));
    assert!(p.capabilities().streaming);
}

#[tokio::test]
async fn tool_call_split_across_input_json_deltas_is_assembled() {
    let server = Server::start(vec![sse_reply(fixture("stream_tool_split.sse"))]).await;
    let p = client(&server.base_url, None);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.push(d);
    let mut req = ChatRequest::new(MODEL, vec![Message::user("Look at the pager.")]);
    req.tools = vec![read_file_tool()];
    let resp = p.chat_stream(&req, &sink).await.unwrap();

    assert_eq!(resp.finish_reason, "tool_calls");
    assert_eq!(resp.message.content, "Let me look at the pager.");
    assert_eq!(
        resp.message.tool_calls,
        vec![ToolCall {
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "read_file".into(),
            arguments: "{\"path\": \"src/lib.rs\", \"max_lines\": 200}".into(),
        }]
    );
    let args: Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "src/lib.rs", "max_lines": 200}));

    let all = deltas.all();
    assert_eq!(
        all[2],
        StreamDelta::ToolCallStart {
            index: 0,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "read_file".into(),
        }
    );
    let fragments: Vec<&str> = all
        .iter()
        .filter_map(|d| match d {
            StreamDelta::ToolCallArgs { index: 0, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        fragments,
        [
            "{\"pa",
            "th\": \"src/",
            "lib.rs\", \"max_",
            "lines\": 2",
            "00}"
        ]
    );
    // Usage with a cache read in message_start.
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 472 + 1843,
            output_tokens: 89,
            cached_tokens: 1843,
            cost_usd: 0.0
        }
    );
    // No key configured: no x-api-key header at all.
    assert!(server.received()[0].headers.get("x-api-key").is_none());
}

#[tokio::test]
async fn stream_dribbled_in_tiny_tcp_writes_parses_the_same() {
    // A hand-written HTTP server writing the stream 7 bytes at a time, so
    // events and lines straddle reads.
    let raw = fixture("stream_tool_split.sse");
    let base = raw_server(move |mut sock| {
        let raw = raw.clone();
        async move {
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            for piece in raw.as_bytes().chunks(7) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
    let p = client(&base, None);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.push(d);
    let req = ChatRequest::new(MODEL, vec![Message::user("Look at the pager.")]);
    let resp = p.chat_stream(&req, &sink).await.unwrap();
    let args: Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "src/lib.rs", "max_lines": 200}));
    assert_eq!(resp.message.content, "Let me look at the pager.");
}

#[tokio::test]
async fn structured_output_through_a_forced_tool() {
    let server = Server::start(vec![json_reply(200, fixture("structured_response.json"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    assert!(p.capabilities().json_schema);
    let schema = json!({
        "type": "object",
        "properties": {
            "passed": {"type": "boolean"},
            "score": {"type": "number"},
            "reasoning": {"type": "string"},
            "issues": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["passed", "score", "reasoning", "issues"],
        "additionalProperties": false
    });
    let mut req = ChatRequest::new(
        "claude-3-5-haiku-20241022",
        vec![
            Message::system("Judge."),
            Message::user("Here is the diff."),
        ],
    );
    req.response_format = Some(ResponseFormat {
        name: "verdict".into(),
        schema: schema.clone(),
    });
    let resp = p.chat(&req).await.unwrap();
    // The tool's input is the content; no tool call surfaces.
    assert!(resp.message.tool_calls.is_empty());
    assert_eq!(resp.finish_reason, "stop");
    let verdict: Value = serde_json::from_str(&resp.message.content).unwrap();
    assert_eq!(
        verdict,
        json!({"passed": true, "score": 0.92,
               "reasoning": "The slice end is fixed and the new test covers the second page.",
               "issues": []})
    );

    let body = &server.received()[0].body;
    let tools = body["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "verdict");
    assert_eq!(tools[0]["input_schema"], schema);
    assert_eq!(tools[0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "verdict"})
    );
    assert!(body.get("response_format").is_none());
}

#[tokio::test]
async fn streamed_structured_output_is_text_not_a_tool_call() {
    let server = Server::start(vec![sse_reply(fixture("stream_structured.sse"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.push(d);
    let mut req = ChatRequest::new("claude-3-5-haiku-20241022", vec![Message::user("Plan.")]);
    req.response_format = Some(ResponseFormat {
        name: "task_plan".into(),
        schema: json!({"type": "object"}),
    });
    let resp = p.chat_stream(&req, &sink).await.unwrap();
    assert!(resp.message.tool_calls.is_empty());
    assert_eq!(resp.finish_reason, "stop");
    let plan: Value = serde_json::from_str(&resp.message.content).unwrap();
    assert_eq!(
        plan,
        json!({"tasks": [{"title": "Fix paginate", "type": "fix"}], "notes": "one bug"})
    );
    let all = deltas.all();
    assert!(
        all.iter().all(|d| matches!(d, StreamDelta::Text(_))),
        "{all:?}"
    );
    let joined: String = all
        .iter()
        .map(|d| match d {
            StreamDelta::Text(t) => t.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(joined, resp.message.content);
}

#[tokio::test]
async fn usage_counts_cache_reads_and_writes() {
    let server = Server::start(vec![json_reply(200, fixture("usage_cache_response.json"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let mut req = ChatRequest::new("claude-opus-4-1-20250805", vec![Message::user("Go.")]);
    req.max_tokens = Some(393);
    let resp = p.chat(&req).await.unwrap();
    // input_tokens 21 + cache writes 188 + cache reads 2048.
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 2257,
            output_tokens: 393,
            cached_tokens: 2048,
            cost_usd: 0.0
        }
    );
    assert_eq!(resp.finish_reason, "length");
    assert_eq!(server.received()[0].body["max_tokens"], json!(393));
}

#[tokio::test]
async fn error_body_gives_the_apis_own_message() {
    let server = Server::start(vec![
        json_reply(400, fixture("error_invalid_request.json")),
        json_reply(529, fixture("error_overloaded.json")),
    ])
    .await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let req = ChatRequest::new(MODEL, vec![Message::user("hi")]);

    let err = p.chat(&req).await.unwrap_err();
    match &err {
        ProviderError::Http {
            status,
            body,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 400);
            assert!(
                body.starts_with("messages.1.content.1: `tool_use` ids were found without"),
                "{body}"
            );
            assert!(!body.contains("invalid_request_error"), "{body}");
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert!(!err.is_retryable());

    let err = p.chat(&req).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Http { status: 529, body, .. } if body == "Overloaded"),
        "{err:?}"
    );
    assert!(err.is_retryable(), "529 overloaded must be retried");
}

#[tokio::test]
async fn rate_limit_429_carries_retry_after() {
    let mut reply = json_reply(429, fixture("error_rate_limit.json"));
    reply.headers.push(("retry-after", "7".into()));
    let mut stream_reply = reply.clone();
    stream_reply.headers.push(("request-id", "req_x".into()));
    let server = Server::start(vec![reply, stream_reply]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let req = ChatRequest::new(MODEL, vec![Message::user("hi")]);

    let err = p.chat(&req).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        err.to_string().contains("50,000 input tokens per minute"),
        "{err}"
    );

    // The same on a streamed request.
    let err = p.chat_stream(&req, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 429, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn stream_ending_before_message_stop_is_a_stream_cut() {
    let server = Server::start(vec![sse_reply(fixture("stream_cut.sse"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.push(d);
    let req = ChatRequest::new(MODEL, vec![Message::user("hi")]);
    let err = p.chat_stream(&req, &sink).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::StreamCut { detail, .. } if detail.contains("message_stop")),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // What did arrive was passed on before the cut.
    assert_eq!(
        deltas.all(),
        vec![
            StreamDelta::Text("The bug is".into()),
            StreamDelta::Text(" the +1 in".into())
        ]
    );
}

#[tokio::test]
async fn connection_dropped_mid_stream_is_a_stream_cut() {
    // The server promises more bytes than it sends, then hangs up.
    let raw = fixture("stream_cut.sse");
    let base = raw_server(move |mut sock| {
        let raw = raw.clone();
        async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100000\r\n\r\n";
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(raw.as_bytes()).await.unwrap();
        sock.flush().await.unwrap();
        // Dropping the socket closes the connection mid-body.
    }})
    .await;
    let p = client(&base, Some("sk-ant-test-key"));
    let err = p
        .chat_stream(&ChatRequest::new(MODEL, vec![Message::user("hi")]), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::StreamCut { detail, .. } if detail.contains("connection failed after 4 events")),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn error_event_inside_a_stream_is_an_overloaded_http_error() {
    let server = Server::start(vec![sse_reply(fixture("stream_error_event.sse"))]).await;
    let p = client(&server.base_url, Some("sk-ant-test-key"));
    let err = p
        .chat_stream(&ChatRequest::new(MODEL, vec![Message::user("hi")]), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Http { status: 529, body, .. } if body == "Overloaded"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn api_key_is_never_shown() {
    let key = "sk-ant-api03-SECRETSECRETSECRET";
    let echo = json!({"type": "error", "error": {"type": "authentication_error",
        "message": format!("invalid x-api-key: {key}")}});
    let server = Server::start(vec![json_reply(401, echo.to_string())]).await;
    let p = client(&server.base_url, Some(key));
    let dbg = format!("{p:?}");
    assert!(!dbg.contains(key) && dbg.contains("<redacted>"), "{dbg}");

    let err = p
        .chat(&ChatRequest::new(MODEL, vec![Message::user("hi")]))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(key), "{shown}");
    assert!(shown.contains("invalid x-api-key: <redacted>"), "{shown}");
    assert!(!err.is_retryable());
    // The key did go where it belongs.
    assert_eq!(server.received()[0].headers["x-api-key"], key);
}

#[tokio::test]
async fn unreachable_and_timeout_are_told_apart() {
    // A port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = client(&format!("http://{addr}"), Some("sk-ant-test-key"));
    let req = ChatRequest::new(MODEL, vec![Message::user("hi")]);
    let err = p.chat(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());

    // A server that reads the request and never answers.
    let base = raw_server(|sock| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(sock);
    })
    .await;
    let p = AnthropicProvider::new("anthropic", &base, None, Duration::from_millis(300)).unwrap();
    let err = p.chat(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = p.chat_stream(&req, &|_| {}).await.unwrap_err();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let huge = format!(
        "{{\"type\":\"message\",\"content\":[{{\"type\":\"text\",\"text\":\"{}\"}}]}}",
        "a".repeat(9 * 1024 * 1024)
    );
    let server = Server::start(vec![json_reply(200, huge)]).await;
    let p = client(&server.base_url, None);
    let err = p
        .chat(&ChatRequest::new(MODEL, vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::BadResponse { detail, .. } if detail.contains("8 MiB")),
        "{err:?}"
    );
}

/// A one-connection-at-a-time raw HTTP server: reads each request (head and
/// `content-length` body) and hands the socket to `respond`.
async fn raw_server<F, Fut>(respond: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            read_request(&mut sock).await;
            tokio::spawn(respond(sock));
        }
    });
    format!("http://{addr}")
}

async fn read_request(sock: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
    }
}
