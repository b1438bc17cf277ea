//! `orch doctor`: sends a tiny request to every configured provider and
//! says in plain words what is wrong (bad key, unknown model, unreachable),
//! probes tool calling on the providers that serve worker models, then
//! checks each project's repository and sandbox.
//!
//! The tool probe sends one tool with `tool_choice: "auto"`, the way the
//! worker asks; when no tool call comes back it asks again with the tool
//! forced, to tell "no tool calling at all" from "tool calls only when
//! forced" (common for local servers whose chat template has no tool
//! support: the worker, which relies on auto, would get no tool calls).

use super::{load_config, print_json};
use crate::CliResult;
use clap::Args;
use orch_config::Config;
use orch_providers::{ChatRequest, Message, Provider, ProviderError, ToolChoice, ToolSpec};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each provider.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Serialize)]
struct Check {
    what: String,
    ok: bool,
    latency_ms: Option<u64>,
    detail: String,
}

/// Plain words for a provider error.
pub fn explain(e: &ProviderError, key_env: Option<&str>, model: &str) -> String {
    match e {
        ProviderError::Http {
            status: 401 | 403,
            body,
            ..
        } => format!(
            "bad or missing API key{}: {body}",
            key_env.map(|k| format!(" (check {k})")).unwrap_or_default()
        ),
        ProviderError::Http {
            status: 404, body, ..
        } => {
            format!("unknown model `{model}` or wrong base_url: {body}")
        }
        ProviderError::Http { status: 429, .. } => "rate limited right now (the key works)".into(),
        ProviderError::Unreachable { url, detail, .. } => format!("unreachable at {url}: {detail}"),
        ProviderError::Timeout { seconds, .. } => format!("no answer within {seconds} s"),
        other => other.to_string(),
    }
}

/// The first worker model any project runs on `provider`: the model the
/// tool probe asks, since only workers call tools.
fn worker_model_for(config: &Config, provider: &str) -> Option<String> {
    config.projects.iter().find_map(|p| {
        std::iter::once(&p.worker_model)
            .chain(p.worker_models.iter())
            .find(|m| m.provider == provider)
            .map(|m| m.model.clone())
    })
}

/// The tool the probe offers.
const PROBE_TOOL: &str = "report_status";

fn probe_request(model: &str, choice: ToolChoice) -> ChatRequest {
    let mut request = ChatRequest::new(
        model,
        vec![Message::user(format!(
            "Call the {PROBE_TOOL} tool with status \"ok\". Do not answer in text."
        ))],
    );
    request.tools = vec![ToolSpec {
        name: PROBE_TOOL.into(),
        description: "Report a status word.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": { "status": { "type": "string", "maxLength": 20 } },
            "required": ["status"],
            "additionalProperties": false
        }),
    }];
    request.tool_choice = Some(choice);
    request.max_tokens = Some(64);
    request.temperature = Some(0.0);
    request
}

/// What tool calling looks like on `provider`: (works for the worker,
/// plain words).
async fn probe_tool_calls(
    provider: &dyn Provider,
    model: &str,
    timeout: Duration,
    key_env: Option<&str>,
) -> (bool, String) {
    let ask = |choice| async move {
        match tokio::time::timeout(timeout, provider.chat(&probe_request(model, choice))).await {
            Ok(Ok(r)) => Ok(!r.message.tool_calls.is_empty()),
            Ok(Err(e)) => Err(explain(&e, key_env, model)),
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
        }
    };
    match ask(ToolChoice::Auto).await {
        Ok(true) => (true, "tool calls: yes".into()),
        Err(e) => (
            false,
            format!("tool calls: unknown, the request with a tool failed: {e}"),
        ),
        Ok(false) => match ask(ToolChoice::Tool(PROBE_TOOL.into())).await {
            Ok(true) => (
                false,
                "no tool call under tool_choice=auto; forced: yes — this server may not support \
                 tool calls under auto, which the worker relies on (use a model or chat template \
                 with tool-calling support)"
                    .into(),
            ),
            Ok(false) => (
                false,
                "no tool call under tool_choice=auto, nor when forced — this server or model \
                 does not call tools, and the worker needs them"
                    .into(),
            ),
            Err(e) => (
                false,
                format!("no tool call under tool_choice=auto; forced: the request failed: {e}"),
            ),
        },
    }
}

