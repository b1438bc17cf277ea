//! Checks serde cannot express: ranges, names, references between sections
//! and paths on disk. The first problem found is reported, naming the key,
//! what was expected and what was found.

use crate::dotenv::is_env_name;
use crate::load::ConfigError;
use crate::model::{
    Config, ModelRef, ProjectConfig, ProviderConfig, ProviderKind, RefineConfig, SandboxKind,
    WorkerKind,
};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;

/// Largest `output_limit_bytes`: 64 MiB.
pub const MAX_OUTPUT_LIMIT: usize = 64 * 1024 * 1024;
/// Smallest `output_limit_bytes`: 1 KiB.
pub const MIN_OUTPUT_LIMIT: usize = 1024;

pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let invalid = |key: String, expected: &str, found: String| ConfigError::Invalid {
        path: cfg.source.clone(),
        key,
        expected: expected.to_string(),
        found,
    };
    for (name, provider) in &cfg.providers {
        validate_provider(cfg, name, provider, &invalid)?;
        if let Some(fb) = &provider.fallback {
            if !cfg.providers.contains_key(&fb.provider) {
                return Err(invalid(
                    format!("providers.{name}.fallback"),
                    "`provider:model` naming a configured provider",
                    format!("`{fb}` (no provider `{}`)", fb.provider),
                ));
            }
        }
    }
    let r = &cfg.retry;
    if r.schedule_seconds.is_empty()
        || r.schedule_seconds.len() > 20
        || r.schedule_seconds.iter().any(|s| *s > 86_400)
    {
        return Err(invalid(
            "retry.schedule_seconds".into(),
            "1 to 20 waits in seconds, each at most 86400, e.g. [2, 30, 60, 120, 300, 600]",
            format!("{:?}", r.schedule_seconds),
        ));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        return Err(invalid(
            "retry.jitter".into(),
            "a fraction from 0 to 1",
            r.jitter.to_string(),
        ));
    }
    if r.breaker_failures == 0 {
        return Err(invalid(
            "retry.breaker_failures".into(),
            "an integer of at least 1",
            "0".into(),
        ));
    }
    for (model, price) in &cfg.prices {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(price.input) || !ok(price.output) || !price.cached_input.is_none_or(ok) {
            return Err(invalid(
                format!("prices.{model}"),
                "non-negative US dollars per million tokens for input, output and cached_input",
                format!(
                    "input = {}, output = {}, cached_input = {:?}",
                    price.input, price.output, price.cached_input
                ),
            ));
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, project) in cfg.projects.iter().enumerate() {
        let key = |field: &str| format!("projects[{i}].{field}");
        if !is_simple_name(&project.name) {
            return Err(invalid(
                key("name"),
                NAME_RULE,
                describe_name(&project.name),
            ));
        }
        if let Some(first) = seen.insert(&project.name, i) {
            return Err(invalid(
                key("name"),
                "a name no other project uses",
                format!("`{}`, already used by projects[{first}]", project.name),
            ));
        }
        validate_project(cfg, project, &key, &invalid)?;
    }
    if let Some(template) = &cfg.new_projects {
        // The project the template would make, at a stand-in path.
        let project = crate::template::from_template(template, "new-project", &cfg.base_dir)
            .map_err(|message| ConfigError::Parse {
                path: cfg.source.clone(),
                line: None,
                column: None,
                message,
            })?;
        let key = |field: &str| format!("new_projects.{field}");
        validate_project(cfg, &project, &key, &invalid)?;
    }
    Ok(())
}

type Invalid<'a> = dyn Fn(String, &str, String) -> ConfigError + 'a;

const NAME_RULE: &str = "a non-empty name of letters, digits, `_`, `.` and `-`";

