//! The one retry policy, the circuit breaker and the fallback under a
//! fault-injecting server: the testkit's fake OpenAI server over real HTTP
//! on loopback, answering a share of requests with 429 (with
//! `Retry-After`), 500, a cut stream or a dropped connection.
//!
//! Waits go through a `VirtualTimer`: each wait is recorded and returns at
//! once, so the long schedule runs in milliseconds and the recorded waits
//! can be checked against the policy exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_core::Usage;
use orch_providers::openai::OpenAiProvider;
use orch_providers::replay::Script;
use orch_providers::resilient::{
    BreakerConfig, CircuitBreaker, CircuitState, Observer, ResilienceEvent, ResilientProvider,
};
use orch_providers::retry::{RetryPolicy, TryRecord, VirtualTimer, WaitReason};
use orch_providers::{ChatRequest, Message, Provider, ProviderError, StreamDelta};
use orch_testkit::{FakeOpenAi, Fault};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn script(v: Value) -> Script {
    serde_json::from_value(v).unwrap()
}

fn openai(name: &str, server: &FakeOpenAi) -> Arc<dyn Provider> {
    Arc::new(OpenAiProvider::new(name, &server.base_url(), None, Duration::from_secs(30)).unwrap())
}

fn request(model: &str, n: usize) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user(format!("call {n}"))])
}

