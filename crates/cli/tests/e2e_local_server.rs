//! End-to-end: the real `orch` binary against a local OpenAI-compatible
//! server as strict as llama-cpp-python's, through the `llamacpp` preset
//! exactly as a user would configure it.
//!
//! llama-cpp-python answers HTTP 500 to an assistant turn whose `content`
//! is `null` and to a tool message without `tool_call_id`, so with it every
//! tool conversation used to die at turn 2. The testkit's fake server in
//! strict mode answers the same way (its own test checks the wording); here
//! a worker reads a file, edits it and finishes over three turns, pytest
//! verifies, the judge passes, and the merge lands on main. Every request
//! also carries its role's token cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use orch_providers::replay::Script;
use orch_testkit::{llama_cpp_python_rejection, FakeOpenAi};
use serde_json::{json, Value};

/// A config whose provider is the `llamacpp` preset pointed at `base_url`
/// (a local server: no key).
fn with_llamacpp(fx: &Fixture, base_url: &str) {
    fx.with_openai(base_url, "");
    let text = std::fs::read_to_string(&fx.config).unwrap();
    let text = text.replace(
        "api_key_env = \"ORCH_TEST_KEY\"\n",
        "preset = \"llamacpp\"\n",
    );
    assert!(text.contains("preset = \"llamacpp\""), "{text}");
    std::fs::write(&fx.config, text).unwrap();
}

fn multi_turn_script() -> Script {
    serde_json::from_value(json!({"responses": [
        worker_call(None, json!([{"name": "read_file", "arguments": {"path": "calc.py"}}])),
        // Turn 2 answers only once turn 1's result came back.
        worker_call(Some("return a - b"), json!([
            {"name": "edit_file", "arguments": {"path": "calc.py", "old": "return a - b", "new": "return a + b"}}
        ])),
        worker_call(None, json!([
            {"name": "finish", "arguments": {"summary": "add() subtracted; it now returns a + b."}}
        ])),
        judge_pass(),
    ]}))
    .unwrap()
}

#[test]
fn a_multi_turn_task_completes_against_a_server_that_rejects_null_content() {
    let fx = Fixture::new();
    let server = FakeOpenAi::start(multi_turn_script());
    server.set_strict_messages(true);
    with_llamacpp(&fx, &server.base_url());
    let id = fx.add_task(
        "Fix add() so test_add passes",
        "calc.add subtracts; make it return the sum.",
    );
    fx.orch_ok(&["run", "--project", "calc"], 0);

    let shown = fx.task(&id);
    assert_eq!(shown["task"]["status"], "merged", "{shown}");
    assert_eq!(
        shown["attempts"].as_array().unwrap().len(),
        1,
        "no attempt was lost to a rejected request: {shown}"
    );
    assert!(fx.main_file("calc.py").contains("return a + b"));
    assert!(fx.main_is_green(), "pytest passes on main");

    let requests = server.requests();
    // No request was turned away: the strict check passes every one.
    for (i, body) in requests.iter().enumerate() {
        assert_eq!(
            llama_cpp_python_rejection(body),
            None,
            "request {i} would get HTTP 500 from llama-cpp-python: {body}"
        );
    }
    let worker: Vec<&Value> = requests.iter().filter(|r| r["model"] == "worker").collect();
    assert_eq!(worker.len(), 3, "read, edit, finish: {requests:?}");

    // Turn 3 carries both earlier tool turns: "" content, ids that match.
    let messages = worker[2]["messages"].as_array().unwrap();
    let turns: Vec<&Value> = messages
        .iter()
        .filter(|m| m["role"] == "assistant" && m.get("tool_calls").is_some())
        .collect();
    assert_eq!(turns.len(), 2, "{messages:?}");
    for turn in &turns {
        assert!(turn["content"].is_string(), "content is a string: {turn}");
        let call_id = turn["tool_calls"][0]["id"].as_str().unwrap();
        assert!(!call_id.is_empty());
        let answered = messages
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == call_id);
        assert!(answered, "the result names call {call_id}: {messages:?}");
    }
    assert_eq!(
        turns[0]["tool_calls"][0]["function"]["name"], "read_file",
        "{turns:?}"
    );

    // Every role sends its cap (the documented defaults).
    for body in &requests {
        let want = if body["model"] == "judge" { 1024 } else { 4096 };
        assert_eq!(body["max_tokens"], want, "{body}");
    }

    // The same conversation in the old wire format is what the server
    // rejects: the test would fail if the client went back to null.
    let mut old = worker[2].clone();
    for m in old["messages"].as_array_mut().unwrap() {
        if m["role"] == "assistant" && m.get("tool_calls").is_some() {
            m["content"] = Value::Null;
        }
    }
    assert!(llama_cpp_python_rejection(&old).is_some());
}

/// `orch doctor` probes tool calling on the worker's provider: with the
/// tool offered under `tool_choice: "auto"`, then, when no call came, with
/// the tool forced, and says which in plain words (also in `--json`).
#[test]
fn doctor_says_whether_the_server_calls_tools_under_auto() {
    let doctor = |script: Value| -> (Option<i32>, Value, FakeOpenAi) {
        let fx = Fixture::new();
        let server = FakeOpenAi::start(serde_json::from_value(script).unwrap());
        server.set_strict_messages(true);
        with_llamacpp(&fx, &server.base_url());
        let out = fx.orch(&["doctor", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v, server)
    };
    let tool_check = |v: &Value| -> Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["what"].as_str().unwrap().ends_with("tool calls"))
            .cloned()
            .unwrap_or_else(|| panic!("no tool-call check: {v}"))
    };
    let call = json!([{"name": "report_status", "arguments": {"status": "ok"}}]);

    // Calls under auto: one probe, ok.
    let (code, v, server) = doctor(json!({"responses": [
        {"when": "report_status", "times": 0, "tool_calls": call},
        {"times": 0, "content": "OK"},
    ]}));
    assert_eq!(code, Some(0), "{v}");
    let check = tool_check(&v);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["detail"], "tool calls: yes");
    assert_eq!(
        check["what"], "provider local (openai) model worker tool calls",
        "{check}"
    );
    let probes: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r.get("tools").is_some())
        .collect();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0]["tool_choice"], "auto");
    assert_eq!(probes[0]["tools"][0]["function"]["name"], "report_status");

    // Only when forced (a tool grammar but no tool template): says so, fails.
    let (code, v, server) = doctor(json!({"responses": [
        {"when": "report_status", "times": 1, "content": "I would report ok."},
        {"when": "report_status", "times": 1, "tool_calls": call},
        {"times": 0, "content": "OK"},
    ]}));
    assert_eq!(code, Some(1), "{v}");
    let check = tool_check(&v);
    assert_eq!(check["ok"], false);
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("no tool call under tool_choice=auto; forced: yes")
            && detail.contains("may not support tool calls under auto"),
        "{detail}"
    );
    let choices: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r.get("tools").is_some())
        .map(|r| r["tool_choice"].clone())
        .collect();
    assert_eq!(
        choices,
        vec![
            json!("auto"),
            json!({"type": "function", "function": {"name": "report_status"}})
        ]
    );

    // Never: says that.
    let (code, v, _server) = doctor(json!({"responses": [{"times": 0, "content": "OK"}]}));
    assert_eq!(code, Some(1));
    let detail = tool_check(&v)["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("nor when forced") && detail.contains("does not call tools"),
        "{detail}"
    );
}
