//! orch-git against real git repositories in temporary directories.

// Setup helpers below panic on failure by design, like the tests using them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_git::{AdvanceOutcome, Git, GitError, MergeOutcome};
use orch_testkit::repo::{git, write};
use std::path::{Path, PathBuf};

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// A repository on `main` with one commit holding `a.txt`.
struct Repo {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    /// Where test worktrees go (outside the repository).
    wt_root: PathBuf,
}

fn repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("repo");
    std::fs::create_dir(&path).unwrap();
    git(&path, &["init", "-q", "-b", "main"]);
    write(&path, "a.txt", "one\n");
    git(&path, &["add", "a.txt"]);
    git(&path, &["commit", "-q", "-m", "first"]);
    let wt_root = tmp.path().join("worktrees");
    Repo {
        path: path.canonicalize().unwrap(),
        wt_root,
        _tmp: tmp,
    }
}

/// Commits `name` = `content` on a new worktree branch; returns (worktree, sha).
async fn commit_on_branch(
    g: &Git,
    r: &Repo,
    branch: &str,
    name: &str,
    content: &str,
) -> (PathBuf, String) {
    let wt = r.wt_root.join(branch.replace('/', "-"));
    g.worktree_add(&wt, branch, "main").await.unwrap();
    write(&wt, name, content);
    let sha = g
        .commit_all(&wt, &format!("{branch}: {name}"))
        .await
        .unwrap()
        .unwrap();
    (wt, sha)
}

#[tokio::test]
async fn open_rejects_a_non_repo_with_an_actionable_message() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Git::open(tmp.path()).await.unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("git init"), "{msg}");
    assert!(msg.contains("point orch at"), "{msg}");

    let missing = Git::open(&tmp.path().join("nope")).await.unwrap_err();
    assert!(matches!(missing, GitError::NotARepo { .. }), "{missing:?}");
}

#[tokio::test]
async fn open_rejects_a_repo_without_commits() {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q"]);
    let err = Git::open(tmp.path()).await.unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");
    assert!(err.to_string().contains("make a first commit"), "{err}");
}

#[tokio::test]
async fn open_finds_the_top_level_and_basic_queries_work() {
    let r = repo();
    write(&r.path, "sub/x.txt", "x");
    let g = Git::open(&r.path.join("sub")).await.unwrap();
    assert_eq!(g.path(), r.path);
    assert_eq!(g.default_branch().await.unwrap(), "main");
    assert_eq!(g.git_common_dir().await.unwrap(), r.path.join(".git"));
    let head = g.rev_parse("main").await.unwrap();
    assert_eq!(head, git(&r.path, &["rev-parse", "HEAD"]));
    assert_eq!(head.len(), 40);
    assert!(g.branch_exists("main").await.unwrap());
    assert!(!g.branch_exists("nope").await.unwrap());
    let err = g.rev_parse("no-such-rev").await.unwrap_err();
    assert!(err.to_string().contains("rev-parse"), "{err}");
    assert!(matches!(
        g.rev_parse("--all").await,
        Err(GitError::InvalidName { .. })
    ));

    // Detached HEAD: falls back to main.
    git(&r.path, &["checkout", "-q", "--detach"]);
    assert_eq!(g.default_branch().await.unwrap(), "main");
}

#[tokio::test]
async fn worktrees_add_list_remove() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let base = g.rev_parse("main").await.unwrap();
    let wt = r.wt_root.join("deep/t1");
    g.worktree_add(&wt, "orch/t1", "main").await.unwrap();
    assert_eq!(read(&wt, "a.txt"), "one\n");
    assert_eq!(g.head(&wt).await.unwrap(), base);

    let det = r.wt_root.join("det");
    g.worktree_add_detached(&det, &base).await.unwrap();

    let list = g.worktrees().await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(list[0].path, r.path);
    assert_eq!(list[0].branch.as_deref(), Some("main"));
    let t1 = list
        .iter()
        .find(|w| w.path == wt.canonicalize().unwrap())
        .unwrap();
    assert_eq!(t1.branch.as_deref(), Some("orch/t1"));
    assert_eq!(t1.head, base);
    let d = list
        .iter()
        .find(|w| w.path == det.canonicalize().unwrap())
        .unwrap();
    assert_eq!(d.branch, None);
    assert_eq!(
        g.branches("orch/").await.unwrap(),
        vec!["orch/t1".to_string()]
    );

    // Adding again over the same directory replaces the stale worktree,
    // and -B resets the branch to the new base.
    write(&wt, "scratch.txt", "dirty");
    g.worktree_add(&wt, "orch/t1", "main").await.unwrap();
    assert!(!wt.join("scratch.txt").exists());

    g.worktree_remove(&wt).await.unwrap();
    g.worktree_remove(&det).await.unwrap();
    assert!(!wt.exists() && !det.exists());
    assert_eq!(g.worktrees().await.unwrap().len(), 1);
    // Removing again is fine, and the branch can be deleted (twice too).
    g.worktree_remove(&wt).await.unwrap();
    g.delete_branch("orch/t1").await.unwrap();
    g.delete_branch("orch/t1").await.unwrap();
    assert!(g.branches("orch/").await.unwrap().is_empty());
    // A batch in one run: present and missing branches alike.
    for b in ["orch/b1", "orch/b2"] {
        git(&r.path, &["branch", b, "main"]);
    }
    g.delete_branches(&["orch/b1", "orch/gone", "orch/b2"])
        .await
        .unwrap();
    assert!(g.branches("orch/").await.unwrap().is_empty());
    // Packed refs go too, with their reflogs, and git agrees they are gone.
    git(&r.path, &["branch", "orch/packed", "main"]);
    git(&r.path, &["pack-refs", "--all"]);
    g.delete_branches(&["orch/packed"]).await.unwrap();
    assert_eq!(git(&r.path, &["branch", "--list", "orch/*"]), "");
    assert!(!r.path.join(".git/logs/refs/heads/orch/packed").exists());
    // A checked-out branch cannot be deleted, and says so.
    assert!(g.delete_branches(&["main"]).await.is_err());
}

