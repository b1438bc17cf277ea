//! The HTTP API over real HTTP: every route, auth, the 4xx shapes, and that
//! a rejected request writes nothing. A real store on a temp dir; only the
//! daemon's `run_now` is a recording stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{expect_error, Server};
use orch_core::{AttemptStatus, TaskId, TaskStatus};
use orch_server::{ServerError, ServerOptions};
use serde_json::{json, Value};

#[tokio::test]
async fn healthz_and_openapi_are_served() {
    let s = Server::start(None).await;
    let h: Value = s.get("/healthz").await.json().await.unwrap();
    assert_eq!(h, json!({"status": "ok"}));
    let doc: Value = s.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/projects/{project}/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/attempts/{n}/transcript",
        "/api/v1/tasks/{id}/answer",
        "/api/v1/tasks/{id}/cancel",
        "/api/v1/tasks/{id}/retry",
        "/api/v1/projects/{project}/run",
        "/api/v1/projects/{project}/pause",
        "/api/v1/projects/{project}/resume",
        "/api/v1/status",
        "/api/v1/cost",
        "/api/v1/events",
        "/healthz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    assert!(doc["components"]["schemas"]["Task"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn add_and_list_tasks() {
    let s = Server::start(None).await;
    let resp = s
        .post_json(
            "/api/v1/projects/calc/tasks",
            json!({
                "title": "Fix add",
                "description": "add() subtracts",
                "type": "fix",
                "priority": 2,
                "allowed_files": ["calc.py"],
                "acceptance_tests": ["test_calc.py::test_add"],
            }),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["title"], "Fix add");
    assert_eq!(t["task_type"], "fix");
    assert_eq!(t["status"], "pending");
    assert_eq!(t["acceptance_tests"], json!(["test_calc.py::test_add"]));
    assert_eq!(t["allowed_files"], json!(["calc.py"]));
    // The same document the store (and `orch add-task --json`) gives.
    let stored = s.store.task(t["id"].as_str().unwrap()).unwrap();
    assert_eq!(t, serde_json::to_value(&stored).unwrap());
    // Adding a task asks the daemon to start work on its project.
    assert_eq!(*s.control.calls.lock().unwrap(), ["calc"]);

    // YAML, a task file, with a dependency given by prefix.
    let first = t["id"].as_str().unwrap();
    let yaml = format!(
        "title: Add sub\ntask_type: code\ndepends_on: [{}]\n",
        &first[..6]
    );
    let resp = s
        .http
        .post(s.url("/api/v1/projects/calc/tasks"))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["depends_on"], json!([first]));

    let all: Vec<Value> = s
        .get("/api/v1/projects/calc/tasks")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["id"], first, "higher priority first");
    let pending: Vec<Value> = s
        .get("/api/v1/projects/calc/tasks?status=pending")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    let merged: Vec<Value> = s
        .get("/api/v1/projects/calc/tasks?status=merged")
        .await
        .json()
        .await
        .unwrap();
    assert!(merged.is_empty());
    let err = expect_error(s.get("/api/v1/projects/calc/tasks?status=done").await, 400).await;
    assert_eq!(err["field"], "status");
    assert!(err["message"].as_str().unwrap().contains("needs_human"));
    let err = expect_error(s.get("/api/v1/projects/nope/tasks").await, 404).await;
    assert_eq!(err["field"], "project");
    assert!(err["message"].as_str().unwrap().contains("calc, busy"));
}

