//! The per-repository worktree lock. Git does not serialize its own
//! worktree administration: `worktree add`, `remove`, `prune` and `list`
//! run at the same time read each other's half-written
//! `.git/worktrees/<name>/` records and fail ("failed to read
//! .git/worktrees/<x>/commondir", "could not open …/locked"), about 2% of
//! commands with 8 parallel loops. Every such operation orch makes takes
//! this lock first:
//!
//! - in the process, one async mutex per repository, found in a registry
//!   keyed by the canonical git common dir, so every `Git` value for the
//!   repository (workers, baselines, the merge queue) shares it whatever
//!   path it was opened through;
//! - across processes, an OS file lock (flock) on
//!   `<git common dir>/orch-worktrees.lock`, since two `orch run` processes
//!   for different projects may drive the same repository. The kernel drops
//!   it when the holder dies, so it can never be left stale. Where the file
//!   cannot be created or locked (read-only or exotic filesystems) orch
//!   logs it and relies on the in-process lock alone.
//!
//! The lock is not reentrant: public methods take it once and call
//! `*_locked` helpers that assume it is held.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

use crate::GitError;

/// Name of the cross-process lock file inside the git common dir.
pub(crate) const LOCK_FILE: &str = "orch-worktrees.lock";

/// How long to wait for another process's worktree operation. A locked
/// operation is at most a few git commands with their own timeouts.
const CROSS_PROCESS_WAIT: Duration = Duration::from_secs(40 * 60);

/// The worktree lock of one repository.
#[derive(Debug)]
pub(crate) struct RepoLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// The cross-process lock file; None for a probe that never locks.
    file: Option<PathBuf>,
}

/// Held while a worktree operation runs; dropping it releases both locks.
#[derive(Debug)]
pub(crate) struct WorktreeGuard {
    _file: Option<File>,
    _guard: OwnedMutexGuard<()>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl RepoLock {
    /// The lock shared by every `Git` of the repository whose (canonical)
    /// common dir is `common_dir`.
    pub(crate) fn for_common_dir(common_dir: &Path) -> RepoLock {
        let key = common_dir
            .canonicalize()
            .unwrap_or_else(|_| common_dir.to_path_buf());
        // A panic while holding this std mutex cannot leave the map
        // inconsistent (one insert), so a poisoned lock is still usable.
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        let mutex = map.entry(key.clone()).or_default().clone();
        RepoLock {
            mutex,
            file: Some(key.join(LOCK_FILE)),
        }
    }

    /// A lock shared with nobody, for the probe `Git::open` uses before it
    /// knows the repository.
    pub(crate) fn unshared() -> RepoLock {
        RepoLock {
            mutex: Arc::default(),
            file: None,
        }
    }

    /// Waits for the repository's worktree lock (in-process first, then
    /// across processes).
    pub(crate) async fn acquire(&self) -> Result<WorktreeGuard, GitError> {
        let guard = self.mutex.clone().lock_owned().await;
        let file = match &self.file {
            Some(path) => lock_file(path).await?,
            None => None,
        };
        Ok(WorktreeGuard {
            _file: file,
            _guard: guard,
        })
    }
}

/// Takes the flock on `path`, polling so a cancelled caller never leaves a
/// thread blocked in the kernel. None when the filesystem cannot do it.
async fn lock_file(path: &Path) -> Result<Option<File>, GitError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(
                path = %path.display(),
                "cannot open the cross-process worktree lock ({e}); serializing within this \
                 process only"
            );
            return Ok(None);
        }
    };
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::debug!(
                    path = %path.display(),
                    "cannot flock the cross-process worktree lock ({e}); serializing within \
                     this process only"
                );
                return Ok(None);
            }
        }
        if start.elapsed() > CROSS_PROCESS_WAIT {
            return Err(GitError::Io {
                action: "timed out waiting for another process's git worktree operation \
                         (it holds the lock file); find it with `fuser -v` on the file and stop \
                         it if it hangs",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mutex_per_common_dir_whatever_the_spelling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let a = RepoLock::for_common_dir(dir.path());
        let b = RepoLock::for_common_dir(&dir.path().join("sub/.."));
        let c = RepoLock::for_common_dir(&dir.path().join("sub"));
        assert!(Arc::ptr_eq(&a.mutex, &b.mutex));
        assert!(!Arc::ptr_eq(&a.mutex, &c.mutex));
    }

    #[tokio::test]
    async fn the_file_lock_excludes_another_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let held = lock_file(&path).await.unwrap().unwrap();
        // A second open file description stands for another process.
        let other = File::options().write(true).open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
