//! `orch init [PATH]`: registers a git repository as a project, detecting
//! its test command, and creates the config file when there is none.

use crate::{CliError, CliResult};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The git repository (default: the current directory).
    pub path: Option<PathBuf>,
    /// Project name (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Test command (default: detected from Cargo, pytest, npm or Go files).
    #[arg(long)]
    pub test_command: Option<String>,
    /// provider:model for workers, planner and judge.
    #[arg(long, default_value = "local:default")]
    pub model: String,
}

/// The test command for the kind of project found at `repo`, if any.
pub fn detect_test_command(repo: &Path) -> Option<&'static str> {
    let has = |f: &str| repo.join(f).exists();
    if has("Cargo.toml") {
        return Some("cargo test");
    }
    if has("go.mod") {
        return Some("go test ./...");
    }
    if has("package.json") {
        return Some("npm test");
    }
    let pyproject_pytest = std::fs::read_to_string(repo.join("pyproject.toml"))
        .map(|s| s.contains("pytest"))
        .unwrap_or(false);
    let has_py_tests = std::fs::read_dir(repo)
        .map(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                (n.starts_with("test_") && n.ends_with(".py")) || n == "tests" || n == "conftest.py"
            })
        })
        .unwrap_or(false);
    if has("pytest.ini") || pyproject_pytest || has_py_tests {
        return Some("python3 -m pytest -q");
    }
    None
}

/// A TOML string literal that the loader reads back verbatim (`${` would
/// otherwise be taken for interpolation).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.replace("${", "$${")).to_string()
}

pub async fn run(config_flag: Option<&Path>, a: InitArgs) -> CliResult {
    let repo = a.path.clone().unwrap_or_else(|| PathBuf::from("."));
    let repo = std::fs::canonicalize(&repo).map_err(|e| {
        CliError::usage(format!(
            "{}: {e}; pass the path of a git repository",
            repo.display()
        ))
    })?;
    orch_git::Git::open(&repo)
        .await
        .map_err(|e| CliError::usage(e.to_string()))?;
    let name = a.name.clone().unwrap_or_else(|| {
        repo.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "project".into())
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CliError::usage(format!(
            "project name `{name}` may only use letters, digits, `-`, `_` and `.`; pass --name"
        )));
    }
    let test_command = a
        .test_command
        .clone()
        .or_else(|| detect_test_command(&repo).map(str::to_string))
        .unwrap_or_default();
    orch_config::ModelRef::try_from(a.model.clone())
        .map_err(|e| CliError::usage(format!("--model: {e}")))?;

    let config_path = orch_config::resolve_config_path(config_flag);
    let existing = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CliError::failed(format!(
                "cannot read {}: {e}",
                config_path.display()
            )))
        }
    };
    if config_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e != "toml")
    {
        return Err(CliError::usage(format!(
            "{} is not TOML; `orch init` only edits TOML configs. Add the project to it by hand (see the README's configuration reference)",
            config_path.display()
        )));
    }
    let mut text = existing.clone().unwrap_or_else(|| {
        "# orch portfolio: see the README's configuration reference.\n\
         data_dir = \".orch\"\n\n\
         # Any OpenAI-compatible chat-completions server.\n\
         [providers.local]\n\
         kind = \"openai\"\n\
         base_url = \"http://127.0.0.1:8080/v1\"\n\
         # api_key_env = \"LOCAL_API_KEY\"   # the key itself stays in the environment or .env\n"
            .to_string()
    });
    if let Some(existing_text) = &existing {
        // Refuse a duplicate name before writing anything.
        let current = orch_config::load(&config_path)?;
        if current.project(&name).is_some() {
            return Err(CliError::usage(format!(
                "{} already has a project named `{name}`; pass --name to pick another",
                config_path.display()
            )));
        }
        if !existing_text.ends_with('\n') {
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "\n[[projects]]\nname = {}\npath = {}\ntest_command = {}\nlint_command = \"\"\nworker_model = {}\nplanner_model = {}\njudge_model = {}\nmax_workers = 3\nmax_attempts = 3\nmax_turns = 50\nworker_timeout_seconds = 600\nsandbox = \"bwrap\"\n",
        toml_string(&name),
        toml_string(&repo.display().to_string()),
        toml_string(&test_command),
        toml_string(&a.model),
        toml_string(&a.model),
        toml_string(&a.model)
    ));
    // Validate the result before it replaces the file.
    let format = orch_config::ConfigFormat::Toml;
    orch_config::load_str(&text, format, &config_path)?;
    let tmp = config_path.with_extension("toml.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|_| std::fs::rename(&tmp, &config_path))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", config_path.display())))?;
    println!(
        "{} project `{name}` ({}) in {}\n  test command: {}\n  next: orch add-task --project {name} --title \"...\"   then   orch run --project {name}",
        if existing.is_some() { "added" } else { "created the config with" },
        repo.display(),
        config_path.display(),
        if test_command.is_empty() { "(none detected; set test_command)" } else { &test_command }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_common_test_commands() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_test_command(d.path()), None);
        std::fs::write(d.path().join("test_x.py"), "").unwrap();
        assert_eq!(detect_test_command(d.path()), Some("python3 -m pytest -q"));
        std::fs::write(d.path().join("package.json"), "{}").unwrap();
        assert_eq!(detect_test_command(d.path()), Some("npm test"));
        std::fs::write(d.path().join("go.mod"), "module x").unwrap();
        assert_eq!(detect_test_command(d.path()), Some("go test ./..."));
        std::fs::write(d.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(detect_test_command(d.path()), Some("cargo test"));
    }
}