fn recorder() -> (Observer, Arc<Mutex<Vec<ResilienceEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Arc::new(move |e: &ResilienceEvent| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

fn tries(events: &[ResilienceEvent]) -> Vec<TryRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            ResilienceEvent::Try(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn breaker(
    name: &str,
    failures: u32,
    cool_down_s: u64,
    timer: &Arc<VirtualTimer>,
) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(
        name,
        BreakerConfig {
            failures,
            cool_down: Duration::from_secs(cool_down_s),
        },
        timer.clone(),
    ))
}

const ANSWER: &str = "Fixed the off-by-one in paginate() and added a test.";

#[tokio::test]
async fn under_injected_faults_every_call_completes_waits_follow_the_policy_and_nothing_is_charged_twice(
) {
    const CALLS: usize = 60;
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "times": 0, "content": ANSWER,
         "usage": {"input_tokens": 1000, "output_tokens": 50, "cached_tokens": 200}},
    ]})));
    server.set_stream_chunk_chars(6);
    // About 40 % of requests fail, never more than 2 in a row.
    let plan = Fault::mixed(2024, 3 * CALLS, 0.4, 2);
    server.push_fault_plan(plan.clone());

    let timer = Arc::new(VirtualTimer::new());
    let policy =
        RetryPolicy::from_schedule_seconds(&[2, 30, 60, 120], 0.2, 600).with_timer(timer.clone());
    let (observer, events) = recorder();
    let p = ResilientProvider::new(openai("flaky", &server), policy.clone())
        .with_breaker(breaker("flaky", 3, 60, &timer))
        .with_observer(observer);

    let mut charged = Usage::default();
    let mut cut_streams_seen = 0;
    for n in 0..CALLS {
        let req = request("worker", n);
        let response = if n % 2 == 0 {
            p.chat(&req).await.unwrap()
        } else {
            let deltas = Mutex::new(Vec::new());
            let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
            let r = p.chat_stream(&req, &sink).await.unwrap();
            let text: String = deltas
                .into_inner()
                .unwrap()
                .iter()
                .filter_map(|d| match d {
                    StreamDelta::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            // A cut try's partial text comes first, then the whole answer.
            if text != ANSWER {
                assert!(
                    text.starts_with("This rep") && text.ends_with(ANSWER),
                    "{text:?}"
                );
                cut_streams_seen += 1;
            }
            r
        };
        assert_eq!(response.message.content, ANSWER, "call {n}");
        charged += response.usage;
    }

    // Charged once per call, exactly what the server billed for whole replies.
    let (served, billed) = server.served();
    assert_eq!(served, CALLS as u64);
    assert_eq!(charged, billed);
    assert_eq!(
        charged,
        Usage {
            input_tokens: 1000 * CALLS as u64,
            output_tokens: 50 * CALLS as u64,
            cached_tokens: 200 * CALLS as u64,
            cost_usd: 0.0
        }
    );

    // Every request the server saw is one recorded try, and every fault one failed try.
    let log = server.fault_log();
    let events = events.lock().unwrap().clone();
    let tries = tries(&events);
    assert_eq!(tries.len(), log.len());
    assert_eq!(log.len(), server.requests().len());
    let faults: Vec<&Fault> = log.iter().flatten().collect();
    assert!(
        faults.len() >= CALLS / 3,
        "only {} faults in {} requests",
        faults.len(),
        log.len()
    );
    assert_eq!(
        log[..],
        plan[..log.len()],
        "faults were served in plan order"
    );
    for kind in ["429", "500", "cut", "drop"] {
        assert!(
            faults.iter().any(|f| matches!(
                (kind, f),
                ("429", Fault::Http { status: 429, .. })
                    | ("500", Fault::Http { status: 500, .. })
                    | ("cut", Fault::CutStream)
                    | ("drop", Fault::DropConnection)
            )),
            "the plan never injected {kind}"
        );
    }
    assert!(cut_streams_seen > 0, "no stream was cut after sending text");

    // Each failed try waited as the policy says: the server's Retry-After
    // for a 429 that sent one, else the schedule with jitter.
    let mut expected_sleeps = Vec::new();
    for (record, fault) in tries.iter().zip(&log) {
        match fault {
            None => {
                assert_eq!(record.error, None);
                assert_eq!(record.wait, None);
            }
            Some(fault) => {
                let error = record.error.as_deref().unwrap();
                assert!(record.retryable, "{error}");
                let wait = record.wait.expect("2 faults in a row stay within 5 tries");
                expected_sleeps.push(wait);
                match fault {
                    Fault::Http {
                        status: 429,
                        retry_after_s: Some(s),
                        ..
                    } => {
                        assert!(error.contains("HTTP 429"), "{error}");
                        assert_eq!(record.wait_reason, Some(WaitReason::RetryAfter));
                        assert_eq!(wait, Duration::from_secs(*s));
                    }
                    other => {
                        if let Fault::Http { status, .. } = other {
                            assert!(error.contains(&format!("HTTP {status}")), "{error}");
                        }
                        assert_eq!(record.wait_reason, Some(WaitReason::Schedule));
                        let (lo, hi) = policy.wait_bounds(record.attempt);
                        assert!(
                            wait >= lo && wait <= hi,
                            "try {}: {wait:?} outside {lo:?}..={hi:?}",
                            record.attempt
                        );
                    }
                }
            }
        }
    }
    // The recorded waits are the ones slept, in order, and nothing else.
    assert_eq!(timer.sleeps(), expected_sleeps);
    // At most 2 failures in a row: the breaker (3) never opened.
    assert!(!events
        .iter()
        .any(|e| matches!(e, ResilienceEvent::CircuitOpened { .. })));
}

#[tokio::test]
async fn a_bad_request_fails_at_once_with_the_providers_message() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": "never sent"},
    ]})));
    server.push_faults([Fault::http(
        400,
        "Invalid 'messages[0].content': string too long. Expected a string with maximum length 1048576.",
    )]);
    let timer = Arc::new(VirtualTimer::new());
    let (observer, events) = recorder();
    let p = ResilientProvider::new(
        openai("openai", &server),
        RetryPolicy::default().with_timer(timer.clone()),
    )
    .with_observer(observer);
    let err = p.chat(&request("worker", 0)).await.unwrap_err();
    match &err {
        ProviderError::Http {
            status: 400, body, ..
        } => {
            assert!(
                body.starts_with("Invalid 'messages[0].content': string too long"),
                "{body}"
            )
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "no retry");
    assert!(timer.sleeps().is_empty());
    let tries = tries(&events.lock().unwrap());
    assert_eq!(tries.len(), 1);
    assert!(!tries[0].retryable && tries[0].wait.is_none());
    assert!(
        tries[0].message().contains("a retry cannot fix this"),
        "{}",
        tries[0].message()
    );
    assert_eq!(p.breaker().state(), CircuitState::Closed);
}

