//! `GET /api/v1/events` over real HTTP: the backlog, then live events from
//! the store's bus, filters, `Last-Event-ID` resume with no gap and no
//! duplicate, a client that lags behind the bus, and shutdown ending the
//! streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{expect_error, Server, SseReader};
use orch_protocol::Event;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn record(s: &Server, project: &str, msg: &str) -> i64 {
    s.store.ensure_project(project, "/x").unwrap();
    s.store
        .record(&Event::new(project, orch_protocol::Warning::default(), msg))
        .unwrap()
}

#[tokio::test]
async fn backlog_then_live_then_resume_after_last_event_id() {
    let s = Server::start(None).await;
    let t = s.add_task("first").await;
    let backlog = s.store.events(&orch_state::EventFilter::default()).unwrap();
    assert!(!backlog.is_empty());

    let mut rd = SseReader::new(s.get("/api/v1/events").await);
    for e in &backlog {
        let got = rd.next(T).await.unwrap();
        assert_eq!(got.id, e.id);
        assert_eq!(
            got.data,
            serde_json::to_value(e).unwrap(),
            "the stored event, as JSON"
        );
    }
    // Live: an event committed now arrives.
    let live = record(&s, "calc", "live one");
    let got = rd.next(T).await.unwrap();
    assert_eq!(got.id, live);
    assert_eq!(got.data["message"], "live one");
    // So does one made through the API.
    let resp = s
        .http
        .post(s.url(&format!(
            "/api/v1/tasks/{}/cancel",
            t["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = rd.next(T).await.unwrap();
    assert_eq!(got.data["kind"], "status_changed");
    assert_eq!(got.data["data"]["to"], "cancelled");
    let last_seen = got.id;
    drop(rd);

    // While disconnected, more happens; resuming sends exactly what was missed.
    let missed: Vec<i64> = (0..3)
        .map(|i| record(&s, "calc", &format!("missed {i}")))
        .collect();
    let resp = s
        .http
        .get(s.url("/api/v1/events"))
        .header("Last-Event-ID", last_seen.to_string())
        .send()
        .await
        .unwrap();
    let mut rd = SseReader::new(resp);
    for id in &missed {
        assert_eq!(rd.next(T).await.unwrap().id, *id);
    }
    let next = record(&s, "calc", "after resume");
    assert_eq!(rd.next(T).await.unwrap().id, next, "no duplicate, no gap");

    // `after` does the same as a query parameter; `follow=false` ends.
    let resp = s
        .get(&format!("/api/v1/events?after={}&follow=false", missed[1]))
        .await;
    let mut rd = SseReader::new(resp);
    assert_eq!(rd.next(T).await.unwrap().id, missed[2]);
    assert_eq!(rd.next(T).await.unwrap().id, next);
    assert!(rd.next(T).await.is_none(), "the snapshot ends");
}

#[tokio::test]
async fn filters_by_project_and_task() {
    let s = Server::start(None).await;
    let a = s.add_task("a").await;
    let a_id = a["id"].as_str().unwrap().to_string();
    s.add_task("b").await;
    record(&s, "busy", "other project");

    let mut rd = SseReader::new(s.get(&format!("/api/v1/events?task={}", &a_id[..6])).await);
    let got = rd.next(T).await.unwrap();
    assert_eq!(got.data["task_id"], a_id.as_str());
    assert_eq!(got.data["kind"], "task_created");
    // Live events of other tasks and projects are not sent; this task's are.
    record(&s, "busy", "not for us");
    s.add_task("c").await;
    s.http
        .post(s.url(&format!("/api/v1/tasks/{a_id}/cancel")))
        .send()
        .await
        .unwrap();
    let got = rd.next(T).await.unwrap();
    assert_eq!(got.data["task_id"], a_id.as_str());
    assert_eq!(got.data["data"]["to"], "cancelled");

    let mut rd = SseReader::new(s.get("/api/v1/events?project=busy&follow=false").await);
    let mut seen = Vec::new();
    while let Some(e) = rd.next(T).await {
        assert_eq!(e.data["project"], "busy");
        seen.push(e.data["message"].as_str().unwrap_or("").to_string());
    }
    assert!(seen.contains(&"other project".to_string()));
    assert!(seen.contains(&"not for us".to_string()));

    expect_error(s.get("/api/v1/events?project=nope").await, 404).await;
    expect_error(s.get("/api/v1/events?task=ffffffffffff").await, 404).await;
    let resp = s
        .http
        .get(s.url("/api/v1/events"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    let err = expect_error(resp, 400).await;
    assert_eq!(err["field"], "Last-Event-ID");
    expect_error(s.get("/api/v1/events?follow=maybe").await, 400).await;
}

/// A burst of more events than the bus holds, committed while the client
/// reads nothing, arrives whole: every event once, in order. (Whether the
/// stream lagged depends on socket buffers; the unit test in sse.rs forces
/// a lag.)
#[tokio::test]
async fn a_burst_larger_than_the_bus_arrives_whole() {
    let s = Server::start(None).await;
    let first = record(&s, "calc", "start");
    let resp = s.get(&format!("/api/v1/events?after={}", first - 1)).await;
    let mut rd = SseReader::new(resp);
    assert_eq!(rd.next(T).await.unwrap().id, first);

    let n = orch_state::BUS_CAPACITY * 2;
    let store = s.store.clone();
    let last = tokio::task::spawn_blocking(move || {
        let mut last = 0;
        for i in 0..n {
            last = store
                .record(&Event::new(
                    "calc",
                    orch_protocol::Warning::default(),
                    format!("burst {i}"),
                ))
                .unwrap();
        }
        last
    })
    .await
    .unwrap();

    let mut expected = first + 1;
    while expected <= last {
        let got = rd.next(T).await.unwrap();
        assert_eq!(got.id, expected, "every event once, in order");
        expected += 1;
    }
    let after = record(&s, "calc", "after the burst");
    assert_eq!(rd.next(T).await.unwrap().id, after);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let s = Server::start(None).await;
    let mut rd = SseReader::new(s.get("/api/v1/events").await);
    let x = record(&s, "calc", "x");
    while rd.next(T).await.unwrap().id != x {}
    s.shutdown.cancel();
    assert!(rd.next(T).await.is_none(), "the stream ends");
    tokio::time::timeout(T, s.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
