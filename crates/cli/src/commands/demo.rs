//! `orch demo`: a sample repository with a failing test, and one full cycle
//! on the replay provider (scripted model responses), showing each stage as
//! it happens. Everything but the model is real: git worktrees, the sandbox,
//! pytest, the judge's gates and the merge queue.

use super::run::{print_summary, run_project};
use crate::{CliError, CliResult};
use clap::Args;
use orch_core::TaskStatus;
use orch_engine::RunOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to create the demo (default: a new temporary directory, kept
    /// afterwards so you can look around).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Sandbox to use: bwrap or none (default: bwrap when it works here).
    #[arg(long)]
    pub sandbox: Option<String>,
}

const CALC_PY: &str = "\"\"\"A tiny calculator.\"\"\"\n\n\ndef add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";
const TEST_CALC_PY: &str = "from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";
const README_MD: &str = "# calc\n\nA tiny calculator. `python3 -m pytest -q` runs the tests.\n\n## Backlog\n\n- `add()` is broken: `test_add` fails.\n";

fn demo_script() -> serde_json::Value {
    serde_json::json!({
        "responses": [
            {"model": "planner", "json": {
                "tasks": [{
                    "title": "Fix add() so test_add passes",
                    "description": "calc.add subtracts instead of adding; tests/test_calc.py::test_add fails. Make add return the sum.",
                    "type": "fix", "priority": 1, "allowed_files": ["calc.py"]
                }],
                "notes": "The only open problem in the backlog is the failing test_add."
            }},
            {"model": "worker", "tool_calls": [{"name": "run", "arguments": {"command": "python3 -m pytest -q"}}]},
            {"model": "worker", "tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]},
            {"model": "worker", "tool_calls": [{"name": "edit_file", "arguments": {"path": "calc.py", "old": "return a - b", "new": "return a + b"}}]},
            {"model": "worker", "tool_calls": [{"name": "run", "arguments": {"command": "python3 -m pytest -q"}}]},
            {"model": "worker", "tool_calls": [{"name": "finish", "arguments": {"summary": "add() returned a - b; it now returns a + b and both tests pass."}}]},
            {"model": "judge", "times": 0, "json": {
                "passed": true, "score": 9,
                "reasoning": "The one-line fix makes add() return the sum; the existing tests cover it and nothing unrelated changed.",
                "issues": []
            }}
        ]
    })
}

async fn git(dir: &Path, args: &[&str]) -> Result<(), CliError> {
    let out = orch_process::run(
        orch_process::ProcessSpec::new("git")
            .args([
                "-c",
                "user.name=orch demo",
                "-c",
                "user.email=demo@orch.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args.iter().copied())
            .cwd(dir),
    )
    .await
    .map_err(|e| CliError::failed(format!("git is needed for the demo: {e}")))?;
    if !out.success() {
        return Err(CliError::failed(format!(
            "git {} failed: {}",
            args.join(" "),
            out.stderr.trim()
        )));
    }
    Ok(())
}

async fn pytest_available() -> bool {
    orch_process::run(orch_process::ProcessSpec::new("python3").args(["-m", "pytest", "--version"]))
        .await
        .map(|o| o.success())
        .unwrap_or(false)
}

pub async fn run(a: DemoArgs) -> CliResult {
    // The demo's cycle finishes even if the reader of stdout leaves.
    crate::output::keep_working_if_stdout_closes();
    if !pytest_available().await {
        return Err(CliError::failed(
            "the demo runs the sample project's tests with `python3 -m pytest`, which is not installed: run `apt-get install python3-pytest` (or `pip install pytest`) and try again",
        ));
    }
    let root = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| CliError::failed(format!("cannot create {}: {e}", d.display())))?;
            std::fs::canonicalize(d)
                .map_err(|e| CliError::failed(format!("{}: {e}", d.display())))?
        }
        None => tempfile::Builder::new()
            .prefix("orch-demo-")
            .tempdir()
            .map_err(|e| CliError::failed(format!("cannot create a temporary directory: {e}")))?
            .keep(),
    };
    let repo = root.join("calc");
    if repo.exists() {
        return Err(CliError::usage(format!(
            "{} already exists; pass another --dir",
            repo.display()
        )));
    }
    let write = |p: PathBuf, s: &str| {
        std::fs::write(&p, s)
            .map_err(|e| CliError::failed(format!("cannot write {}: {e}", p.display())))
    };
    std::fs::create_dir_all(repo.join("tests")).map_err(|e| CliError::failed(e.to_string()))?;
    write(repo.join("calc.py"), CALC_PY)?;
    write(repo.join("tests/test_calc.py"), TEST_CALC_PY)?;
    write(
        repo.join("tests/conftest.py"),
        "import os, sys\nsys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))\n",
    )?;
    write(repo.join("README.md"), README_MD)?;
    write(repo.join(".gitignore"), "__pycache__/\n.pytest_cache/\n")?;
    git(&repo, &["init", "-q"]).await?;
    git(&repo, &["add", "-A"]).await?;
    git(&repo, &["commit", "-q", "-m", "calc with a broken add()"]).await?;

    let script = root.join("demo-script.json");
    write(
        script.clone(),
        &serde_json::to_string_pretty(&demo_script()).unwrap_or_default(),
    )?;
    let sandbox = match a.sandbox.as_deref() {
        Some(s @ ("bwrap" | "none")) => s.to_string(),
        Some(other) => {
            return Err(CliError::usage(format!(
                "--sandbox: expected bwrap or none, found `{other}`"
            )))
        }
        None => {
            let bwrap = orch_sandbox::from_kind("bwrap", orch_sandbox::SandboxOptions::default())
                .map_err(|e| CliError::failed(e.to_string()))?;
            match bwrap.check().await {
                Ok(()) => "bwrap".to_string(),
                Err(e) => {
                    eprintln!("warning: {e}\nwarning: the demo falls back to sandbox = \"none\" (its scripted worker only edits calc.py)");
                    "none".to_string()
                }
            }
        }
    };
    let config_path = root.join("orch.toml");
    let config_text = format!(
        "data_dir = \".orch\"\n\n[providers.replay]\nkind = \"replay\"\nscript = \"demo-script.json\"\n\n[[projects]]\nname = \"calc\"\npath = \"calc\"\ntest_command = \"python3 -m pytest -q\"\nworker_model = \"replay:worker\"\nplanner_model = \"replay:planner\"\njudge_model = \"replay:judge\"\nmax_workers = 1\nmax_attempts = 2\nmax_turns = 20\nworker_timeout_seconds = 120\nsandbox = \"{sandbox}\"\n"
    );
    write(config_path.clone(), &config_text)?;

    println!("orch demo: a sample repository with a failing test, one full cycle on scripted model responses");
    println!(
        "  repository: {}\n  config:     {}\n  sandbox:    {sandbox}\n",
        repo.display(),
        config_path.display()
    );
    let config = orch_config::load(&config_path)?;
    let store = super::open_store(&config)?;
    let summary = run_project(
        &config,
        Arc::clone(&store),
        "calc",
        RunOptions {
            cycles: 1,
            until_idle: false,
        },
        false,
        false,
    )
    .await?;
    print_summary(&summary);

    let merged = summary.count(TaskStatus::Merged) > 0;
    let log = orch_process::run(
        orch_process::ProcessSpec::new("git")
            .args(["log", "--oneline", "-3", "main"])
            .cwd(&repo),
    )
    .await;
    if let Ok(out) = log {
        println!("\ngit log main:\n{}", out.stdout.trim_end());
    }
    println!(
        "\nLook around:\n  orch --config {c} tasks --project calc\n  orch --config {c} show {id}\n  audit trail: {d}/audit/calc/",
        c = config_path.display(),
        id = summary.tasks.first().map(|t| t.id.as_str()).unwrap_or("TASK"),
        d = config.data_dir_abs().display()
    );
    if merged {
        println!(
            "\ndemo finished: the fix was planned, written, verified, judged and merged into main."
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::failed(
            "the demo's task did not merge; see the output above",
        ))
    }
}
