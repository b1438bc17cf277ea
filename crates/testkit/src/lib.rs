//! Test helpers shared by orch's crates.
//!
//! [`FakeOpenAi`] is a real OpenAI-compatible HTTP server on loopback that
//! answers from a replay [`Script`], so the `openai` provider, the engine and
//! the CLI can be tested end to end over real HTTP without a model.
//! [`ScriptedProvider`] is the in-memory counterpart for unit tests, and
//! [`raw_http`] a byte-exact HTTP server for streaming wire tests, and
//! [`fixtures`] plain tasks and attempts for unit tests, and [`repo`] git
//! for test setup.

pub mod fake_openai;
pub mod fixtures;
pub mod procs;
pub mod raw_http;
pub mod repo;
pub mod scripted;
pub mod wire;

pub use fake_openai::{llama_cpp_python_rejection, FakeOpenAi, Fault};
pub use orch_providers::replay::{Script, ScriptedResponse, ScriptedToolCall, ScriptedUsage};
pub use scripted::ScriptedProvider;
