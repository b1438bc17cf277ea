//! Whether a worktree holds nothing but what its index tracks: then `git
//! clean -ffdx` has nothing to remove and a parked worktree can be handed
//! out without running it. A read of the directory and the index; anything
//! this walk is not sure about (a gitlink, a sparse or split index, an odd
//! entry, a very large tree) answers "not sure", and the caller cleans.

use std::collections::HashSet;
use std::path::Path;

/// Most directory entries walked before giving up (the caller then runs
/// `git clean`, which costs about what this walk would).
const MAX_ENTRIES: usize = 20_000;

/// True only when every file, symlink and directory under `worktree`
/// (its `.git` file aside) is a tracked path or a directory on the way to
/// one.
pub(crate) fn nothing_untracked(worktree: &Path) -> bool {
    let Some(tracked) = tracked_paths(worktree) else {
        return false;
    };
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    for path in &tracked {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|b| *b == b'/') {
            end += i;
            dirs.insert(&path[..end]);
            end += 1;
        }
    }
    let files: HashSet<&[u8]> = tracked.iter().map(Vec::as_slice).collect();
    let mut budget = MAX_ENTRIES;
    walk(worktree, &mut Vec::new(), &files, &dirs, &mut budget).unwrap_or(false)
}

/// The index's paths, when every entry is a plain stage-0 file or symlink.
fn tracked_paths(worktree: &Path) -> Option<Vec<Vec<u8>>> {
    use gix::index::entry::{Flags, Mode};
    let repo = gix::open(worktree).ok()?;
    let index = repo.open_index().ok()?;
    if index.is_sparse() || index.link().is_some() {
        return None;
    }
    let mut paths = Vec::with_capacity(index.entries().len());
    for e in index.entries() {
        let plain = e.stage_raw() == 0
            && !e
                .flags
                .intersects(Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE)
            && matches!(e.mode, Mode::FILE | Mode::FILE_EXECUTABLE | Mode::SYMLINK);
        if !plain {
            return None;
        }
        paths.push(e.path(&index).to_vec());
    }
    Some(paths)
}

/// Walks `dir` (at `rel` inside the worktree); Some(false) at the first
/// entry the index does not account for, None when unsure.
fn walk(
    dir: &Path,
    rel: &mut Vec<u8>,
    files: &HashSet<&[u8]>,
    dirs: &HashSet<&[u8]>,
    budget: &mut usize,
) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    for entry in std::fs::read_dir(dir).ok()? {
        *budget = budget.checked_sub(1)?;
        let entry = entry.ok()?;
        let name = entry.file_name();
        let top = rel.is_empty();
        if top && name.as_bytes() == b".git" {
            continue;
        }
        let len = rel.len();
        if !top {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        // file_type does not follow symlinks: a link to a directory is a
        // link, which the index must track as one.
        let kind = entry.file_type().ok()?;
        let accounted = if kind.is_dir() {
            dirs.contains(rel.as_slice()) && walk(&entry.path(), rel, files, dirs, budget)?
        } else {
            (kind.is_file() || kind.is_symlink()) && files.contains(rel.as_slice())
        };
        rel.truncate(len);
        if !accounted {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    /// What `git clean -ndx` would remove: empty exactly when clean.
    fn clean_would_remove(dir: &Path) -> bool {
        let out = Command::new("git")
            .args(["clean", "-ffdxn"])
            .current_dir(dir)
            .output()
            .unwrap();
        !out.stdout.is_empty()
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        git(r, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(r.join("src/deep")).unwrap();
        std::fs::write(r.join("README.md"), "x\n").unwrap();
        std::fs::write(r.join("src/deep/a.rs"), "a\n").unwrap();
        std::fs::write(r.join(".gitignore"), "target/\n*.log\n").unwrap();
        std::os::unix::fs::symlink("README.md", r.join("link")).unwrap();
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "init"]);
        d
    }

    #[test]
    fn agrees_with_git_clean_on_what_is_left_over() {
        type Mess = fn(&Path);
        let cases: Vec<(&str, Mess)> = vec![
            ("nothing", |_| {}),
            ("an untracked file", |r| {
                std::fs::write(r.join("new.txt"), "n").unwrap()
            }),
            ("an ignored file", |r| {
                std::fs::write(r.join("x.log"), "l").unwrap()
            }),
            ("an ignored dir", |r| {
                std::fs::create_dir_all(r.join("target/debug")).unwrap()
            }),
            ("an empty dir", |r| {
                std::fs::create_dir(r.join("empty")).unwrap()
            }),
            ("a nested file", |r| {
                std::fs::write(r.join("src/deep/b.rs"), "b").unwrap()
            }),
            ("a nested repo", |r| git(r, &["init", "-q", "src/inner"])),
            ("a dangling symlink", |r| {
                std::os::unix::fs::symlink("nowhere", r.join("src/dangling")).unwrap()
            }),
        ];
        for (name, mess) in cases {
            let d = repo();
            mess(d.path());
            assert_eq!(
                nothing_untracked(d.path()),
                !clean_would_remove(d.path()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_deleted_tracked_file_is_no_leftover_but_a_gitlink_means_unsure() {
        let d = repo();
        // A missing tracked file is checkout's business, not clean's.
        std::fs::remove_file(d.path().join("README.md")).unwrap();
        assert!(nothing_untracked(d.path()));
        let d = repo();
        let sub = tempfile::tempdir().unwrap();
        git(sub.path(), &["init", "-q"]);
        git(sub.path(), &["commit", "-q", "--allow-empty", "-m", "s"]);
        let id = String::from_utf8(
            Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(sub.path())
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let info = format!("160000,{},vendor", id.trim());
        git(d.path(), &["update-index", "--add", "--cacheinfo", &info]);
        assert!(!nothing_untracked(d.path()));
    }
}
