//! Talking to models. One request/response model (`chat`), one trait
//! (`Provider`), one module per wire format.
//!
//! Providers here: `openai` (any OpenAI-compatible chat-completions server)
//! and `replay` (scripted responses from a file, for tests and `orch demo`).

pub mod anthropic;
pub mod chat;
pub mod gemini;
mod http;
pub mod ollama;
pub mod openai;
pub mod presets;
pub mod pricing;
pub mod replay;
pub mod resilient;
pub mod retry;
pub mod simulated;
pub mod structured;

pub use chat::{
    ChatRequest, ChatResponse, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};

use async_trait::async_trait;

/// Why a model call failed. `is_retryable` and `retry_after` drive the one
/// retry policy; everything else fails at once with the provider's message.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Could not reach the server (connection refused, DNS, TLS).
    #[error("cannot reach {provider} at {url}: {detail}")]
    Unreachable {
        provider: String,
        url: String,
        detail: String,
    },
    /// The request took longer than the configured timeout.
    #[error("{provider} did not answer within {seconds} s")]
    Timeout { provider: String, seconds: u64 },
    /// The server answered with an error status; `body` is its own message.
    /// `retry_after` is the server's `Retry-After`, when it sent one.
    #[error("{provider} answered HTTP {status}: {body}")]
    Http {
        provider: String,
        status: u16,
        body: String,
        retry_after: Option<std::time::Duration>,
    },
    /// A streamed response stopped before its end marker.
    #[error("{provider} cut the stream off mid-way: {detail}")]
    StreamCut { provider: String, detail: String },
    /// The server answered 2xx with something that is not a valid response.
    #[error("{provider} sent a response orch cannot read: {detail}")]
    BadResponse { provider: String, detail: String },
    /// A replay script has no response left for this request.
    #[error("replay script {script}: {detail}")]
    Replay { script: String, detail: String },
    /// The circuit breaker is open: the provider failed repeatedly and is
    /// not called until `retry_in` has passed.
    #[error("{provider} is failing and is rested for {} s (circuit breaker open)", retry_in.as_secs())]
    CircuitOpen {
        provider: String,
        retry_in: std::time::Duration,
    },
    /// The server gave the same error answer to the same request twice in
    /// a row while a small probe request to it succeeded: it is up and
    /// refuses this request (llama-cpp-python answers a request it cannot
    /// validate with HTTP 500), so no retry can help. Not retryable.
    #[error(
        "{provider} rejected the same request twice with the same answer (HTTP {status}: {body}), \
         while a small probe request to it succeeded; this is not an outage, retrying will not \
         help. The server refuses something in this request: check that it supports what the \
         request uses (tool calls, structured output), or look at its log"
    )]
    RejectedTwice {
        provider: String,
        status: u16,
        body: String,
    },
    /// A budget would be exceeded by this call; nothing was sent.
    #[error("{0}")]
    Budget(String),
    #[error("provider configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// Whether the same request may succeed if sent again: rate limits,
    /// server errors, connection errors, timeouts and cut streams.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Unreachable { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::StreamCut { .. } => true,
            ProviderError::Http { status, .. } => {
                *status == 429 || *status == 408 || *status == 409 || *status >= 500
            }
            _ => false,
        }
    }

    /// The server's requested wait, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ProviderError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What an API can do natively. Where it can't, the shared layers make up
/// for it (for example structured output through the prompt plus
/// validation and one repair round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    /// `response_format` with a JSON schema (or the API's equivalent).
    pub json_schema: bool,
    pub streaming: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            tools: true,
            json_schema: true,
            streaming: false,
        }
    }
}

/// A piece of a streamed answer, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamDelta {
    Text(String),
    /// A tool call begins (index within the message, id, name).
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a tool call's arguments (JSON text, possibly partial).
    ToolCallArgs {
        index: usize,
        fragment: String,
    },
}

/// Receives stream deltas as they arrive.
pub type DeltaSink<'a> = &'a (dyn Fn(&StreamDelta) + Send + Sync);

/// A chat model behind some API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured provider name (the part before `:` in `provider:model`).
    fn name(&self) -> &str;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// One request, one complete answer.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// The same request streamed: deltas go to `sink` as they arrive, and
    /// the assembled answer (tool-call arguments joined from their
    /// fragments) is returned. Providers without streaming answer whole.
    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let response = self.chat(request).await?;
        if !response.message.content.is_empty() {
            sink(&StreamDelta::Text(response.message.content.clone()));
        }
        Ok(response)
    }
}