fn validate_provider(
    cfg: &Config,
    name: &str,
    p: &ProviderConfig,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("providers.{name}.{field}");
    if !is_simple_name(name) {
        return Err(invalid(
            format!("providers.{name}"),
            "a non-empty provider name of letters, digits, `_`, `.` and `-`",
            describe_name(name),
        ));
    }
    match p.kind {
        ProviderKind::Openai => match p.base_url.as_deref() {
            // A preset supplies the base URL.
            None if p.preset.is_some() => {}
            None => {
                return Err(invalid(
                    key("base_url"),
                    "an http:// or https:// URL (required when kind = \"openai\"), e.g. `http://127.0.0.1:8080/v1`",
                    "nothing".to_string(),
                ))
            }
            Some(url) if !is_http_url(url) => {
                return Err(invalid(
                    key("base_url"),
                    "an http:// or https:// URL, e.g. `http://127.0.0.1:8080/v1`",
                    format!("`{url}`"),
                ))
            }
            Some(_) => {}
        },
        ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Ollama => {
            if let Some(url) = p.base_url.as_deref().filter(|u| !is_http_url(u)) {
                return Err(invalid(
                    key("base_url"),
                    "an http:// or https:// URL (or nothing, for the service's default)",
                    format!("`{url}`"),
                ));
            }
        }
        ProviderKind::Simulated => {}
        ProviderKind::Replay => {
            const EXPECTED: &str =
                "a path to an existing replay script file (required when kind = \"replay\"; relative paths are relative to the config file)";
            match cfg.provider_script_path(p) {
                None => return Err(invalid(key("script"), EXPECTED, "nothing".to_string())),
                Some(script) => {
                    if let Some(problem) = path_problem(&script, false) {
                        return Err(invalid(
                            key("script"),
                            EXPECTED,
                            format!("{} ({problem})", script.display()),
                        ));
                    }
                }
            }
        }
    }
    if let Some(var) = p.api_key_env.as_deref() {
        if !is_env_name(var) {
            return Err(invalid(
                key("api_key_env"),
                "the name of the environment variable that holds the key (letters, digits and `_`, not starting with a digit), e.g. `OPENAI_API_KEY`",
                describe_possible_secret(var),
            ));
        }
    }
    check_range(
        &key("request_timeout_seconds"),
        p.request_timeout_seconds,
        1,
        86_400,
        invalid,
    )?;
    Ok(())
}

/// Best-of-N: 1 to 8 candidates; agent CLIs among them need the sandbox
/// `worker` itself would need.
fn validate_candidates(
    p: &ProjectConfig,
    key: &dyn Fn(&str) -> String,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    let max = orch_core::MAX_CANDIDATES;
    check_range(&key("candidates"), p.candidates, 1, max, invalid)?;
    for (j, w) in p.candidate_workers.iter().enumerate() {
        if *w != WorkerKind::Builtin && p.sandbox == SandboxKind::Docker {
            return Err(invalid(
                key(&format!("candidate_workers[{j}]")),
                "`builtin` when sandbox = \"docker\" (agent CLIs run in the bwrap or none \
                 sandbox; set sandbox = \"bwrap\")",
                w.as_str().to_string(),
            ));
        }
    }
    Ok(())
}

