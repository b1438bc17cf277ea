//! mini-swe-agent (`worker = "mini-swe-agent"`, the `mini-swe-agent`
//! package's `mini`).
//!
//! **Started** headless as
//! `mini -c mini.yaml -c $ORCH_RUN_DIR/orch-mini.yaml -t "$(cat prompt.md)"
//! -y --exit-immediately -o $HOME/trajectory.json <args…>`: the stock
//! config, then orch's (`orch-mini.yaml`, JSON, written by
//! [`config_file`]): yolo mode (no confirmations), no exit prompt,
//! `step_limit` = `max_turns`, no cost limit of its own (orch's budget
//! applies at the proxy), the model `openai/<model>` through litellm at the
//! proxy's `/v1` (Chat Completions with its `bash` tool) with the dummy
//! key, cost tracking errors ignored, and commands in the local
//! environment (the sandbox) with the project's command timeout. First-run
//! setup and the startup banner are off (`MSWEA_CONFIGURED`,
//! `MSWEA_SILENT_STARTUP`), its global config lives under the run's HOME.
//!
//! **Prompt**: the task text (`-t`): orch's rules, then the task prompt
//! with the task, earlier attempts' feedback and a person's answers.
//!
//! **Read**: the trajectory file, which the start script prints on stdout
//! after the marker [`TRAJECTORY_MARKER`] once `mini` exits (its terminal
//! output goes to stderr). Each `assistant` message is a turn; its
//! `extra.actions` (or `tool_calls`) are `bash` tool calls, matched by
//! `tool_call_id` with the `tool` messages that answer them (ok when the
//! observation's return code is 0). `info.exit_status` must be `Submitted`
//! (the model ran `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`), anything
//! else (`LimitsExceeded`, an exception) is the error; the last assistant
//! text and the submission are the final message; `info.model_stats` has
//! its call count.
//!
//! **Asking**: an `ORCH_ASK_HUMAN: <question>` line in the last assistant
//! text or in the submission.

use super::{record, sh_quote, Agent, Launch, Launched, Report};
use orch_sandbox::ProcessOutput;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Printed on stdout before the trajectory.
pub const TRAJECTORY_MARKER: &str = "<<<orch: mini-swe-agent trajectory>>>";
/// The command that ends a mini run.
const SUBMIT: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
/// orch's config file for mini, in the run directory.
const CONFIG_NAME: &str = "orch-mini.yaml";

/// mini-swe-agent behind the proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiniSweAgent;

impl Agent for MiniSweAgent {
    fn name(&self) -> &'static str {
        "mini-swe-agent"
    }

    fn default_binary(&self) -> &'static str {
        "mini"
    }

    fn launch(&self, l: &Launch<'_>) -> Launched {
        let trajectory = sh_quote(&l.home.join("trajectory.json").to_string_lossy());
        let mut cmd = vec![
            sh_quote(l.binary),
            "-c".into(),
            "mini.yaml".into(),
            "-c".into(),
            sh_quote(&l.run_dir.join(CONFIG_NAME).to_string_lossy()),
            "-t".into(),
            format!("\"$(cat {})\"", sh_quote(&l.prompt_file.to_string_lossy())),
            "-y".into(),
            "--exit-immediately".into(),
            "-o".into(),
            trajectory.clone(),
        ];
        cmd.extend(l.args.iter().map(|a| sh_quote(a)));
        let script = format!(
            "{cmd} >&2\nstatus=$?\nprintf '%s\\n' {marker}\ncat {trajectory} 2>/dev/null\nexit $status\n",
            cmd = cmd.join(" "),
            marker = sh_quote(TRAJECTORY_MARKER),
        );
        let env = [
            ("MSWEA_CONFIGURED", "true".to_string()),
            ("MSWEA_SILENT_STARTUP", "1".to_string()),
            (
                "MSWEA_GLOBAL_CONFIG_DIR",
                l.home.join(".mini-swe-agent").display().to_string(),
            ),
            ("MSWEA_COST_TRACKING", "ignore_errors".to_string()),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True".to_string()),
        ];
        Launched {
            script,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            files: vec![(CONFIG_NAME.to_string(), config_file(l))],
        }
    }

    fn read(&self, output: &ProcessOutput) -> Report {
        let text = output
            .stdout
            .split_once(TRAJECTORY_MARKER)
            .map(|(_, t)| t.trim())
            .unwrap_or_default();
        match serde_json::from_str::<Value>(text) {
            Ok(t) => read_trajectory(&t),
            Err(_) => Report {
                error: Some(format!(
                    "mini-swe-agent wrote no trajectory: {}",
                    super::tail(&output.stderr, 1500)
                )),
                ..Report::default()
            },
        }
    }
}

