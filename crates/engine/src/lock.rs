//! One runner per project. An OS file lock (flock) on
//! `locks/<project>.lock` holds while the runner lives; the kernel drops it
//! when the process dies, so a lock left by a crashed runner is simply taken
//! over. The file also records the holder's PID for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("project `{project}` is already being run by process {pid} (lock {path}); wait for it to finish or stop it, then try again")]
    Busy {
        project: String,
        pid: String,
        path: PathBuf,
    },
    #[error("cannot use lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
    path: PathBuf,
    /// PID found in a lock file whose process had died, if any.
    pub took_over_from: Option<String>,
}

impl ProjectLock {
    pub fn acquire(path: &Path, project: &str) -> Result<ProjectLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous = previous.trim().to_string();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Busy {
                    project: project.to_string(),
                    pid: if previous.is_empty() {
                        "unknown".into()
                    } else {
                        previous
                    },
                    path: path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        let took_over_from = (!previous.is_empty() && previous != std::process::id().to_string())
            .then_some(previous);
        Ok(ProjectLock {
            file,
            path: path.to_path_buf(),
            took_over_from,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/p.lock");
        let first = ProjectLock::acquire(&path, "p").unwrap();
        let err = ProjectLock::acquire(&path, "p").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("already being run"), "{msg}");
        drop(first);
        ProjectLock::acquire(&path, "p").unwrap();
    }

    #[test]
    fn stale_lock_from_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lock");
        std::fs::write(&path, "999999").unwrap();
        let lock = ProjectLock::acquire(&path, "p").unwrap();
        assert_eq!(lock.took_over_from.as_deref(), Some("999999"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
    }
}
