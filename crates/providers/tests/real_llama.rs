//! orch's own OpenAI-compatible client against a real server nobody here
//! wrote: llama-cpp-python's server running Gemma 3 270M (Q4_K_M), both
//! from PyPI, on 127.0.0.1. A real completion, a real stream, real
//! structured output (also with string bounds too long for the server's
//! grammar compiler as written), a real forced tool call (whole and
//! streamed), and a multi-turn tool conversation (the call's result sent
//! back, then the next turns answered), over real HTTP, through the
//! `llamacpp` preset exactly as a user's config would build the client.
//!
//! Start the server first (it installs what is missing):
//!
//! ```sh
//! eval "$(scripts/llama-server.sh start)"   # sets ORCH_LLAMA_BASE_URL
//! cargo test -p orch-providers --test real_llama -- --nocapture
//! scripts/llama-server.sh stop
//! ```
//!
//! Without `ORCH_LLAMA_BASE_URL` these tests skip, except under CI, where
//! they fail: CI must run them. The model is tiny and its words are not
//! checked, only what the server guarantees: usage counts, stream assembly,
//! and JSON that the server's grammar forces to match the schema. (Usage is
//! checked on whole answers only: llama-cpp-python sends no usage chunk in
//! a stream, whatever `stream_options` asks.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_providers::openai::OpenAiProvider;
use orch_providers::presets::preset;
use orch_providers::structured::validate;
use orch_providers::{
    ChatRequest, ChatResponse, Message, Provider, ResponseFormat, StreamDelta, ToolChoice, ToolSpec,
};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The alias `scripts/llama-server.sh` serves the model under.
const MODEL: &str = "gemma3-270m";

/// Generous: the server answers one request at a time, so parallel tests
/// queue, and CI compiles and tests other crates on the same two cores.
const TIMEOUT: Duration = Duration::from_secs(300);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The client for the running server, or `None` (skip) outside CI when
/// none was started.
fn provider(test: &str) -> Option<OpenAiProvider> {
    let base_url = std::env::var("ORCH_LLAMA_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let Some(base_url) = base_url else {
        assert!(
            !in_ci(),
            "ORCH_LLAMA_BASE_URL is not set, so the real-model test {test} cannot run; \
             start the server before cargo test: llama_env=$(scripts/llama-server.sh start) && eval \"$llama_env\""
        );
        eprintln!(
            "skipped {test}: ORCH_LLAMA_BASE_URL is not set \
             (run: eval \"$(scripts/llama-server.sh start)\")"
        );
        return None;
    };
    let llamacpp = preset("llamacpp").expect("the llamacpp preset exists");
    Some(
        llamacpp
            .client("llama", Some(&base_url), None, TIMEOUT)
            .unwrap(),
    )
}

fn request(prompt: &str, max_tokens: u32) -> ChatRequest {
    let mut req = ChatRequest::new(MODEL, vec![Message::user(prompt)]);
    req.max_tokens = Some(max_tokens);
    // Greedy decoding: the same answer on every run.
    req.temperature = Some(0.0);
    req
}

/// A one-argument tool; maxLength keeps the grammar-forced arguments short
/// enough to close within max_tokens.
fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather for a city".into(),
        parameters: json!({
            "type": "object",
            "properties": { "city": { "type": "string", "maxLength": 30 } },
            "required": ["city"],
            "additionalProperties": false
        }),
    }
}

fn report(what: &str, started: Instant, response: &ChatResponse) {
    eprintln!(
        "real_llama {what}: {} ms, {} input + {} output tokens, finish_reason {}, content {:?}, tool calls {:?}",
        started.elapsed().as_millis(),
        response.usage.input_tokens,
        response.usage.output_tokens,
        response.finish_reason,
        response.message.content,
        response.message.tool_calls,
    );
}

#[tokio::test]
async fn real_completion_has_content_and_usage() {
    let Some(llama) = provider("real_completion_has_content_and_usage") else {
        return;
    };
    let started = Instant::now();
    let response = llama
        .chat(&request("Name three colours of the rainbow.", 32))
        .await
        .unwrap();
    report("completion", started, &response);

    assert!(
        !response.message.content.trim().is_empty(),
        "the model answered nothing: {response:?}"
    );
    assert!(response.message.tool_calls.is_empty(), "{response:?}");
    assert!(response.usage.input_tokens > 0, "{:?}", response.usage);
    assert!(response.usage.output_tokens > 0, "{:?}", response.usage);
    assert!(
        response.usage.output_tokens <= 32,
        "max_tokens was 32: {:?}",
        response.usage
    );
    assert!(
        matches!(response.finish_reason.as_str(), "stop" | "length"),
        "{}",
        response.finish_reason
    );
    assert!(!response.model.is_empty());
}

