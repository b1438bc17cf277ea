//! A repository's beginning and end for `orch new`: a fresh repository
//! with its first commit, and an archive of a finished branch's tree
//! (`git archive`, written to a temporary name and renamed, so a reader
//! never sees half an archive).

use crate::lock::RepoLock;
use crate::{checked, path_arg, Git, GitError, IDENTITY};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `git archive` writes the whole tree; give it more than a quick command.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Archive formats `git archive` writes without configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarGz,
    Zip,
}

impl ArchiveFormat {
    /// The `--format` value, which is also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::Zip => "zip",
        }
    }
}

impl Git {
    /// Makes `dir` (an existing directory) a repository with `branch`
    /// checked out and commits everything in it as orch, with `message`:
    /// the first commit of a new project. Returns the opened repository.
    pub async fn init_with_commit(
        dir: &Path,
        branch: &str,
        message: &str,
    ) -> Result<Git, GitError> {
        checked("branch", branch)?;
        let probe = Git {
            repo: dir.to_path_buf(),
            lock: Arc::new(RepoLock::unshared()),
            reader: Arc::default(),
            pool: Arc::default(),
            prepared: Arc::default(),
        };
        let initial = format!("--initial-branch={branch}");
        probe.ok(dir, &["init", "--quiet", &initial]).await?;
        probe.ok(dir, &["add", "--all", "--", "."]).await?;
        let mut commit = IDENTITY.to_vec();
        commit.extend([
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
        ]);
        probe.ok(dir, &commit).await?;
        Git::open(dir).await
    }

    /// Writes the tree of `rev` to `dest` in `format` (`git archive`),
    /// through a temporary file beside it that is renamed into place.
    /// Returns the archive's size in bytes.
    pub async fn archive(
        &self,
        rev: &str,
        format: ArchiveFormat,
        dest: &Path,
    ) -> Result<u64, GitError> {
        checked("revision", rev)?;
        let io = |action: &'static str, source: std::io::Error| GitError::Io {
            action,
            path: dest.to_path_buf(),
            source,
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let args = [
            "archive",
            "--format",
            format.as_str(),
            "-o",
            &path_arg(&tmp),
            rev,
        ];
        let out = self
            .raw(&self.repo, &args, ARCHIVE_TIMEOUT, 64 * 1024)
            .await?;
        if !out.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.command_error(&self.repo, &args, &out));
        }
        let bytes = std::fs::metadata(&tmp)
            .map_err(|e| io("cannot read the archive written for", e))?
            .len();
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("cannot move the archive into place at", e)
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_new_repository_has_its_first_commit_and_archives_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("todo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("REQUIREMENTS.md"), "# A todo app\n").unwrap();
        let git = Git::init_with_commit(&repo, "main", "Requirements")
            .await
            .unwrap();
        assert_eq!(git.default_branch().await.unwrap(), "main");
        let head = git.rev_parse("main").await.unwrap();
        assert_eq!(head.len(), 40);

        let dest = dir.path().join("todo.tar.gz");
        let bytes = git
            .archive("main", ArchiveFormat::TarGz, &dest)
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), bytes);
        let listing = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&dest)
            .output()
            .unwrap();
        assert!(listing.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "REQUIREMENTS.md\n"
        );
        // Nothing but the archive is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");

        let err = git
            .archive("nope", ArchiveFormat::Zip, &dir.path().join("x.zip"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("archive"), "{err}");
        assert!(!dir.path().join("x.zip").exists());
    }

    #[tokio::test]
    async fn a_branch_name_that_is_an_option_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Git::init_with_commit(dir.path(), "--bare", "m")
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::InvalidName { .. }), "{err}");
        assert!(!dir.path().join(".git").exists());
    }
}
