//! A hand-written HTTP/1.1 server on loopback for wire tests that must
//! control the bytes exactly: replies sent a few bytes at a time, bodies with
//! no `Content-Length`, and connections that die mid-body. A framework
//! server (axum) cannot produce those, and they are what streaming clients
//! must survive.
//!
//! Each accepted connection reads one request and gets the next [`RawReply`];
//! the server stops after the last reply. Every request is recorded as a
//! [`RawRequest`].

use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One canned answer of the server.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers, written as given after `content-type`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Send the body in pieces of this many bytes, flushing each, with no
    /// Content-Length (the body ends when the connection closes).
    pub piece: Option<usize>,
    /// Announce this Content-Length but close after `body`: a connection
    /// that dies mid-body.
    pub declared_len: Option<usize>,
}

impl RawReply {
    /// A whole JSON body with its Content-Length.
    pub fn json(status: u16, body: String) -> RawReply {
        RawReply {
            status,
            content_type: "application/json; charset=UTF-8",
            headers: Vec::new(),
            body: body.into_bytes(),
            piece: None,
            declared_len: None,
        }
    }

    /// A 200 streamed body of `content_type` delivered 7 bytes at a time, so
    /// events and lines straddle the client's reads.
    pub fn streamed(content_type: &'static str, body: String) -> RawReply {
        RawReply {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
            piece: Some(7),
            declared_len: None,
        }
    }

    /// An SSE body delivered a few bytes at a time.
    pub fn sse(body: String) -> RawReply {
        RawReply::streamed("text/event-stream", body)
    }

    /// An NDJSON body delivered a few bytes at a time.
    pub fn ndjson(body: String) -> RawReply {
        RawReply::streamed("application/x-ndjson", body)
    }
}

/// What the server received.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// e.g. `POST /api/chat HTTP/1.1`
    pub request_line: String,
    /// Lower-cased names, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body as JSON, or `Null` if it was empty or not JSON.
    pub body: Value,
}

impl RawRequest {
    /// The first header called `name` (give it lower-cased).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running server; it lives on the test's tokio runtime.
pub struct RawServer {
    /// `http://127.0.0.1:<port>` plus the path given to [`serve_under`].
    pub base_url: String,
    received: Arc<Mutex<Vec<RawRequest>>>,
}

impl RawServer {
    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RawRequest> {
        lock(&self.received).clone()
    }
}

/// Start a server answering connection `i` with `replies[i]`; its base URL
/// has no path.
///
/// # Panics
/// If no loopback port can be bound (a broken test machine).
pub async fn serve(replies: Vec<RawReply>) -> RawServer {
    serve_under("", replies).await
}

/// [`serve`] with `path` (e.g. `/v1beta`) appended to the base URL, for
/// clients configured with a versioned base.
///
/// # Panics
/// If no loopback port can be bound (a broken test machine).
pub async fn serve_under(path: &str, replies: Vec<RawReply>) -> RawServer {
    let (listener, addr) = match bind().await {
        Ok(bound) => bound,
        Err(e) => panic!("raw_http: cannot bind a port on 127.0.0.1: {e}; check that loopback networking works in this sandbox"),
    };
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        for reply in replies {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let _ = sock.set_nodelay(true);
            // A client that hangs up without a whole request gets no reply;
            // its own error is what the test sees.
            let Some(request) = read_request(&mut sock).await else {
                return;
            };
            lock(&log).push(request);
            write_reply(&mut sock, reply).await;
        }
    });
    RawServer {
        base_url: format!("http://{addr}{path}"),
        received,
    }
}

async fn bind() -> std::io::Result<(TcpListener, std::net::SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

async fn read_request(sock: &mut TcpStream) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => v.parse().ok()?,
        None => 0,
    };
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    Some(RawRequest {
        request_line,
        headers,
        body,
    })
}

async fn write_reply(sock: &mut TcpStream, reply: RawReply) {
    let mut head = format!(
        "HTTP/1.1 {} Test\r\ncontent-type: {}\r\nconnection: close\r\n",
        reply.status, reply.content_type
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.piece.is_none() {
        let len = reply.declared_len.unwrap_or(reply.body.len());
        head.push_str(&format!("content-length: {len}\r\n"));
    }
    head.push_str("\r\n");
    // The client may give up early (that is what some tests check).
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    match reply.piece {
        Some(n) => {
            for piece in reply.body.chunks(n.max(1)) {
                if sock.write_all(piece).await.is_err() || sock.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        None => {
            let _ = sock.write_all(&reply.body).await;
        }
    }
    let _ = sock.shutdown().await;
}

// A panicking test must not hide the requests from the next assertion.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
