//! The fake server over plain blocking HTTP from a sync `#[test]`: routes,
//! recording, script errors, auth and shutdown on drop.

// Test helpers outside #[test] fns are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_testkit::{FakeOpenAi, Fault, Script};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 exchange with `Connection: close`; returns (status, JSON body).
fn http(
    server: &FakeOpenAi,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        server.addr(),
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status: u16 = raw[9..12].parse().unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn script(v: Value) -> Script {
    serde_json::from_value(v).unwrap()
}

#[test]
fn serves_scripted_replies_in_openai_wire_format() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "when": "add", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "calc.py"}}
        ]},
        {"model": "judge", "json": {"passed": true}, "usage": {"input_tokens": 9, "output_tokens": 4, "cached_tokens": 3}},
    ]})));
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(server.base_url().ends_with("/v1"));

    let body = json!({"model": "worker", "messages": [{"role": "user", "content": "fix add"}]});
    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "worker");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    assert_eq!(msg["tool_calls"][0]["type"], "function");
    assert_eq!(msg["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        msg["tool_calls"][0]["function"]["arguments"],
        "{\"path\":\"calc.py\"}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let body2 = json!({"model": "judge", "messages": [{"role": "user", "content": "judge"}]});
    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &body2.to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"], "{\"passed\":true}");
    assert_eq!(v["usage"]["prompt_tokens"], 9);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    // Recorded exactly as sent, in order.
    assert_eq!(server.requests(), vec![body, body2]);
    assert_eq!(server.remaining(), 0);

    // Script used up: 500 with an OpenAI-style error naming the model.
    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &json!({"model": "judge", "messages": []}).to_string(),
    );
    assert_eq!(status, 500);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`judge`"),
        "{v}"
    );
}

#[test]
fn models_bad_requests_unknown_paths_and_auth() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "times": 0, "content": "ok"},
        {"model": "judge", "content": "ok"},
        {"model": "worker", "content": "again"},
    ]})));
    let (status, v) = http(&server, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["worker", "judge"]);

    let (status, v) = http(&server, "POST", "/v1/chat/completions", &[], "{not json");
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        "{\"messages\": []}",
    );
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));

    let (status, v) = http(&server, "POST", "/chat/completions", &[], "{}");
    assert_eq!(status, 404);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/chat/completions"));

    server.set_api_key("sekrit");
    let ok = json!({"model": "worker", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let (status, v) = http(&server, "POST", "/v1/chat/completions", &[], &ok);
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, _) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &["Authorization: Bearer wrong"],
        &ok,
    );
    assert_eq!(status, 401);
    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &["Authorization: Bearer sekrit"],
        &ok,
    );
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"], "ok");
}

#[test]
fn scripted_http_errors_and_shutdown_on_drop() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"http_status": 429, "error_message": "Rate limit reached for requests"},
    ]})));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let (status, v) = http(&server, "POST", "/v1/chat/completions", &[], &body);
    assert_eq!(status, 429);
    assert_eq!(v["error"]["message"], "Rate limit reached for requests");

    let addr = server.addr();
    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "server still accepting after drop"
    );
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the raw response
/// text (head and body) and whether reading it ended in an error.
fn raw_exchange(server: &FakeOpenAi, body: &str) -> (String, bool) {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr(),
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let failed = stream.read_to_end(&mut raw).is_err();
    (String::from_utf8_lossy(&raw).into_owned(), failed)
}

#[test]
fn streams_replies_as_server_sent_events() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "abcdefghij", "usage": {"input_tokens": 3, "output_tokens": 2}},
    ]})));
    server.set_stream_chunk_chars(3);
    let body = json!({"model": "worker", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "x"}]});
    let (raw, _) = raw_exchange(&server, &body.to_string());
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{raw}"
    );
    for piece in [
        "\"content\":\"abc\"",
        "\"content\":\"def\"",
        "\"content\":\"j\"",
        "\"prompt_tokens\":3",
        "data: [DONE]",
    ] {
        assert!(raw.contains(piece), "{piece} missing from {raw}");
    }
    assert_eq!(server.served().0, 1);
    assert_eq!(server.served().1.input_tokens, 3);
    assert_eq!(server.fault_log(), vec![None]);
}

