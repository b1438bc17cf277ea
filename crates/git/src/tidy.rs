//! Two questions about a worktree that the git CLI would answer with a
//! process, answered in-process when the answer is certain:
//! - whether it holds nothing but what its index tracks (then `git clean
//!   -ffdx` has nothing to remove, and a parked worktree is handed out
//!   without running it);
//! - whether its tracked files are exactly as committed (then `git status
//!   --untracked-files=no` would print nothing, and your checkout of main
//!   may be fast-forwarded without asking it).
//!
//! Both read the directory and the index (and, for a file whose stat data
//! does not settle it, the file's bytes, as git does). Anything they are
//! not sure about (a gitlink, a sparse or split index, an odd entry, bytes
//! that attributes could convert, a very large tree) answers "not sure",
//! and the caller asks the CLI.

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

/// True only when nothing is staged and every tracked file is as the index
/// recorded: its stat data says so and the index was written after the file
/// last changed, or else its bytes are the blob's (see `SameBytes`). What
/// `git status --untracked-files=no` would call clean. Anything else,
/// dirty or unsure, is false.
pub(crate) fn tracked_unchanged(worktree: &Path) -> bool {
    let Some(repo) = crate::commit::open(worktree) else {
        return false;
    };
    if !crate::commit::staged_in(&repo).is_some_and(|s| s.is_empty()) {
        return false;
    }
    unstaged_unchanged(&repo).unwrap_or(false)
}

fn unstaged_unchanged(repo: &gix::Repository) -> Option<bool> {
    use gix::index::entry::{Flags, Mode};
    use std::os::unix::fs::MetadataExt;
    let index = repo.open_index().ok()?;
    if index.is_sparse() || index.link().is_some() {
        return None;
    }
    let written = std::fs::metadata(index.path()).ok()?;
    let written = (written.mtime(), written.mtime_nsec());
    let top = repo.workdir()?.to_path_buf();
    let mut same_bytes = SameBytes::default();
    for e in index.entries() {
        let plain = e.stage_raw() == 0
            && !e
                .flags
                .intersects(Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE | Flags::ASSUME_VALID);
        if !plain {
            return None;
        }
        let rel = std::str::from_utf8(e.path(&index)).ok()?;
        let m = std::fs::symlink_metadata(top.join(rel)).ok()?;
        let kind_ok = match e.mode {
            Mode::FILE => m.is_file() && m.mode() & 0o111 == 0,
            Mode::FILE_EXECUTABLE => m.is_file() && m.mode() & 0o111 != 0,
            Mode::SYMLINK => m.file_type().is_symlink(),
            _ => return None,
        };
        let st = &e.stat;
        // The index keeps 32 bits of each field, as git compares them.
        if !kind_ok {
            return None;
        }
        let same = st.size == m.size() as u32
            && st.mtime.secs == m.mtime() as u32
            && st.mtime.nsecs == m.mtime_nsec() as u32
            && st.ctime.secs == m.ctime() as u32
            && st.ctime.nsecs == m.ctime_nsec() as u32
            && st.ino == m.ino() as u32
            && st.uid == m.uid()
            && st.gid == m.gid();
        let racy = (i64::from(st.mtime.secs), i64::from(st.mtime.nsecs)) >= written;
        if (!same || racy)
            && !same_bytes.proves_unchanged(repo, &index, e.mode, &top.join(rel), m.size(), e.id)
        {
            return None;
        }
    }
    Some(true)
}

/// Most bytes of tracked files read to settle git's doubt about files whose
/// stat data does not prove them unchanged.
const MAX_READ: u64 = 1 << 20;

/// Compares files with their blobs, as git does for racily clean entries
/// (a checkout writes files and index within one tick of the file system's
/// clock, and git then smudges or doubts them): equal bytes mean unchanged,
/// but only where nothing could convert them on the way into git (no
/// attributes anywhere, no `core.autocrlf`).
#[derive(Default)]
struct SameBytes {
    plain: Option<bool>,
    read: u64,
}

impl SameBytes {
    /// True when the file at `path` (of `size` bytes) is exactly blob
    /// `id`; false when it differs or that cannot be told here (the caller
    /// then asks git).
    fn proves_unchanged(
        &mut self,
        repo: &gix::Repository,
        index: &gix::index::File,
        mode: gix::index::entry::Mode,
        path: &Path,
        size: u64,
        id: gix::ObjectId,
    ) -> bool {
        use gix::index::entry::Mode;
        if mode != Mode::FILE && mode != Mode::FILE_EXECUTABLE {
            return false;
        }
        if !*self
            .plain
            .get_or_insert_with(|| no_conversions(repo, index))
        {
            return false;
        }
        self.read += size;
        if self.read > MAX_READ {
            return false;
        }
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        gix::objs::compute_hash(repo.object_hash(), gix::objs::Kind::Blob, &bytes)
            .is_ok_and(|hash| hash == id)
    }
}