/// The first model any project uses with `provider`.
fn model_for(config: &Config, provider: &str) -> Option<String> {
    config.projects.iter().find_map(|p| {
        [
            Some(&p.worker_model),
            p.planner_model.as_ref(),
            p.judge_model.as_ref(),
            p.architect_model.as_ref(),
            p.reviewer_model.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(p.worker_models.iter())
        .find(|m| m.provider == provider)
        .map(|m| m.model.clone())
    })
}

pub async fn doctor(config_flag: Option<&Path>, a: DoctorArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let mut checks = Vec::new();
    let registry = orch_engine::ProviderRegistry::from_config(&config, config.dry_run);
    for (name, pc) in &config.providers {
        let what = format!("provider {name} ({})", pc.kind.as_str());
        let Some(model) = model_for(&config, name) else {
            checks.push(Check {
                what,
                ok: true,
                latency_ms: None,
                detail: "not used by any project; not contacted".into(),
            });
            continue;
        };
        let registry = match &registry {
            Ok(r) => r,
            Err(e) => {
                checks.push(Check {
                    what,
                    ok: false,
                    latency_ms: None,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let model_ref = orch_config::ModelRef {
            provider: name.clone(),
            model: model.clone(),
        };
        let (provider, model_name) = match registry.resolve(&model_ref) {
            Ok(p) => p,
            Err(e) => {
                checks.push(Check {
                    what,
                    ok: false,
                    latency_ms: None,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let mut request =
            ChatRequest::new(model_name, vec![Message::user("Reply with the word OK.")]);
        request.max_tokens = Some(8);
        let started = Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(a.timeout), provider.chat(&request)).await;
        let latency = started.elapsed().as_millis() as u64;
        let what = format!("{what} model {model}");
        match result {
            Ok(Ok(_)) => {
                checks.push(Check {
                    what,
                    ok: true,
                    latency_ms: Some(latency),
                    detail: "answered".into(),
                });
                // Scripted and simulated providers answer what they are
                // told; only a real model's tool calling is worth probing.
                let scripted = matches!(
                    pc.kind,
                    orch_config::ProviderKind::Replay | orch_config::ProviderKind::Simulated
                ) || config.dry_run;
                if let Some(worker) = worker_model_for(&config, name).filter(|_| !scripted) {
                    let model_ref = orch_config::ModelRef {
                        provider: name.clone(),
                        model: worker.clone(),
                    };
                    if let Ok((provider, model_name)) = registry.resolve(&model_ref) {
                        let started = Instant::now();
                        let (ok, detail) = probe_tool_calls(
                            provider.as_ref(),
                            &model_name,
                            Duration::from_secs(a.timeout),
                            pc.api_key_env.as_deref(),
                        )
                        .await;
                        checks.push(Check {
                            what: format!(
                                "provider {name} ({}) model {worker} tool calls",
                                pc.kind.as_str()
                            ),
                            ok,
                            latency_ms: Some(started.elapsed().as_millis() as u64),
                            detail,
                        });
                    }
                }
            }
            Ok(Err(e)) => checks.push(Check {
                what,
                ok: false,
                latency_ms: Some(latency),
                detail: explain(&e, pc.api_key_env.as_deref(), &model),
            }),
            Err(_) => checks.push(Check {
                what,
                ok: false,
                latency_ms: Some(latency),
                detail: format!("no answer within {} s", a.timeout),
            }),
        }
    }
    for p in &config.projects {
        let repo = config.project_path(p);
        match orch_git::Git::open(&repo).await {
            Ok(_) => checks.push(Check {
                what: format!("project {} repository", p.name),
                ok: true,
                latency_ms: None,
                detail: repo.display().to_string(),
            }),
            Err(e) => checks.push(Check {
                what: format!("project {} repository", p.name),
                ok: false,
                latency_ms: None,
                detail: e.to_string(),
            }),
        }
        let selection = orch_sandbox::select(
            p.sandbox.as_str(),
            super::run::sandbox_options(&config, p),
            super::sandbox::docker_options(&config, p),
        )
        .await;
        let detail = match selection {
            Ok(sel) => match sel.sandbox.check().await {
                Ok(()) if !sel.sandbox.isolates() => {
                    Ok("runs without isolation (sandbox = \"none\")".to_string())
                }
                Ok(()) => Ok(format!(
                    "{} works{}",
                    sel.sandbox.name(),
                    if sel.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", sel.notes.join("; "))
                    }
                )),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let (ok, detail) = match detail {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        checks.push(Check {
            what: format!("project {} sandbox", p.name),
            ok,
            latency_ms: None,
            detail,
        });
    }
    let all_ok = checks.iter().all(|c| c.ok);
    if a.json {
        print_json(&serde_json::json!({ "ok": all_ok, "checks": checks }))?;
    } else {
        for c in &checks {
            println!(
                "{} {}{}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.what,
                c.latency_ms
                    .map(|ms| format!(" ({ms} ms)"))
                    .unwrap_or_default(),
                c.detail
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