#[tokio::test]
async fn the_breaker_opens_after_n_failures_and_the_fallback_model_answers() {
    let primary = FakeOpenAi::start(script(json!({"responses": [
        {"model": "big", "times": 0, "http_status": 503, "error_message": "The engine is currently overloaded"},
    ]})));
    let backup = FakeOpenAi::start(script(json!({"responses": [
        {"model": "small", "times": 0, "content": "answer from the fallback",
         "usage": {"input_tokens": 10, "output_tokens": 5}},
    ]})));
    let timer = Arc::new(VirtualTimer::new());
    let policy =
        RetryPolicy::from_schedule_seconds(&[1, 2, 4, 8, 16], 0.0, 600).with_timer(timer.clone());
    let (observer, events) = recorder();
    let p = ResilientProvider::new(openai("primary", &primary), policy)
        .with_breaker(breaker("primary", 3, 300, &timer))
        .with_fallback(openai("backup", &backup), "small")
        .with_observer(observer);

    let r = p.chat(&request("big", 1)).await.unwrap();
    assert_eq!(r.message.content, "answer from the fallback");
    assert_eq!(r.model, "small");
    assert_eq!(
        r.usage.input_tokens, 10,
        "only the fallback's answer is charged"
    );
    assert_eq!(
        primary.requests().len(),
        3,
        "3 failures opened the breaker; the 4th try was not sent"
    );
    assert_eq!(
        timer.sleeps(),
        vec![
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4)
        ]
    );
    assert!(matches!(p.breaker().state(), CircuitState::Open { .. }));

    // While open, calls fail fast: nothing reaches the primary. Streaming too.
    let deltas = Mutex::new(Vec::new());
    let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
    let r = p.chat_stream(&request("big", 2), &sink).await.unwrap();
    assert_eq!(r.message.content, "answer from the fallback");
    assert_eq!(primary.requests().len(), 3);
    assert!(deltas.lock().unwrap().len() > 1, "the fallback streamed");
    assert_eq!(backup.requests().len(), 2);
    assert!(backup.requests().iter().all(|b| b["model"] == "small"));

    let events = events.lock().unwrap();
    let opened: Vec<&ResilienceEvent> = events
        .iter()
        .filter(|e| matches!(e, ResilienceEvent::CircuitOpened { .. }))
        .collect();
    assert_eq!(opened.len(), 1);
    assert!(
        opened[0].message().contains("failed 3 time(s) in a row"),
        "{}",
        opened[0].message()
    );
    let fallbacks: Vec<String> = events
        .iter()
        .filter(|e| matches!(e, ResilienceEvent::Fallback { .. }))
        .map(ResilienceEvent::message)
        .collect();
    assert_eq!(fallbacks.len(), 2);
    assert!(
        fallbacks[0].contains("primary:big is unavailable")
            && fallbacks[0].contains("backup:small"),
        "{}",
        fallbacks[0]
    );
    assert!(
        fallbacks[1].contains("circuit breaker open"),
        "{}",
        fallbacks[1]
    );
    let first_error = tries(&events)[0].error.clone().unwrap();
    assert!(
        first_error.contains("The engine is currently overloaded"),
        "{first_error}"
    );
}