/// orch's layer over mini's stock config (JSON is YAML).
pub fn config_file(l: &Launch<'_>) -> String {
    let model = if l.model.contains('/') {
        l.model.to_string()
    } else {
        format!("openai/{}", l.model)
    };
    let config = json!({
        "agent": {
            "mode": "yolo",
            "confirm_exit": false,
            "step_limit": l.max_turns,
            "cost_limit": 0,
        },
        "model": {
            "model_name": model,
            "cost_tracking": "ignore_errors",
            "model_kwargs": {
                "api_base": format!("{}/v1", l.base_url),
                "api_key": super::proxy::DUMMY_API_KEY,
                "drop_params": true,
            },
        },
        "environment": {
            "environment_class": "local",
            "timeout": l.command_timeout_s,
        },
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// Reads a mini-swe-agent trajectory.
pub fn read_trajectory(t: &Value) -> Report {
    let mut report = Report::default();
    let mut pending: HashMap<String, (u32, String)> = HashMap::new();
    let mut turn = 0u32;
    for m in t["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str() {
            Some("assistant") => {
                turn += 1;
                let text = super::proxy::text_of(m.get("content"));
                if !text.trim().is_empty() {
                    report.final_text = Some(text);
                }
                // The submit command is the end signal, not work: mini
                // answers it "not executed".
                for (id, command) in actions(m) {
                    if !command.contains(SUBMIT) {
                        pending.insert(id, (turn, command));
                    }
                }
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                if let Some((turn, command)) = pending.remove(id) {
                    let output = super::proxy::text_of(m.get("content"));
                    let ok = output.contains("\"returncode\": 0")
                        || output.contains("<returncode>0</returncode>");
                    report
                        .tools
                        .push(record(turn, "bash", &command, ok, &output));
                }
            }
            _ => {}
        }
    }
    let info = &t["info"];
    let status = info["exit_status"].as_str().unwrap_or_default();
    let submission = info["submission"].as_str().unwrap_or_default().trim();
    if !submission.is_empty() {
        let text = report.final_text.take().unwrap_or_default();
        report.final_text = Some(format!("{text}\n{submission}").trim().to_string());
    }
    if status != "Submitted" {
        let last = t["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| super::proxy::text_of(m.get("content")))
            .unwrap_or_default();
        report.error = Some(format!(
            "mini-swe-agent ended with exit status `{}`: {}",
            if status.is_empty() { "none" } else { status },
            super::tail(&last, 1500)
        ));
    }
    report.turns = info["model_stats"]["api_calls"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok());
    report
}

/// The `bash` commands of an assistant message, by tool call id.
fn actions(m: &Value) -> Vec<(String, String)> {
    if let Some(actions) = m["extra"]["actions"].as_array() {
        return actions
            .iter()
            .map(|a| {
                (
                    a["tool_call_id"].as_str().unwrap_or_default().to_string(),
                    a["command"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
    }
    m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let args: Value = c["function"]["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                args["command"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn commands_results_and_the_submission_are_read() {
        let t = json!({
            "info": {"exit_status": "Submitted", "submission": "",
                     "model_stats": {"instance_cost": 0.0, "api_calls": 2}},
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "task"},
                {"role": "assistant", "content": "Fix the sign.",
                 "tool_calls": [{"id": "c1", "function": {"name": "bash", "arguments": "{\"command\":\"sed -i s/-/+/ calc.py\"}"}}],
                 "extra": {"actions": [{"command": "sed -i s/-/+/ calc.py", "tool_call_id": "c1"}]}},
                {"role": "tool", "tool_call_id": "c1", "content": "{\n  \"returncode\": 0,\n  \"output\": \"\"\n}"},
                {"role": "assistant", "content": "Done: add() returns a + b.",
                 "tool_calls": [{"id": "c2", "function": {"name": "bash", "arguments": "{\"command\":\"echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\"}"}}]},
                {"role": "tool", "tool_call_id": "c2", "content": "{\"returncode\": -1, \"exception_info\": \"action was not executed\"}"},
                {"role": "exit", "content": "", "extra": {"exit_status": "Submitted", "submission": ""}}
            ]
        });
        let r = read_trajectory(&t);
        assert_eq!(r.tools.len(), 1, "the submit command is not a tool call");
        assert!(r.tools[0].ok);
        assert_eq!(r.tools[0].arguments, "sed -i s/-/+/ calc.py");
        assert_eq!(r.final_text.as_deref(), Some("Done: add() returns a + b."));
        assert_eq!(r.error, None);
        assert_eq!(r.turns, Some(2));
    }

    #[test]
    fn a_run_that_was_not_submitted_is_an_error() {
        let t = json!({"info": {"exit_status": "LimitsExceeded", "submission": ""},
                       "messages": [{"role": "exit", "content": "LimitsExceeded"}]});
        let e = read_trajectory(&t).error.unwrap();
        assert!(e.contains("LimitsExceeded"), "{e}");
    }
}
