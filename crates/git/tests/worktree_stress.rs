//! Many tasks changing worktrees of one repository at once, each through
//! its own `Git` value, as workers, baselines and the merge queue do: the
//! per-repository worktree lock must make every operation succeed (plain
//! git fails about 2% of such commands when they overlap).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_git::Git;
use orch_testkit::repo::git;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const TASKS: usize = 8;
const ROUNDS: usize = 13;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_worktree_operations_never_fail() {
    stress(false).await;
}

/// The same with parked worktrees reused: every reused worktree holds
/// exactly the repository's files, on the branch asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_with_parked_worktrees_never_fail() {
    stress(true).await;
}

async fn stress(pooled: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for i in 0..50 {
        std::fs::write(repo.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let root = tmp.path().join("worktrees");

    let ops = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        // Separate values, opened through different spellings of the path.
        let path = if t % 2 == 0 {
            repo.clone()
        } else {
            repo.join(".").join("..").join("repo")
        };
        let root = root.clone();
        let ops = ops.clone();
        let failures = failures.clone();
        handles.push(tokio::spawn(async move {
            let g = Git::open(&path).await.unwrap();
            if pooled {
                g.set_worktree_pool(2);
            }
            let record = |what: String, r: Result<(), orch_git::GitError>| {
                ops.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    failures.lock().unwrap().push(format!("{what}: {e}"));
                }
            };
            for round in 0..ROUNDS {
                let dir = root.join(format!("t{t}-r{round}"));
                let branch = format!("orch/t{t}");
                if round % 3 == 2 {
                    let r = g.worktree_add_detached(&dir, "main").await;
                    record(format!("add_detached {t}/{round}"), r);
                } else {
                    let r = g.worktree_add(&dir, &branch, "main").await;
                    record(format!("add {t}/{round}"), r);
                }
                let files = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name() != ".git")
                            .count()
                    })
                    .unwrap_or(0);
                if files != 50 {
                    failures.lock().unwrap().push(format!(
                        "worktree {t}/{round} holds {files} entries, not 50"
                    ));
                }
                let r = g.worktrees().await.map(|_| ());
                record(format!("list {t}/{round}"), r);
                let r = g.worktree_remove(&dir).await;
                record(format!("remove {t}/{round}"), r);
                let r = g.worktree_prune().await;
                record(format!("prune {t}/{round}"), r);
            }
            let r = g.drain_worktree_pool().await;
            record(format!("drain {t}"), r);
            let r = g.delete_branch(&format!("orch/t{t}")).await;
            record(format!("delete_branch {t}"), r);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let ops = ops.load(Ordering::Relaxed);
    assert!(ops >= 400, "only {ops} operations");
    assert!(
        failures.is_empty(),
        "{} of {ops} operations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let g = Git::open(&repo).await.unwrap();
    assert_eq!(
        g.worktrees().await.unwrap().len(),
        1,
        "only the main one left"
    );
}
