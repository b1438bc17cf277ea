//! A task's own `worker` through the HTTP API: stored and answered as
//! given, an unknown kind or one the project cannot run refused with 422
//! naming `worker`, and nothing written for a refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{expect_error, Server};
use serde_json::{json, Value};

/// Two more projects: `agents` with one usable and one missing agent CLI,
/// `boxed` under the Docker sandbox, where no agent CLI may run.
const PROJECTS: &str = r#"
[[projects]]
name = "agents"
path = "calc"
worker_model = "sim:any"

[projects.agents.aider]
binary = "/bin/sh"

[projects.agents.codex]
binary = "no/such/codex"

[[projects]]
name = "boxed"
path = "calc"
worker_model = "sim:any"
sandbox = "docker"

[projects.agents.aider]
binary = "/bin/sh"
"#;

#[tokio::test]
async fn a_task_names_its_worker_and_bad_ones_are_refused_by_field() {
    let s = Server::start_config(None, 1024 * 1024, PROJECTS).await;
    let tasks = "/api/v1/projects/agents/tasks";
    let before = s.written();

    // Unknown kinds, in JSON and YAML: 422, the field and every kind named.
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "worker": "cursor"}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "worker");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("`cursor`")
            && msg.contains("`builtin`, `claude-code`, `codex`, `aider`, `mini-swe-agent`"),
        "{msg}"
    );
    let resp = s
        .http
        .post(s.url(tasks))
        .header("content-type", "application/yaml")
        .body("title: x\nworker: 7\n")
        .send()
        .await
        .unwrap();
    let err = expect_error(resp, 422).await;
    assert_eq!(err["field"], "worker");
    // A CLI the project does not have: refused as the project's own
    // worker would be when the engine starts, with how to install it.
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "worker": "codex"}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "worker");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("no/such/codex") && msg.contains("scripts/install-agents.sh"),
        "{msg}"
    );
    // An agent CLI under the Docker sandbox.
    let err = expect_error(
        s.post_json(
            "/api/v1/projects/boxed/tasks",
            json!({"title": "x", "worker": "aider"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "worker");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("sandbox = \"docker\""),
        "{err}"
    );
    assert_eq!(s.written(), before, "no refused task wrote anything");

    // Accepted: stored, and in the JSON documents.
    let resp = s
        .post_json(tasks, json!({"title": "by aider", "worker": "aider"}))
        .await;
    assert_eq!(resp.status(), 201);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["worker"], "aider");
    let id = t["id"].as_str().unwrap();
    assert_eq!(
        s.store.task(id).unwrap().worker,
        Some(orch_core::WorkerKind::Aider)
    );
    let shown: Value = s
        .get(&format!("/api/v1/tasks/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["task"]["worker"], "aider");
    // The built-in worker is fine under Docker; no worker = the project's.
    let resp = s
        .post_json(
            "/api/v1/projects/boxed/tasks",
            json!({"title": "builtin", "worker": "builtin"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let plain = s.add_task("plain").await;
    assert_eq!(plain["worker"], Value::Null);

    // The OpenAPI document describes the field and its values.
    let doc: Value = s.get("/openapi.json").await.json().await.unwrap();
    let kinds = &doc["components"]["schemas"]["WorkerKind"]["enum"];
    assert_eq!(
        kinds,
        &json!(["builtin", "claude-code", "codex", "aider", "mini-swe-agent"]),
        "{}",
        doc["components"]["schemas"]
    );
    assert!(doc["components"]["schemas"]["TaskSpec"]["properties"]["worker"].is_object());
}
