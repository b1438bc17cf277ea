//! Claude Code (`worker = "claude-code"`), Anthropic's agent CLI; the
//! binary ships inside the `claude-agent-sdk` wheel
//! (`site-packages/claude_agent_sdk/_bundled/claude`).
//!
//! **Started** headless as
//! `claude -p --output-format stream-json --verbose
//! --dangerously-skip-permissions --model <model> <args…> < prompt.md`,
//! with `ANTHROPIC_BASE_URL` pointing at the proxy (Anthropic Messages,
//! streamed), `ANTHROPIC_API_KEY` the dummy key, `IS_SANDBOX=1` (it refuses
//! to skip permissions as root otherwise; orch's sandbox is what isolates
//! it), the small/fast model set to the same model (its side calls go
//! through the proxy and are metered too), and autoupdates, telemetry,
//! error reports and other non-essential traffic off.
//!
//! **Prompt**: `prompt.md` on stdin: orch's rules, then the task prompt with
//! the task, earlier attempts' feedback and a person's answers.
//!
//! **Read**: the stream-json lines on stdout. Each `assistant` message's
//! `tool_use` blocks are tool calls (a turn per message id), matched with
//! the `tool_result` blocks of the `user` messages that follow (`is_error`
//! → not ok); the `result` event gives the final message (`result`),
//! `is_error`, `num_turns`, `total_cost_usd` and its usage.
//!
//! **Asking**: the final message's `ORCH_ASK_HUMAN: <question>` line.

use super::{json_lines, record, sh_quote, Agent, Launch, Launched, Report};
use orch_core::Usage;
use orch_sandbox::ProcessOutput;
use serde_json::Value;
use std::collections::HashMap;

/// Claude Code behind the proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaudeCode;

impl Agent for ClaudeCode {
    fn name(&self) -> &'static str {
        "claude-code"
    }

    fn default_binary(&self) -> &'static str {
        "claude"
    }

    fn launch(&self, l: &Launch<'_>) -> Launched {
        let mut cmd = vec![
            sh_quote(l.binary),
            "-p".into(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
            "--dangerously-skip-permissions".into(),
            "--model".into(),
            sh_quote(l.model),
        ];
        cmd.extend(l.args.iter().map(|a| sh_quote(a)));
        let script = format!(
            "exec {} < {}\n",
            cmd.join(" "),
            sh_quote(&l.prompt_file.to_string_lossy())
        );
        let env = [
            ("ANTHROPIC_BASE_URL", l.base_url),
            ("ANTHROPIC_API_KEY", super::proxy::DUMMY_API_KEY),
            ("ANTHROPIC_SMALL_FAST_MODEL", l.model),
            ("ANTHROPIC_DEFAULT_HAIKU_MODEL", l.model),
            ("IS_SANDBOX", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ];
        Launched {
            script,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: Vec::new(),
        }
    }

    fn read(&self, output: &ProcessOutput) -> Report {
        read_stream(&output.stdout)
    }
}

/// A `tool_use` waiting for its result.
struct Pending {
    turn: u32,
    name: String,
    input: String,
}

/// Reads Claude Code's stream-json output.
pub fn read_stream(stdout: &str) -> Report {
    let mut report = Report::default();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut turn = 0u32;
    let mut last_message_id = String::new();
    for event in json_lines(stdout) {
        let message = &event["message"];
        match event["type"].as_str() {
            Some("assistant") => {
                let id = message["id"].as_str().unwrap_or_default().to_string();
                if id.is_empty() || id != last_message_id {
                    turn += 1;
                    last_message_id = id;
                }
                for block in blocks(message) {
                    match block["type"].as_str() {
                        Some("tool_use") => {
                            let id = block["id"].as_str().unwrap_or_default().to_string();
                            order.push(id.clone());
                            pending.insert(
                                id,
                                Pending {
                                    turn,
                                    name: block["name"].as_str().unwrap_or("tool").to_string(),
                                    input: block["input"].to_string(),
                                },
                            );
                        }
                        Some("text") => {
                            let text = block["text"].as_str().unwrap_or_default();
                            if !text.trim().is_empty() {
                                report.final_text = Some(text.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some("user") => {
                for block in blocks(message) {
                    if block["type"] != "tool_result" {
                        continue;
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    if let Some(p) = pending.remove(id) {
                        let ok = block["is_error"].as_bool() != Some(true);
                        let output = super::proxy::text_of(block.get("content"));
                        report
                            .tools
                            .push(record(p.turn, &p.name, &p.input, ok, &output));
                    }
                }
            }
            Some("result") => read_result(&event, &mut report),
            _ => {}
        }
    }
    for id in order {
        if let Some(p) = pending.remove(&id) {
            report.tools.push(record(
                p.turn,
                &p.name,
                &p.input,
                false,
                "no result: the run ended",
            ));
        }
    }
    report
}

fn blocks(message: &Value) -> Vec<Value> {
    message["content"].as_array().cloned().unwrap_or_default()
}

fn read_result(event: &Value, report: &mut Report) {
    let result = event["result"].as_str().unwrap_or_default().to_string();
    if event["is_error"].as_bool() == Some(true) {
        report.error = Some(if result.is_empty() {
            format!(
                "Claude Code reported an error ({})",
                event["subtype"].as_str().unwrap_or("unknown")
            )
        } else {
            result.clone()
        });
    }
    if !result.trim().is_empty() {
        report.final_text = Some(result);
    }
    report.turns = event["num_turns"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok());
    let u = &event["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or_default();
    report.usage = Some(Usage {
        input_tokens: n("input_tokens")
            + n("cache_read_input_tokens")
            + n("cache_creation_input_tokens"),
        output_tokens: n("output_tokens"),
        cached_tokens: n("cache_read_input_tokens"),
        cost_usd: event["total_cost_usd"].as_f64().unwrap_or_default(),
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tool_calls_their_results_and_the_result_are_read() {
        let stream = r#"{"type":"system","subtype":"init","tools":["Bash"]}
{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"sed -i s/-/+/ calc.py"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"","is_error":false}]}}
{"type":"assistant","message":{"id":"m2","content":[{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"pytest"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"1 failed"}],"is_error":true}]}}
{"type":"assistant","message":{"id":"m3","content":[{"type":"tool_use","id":"t3","name":"Read","input":{"file_path":"x"}}]}}
{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"Fixed add().","total_cost_usd":0.12,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}"#;
        let r = read_stream(stream);
        assert_eq!(r.tools.len(), 3);
        assert_eq!((r.tools[0].turn, r.tools[0].ok), (1, true));
        assert!(r.tools[0].arguments.contains("sed -i"));
        assert_eq!((r.tools[1].turn, r.tools[1].ok), (2, false));
        assert_eq!(r.tools[1].output_preview, "1 failed");
        assert!(!r.tools[2].ok, "a call without a result did not succeed");
        assert_eq!(r.final_text.as_deref(), Some("Fixed add()."));
        assert_eq!(r.error, None);
        assert_eq!(r.turns, Some(4));
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.output_tokens),
            (15, 5, 3)
        );
    }

    #[test]
    fn an_api_error_result_is_the_error() {
        let stream = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 400 task budget reached: $0.0100 spent"}"#;
        let r = read_stream(stream);
        assert!(r.error.unwrap().contains("task budget reached"));
    }
}
