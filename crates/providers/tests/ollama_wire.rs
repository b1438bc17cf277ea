//! The `ollama` provider (native `/api/chat`) over real HTTP on loopback,
//! against a small server that replays Ollama's documented wire format from
//! the payloads under `tests/fixtures/ollama/`: plain and streamed (NDJSON)
//! replies, tool calls (whole and in a stream line), structured output via
//! `format`, usage, error bodies, 429 with `Retry-After`, and cut streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_providers::ollama::OllamaProvider;
use orch_providers::{
    ChatRequest, Message, Provider, ProviderError, ResponseFormat, Role, StreamDelta, ToolChoice,
    ToolSpec,
};
use orch_testkit::raw_http::{serve, RawReply as Reply};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ollama")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn client(base_url: &str) -> OllamaProvider {
    OllamaProvider::new("ollama", base_url, Duration::from_secs(30)).unwrap()
}

fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a text file.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path relative to the worktree root."},
                "offset": {"type": "integer", "minimum": 1}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    }
}

/// Collects stream deltas.
#[derive(Default)]
struct Deltas(Mutex<Vec<StreamDelta>>);

impl Deltas {
    fn all(&self) -> Vec<StreamDelta> {
        self.0.lock().unwrap().clone()
    }
    fn text(&self) -> String {
        self.all()
            .iter()
            .filter_map(|d| match d {
                StreamDelta::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn plain_reply_with_usage() {
    let server = serve(vec![Reply::json(200, fixture("plain.json"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("Where is the bug?")]);
    let r = p.chat(&req).await.unwrap();
    assert_eq!(
        r.message.content,
        "The off-by-one is in paginate(): the slice end must be start + size."
    );
    assert_eq!(r.message.role, Role::Assistant);
    assert!(r.message.tool_calls.is_empty());
    assert_eq!(r.finish_reason, "stop");
    assert_eq!(r.model, "qwen2.5-coder:7b");
    assert_eq!(r.usage.input_tokens, 26, "prompt_eval_count");
    assert_eq!(r.usage.output_tokens, 298, "eval_count");
    assert_eq!(r.usage.cached_tokens, 0);

    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].request_line, "POST /api/chat HTTP/1.1");
    assert!(sent[0]
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    // No key variable for a local Ollama: nothing to leak.
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(
        sent[0].body,
        json!({
            "model": "qwen2.5-coder:7b",
            "messages": [{"role": "user", "content": "Where is the bug?"}],
            "stream": false
        })
    );
}

#[tokio::test]
async fn tool_call_round_trip_sends_the_documented_request() {
    let server = serve(vec![
        Reply::json(200, fixture("tool_call.json")),
        Reply::json(200, fixture("plain.json")),
    ])
    .await;
    let p = client(&server.base_url);
    let mut messages = vec![
        Message::system("You are a careful coding worker."),
        Message::user("Fix the off-by-one in paginate()."),
    ];
    let mut req = ChatRequest::new("qwen2.5-coder:7b", messages.clone());
    req.tools = vec![read_file_tool()];
    req.tool_choice = Some(ToolChoice::Auto);
    req.max_tokens = Some(2048);
    req.temperature = Some(0.2);

    let first = p.chat(&req).await.unwrap();
    // Ollama says done_reason "stop" even when it calls a tool.
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(first.message.content, "");
    assert_eq!(first.message.tool_calls.len(), 1);
    let call = &first.message.tool_calls[0];
    assert_eq!(call.id, "call_1", "Ollama sends no ids; orch numbers them");
    assert_eq!(call.name, "read_file");
    // The arguments object becomes JSON text, as in every provider.
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, json!({"path": "src/pager.py", "offset": 1}));
    assert_eq!(
        (first.usage.input_tokens, first.usage.output_tokens),
        (122, 33)
    );

    messages.push(first.message.clone());
    messages.push(Message::tool_result(
        call.id.clone(),
        "1\tdef paginate(items, start, size):\n2\t    return items[start:start + size - 1]\n",
    ));
    req.messages = messages;
    p.chat(&req).await.unwrap();

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    // Arguments sent back as an object, the tool result named after its
    // call, max_tokens and temperature in `options`.
    assert_eq!(sent[1].body, fixture_json("tool_call_request.json"));
}

#[tokio::test]
async fn streamed_text_arrives_in_order_and_assembles() {
    let server = serve(vec![Reply::ndjson(fixture("stream_text.ndjson"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("Where is the bug?")]);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.0.lock().unwrap().push(d.clone());
    let r = p.chat_stream(&req, &sink).await.unwrap();
    assert_eq!(
        deltas.all(),
        vec![
            StreamDelta::Text("The slice".into()),
            StreamDelta::Text(" end is off by one".into()),
            StreamDelta::Text("; use start + size.".into()),
        ]
    );
    assert_eq!(
        r.message.content,
        "The slice end is off by one; use start + size."
    );
    assert_eq!(r.message.content, deltas.text());
    assert_eq!(r.finish_reason, "stop");
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (40, 13));
    let sent = server.requests();
    assert_eq!(sent[0].body["stream"], true);
}

#[tokio::test]
async fn streamed_tool_calls_in_an_ndjson_line_are_assembled() {
    let server = serve(vec![Reply::ndjson(fixture("stream_tool_call.ndjson"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("Fix it.")]);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.0.lock().unwrap().push(d.clone());
    let r = p.chat_stream(&req, &sink).await.unwrap();

    let edit_args =
        json!({"path": "src/pager.py", "old": "start + size - 1", "new": "start + size"});
    let all = deltas.all();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[0], StreamDelta::Text("Writing the fix now.".into()));
    assert_eq!(
        all[1],
        StreamDelta::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "edit_file".into()
        }
    );
    match &all[2] {
        StreamDelta::ToolCallArgs { index: 0, fragment } => {
            assert_eq!(serde_json::from_str::<Value>(fragment).unwrap(), edit_args)
        }
        other => panic!("expected the edit_file arguments, got {other:?}"),
    }
    assert_eq!(
        all[3],
        StreamDelta::ToolCallStart {
            index: 1,
            id: "call_2".into(),
            name: "run".into()
        }
    );

    assert_eq!(r.finish_reason, "tool_calls");
    assert_eq!(r.message.content, "Writing the fix now.");
    let calls = &r.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].name.as_str()),
        ("call_1", "edit_file")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].arguments).unwrap(),
        edit_args
    );
    assert_eq!(
        (calls[1].id.as_str(), calls[1].name.as_str()),
        ("call_2", "run")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].arguments).unwrap(),
        json!({"command": "pytest -q"})
    );
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (512, 52));
}

