//! The `openai` provider over real HTTP on loopback: against the testkit's
//! fake OpenAI server for the wire format, and against tiny hand-written
//! servers for the replies the fake never sends (malformed, hostile, slow).

// Test helpers outside #[test] fns are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use orch_core::Usage;
use orch_providers::openai::OpenAiProvider;
use orch_providers::replay::{ReplayProvider, Script};
use orch_providers::{
    ChatRequest, Message, Provider, ProviderError, ResponseFormat, Role, ToolChoice, ToolSpec,
};
use orch_testkit::FakeOpenAi;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Serve `router` on a free loopback port; returns the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A server whose chat endpoint always answers `status` with `body`.
async fn serve_fixed(status: u16, body: String) -> String {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let body = body.clone();
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
            }
        }),
    );
    serve(router).await
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
async fn plain_reply() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "Hello from the fake."}
    ]})));
    let p = client(&server.base_url(), None);
    assert_eq!(p.name(), "local");
    let req = ChatRequest::new(
        "worker",
        vec![Message::system("Be brief."), Message::user("Hi")],
    );
    let resp = p.chat(&req).await.unwrap();
    assert_eq!(resp.message.role, Role::Assistant);
    assert_eq!(resp.message.content, "Hello from the fake.");
    assert!(resp.message.tool_calls.is_empty());
    assert_eq!(resp.finish_reason, "stop");
    assert_eq!(resp.model, "worker");
    assert!(resp.usage.input_tokens > 0 && resp.usage.output_tokens > 0);
    assert_eq!(resp.usage.cost_usd, 0.0);
    // The minimal body: nothing that was not set.
    assert_eq!(
        server.requests(),
        vec![json!({
            "model": "worker",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
        })]
    );
}

#[tokio::test]
async fn tool_call_round_trip_multi_turn_wire_json() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "when": "Fix the add function", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"}}
        ]},
        {"model": "worker", "when": "wrote 34 bytes", "content": "Fixed add."},
    ]})));
    let p = client(&server.base_url(), Some("sk-test"));
    let mut req = ChatRequest::new(
        "worker",
        vec![
            Message::system("You fix code."),
            Message::user("Fix the add function in calc.py"),
        ],
    );
    req.tools = vec![write_file_tool()];
    req.tool_choice = Some(ToolChoice::Auto);
    req.temperature = Some(0.25);
    req.max_tokens = Some(512);

    let first = p.chat(&req).await.unwrap();
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(first.message.content, "");
    let call = first.message.tool_calls[0].clone();
    assert_eq!(call.id, "call_1");
    assert_eq!(call.name, "write_file");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args["path"], "calc.py");

    req.messages.push(first.message.clone());
    req.messages
        .push(Message::tool_result(&call.id, "wrote 34 bytes to calc.py"));
    let second = p.chat(&req).await.unwrap();
    assert_eq!(second.message.content, "Fixed add.");
    assert_eq!(second.finish_reason, "stop");

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Write a file in the worktree",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    }]);
    assert_eq!(
        sent[1],
        json!({
            "model": "worker",
            "messages": [
                {"role": "system", "content": "You fix code."},
                {"role": "user", "content": "Fix the add function in calc.py"},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "write_file", "arguments": call.arguments},
                }]},
                {"role": "tool", "tool_call_id": "call_1", "content": "wrote 34 bytes to calc.py"},
            ],
            "tools": tools,
            "tool_choice": "auto",
            "max_tokens": 512,
            "temperature": 0.25,
        })
    );
    assert_eq!(sent[0]["tools"], tools);
    assert_eq!(server.remaining(), 0);
}

#[tokio::test]
async fn structured_output_and_forced_tool_choice() {
    let verdict = json!({"passed": true, "score": 9, "reasoning": "ok", "issues": []});
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "judge", "json": verdict},
        {"model": "worker", "tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": ""}}]},
    ]})));
    let p = client(&server.base_url(), None);
    let schema = json!({
        "type": "object",
        "properties": {"passed": {"type": "boolean"}, "score": {"type": "integer"}},
        "required": ["passed", "score"],
        "additionalProperties": false,
    });
    let mut req = ChatRequest::new("judge", vec![Message::user("Judge this diff")]);
    req.response_format = Some(ResponseFormat {
        name: "verdict".into(),
        schema: schema.clone(),
    });
    let resp = p.chat(&req).await.unwrap();
    let parsed: Value = serde_json::from_str(&resp.message.content).unwrap();
    assert_eq!(parsed, verdict);
    assert_eq!(
        server.requests()[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": true}})
    );

    let mut req = ChatRequest::new("worker", vec![Message::user("write")]);
    req.tools = vec![write_file_tool()];
    req.tool_choice = Some(ToolChoice::Tool("write_file".into()));
    p.chat(&req).await.unwrap();
    assert_eq!(
        server.requests()[1]["tool_choice"],
        json!({"type": "function", "function": {"name": "write_file"}})
    );
    req.tool_choice = Some(ToolChoice::Required);
    assert_eq!(
        orch_providers::openai::request_body(&req)["tool_choice"],
        "required"
    );
}