#[tokio::test]
async fn show_a_task_with_its_attempts_and_transcript() {
    let s = Server::start(None).await;
    let t = s.add_task("Fix add").await;
    let id = TaskId(t["id"].as_str().unwrap().to_string());
    s.store.claim_pending("calc", 1).unwrap();
    let a = s.store.start_attempt(&id, "base0").unwrap();
    let md = s
        .dir
        .path()
        .join("data/audit/calc/attempts")
        .join(format!("{id}-1.md"));
    std::fs::create_dir_all(md.parent().unwrap()).unwrap();
    std::fs::write(&md, "# attempt 1\n").unwrap();
    std::fs::write(
        md.with_extension("json"),
        r#"[{"role": "assistant", "content": "hi"}]"#,
    )
    .unwrap();
    let mut fin = orch_state::AttemptFinish::new(AttemptStatus::Failed);
    fin.head_commit = Some("abc123".into());
    fin.audit_path = Some(md.display().to_string());
    fin.verification = Some(json!({
        "passed": false, "steps": [], "preexisting_failures": [], "new_failures": ["t::x"],
        "targeted_failures": [], "goal_unmet": null, "empty_diff": false, "summary": "1 new failure"
    }));
    fin.verdict = Some(
        json!({"passed": false, "score": null, "reasoning": "gate", "issues": [], "gates": []}),
    );
    s.store.finish_attempt(a.id, &fin).unwrap();

    let shown: Value = s
        .get(&format!("/api/v1/tasks/{}", &id.0[..5]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["task"]["id"], id.0);
    let at = &shown["attempts"][0];
    assert_eq!(at["number"], 1);
    assert_eq!(at["status"], "failed");
    assert_eq!(at["attempt_ref"], format!("refs/orch/attempts/{id}/1"));
    assert_eq!(at["verification"]["new_failures"], json!(["t::x"]));
    assert_eq!(at["verdict"]["reasoning"], "gate");
    assert_eq!(
        shown,
        serde_json::to_value(orch_server::views::show(&s.store, id.as_str()).unwrap()).unwrap()
    );

    let tr: Value = s
        .get(&format!("/api/v1/tasks/{id}/attempts/1/transcript"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tr[0]["content"], "hi");
    let err = expect_error(
        s.get(&format!("/api/v1/tasks/{id}/attempts/2/transcript"))
            .await,
        404,
    )
    .await;
    assert_eq!(err["field"], "n");
    expect_error(
        s.get(&format!("/api/v1/tasks/{id}/attempts/x/transcript"))
            .await,
        400,
    )
    .await;
    expect_error(s.get("/api/v1/tasks/ffffffffffff").await, 404).await;
    expect_error(s.get("/api/v1/tasks/ab").await, 404).await;
}

#[tokio::test]
async fn answer_cancel_and_retry() {
    let s = Server::start(None).await;
    let t = s.add_task("Which endpoint?").await;
    let id = TaskId(t["id"].as_str().unwrap().to_string());

    // Not waiting for an answer yet: 409, nothing written.
    let before = s.written();
    let err = expect_error(
        s.post_json(
            &format!("/api/v1/tasks/{id}/answer"),
            json!({"answer": "v2"}),
        )
        .await,
        409,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("needs_human"));
    assert_eq!(s.written(), before);

    s.store.claim_pending("calc", 1).unwrap();
    s.store.ask_human(&id, "v1 or v2?").unwrap();
    let err = expect_error(
        s.post_json(
            &format!("/api/v1/tasks/{id}/answer"),
            json!({"answer": "  "}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "answer");
    let resp = s
        .post_json(
            &format!("/api/v1/tasks/{id}/answer"),
            json!({"answer": "Use v2"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let answered: Value = resp.json().await.unwrap();
    assert_eq!(answered["status"], "pending");
    assert_eq!(answered["answer"], "Use v2");

    let resp = s
        .http
        .post(s.url(&format!("/api/v1/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cancelled: Value = resp.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let before = s.written();
    expect_error(
        s.http
            .post(s.url(&format!("/api/v1/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(s.written(), before);

    let resp = s
        .http
        .post(s.url(&format!("/api/v1/tasks/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let retried: Value = resp.json().await.unwrap();
    assert_eq!(retried["status"], "pending");
    assert_eq!(
        s.store.task(id.as_str()).unwrap().status,
        TaskStatus::Pending
    );
    // A pending task cannot be retried.
    expect_error(
        s.http
            .post(s.url(&format!("/api/v1/tasks/{id}/retry")))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
}

#[tokio::test]
async fn run_pause_resume_status_and_cost() {
    let s = Server::start(None).await;
    let resp = s
        .http
        .post(s.url("/api/v1/projects/calc/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["started"], true);
    let err = expect_error(
        s.http
            .post(s.url("/api/v1/projects/busy/run"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("paused"));
    expect_error(
        s.http
            .post(s.url("/api/v1/projects/nope/run"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(*s.control.calls.lock().unwrap(), ["calc", "busy"]);

    let st: Value = s.get("/api/v1/status").await.json().await.unwrap();
    assert_eq!(st["projects"][0]["name"], "calc");
    assert_eq!(st["projects"][0]["paused"], false);
    assert_eq!(st["projects"][0]["tasks"]["pending"], 0);
    assert_eq!(st["projects"].as_array().unwrap().len(), 2);

    let p: Value = s
        .post_json(
            "/api/v1/projects/calc/pause",
            json!({"reason": "release freeze"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["paused"], true);
    assert_eq!(p["pause_reason"], "release freeze");
    assert!(s.store.is_paused("calc").unwrap());
    // No body at all pauses too.
    let resp = s
        .http
        .post(s.url("/api/v1/projects/busy/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let st: Value = s.get("/api/v1/status").await.json().await.unwrap();
    assert_eq!(st["projects"][1]["paused"], true);
    assert_eq!(
        st,
        serde_json::to_value(orch_server::views::status(&s.config, &s.store).unwrap()).unwrap()
    );
    let r: Value = s
        .http
        .post(s.url("/api/v1/projects/calc/resume"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["paused"], false);
    assert_eq!(r["pause_reason"], Value::Null);

    s.store
        .record_model_call(&orch_state::ModelCall {
            at: chrono::Utc::now(),
            project: "calc".into(),
            task_id: None,
            attempt_id: None,
            role: "worker".into(),
            provider: "sim".into(),
            model: "any".into(),
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            cost_usd: 0.25,
            duration_ms: 1,
            ok: true,
            error: None,
        })
        .unwrap();
    let c: Value = s.get("/api/v1/cost?since=7d").await.json().await.unwrap();
    assert_eq!(c["total"]["calls"], 1);
    assert_eq!(c["by_role"]["worker"]["cost_usd"], 0.25);
    assert_eq!(c["rows"][0]["model"], "any");
    assert!(c["since"].as_str().unwrap().len() == 10);
    let err = expect_error(s.get("/api/v1/cost?since=last%20week").await, 400).await;
    assert_eq!(err["field"], "since");
    expect_error(s.get("/api/v1/cost?project=nope").await, 404).await;
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let s = Server::start(Some("s3cret-token")).await;
    let resp = s.get("/api/v1/status").await;
    assert_eq!(resp.headers()[reqwest::header::WWW_AUTHENTICATE], "Bearer");
    let err = expect_error(resp, 401).await;
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    let before = s.written();
    let resp = s
        .http
        .post(s.url("/api/v1/projects/calc/tasks"))
        .bearer_auth("wrong")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    let err = expect_error(resp, 401).await;
    assert!(err["message"].as_str().unwrap().contains("wrong"));
    assert_eq!(s.written(), before, "a refused request writes nothing");
    let resp = s
        .http
        .get(s.url("/api/v1/status"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    expect_error(
        s.http
            .get(s.url("/api/v1/events?follow=false"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    // Health and the API's description stay open.
    assert_eq!(s.get("/healthz").await.status(), 200);
    assert_eq!(s.get("/openapi.json").await.status(), 200);
}

#[tokio::test]
async fn no_token_means_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        std::sync::Arc::new(orch_config::load(&common::write_config(dir.path(), "")).unwrap());
    let store = std::sync::Arc::new(orch_state::Store::open_in_memory().unwrap());
    let control = std::sync::Arc::new(common::RecordingControl::default());
    let opts = ServerOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: None,
        max_body_bytes: 1024,
    };
    let err = orch_server::serve(
        opts.clone(),
        config.clone(),
        store.clone(),
        control.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServerError::NoTokenOffLoopback { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("token_env"), "{err}");

    // From the config: a listen address off loopback without token_env.
    let cfg = orch_config::load(&common::write_config(
        dir.path(),
        "listen = \"0.0.0.0:7777\"",
    ))
    .unwrap();
    let err = ServerOptions::from_config(&cfg, None).unwrap_err();
    assert!(
        matches!(err, ServerError::NoTokenOffLoopback { .. }),
        "{err:?}"
    );
    // token_env naming an unset variable is refused, whatever the address.
    let cfg = orch_config::load(&common::write_config(
        dir.path(),
        "listen = \"127.0.0.1:7777\"\ntoken_env = \"ORCH_TEST_UNSET_TOKEN_VAR\"",
    ))
    .unwrap();
    let err = ServerOptions::from_config(&cfg, None).unwrap_err();
    assert!(
        err.to_string().contains("ORCH_TEST_UNSET_TOKEN_VAR"),
        "{err}"
    );
    let ok = ServerOptions::from_config(&cfg, Some("localhost:0"));
    assert!(ok.is_err(), "still no token");
    let cfg = orch_config::load(&common::write_config(dir.path(), "")).unwrap();
    let ok = ServerOptions::from_config(&cfg, Some("127.0.0.1:7778")).unwrap();
    assert_eq!(ok.listen.port(), 7778);
    assert!(
        ServerOptions::from_config(&cfg, None).is_err(),
        "no address"
    );

    // With a token, any address may be served.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(orch_server::serve(
        ServerOptions {
            token: Some("t".into()),
            ..opts
        },
        config,
        store,
        control,
        shutdown.clone(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!handle.is_finished(), "serving");
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_error_shape_and_write_nothing() {
    let s = Server::start_with(None, 2048).await;
    s.add_task("existing").await;
    let before = s.written();
    let tasks = "/api/v1/projects/calc/tasks";

    // Malformed JSON: 400.
    let resp = s
        .http
        .post(s.url(tasks))
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    expect_error(resp, 400).await;
    // Wrong or missing content type: 415, naming the header.
    let resp = s
        .http
        .post(s.url(tasks))
        .body("title=x")
        .send()
        .await
        .unwrap();
    let err = expect_error(resp, 415).await;
    assert_eq!(err["field"], "Content-Type");
    let resp = s
        .http
        .post(s.url(tasks))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(resp, 415).await;
    // A field of the wrong type, an unknown field, a missing title, a bad
    // value: 422 naming the field.
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "priority": "high"}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "priority");
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "colour": "red"}))
            .await,
        422,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("colour"), "{err}");
    let err = expect_error(
        s.post_json(tasks, json!({"description": "no title"})).await,
        422,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("title"), "{err}");
    let err = expect_error(
        s.post_json(
            tasks,
            json!({"title": "x", "allowed_files": ["ok.py", "/etc/passwd"]}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "allowed_files[1]");
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "depends_on": ["deadbeef0000"]}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "depends_on[0]");
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "type": "refactor"}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "type");
    let err = expect_error(s.post_json(tasks, json!(["title"])).await, 422).await;
    assert!(err["message"].as_str().is_some());
    // Too large: 413.
    let big = "x".repeat(4096);
    let err = expect_error(
        s.post_json(tasks, json!({"title": "x", "description": big}))
            .await,
        413,
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("max_body_bytes"));
    // Unknown project (with a good body): 404.
    expect_error(
        s.post_json("/api/v1/projects/nope/tasks", json!({"title": "x"}))
            .await,
        404,
    )
    .await;
    // Unknown route and wrong method: JSON too.
    expect_error(s.get("/api/v2/tasks").await, 404).await;
    let resp = s.http.delete(s.url("/api/v1/status")).send().await.unwrap();
    assert_eq!(resp.headers()[reqwest::header::ALLOW], "GET,HEAD");
    expect_error(resp, 405).await;
    // A pause body that is not JSON.
    let resp = s
        .http
        .post(s.url("/api/v1/projects/calc/pause"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    expect_error(resp, 400).await;
    let err = expect_error(
        s.post_json("/api/v1/projects/calc/pause", json!({"reason": 5}))
            .await,
        422,
    )
    .await;
    assert_eq!(err["field"], "reason");
    // An ambiguous prefix: 400.
    assert_eq!(s.written(), before, "no rejected request wrote anything");
    assert!(!s.store.is_paused("calc").unwrap());
}