/// Whether git's own `worktree add` wrote the record of `wt`: its HEAD's
/// reflog then begins with the HEAD's creation (from the null id), where
/// orch's in-process registration leaves only the `reset --hard` after it.
fn added_by_the_cli(r: &Repo, wt: &Path) -> bool {
    let text = read(wt, ".git");
    let record = PathBuf::from(text.trim().strip_prefix("gitdir: ").unwrap());
    assert!(record.starts_with(r.path.join(".git/worktrees")), "{text}");
    let reflog = std::fs::read_to_string(record.join("logs/HEAD")).unwrap_or_default();
    reflog.starts_with(&"0".repeat(40))
}

#[tokio::test]
async fn worktrees_registered_in_process_are_ones_git_itself_agrees_with() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let base = g.rev_parse("main").await.unwrap();
    // Two directories with the same name: git's records get a counter.
    let (one, two) = (r.wt_root.join("a/w"), r.wt_root.join("b/w"));
    g.worktree_add(&one, "orch/one", "main").await.unwrap();
    g.worktree_add_detached(&two, &base).await.unwrap();
    assert!(!added_by_the_cli(&r, &one) && !added_by_the_cli(&r, &two));
    let records = git(&r.path, &["rev-parse", "--git-common-dir"]);
    let records = r.path.join(records).join("worktrees");
    assert!(records.join("w").is_dir() && records.join("w1").is_dir());
    // No record is left marked locked, and prune keeps both.
    assert!(!records.join("w/locked").exists() && !records.join("w1/locked").exists());
    git(&r.path, &["worktree", "prune"]);
    let listed = git(&r.path, &["worktree", "list", "--porcelain"]);
    let one_real = one.canonicalize().unwrap();
    let two_real = two.canonicalize().unwrap();
    assert!(
        listed.contains(&format!(
            "worktree {}\nHEAD {base}\nbranch refs/heads/orch/one",
            one_real.display()
        )),
        "{listed}"
    );
    assert!(
        listed.contains(&format!(
            "worktree {}\nHEAD {base}\ndetached",
            two_real.display()
        )),
        "{listed}"
    );
    // Each is a complete, clean checkout git works in.
    for wt in [&one, &two] {
        assert_eq!(read(wt, "a.txt"), "one\n");
        assert_eq!(git(wt, &["status", "--porcelain"]), "");
    }
    assert_eq!(git(&one, &["symbolic-ref", "HEAD"]), "refs/heads/orch/one");
    write(&one, "b.txt", "two\n");
    git(&one, &["add", "b.txt"]);
    git(&one, &["commit", "-q", "-m", "second"]);
    assert_eq!(
        git(&r.path, &["rev-parse", "orch/one"]),
        git(&one, &["rev-parse", "HEAD"])
    );
    // git refuses a second checkout of the branch, and removes them both.
    let again = std::process::Command::new("git")
        .args(["worktree", "add", "../again", "orch/one"])
        .current_dir(&r.path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    git(
        &r.path,
        &["worktree", "remove", "--force", one.to_str().unwrap()],
    );
    git(&r.path, &["worktree", "remove", two.to_str().unwrap()]);
    assert!(!one.exists() && !two.exists());
    assert_eq!(g.worktrees().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unusual_worktree_records_are_left_to_git() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    // A record naming a directory deleted behind git's back: git's add
    // wants it pruned first, and the path ends up listed once.
    let stale = r.wt_root.join("stale");
    git(
        &r.path,
        &["worktree", "add", "-q", "--detach", stale.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&stale).unwrap();
    g.worktree_add(&stale, "orch/stale", "main").await.unwrap();
    assert!(added_by_the_cli(&r, &stale));
    let listed = git(&r.path, &["worktree", "list", "--porcelain"]);
    let real = stale.canonicalize().unwrap();
    assert_eq!(
        listed
            .matches(&format!("worktree {}\n", real.display()))
            .count(),
        1,
        "{listed}"
    );
    // A name git would rewrite, and relative worktree paths.
    let odd = r.wt_root.join("with space");
    g.worktree_add(&odd, "orch/odd", "main").await.unwrap();
    assert!(added_by_the_cli(&r, &odd));
    git(&r.path, &["config", "worktree.useRelativePaths", "true"]);
    let g = Git::open(&r.path).await.unwrap();
    let relative = r.wt_root.join("relative");
    g.worktree_add(&relative, "orch/relative", "main")
        .await
        .unwrap();
    assert!(added_by_the_cli(&r, &relative));
    assert_eq!(read(&relative, "a.txt"), "one\n");
}

#[tokio::test]
async fn worktree_add_refuses_to_delete_a_foreign_directory() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let dir = r.wt_root.join("precious");
    write(&dir, "notes.txt", "mine");
    let err = g.worktree_add(&dir, "orch/x", "main").await.unwrap_err();
    assert!(err.to_string().contains("move away"), "{err}");
    assert_eq!(read(&dir, "notes.txt"), "mine");
}

#[tokio::test]
async fn worktree_remove_cleans_up_a_directory_deleted_behind_gits_back() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = r.wt_root.join("gone");
    g.worktree_add(&wt, "orch/gone", "main").await.unwrap();
    std::fs::remove_dir_all(&wt).unwrap();
    g.worktree_remove(&wt).await.unwrap();
    assert_eq!(g.worktrees().await.unwrap().len(), 1);
    // The branch is free again for a new worktree.
    g.worktree_add(&wt, "orch/gone", "main").await.unwrap();
}

