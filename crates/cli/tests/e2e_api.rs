//! End-to-end: the HTTP API of the real `orch serve` on a loopback port,
//! on real git repositories with bubblewrap, the model replaced only by the
//! replay provider. A task added over HTTP is followed on
//! `/api/v1/events` until it is merged; a `needs_human` task is answered
//! over HTTP; a running task is cancelled over HTTP; the token is required
//! when configured and a non-loopback address without one is refused; the
//! CLI's client mode (`--server`) prints what the local commands print.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve::{free_port, Serve};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A running `orch serve --listen 127.0.0.1:<port>` and an HTTP client
/// for its API, with the bearer token when there is one.
struct Api {
    serve: Serve,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    async fn start(fx: &Fixture, token: Option<&str>) -> Api {
        let env: Vec<(&str, &str)> = token
            .map(|t| ("ORCH_E2E_API_TOKEN", t))
            .into_iter()
            .collect();
        Api {
            serve: Serve::ready(fx, &env).await,
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    fn log(&self) -> String {
        self.serve.log()
    }

    fn url(&self, path: &str) -> String {
        self.serve.url(path)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.req(reqwest::Method::POST, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn add_task(&self, body: Value) -> String {
        let (status, task) = self.post("/api/v1/projects/calc/tasks", Some(body)).await;
        assert_eq!(status, 201, "{task}");
        assert_eq!(task["status"], "pending");
        task["id"].as_str().unwrap().to_string()
    }

    async fn run_now(&self) {
        let (status, r) = self.post("/api/v1/projects/calc/run", None).await;
        assert_eq!(status, 200, "{r}");
    }

    /// Polls `GET /api/v1/tasks/{id}` until the task has `status`.
    async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, shown) = self.get(&format!("/api/v1/tasks/{id}")).await;
            assert_eq!(code, 200, "{shown}");
            if shown["task"]["status"] == status {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not {status} within {within:?}: {}\nserve log:\n{}",
                shown["task"],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Reads `/api/v1/events` messages: (id, event).
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(api: &Api, query: &str) -> Events {
        let resp = api
            .req(reqwest::Method::GET, &format!("/api/v1/events{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        Events {
            resp,
            buf: String::new(),
        }
    }

    async fn next(&mut self, deadline: Instant, log: &dyn Fn() -> String) -> (i64, Value) {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .map(|v| v.trim().parse::<i64>().unwrap());
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.trim_start())
                    .collect();
                if let Some(id) = id {
                    return (id, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event in time; serve log:\n{}", log()))
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

fn fix_calls() -> Value {
    json!([
        {"name": "write_file", "arguments": {"path": "calc.py", "content": CALC_FIXED}},
        {"name": "finish", "arguments": {"summary": "add returns the sum"}}
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_added_over_http_is_followed_on_the_event_stream_until_merged() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [worker_call(None, fix_calls()), judge_pass()]}),
        "",
    );
    let mut api = Api::start(&fx, None).await;
    let mut events = Events::open(&api, "").await;
    let id = api
        .add_task(json!({
            "title": "Fix add so test_add passes",
            "description": "add() subtracts",
            "type": "fix",
            "acceptance_tests": ["test_calc.py::test_add"],
            "allowed_files": ["calc.py"],
        }))
        .await;
    api.run_now().await;

    // Follow the stream: every event once, in id order, until the merge.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = 0;
    let mut kinds = Vec::new();
    loop {
        let (eid, e) = events.next(deadline, &|| api.log()).await;
        assert!(
            eid > last,
            "ids ascend without duplicates: {eid} after {last}"
        );
        last = eid;
        assert_eq!(e["id"], eid);
        if e["task_id"] == id.as_str() {
            kinds.push(e["kind"].as_str().unwrap().to_string());
            if e["kind"] == "merged" {
                break;
            }
        }
    }
    for k in [
        "task_created",
        "task_claimed",
        "attempt_started",
        "verdict_recorded",
        "merged",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }

    let shown = api
        .wait_status(&id, "merged", Duration::from_secs(30))
        .await;
    assert_eq!(shown["attempts"][0]["status"], "passed");
    assert_eq!(shown["attempts"][0]["verification"]["passed"], true);
    assert_eq!(shown["attempts"][0]["verdict"]["passed"], true);
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    // The same document `orch show --json` prints.
    assert_eq!(shown, fx.task(&id));
    // The run log of the attempt.
    let (code, transcript) = api
        .get(&format!("/api/v1/tasks/{id}/attempts/1/transcript"))
        .await;
    assert_eq!(code, 200, "{transcript}");
    assert!(
        transcript.to_string().contains("add returns the sum"),
        "{transcript}"
    );
    api.serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_needs_human_task_is_answered_over_http() {
    let fx = Fixture::new();
    fx.with_replay(
        json!({"responses": [
            worker_call(Some("Answer: return the sum"), fix_calls()),
            worker_call(None, json!([{"name": "ask_human", "arguments": {"question": "Sum or difference?"}}])),
            judge_pass(),
        ]}),
        "",
    );
    let mut api = Api::start(&fx, None).await;
    let id = api
        .add_task(json!({"title": "Fix add", "description": "add() is wrong; unclear how"}))
        .await;
    // Answering before the question is a conflict, and changes nothing.
    let (code, err) = api
        .post(
            &format!("/api/v1/tasks/{id}/answer"),
            Some(json!({"answer": "x"})),
        )
        .await;
    assert_eq!(code, 409, "{err}");
    api.run_now().await;
    let shown = api
        .wait_status(&id, "needs_human", Duration::from_secs(60))
        .await;
    assert_eq!(shown["task"]["question"], "Sum or difference?");
    let (code, err) = api
        .post(
            &format!("/api/v1/tasks/{id}/answer"),
            Some(json!({"answer": ""})),
        )
        .await;
    assert_eq!(code, 422, "{err}");
    assert_eq!(err["error"]["field"], "answer");

    let (code, task) = api
        .post(
            &format!("/api/v1/tasks/{}/answer", &id[..6]),
            Some(json!({"answer": "return the sum"})),
        )
        .await;
    assert_eq!(code, 200, "{task}");
    assert_eq!(task["status"], "pending");
    api.run_now().await;
    api.wait_status(&id, "merged", Duration::from_secs(120))
        .await;
    assert_eq!(fx.main_file("calc.py"), CALC_FIXED.trim_end());
    api.serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_task_is_cancelled_over_http() {
    let fx = Fixture::new();
    let mut slow = worker_call(None, fix_calls());
    slow["delay_ms"] = json!(60_000);
    fx.with_replay(json!({"responses": [slow, judge_pass()]}), "");
    let before = fx.main_sha();
    let mut api = Api::start(&fx, None).await;
    let mut events = Events::open(&api, "").await;
    let id = api.add_task(json!({"title": "Fix add"})).await;
    api.run_now().await;
    // Wait for the worker's (slow) model call to be under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, e) = events.next(deadline, &|| api.log()).await;
        if e["task_id"] == id.as_str()
            && e["kind"] == "stage_started"
            && e["data"]["stage"] == "work"
        {
            break;
        }
    }
    let started = Instant::now();
    let (code, task) = api.post(&format!("/api/v1/tasks/{id}/cancel"), None).await;
    assert_eq!(code, 200, "{task}");
    assert_eq!(task["status"], "cancelled");
    // The attempt stops promptly (not after the minute the model takes).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, shown) = api.get(&format!("/api/v1/tasks/{id}")).await;
        if shown["attempts"][0]["status"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attempt did not stop: {shown}\n{}",
            api.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Cancelling again is a conflict; nothing merged.
    let (code, err) = api.post(&format!("/api/v1/tasks/{id}/cancel"), None).await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(fx.main_sha(), before);
    let (_, shown) = api.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(shown["task"]["status"], "cancelled");
    api.serve.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_required_and_the_cli_client_mode_prints_the_same() {
    let fx = Fixture::new();
    fx.with_replay(json!({"responses": [judge_pass()]}), "");
    fx.append_config("[server]\ntoken_env = \"ORCH_E2E_API_TOKEN\"\n");
    let id = fx.add_task("Fix add", "add() subtracts");
    // Paused, so nothing changes the task while outputs are compared.
    fx.orch_ok(
        &[
            "pause",
            "--project",
            "calc",
            "--reason",
            "comparing outputs",
        ],
        0,
    );
    let mut api = Api::start(&fx, Some("e2e-token-123")).await;

    // Without the token, or with a wrong one: 401, nothing written.
    let events_before = fx.events(&id).len();
    let anon = reqwest::Client::new();
    let resp = anon
        .post(api.url(&format!("/api/v1/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = anon
        .get(api.url("/api/v1/status"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], 401);
    assert_eq!(fx.task(&id)["task"]["status"], "pending");
    assert_eq!(fx.events(&id).len(), events_before);

    // Client mode: the same output as the local commands.
    let client = |args: &[&str], token: Option<&str>| {
        let mut c = fx.orch_cmd(args);
        c.env("ORCH_SERVER", api.serve.base_url());
        match token {
            Some(t) => c.env("ORCH_TOKEN", t),
            None => c.env_remove("ORCH_TOKEN"),
        };
        c.output().unwrap()
    };
    for args in [
        vec!["tasks", "--project", "calc"],
        vec!["tasks", "--project", "calc", "--json"],
        vec!["show", id.as_str()],
        vec!["show", id.as_str(), "--json"],
        vec!["status", "--json"],
        vec!["events", "--task", id.as_str(), "--json"],
        vec!["events", "--project", "calc"],
    ] {
        let local = fx.orch_ok(&args, 0);
        let out = client(&args, Some("e2e-token-123"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), local, "orch {args:?}");
    }
    let out = client(&["status"], Some("e2e-token-123"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("calc"));
    // Without ORCH_TOKEN the server's 401 is a usage error (exit 2).
    let out = client(&["tasks", "--project", "calc"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // add-task, answer and cancel through the server.
    let out = client(
        &[
            "add-task",
            "--project",
            "calc",
            "--title",
            "Add sub",
            "--accept",
            "test_calc.py::test_sub",
            "--json",
        ],
        Some("e2e-token-123"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["acceptance_tests"], json!(["test_calc.py::test_sub"]));
    let sub = added["id"].as_str().unwrap();
    assert_eq!(
        fx.task(sub)["task"]["title"],
        "Add sub",
        "it is in the server's store"
    );
    let out = client(&["answer", sub, "x"], Some("e2e-token-123"));
    assert_eq!(out.status.code(), Some(2), "not waiting for an answer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pending"));
    let out = client(&["cancel", sub], Some("e2e-token-123"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("cancelled {sub}: Add sub\n")
    );
    assert_eq!(fx.task(sub)["task"]["status"], "cancelled");
    api.serve.stop();
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let fx = Fixture::new();
    fx.with_replay(json!({"responses": [judge_pass()]}), "");
    let port = free_port().to_string();
    let out = fx.orch(&["serve", "--listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("token_env"),
        "{err}"
    );
    // And a token_env naming an unset variable is refused too.
    fx.append_config("[server]\ntoken_env = \"ORCH_E2E_UNSET_TOKEN\"\n");
    let out = fx.orch(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ORCH_E2E_UNSET_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
