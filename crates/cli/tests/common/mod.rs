//! Shared fixtures for the end-to-end tests: a real git repository with a
//! small Python project, a config file, and the real `orch` binary;
//! [`serve`] runs `orch serve` and reads its log.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod serve;

pub const CALC_BROKEN: &str =
    "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n";
pub const TEST_CALC: &str = "from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub config: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A temporary directory outside /tmp, for tests that must see how the
/// sandbox treats host paths (its private /tmp would simply hide them): in
/// the target dir, else /var/tmp when the checkout itself is under /tmp.
pub fn dir_outside_tmp() -> tempfile::TempDir {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if !target.starts_with("/tmp") {
        if let Ok(dir) = tempfile::tempdir_in(target) {
            return dir;
        }
    }
    std::fs::create_dir_all("/var/tmp").expect("/var/tmp can be created");
    tempfile::tempdir_in("/var/tmp").expect("a temporary directory in /var/tmp")
}

/// The sandbox the end-to-end tests use; bwrap unless ORCH_TEST_SANDBOX says otherwise.
pub fn sandbox() -> String {
    std::env::var("ORCH_TEST_SANDBOX").unwrap_or_else(|_| "bwrap".into())
}

impl Fixture {
    /// A repository `calc` whose add() is broken (test_add fails).
    pub fn new() -> Fixture {
        Fixture::in_dir(tempfile::tempdir().expect("tempdir"))
    }

    /// The same repository in `dir` (see [`dir_outside_tmp`]).
    pub fn in_dir(dir: tempfile::TempDir) -> Fixture {
        let repo = dir.path().join("calc");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("calc.py"), CALC_BROKEN).unwrap();
        std::fs::write(repo.join("test_calc.py"), TEST_CALC).unwrap();
        std::fs::write(repo.join(".gitignore"), "__pycache__/\n.pytest_cache/\n").unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        let config = dir.path().join("orch.toml");
        Fixture { dir, repo, config }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the replay script and a config using it. `project_extra` is
    /// appended to the project table.
    pub fn with_replay(&self, script: Value, project_extra: &str) {
        std::fs::write(
            self.root().join("script.json"),
            serde_json::to_string_pretty(&script).unwrap(),
        )
        .unwrap();
        let providers = "[providers.replay]\nkind = \"replay\"\nscript = \"script.json\"\n";
        self.write_config(providers, "replay", project_extra);
    }

    /// A config pointing at an OpenAI-compatible server.
    pub fn with_openai(&self, base_url: &str, project_extra: &str) {
        let providers = format!("[providers.local]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key_env = \"ORCH_TEST_KEY\"\n");
        self.write_config(&providers, "local", project_extra);
    }

    /// Writes the config. Lines `key = value` in `project_extra` replace the
    /// project defaults of the same key (TOML forbids duplicate keys).
    fn write_config(&self, providers: &str, provider: &str, project_extra: &str) {
        let sandbox = format!("\"{}\"", sandbox());
        let mut keys: Vec<(String, String)> = [
            ("name", "\"calc\""),
            ("path", "\"calc\""),
            ("test_command", "\"python3 -m pytest -q\""),
            ("worker_model", &format!("\"{provider}:worker\"")),
            ("judge_model", &format!("\"{provider}:judge\"")),
            ("max_workers", "1"),
            ("max_attempts", "3"),
            ("max_turns", "20"),
            ("worker_timeout_seconds", "120"),
            ("command_timeout_seconds", "120"),
            ("auto_plan", "false"),
            ("sandbox", &sandbox),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for line in project_extra.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').expect("key = value");
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            match keys.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => keys.push((k, v)),
            }
        }
        let project: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let text = format!("data_dir = \".orch\"\n\n{providers}\n[[projects]]\n{project}");
        std::fs::write(&self.config, text).unwrap();
    }

    /// Appends TOML (tables like `[prices.worker]`) to the config.
    pub fn append_config(&self, text: &str) {
        let mut current = std::fs::read_to_string(&self.config).unwrap();
        current.push('\n');
        current.push_str(text);
        std::fs::write(&self.config, current).unwrap();
    }

    pub fn orch(&self, args: &[&str]) -> Output {
        self.orch_cmd(args).output().expect("orch runs")
    }

    pub fn orch_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.root())
            .env("ORCH_TEST_KEY", "sk-test-secret-123");
        c
    }

    /// Runs orch and asserts the exit code, returning stdout.
    pub fn orch_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.orch(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "orch {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }

    pub fn add_task(&self, title: &str, desc: &str) -> String {
        let out = self.orch_ok(
            &[
                "add-task",
                "--project",
                "calc",
                "--title",
                title,
                "--desc",
                desc,
                "--json",
            ],
            0,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn task(&self, id: &str) -> Value {
        let out = self.orch_ok(&["show", id, "--json"], 0);
        serde_json::from_str(&out).unwrap()
    }

    pub fn events(&self, id: &str) -> Vec<Value> {
        let out = self.orch_ok(&["events", "--task", id, "--json", "--limit", "100000"], 0);
        serde_json::from_str(&out).unwrap()
    }

    pub fn main_sha(&self) -> String {
        git(&self.repo, &["rev-parse", "main"])
    }

    pub fn main_file(&self, path: &str) -> String {
        git(&self.repo, &["show", &format!("main:{path}")])
    }

    /// Runs the tests on the repository's main checkout.
    pub fn main_is_green(&self) -> bool {
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&self.repo)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn orch_branches(&self) -> Vec<String> {
        git(
            &self.repo,
            &["branch", "--list", "orch/*", "--format=%(refname:short)"],
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
    }

    pub fn worktree_count(&self) -> usize {
        git(&self.repo, &["worktree", "list", "--porcelain"])
            .lines()
            .filter(|l| l.starts_with("worktree "))
            .count()
    }
}

pub const CALC_FIXED: &str =
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";

/// A judge that passes everything that reaches it (the gates still apply).
pub fn judge_pass() -> Value {
    serde_json::json!({"model": "judge", "times": 0, "json": {"passed": true, "score": 9, "reasoning": "does what the task asks", "issues": []}})
}

pub fn worker_call(when: Option<&str>, calls: Value) -> Value {
    let mut v = serde_json::json!({"model": "worker", "tool_calls": calls});
    if let Some(w) = when {
        v["when"] = Value::String(w.to_string());
    }
    v
}