#[tokio::test]
async fn commit_all_skips_caches_and_reports_nothing_to_commit() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = r.wt_root.join("c");
    g.worktree_add(&wt, "orch/c", "main").await.unwrap();
    assert_eq!(g.commit_all(&wt, "nothing").await.unwrap(), None);

    write(&wt, "src/mod.py", "x = 1\n");
    write(&wt, "src/__pycache__/mod.cpython-312.pyc", "bytecode");
    write(&wt, "__pycache__/top.pyc", "bytecode");
    write(&wt, "loose.pyc", "bytecode");
    write(&wt, ".pytest_cache/v/cache/lastfailed", "{}");
    write(&wt, "web/node_modules/left-pad/index.js", "pad");
    write(&wt, "target/debug/app", "binary");
    write(&wt, ".mypy_cache/x.json", "{}");
    write(&wt, ".ruff_cache/x", "r");
    std::fs::remove_file(wt.join("a.txt")).unwrap();

    let sha = g.commit_all(&wt, "task work").await.unwrap().unwrap();
    assert_eq!(sha, g.head(&wt).await.unwrap());
    let files = git(&wt, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, "src/mod.py");
    assert_eq!(
        git(&wt, &["log", "-1", "--format=%an <%ae> %s"]),
        "orch <orch@localhost> task work"
    );
    assert_eq!(g.commit_all(&wt, "again").await.unwrap(), None);

    let base = g.rev_parse("main").await.unwrap();
    assert_eq!(
        g.changed_files(&base, &sha).await.unwrap(),
        vec!["a.txt", "src/mod.py"]
    );
    let stat = g.diff_stat(&base, &sha).await.unwrap();
    assert!(
        stat.contains("src/mod.py") && stat.contains("2 files changed"),
        "{stat}"
    );
    let diff = g.diff(&base, &sha, 1 << 20).await.unwrap();
    assert!(diff.contains("+x = 1") && diff.contains("-one"), "{diff}");
    assert!(g.is_ancestor(&base, &sha).await.unwrap());
    assert!(!g.is_ancestor(&sha, &base).await.unwrap());
}

#[tokio::test]
async fn commit_all_skips_hooks() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    write(&r.path, ".git/hooks/pre-commit", "#!/bin/sh\nexit 1\n");
    git(&r.path, &["config", "core.hooksPath", ".git/hooks"]);
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(r.path.join(".git/hooks/pre-commit"))
        .status()
        .unwrap();
    write(&r.path, "b.txt", "b");
    assert!(g
        .commit_all(&r.path, "despite hook")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn diff_is_capped_with_a_marker() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let base = g.rev_parse("main").await.unwrap();
    let big: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    write(&r.path, "big.txt", &big);
    let head = g.commit_all(&r.path, "big").await.unwrap().unwrap();
    let diff = g.diff(&base, &head, 2000).await.unwrap();
    assert!(diff.contains("orch cut"), "{diff}");
    assert!(diff.starts_with("diff --git"));
    assert!(diff.ends_with("+line 19999\n"));
    assert!(diff.len() < 2100);
}

#[tokio::test]
async fn merge_clean_and_conflict() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let (_, left) = commit_on_branch(&g, &r, "orch/left", "a.txt", "left\n").await;
    let (_, other) = commit_on_branch(&g, &r, "orch/other", "b.txt", "b\n").await;
    let (right_wt, _) = commit_on_branch(&g, &r, "orch/right", "a.txt", "right\n").await;

    // Clean: b.txt merges into the right branch.
    let before = g.head(&right_wt).await.unwrap();
    match g
        .merge_into_worktree(&right_wt, &other, "merge other")
        .await
        .unwrap()
    {
        MergeOutcome::Clean { head } => {
            assert_eq!(head, g.head(&right_wt).await.unwrap());
            assert_ne!(head, before);
            assert!(g.is_ancestor(&other, &head).await.unwrap());
            assert_eq!(read(&right_wt, "b.txt"), "b\n");
            assert_eq!(git(&right_wt, &["log", "-1", "--format=%s"]), "merge other");
        }
        c => panic!("expected clean merge, got {c:?}"),
    }

    // Conflict: both changed a.txt; aborted, files listed, worktree intact.
    let before = g.head(&right_wt).await.unwrap();
    match g
        .merge_into_worktree(&right_wt, &left, "merge left")
        .await
        .unwrap()
    {
        MergeOutcome::Conflict { files, output } => {
            assert_eq!(files, vec!["a.txt"]);
            assert!(output.contains("CONFLICT"), "{output}");
        }
        c => panic!("expected conflict, got {c:?}"),
    }
    assert_eq!(g.head(&right_wt).await.unwrap(), before);
    assert_eq!(read(&right_wt, "a.txt"), "right\n");
    assert!(!g.is_dirty(&right_wt).await.unwrap());
    assert!(!right_wt.join(".git").is_dir());
    let merge_head = git(&right_wt, &["rev-parse", "--git-path", "MERGE_HEAD"]);
    assert!(!right_wt.join(merge_head).exists());
}