#[tokio::test]
async fn structured_output_uses_format() {
    let server = serve(vec![Reply::json(200, fixture("structured.json"))]).await;
    let p = client(&server.base_url);
    let mut req = ChatRequest::new(
        "qwen2.5-coder:7b",
        vec![Message::user("Judge this attempt.")],
    );
    req.response_format = Some(ResponseFormat {
        name: "verdict".into(),
        schema: json!({
            "type": "object",
            "properties": {
                "passed": {"type": "boolean"},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "reasoning": {"type": "string"},
                "issues": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["passed", "score", "reasoning", "issues"],
            "additionalProperties": false
        }),
    });
    req.temperature = Some(0.0);
    let r = p.chat(&req).await.unwrap();
    assert_eq!(
        server.requests()[0].body,
        fixture_json("structured_request.json")
    );
    let verdict: Value = serde_json::from_str(&r.message.content).unwrap();
    assert_eq!(verdict["passed"], true);
    assert_eq!(verdict["score"], 0.9);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (34, 12));
}

#[tokio::test]
async fn error_body_gives_ollamas_message_and_fails_at_once() {
    let server = serve(vec![Reply::json(404, fixture("error_404.json"))]).await;
    let p = client(&server.base_url);
    let err = p
        .chat(&ChatRequest::new("qwen9:404b", vec![Message::user("x")]))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Http { status, body, .. } => {
            assert_eq!(*status, 404);
            assert!(body.contains("model \"qwen9:404b\" not found"), "{body}");
            assert!(body.contains("ollama pull"), "the fix is named: {body}");
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let mut limited = Reply::json(429, fixture("error_429.json"));
    limited.headers.push(("retry-after", "3".into()));
    let server = serve(vec![limited]).await;
    let p = client(&server.base_url);
    let err = p
        .chat_stream(
            &ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("x")]),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.to_string().contains("server busy"), "{err}");
}

#[tokio::test]
async fn a_stream_without_its_done_line_is_cut() {
    let server = serve(vec![Reply::ndjson(fixture("stream_cut.ndjson"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("x")]);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.0.lock().unwrap().push(d.clone());
    let err = p.chat_stream(&req, &sink).await.unwrap_err();
    assert!(matches!(err, ProviderError::StreamCut { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("`done` line"), "{err}");
    assert_eq!(deltas.text(), "The slice end is");
}

#[tokio::test]
async fn a_connection_dying_mid_line_or_an_error_line_is_a_cut_stream() {
    let body = fixture("stream_text.ndjson");
    let half = body[..body.len() / 2].to_string();
    let first_line = fixture("stream_cut.ndjson")
        .lines()
        .next()
        .unwrap()
        .to_string();
    let error_line = format!(
        "{first_line}\n{}\n",
        r#"{"error":"llama runner process has terminated: signal: killed"}"#
    );
    let server = serve(vec![
        Reply {
            status: 200,
            content_type: "application/x-ndjson",
            headers: Vec::new(),
            body: half.into_bytes(),
            piece: None,
            declared_len: Some(body.len()),
        },
        Reply::ndjson(error_line),
    ])
    .await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("qwen2.5-coder:7b", vec![Message::user("x")]);
    let err = p.chat_stream(&req, &|_| {}).await.unwrap_err();
    assert!(matches!(err, ProviderError::StreamCut { .. }), "{err:?}");
    assert!(err.is_retryable());

    let err = p.chat_stream(&req, &|_| {}).await.unwrap_err();
    assert!(matches!(err, ProviderError::StreamCut { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("llama runner process has terminated"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_says_so() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = client(&format!("http://127.0.0.1:{port}"));
    let err = p
        .chat(&ChatRequest::new(
            "qwen2.5-coder:7b",
            vec![Message::user("x")],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("ollama serve"), "{err}");
}