#[tokio::test]
async fn a_half_open_probe_closes_the_breaker_again_or_reopens_it() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "times": 0, "content": "the primary is back"},
    ]})));
    server.push_faults([
        Fault::http_500(),
        Fault::http_500(),
        Fault::http_500(),
        Fault::http(502, "Bad gateway"),
    ]);
    let timer = Arc::new(VirtualTimer::new());
    let (observer, events) = recorder();
    // One try per call, so each call is one request and one breaker step.
    let p = ResilientProvider::new(
        openai("primary", &server),
        RetryPolicy::no_retries().with_timer(timer.clone()),
    )
    .with_breaker(breaker("primary", 3, 60, &timer))
    .with_observer(observer);
    let call = |n| {
        let req = request("worker", n);
        let p = &p;
        async move { p.chat(&req).await }
    };

    for n in 0..3 {
        assert!(matches!(
            call(n).await,
            Err(ProviderError::Http { status: 500, .. })
        ));
    }
    match call(3).await {
        Err(ProviderError::CircuitOpen { retry_in, provider }) => {
            assert_eq!(provider, "primary");
            assert_eq!(retry_in, Duration::from_secs(60));
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 3, "the open breaker sent nothing");

    // After the cool-down one probe goes out; it fails (502): open again.
    timer.advance(Duration::from_secs(61));
    assert_eq!(p.breaker().state(), CircuitState::HalfOpen);
    assert!(matches!(
        call(4).await,
        Err(ProviderError::Http { status: 502, .. })
    ));
    assert!(matches!(p.breaker().state(), CircuitState::Open { .. }));
    assert!(matches!(
        call(5).await,
        Err(ProviderError::CircuitOpen { .. })
    ));

    // The next probe succeeds and closes it.
    timer.advance(Duration::from_secs(61));
    assert_eq!(
        call(6).await.unwrap().message.content,
        "the primary is back"
    );
    assert_eq!(p.breaker().state(), CircuitState::Closed);
    assert_eq!(
        call(7).await.unwrap().message.content,
        "the primary is back"
    );
    assert_eq!(server.requests().len(), 6);

    let kinds: Vec<&str> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ResilienceEvent::CircuitOpened { .. } => Some("opened"),
            ResilienceEvent::CircuitHalfOpen { .. } => Some("half_open"),
            ResilienceEvent::CircuitClosed { .. } => Some("closed"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["opened", "half_open", "opened", "half_open", "closed"]
    );
}

#[tokio::test]
async fn a_cut_stream_is_retried_whole_and_charged_once() {
    let server = FakeOpenAi::start(script(json!({"responses": [
        {"model": "worker", "content": ANSWER, "usage": {"input_tokens": 300, "output_tokens": 12}},
    ]})));
    server.push_faults([Fault::CutStream, Fault::DropConnection]);
    let timer = Arc::new(VirtualTimer::new());
    let policy = RetryPolicy::from_schedule_seconds(&[2, 30], 0.0, 600).with_timer(timer.clone());
    let (observer, events) = recorder();
    let p = ResilientProvider::new(openai("openai", &server), policy).with_observer(observer);

    let deltas = Mutex::new(Vec::new());
    let sink = |d: &StreamDelta| deltas.lock().unwrap().push(d.clone());
    let r = p.chat_stream(&request("worker", 0), &sink).await.unwrap();
    assert_eq!(r.message.content, ANSWER);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (300, 12));
    assert_eq!(server.served(), (1, r.usage));
    assert_eq!(
        timer.sleeps(),
        vec![Duration::from_secs(2), Duration::from_secs(30)]
    );
    let text: String = deltas
        .lock()
        .unwrap()
        .iter()
        .filter_map(|d| match d {
            StreamDelta::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        format!("This reply is cut off befoThis reply is cut off befo{ANSWER}")
    );
    let tries = tries(&events.lock().unwrap());
    assert_eq!(tries.len(), 3);
    assert!(
        tries[0]
            .error
            .as_deref()
            .unwrap()
            .contains("cut the stream off"),
        "{:?}",
        tries[0]
    );
    assert!(
        tries[1]
            .error
            .as_deref()
            .unwrap()
            .contains("cut the stream off"),
        "{:?}",
        tries[1]
    );
    assert_eq!(tries[2].error, None);
}