#[tokio::test]
async fn a_kept_conflict_leaves_markers_and_commits_with_both_parents() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let (_, left) = commit_on_branch(&g, &r, "orch/left", "a.txt", "left\n").await;
    let (right_wt, right) = commit_on_branch(&g, &r, "orch/right", "a.txt", "right\n").await;
    match g
        .merge_keeping_conflicts(&right_wt, &left, "merge left")
        .await
        .unwrap()
    {
        MergeOutcome::Conflict { files, .. } => assert_eq!(files, vec!["a.txt"]),
        c => panic!("expected conflict, got {c:?}"),
    }
    // diff3 markers, with the common base between ours and theirs.
    let marked = read(&right_wt, "a.txt");
    assert!(marked.starts_with("<<<<<<< "), "{marked}");
    assert!(marked.contains("right\n||||||| "), "{marked}");
    assert!(marked.contains("one\n=======\nleft\n>>>>>>> "), "{marked}");
    // The merge stays in progress: resolving and committing records it.
    write(&right_wt, "a.txt", "left and right\n");
    let merged = g.commit_all(&right_wt, "resolved").await.unwrap().unwrap();
    assert_eq!(g.rev_parse(&format!("{merged}^1")).await.unwrap(), right);
    assert_eq!(g.rev_parse(&format!("{merged}^2")).await.unwrap(), left);
    assert_eq!(
        g.log_subjects(&right, &merged, 10).await.unwrap(),
        vec!["resolved".to_string()]
    );
    assert_eq!(
        g.log_subjects("main", &merged, 1).await.unwrap(),
        vec!["resolved".to_string()]
    );
}

#[tokio::test]
async fn is_dirty_counts_tracked_changes_only() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    assert!(!g.is_dirty(&r.path).await.unwrap());
    write(&r.path, "untracked.txt", "u");
    assert!(!g.is_dirty(&r.path).await.unwrap());
    write(&r.path, "a.txt", "changed\n");
    assert!(g.is_dirty(&r.path).await.unwrap());
}

#[tokio::test]
async fn advance_branch_not_checked_out_is_a_compare_and_swap() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    // Move the main checkout off `main` so it is not checked out anywhere.
    git(&r.path, &["checkout", "-q", "--detach"]);
    let old = g.rev_parse("main").await.unwrap();
    let (wt, new) = commit_on_branch(&g, &r, "orch/t", "b.txt", "b\n").await;
    g.worktree_remove(&wt).await.unwrap();

    assert_eq!(
        g.advance_branch("main", &new, &old).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    assert_eq!(g.rev_parse("main").await.unwrap(), new);

    // A stale expectation changes nothing.
    let (_, newer) = commit_on_branch(&g, &r, "orch/u", "c.txt", "c\n").await;
    assert_eq!(
        g.advance_branch("main", &newer, &old).await.unwrap(),
        AdvanceOutcome::Moved {
            current: new.clone()
        }
    );
    assert_eq!(g.rev_parse("main").await.unwrap(), new);
}

#[tokio::test]
async fn advance_branch_refuses_to_drop_commits() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    git(&r.path, &["checkout", "-q", "--detach"]);
    let old = g.rev_parse("main").await.unwrap();
    let (_, sibling) = commit_on_branch(&g, &r, "orch/s", "s.txt", "s\n").await;
    // Give main a commit the sibling does not contain.
    let (_, main_tip) = commit_on_branch(&g, &r, "orch/m", "m.txt", "m\n").await;
    assert_eq!(
        g.advance_branch("main", &main_tip, &old).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    let err = g
        .advance_branch("main", &sibling, &main_tip)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NotFastForward { .. }), "{err:?}");
    assert_eq!(g.rev_parse("main").await.unwrap(), main_tip);
}

#[tokio::test]
async fn advance_branch_fast_forwards_a_clean_checkout() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let old = g.rev_parse("main").await.unwrap();
    let (_, new) = commit_on_branch(&g, &r, "orch/t", "b.txt", "b\n").await;
    write(&r.path, "untracked-note.txt", "kept");

    assert_eq!(
        g.advance_branch("main", &new, &old).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    assert_eq!(g.rev_parse("main").await.unwrap(), new);
    assert_eq!(g.head(&r.path).await.unwrap(), new);
    assert_eq!(read(&r.path, "b.txt"), "b\n");
    assert_eq!(read(&r.path, "untracked-note.txt"), "kept");
    assert!(!g.is_dirty(&r.path).await.unwrap());
}

/// The branch may be checked out in a linked worktree rather than the main
/// one: that checkout follows, and the main one is left alone.
#[tokio::test]
async fn advance_branch_fast_forwards_a_linked_worktree_checkout() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let old = g.rev_parse("main").await.unwrap();
    git(&r.path, &["branch", "release"]);
    let linked = r.path.parent().unwrap().join(format!(
        "{}-release",
        r.path.file_name().unwrap().to_string_lossy()
    ));
    git(
        &r.path,
        &["worktree", "add", "-q", linked.to_str().unwrap(), "release"],
    );
    let (_, new) = commit_on_branch(&g, &r, "orch/t", "b.txt", "b\n").await;

    // Dirty there: deferred, and the checkout named is the linked one.
    write(&linked, "a.txt", "edited\n");
    match g.advance_branch("release", &new, &old).await.unwrap() {
        AdvanceOutcome::Deferred { checkout, .. } => assert_eq!(
            checkout.canonicalize().unwrap(),
            linked.canonicalize().unwrap()
        ),
        o => panic!("expected Deferred, got {o:?}"),
    }
    git(&linked, &["checkout", "-q", "--", "."]);

    assert_eq!(
        g.advance_branch("release", &new, &old).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    assert_eq!(g.head(&linked).await.unwrap(), new);
    assert_eq!(read(&linked, "b.txt"), "b\n");
    assert_eq!(g.head(&r.path).await.unwrap(), old);
    std::fs::remove_dir_all(&linked).unwrap();
}

