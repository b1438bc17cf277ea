//! The `gemini` provider over real HTTP on loopback, against a small server
//! that replays Gemini's documented wire format from the payloads under
//! `tests/fixtures/gemini/`: plain and streamed replies, function calls
//! (whole and in a later stream chunk), structured output, usage with
//! cached tokens, error bodies, 429 with `Retry-After`, cut streams, and
//! the API key never showing up where it should not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_providers::gemini::GeminiProvider;
use orch_providers::{
    ChatRequest, Message, Provider, ProviderError, ResponseFormat, Role, StreamDelta, ToolChoice,
    ToolSpec,
};
use orch_testkit::raw_http::{serve_under, RawReply as Reply, RawServer};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpListener;

const KEY: &str = "AIzaSy-TEST-SECRET-0123456789";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemini")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The shared raw server, mounted at Gemini's `/v1beta` base path.
async fn serve(replies: Vec<Reply>) -> RawServer {
    serve_under("/v1beta", replies).await
}

fn client(base_url: &str) -> GeminiProvider {
    GeminiProvider::new(
        "gemini",
        base_url,
        Some(KEY.to_string()),
        Duration::from_secs(30),
    )
    .unwrap()
}

fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a text file.".into(),
        parameters: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path relative to the worktree root."},
                "offset": {"type": "integer", "minimum": 1, "exclusiveMaximum": 1000000}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    }
}

fn finish_tool() -> ToolSpec {
    ToolSpec {
        name: "finish".into(),
        description: "Call when the change is complete.".into(),
        parameters: json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false}),
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
async fn plain_reply_with_usage_including_cached_and_thinking_tokens() {
    let server = serve(vec![Reply::json(200, fixture("plain.json"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.5-flash", vec![Message::user("Where is the bug?")]);
    let r = p.chat(&req).await.unwrap();
    assert_eq!(
        r.message.content,
        "The off-by-one is in paginate(): the slice end must be start + size."
    );
    assert_eq!(r.message.role, Role::Assistant);
    assert!(r.message.tool_calls.is_empty());
    assert_eq!(r.finish_reason, "stop");
    assert_eq!(r.model, "gemini-2.5-flash");
    assert_eq!(r.usage.input_tokens, 1250);
    // candidatesTokenCount + thoughtsTokenCount: thinking is billed as output.
    assert_eq!(r.usage.output_tokens, 18 + 74);
    assert_eq!(r.usage.cached_tokens, 1024);

    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].request_line,
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1"
    );
    assert_eq!(sent[0].header("x-goog-api-key"), Some(KEY));
    assert!(sent[0]
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        sent[0].body,
        json!({"contents": [{"role": "user", "parts": [{"text": "Where is the bug?"}]}]})
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
    let mut req = ChatRequest::new("gemini-2.0-flash", messages.clone());
    req.tools = vec![read_file_tool(), finish_tool()];
    req.tool_choice = Some(ToolChoice::Auto);
    req.max_tokens = Some(2048);
    req.temperature = Some(0.2);

    let first = p.chat(&req).await.unwrap();
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(first.message.content, "I'll read the file first.");
    assert_eq!(first.message.tool_calls.len(), 1);
    let call = &first.message.tool_calls[0];
    assert_eq!(call.id, "call_1", "Gemini sends no ids; orch numbers them");
    assert_eq!(call.name, "read_file");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args, json!({"path": "src/pager.py", "offset": 1}));
    assert_eq!(first.usage.input_tokens, 310);
    assert_eq!(first.usage.output_tokens, 25);
    assert_eq!(first.usage.cached_tokens, 0);

    messages.push(first.message.clone());
    messages.push(Message::tool_result(
        call.id.clone(),
        "1\tdef paginate(items, start, size):\n2\t    return items[start:start + size - 1]\n",
    ));
    messages.push(Message::user("Keep the change minimal."));
    req.messages = messages;
    let second = p.chat(&req).await.unwrap();
    assert_eq!(second.finish_reason, "stop");

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    // System instruction, merged user turn with the functionResponse named
    // after the call, the thought signature sent back on its call, and the
    // declarations cut to Gemini's schema subset ($schema,
    // additionalProperties and exclusiveMaximum gone; `finish` without
    // parameters because it takes none).
    assert_eq!(sent[1].body, fixture_json("tool_call_request.json"));
    assert!(sent[0].body.get("contents").is_some());
    assert_eq!(sent[0].body["tools"], sent[1].body["tools"]);
}

#[tokio::test]
async fn tool_choice_for_one_tool_limits_the_allowed_functions() {
    let server = serve(vec![Reply::json(200, fixture("tool_call.json"))]).await;
    let p = client(&server.base_url);
    let mut req = ChatRequest::new("gemini-2.0-flash", vec![Message::user("read it")]);
    req.tools = vec![read_file_tool(), finish_tool()];
    req.tool_choice = Some(ToolChoice::Tool("read_file".into()));
    p.chat(&req).await.unwrap();
    assert_eq!(
        server.requests()[0].body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["read_file"]}})
    );
}