#[tokio::test]
async fn real_stream_assembles_its_deltas() {
    let Some(llama) = provider("real_stream_assembles_its_deltas") else {
        return;
    };
    let deltas: Mutex<Vec<StreamDelta>> = Mutex::new(Vec::new());
    let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
    let started = Instant::now();
    let response = llama
        .chat_stream(&request("Count from one to ten in words.", 32), &sink)
        .await
        .unwrap();
    report("stream", started, &response);

    let deltas = deltas.into_inner().unwrap();
    let texts: Vec<&str> = deltas
        .iter()
        .filter_map(|d| match d {
            StreamDelta::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    eprintln!("real_llama stream: {} text deltas", texts.len());
    assert!(
        texts.len() >= 2,
        "a real stream arrives in pieces, got {} text delta(s): {deltas:?} \
         (does OpenAiProvider::chat_stream really stream, with \"stream\": true?)",
        texts.len()
    );
    assert_eq!(
        texts.concat(),
        response.message.content,
        "the deltas must add up to the assembled answer"
    );
    assert!(!response.message.content.trim().is_empty(), "{response:?}");
    assert!(response.message.tool_calls.is_empty(), "{response:?}");
    assert!(
        matches!(response.finish_reason.as_str(), "stop" | "length"),
        "{}",
        response.finish_reason
    );
}

#[tokio::test]
async fn real_structured_output_matches_the_schema() {
    let Some(llama) = provider("real_structured_output_matches_the_schema") else {
        return;
    };
    // The preset claims native schema enforcement, so the structured-output
    // layer sends the schema as response_format and trusts the server's
    // grammar: this is the test of that claim.
    assert!(
        llama.capabilities().json_schema,
        "the llamacpp preset no longer claims native JSON-schema output; \
         this test then has nothing to prove"
    );
    let mut req = request("What is the capital of France? Answer in JSON.", 64);
    // maxLength keeps the grammar-forced string short enough to close
    // within max_tokens.
    let schema = json!({
        "type": "object",
        "properties": { "answer": { "type": "string", "maxLength": 40 } },
        "required": ["answer"],
        "additionalProperties": false
    });
    req.response_format = Some(ResponseFormat {
        name: "answer".into(),
        schema: schema.clone(),
    });
    let started = Instant::now();
    let response = llama.chat(&req).await.unwrap_or_else(|e| {
        panic!(
            "the server refused orch's structured-output request: {e} \
             (llama-cpp-python accepts response_format {{\"type\": \"json_object\", \"schema\": ...}}, \
             not the {{\"type\": \"json_schema\"}} envelope)"
        )
    });
    report("structured output", started, &response);

    let value: Value = serde_json::from_str(&response.message.content).unwrap_or_else(|e| {
        panic!(
            "the server must enforce the schema, but the content is not JSON ({e}): {:?} \
             (is response_format sent in a shape this server honours?)",
            response.message.content
        )
    });
    assert_eq!(
        validate(&schema, &value),
        Vec::<String>::new(),
        "the answer must match the schema: {value}"
    );
    let object = value.as_object().expect("a JSON object");
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["answer"],
        "only the schema's key: {value}"
    );
    let answer = object["answer"].as_str().expect("answer is a string");
    assert!(answer.chars().count() <= 40, "maxLength 40: {answer:?}");
    assert!(response.usage.output_tokens > 0, "{:?}", response.usage);
}

#[tokio::test]
async fn real_forced_tool_call_has_json_arguments() {
    let Some(llama) = provider("real_forced_tool_call_has_json_arguments") else {
        return;
    };
    let mut req = request("What is the weather like in Paris?", 64);
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let started = Instant::now();
    let response = llama.chat(&req).await.unwrap();
    report("forced tool call", started, &response);

    let calls = &response.message.tool_calls;
    assert_eq!(calls.len(), 1, "one forced call: {response:?}");
    assert_eq!(calls[0].name, "get_weather");
    assert!(!calls[0].id.is_empty());
    let args: Value = serde_json::from_str(&calls[0].arguments).unwrap_or_else(|e| {
        panic!(
            "tool arguments are not JSON ({e}): {:?}",
            calls[0].arguments
        )
    });
    let city = args
        .get("city")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("arguments must have a string city: {args}"));
    assert!(city.chars().count() <= 30, "maxLength 30: {city:?}");
}

