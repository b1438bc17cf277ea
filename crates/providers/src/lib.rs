//! Talking to models. One request/response model (`chat`), one trait
//! (`Provider`), one module per wire format.
//!
//! Providers here: `openai` (any OpenAI-compatible chat-completions server)
//! and `replay` (scripted responses from a file, for tests and `orch demo`).

pub mod chat;
pub mod openai;
pub mod replay;

pub use chat::{
    ChatRequest, ChatResponse, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec,
};

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Could not reach the server (connection refused, DNS, TLS, timeout).
    #[error("cannot reach {provider} at {url}: {detail}")]
    Unreachable {
        provider: String,
        url: String,
        detail: String,
    },
    /// The server answered with an error status; `body` is its own message.
    #[error("{provider} answered HTTP {status}: {body}")]
    Http {
        provider: String,
        status: u16,
        body: String,
    },
    /// The server answered 2xx with something that is not a valid response.
    #[error("{provider} sent a response orch cannot read: {detail}")]
    BadResponse { provider: String, detail: String },
    /// A replay script has no response left for this request.
    #[error("replay script {script}: {detail}")]
    Replay { script: String, detail: String },
    #[error("provider configuration: {0}")]
    Config(String),
}

/// A chat model behind some API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured provider name (the part before `:` in `provider:model`).
    fn name(&self) -> &str;
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;
}