fn validate_project(
    cfg: &Config,
    p: &ProjectConfig,
    key: &dyn Fn(&str) -> String,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    let repo = cfg.project_path(p);
    if let Some(problem) = path_problem(&repo, true) {
        return Err(invalid(
            key("path"),
            "an existing git repository directory",
            format!("{} ({problem})", repo.display()),
        ));
    }
    let mut models = vec![
        ("worker_model".to_string(), Some(&p.worker_model)),
        ("planner_model".to_string(), p.planner_model.as_ref()),
        ("judge_model".to_string(), p.judge_model.as_ref()),
        ("architect_model".to_string(), p.architect_model.as_ref()),
        ("reviewer_model".to_string(), p.reviewer_model.as_ref()),
    ];
    for (j, m) in p.worker_models.iter().enumerate() {
        models.push((format!("worker_models[{j}]"), Some(m)));
    }
    for (j, m) in p.candidate_models.iter().enumerate() {
        models.push((format!("candidate_models[{j}]"), Some(m)));
    }
    for (field, model) in models {
        if let Some(m) = model {
            check_model(cfg, &key(&field), m, invalid)?;
        }
    }
    for (field, budget) in [
        ("max_budget_per_task_usd", p.max_budget_per_task_usd),
        ("daily_budget_usd", p.daily_budget_usd),
    ] {
        if let Some(b) = budget {
            if !(b.is_finite() && b > 0.0) {
                return Err(invalid(
                    key(field),
                    "a positive number of US dollars",
                    b.to_string(),
                ));
            }
        }
    }
    if p.worker != WorkerKind::Builtin && p.sandbox == SandboxKind::Docker {
        return Err(invalid(
            key("worker"),
            "`builtin` when sandbox = \"docker\" (agent CLIs run in the bwrap or none sandbox, \
             which show the host's files; set sandbox = \"bwrap\")",
            p.worker.as_str().to_string(),
        ));
    }
    check_range(&key("max_workers"), p.max_workers, 1, 64, invalid)?;
    validate_candidates(p, key, invalid)?;
    check_range(
        &key("max_infra_failures"),
        p.max_infra_failures,
        1,
        1000,
        invalid,
    )?;
    check_range(
        &key("infra_backoff_seconds"),
        p.infra_backoff_seconds,
        0,
        3600,
        invalid,
    )?;
    for (role, n) in [
        ("worker", p.max_tokens.worker),
        ("planner", p.max_tokens.planner),
        ("judge", p.max_tokens.judge),
        ("architect", p.max_tokens.architect),
        ("reviewer", p.max_tokens.reviewer),
    ] {
        check_range(
            &key(&format!("max_tokens.{role}")),
            n,
            16,
            1_000_000,
            invalid,
        )?;
    }
    check_range(&key("max_attempts"), p.max_attempts, 1, 100, invalid)?;
    check_range(&key("max_turns"), p.max_turns, 1, 10_000, invalid)?;
    check_range(
        &key("worker_timeout_seconds"),
        p.worker_timeout_seconds,
        1,
        86_400,
        invalid,
    )?;
    check_range(
        &key("command_timeout_seconds"),
        p.command_timeout_seconds,
        1,
        86_400,
        invalid,
    )?;
    if !(MIN_OUTPUT_LIMIT..=MAX_OUTPUT_LIMIT).contains(&p.output_limit_bytes) {
        return Err(invalid(
            key("output_limit_bytes"),
            &format!("an integer from {MIN_OUTPUT_LIMIT} (1 KiB) to {MAX_OUTPUT_LIMIT} (64 MiB)"),
            p.output_limit_bytes.to_string(),
        ));
    }
    if !(0.0..=10.0).contains(&p.judge_min_score) {
        return Err(invalid(
            key("judge_min_score"),
            "a number from 0 to 10",
            p.judge_min_score.to_string(),
        ));
    }
    if !(0.0..=1.0).contains(&p.loop_similarity) {
        return Err(invalid(
            key("loop_similarity"),
            "a number from 0 (off) to 1 (identical output only)",
            p.loop_similarity.to_string(),
        ));
    }
    if !(16..=1024 * 1024).contains(&p.memory_mb) {
        return Err(invalid(
            key("memory_mb"),
            "an integer from 16 to 1048576 (MiB)",
            p.memory_mb.to_string(),
        ));
    }
    if !(8..=1_000_000).contains(&p.pids_limit) {
        return Err(invalid(
            key("pids_limit"),
            "an integer from 8 to 1000000",
            p.pids_limit.to_string(),
        ));
    }
    if let Some(c) = p.cpus {
        if !(c.is_finite() && c > 0.0 && c <= 1024.0) {
            return Err(invalid(
                key("cpus"),
                "a number above 0 (fractions allowed)",
                c.to_string(),
            ));
        }
    }
    for (j, var) in p.pass_env.iter().enumerate() {
        if !is_env_name(var) {
            return Err(invalid(
                key(&format!("pass_env[{j}]")),
                "an environment variable name (letters, digits and `_`, not starting with a digit); values are read from orch's environment",
                describe_possible_secret(var),
            ));
        }
    }
    if let Some(r) = &p.refine {
        validate_refine(p, r, key, invalid)?;
    }
    Ok(())
}