/// llama-cpp-python streams a tool call unlike OpenAI: every chunk repeats
/// the call's id and name next to the next piece of the arguments. orch
/// must still see one call, named once, with the pieces joined.
#[tokio::test]
async fn real_streamed_tool_call_is_assembled_from_fragments() {
    let Some(llama) = provider("real_streamed_tool_call_is_assembled_from_fragments") else {
        return;
    };
    let mut req = request("What is the weather like in Paris?", 64);
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let deltas: Mutex<Vec<StreamDelta>> = Mutex::new(Vec::new());
    let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
    let started = Instant::now();
    let response = llama.chat_stream(&req, &sink).await.unwrap();
    report("streamed tool call", started, &response);

    let deltas = deltas.into_inner().unwrap();
    let starts: Vec<&StreamDelta> = deltas
        .iter()
        .filter(|d| matches!(d, StreamDelta::ToolCallStart { .. }))
        .collect();
    let fragments: Vec<&str> = deltas
        .iter()
        .filter_map(|d| match d {
            StreamDelta::ToolCallArgs { index: 0, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    eprintln!(
        "real_llama streamed tool call: {} start(s), {} argument fragments",
        starts.len(),
        fragments.len()
    );
    assert_eq!(starts.len(), 1, "one call starts once: {deltas:?}");
    assert!(
        matches!(starts[0], StreamDelta::ToolCallStart { index: 0, name, .. } if name == "get_weather"),
        "{starts:?}"
    );
    assert!(
        fragments.len() >= 2,
        "the arguments arrive in pieces: {deltas:?}"
    );
    let calls = &response.message.tool_calls;
    assert_eq!(calls.len(), 1, "{response:?}");
    assert_eq!(calls[0].name, "get_weather", "the name is not repeated");
    assert_eq!(fragments.concat(), calls[0].arguments);
    let args: Value = serde_json::from_str(&calls[0].arguments)
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {:?}", calls[0].arguments));
    assert!(args.get("city").and_then(Value::as_str).is_some(), "{args}");
}

/// The conversation llama-cpp-python used to refuse at turn 2 (HTTP 500,
/// "Input should be a valid string"): a tool call, its result sent back
/// (the assistant turn with its tool calls and content `""`, then the tool
/// message naming the call), and a next turn, which must be answered.
#[tokio::test]
async fn real_multi_turn_tool_conversation_is_answered() {
    let Some(llama) = provider("real_multi_turn_tool_conversation_is_answered") else {
        return;
    };
    let mut req = request("What is the weather like in Paris?", 64);
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let started = Instant::now();
    let first = llama.chat(&req).await.unwrap();
    report("multi-turn, turn 1", started, &first);
    assert_eq!(first.message.tool_calls.len(), 1, "{first:?}");
    let call = first.message.tool_calls[0].clone();

    // Turn 2 as the worker sends it: the same tools, tool_choice auto.
    req.messages.push(first.message.clone());
    req.messages.push(Message::tool_result(
        &call.id,
        r#"{"city": "Paris", "weather": "sunny", "celsius": 21}"#,
    ));
    req.tool_choice = Some(ToolChoice::Auto);
    req.max_tokens = Some(32);

    // What goes on the wire: a string content and the call's id.
    let body = orch_providers::openai::request_body_styled(
        &req,
        orch_providers::openai::SchemaStyle::JsonObjectSchema,
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant");
    assert!(messages[1]["content"].is_string(), "{}", messages[1]);
    assert_eq!(messages[1]["tool_calls"][0]["id"], call.id.as_str());
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], call.id.as_str());

    let started = Instant::now();
    let second = llama.chat(&req).await.unwrap_or_else(|e| {
        panic!(
            "the server refused turn 2 of a tool conversation: {e} (is content null on the wire?)"
        )
    });
    report("multi-turn, turn 2", started, &second);
    assert!(
        !second.message.content.is_empty() || !second.message.tool_calls.is_empty(),
        "turn 2 answered nothing: {second:?}"
    );

    // And once more, streamed, with turn 2's answer in the history.
    req.messages.push(second.message.clone());
    if let Some(c) = second.message.tool_calls.first() {
        req.messages
            .push(Message::tool_result(&c.id, "no more data"));
    } else {
        req.messages
            .push(Message::user("Thanks. One word: is it warm?"));
    }
    let sink = |_: &StreamDelta| {};
    let started = Instant::now();
    let third = llama.chat_stream(&req, &sink).await.unwrap();
    report("multi-turn, turn 3 (streamed)", started, &third);
    assert!(matches!(
        third.finish_reason.as_str(),
        "stop" | "length" | "tool_calls"
    ));
}

/// A schema whose strings may be long (like the planner's 8000-character
/// task description) is accepted: the client lowers string bounds to what
/// the server's grammar compiler takes. Sent as written, llama-cpp-python
/// 0.3.36 dies on it ("number of rules that are going to be repeated ...
/// exceeds sane defaults").
#[tokio::test]
async fn real_long_string_bounds_are_sent_as_a_grammar_the_server_compiles() {
    let Some(llama) = provider("real_long_string_bounds_are_sent_as_a_grammar_the_server_compiles")
    else {
        return;
    };
    let mut req = request("Propose one task for a calculator project, in JSON.", 48);
    let schema = json!({
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "maxItems": 2,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": { "type": "string", "maxLength": 200 },
                        "description": { "type": "string", "maxLength": 8000 }
                    },
                    "required": ["title", "description"],
                    "additionalProperties": false
                }
            },
            "notes": { "type": "string", "maxLength": 4000 }
        },
        "required": ["tasks", "notes"],
        "additionalProperties": false
    });
    req.response_format = Some(ResponseFormat {
        name: "task_plan".into(),
        schema,
    });
    let started = Instant::now();
    let response = llama
        .chat(&req)
        .await
        .unwrap_or_else(|e| panic!("the server refused a schema with long string bounds: {e}"));
    report("long string bounds", started, &response);
    assert!(response.usage.output_tokens > 0, "{:?}", response.usage);
    assert!(response.usage.output_tokens <= 48, "{:?}", response.usage);
}
