//! An in-memory [`Provider`] for unit tests: it answers from a queue of
//! canned replies and records every request, so a test can check both what
//! the code under test did with an answer and what it asked the model.

use async_trait::async_trait;
use orch_core::Usage;
use orch_providers::{ChatRequest, ChatResponse, Message, Provider, ProviderError};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// Answers requests from a queue, in order, and records every request it saw.
/// Once the queue is empty, `chat` fails with [`ProviderError::Replay`].
pub struct ScriptedProvider {
    replies: Mutex<VecDeque<ChatResponse>>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl ScriptedProvider {
    /// A provider that hands out `replies` one per call.
    pub fn new(replies: Vec<ChatResponse>) -> Self {
        ScriptedProvider {
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ChatRequest> {
        lock(&self.seen).clone()
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        lock(&self.seen).push(request.clone());
        lock(&self.replies)
            .pop_front()
            .ok_or_else(|| ProviderError::Replay {
                script: "in-test".into(),
                detail:
                    "no scripted reply left; give ScriptedProvider::new one reply per expected call"
                        .into(),
            })
    }
}

/// A plain assistant reply with `content`, finish reason `stop`, model `m`
/// and usage of 100 input / 10 output tokens costing $0.001.
pub fn answer(content: &str) -> ChatResponse {
    ChatResponse {
        message: Message::assistant(content),
        usage: Usage {
            input_tokens: 100,
            output_tokens: 10,
            cached_tokens: 0,
            cost_usd: 0.001,
        },
        finish_reason: "stop".into(),
        model: "m".into(),
    }
}

// A panicking test thread must not hide the requests from the next assertion.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
