//! Test helpers: a scripted in-memory `Provider`, stored tasks and a small
//! planning context.

use crate::PlanContext;
use async_trait::async_trait;
use orch_core::{Task, TaskId, TaskSource, TaskStatus, TaskType, Usage};
use orch_providers::{ChatRequest, ChatResponse, Message, Provider, ProviderError};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Answers requests from a queue and records every request it saw.
pub struct Scripted {
    replies: Mutex<VecDeque<ChatResponse>>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    pub fn new(replies: Vec<ChatResponse>) -> Self {
        Scripted {
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        }
    }
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.seen.lock().unwrap().push(request.clone());
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| ProviderError::Replay {
                script: "in-test".into(),
                detail: "no scripted reply left".into(),
            })
    }
}

/// A reply with `content` and 100 input / 10 output tokens.
pub fn answer(content: &str) -> ChatResponse {
    ChatResponse {
        message: Message::assistant(content),
        usage: Usage {
            input_tokens: 100,
            output_tokens: 10,
            cached_tokens: 0,
            cost_usd: 0.0,
        },
        finish_reason: "stop".into(),
        model: "m".into(),
    }
}

pub fn stored_task(title: &str, description: &str, status: TaskStatus) -> Task {
    let now = chrono::Utc::now();
    Task {
        id: TaskId::new(),
        project: "demo".into(),
        title: title.into(),
        description: description.into(),
        task_type: TaskType::Code,
        priority: 0,
        allowed_files: Vec::new(),
        source: TaskSource::Planner,
        status,
        attempts: 2,
        feedback: None,
        question: None,
        answer: None,
        failure_reason: None,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        created_at: now,
        updated_at: now,
    }
}

pub fn context() -> PlanContext {
    PlanContext {
        file_tree: "src/parser.py\ntests/test_parser.py".into(),
        docs: vec![(
            "README.md".into(),
            "# Demo\n\nA tiny parser.\nEnjoy.".into(),
        )],
    }
}