#[tokio::test]
async fn advance_branch_defers_on_a_dirty_checkout_and_touches_nothing() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let old = g.rev_parse("main").await.unwrap();
    let (_, new) = commit_on_branch(&g, &r, "orch/t", "a.txt", "from orch\n").await;
    let users = "the user's unsaved work\n\u{1F600} bytes\r\n";
    write(&r.path, "a.txt", users);
    let index_before = std::fs::read(r.path.join(".git/index")).unwrap();

    match g.advance_branch("main", &new, &old).await.unwrap() {
        AdvanceOutcome::Deferred { checkout, reason } => {
            assert_eq!(checkout, r.path);
            assert!(reason.contains("uncommitted changes"), "{reason}");
        }
        o => panic!("expected Deferred, got {o:?}"),
    }
    assert_eq!(
        std::fs::read(r.path.join("a.txt")).unwrap(),
        users.as_bytes()
    );
    assert_eq!(g.rev_parse("main").await.unwrap(), old);
    assert_eq!(g.head(&r.path).await.unwrap(), old);
    assert_eq!(
        std::fs::read(r.path.join(".git/index")).unwrap(),
        index_before
    );
}

#[tokio::test]
async fn advance_branch_defers_when_an_untracked_file_is_in_the_way() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let old = g.rev_parse("main").await.unwrap();
    let (_, new) = commit_on_branch(&g, &r, "orch/t", "new.txt", "from orch\n").await;
    write(&r.path, "new.txt", "user's own untracked file\n");

    match g.advance_branch("main", &new, &old).await.unwrap() {
        AdvanceOutcome::Deferred { checkout, reason } => {
            assert_eq!(checkout, r.path);
            assert!(reason.contains("untracked"), "{reason}");
        }
        o => panic!("expected Deferred, got {o:?}"),
    }
    assert_eq!(read(&r.path, "new.txt"), "user's own untracked file\n");
    assert_eq!(g.rev_parse("main").await.unwrap(), old);
}

#[tokio::test]
async fn advance_branch_in_a_linked_worktree() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let (base_wt, old) = commit_on_branch(&g, &r, "orch/base", "x.txt", "x\n").await;
    let next_wt = r.wt_root.join("next");
    g.worktree_add(&next_wt, "orch/next", "orch/base")
        .await
        .unwrap();
    write(&next_wt, "y.txt", "y\n");
    let new = g.commit_all(&next_wt, "y").await.unwrap().unwrap();

    assert_eq!(
        g.advance_branch("orch/base", &new, &old).await.unwrap(),
        AdvanceOutcome::Advanced
    );
    assert_eq!(g.head(&base_wt).await.unwrap(), new);
    assert_eq!(read(&base_wt, "y.txt"), "y\n");
}

fn change(path: &str, deleted: bool) -> orch_git::WorktreeChange {
    orch_git::WorktreeChange {
        path: path.to_string(),
        deleted,
    }
}