/// `[projects.refine]`: the judge's score decides, so a judge model is
/// needed; the numbers must be in range.
fn validate_refine(
    p: &ProjectConfig,
    r: &RefineConfig,
    key: &dyn Fn(&str) -> String,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    if p.judge_model.is_none() {
        return Err(invalid(
            key("judge_model"),
            "a judge model when [projects.refine] is set (refinement iterates until the judge's score reaches the threshold): set judge_model = \"provider:model\", or remove the refine table",
            "none".into(),
        ));
    }
    if !(r.threshold.is_finite() && (0.0..=10.0).contains(&r.threshold)) {
        return Err(invalid(
            key("refine.threshold"),
            "a judge score from 0 to 10",
            r.threshold.to_string(),
        ));
    }
    check_range(
        &key("refine.max_iterations"),
        r.max_iterations,
        1,
        100,
        invalid,
    )?;
    check_range(&key("refine.plateau"), r.plateau, 1, 100, invalid)
}

fn check_model(
    cfg: &Config,
    key: &str,
    m: &ModelRef,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    if cfg.providers.contains_key(&m.provider) {
        return Ok(());
    }
    let expected = if cfg.providers.is_empty() {
        "`provider:model` with a provider declared in [providers] (none are declared: add a [providers.NAME] section)".to_string()
    } else {
        let names: Vec<String> = cfg.providers.keys().map(|n| format!("`{n}`")).collect();
        format!(
            "`provider:model` with a provider declared in [providers] (declared: {})",
            names.join(", ")
        )
    };
    Err(invalid(
        key.to_string(),
        &expected,
        format!("`{m}` (no provider `{}`)", m.provider),
    ))
}

fn check_range<T: PartialOrd + Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
    invalid: &Invalid,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key.to_string(),
            &format!("an integer from {min} to {max}"),
            value.to_string(),
        ));
    }
    Ok(())
}

/// Why `path` is unusable, or `None` when it exists and is of the right kind.
fn path_problem(path: &Path, want_dir: bool) -> Option<&'static str> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
        Err(_) => Some("cannot be read"),
        Ok(m) if want_dir && !m.is_dir() => Some("not a directory"),
        Ok(m) if !want_dir && !m.is_file() => Some("not a file"),
        Ok(_) => None,
    }
}

/// `[A-Za-z0-9_.-]+`.
fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn describe_name(s: &str) -> String {
    if s.is_empty() {
        return "an empty name".to_string();
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(bad) => format!("`{s}` (contains {bad:?})"),
        None => format!("`{s}`"),
    }
}

/// A bad variable name may be the secret itself pasted in; never echo that.
fn describe_possible_secret(s: &str) -> String {
    let looks_secret =
        s.starts_with("sk-") || s.starts_with("sk_") || (s.len() >= 20 && !s.contains(' '));
    if looks_secret {
        "a value that looks like a secret itself (not shown): put the secret in the environment or the .env file and write that variable's name here".to_string()
    } else {
        format!("`{s}`")
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !url.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_http_url("http://127.0.0.1:8080/v1"));
        assert!(is_http_url("https://api.example.com"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("http:// x"));
        assert!(!is_http_url("127.0.0.1:8080"));
    }

    #[test]
    fn names() {
        assert!(is_simple_name("demo-1.x_y"));
        assert!(!is_simple_name(""));
        assert!(!is_simple_name("a b"));
        assert_eq!(describe_name("a b"), "`a b` (contains ' ')");
        assert_eq!(describe_name(""), "an empty name");
    }

    #[test]
    fn secrets_are_not_echoed() {
        assert!(!describe_possible_secret("sk-abc").contains("abc"));
        assert!(!describe_possible_secret("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345").contains("ABCDEF"));
        assert_eq!(describe_possible_secret("MY-KEY"), "`MY-KEY`");
    }
}
