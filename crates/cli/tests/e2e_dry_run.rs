//! End-to-end: a dry run changes nothing real. The real `orch` binary runs
//! `--dry-run run` (and `ORCH_DRY_RUN=true`, and `dry_run = true`) on a real
//! repository with a branch, a tag, a linked worktree and uncommitted work;
//! afterwards every ref, worktree and file of it — `.git` included, byte
//! for byte, with its modification time — is what it was, while the dry
//! run's scratch clone has walked plan → work → verify → judge → merge and
//! holds the simulated worker's change on main.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything about a repository a dry run must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    refs: String,
    head: String,
    worktrees: String,
    status: String,
    /// Every entry under the repository's directory (`.git` included) and
    /// under its linked worktree: kind, permissions, mtime and, for files
    /// and symlinks, the exact bytes.
    tree: BTreeMap<PathBuf, (String, u32, i128, Vec<u8>)>,
}

/// Runs git without letting it write anything: `GIT_OPTIONAL_LOCKS=0`
/// stops `git status` from refreshing the index (the one file git
/// rewrites on read), so the snapshot itself is read-only — checked by
/// taking it twice.
fn git_ro(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (String, u32, i128, Vec<u8>)>) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let mode = meta.permissions().mode();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            let bytes = target.to_string_lossy().as_bytes().to_vec();
            out.insert(rel, ("symlink".into(), mode, mtime, bytes));
        } else if meta.is_dir() {
            out.insert(rel, ("dir".into(), mode, mtime, Vec::new()));
            walk(root, &path, out);
        } else {
            out.insert(
                rel,
                ("file".into(), mode, mtime, std::fs::read(&path).unwrap()),
            );
        }
    }
}

fn snapshot(repo: &Path, side: &Path) -> Snapshot {
    let mut tree = BTreeMap::new();
    walk(repo, repo, &mut tree);
    let mut side_tree = BTreeMap::new();
    walk(side, side, &mut side_tree);
    for (k, v) in side_tree {
        tree.insert(Path::new("<side>").join(k), v);
    }
    Snapshot {
        refs: git_ro(
            repo,
            &[
                "for-each-ref",
                "--format=%(objectname) %(objecttype) %(refname)",
            ],
        ),
        head: git_ro(repo, &["symbolic-ref", "HEAD"]),
        worktrees: git_ro(repo, &["worktree", "list", "--porcelain"]),
        status: git_ro(
            repo,
            &[
                "status",
                "--porcelain=v1",
                "--untracked-files=all",
                "--ignored",
            ],
        ),
        tree,
    }
}

/// What differs, in words, for a failing assertion.
fn differences(a: &Snapshot, b: &Snapshot) -> String {
    let mut out = String::new();
    for (name, x, y) in [
        ("refs", &a.refs, &b.refs),
        ("HEAD", &a.head, &b.head),
        ("worktrees", &a.worktrees, &b.worktrees),
        ("status", &a.status, &b.status),
    ] {
        if x != y {
            out.push_str(&format!("{name} changed:\n{x}\n---\n{y}\n"));
        }
    }
    for (path, v) in &a.tree {
        match b.tree.get(path) {
            None => out.push_str(&format!("removed: {}\n", path.display())),
            Some(w) if w != v => out.push_str(&format!(
                "changed: {} ({} mode {:o} mtime {} -> {} mode {:o} mtime {}, content {})\n",
                path.display(),
                v.0,
                v.1,
                v.2,
                w.0,
                w.1,
                w.2,
                if v.3 == w.3 { "same" } else { "differs" }
            )),
            Some(_) => {}
        }
    }
    for path in b.tree.keys().filter(|p| !a.tree.contains_key(*p)) {
        out.push_str(&format!("added: {}\n", path.display()));
    }
    out
}

