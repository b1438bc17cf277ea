//! End to end through the public API: a scripted model fixes a bug in a real
//! git worktree, running the project's own test script through a real
//! sandbox, while its attempts to touch `.git` and leave the worktree are
//! refused.

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use orch_agent::{run_worker, AgentEvent, AgentObserver, WorkerEnd, WorkerSpec};
use orch_providers::{ChatRequest, ChatResponse, Message, Provider, ProviderError, Role, ToolCall};
use orch_sandbox::Sandbox;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Replies in order, one tool call each.
struct Script(Mutex<Vec<(String, serde_json::Value)>>);

#[async_trait]
impl Provider for Script {
    fn name(&self) -> &str {
        "script"
    }
    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let mut steps = self.0.lock().unwrap();
        if steps.is_empty() {
            return Err(ProviderError::Replay {
                script: "test".into(),
                detail: "script exhausted".into(),
            });
        }
        let (name, args) = steps.remove(0);
        let call = ToolCall {
            id: format!("call-{}", steps.len()),
            name,
            arguments: args.to_string(),
        };
        Ok(ChatResponse {
            message: Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![call],
                tool_call_id: None,
            },
            usage: Default::default(),
            finish_reason: "tool_calls".into(),
            model: "script".into(),
        })
    }
}

fn script(steps: Vec<(&str, serde_json::Value)>) -> Arc<Script> {
    Arc::new(Script(Mutex::new(
        steps.into_iter().map(|(n, a)| (n.to_string(), a)).collect(),
    )))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A repository with a buggy `calc.sh` and a `test.sh` that checks it, and a
/// worktree for the task. Returns (tempdir, repo, worktree).
fn repo_with_worktree() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("calc.sh"), "add() {\n  echo $(($1 - $2))\n}\n").unwrap();
    std::fs::write(
        repo.join("test.sh"),
        ". ./calc.sh\nif [ \"$(add 2 3)\" = 5 ]; then echo PASS; else echo FAIL; exit 1; fi\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let wt = dir.path().join("wt");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "orch/t1",
            wt.to_str().unwrap(),
        ],
    );
    (dir, repo, wt)
}

