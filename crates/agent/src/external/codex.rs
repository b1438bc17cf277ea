//! Codex (`worker = "codex"`), OpenAI's agent CLI; the binary ships inside
//! the `openai-codex-cli-bin` wheel (`site-packages/codex_cli_bin/bin/codex`).
//!
//! **Started** headless as
//! `codex exec --json --skip-git-repo-check
//! --dangerously-bypass-approvals-and-sandbox --color never -m <model>
//! -c model_provider=orch -c model_providers.orch={…, wire_api="responses"}
//! <args…> - < prompt.md`: a model provider named `orch` whose base URL is
//! the proxy's `/v1` (OpenAI Responses, streamed) and whose key is read
//! from `ORCH_PROXY_KEY` (the dummy key). Codex's own sandbox is bypassed
//! because it would need namespaces inside orch's, which is what isolates
//! it; `CODEX_HOME` is under the run's private HOME; analytics and update
//! checks are off, and commands run in a non-login shell
//! (`allow_login_shell=false`: a login shell's profile resets PATH).
//!
//! **Prompt**: `prompt.md` on stdin (`-`): orch's rules, then the task
//! prompt with the task, earlier attempts' feedback and a person's answers.
//!
//! **Read**: the JSONL events on stdout. `item.completed` items:
//! `command_execution` (command, aggregated output, exit code) and
//! `file_change` (paths) are tool calls, `mcp_tool_call` and `web_search`
//! too; `agent_message` is the latest message to the user (the final one
//! is the summary); a turn is counted per `turn.completed`, whose `usage`
//! is summed; `turn.failed` (or an `error` event) is the error.
//!
//! **Asking**: the final message's `ORCH_ASK_HUMAN: <question>` line.

use super::{json_lines, record, sh_quote, Agent, Launch, Launched, Report};
use orch_core::Usage;
use orch_sandbox::ProcessOutput;
use serde_json::Value;

/// Codex behind the proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codex;

impl Agent for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }

    fn default_binary(&self) -> &'static str {
        "codex"
    }

    fn launch(&self, l: &Launch<'_>) -> Launched {
        let provider = format!(
            "model_providers.orch={{name=\"orch\",base_url=\"{}/v1\",env_key=\"ORCH_PROXY_KEY\",\
             wire_api=\"responses\"}}",
            l.base_url
        );
        let mut cmd = vec![
            sh_quote(l.binary),
            "exec".into(),
            "--json".into(),
            "--skip-git-repo-check".into(),
            "--dangerously-bypass-approvals-and-sandbox".into(),
            "--color".into(),
            "never".into(),
            "-m".into(),
            sh_quote(l.model),
            "-c".into(),
            "model_provider=orch".into(),
            "-c".into(),
            sh_quote(&provider),
            "-c".into(),
            "analytics.enabled=false".into(),
            "-c".into(),
            "check_for_update_on_startup=false".into(),
            // A login shell's /etc/profile resets PATH (pyenv, cargo,
            // virtualenvs the project's tests need).
            "-c".into(),
            "allow_login_shell=false".into(),
        ];
        cmd.extend(l.args.iter().map(|a| sh_quote(a)));
        cmd.push("-".into());
        let codex_home = l.home.join(".codex");
        let script = format!(
            "mkdir -p {home}\nexec {cmd} < {prompt}\n",
            home = sh_quote(&codex_home.to_string_lossy()),
            cmd = cmd.join(" "),
            prompt = sh_quote(&l.prompt_file.to_string_lossy())
        );
        Launched {
            script,
            env: vec![
                ("ORCH_PROXY_KEY".into(), super::proxy::DUMMY_API_KEY.into()),
                ("CODEX_HOME".into(), codex_home.display().to_string()),
            ],
            files: Vec::new(),
        }
    }

    fn read(&self, output: &ProcessOutput) -> Report {
        read_events(&output.stdout)
    }
}

/// Reads `codex exec --json` events.
pub fn read_events(stdout: &str) -> Report {
    let mut report = Report::default();
    let mut turns = 0u32;
    let mut usage = Usage::default();
    for event in json_lines(stdout) {
        match event["type"].as_str() {
            Some("item.completed") => read_item(&event["item"], turns + 1, &mut report),
            Some("turn.completed") => {
                turns += 1;
                let u = &event["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or_default();
                usage += Usage {
                    input_tokens: n("input_tokens"),
                    output_tokens: n("output_tokens"),
                    cached_tokens: n("cached_input_tokens"),
                    cost_usd: 0.0,
                };
            }
            Some("turn.failed") => {
                report.error = event["error"]["message"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }
    report.turns = Some(turns);
    report.usage = Some(usage);
    report
}

fn read_item(item: &Value, turn: u32, report: &mut Report) {
    let s = |k: &str| item[k].as_str().unwrap_or_default().to_string();
    match item["type"].as_str() {
        Some("agent_message") => report.final_text = Some(s("text")),
        Some("command_execution") => {
            let ok = item["exit_code"].as_i64() == Some(0);
            report.tools.push(record(
                turn,
                "command_execution",
                &s("command"),
                ok,
                &s("aggregated_output"),
            ));
        }
        Some("file_change") => {
            let paths: Vec<String> = item["changes"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|ch| {
                            format!(
                                "{} {}",
                                ch["kind"].as_str().unwrap_or("update"),
                                ch["path"].as_str().unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ok = s("status") != "failed";
            report
                .tools
                .push(record(turn, "file_change", &paths.join(", "), ok, ""));
        }
        Some(kind @ ("mcp_tool_call" | "web_search")) => {
            let ok = s("status") != "failed";
            report
                .tools
                .push(record(turn, kind, &item.to_string(), ok, ""));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn commands_changes_and_the_last_message_are_read() {
        let events = r#"{"type":"thread.started","thread_id":"t"}
{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `worker` not found."}}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc 'sed -i s/-/+/ calc.py'","aggregated_output":"","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"calc.py","kind":"update"}],"status":"completed"}}
{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Fixed add()."}}
{"type":"turn.completed","usage":{"input_tokens":120,"cached_input_tokens":20,"output_tokens":9}}"#;
        let r = read_events(events);
        assert_eq!(r.tools.len(), 2);
        assert_eq!(r.tools[0].tool, "command_execution");
        assert!(r.tools[0].ok);
        assert_eq!(r.tools[1].arguments, "update calc.py");
        assert_eq!(r.final_text.as_deref(), Some("Fixed add()."));
        assert_eq!(r.error, None, "a warning item is not the run's error");
        assert_eq!(r.turns, Some(1));
        assert_eq!(r.usage.unwrap().input_tokens, 120);
    }

    #[test]
    fn a_failed_turn_is_the_error() {
        let r = read_events(
            r#"{"type":"turn.failed","error":{"message":"task budget reached: $0.01 spent"}}"#,
        );
        assert!(r.error.unwrap().contains("task budget reached"));
    }
}