#[test]
fn injected_faults_come_in_order_and_spare_the_script() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "m", "content": "the real answer", "times": 2},
    ]})));
    server.push_faults([
        Fault::http_429(Some(7)),
        Fault::http(400, "Invalid 'messages': empty"),
        Fault::CutStream,
        Fault::DropConnection,
    ]);
    assert_eq!(server.pending_faults(), 4);
    let plain = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let streamed =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();

    let (raw, _) = raw_exchange(&server, &plain);
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 7"), "{raw}");
    assert!(raw.contains("rate_limit_exceeded"), "{raw}");

    let (raw, _) = raw_exchange(&server, &plain);
    assert!(
        raw.starts_with("HTTP/1.1 400") && raw.contains("Invalid 'messages': empty"),
        "{raw}"
    );

    // A clean end without finish_reason or [DONE].
    let (raw, _) = raw_exchange(&server, &streamed);
    assert!(
        raw.starts_with("HTTP/1.1 200") && raw.contains("This rep"),
        "{raw}"
    );
    assert!(
        !raw.contains("[DONE]") && !raw.contains("\"finish_reason\":\"stop\""),
        "{raw}"
    );

    // Aborted: the chunked body never gets its terminating chunk.
    let (raw, _) = raw_exchange(&server, &plain);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "the body was terminated: {raw:?}"
    );

    // The script entry is still whole: two real answers follow.
    for _ in 0..2 {
        let (raw, _) = raw_exchange(&server, &plain);
        assert!(raw.contains("the real answer"), "{raw}");
    }
    assert_eq!(server.served().0, 2);
    assert_eq!(
        server.fault_log(),
        vec![
            Some(Fault::http_429(Some(7))),
            Some(Fault::http(400, "Invalid 'messages': empty")),
            Some(Fault::CutStream),
            Some(Fault::DropConnection),
            None,
            None
        ]
    );
}

#[test]
fn mixed_fault_plans_are_reproducible_and_bounded() {
    let a = Fault::mixed(7, 400, 0.5, 2);
    assert_eq!(a, Fault::mixed(7, 400, 0.5, 2));
    assert_ne!(a, Fault::mixed(8, 400, 0.5, 2));
    let faults = a.iter().filter(|f| f.is_some()).count();
    assert!((120..=280).contains(&faults), "{faults} of 400");
    let longest = a
        .split(Option::is_none)
        .map(<[Option<Fault>]>::len)
        .max()
        .unwrap();
    assert!(longest <= 2, "{longest} faults in a row");
    for kind in [Fault::http_500(), Fault::CutStream, Fault::DropConnection] {
        assert!(a.contains(&Some(kind.clone())), "{kind:?} never drawn");
    }
    assert!(a.iter().any(|f| matches!(
        f,
        Some(Fault::Http {
            status: 429,
            retry_after_s: Some(1..=5),
            ..
        })
    )));
    assert!(Fault::mixed(1, 50, 0.0, 3).iter().all(Option::is_none));
}

/// Strict messages answer like llama-cpp-python's server: HTTP 500 with
/// its message for `"content": null` on an assistant turn, a missing
/// `content`, or a tool message without `tool_call_id`; the same
/// conversation with `""` and ids is served from the script.
#[test]
fn strict_messages_reject_what_llama_cpp_python_rejects() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "m", "content": "accepted"},
    ]})));
    server.set_strict_messages(true);
    let call = json!([{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]);
    let conversation = |assistant: Value, tool: Value| {
        json!({"model": "m", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            assistant,
            tool,
        ]})
        .to_string()
    };
    let tool_ok = json!({"role": "tool", "tool_call_id": "call_1", "content": "text"});

    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &conversation(
            json!({"role": "assistant", "content": null, "tool_calls": call}),
            tool_ok.clone(),
        ),
    );
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "internal_server_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "'loc': ('body', 'messages', 2, 'ChatCompletionRequestAssistantMessage', 'content')"
        ) && message.contains("'msg': 'Input should be a valid string', 'input': None"),
        "{message}"
    );

    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &conversation(
            json!({"role": "assistant", "tool_calls": call}),
            tool_ok.clone(),
        ),
    );
    assert_eq!(
        (status, v["error"]["message"].as_str()),
        (500, Some("'content'"))
    );

    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &conversation(
            json!({"role": "assistant", "content": "", "tool_calls": call}),
            json!({"role": "tool", "content": "text"}),
        ),
    );
    assert_eq!(status, 500);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'messages', 3, 'ChatCompletionRequestToolMessage', 'tool_call_id'), 'msg': 'Field required'"),
        "{v}"
    );
    assert_eq!(server.remaining(), 1, "rejections use up no script entry");

    let (status, v) = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &conversation(
            json!({"role": "assistant", "content": "", "tool_calls": call}),
            tool_ok,
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "accepted");
    assert_eq!(server.requests().len(), 4, "every request is recorded");

    // The check on its own, for tests that look at recorded bodies.
    let null = json!({"model": "m", "messages": [{"role": "assistant", "content": null}]});
    assert_eq!(
        orch_testkit::llama_cpp_python_rejection(&null).as_deref(),
        Some("1 validation error:\n  {'type': 'string_type', 'loc': ('body', 'messages', 0, 'ChatCompletionRequestAssistantMessage', 'content'), 'msg': 'Input should be a valid string', 'input': None}")
    );
}
