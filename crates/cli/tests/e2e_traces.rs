//! End-to-end: OpenTelemetry traces. The real `orch run` (replay model, a
//! real git repository, the sandbox) exports over OTLP/HTTP to a receiver
//! this test runs on loopback, which decodes each protobuf body with the
//! OTLP types. One trace per attempt, its spans a tree under `attempt`, with
//! model, token and exit-code attributes; no secret, prompt text, tool
//! argument or output and no file content unless `trace_content = true`;
//! and nothing at all is sent when no endpoint variable is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::serve::Serve;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const KEY: &str = "sk-trace-e2e-never-in-a-span-8086";
const KEY_VAR: &str = "E2E_TRACE_KEY";
const DESCRIPTION: &str = "add() subtracts; description-marker-5521";
/// In the `run` tool's arguments; its output says `output-marker-…`.
const ARG_MARKER: &str = "put-marker-9137";
const OUTPUT_MARKER: &str = "output-marker-9137";
const FILE_MARKER: &str = "file-content-marker-3346";

/// What the receiver was sent.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// An OTLP/HTTP receiver on loopback: records every request and answers
/// an empty `ExportTraceServiceResponse`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: std::net::TcpListener) -> Receiver {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared = got.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let got = shared.clone();
                        async move {
                            let content_type = headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            got.lock().unwrap().push(Request {
                                method: method.to_string(),
                                path: uri.path().to_string(),
                                content_type,
                                body: body.to_vec(),
                            });
                            (
                                StatusCode::OK,
                                [("content-type", "application/x-protobuf")],
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

/// A decoded span with its resource's `service.name`.
struct Got {
    service: String,
    span: Span,
}

fn decode(requests: &[Request]) -> Vec<Got> {
    let mut out = Vec::new();
    for r in requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.content_type, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|res| str_attr(&res.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
    out
}

fn value(attrs: &[KeyValue], key: &str) -> Option<any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn str_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match value(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match value(attrs, key)? {
        any_value::Value::IntValue(n) => Some(n),
        _ => None,
    }
}

/// Every string in a span's attributes and events.
fn texts(span: &Span) -> Vec<String> {
    let mut all: Vec<&KeyValue> = span.attributes.iter().collect();
    for e in &span.events {
        all.extend(e.attributes.iter());
    }
    let mut out = vec![span.name.clone()];
    for kv in all {
        out.push(kv.key.clone());
        out.push(format!("{:?}", kv.value));
    }
    if let Some(s) = &span.status {
        out.push(s.message.clone());
    }
    out
}

/// The replay script: a `run` whose output echoes the key, a file written
/// with a marker in it, then finish; the judge passes.
fn script() -> Value {
    let fixed = format!("{CALC_FIXED}\n# {FILE_MARKER}\n");
    json!({"responses": [
        worker_call(None, json!([
            {"name": "run", "arguments": {"command": format!("printf 'out%s\\n' {ARG_MARKER}; echo key=${KEY_VAR}")}},
        ])),
        worker_call(None, json!([
            {"name": "write_file", "arguments": {"path": "calc.py", "content": fixed}},
            {"name": "finish", "arguments": {"summary": "add returns the sum"}}
        ])),
        judge_pass(),
    ]})
}

/// The calc fixture with the script; the key is the replay provider's, so
/// orch knows it as a secret, and reaches the sandbox through `pass_env`.
fn fixture(top: &str) -> Fixture {
    let fx = Fixture::new();
    fx.with_replay(script(), &format!("pass_env = [\"{KEY_VAR}\"]"));
    let text = std::fs::read_to_string(&fx.config).unwrap().replace(
        "kind = \"replay\"\n",
        &format!("kind = \"replay\"\napi_key_env = \"{KEY_VAR}\"\n"),
    );
    std::fs::write(&fx.config, format!("{top}{text}")).unwrap();
    fx
}

const OTEL_VARS: [&str; 6] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
];

/// Runs `orch run` with `env` (and no other OTEL variable); returns the
/// task id and the run's output.
fn run(fx: &Fixture, env: &[(&str, String)]) -> (String, String) {
    let id = fx.add_task("Fix add", DESCRIPTION);
    let mut cmd = fx.orch_cmd(&["run", "--project", "calc"]);
    for v in OTEL_VARS {
        cmd.env_remove(v);
    }
    cmd.env(KEY_VAR, KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{logs}");
    assert_eq!(fx.task(&id)["task"]["status"], "merged", "{logs}");
    (id, logs)
}

/// The spans of the one trace whose root is `attempt`, by name, checked to
/// form a tree under that root.
fn attempt_trace(spans: &[Got], task: &str) -> HashMap<String, Vec<Span>> {
    let roots: Vec<&Span> = spans
        .iter()
        .map(|g| &g.span)
        .filter(|s| s.name == "attempt")
        .collect();
    assert_eq!(roots.len(), 1, "one attempt, one trace");
    let root = roots[0];
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        str_attr(&root.attributes, "orch.task.id").as_deref(),
        Some(task)
    );
    let trace: Vec<&Span> = spans
        .iter()
        .map(|g| &g.span)
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    assert_eq!(by_id.len(), trace.len(), "span ids are unique");
    for s in &trace {
        let mut cur = *s;
        let mut hops = 0;
        while !cur.parent_span_id.is_empty() {
            cur = by_id
                .get(cur.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("the parent of `{}` is not in the trace", s.name));
            hops += 1;
            assert!(hops < 10, "a cycle above `{}`", s.name);
        }
        assert_eq!(
            cur.span_id, root.span_id,
            "`{}` is not under the root",
            s.name
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
    let mut named: HashMap<String, Vec<Span>> = HashMap::new();
    for s in trace {
        named.entry(s.name.clone()).or_default().push(s.clone());
    }
    named
}

fn parent_name(named: &HashMap<String, Vec<Span>>, span: &Span) -> String {
    named
        .iter()
        .find(|(_, v)| v.iter().any(|p| p.span_id == span.parent_span_id))
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

fn only<'a>(named: &'a HashMap<String, Vec<Span>>, name: &str) -> &'a Span {
    let found = named.get(name).unwrap_or_else(|| {
        panic!(
            "no `{name}` span; spans: {:?}",
            named.keys().collect::<Vec<_>>()
        )
    });
    assert_eq!(found.len(), 1, "one `{name}`");
    &found[0]
}

#[test]
fn a_run_exports_one_trace_per_attempt_with_no_content_or_secret() {
    let receiver = Receiver::start();
    let fx = fixture("");
    let (id, _) = run(
        &fx,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
            ("OTEL_SERVICE_NAME", "orch-e2e".into()),
        ],
    );
    // Everything was exported before orch exited.
    let requests = receiver.requests();
    assert!(!requests.is_empty(), "no export reached the receiver");
    let spans = decode(&requests);
    assert!(spans.iter().all(|g| g.service == "orch-e2e"));
    let named = attempt_trace(&spans, &id);

    let root = only(&named, "attempt");
    let a = &root.attributes;
    assert_eq!(
        str_attr(a, "orch.attempt.status").as_deref(),
        Some("passed")
    );
    assert_eq!(int_attr(a, "orch.attempt.number"), Some(1));
    assert_eq!(int_attr(a, "orch.attempt.turns"), Some(2));
    assert!(int_attr(a, "gen_ai.usage.input_tokens").unwrap() > 0);
    for stage in ["work", "judge", "merge"] {
        assert_eq!(
            parent_name(&named, only(&named, stage)),
            "attempt",
            "{stage}"
        );
    }
    // The attempt's verification, and the merge queue's post-merge check
    // (skipped: the merged tree is the one that passed) under the merge.
    let verify = &named["verify"];
    assert_eq!(verify.len(), 2);
    let (own, post): (Vec<&Span>, Vec<&Span>) = verify
        .iter()
        .partition(|v| parent_name(&named, v) == "attempt");
    assert_eq!((own.len(), post.len()), (1, 1));
    assert_eq!(parent_name(&named, post[0]), "merge");
    let skipped = |s: &Span| value(&s.attributes, "orch.stage.skipped");
    assert_eq!(skipped(post[0]), Some(any_value::Value::BoolValue(true)));
    assert_eq!(skipped(own[0]), Some(any_value::Value::BoolValue(false)));
    let merge = only(&named, "merge");
    assert_eq!(
        value(&merge.attributes, "orch.merge.landed"),
        Some(any_value::Value::BoolValue(true))
    );
    assert_eq!(
        str_attr(&merge.attributes, "orch.merge.commit"),
        Some(fx.main_sha())
    );

    let chats = &named["chat worker"];
    assert_eq!(chats.len(), 2);
    for c in chats {
        assert_eq!(parent_name(&named, c), "work");
        assert_eq!(
            str_attr(&c.attributes, "gen_ai.request.model").as_deref(),
            Some("worker")
        );
        assert_eq!(
            str_attr(&c.attributes, "gen_ai.provider.name").as_deref(),
            Some("replay")
        );
        assert!(int_attr(&c.attributes, "gen_ai.usage.input_tokens").unwrap() > 0);
        assert!(int_attr(&c.attributes, "gen_ai.usage.output_tokens").is_some());
    }
    assert_eq!(parent_name(&named, only(&named, "chat judge")), "judge");
    for tool in ["run", "write_file"] {
        let t = only(&named, &format!("execute_tool {tool}"));
        assert_eq!(parent_name(&named, t), "work");
        assert_eq!(
            str_attr(&t.attributes, "gen_ai.tool.name").as_deref(),
            Some(tool)
        );
        assert!(value(&t.attributes, "gen_ai.tool.call.arguments").is_none());
    }
    let test = only(&named, "step test");
    assert_eq!(parent_name(&named, test), "verify");
    assert_eq!(int_attr(&test.attributes, "process.exit.code"), Some(0));
    let judge = only(&named, "judge");
    assert_eq!(
        value(&judge.attributes, "orch.verdict.passed"),
        Some(any_value::Value::BoolValue(true))
    );
    assert!(value(&judge.attributes, "orch.verdict.score").is_some());

    // No secret, prompt text, tool argument or output, or file content, in
    // any decoded span nor anywhere in the bytes sent.
    for forbidden in [KEY, DESCRIPTION, ARG_MARKER, OUTPUT_MARKER, FILE_MARKER] {
        for g in &spans {
            for t in texts(&g.span) {
                assert!(
                    !t.contains(forbidden),
                    "{forbidden} in span `{}`: {t}",
                    g.span.name
                );
            }
        }
        for r in &requests {
            let body = String::from_utf8_lossy(&r.body);
            assert!(!body.contains(forbidden), "{forbidden} in an export body");
        }
    }
}

#[test]
fn with_trace_content_tool_arguments_and_output_are_in_the_spans_still_redacted() {
    let receiver = Receiver::start();
    let fx = fixture("trace_content = true\n");
    let (id, _) = run(
        &fx,
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/v1/traces", receiver.url()),
        )],
    );
    let requests = receiver.requests();
    let spans = decode(&requests);
    let named = attempt_trace(&spans, &id);
    let run = only(&named, "execute_tool run");
    let args = str_attr(&run.attributes, "gen_ai.tool.call.arguments").unwrap();
    assert!(args.contains(ARG_MARKER), "{args}");
    let result = str_attr(&run.attributes, "gen_ai.tool.call.result").unwrap();
    assert!(result.contains(OUTPUT_MARKER), "{result}");
    assert!(result.contains("key=[redacted]"), "{result}");
    let write = only(&named, "execute_tool write_file");
    let args = str_attr(&write.attributes, "gen_ai.tool.call.arguments").unwrap();
    assert!(args.contains(FILE_MARKER), "{args}");
    // The service name defaults to orch; the key is still nowhere.
    assert!(spans.iter().all(|g| g.service == "orch"));
    for r in &requests {
        assert!(!String::from_utf8_lossy(&r.body).contains(KEY));
    }
}