/// True when no attribute or line-ending setting can make git store a
/// file's bytes other than as they are.
fn no_conversions(repo: &gix::Repository, index: &gix::index::File) -> bool {
    let config = repo.config_snapshot();
    let unset = |key: &str| config.string(key).is_none();
    let autocrlf_off = config
        .boolean("core.autocrlf")
        .map_or(unset("core.autocrlf"), |on| !on);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| home.map(|h| h.join(".config")));
    let attribute_files = [
        Some(repo.common_dir().join("info/attributes")),
        Some(std::path::PathBuf::from("/etc/gitattributes")),
        xdg.map(|x| x.join("git/attributes")),
    ];
    autocrlf_off
        && unset("core.attributesFile")
        && unset("core.eol")
        && attribute_files.iter().flatten().all(|f| !f.exists())
        && !index.entries().iter().any(|e| {
            let path = e.path(index);
            path == ".gitattributes" || path.ends_with(b"/.gitattributes")
        })
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
    use orch_testkit::repo::git;
    use std::process::Command;

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
            ("a nested repo", |r| {
                git(r, &["init", "-q", "src/inner"]);
            }),
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

    fn status_is_clean(dir: &Path) -> bool {
        let out = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(dir)
            .output()
            .unwrap();
        out.stdout.is_empty()
    }

    /// A fresh commit's checkout, after the index had time to be newer
    /// than every file (what a checkout a moment ago looks like).
    fn settled_repo() -> tempfile::TempDir {
        let d = repo();
        std::thread::sleep(std::time::Duration::from_millis(20));
        git(d.path(), &["update-index", "--refresh", "-q"]);
        git(d.path(), &["reset", "-q", "--hard"]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        git(d.path(), &["update-index", "--really-refresh", "-q"]);
        d
    }

    #[test]
    fn unchanged_only_when_git_status_agrees_it_is_clean() {
        type Change = fn(&Path);
        let dirty: Vec<(&str, Change)> = vec![
            ("same size, new content", |r| {
                std::fs::write(r.join("README.md"), "y\n").unwrap()
            }),
            ("deleted", |r| {
                std::fs::remove_file(r.join("src/deep/a.rs")).unwrap()
            }),
            ("made executable", |r| {
                use std::os::unix::fs::PermissionsExt;
                let p = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(r.join("README.md"), p).unwrap()
            }),
            ("staged", |r| {
                std::fs::write(r.join("README.md"), "staged\n").unwrap();
                git(r, &["add", "README.md"]);
            }),
            ("symlink retargeted", |r| {
                std::fs::remove_file(r.join("link")).unwrap();
                std::os::unix::fs::symlink(".gitignore", r.join("link")).unwrap();
            }),
            ("file became a symlink", |r| {
                std::fs::remove_file(r.join("README.md")).unwrap();
                std::os::unix::fs::symlink("src", r.join("README.md")).unwrap();
            }),
        ];
        for (name, change) in dirty {
            let d = settled_repo();
            assert!(tracked_unchanged(d.path()), "{name}: settled checkout");
            change(d.path());
            assert!(!tracked_unchanged(d.path()), "{name}");
            assert!(!status_is_clean(d.path()), "{name}: git sees it");
        }
        // Untracked and ignored files do not count, as for git status.
        let d = settled_repo();
        std::fs::write(d.path().join("new.txt"), "n").unwrap();
        std::fs::write(d.path().join("x.log"), "l").unwrap();
        assert!(tracked_unchanged(d.path()));
        // Touched but equal: git (which reads it) says clean, and so does
        // orch, which reads it too.
        let d = settled_repo();
        std::fs::write(d.path().join("README.md"), "x\n").unwrap();
        assert!(tracked_unchanged(d.path()));
        assert!(status_is_clean(d.path()));
        // A fresh checkout, racily clean in git's eyes: clean as well.
        let d = repo();
        git(d.path(), &["reset", "-q", "--hard"]);
        assert!(tracked_unchanged(d.path()));
        // Where attributes could convert the bytes, orch leaves it to git.
        let d = settled_repo();
        std::fs::write(d.path().join(".gitattributes"), "*.md text\n").unwrap();
        git(d.path(), &["add", ".gitattributes"]);
        git(d.path(), &["commit", "-q", "-m", "attributes"]);
        std::fs::write(d.path().join("README.md"), "x\n").unwrap();
        assert!(!tracked_unchanged(d.path()));
        assert!(status_is_clean(d.path()));
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
        let id = git(sub.path(), &["rev-parse", "HEAD"]);
        let info = format!("160000,{id},vendor");
        git(d.path(), &["update-index", "--add", "--cacheinfo", &info]);
        assert!(!nothing_untracked(d.path()));
    }
}
