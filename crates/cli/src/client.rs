//! Client mode: with `--server URL` (or `ORCH_SERVER`), `add-task`, `tasks`,
//! `show`, `answer`, `cancel`, `status` and `events` ask a running `orch
//! serve` over its HTTP API instead of opening the local state, and print
//! the same output (the API answers the same documents as `--json`). The
//! bearer token, when the server needs one, comes from `ORCH_TOKEN`.
//!
//! The commands are synchronous; requests run on the CLI's multi-threaded
//! runtime through `block_in_place`.

use crate::CliError;
use orch_protocol::Event;
use serde::de::DeserializeOwned;
use std::sync::OnceLock;

/// Set once from `--server` / `ORCH_SERVER` before any command runs.
static SERVER: OnceLock<Option<String>> = OnceLock::new();

pub fn set_server(url: Option<String>) {
    let url = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
    let _ = SERVER.set(url);
}

/// The server to talk to, when client mode is on.
pub fn connect() -> Result<Option<Client>, CliError> {
    let Some(url) = SERVER.get().cloned().flatten() else {
        return Ok(None);
    };
    let base = url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "--server `{url}`: expected the URL of an `orch serve` API, such as http://127.0.0.1:7777"
        )));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::failed(format!("cannot build the HTTP client: {e}")))?;
    let token = std::env::var("ORCH_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Some(Client { base, token, http }))
}

/// `s` as one URL path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A body to send.
pub enum Body {
    None,
    Json(serde_json::Value),
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::failed(format!(
            "cannot reach the orch server at {}: {e}; is `orch serve --listen …` running there? (unset ORCH_SERVER or drop --server to use the local state)",
            self.base
        ))
    }

    /// Sends the request; a 2xx body as text, else the server's error as a
    /// CLI error (4xx: exit 2, like the same mistake made locally).
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<String, CliError> {
        let resp = rb.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return Ok(text);
        }
        let message = serde_json::from_str::<orch_server::error::ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("the server answered {status}: {}", text.trim()));
        Err(if status.is_client_error() {
            CliError::usage(message)
        } else {
            CliError::failed(format!("the server at {} failed: {message}", self.base))
        })
    }

    fn decode<T: DeserializeOwned>(&self, text: &str) -> Result<T, CliError> {
        serde_json::from_str(text).map_err(|e| {
            CliError::failed(format!(
                "the server at {} answered something this orch cannot read: {e}; are the server and the CLI the same version?",
                self.base
            ))
        })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        let text = block_on(self.send(self.request(reqwest::Method::GET, path).query(query)))?;
        self.decode(&text)
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str, body: Body) -> Result<T, CliError> {
        let rb = self.request(reqwest::Method::POST, path);
        let rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
        };
        let text = block_on(self.send(rb))?;
        self.decode(&text)
    }

    /// The event log as it is now (the stream's backlog, not followed).
    pub fn events(
        &self,
        project: Option<&str>,
        task: Option<&str>,
    ) -> Result<Vec<Event>, CliError> {
        let mut query = vec![("follow", "false".to_string())];
        if let Some(p) = project {
            query.push(("project", p.to_string()));
        }
        if let Some(t) = task {
            query.push(("task", t.to_string()));
        }
        let rb = self
            .request(reqwest::Method::GET, "/api/v1/events")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .query(&query);
        let text = block_on(self.send(rb))?;
        parse_sse(&text)
            .iter()
            .map(|data| self.decode::<Event>(data))
            .collect()
    }
}

/// The `data:` of each message of a Server-Sent Events text.
fn parse_sse(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_and_segments() {
        let text = ": keep-alive\n\nid: 1\ndata: {\"a\":1}\n\nid: 2\ndata: {\"b\":\ndata: 2}\n\n";
        assert_eq!(parse_sse(text), ["{\"a\":1}", "{\"b\":\n2}"]);
        assert_eq!(segment("calc"), "calc");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