#[tokio::test]
async fn usage_with_cached_tokens() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"content": "x", "usage": {"input_tokens": 1200, "output_tokens": 34, "cached_tokens": 1024}}
    ]})));
    let resp = client(&server.base_url(), None)
        .chat(&ChatRequest::new("m", vec![Message::user("u")]))
        .await
        .unwrap();
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 1200,
            output_tokens: 34,
            cached_tokens: 1024,
            cost_usd: 0.0
        }
    );

    // A hand-written server: null details, no cached tokens field at all.
    let url = serve_fixed(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": "y"}, "finish_reason": "stop"}],
               "model": "served-model",
               "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": null}})
        .to_string(),
    )
    .await;
    let resp = client(&url, None)
        .chat(&ChatRequest::new("asked", vec![Message::user("u")]))
        .await
        .unwrap();
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 5,
            output_tokens: 2,
            cached_tokens: 0,
            cost_usd: 0.0
        }
    );
    assert_eq!(resp.model, "served-model");
}

#[tokio::test]
async fn wrong_key_gives_401_with_the_provider_message_and_no_key() {
    let server = FakeOpenAi::start(script(
        json!({"responses": [{"content": "ok", "times": 0}]}),
    ));
    server.set_api_key("the-right-key");
    let req = ChatRequest::new("m", vec![Message::user("u")]);

    let bad = client(&server.base_url(), Some("sk-wrong-secret-9876"));
    let err = bad.chat(&req).await.unwrap_err();
    let text = err.to_string();
    match &err {
        ProviderError::Http {
            provider,
            status,
            body,
            ..
        } => {
            assert_eq!(provider, "local");
            assert_eq!(*status, 401);
            assert!(body.starts_with("Incorrect API key provided"), "{body}");
        }
        other => panic!("expected Http, got {other:?}"),
    }
    // The fake echoes the key it got; the client must not pass it on.
    assert!(!text.contains("sk-wrong-secret-9876"), "{text}");
    assert!(!format!("{err:?}").contains("sk-wrong-secret-9876"));
    assert!(text.contains("<redacted>"), "{text}");

    let err = client(&server.base_url(), None)
        .chat(&req)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 401, .. }),
        "{err:?}"
    );

    let good = client(&server.base_url(), Some("the-right-key"));
    assert_eq!(good.chat(&req).await.unwrap().message.content, "ok");
}

#[tokio::test]
async fn no_authorization_header_without_a_key() {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
            axum::Json(json!({"choices": [{"message": {"content": auth}}]}))
        }),
    );
    let url = serve(router).await;
    let req = ChatRequest::new("m", vec![Message::user("u")]);
    assert_eq!(
        client(&url, None).chat(&req).await.unwrap().message.content,
        "none"
    );
    // A blank key counts as none rather than sending `Bearer `.
    assert_eq!(
        client(&url, Some("  "))
            .chat(&req)
            .await
            .unwrap()
            .message
            .content,
        "none"
    );
    assert_eq!(
        client(&url, Some("k1"))
            .chat(&req)
            .await
            .unwrap()
            .message
            .content,
        "Bearer k1"
    );
    // Trailing slash on base_url is tolerated.
    let slash = format!("{url}/");
    assert_eq!(
        client(&slash, Some("k2"))
            .chat(&req)
            .await
            .unwrap()
            .message
            .content,
        "Bearer k2"
    );
}

