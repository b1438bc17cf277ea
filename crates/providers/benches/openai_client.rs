//! Client overhead per request and streaming parse throughput.
//!
//! `cargo bench -p orch-providers --bench openai_client`
//!
//! - `client_overhead/*`: one chat completion against a local axum server
//!   on 127.0.0.1 that answers a canned reply at once. `raw_reqwest` posts
//!   the same wire body and reads the reply bytes (the floor: HTTP on
//!   loopback); `orch_chat` is `OpenAiProvider::chat` (request conversion,
//!   serialization, capped read, tolerant parse); `orch_resilient` adds the
//!   retry policy and circuit breaker around it; `orch_stream` is
//!   `chat_stream` of the same reply as server-sent events.
//! - `stream_parse/*`: `StreamParser` on an in-memory SSE body (text split
//!   into 4-character events, and a tool call whose arguments come in
//!   4-character events), fed in 16 KiB pieces; throughput in bytes of SSE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::routing::post;
use axum::Router;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orch_core::Usage;
use orch_providers::openai::{request_body, OpenAiProvider, StreamParser};
use orch_providers::resilient::ResilientProvider;
use orch_providers::retry::RetryPolicy;
use orch_providers::{
    ChatRequest, ChatResponse, Message, Provider, Role, StreamDelta, ToolCall, ToolSpec,
};
use orch_testkit::wire::{chat_response_to_sse, chat_response_to_wire};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// A worker-sized request: system prompt, history with a tool round, tools.
fn worker_request() -> ChatRequest {
    let mut req = ChatRequest::new(
        "worker",
        vec![
            Message::system("You are a careful coding agent. ".repeat(60)),
            Message::user("Fix the off-by-one in paginate() and add a regression test."),
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "read_file".into(),
                    arguments: "{\"path\":\"src/pages.py\"}".into(),
                }],
                tool_call_id: None,
            },
            Message::tool_result(
                "call_1",
                "def paginate(items, page, size):\n    return items[page*size:(page+1)*size-1]\n"
                    .repeat(20),
            ),
        ],
    );
    for name in ["read_file", "write_file", "run"] {
        req.tools.push(ToolSpec {
            name: name.into(),
            description: format!("{name} in the worktree"),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path"]}),
        });
    }
    req
}

/// A typical reply: some text and one tool call.
fn reply(content: String, arguments: String) -> ChatResponse {
    ChatResponse {
        message: Message {
            role: Role::Assistant,
            content,
            tool_calls: vec![ToolCall {
                id: "call_2".into(),
                name: "write_file".into(),
                arguments,
            }],
            tool_call_id: None,
        },
        usage: Usage {
            input_tokens: 1800,
            output_tokens: 120,
            cached_tokens: 1024,
            cost_usd: 0.0,
        },
        finish_reason: "tool_calls".into(),
        model: "worker".into(),
    }
}

fn typical_reply() -> ChatResponse {
    reply(
        "I found the bug: the slice end drops the last item. Writing the fix.".into(),
        json!({"path": "src/pages.py", "content": "def paginate(items, page, size):\n    return items[page*size:(page+1)*size]\n"}).to_string(),
    )
}

/// Start the canned server; returns its base URL.
fn start_server(rt: &tokio::runtime::Runtime) -> String {
    let whole = chat_response_to_wire(&typical_reply(), "chatcmpl-bench", 0).to_string();
    let sse: String = chat_response_to_sse(&typical_reply(), "chatcmpl-bench", 0, 4, true).concat();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move |body: axum::body::Bytes| {
            let whole = whole.clone();
            let sse = sse.clone();
            async move {
                if body.windows(14).any(|w| w == b"\"stream\":true") {
                    ([("content-type", "text/event-stream")], sse)
                } else {
                    ([("content-type", "application/json")], whole)
                }
            }
        }),
    );
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/v1")
    })
}

fn client_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = start_server(&rt);
    let req = worker_request();
    let orch =
        Arc::new(OpenAiProvider::new("bench", &base, None, Duration::from_secs(30)).unwrap());
    let resilient = ResilientProvider::new(orch.clone(), RetryPolicy::default());
    let raw = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let wire = request_body(&req);

    let mut group = c.benchmark_group("client_overhead");
    group.sample_size(200);
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("raw_reqwest", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = raw.post(&url).json(&wire).send().await.unwrap();
                black_box(r.bytes().await.unwrap())
            })
        })
    });
    group.bench_function("orch_chat", |b| {
        b.iter(|| rt.block_on(async { black_box(orch.chat(&req).await.unwrap()) }))
    });
    group.bench_function("orch_resilient", |b| {
        b.iter(|| rt.block_on(async { black_box(resilient.chat(&req).await.unwrap()) }))
    });
    let sink = |d: &StreamDelta| {
        black_box(d);
    };
    group.bench_function("orch_stream", |b| {
        b.iter(|| rt.block_on(async { black_box(orch.chat_stream(&req, &sink).await.unwrap()) }))
    });
    group.finish();
}

fn stream_parse(c: &mut Criterion) {
    let text_heavy = reply(
        "The quick brown fox jumps over the lazy dog. ".repeat(4000),
        "{}".into(),
    );
    let args_heavy = reply(
        String::new(),
        json!({"path": "src/big.py", "content": "x = compute(y) + 1\n".repeat(9000)}).to_string(),
    );
    let mut group = c.benchmark_group("stream_parse");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    for (name, response) in [
        ("text_4_char_events", &text_heavy),
        ("tool_args_4_char_events", &args_heavy),
    ] {
        let body =
            chat_response_to_sse(response, "chatcmpl-bench", 1_700_000_000, 4, true).concat();
        let bytes = body.as_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| {
                let mut parser = StreamParser::new("bench");
                let mut deltas = 0usize;
                let mut count = |_: &StreamDelta| deltas += 1;
                for piece in bytes.chunks(16 * 1024) {
                    parser.feed(piece, &mut count).unwrap();
                }
                let r = parser.finish("worker", &mut count).unwrap();
                black_box((r, deltas))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, client_overhead, stream_parse);
criterion_main!(benches);
