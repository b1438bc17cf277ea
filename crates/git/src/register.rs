//! Registering a new linked worktree without a git process: what `git
//! worktree add --no-checkout` writes, and nothing else (the files are then
//! written by `git reset --hard`, outside the worktree lock). git's own add
//! reads every other worktree's record while it holds the lock orch serializes
//! worktree administration with, so with 64 workers starting at once the
//! adds alone took more than a model's answer (about 10 ms each, growing
//! with the number of worktrees); these few file writes take well under
//! one.
//!
//! The layout is git's documented one (gitrepository-layout,
//! git-worktree): `<common dir>/worktrees/<name>/` holding `gitdir` (the
//! worktree's `.git` file, absolute), `commondir` (`../..`) and `HEAD`,
//! plus a `.git` file in the worktree naming the record. The record is
//! marked `locked` while it is written, as git marks it, so a `git worktree
//! prune` run meanwhile leaves it alone. Anything unusual (per-worktree
//! configuration, relative worktree paths, a name git would rewrite, a
//! record already naming the directory) is left to the CLI.

use std::path::{Path, PathBuf};

/// What the new worktree's HEAD holds.
pub(crate) enum Head<'a> {
    /// `refs/heads/<branch>`, which must exist.
    Branch(&'a str),
    /// A full commit id.
    Detached(&'a str),
}

impl Head<'_> {
    fn content(&self) -> String {
        match self {
            Head::Branch(b) => format!("ref: refs/heads/{b}\n"),
            Head::Detached(commit) => format!("{commit}\n"),
        }
    }
}

/// Registers `dir` (absolute and normalized, not existing yet) as a linked
/// worktree of the repository whose common dir is `common` and creates it
/// with only its `.git` file. The record's directory on success; None when
/// nothing was written (or what was written was taken back) and the CLI
/// should add it. The caller holds the worktree lock.
pub(crate) fn linked_worktree(common: &Path, dir: &Path, head: &Head<'_>) -> Option<PathBuf> {
    let name = record_name(dir)?;
    let records = common.join("worktrees");
    if dir.exists() || names_dir(&records, dir) {
        return None;
    }
    std::fs::create_dir_all(&records).ok()?;
    let record = new_record_dir(&records, name)?;
    match fill(&record, dir, head) {
        Ok(()) => Some(record),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), "registering the worktree in-process failed: {e}");
            let _ = std::fs::remove_dir_all(&record);
            let _ = std::fs::remove_dir_all(dir);
            None
        }
    }
}

/// Writes the record and the worktree's `.git` file, in git's order.
fn fill(record: &Path, dir: &Path, head: &Head<'_>) -> std::io::Result<()> {
    let locked = record.join("locked");
    std::fs::write(&locked, "initializing\n")?;
    std::fs::create_dir(dir)?;
    crate::pool::relink(record, dir)?;
    std::fs::write(record.join("commondir"), "../..\n")?;
    std::fs::create_dir(record.join("refs"))?;
    write_head(record, head)?;
    std::fs::remove_file(locked)
}

/// Writes the HEAD of the worktree whose record is `record` as git does:
/// into `HEAD.lock`, created exclusively (an error while another writer
/// holds it), then renamed over HEAD, so a reader never sees half of one.
pub(crate) fn write_head(record: &Path, head: &Head<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let staged = record.join("HEAD.lock");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)?;
    let written = file
        .write_all(head.content().as_bytes())
        .and_then(|()| std::fs::rename(&staged, record.join("HEAD")));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// The record's name as git picks it: the directory's file name, when git
/// would take it unchanged (it rewrites names that are not valid in a
/// ref, and those are left to it).
fn record_name(dir: &Path) -> Option<&str> {
    let name = dir.file_name()?.to_str()?;
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok = plain && !name.starts_with('.') && !name.ends_with(".lock") && !name.contains("..");
    ok.then_some(name)
}

/// Creates `records/<name>`, or `<name>1`, `<name>2`, ... when taken, as
/// git does; mkdir is atomic, so no two adds get the same record.
fn new_record_dir(records: &Path, name: &str) -> Option<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = match n {
            0 => records.join(name),
            n => records.join(format!("{name}{n}")),
        };
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Some(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => return None,
        }
    }
    None
}

/// True when some record already names `dir` (left by a crash: git would
/// say "already registered" and want it pruned first).
fn names_dir(records: &Path, dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(records) else {
        return false;
    };
    let ours = dir.join(".git");
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("gitdir"))
            .map(|text| Path::new(text.trim_end_matches('\n')) == ours)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_git_would_rewrite_are_left_to_it() {
        assert_eq!(record_name(Path::new("/w/t-0001")), Some("t-0001"));
        assert_eq!(record_name(Path::new("/w/a.b_c")), Some("a.b_c"));
        for odd in ["/w/.hidden", "/w/x.lock", "/w/a..b", "/w/sp ace", "/w/ü"] {
            assert_eq!(record_name(Path::new(odd)), None, "{odd}");
        }
    }

    #[test]
    fn a_taken_name_gets_a_counter() {
        let tmp = tempfile::tempdir().unwrap();
        let a = new_record_dir(tmp.path(), "w").unwrap();
        let b = new_record_dir(tmp.path(), "w").unwrap();
        let c = new_record_dir(tmp.path(), "w").unwrap();
        assert_eq!(a, tmp.path().join("w"));
        assert_eq!(b, tmp.path().join("w1"));
        assert_eq!(c, tmp.path().join("w2"));
    }
}