/// A green repository with more than a plain main: a branch, a tag, a
/// linked worktree, an `orch/…` branch of an unrelated task, a modified
/// tracked file and an untracked one.
fn busy_repository() -> (Fixture, PathBuf) {
    let fx = Fixture::new();
    std::fs::write(fx.repo.join("calc.py"), CALC_FIXED).unwrap();
    git(&fx.repo, &["commit", "-q", "-am", "add adds"]);
    git(&fx.repo, &["tag", "-a", "v1", "-m", "version 1"]);
    git(&fx.repo, &["branch", "feature"]);
    git(&fx.repo, &["branch", "orch/0123456789ab"]);
    let side = fx.root().join("side");
    git(
        &fx.repo,
        &["worktree", "add", "-q", side.to_str().unwrap(), "feature"],
    );
    std::fs::write(fx.repo.join("README.md"), "work in progress\n").unwrap();
    std::fs::write(
        fx.repo.join("calc.py"),
        format!("{CALC_FIXED}\n# not committed yet\n"),
    )
    .unwrap();
    (fx, side)
}

#[test]
fn a_dry_run_leaves_the_repository_byte_identical_and_merges_in_its_clone() {
    let (fx, side) = busy_repository();
    // Nothing listens on this port: a request that was really sent fails.
    fx.with_openai("http://127.0.0.1:9/v1", "max_attempts = 1");
    let title = "Describe the calculator";
    let id = fx.add_task(title, "A paragraph on what calc.py offers.");

    let before = snapshot(&fx.repo, &side);
    assert_eq!(
        differences(&before, &snapshot(&fx.repo, &side)),
        "",
        "the snapshot itself must not write"
    );
    let base = git_ro(&fx.repo, &["rev-parse", "main"]).trim().to_string();

    let out = fx.orch(&["--dry-run", "run", "--project", "calc", "--until-idle"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let after = snapshot(&fx.repo, &side);
    assert_eq!(differences(&before, &after), "", "{stdout}\n{stderr}");
    assert_eq!(before, after);

    // It says where it worked and what landed there.
    let clone = fx.root().join(".orch/dry-run/repos/calc");
    assert!(stderr.contains("scratch clone"), "{stderr}");
    assert!(
        stdout.contains(&format!("scratch clone: {}", clone.display())),
        "{stdout}"
    );
    assert!(stdout.contains("merged there: 1 commit(s)"), "{stdout}");
    assert!(stdout.contains("was not touched"), "{stdout}");

    // The whole path ran, on the clone: work, verify, judge, merge.
    let events = serde_json::from_str::<Vec<Value>>(&fx.orch_ok(
        &[
            "--dry-run",
            "events",
            "--task",
            &id,
            "--json",
            "--limit",
            "100000",
        ],
        0,
    ))
    .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "tool_call",
        "verification_finished",
        "verdict_recorded",
        "merged",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let shown: Value =
        serde_json::from_str(&fx.orch_ok(&["--dry-run", "show", &id, "--json"], 0)).unwrap();
    assert_eq!(shown["task"]["status"], "merged", "{shown:#}");
    let attempt = &shown["attempts"][0];
    assert_eq!(attempt["status"], "passed");
    assert_eq!(attempt["verification"]["passed"], true);
    assert_eq!(attempt["verdict"]["passed"], true);
    assert_eq!(
        attempt["attempt_ref"],
        format!("refs/orch/attempts/{id}/1"),
        "{attempt:#}"
    );

    // The clone's main has the simulated worker's note, on top of the
    // user's main; the user's repository has neither.
    let note = "ORCH_DRY_RUN/describe-the-calculator.md";
    let merged = git(&clone, &["show", &format!("main:{note}")]);
    assert!(
        merged.starts_with(&format!("# Dry run: {title}")),
        "{merged}"
    );
    git(&clone, &["merge-base", "--is-ancestor", &base, "main"]);
    assert_ne!(git(&clone, &["rev-parse", "main"]), base);
    assert!(!fx.repo.join("ORCH_DRY_RUN").exists());
    // Every branch and tag of the user's came along; the clone has no
    // remote to push back to.
    assert!(git(&clone, &["tag", "--list"]).contains("v1"));
    assert!(git(&clone, &["branch", "--list", "feature"]).contains("feature"));
    assert_eq!(git(&clone, &["remote"]), "");

    // Real state: the task still waits; nothing was spent.
    assert_eq!(fx.task(&id)["task"]["status"], "pending");
    let cost: Value =
        serde_json::from_str(&fx.orch_ok(&["--dry-run", "cost", "--json"], 0)).unwrap();
    assert_eq!(cost["total"]["cost_usd"], 0.0);

    // ORCH_DRY_RUN=true, with --json: a fresh clone and state, the same
    // path, the report in the JSON document.
    let out = fx
        .orch_cmd(&[
            "run",
            "--project",
            "calc",
            "--until-idle",
            "--json",
            "--quiet",
        ])
        .env("ORCH_DRY_RUN", "true")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dry = &doc["dry_run"];
    assert_eq!(dry["clone"], clone.display().to_string(), "{doc:#}");
    assert_eq!(dry["main_before"], base);
    assert_eq!(
        dry["merged_commits"].as_array().unwrap().len(),
        1,
        "{doc:#}"
    );
    assert_eq!(dry["repository_unchanged"], true);
    assert_eq!(doc["tasks"][0]["status"], "merged");
    assert_eq!(differences(&before, &snapshot(&fx.repo, &side)), "");

    // dry_run = true in the config does the same.
    let text = std::fs::read_to_string(&fx.config).unwrap();
    std::fs::write(&fx.config, format!("dry_run = true\n{text}")).unwrap();
    fx.orch_ok(&["run", "--project", "calc", "--until-idle", "--quiet"], 0);
    assert_eq!(differences(&before, &snapshot(&fx.repo, &side)), "");
    assert_eq!(
        git(&clone, &["show", &format!("main:{note}")]),
        merged.trim_end()
    );
}

#[test]
fn a_dry_run_with_a_planner_and_no_tasks_still_walks_the_whole_cycle() {
    let (fx, side) = busy_repository();
    fx.with_openai(
        "http://127.0.0.1:9/v1",
        "planner_model = \"local:planner\"\nauto_plan = true",
    );
    let before = snapshot(&fx.repo, &side);
    let out = fx
        .orch_cmd(&[
            "--dry-run",
            "run",
            "--project",
            "calc",
            "--until-idle",
            "--cycles",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    // One sample task planned, worked, verified, judged and merged — and
    // no more: the simulated planner proposes once, so --until-idle ends.
    assert_eq!(doc["planned"], 1, "{doc:#}");
    assert_eq!(doc["tasks"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["tasks"][0]["status"], "merged", "{doc:#}");
    assert_eq!(
        doc["tasks"][0]["title"],
        "Dry run: a sample task from the simulated planner"
    );
    assert_eq!(
        doc["dry_run"]["merged_commits"].as_array().unwrap().len(),
        1
    );
    let clone = fx.root().join(".orch/dry-run/repos/calc");
    assert!(git(&clone, &["ls-tree", "-r", "--name-only", "main"])
        .contains("ORCH_DRY_RUN/dry-run-a-sample-task-from-the-simulated-planner.md"));
    // The plan was written to the dry-run audit trail only.
    assert!(fx.root().join(".orch/dry-run/audit/calc/plans").is_dir());
    assert!(!fx.root().join(".orch/audit/calc/plans").exists());
    assert_eq!(differences(&before, &snapshot(&fx.repo, &side)), "");
    // The real state has no task at all.
    let real: Vec<Value> =
        serde_json::from_str(&fx.orch_ok(&["tasks", "--project", "calc", "--json"], 0)).unwrap();
    assert!(real.is_empty(), "{real:?}");
}