#[tokio::test]
async fn streamed_text_arrives_in_order_and_assembles() {
    let server = serve(vec![Reply::sse(fixture("stream_text.sse"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.5-flash", vec![Message::user("Where is the bug?")]);
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
    assert_eq!(r.model, "gemini-2.5-flash");
    // The last chunk's running totals.
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (40, 13));

    let sent = server.requests();
    assert_eq!(
        sent[0].request_line,
        "POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1"
    );
    assert_eq!(sent[0].header("x-goog-api-key"), Some(KEY));
}

#[tokio::test]
async fn streamed_function_calls_in_a_later_chunk_are_assembled() {
    let server = serve(vec![
        Reply::sse(fixture("stream_tool_call.sse")),
        Reply::json(200, fixture("plain.json")),
    ])
    .await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.5-flash", vec![Message::user("Fix it.")]);
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
    assert_eq!(r.usage.input_tokens, 512);
    assert_eq!(r.usage.output_tokens, 52 + 36);
    assert_eq!(r.usage.cached_tokens, 256);

    // The next request sends the streamed call's thought signature back on
    // the first call, and answers both calls by function name.
    let mut next = req.clone();
    next.messages.push(r.message.clone());
    next.messages.push(Message::tool_result("call_1", "edited"));
    next.messages
        .push(Message::tool_result("call_2", "1 passed"));
    p.chat(&next).await.unwrap();
    let sent = server.requests();
    assert_eq!(
        sent[1].body["contents"][1]["parts"][1],
        json!({"functionCall": {"name": "edit_file", "args": edit_args},
               "thoughtSignature": "Q2lRQlZLaGk0WXNpZ25hdHVyZS10d28="})
    );
    assert!(sent[1].body["contents"][1]["parts"][2]
        .get("thoughtSignature")
        .is_none());
    assert_eq!(
        sent[1].body["contents"][2]["parts"],
        json!([
            {"functionResponse": {"name": "edit_file", "response": {"content": "edited"}}},
            {"functionResponse": {"name": "run", "response": {"content": "1 passed"}}}
        ])
    );
}

#[tokio::test]
async fn structured_output_uses_response_schema() {
    let server = serve(vec![Reply::json(200, fixture("structured.json"))]).await;
    let p = client(&server.base_url);
    let mut req = ChatRequest::new("gemini-2.5-pro", vec![Message::user("Judge this attempt.")]);
    req.response_format = Some(ResponseFormat {
        name: "verdict".into(),
        schema: json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
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
    let r = p.chat(&req).await.unwrap();
    assert_eq!(
        server.requests()[0].body,
        fixture_json("structured_request.json")
    );
    let verdict: Value = serde_json::from_str(&r.message.content).unwrap();
    assert_eq!(verdict["passed"], true);
    assert_eq!(verdict["score"], 0.9);
    assert_eq!(verdict["issues"], json!([]));
    assert_eq!(r.model, "gemini-2.5-pro");
}

#[tokio::test]
async fn error_body_gives_geminis_message_and_fails_at_once() {
    let server = serve(vec![Reply::json(400, fixture("error_400.json"))]).await;
    let p = client(&server.base_url);
    let err = p
        .chat(&ChatRequest::new(
            "gemini-2.0-flash",
            vec![Message::user("x")],
        ))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Http {
            status,
            body,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 400);
            assert!(body.contains("contents is not specified"), "{body}");
            assert!(body.contains("INVALID_ARGUMENT"), "{body}");
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rate_limit_honours_retry_after_and_retry_info() {
    let mut with_header = Reply::json(429, fixture("error_429.json"));
    with_header.headers.push(("retry-after", "7".into()));
    let server = serve(vec![
        with_header,
        Reply::json(429, fixture("error_429.json")),
        Reply::json(503, r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#.into()),
    ])
    .await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.0-flash", vec![Message::user("x")]);

    let err = p.chat(&req).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(7)),
        "the header wins"
    );
    assert!(
        err.to_string().contains("exceeded your current quota"),
        "{err}"
    );
    assert!(err.to_string().contains("RESOURCE_EXHAUSTED"), "{err}");

    // Without the header, Gemini's RetryInfo detail ("41s") is the wait.
    let err = p.chat(&req).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(41)));

    let err = p.chat(&req).await.unwrap_err();
    assert!(err.is_retryable(), "503 is retryable: {err}");
    assert!(err.to_string().contains("overloaded"), "{err}");
}

#[tokio::test]
async fn a_stream_without_a_finish_reason_is_cut() {
    let server = serve(vec![Reply::sse(fixture("stream_cut.sse"))]).await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.5-flash", vec![Message::user("x")]);
    let deltas = Deltas::default();
    let sink = |d: &StreamDelta| deltas.0.lock().unwrap().push(d.clone());
    let err = p.chat_stream(&req, &sink).await.unwrap_err();
    assert!(matches!(err, ProviderError::StreamCut { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("without a finish reason"), "{err}");
    // What did arrive was passed on as it came.
    assert_eq!(deltas.text(), "The slice end is");
}

#[tokio::test]
async fn a_connection_dying_mid_event_is_a_cut_stream() {
    let body = fixture("stream_text.sse");
    let half = body[..body.len() / 2].to_string();
    let server = serve(vec![Reply {
        status: 200,
        content_type: "text/event-stream",
        headers: Vec::new(),
        body: half.into_bytes(),
        piece: None,
        declared_len: Some(body.len()),
    }])
    .await;
    let p = client(&server.base_url);
    let req = ChatRequest::new("gemini-2.5-flash", vec![Message::user("x")]);
    let err = p.chat_stream(&req, &|_| {}).await.unwrap_err();
    assert!(matches!(err, ProviderError::StreamCut { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_blocked_prompt_names_the_reason() {
    let server = serve(vec![Reply::json(200, fixture("blocked.json"))]).await;
    let p = client(&server.base_url);
    let err = p
        .chat(&ChatRequest::new(
            "gemini-2.0-flash",
            vec![Message::user("x")],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("blocked the prompt (SAFETY)"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_key_never_appears_in_urls_debug_or_errors() {
    // Google's real message does not echo the key, but a proxy might.
    let echo = format!(
        r#"{{"error":{{"code":400,"message":"API key not valid: {KEY}. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}}}"#
    );
    let server = serve(vec![Reply::json(400, echo)]).await;
    let p = client(&server.base_url);
    assert!(!format!("{p:?}").contains(KEY));
    let err = p
        .chat(&ChatRequest::new(
            "gemini-2.0-flash",
            vec![Message::user("x")],
        ))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("API key not valid"), "{shown}");
    let sent = server.requests();
    assert!(!sent[0].request_line.contains(KEY));
    assert!(!sent[0].request_line.contains("key="));
    assert_eq!(sent[0].header("x-goog-api-key"), Some(KEY));

    // A port nothing listens on: Unreachable, still without the key.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = client(&format!("http://127.0.0.1:{port}/v1beta"));
    let err = p
        .chat_stream(
            &ChatRequest::new("gemini-2.0-flash", vec![Message::user("x")]),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "{shown}");
}