fn spec(
    provider: Arc<dyn Provider>,
    sandbox: Arc<dyn Sandbox>,
    wt: &Path,
    extra_ro: Vec<PathBuf>,
) -> WorkerSpec {
    WorkerSpec {
        provider,
        model: "script".into(),
        sandbox,
        worktree: wt.to_path_buf(),
        extra_ro,
        sandbox_env: vec![],
        system_prompt: "system".into(),
        task_prompt: "Make add add.".into(),
        allowed_files: vec!["*.sh".into()],
        max_turns: 30,
        deadline: Duration::from_secs(120),
        output_limit: 16 * 1024,
        max_run_timeout: Duration::from_secs(60),
        max_file_bytes: 1024 * 1024,
        cancel: Default::default(),
        workspace: orch_agent::Workspace::present(),
        interlude: None,
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<AgentEvent>>);

impl AgentObserver for Events {
    fn on_event(&self, event: &AgentEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test]
async fn fixes_a_bug_in_a_git_worktree_with_no_sandbox() {
    let (dir, repo, wt) = repo_with_worktree();
    let dot_git_before = std::fs::read_to_string(wt.join(".git")).unwrap();
    let provider = script(vec![
        ("list_files", json!({})),
        ("run", json!({"command": "sh test.sh"})),
        ("search", json!({"pattern": r"\$\(\("})),
        ("read_file", json!({"path": "calc.sh"})),
        (
            "write_file",
            json!({"path": ".git", "content": "gitdir: /elsewhere"}),
        ),
        (
            "write_file",
            json!({"path": "../repo/calc.sh", "content": "hijacked"}),
        ),
        (
            "edit_file",
            json!({"path": "calc.sh", "old": "$1 - $2", "new": "$1 + $2"}),
        ),
        (
            "run",
            json!({"command": "sh test.sh && git status --short"}),
        ),
        (
            "finish",
            json!({"summary": "add used subtraction; now it adds"}),
        ),
    ]);
    let events = Events::default();
    let out = run_worker(
        spec(
            provider,
            Arc::new(orch_sandbox::none::NoSandbox::new()),
            &wt,
            vec![],
        ),
        &events,
    )
    .await;

    assert_eq!(
        out.end,
        WorkerEnd::Finished {
            summary: "add used subtraction; now it adds".into()
        },
        "{:#?}",
        out.tools
    );
    assert_eq!(out.turns, 9);
    let t = &out.tools;
    assert_eq!(
        t[0].output_preview, "calc.sh\ntest.sh",
        "the worktree's .git file is not listed"
    );
    assert!(
        !t[1].ok && t[1].output_preview.contains("FAIL"),
        "{:?}",
        t[1]
    );
    assert!(t[2].output_preview.starts_with("calc.sh:2:"), "{:?}", t[2]);
    assert!(
        t[4].refused.as_deref().unwrap().contains(".git"),
        "{:?}",
        t[4]
    );
    assert!(
        t[5].refused
            .as_deref()
            .unwrap()
            .contains("leaves the worktree"),
        "{:?}",
        t[5]
    );
    assert!(t[7].ok, "{:?}", t[7]);
    assert!(
        t[7].output_preview.contains("PASS") && t[7].output_preview.contains(" M calc.sh"),
        "{:?}",
        t[7]
    );

    // The change is in the worktree only; the repository and .git are intact.
    assert_eq!(git(&wt, &["status", "--short"]), " M calc.sh\n");
    assert_eq!(git(&repo, &["status", "--short"]), "");
    assert_eq!(
        std::fs::read_to_string(wt.join(".git")).unwrap(),
        dot_git_before
    );
    assert!(std::fs::read_to_string(repo.join("calc.sh"))
        .unwrap()
        .contains("$1 - $2"));

    let events = events.0.lock().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ModelCall { .. }))
            .count(),
        9
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::ToolCall(r) if r.refused.is_some()))
            .count(),
        2
    );
    drop(dir);
}

/// The same through bubblewrap, when this machine can run it.
#[tokio::test]
async fn runs_commands_inside_bwrap_when_available() {
    let sandbox = orch_sandbox::bwrap::BwrapSandbox::new(Default::default());
    if let Err(e) = sandbox.check().await {
        eprintln!("skipping: bwrap cannot run here: {e}");
        return;
    }
    let (_dir, repo, wt) = repo_with_worktree();
    let git_dir = std::fs::canonicalize(repo.join(".git")).unwrap();
    let provider = script(vec![
        (
            "edit_file",
            json!({"path": "calc.sh", "old": "$1 - $2", "new": "$1 + $2"}),
        ),
        (
            "run",
            json!({"command": "sh test.sh && git status --short"}),
        ),
        ("run", json!({"command": "echo planted > ../planted.txt"})),
        (
            "run",
            json!({"command": format!("touch {}/planted", git_dir.display())}),
        ),
        ("finish", json!({"summary": "fixed"})),
    ]);
    let extra_ro = vec![git_dir.clone()];
    let out = run_worker(
        spec(provider, Arc::new(sandbox), &wt, extra_ro),
        &orch_agent::NoopObserver,
    )
    .await;
    assert_eq!(
        out.end,
        WorkerEnd::Finished {
            summary: "fixed".into()
        }
    );
    let t = &out.tools;
    assert!(
        t[1].ok && t[1].output_preview.contains("PASS"),
        "{:?}",
        t[1]
    );
    assert!(
        t[1].output_preview.contains(" M calc.sh"),
        "git works on the read-only git dir: {:?}",
        t[1]
    );
    // Outside the worktree the sandbox either refuses the write or keeps it
    // private; the host never sees it, and the git dir is read-only.
    assert!(
        !wt.parent().unwrap().join("planted.txt").exists(),
        "{:?}",
        t[2]
    );
    assert!(
        !t[3].ok,
        "the git dir is read-only inside the sandbox: {:?}",
        t[3]
    );
    assert!(!git_dir.join("planted").exists());
}
