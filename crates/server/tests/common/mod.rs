//! Shared fixtures for the server's integration tests: a real config and
//! store on a temp dir, a Control that records what it was asked, and the
//! router served on 127.0.0.1:0 over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use orch_server::{Control, RunStarted, ServerOptions};
use orch_state::Store;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A Control that records each `run_now` and answers from the project name:
/// `busy` is refused, anything else started.
#[derive(Default)]
pub struct RecordingControl {
    pub calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Control for RecordingControl {
    async fn run_now(&self, project: &str) -> Result<RunStarted, String> {
        self.calls.lock().unwrap().push(project.to_string());
        if project == "busy" {
            return Err("project busy is paused; resume it first".into());
        }
        Ok(RunStarted {
            started: true,
            detail: format!("started a run of {project}"),
        })
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub control: Arc<RecordingControl>,
    pub config: Arc<orch_config::Config>,
    pub addr: SocketAddr,
    pub base: String,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), orch_server::ServerError>>,
    pub http: reqwest::Client,
}

pub fn write_config(dir: &std::path::Path, server_extra: &str) -> std::path::PathBuf {
    for p in ["calc", "busy"] {
        std::fs::create_dir_all(dir.join(p)).unwrap();
    }
    let text = format!(
        r#"data_dir = "data"

[providers.sim]
kind = "simulated"

[server]
{server_extra}

[[projects]]
name = "calc"
path = "calc"
worker_model = "sim:any"

[[projects]]
name = "busy"
path = "busy"
worker_model = "sim:any"
"#
    );
    let path = dir.join("orch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Server {
    /// Serves on loopback; with `token`, every API route needs it.
    pub async fn start(token: Option<&str>) -> Server {
        Self::start_with(token, 1024 * 1024).await
    }

    pub async fn start_with(token: Option<&str>, max_body_bytes: usize) -> Server {
        Self::start_config(token, max_body_bytes, "").await
    }

    /// [`Self::start_with`], with `extra` TOML after the `[server]` table
    /// (more `[[projects]]`, say).
    pub async fn start_config(token: Option<&str>, max_body_bytes: usize, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(orch_config::load(&write_config(dir.path(), extra)).unwrap());
        let store = Arc::new(Store::open(&config.data_dir_abs().join("orch.db")).unwrap());
        let control = Arc::new(RecordingControl::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = ServerOptions {
            listen: addr,
            token: token.map(str::to_string),
            max_body_bytes,
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(orch_server::serve_on(
            listener,
            opts,
            config.clone(),
            store.clone(),
            control.clone(),
            shutdown.clone(),
        ));
        Server {
            dir,
            store,
            control,
            config,
            addr,
            base: format!("http://{addr}"),
            shutdown,
            handle,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Number of events and tasks in the store: what a rejected request
    /// must leave unchanged.
    pub fn written(&self) -> (usize, usize) {
        (
            self.store
                .events(&orch_state::EventFilter::default())
                .unwrap()
                .len(),
            self.store.tasks(None, None).unwrap().len(),
        )
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn add_task(&self, title: &str) -> serde_json::Value {
        let resp = self
            .post_json(
                "/api/v1/projects/calc/tasks",
                serde_json::json!({ "title": title }),
            )
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }
}

/// Reads `resp` as JSON and checks it is the API's error shape with
/// `status`; returns the `error` object.
pub async fn expect_error(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "an error is JSON"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    let err = body["error"].clone();
    assert_eq!(err["status"], status, "{body}");
    assert!(
        err["message"].as_str().is_some_and(|m| m.len() > 10),
        "{body}"
    );
    err
}

/// One Server-Sent Event as received.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: i64,
    pub data: serde_json::Value,
}

/// Reads SSE messages from a streaming response.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next message with data (keep-alive comments are skipped), or
    /// None at the end of the stream. Panics after `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<Sse> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(Sse {
                    id: id.expect("every message has an id"),
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout(timeout, self.resp.chunk())
                .await
                .expect("the next event arrives in time")
                .unwrap();
            match chunk {
                Some(c) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                None => return None,
            }
        }
    }
}