#[test]
fn without_an_endpoint_variable_nothing_is_sent() {
    // On the OTLP default port when it is free, so an exporter started
    // with its built-in default endpoint would be caught.
    let receiver = match std::net::TcpListener::bind("127.0.0.1:4318") {
        Ok(l) => Receiver::on(l),
        Err(_) => Receiver::start(),
    };
    let fx = fixture("trace_content = true\n");
    // Other OTEL variables alone do not turn traces on.
    run(
        &fx,
        &[
            ("OTEL_SERVICE_NAME", "orch-e2e".into()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-probe=1".into()),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
}

#[test]
fn orch_serve_exports_the_traces_of_what_it_ran_before_it_exits() {
    let receiver = Receiver::start();
    let fx = fixture("");
    let id = fx.add_task("Fix add", DESCRIPTION);
    let mut cmd = fx.orch_cmd(&["serve"]);
    for v in OTEL_VARS {
        cmd.env_remove(v);
    }
    cmd.env(KEY_VAR, KEY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url());
    let mut serve = Serve::spawn(cmd);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fx.task(&id)["task"]["status"] != "merged" {
        assert!(std::time::Instant::now() < deadline, "not merged in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    serve.stop();
    let spans = decode(&receiver.requests());
    let named = attempt_trace(&spans, &id);
    for name in ["work", "judge", "merge", "chat worker", "execute_tool run"] {
        assert!(named.contains_key(name), "no `{name}`");
    }
}
