//! Parked worktrees, reused instead of created and deleted for every
//! attempt. A fresh worktree writes every file of the repository and a
//! removal deletes them all again; on a large repository that is most of an
//! attempt's overhead, and even on a small one the file system's inode
//! bookkeeping for the churn shows in profiles. A parked worktree is
//! brought back with `checkout --force` (which rewrites only the files
//! that differ) and `clean -ffdx`, which leaves exactly what a fresh
//! worktree would hold.
//!
//! A worktree is parked only when nothing is half-done in it (no merge,
//! rebase, cherry-pick or lock file in git's record of it), with its HEAD
//! detached so no branch stays checked out. Parking and reuse are a rename
//! plus rewriting git's two pointer files (what `git worktree move` does),
//! both taken from git's own records, never from the worktree's `.git`
//! file, which whatever ran in the worktree may have rewritten. Only the
//! rename happens under the worktree lock; the checkout runs after. The pool is
//! off (size 0) unless the caller sizes it, and the caller drains it when
//! its run ends, so no worktree outlives the run.

use crate::{normalize, path_arg, Git, GitError, CHECKOUT_TIMEOUT};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// git state files that mean an operation is under way in a worktree.
const IN_PROGRESS: [&str; 9] = [
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
    "rebase-merge",
    "rebase-apply",
    "sequencer",
    "index.lock",
    "locked",
];

/// The parked worktrees of one repository.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    parked: Mutex<Vec<Parked>>,
    max: AtomicUsize,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
struct Parked {
    /// Where it is parked now.
    dir: PathBuf,
    /// git's private directory for it (`<common dir>/worktrees/<id>`).
    record: PathBuf,
}

impl Pool {
    fn take(&self, parent: &Path) -> Option<Parked> {
        let mut parked = self.parked.lock().ok()?;
        let i = parked
            .iter()
            .position(|p| p.dir.parent().and_then(Path::parent) == Some(parent))?;
        Some(parked.swap_remove(i))
    }

    fn has_room(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.parked.lock().map(|p| p.len() < max).unwrap_or(false)
    }

    fn put(&self, p: Parked) {
        if let Ok(mut parked) = self.parked.lock() {
            parked.push(p);
        }
    }

    fn take_all(&self) -> Vec<Parked> {
        self.parked
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// Points git's record and the worktree's `.git` file at each other for a
/// worktree now at `dir`.
pub(crate) fn relink(record: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        record.join("gitdir"),
        format!("{}\n", dir.join(".git").display()),
    )?;
    std::fs::write(dir.join(".git"), format!("gitdir: {}\n", record.display()))
}

impl Git {
    /// Lets up to `max` worktrees be parked for reuse (0, the default,
    /// parks none). Call [`Git::drain_worktree_pool`] when the run ends.
    pub fn set_worktree_pool(&self, max: usize) {
        self.pool.max.store(max, Ordering::Relaxed);
    }

    /// Removes every parked worktree.
    pub async fn drain_worktree_pool(&self) -> Result<(), GitError> {
        let parked = self.pool.take_all();
        if parked.is_empty() {
            return Ok(());
        }
        let _lock = self.lock.acquire().await?;
        // All at once: removal is file deletion, which the blocking pool
        // spreads over the CPUs, and the run waits for it before it ends.
        let removals = parked.iter().map(|p| self.worktree_remove_locked(&p.dir));
        futures_util::future::join_all(removals)
            .await
            .into_iter()
            .collect()
    }

    /// Moves a parked worktree to `dir` (which must not exist) and returns
    /// git's record of it; None when none is parked for this directory or
    /// the move failed (the worktree is then removed). The caller holds the
    /// lock, and fills it with [`Git::refresh_parked`] after releasing it.
    pub(crate) fn take_parked_locked(&self, dir: &Path) -> Option<PathBuf> {
        let p = self.pool.take(dir.parent()?)?;
        match std::fs::rename(&p.dir, dir).and_then(|()| relink(&p.record, dir)) {
            Ok(()) => Some(p.record),
            Err(e) => {
                tracing::debug!(dir = %path_arg(dir), "could not reuse a parked worktree: {e}");
                // Its directory (wherever it is) goes; git's record of a
                // directory that is gone is pruned by the next add.
                let _ = std::fs::remove_dir_all(&p.dir);
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::remove_dir_all(&p.record);
                None
            }
        }
    }

    /// Checks a reused worktree out at `commit` (detached, so no other
    /// worktree's record is read, which the lock would have to guard),
    /// removes every untracked and ignored file, then points its HEAD at
    /// `branch` (already at `commit`) when there is one.
    pub(crate) async fn refresh_parked(
        &self,
        dir: &Path,
        commit: &str,
        record: &Path,
        branch: Option<&str>,
    ) -> Result<(), GitError> {
        let checkout = [
            "-c",
            "core.hooksPath=/dev/null",
            "checkout",
            "-q",
            "--force",
            "--detach",
            commit,
        ];
        self.ok_with(dir, &checkout, CHECKOUT_TIMEOUT).await?;
        // Nothing but tracked files left (the usual case: the attempt's
        // changes were committed): nothing for `clean` to remove.
        if !crate::tidy::nothing_untracked(dir) {
            self.ok_with(dir, &["clean", "-ffdxq"], CHECKOUT_TIMEOUT)
                .await?;
        }
        let Some(branch) = branch else {
            return Ok(());
        };
        if self.reader.attach_head(record, branch).is_some() {
            return Ok(());
        }
        self.ok_with(
            dir,
            &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
            CHECKOUT_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// Parks the linked worktree at `dir` instead of removing it, when the
    /// pool has room and nothing is under way in it. True when parked (the
    /// directory is gone from `dir`). The caller holds the lock.
    pub(crate) async fn park_locked(&self, dir: &Path) -> bool {
        if !self.pool.has_room() {
            return false;
        }
        let Some(record) = self.reader.worktree_git_dir(&self.repo, dir) else {
            return false;
        };
        if IN_PROGRESS.iter().any(|f| record.join(f).exists()) {
            return false;
        }
        if self.reader.detach_head(&self.repo, &record).is_none() {
            return false;
        }
        let Some(parent) = dir.parent() else {
            return false;
        };
        let n = self.pool.next.fetch_add(1, Ordering::Relaxed);
        let parked = parent.join(".pool").join(n.to_string());
        let moved = std::fs::create_dir_all(parent.join(".pool"))
            .and_then(|()| std::fs::rename(dir, &parked))
            .and_then(|()| relink(&record, &parked));
        match moved {
            Ok(()) => {
                self.pool.put(Parked {
                    dir: normalize(&parked),
                    record,
                });
                true
            }
            Err(e) => {
                tracing::debug!(dir = %path_arg(dir), "could not park worktree: {e}");
                // Wherever it ended up, git's record still knows it; the
                // caller's removal (or the next recovery) takes it.
                if parked.exists() && !dir.exists() {
                    let _ = std::fs::rename(&parked, dir);
                    let _ = relink(&record, dir);
                }
                false
            }
        }
    }
}