fn sorted(mut v: Vec<orch_git::WorktreeChange>) -> Vec<orch_git::WorktreeChange> {
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// A worktree whose HEAD holds a.txt, keep.txt, sub/b.txt, an executable
/// run.sh and a symlink link -> a.txt.
async fn rich_worktree(g: &Git, r: &Repo) -> PathBuf {
    let wt = r.wt_root.join("rich");
    g.worktree_add(&wt, "orch/rich", "main").await.unwrap();
    write(&wt, "keep.txt", "keep\n");
    write(&wt, "sub/b.txt", "b\n");
    write(&wt, "run.sh", "#!/bin/sh\n");
    write(&wt, ".gitignore", "*.log\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(wt.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", wt.join("link")).unwrap();
    g.commit_all(&wt, "rich").await.unwrap().unwrap();
    wt
}

#[tokio::test]
async fn worktree_changes_lists_what_commit_all_would_commit() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = rich_worktree(&g, &r).await;
    assert_eq!(g.worktree_changes(&wt).await.unwrap(), vec![]);

    write(&wt, "a.txt", "changed\n");
    std::fs::remove_file(wt.join("sub/b.txt")).unwrap();
    write(&wt, "new/deep/n.py", "x\n");
    write(&wt, "name with space.txt", "x\n");
    write(&wt, "__pycache__/m.pyc", "cache");
    write(&wt, "debug.log", "ignored");
    write(&wt, "staged-then-gone.txt", "x\n");
    git(&wt, &["add", "staged-then-gone.txt"]);
    std::fs::remove_file(wt.join("staged-then-gone.txt")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(wt.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", wt.join("out")).unwrap();

    let changes = sorted(g.worktree_changes(&wt).await.unwrap());
    assert_eq!(
        changes,
        vec![
            change("a.txt", false),
            change("name with space.txt", false),
            change("new/deep/n.py", false),
            change("out", false),
            change("run.sh", false),
            change("sub/b.txt", true),
        ]
    );

    // Exactly these paths are what the commit takes.
    let head = g.commit_all(&wt, "all").await.unwrap().unwrap();
    let mut committed = g.changed_files(&format!("{head}~1"), &head).await.unwrap();
    committed.sort();
    let listed: Vec<String> = changes.into_iter().map(|c| c.path).collect();
    assert_eq!(committed, listed);
}

#[tokio::test]
async fn discard_changes_makes_paths_as_at_head() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = rich_worktree(&g, &r).await;
    let outside = r.wt_root.join("outside");
    write(&outside, "victim.txt", "precious\n");

    write(&wt, "a.txt", "changed\n");
    write(&wt, "keep.txt", "kept change\n");
    std::fs::remove_file(wt.join("sub/b.txt")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(wt.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    write(&wt, "new/deep/n.py", "x\n");
    write(&wt, "new/other.txt", "stays\n");
    write(&wt, "lone/dir/f.txt", "x\n");
    std::os::unix::fs::symlink(&outside, wt.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.txt"), wt.join("escape-file")).unwrap();
    // A tracked symlink retargeted outside.
    std::fs::remove_file(wt.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.txt"), wt.join("link")).unwrap();
    write(&wt, "staged.txt", "x\n");
    git(&wt, &["add", "staged.txt"]);

    let discard: Vec<String> = [
        "a.txt",
        "sub/b.txt",
        "run.sh",
        "new/deep/n.py",
        "lone/dir/f.txt",
        "escape",
        "escape-file",
        "link",
        "staged.txt",
        // Reached through the symlink: not in the worktree, so untouched.
        "escape/victim.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    g.discard_changes(&wt, &discard).await.unwrap();

    assert_eq!(
        sorted(g.worktree_changes(&wt).await.unwrap()),
        vec![change("keep.txt", false), change("new/other.txt", false)]
    );
    assert_eq!(read(&wt, "a.txt"), "one\n");
    assert_eq!(read(&wt, "sub/b.txt"), "b\n");
    let mode = std::fs::metadata(wt.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit restored");
    assert_eq!(
        std::fs::read_link(wt.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert!(!wt.join("new/deep").exists(), "emptied directory removed");
    assert!(wt.join("new").is_dir(), "non-empty directory kept");
    assert!(!wt.join("lone").exists(), "emptied parents removed");
    assert!(!wt.join("escape").exists() && !wt.join("escape-file").exists());
    assert!(!wt.join("staged.txt").exists());
    assert_eq!(read(&outside, "victim.txt"), "precious\n");
    assert!(wt.is_dir());
}

#[tokio::test]
async fn discard_changes_handles_a_file_turned_into_a_directory() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = rich_worktree(&g, &r).await;
    std::fs::remove_file(wt.join("a.txt")).unwrap();
    write(&wt, "a.txt/inner.txt", "x\n");
    std::fs::remove_dir_all(wt.join("sub")).unwrap();
    write(&wt, "sub", "now a file\n");
    let paths: Vec<String> = g
        .worktree_changes(&wt)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.path)
        .collect();
    g.discard_changes(&wt, &paths).await.unwrap();
    assert_eq!(g.worktree_changes(&wt).await.unwrap(), vec![]);
    assert_eq!(read(&wt, "a.txt"), "one\n");
    assert_eq!(read(&wt, "sub/b.txt"), "b\n");
}

#[tokio::test]
async fn discard_changes_refuses_paths_outside_the_worktree_and_changes_nothing() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = rich_worktree(&g, &r).await;
    write(&wt, "a.txt", "changed\n");
    for bad in [
        "../repo/a.txt",
        "/etc/passwd",
        "sub/../../x",
        "",
        ".git/config",
        "./a.txt",
    ] {
        let err = g
            .discard_changes(&wt, &["a.txt".to_string(), bad.to_string()])
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::Refused { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains("relative"), "{err}");
        assert_eq!(read(&wt, "a.txt"), "changed\n", "nothing discarded");
    }
    g.discard_changes(&wt, &[]).await.unwrap();
}

#[tokio::test]
async fn keep_ref_keeps_commits_and_refs_lists_them() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let (wt, sha) = commit_on_branch(&g, &r, "orch/t-1", "x.txt", "x\n").await;
    g.keep_ref("refs/orch/attempts/t-1/1", &sha).await.unwrap();
    g.keep_ref("refs/orch/attempts/t-10/1", "main")
        .await
        .unwrap();
    g.worktree_remove(&wt).await.unwrap();
    g.delete_branch("orch/t-1").await.unwrap();

    // The commit outlives its branch.
    assert_eq!(g.rev_parse("refs/orch/attempts/t-1/1").await.unwrap(), sha);
    let main = g.rev_parse("main").await.unwrap();
    assert_eq!(
        g.refs("refs/orch/attempts/").await.unwrap(),
        vec![
            ("refs/orch/attempts/t-1/1".to_string(), sha.clone()),
            ("refs/orch/attempts/t-10/1".to_string(), main.clone()),
        ]
    );
    assert_eq!(
        g.refs("refs/orch/attempts/t-1/").await.unwrap(),
        vec![("refs/orch/attempts/t-1/1".to_string(), sha.clone())]
    );
    assert_eq!(g.refs("refs/orch/attempts/t-1").await.unwrap().len(), 2);
    assert!(g.refs("refs/orch/none/").await.unwrap().is_empty());

    // Moving a kept ref.
    g.keep_ref("refs/orch/attempts/t-1/1", &main).await.unwrap();
    assert_eq!(g.rev_parse("refs/orch/attempts/t-1/1").await.unwrap(), main);

    for bad in ["refs/heads/main", "refs/orch/", "-x", "refs/orch/a..b"] {
        assert!(g.keep_ref(bad, &main).await.is_err(), "{bad}");
    }
    assert!(g.keep_ref("refs/orch/x", "no-such-rev").await.is_err());
}

#[tokio::test]
async fn merge_commit_merges_without_a_worktree_or_reports_conflicts() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let main = g.rev_parse("main").await.unwrap();
    // A branch that only adds a file: a clean merge whose tree equals the
    // branch's own when main has not moved.
    git(&r.path, &["checkout", "-q", "-b", "feature"]);
    write(&r.path, "b.txt", "two\n");
    git(&r.path, &["add", "b.txt"]);
    git(&r.path, &["commit", "-q", "-m", "b"]);
    git(&r.path, &["checkout", "-q", "main"]);
    let before_worktrees = g.worktrees().await.unwrap().len();
    let MergeOutcome::Clean { head } = g
        .merge_commit(&main, "feature", "Merge feature")
        .await
        .unwrap()
    else {
        panic!("expected a clean merge");
    };
    assert_eq!(g.worktrees().await.unwrap().len(), before_worktrees);
    assert_eq!(git(&r.path, &["rev-parse", &format!("{head}^1")]), main);
    assert_eq!(
        git(&r.path, &["rev-parse", &format!("{head}^2")]),
        git(&r.path, &["rev-parse", "feature"])
    );
    assert!(g.same_tree(&head, "feature").await.unwrap());
    assert!(!g.same_tree(&head, &main).await.unwrap());
    assert_eq!(
        git(&r.path, &["log", "-1", "--format=%s", &head]),
        "Merge feature"
    );
    // Written in-process, it is a commit git reads like its own.
    assert_eq!(
        git(&r.path, &["log", "-1", "--format=%an <%ae>|%cn|%B", &head]),
        "orch <orch@localhost>|orch|Merge feature"
    );
    git(&r.path, &["fsck", "--strict", "--no-dangling"]);
    // Nothing in the checkout changed and main did not move.
    assert_eq!(g.rev_parse("main").await.unwrap(), main);
    assert!(!r.path.join("b.txt").exists());

    // Two branches that change the same line conflict, and say where.
    git(&r.path, &["checkout", "-q", "-b", "left"]);
    write(&r.path, "a.txt", "left\n");
    git(&r.path, &["commit", "-q", "-am", "left"]);
    git(&r.path, &["checkout", "-q", "-b", "right", "main"]);
    write(&r.path, "a.txt", "right\n");
    git(&r.path, &["commit", "-q", "-am", "right"]);
    git(&r.path, &["checkout", "-q", "main"]);
    match g
        .merge_commit("left", "right", "Merge right")
        .await
        .unwrap()
    {
        MergeOutcome::Conflict { files, .. } => assert_eq!(files, ["a.txt"]),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The in-process reads (gix) answer exactly as the git CLI does, also for
/// refs git itself moved a moment ago and for packed refs.
#[tokio::test]
async fn in_process_reads_agree_with_the_git_cli() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let first = git(&r.path, &["rev-parse", "HEAD"]);
    git(&r.path, &["checkout", "-q", "-b", "side"]);
    write(&r.path, "b.txt", "two\n");
    git(&r.path, &["add", "b.txt"]);
    git(&r.path, &["commit", "-q", "-m", "side"]);
    let side = git(&r.path, &["rev-parse", "HEAD"]);
    git(&r.path, &["checkout", "-q", "main"]);
    write(&r.path, "c.txt", "three\n");
    git(&r.path, &["add", "c.txt"]);
    git(&r.path, &["commit", "-q", "-m", "main moves"]);
    let main = git(&r.path, &["rev-parse", "HEAD"]);

    assert_eq!(g.rev_parse("main").await.unwrap(), main);
    assert_eq!(g.rev_parse("side").await.unwrap(), side);
    assert!(g.is_ancestor(&first, &side).await.unwrap());
    assert!(g.is_ancestor(&first, &main).await.unwrap());
    assert!(!g.is_ancestor(&side, &main).await.unwrap());
    assert!(!g.is_ancestor(&main, &first).await.unwrap());
    assert!(g.is_ancestor(&main, &main).await.unwrap());
    assert!(!g.same_tree(&main, &side).await.unwrap());
    assert!(g.same_tree("main", &main).await.unwrap());

    // git moves a ref, then packs every ref: the next read sees both.
    git(&r.path, &["update-ref", "refs/heads/main", &side]);
    assert_eq!(g.rev_parse("main").await.unwrap(), side);
    git(&r.path, &["pack-refs", "--all"]);
    assert_eq!(g.rev_parse("main").await.unwrap(), side);
    assert!(g.rev_parse("no-such-branch").await.is_err());

    // orch's own refs, written in process, are where git reads them.
    g.keep_ref("refs/orch/attempts/t1/1", &main).await.unwrap();
    assert_eq!(
        git(&r.path, &["rev-parse", "refs/orch/attempts/t1/1"]),
        main
    );
    g.keep_ref("refs/orch/attempts/t1/1", &side).await.unwrap();
    assert_eq!(
        git(&r.path, &["rev-parse", "refs/orch/attempts/t1/1"]),
        side
    );
    let listed = g.refs("refs/orch/attempts/").await.unwrap();
    assert_eq!(listed, vec![("refs/orch/attempts/t1/1".to_string(), side)]);
}

#[tokio::test]
async fn reset_worktree_goes_back_to_a_commit_and_drops_untracked_files() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let (wt, first) = commit_on_branch(&g, &r, "orch/r", "a.txt", "two\n").await;
    write(&wt, "a.txt", "three\n");
    let second = g.commit_all(&wt, "second").await.unwrap().unwrap();
    write(&wt, "a.txt", "uncommitted\n");
    write(&wt, "new/loose.txt", "untracked\n");

    g.reset_worktree(&wt, &first).await.unwrap();
    assert_eq!(g.head(&wt).await.unwrap(), first);
    assert_eq!(g.rev_parse("orch/r").await.unwrap(), first);
    assert_eq!(read(&wt, "a.txt"), "two\n");
    assert!(!wt.join("new").exists());
    // The later commit is still there to go forward to.
    g.reset_worktree(&wt, &second).await.unwrap();
    assert_eq!(read(&wt, "a.txt"), "three\n");
    assert!(g.reset_worktree(&wt, "--hard").await.is_err());
}

/// Removing a worktree drops its directory and git's record of it, found
/// through git's own records: a `.git` file rewritten by whatever ran in the
/// worktree cannot make orch delete something else.
#[tokio::test]
async fn removing_a_worktree_trusts_only_gits_records() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let wt = r.wt_root.join("t");
    g.worktree_add(&wt, "orch/t", "main").await.unwrap();
    assert_eq!(git(&wt, &["symbolic-ref", "HEAD"]), "refs/heads/orch/t");
    let victim = r.wt_root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    write(&victim, "keep.txt", "x");
    std::fs::write(wt.join(".git"), format!("gitdir: {}\n", victim.display())).unwrap();

    g.worktree_remove(&wt).await.unwrap();
    assert!(!wt.exists());
    assert_eq!(read(&victim, "keep.txt"), "x");
    assert_eq!(
        g.worktrees().await.unwrap().len(),
        1,
        "only the main worktree"
    );
    // No longer checked out anywhere, so the branch can go.
    g.delete_branch("orch/t").await.unwrap();
    assert!(!g.branch_exists("orch/t").await.unwrap());
}

#[tokio::test]
async fn set_branch_creates_and_moves_a_branch_but_not_a_checked_out_one() {
    let r = repo();
    let g = Git::open(&r.path).await.unwrap();
    let base = g.rev_parse("main").await.unwrap();
    let (wt, sha) = commit_on_branch(&g, &r, "orch/t-c2", "b.txt", "two\n").await;
    g.set_branch("orch/t", &sha).await.unwrap();
    assert_eq!(g.rev_parse("orch/t").await.unwrap(), sha);
    g.set_branch("orch/t", &base).await.unwrap();
    assert_eq!(g.rev_parse("orch/t").await.unwrap(), base);
    assert!(
        g.set_branch("orch/t-c2", &base).await.is_err(),
        "checked out in {wt:?}"
    );
    assert!(g.set_branch("-x", &base).await.is_err());
}

/// A parked worktree comes back exactly as a fresh one would: the new
/// branch at the new base, local edits undone, untracked and ignored files
/// gone, a rewritten `.git` file repaired. One with a merge under way is
/// never parked, and draining the pool leaves only the main worktree.
#[tokio::test]
async fn parked_worktrees_come_back_as_fresh_ones() {
    let r = repo();
    write(&r.path, ".gitignore", "*.log\n");
    git(&r.path, &["add", ".gitignore"]);
    git(&r.path, &["commit", "-q", "-m", "ignore logs"]);
    let g = Git::open(&r.path).await.unwrap();
    g.set_worktree_pool(2);
    let first = r.wt_root.join("t1");
    g.worktree_add(&first, "orch/t1", "main").await.unwrap();
    write(&first, "a.txt", "edited\n");
    write(&first, "new.txt", "untracked\n");
    write(&first, "run.log", "ignored\n");
    let (_, landed) = commit_on_branch(&g, &r, "orch/other", "b.txt", "b\n").await;
    std::fs::write(first.join(".git"), "gitdir: /nowhere\n").unwrap();

    g.worktree_remove(&first).await.unwrap();
    assert!(!first.exists());
    // Parked: its branch is free to delete.
    g.delete_branch("orch/t1").await.unwrap();

    let second = r.wt_root.join("t2");
    g.worktree_add(&second, "orch/t2", &landed).await.unwrap();
    assert_eq!(
        git(&second, &["symbolic-ref", "HEAD"]),
        "refs/heads/orch/t2"
    );
    assert_eq!(g.head(&second).await.unwrap(), landed);
    assert_eq!(read(&second, "a.txt"), "one\n");
    assert_eq!(read(&second, "b.txt"), "b\n");
    assert!(!second.join("new.txt").exists() && !second.join("run.log").exists());
    assert_eq!(git(&second, &["status", "--porcelain", "--ignored"]), "");
    let listed: Vec<PathBuf> = g
        .worktrees()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert!(
        listed.contains(&second.canonicalize().unwrap()),
        "{listed:?}"
    );

    // A detached one reuses the pool too.
    g.worktree_remove(&second).await.unwrap();
    let det = r.wt_root.join("merge-1");
    g.worktree_add_detached(&det, "main").await.unwrap();
    assert_eq!(
        g.head(&det).await.unwrap(),
        g.rev_parse("main").await.unwrap()
    );
    assert_eq!(git(&det, &["rev-parse", "--abbrev-ref", "HEAD"]), "HEAD");

    // A merge under way: removed, not parked.
    write(&det, "b.txt", "mine\n");
    git(&det, &["add", "b.txt"]);
    git(
        &det,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "mine",
        ],
    );
    let _ = std::process::Command::new("git")
        .args(["-C", det.to_str().unwrap(), "merge", "-q", "orch/other"])
        .output();
    g.worktree_remove(&det).await.unwrap();
    g.drain_worktree_pool().await.unwrap();
    // Left: the main worktree and orch/other's.
    assert_eq!(g.worktrees().await.unwrap().len(), 2);
    assert!(!det.exists());
    let pool = r.wt_root.join(".pool");
    assert!(!pool.exists() || std::fs::read_dir(&pool).unwrap().next().is_none());
}

/// The in-process `--stat` reads exactly as git's own for text changes:
/// modified, added, deleted and nested files.
#[tokio::test]
async fn diff_stat_matches_the_git_cli() {
    let r = repo();
    write(&r.path, "gone.txt", "x\ny\n");
    write(&r.path, "keep.txt", "1\n2\n3\n");
    git(&r.path, &["add", "-A"]);
    git(&r.path, &["commit", "-q", "-m", "base"]);
    let g = Git::open(&r.path).await.unwrap();
    let base = g.rev_parse("main").await.unwrap();
    let wt = r.wt_root.join("s");
    g.worktree_add(&wt, "orch/s", "main").await.unwrap();
    std::fs::remove_file(wt.join("gone.txt")).unwrap();
    write(&wt, "keep.txt", "1\ntwo\n3\n4\n");
    write(&wt, "src/deep/new.py", &"line\n".repeat(12));
    write(&wt, "a.txt", "one\nmore\n");
    let head = g.commit_all(&wt, "changes").await.unwrap().unwrap();
    let ours = g.diff_stat(&base, &head).await.unwrap();
    let theirs = git(&r.path, &["diff", "--stat", &base, &head]);
    // (The test helper trims the first line's leading space.)
    assert_eq!(ours.trim(), theirs, "\nours:\n{ours}\ngit:\n{theirs}");
    assert_eq!(g.diff_stat(&base, &base).await.unwrap(), "");
}