#[tokio::test]
async fn server_errors_map_to_http_with_the_provider_message() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "m", "http_status": 429, "error_message": "Rate limit reached for gpt-x"},
    ]})));
    let p = client(&server.base_url(), None);
    let req = ChatRequest::new("m", vec![Message::user("u")]);
    match p.chat(&req).await.unwrap_err() {
        ProviderError::Http { status, body, .. } => {
            assert_eq!(status, 429);
            assert_eq!(body, "Rate limit reached for gpt-x");
        }
        other => panic!("expected Http, got {other:?}"),
    }
    // Script exhausted: the fake answers 500 with its own message.
    match p.chat(&req).await.unwrap_err() {
        ProviderError::Http { status, body, .. } => {
            assert_eq!(status, 500);
            assert!(body.contains("no scripted response"), "{body}");
            assert!(
                !body.contains("{\"error\""),
                "message not extracted: {body}"
            );
        }
        other => panic!("expected Http, got {other:?}"),
    }

    // A non-JSON error body is passed on, capped.
    let url = serve_fixed(
        502,
        format!("<html>Bad Gateway</html>{}", "x".repeat(10_000)),
    )
    .await;
    match client(&url, None).chat(&req).await.unwrap_err() {
        ProviderError::Http { status, body, .. } => {
            assert_eq!(status, 502);
            assert!(body.starts_with("<html>Bad Gateway"), "{body}");
            assert!(
                body.len() < 2200,
                "error body not capped: {} bytes",
                body.len()
            );
        }
        other => panic!("expected Http, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let err = client(&url, Some("sk-should-not-leak"))
        .chat(&ChatRequest::new("m", vec![Message::user("u")]))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Unreachable {
            provider,
            url: got,
            detail,
        } => {
            assert_eq!(provider, "local");
            assert_eq!(got, &format!("{url}/chat/completions"));
            assert!(detail.contains("base_url"), "{detail}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(!err.to_string().contains("sk-should-not-leak"));
}

#[tokio::test]
async fn silent_server_times_out_as_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and never answer.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let p = OpenAiProvider::new(
        "slow",
        &format!("http://{addr}/v1"),
        None,
        Duration::from_millis(300),
    )
    .unwrap();
    let start = Instant::now();
    let err = p
        .chat(&ChatRequest::new("m", vec![Message::user("u")]))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Unreachable { detail, .. } => {
            assert!(detail.contains("timed out"), "{detail}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn oversized_body_with_length_is_refused() {
    let body = format!(
        "{{\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}",
        "a".repeat(9 * 1024 * 1024)
    );
    let url = serve_fixed(200, body).await;
    let err = client(&url, None)
        .chat(&ChatRequest::new("m", vec![Message::user("u")]))
        .await
        .unwrap_err();
    match err {
        ProviderError::BadResponse { detail, .. } => assert!(detail.contains("8 MiB"), "{detail}"),
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn endless_chunked_body_is_cut_off() {
    // A hostile server: chunked encoding (no length) that never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let _ = sock.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
        // Stops when the client hangs up; the cap bounds this loop.
        for _ in 0..100_000 {
            if sock.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let p = OpenAiProvider::new(
        "hostile",
        &format!("http://{addr}/v1"),
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    let err = p
        .chat(&ChatRequest::new("m", vec![Message::user("u")]))
        .await
        .unwrap_err();
    match err {
        ProviderError::BadResponse { provider, detail } => {
            assert_eq!(provider, "hostile");
            assert!(detail.contains("larger than 8 MiB"), "{detail}");
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn arguments_sent_as_an_object_are_tolerated() {
    let url = serve_fixed(
        200,
        json!({"id": "x", "object": "chat.completion", "model": "qwen",
               "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                   "role": "assistant", "content": null,
                   "tool_calls": [{"id": "t1", "type": "function",
                       "function": {"name": "write_file", "arguments": {"path": "a.py", "content": "x"}}}]}}]})
        .to_string(),
    )
    .await;
    let resp = client(&url, None)
        .chat(&ChatRequest::new("qwen", vec![Message::user("u")]))
        .await
        .unwrap();
    let call = &resp.message.tool_calls[0];
    assert_eq!(call.id, "t1");
    assert_eq!(call.name, "write_file");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"path": "a.py", "content": "x"})
    );
    assert_eq!(resp.message.content, "");
    assert_eq!(resp.finish_reason, "tool_calls");
}

#[tokio::test]
async fn malformed_2xx_bodies_are_bad_responses() {
    let req = ChatRequest::new("m", vec![Message::user("u")]);
    let url = serve_fixed(200, "<html>this is not an API</html>".to_string()).await;
    match client(&url, None).chat(&req).await.unwrap_err() {
        ProviderError::BadResponse { detail, .. } => {
            assert!(detail.contains("not a chat completion"), "{detail}");
            assert!(detail.contains("<html>this is not an API"), "{detail}");
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }
    let url = serve_fixed(
        200,
        json!({"choices": [{"message": {"content": 42}}]}).to_string(),
    )
    .await;
    let err = client(&url, None).chat(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
    let url = serve_fixed(200, json!({"object": "list", "data": []}).to_string()).await;
    let err = client(&url, None).chat(&req).await.unwrap_err();
    assert!(err.to_string().contains("no choices"), "{err}");
}

#[tokio::test]
async fn replay_and_openai_over_the_fake_agree() {
    let v = json!({"responses": [
        {"model": "worker", "tool_calls": [
            {"name": "run", "arguments": "{\"cmd\": \"pytest\", broken"},
            {"id": "own-id", "name": "write_file", "arguments": {"path": "p", "content": "c"}}
        ], "usage": {"input_tokens": 3, "output_tokens": 2}},
        {"model": "judge", "json": {"passed": false}, "finish_reason": "length"},
    ]});
    let server = FakeOpenAi::start(script(v.clone()));
    let http = client(&server.base_url(), None);
    let replay = ReplayProvider::from_script("replay", script(v));
    for model in ["worker", "judge"] {
        let req = ChatRequest::new(model, vec![Message::user("go")]);
        let a = http.chat(&req).await.unwrap();
        let b = replay.chat(&req).await.unwrap();
        assert_eq!(a, b, "model {model}");
    }
    assert_eq!(server.remaining(), 0);
    assert_eq!(replay.cursor().remaining(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_delayed_requests_are_served_in_parallel() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"content": "slow", "times": 0, "delay_ms": 500}
    ]})));
    let p = std::sync::Arc::new(client(&server.base_url(), None));
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.chat(&ChatRequest::new(
                    "m",
                    vec![Message::user(format!("req {i}"))],
                ))
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().message.content, "slow");
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    // One after another would take 4 s; in parallel it takes about 0.5 s.
    assert!(
        elapsed < Duration::from_millis(3500),
        "requests were serialized: {elapsed:?}"
    );
    assert_eq!(server.requests().len(), 8);
}
