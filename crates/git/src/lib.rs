//! The user's git repository, driven through the git CLI (never libgit2) via
//! the one process runner: worktrees for tasks, commits of their work,
//! merges, and `advance_branch`, which lands passing work on a branch
//! without ever touching a checkout that holds the user's uncommitted work.

mod ancestry;
mod commit;
mod create;
mod lock;
mod pool;
mod reader;
mod register;
mod stat;
mod tidy;

pub use commit::StagedSnapshot;
pub use create::ArchiveFormat;
use lock::RepoLock;
use orch_process::{ProcessOutput, ProcessSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Timeout for quick git commands.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout for commands that write a whole checkout (worktree add, merge).
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(600);
/// Output kept from commands whose output we parse.
const OUTPUT_LIMIT: usize = 32 * 1024 * 1024;

/// Identity for commits orch makes (the user's config may have none).
const IDENTITY: [&str; 4] = ["-c", "user.name=orch", "-c", "user.email=orch@localhost"];

/// Generated files that never belong in a task's commit.
const EXCLUDED_FROM_COMMITS: [&str; 7] = [
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/node_modules/**",
    ":(exclude,glob)**/target/**",
    ":(exclude,glob)**/.mypy_cache/**",
    ":(exclude,glob)**/.ruff_cache/**",
    ":(exclude,glob)**/*.pyc",
];

/// Environment variables that would make git look at another repository
/// than the one we name with `-C` (set, for instance, inside git hooks).
const REPO_LOCATING_ENV: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
];

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}: {detail}", path.display())]
    NotARepo { path: PathBuf, detail: String },
    #[error("`{args}` failed{}: {stderr}", code.map(|c| format!(" with exit code {c}")).unwrap_or_default())]
    Command {
        args: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error(transparent)]
    Process(#[from] orch_process::ProcessError),
    /// A filesystem operation orch does around git (creating or removing a
    /// worktree directory) failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A revision or branch name that would be read as a command-line option.
    #[error("invalid {what} `{name}`: it must not start with '-'")]
    InvalidName { what: &'static str, name: String },
    /// A path or ref name orch refuses to hand to git, with why.
    #[error("refusing {what} `{name}`: {reason}")]
    Refused {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// `advance_branch` was asked to move a branch to a commit that does not
    /// contain its current tip, which would drop commits from it.
    #[error(
        "refusing to move `{branch}` from {old} to {new}: {new} does not contain {old}, so \
         commits on `{branch}` would be lost; merge `{branch}` into the work first"
    )]
    NotFastForward {
        branch: String,
        old: String,
        new: String,
    },
}

/// Result of `merge_into_worktree` and `merge_commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; `head` is the new merge commit (the worktree's new HEAD).
    Clean { head: String },
    /// The merge conflicted and was aborted; the worktree is as before.
    Conflict { files: Vec<String>, output: String },
}

/// Result of `advance_branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvanceOutcome {
    /// The branch now points at the new commit.
    Advanced,
    /// The branch is checked out at `checkout`, which could not be updated
    /// without touching the user's work; nothing was changed.
    Deferred { checkout: PathBuf, reason: String },
    /// The branch is not at `expected_old` any more (someone else moved it);
    /// nothing was changed.
    Moved { current: String },
}

/// One entry of `git worktree list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeInfo {
    pub path: PathBuf,
    /// Short branch name; None when detached (or bare).
    pub branch: Option<String>,
    /// Commit checked out; empty for a bare repository.
    pub head: String,
}

/// How a just-registered worktree gets its files (see `Git::add_worktree`).
enum Fill {
    /// A parked worktree moved into place: checked out again at `commit`.
    Parked { commit: String, record: PathBuf },
    /// Registered without a checkout: `reset --hard` writes everything.
    Fresh,
}

/// One path `commit_all` would commit, from `worktree_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeChange {
    /// Relative to the worktree's top level, '/'-separated.
    pub path: String,
    /// The path is gone from the worktree (the commit would delete it).
    pub deleted: bool,
}

/// The user's repository. Clones share one worktree lock, and so do
/// separately opened values for the same repository (see `lock`).
#[derive(Debug, Clone)]
pub struct Git {
    repo: PathBuf,
    lock: Arc<RepoLock>,
    /// In-process reads (see `reader`); the CLI answers what it cannot.
    reader: Arc<reader::Reader>,
    /// Worktrees parked for reuse (see `pool`).
    pool: Arc<pool::Pool>,
    /// Trees of adopted snapshots, written before the commit needed them.
    prepared: Arc<commit::PreparedTrees>,
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Rejects names git would parse as options.
fn checked<'a>(what: &'static str, name: &'a str) -> Result<&'a str, GitError> {
    if name.starts_with('-') || name.is_empty() {
        return Err(GitError::InvalidName {
            what,
            name: name.to_string(),
        });
    }
    Ok(name)
}

/// Splits NUL-separated output, dropping empty entries.
/// A full (40 or 64 hex digit) object id.
fn is_full_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit id in `git commit`'s summary line (`[main <id>] message`,
/// `[detached HEAD <id>] …`), when it is a full id.
fn commit_id_from_summary(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?;
    let inside = first.strip_prefix('[')?.split(']').next()?;
    let id = inside.rsplit(' ').next()?;
    is_full_id(id).then(|| id.to_string())
}

fn split_z(s: &str) -> Vec<String> {
    s.split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Absolute, symlink-free form of `p` even when it (or its tail) does not
/// exist yet, so it compares equal to the paths git prints.
fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    if let Ok(c) = abs.canonicalize() {
        return c;
    }
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    while let Some(parent) = cur.parent() {
        if let Some(name) = cur.file_name() {
            tail.push(name.to_os_string());
        }
        if let Ok(mut c) = parent.canonicalize() {
            for name in tail.iter().rev() {
                c.push(name);
            }
            return c;
        }
        cur = parent;
    }
    abs
}

/// What a failed command said, for error messages.
fn failure_text(out: &ProcessOutput) -> String {
    let mut text = out.stderr.trim().to_string();
    if text.is_empty() {
        text = out.stdout.trim().to_string();
    }
    if out.timed_out {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str("timed out and was killed");
    }
    if text.is_empty() {
        text = "no output".to_string();
    }
    text
}

impl Git {
    /// Opens the repository containing `path` (its top level). Fails with an
    /// actionable message when `path` is not in a git work tree or the
    /// repository has no commit yet.
    pub async fn open(path: &Path) -> Result<Git, GitError> {
        if !path.is_dir() {
            return Err(GitError::NotARepo {
                path: path.to_path_buf(),
                detail: "no such directory: point orch at the directory of an existing git \
                         repository"
                    .to_string(),
            });
        }
        let probe = Git {
            repo: path.to_path_buf(),
            lock: Arc::new(RepoLock::unshared()),
            reader: Arc::default(),
            pool: Arc::default(),
            prepared: Arc::default(),
        };
        let mut git = match probe.reader.top_level(path) {
            // The reader opened at the top level serves the repository.
            Some(top) if top == path => Git { repo: top, ..probe },
            Some(top) => Git {
                repo: top,
                reader: Arc::default(),
                ..probe
            },
            None => probe.open_through_cli(path).await?,
        };
        let has_commit = match git.reader.resolve(&git.repo, "HEAD") {
            Some(_) => true,
            None => {
                let args = ["rev-parse", "--verify", "--quiet", "HEAD"];
                let head = git.raw(&git.repo, &args, TIMEOUT, 4096).await?;
                head.success()
            }
        };
        if !has_commit {
            return Err(GitError::NotARepo {
                path: git.repo.clone(),
                detail: "the repository has no commits yet: make a first commit (for example \
                         `git add -A && git commit -m \"initial commit\"`) so orch has a base to \
                         branch from"
                    .to_string(),
            });
        }
        let common = git.git_common_dir().await?;
        git.lock = Arc::new(RepoLock::for_common_dir(&common));
        Ok(git)
    }

    /// The repository at the top level the CLI finds for `path` (`git
    /// rev-parse --show-toplevel`), or git's reason why there is none.
    async fn open_through_cli(self, path: &Path) -> Result<Git, GitError> {
        let args = ["rev-parse", "--show-toplevel"];
        let out = self.raw(path, &args, TIMEOUT, OUTPUT_LIMIT).await?;
        let top = out.stdout.trim();
        if !out.success() || top.is_empty() {
            return Err(GitError::NotARepo {
                path: path.to_path_buf(),
                detail: format!(
                    "not inside a git work tree ({}): run `git init` there and make a first \
                     commit, or point orch at an existing repository",
                    failure_text(&out)
                ),
            });
        }
        Ok(Git {
            repo: normalize(Path::new(top)),
            reader: Arc::default(),
            ..self
        })
    }

    /// Top level of the repository's main work tree.
    pub fn path(&self) -> &Path {
        &self.repo
    }

    /// The branch checked out in the main work tree; when HEAD is detached,
    /// "main" if that branch exists, else "master".
    pub async fn default_branch(&self) -> Result<String, GitError> {
        if let Some(name) = self.reader.head_branch(&self.repo) {
            return Ok(name);
        }
        let out = self
            .raw(
                &self.repo,
                &["symbolic-ref", "--short", "-q", "HEAD"],
                TIMEOUT,
                4096,
            )
            .await?;
        let name = out.stdout.trim();
        if out.success() && !name.is_empty() {
            return Ok(name.to_string());
        }
        if self.branch_exists("main").await? {
            Ok("main".to_string())
        } else {
            Ok("master".to_string())
        }
    }

    /// Absolute path of the repository's .git directory (shared by all
    /// worktrees), to mount read-only into sandboxes.
    pub async fn git_common_dir(&self) -> Result<PathBuf, GitError> {
        if let Some(dir) = self.reader.common_dir(&self.repo) {
            return Ok(dir);
        }
        let out = self
            .ok(
                &self.repo,
                &["rev-parse", "--path-format=absolute", "--git-common-dir"],
            )
            .await?;
        let dir = PathBuf::from(out.trim());
        Ok(normalize(&self.repo.join(dir)))
    }

    /// Full commit id of `rev`.
    pub async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let rev = format!("{}^{{commit}}", checked("revision", rev)?);
        if let Some(id) = self.reader.resolve(&self.repo, &rev) {
            return Ok(id);
        }
        let out = self
            .ok(&self.repo, &["rev-parse", "--verify", &rev])
            .await?;
        Ok(out.trim().to_string())
    }

    /// Whether the local branch `name` exists.
    pub async fn branch_exists(&self, name: &str) -> Result<bool, GitError> {
        let refname = format!("refs/heads/{}", checked("branch", name)?);
        let args = ["show-ref", "--verify", "--quiet", refname.as_str()];
        let out = self.raw(&self.repo, &args, TIMEOUT, 4096).await?;
        match out.exit_code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.command_error(&self.repo, &args, &out)),
        }
    }

    /// Local branches whose name starts with `prefix` (e.g. "orch/").
    pub async fn branches(&self, prefix: &str) -> Result<Vec<String>, GitError> {
        if let Some(found) = self.reader.branches(&self.repo, prefix) {
            return Ok(found);
        }
        let out = self
            .ok(
                &self.repo,
                &["for-each-ref", "--format=%(refname)", "refs/heads/"],
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("refs/heads/"))
            .filter(|b| b.starts_with(prefix))
            .map(str::to_string)
            .collect())
    }

    /// Deletes a local branch (even unmerged); Ok if it does not exist.
    pub async fn delete_branch(&self, name: &str) -> Result<(), GitError> {
        self.delete_branches(&[name]).await
    }

    /// Deletes every branch of `names` at once (a landed merge batch), in
    /// process when gix can, else in one git run; branches already gone are
    /// not an error.
    pub async fn delete_branches(&self, names: &[&str]) -> Result<(), GitError> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            checked("branch", name)?;
        }
        // `branch -D` reads every worktree's record to refuse deleting a
        // checked-out branch, so it races with worktree changes too.
        let _lock = self.lock.acquire().await?;
        if self.reader.delete_branches(&self.repo, names).is_some() {
            return Ok(());
        }
        let mut args = vec!["branch", "-D"];
        args.extend_from_slice(names);
        let out = self.raw(&self.repo, &args, TIMEOUT, OUTPUT_LIMIT).await?;
        let only_missing = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.contains("not found"));
        if out.success() || only_missing {
            return Ok(());
        }
        Err(self.command_error(&self.repo, &args, &out))
    }

    /// Points the local branch `branch` at `commit`, creating or moving it
    /// (refused while a worktree has it checked out).
    pub async fn set_branch(&self, branch: &str, commit: &str) -> Result<(), GitError> {
        checked("branch", branch)?;
        checked("revision", commit)?;
        let _lock = self.lock.acquire().await?;
        let resolved = self
            .reader
            .resolve(&self.repo, &format!("{commit}^{{commit}}"));
        if resolved.is_some_and(|sha| self.branch_at_in_process(branch, &sha)) {
            return Ok(());
        }
        let args = ["branch", "--force", "--no-track", branch, commit];
        self.ok(&self.repo, &args).await?;
        Ok(())
    }

    /// Creates (or resets) `branch` at `base` and checks it out in a new
    /// worktree at `dir`, replacing a stale worktree left there.
    pub async fn worktree_add(&self, dir: &Path, branch: &str, base: &str) -> Result<(), GitError> {
        checked("branch", branch)?;
        checked("revision", base)?;
        self.add_worktree(dir, Some(branch), base).await
    }

    /// Adds a worktree at `dir` on `branch` (created or reset at `base`),
    /// or detached at `base`. Only git's worktree administration happens
    /// under the worktree lock: a parked worktree taken from the pool, or a
    /// new one registered without a checkout. Writing the files, the slow
    /// part, happens after, so many workers starting at once populate their
    /// worktrees in parallel; it touches nothing but this worktree.
    async fn add_worktree(
        &self,
        dir: &Path,
        branch: Option<&str>,
        base: &str,
    ) -> Result<(), GitError> {
        let (dir, fill) = {
            let _lock = self.lock.acquire().await?;
            let dir = self.prepare_worktree_dir(dir).await?;
            let Some(fill) = self.register_worktree_locked(&dir, branch, base).await? else {
                return Ok(());
            };
            (dir, fill)
        };
        let filled = match &fill {
            Fill::Parked { commit, record } => {
                self.refresh_parked(&dir, commit, record, branch).await
            }
            Fill::Fresh => self
                .ok_with(&dir, &["reset", "-q", "--hard"], CHECKOUT_TIMEOUT)
                .await
                .map(|_| ()),
        };
        if let Err(e) = filled {
            let _lock = self.lock.acquire().await?;
            let _ = self.worktree_remove_locked(&dir).await;
            return Err(e);
        }
        Ok(())
    }

    /// Registers a worktree at `dir` (lock held) and says how to fill it;
    /// None when git's own `worktree add` already checked it out (a branch
    /// gix could not set, which the CLI then creates or refuses).
    async fn register_worktree_locked(
        &self,
        dir: &Path,
        branch: Option<&str>,
        base: &str,
    ) -> Result<Option<Fill>, GitError> {
        let commit = self
            .reader
            .resolve(&self.repo, &format!("{base}^{{commit}}"));
        let branch_set = match (branch, &commit) {
            (Some(b), Some(c)) => self.branch_at_in_process(b, c),
            (None, Some(_)) => true,
            _ => false,
        };
        let d = path_arg(dir);
        if !branch_set {
            let args: Vec<&str> = match branch {
                Some(b) => vec!["worktree", "add", "-B", b, d.as_str(), base],
                None => vec!["worktree", "add", "--detach", d.as_str(), base],
            };
            self.add_worktree_locked(&args).await?;
            return Ok(None);
        }
        let commit = commit.unwrap_or_default();
        if let Some(record) = self.take_parked_locked(dir) {
            return Ok(Some(Fill::Parked { commit, record }));
        }
        let head = match branch {
            Some(b) => register::Head::Branch(b),
            None => register::Head::Detached(&commit),
        };
        let common = self.reader.plain_worktree_records(&self.repo);
        if common.is_some_and(|c| register::linked_worktree(&c, dir, &head).is_some()) {
            return Ok(Some(Fill::Fresh));
        }
        let target = branch.unwrap_or(commit.as_str());
        let mut args = vec!["worktree", "add", "--no-checkout"];
        if branch.is_none() {
            args.push("--detach");
        }
        args.extend([d.as_str(), target]);
        self.add_worktree_locked(&args).await?;
        Ok(Some(Fill::Fresh))
    }

    /// Creates or resets `branch` at the full id `commit` in-process, when
    /// no worktree has it checked out (otherwise `worktree add -B` refuses,
    /// as it should). Saves the `git branch --force` that `worktree add -B`
    /// starts.
    fn branch_at_in_process(&self, branch: &str, commit: &str) -> bool {
        if self.reader.checkout_of(&self.repo, branch) != Some(None) {
            return false;
        }
        let refname = format!("refs/heads/{branch}");
        self.reader
            .write_ref(&self.repo, &refname, commit, "orch: branch for a worktree")
    }

    /// Runs `git worktree add …`; when git still holds a record of a
    /// worktree whose directory is gone at that path, prunes it and tries
    /// once more (cheaper than listing worktrees before every add).
    async fn add_worktree_locked(&self, args: &[&str]) -> Result<(), GitError> {
        let out = self
            .raw(&self.repo, args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT)
            .await?;
        if out.success() {
            return Ok(());
        }
        if !out.stderr.contains("already registered") {
            return Err(self.command_error(&self.repo, args, &out));
        }
        self.worktree_prune_locked().await?;
        self.ok_with(&self.repo, args, CHECKOUT_TIMEOUT).await?;
        Ok(())
    }

    /// Checks out `commit` detached in a new worktree at `dir`.
    pub async fn worktree_add_detached(&self, dir: &Path, commit: &str) -> Result<(), GitError> {
        checked("revision", commit)?;
        self.add_worktree(dir, None, commit).await
    }

    /// Removes the worktree at `dir` (discarding its changes) and its
    /// directory; Ok if it is already gone.
    pub async fn worktree_remove(&self, dir: &Path) -> Result<(), GitError> {
        let _lock = self.lock.acquire().await?;
        let normalized = normalize(dir);
        if normalized != self.repo && self.park_locked(&normalized).await {
            return Ok(());
        }
        self.worktree_remove_locked(dir).await
    }

    /// `worktree_remove` with the worktree lock already held.
    async fn worktree_remove_locked(&self, dir: &Path) -> Result<(), GitError> {
        let dir = normalize(dir);
        if dir == self.repo {
            return Err(GitError::Command {
                args: format!("worktree remove {}", dir.display()),
                code: None,
                stderr: "refusing to remove the repository's main work tree".to_string(),
            });
        }
        if dir.join(".git").is_file() && self.remove_linked_in_process(&dir).await {
            return Ok(());
        }
        if dir.join(".git").is_file() {
            // A linked worktree: one `git worktree remove` drops both the
            // directory and git's record of it.
            let d = path_arg(&dir);
            let args = ["worktree", "remove", "--force", "--force", d.as_str()];
            let out = self
                .raw(&self.repo, &args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT)
                .await?;
            if out.success() && !dir.exists() {
                return Ok(());
            }
        }
        let registered = self
            .worktrees_locked()
            .await?
            .iter()
            .any(|w| normalize(&w.path) == dir);
        if registered {
            let d = path_arg(&dir);
            // Twice --force: also removes locked worktrees. A failure is not
            // final: the directory is deleted below and the record pruned.
            let args = ["worktree", "remove", "--force", "--force", d.as_str()];
            let out = self
                .raw(&self.repo, &args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT)
                .await?;
            if !out.success() {
                tracing::debug!(dir = %dir.display(), "git worktree remove failed: {}", failure_text(&out));
            }
        }
        if dir.exists() {
            if dir.join(".git").is_dir() {
                return Err(GitError::Command {
                    args: format!("worktree remove {}", dir.display()),
                    code: None,
                    stderr: "the directory holds a separate repository (.git directory), not a \
                             worktree; orch will not delete it: remove it yourself"
                        .to_string(),
                });
            }
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|source| GitError::Io {
                    action: "cannot delete worktree directory",
                    path: dir.clone(),
                    source,
                })?;
        }
        self.worktree_prune_locked().await
    }

    /// Removes the linked worktree at `dir` as `git worktree remove --force
    /// --force` does, without a process: its directory, then git's record
    /// of it (found in the common directory; see `Reader::worktree_git_dir`).
    /// False when it could not, and the CLI should.
    async fn remove_linked_in_process(&self, dir: &Path) -> bool {
        let Some(record) = self.reader.worktree_git_dir(&self.repo, dir) else {
            return false;
        };
        if tokio::fs::remove_dir_all(dir).await.is_err() {
            return false;
        }
        // With the directory gone, a record left behind is what `git
        // worktree prune` removes: harmless until then.
        let _ = tokio::fs::remove_dir_all(&record).await;
        !dir.exists()
    }

    /// Forgets worktrees whose directories are gone.
    pub async fn worktree_prune(&self) -> Result<(), GitError> {
        let _lock = self.lock.acquire().await?;
        self.worktree_prune_locked().await
    }

    async fn worktree_prune_locked(&self) -> Result<(), GitError> {
        self.ok(&self.repo, &["worktree", "prune"]).await?;
        Ok(())
    }

    /// All worktrees, the main one first.
    pub async fn worktrees(&self) -> Result<Vec<WorktreeInfo>, GitError> {
        let _lock = self.lock.acquire().await?;
        self.worktrees_locked().await
    }

    async fn worktrees_locked(&self) -> Result<Vec<WorktreeInfo>, GitError> {
        if let Some(list) = self.reader.worktrees(&self.repo) {
            return Ok(list);
        }
        let out = self
            .ok(&self.repo, &["worktree", "list", "--porcelain", "-z"])
            .await?;
        Ok(parse_worktrees(&out))
    }

    /// Stages everything in `worktree` except generated caches and commits
    /// it as orch (hooks skipped). None when there is nothing to commit;
    /// otherwise the new HEAD. One git process when the commit can be
    /// written in-process (see `commit`).
    pub async fn commit_all(
        &self,
        worktree: &Path,
        message: &str,
    ) -> Result<Option<String>, GitError> {
        self.add_all(worktree).await?;
        self.commit_staged(worktree, message).await
    }

    /// Every path `commit_all` would commit in `worktree`: tracked
    /// modifications and deletions, staged changes and untracked files
    /// (ignored files and the generated caches `commit_all` skips are left
    /// out). An untracked nested repository is one entry (its directory).
    pub async fn worktree_changes(&self, worktree: &Path) -> Result<Vec<WorktreeChange>, GitError> {
        let mut args = vec![
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--ignore-submodules=none",
            "--",
            ".",
        ];
        args.extend(EXCLUDED_FROM_COMMITS);
        let out = self.ok(worktree, &args).await?;
        Ok(parse_status(&out))
    }

    /// Makes each of `paths` (relative to `worktree`'s top level) as it is at
    /// HEAD: paths HEAD or the index knows are restored from HEAD (content
    /// and mode; a path HEAD lacks leaves the index and the worktree);
    /// untracked files, symlinks and directories are deleted (symlinks are
    /// never followed) and directories left empty by that are removed.
    /// Absolute paths and paths with `..`, `.git` or empty components are
    /// refused before anything changes.
    pub async fn discard_changes(&self, worktree: &Path, paths: &[String]) -> Result<(), GitError> {
        let mut clean = Vec::with_capacity(paths.len());
        for p in paths {
            clean.push(checked_relative(p)?);
        }
        clean.sort();
        clean.dedup();
        if clean.is_empty() {
            return Ok(());
        }
        let top = normalize(worktree);

        // What git knows: files in HEAD and in the index under these paths.
        let mut ls_tree = vec![
            "--literal-pathspecs",
            "ls-tree",
            "-r",
            "-z",
            "--name-only",
            "--full-tree",
            "HEAD",
            "--",
        ];
        ls_tree.extend(clean.iter().map(String::as_str));
        let in_head = split_z(&self.ok(&top, &ls_tree).await?);
        let mut ls_files = vec!["--literal-pathspecs", "ls-files", "-z", "--cached", "--"];
        ls_files.extend(clean.iter().map(String::as_str));
        let in_index = split_z(&self.ok(&top, &ls_files).await?);
        let known = |list: &[String], p: &str| {
            let dir = format!("{p}/");
            list.iter().any(|k| k == p || k.starts_with(&dir))
        };
        let (tracked, mut untracked): (Vec<String>, Vec<String>) = clean
            .into_iter()
            .partition(|p| known(&in_head, p) || known(&in_index, p));
        // What only the index knows (staged, not in HEAD) leaves the
        // worktree as untracked files do: `restore` unstages it but would
        // leave a staged embedded repository's directory behind, for the
        // next add to stage again.
        untracked.extend(tracked.iter().filter(|p| !known(&in_head, p)).cloned());

        // Untracked first: a file where HEAD has a directory (or the
        // reverse) must be gone before git writes the HEAD version back.
        if !untracked.is_empty() {
            let root = top.clone();
            tokio::task::spawn_blocking(move || delete_untracked(&root, &untracked))
                .await
                .map_err(|e| GitError::Io {
                    action: "cannot discard untracked files in",
                    path: top.clone(),
                    source: std::io::Error::other(e.to_string()),
                })??;
        }
        if !tracked.is_empty() {
            let mut restore = vec![
                "--literal-pathspecs",
                "restore",
                "--source=HEAD",
                "--staged",
                "--worktree",
                "--",
            ];
            restore.extend(tracked.iter().map(String::as_str));
            self.ok_with(&top, &restore, CHECKOUT_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Points `refname` (which must start with `refs/orch/`) at `commit`,
    /// creating or moving it, so the commit stays reachable after its branch
    /// is reset or deleted.
    pub async fn keep_ref(&self, refname: &str, commit: &str) -> Result<(), GitError> {
        checked("ref", refname)?;
        if !refname.starts_with("refs/orch/") || refname.len() == "refs/orch/".len() {
            return Err(GitError::Refused {
                what: "to write ref",
                name: refname.to_string(),
                reason: "orch only writes refs under `refs/orch/<name>`".to_string(),
            });
        }
        let sha = if is_full_id(commit) {
            commit.to_string()
        } else {
            self.rev_parse(commit).await?
        };
        if self
            .reader
            .write_ref(&self.repo, refname, &sha, "orch: keep commit")
        {
            return Ok(());
        }
        let args = ["update-ref", "-m", "orch: keep commit", refname, &sha];
        self.ok(&self.repo, &args).await?;
        Ok(())
    }

    /// `(refname, commit id)` of every ref whose full name starts with
    /// `prefix` (e.g. "refs/orch/attempts/"), sorted by name.
    pub async fn refs(&self, prefix: &str) -> Result<Vec<(String, String)>, GitError> {
        if prefix.starts_with('-') {
            checked("ref prefix", prefix)?;
        }
        // for-each-ref matches whole '/'-separated components, so ask for
        // the directory holding the prefix and filter the rest here.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut args = vec!["for-each-ref", "--format=%(refname)%00%(objectname)"];
        if !dir.is_empty() {
            args.push(dir);
        }
        let out = self.ok(&self.repo, &args).await?;
        let mut refs: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once('\0'))
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, sha)| (name.to_string(), sha.trim().to_string()))
            .collect();
        refs.sort();
        Ok(refs)
    }

    /// Commit checked out in `worktree`.
    pub async fn head(&self, worktree: &Path) -> Result<String, GitError> {
        Ok(self
            .ok(worktree, &["rev-parse", "--verify", "HEAD"])
            .await?
            .trim()
            .to_string())
    }

    /// `git diff --stat base head` (in-process when gix can).
    pub async fn diff_stat(&self, base: &str, head: &str) -> Result<String, GitError> {
        let args = [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--stat",
            base,
            head,
            "--",
        ];
        self.checked_revs(&[base, head])?;
        if let Some(stat) = self.reader.diff_stat(&self.repo, base, head) {
            return Ok(stat);
        }
        self.ok(&self.repo, &args).await
    }

    /// `git diff base head`, keeping at most `max_bytes` (head and tail, with
    /// the runner's cut marker in between).
    pub async fn diff(&self, base: &str, head: &str, max_bytes: usize) -> Result<String, GitError> {
        self.checked_revs(&[base, head])?;
        let args = ["diff", "--no-color", "--no-ext-diff", base, head, "--"];
        // Capped while streaming, so a huge diff never sits in memory whole;
        // the cut is the same head/tail cut as `orch_process::cap_output`.
        let out = self.raw(&self.repo, &args, TIMEOUT, max_bytes).await?;
        if !out.success() {
            return Err(self.command_error(&self.repo, &args, &out));
        }
        Ok(out.stdout)
    }

    /// The subjects of the commits on `to`'s first-parent line since
    /// `from`, newest first, at most `max` (what landed on a branch).
    pub async fn log_subjects(
        &self,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<Vec<String>, GitError> {
        self.checked_revs(&[from, to])?;
        let range = format!("{from}..{to}");
        let count = format!("--max-count={max}");
        let args = ["log", "--first-parent", "--format=%s", &count, &range, "--"];
        let out = self.ok(&self.repo, &args).await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Paths that differ between `base` and `head`.
    pub async fn changed_files(&self, base: &str, head: &str) -> Result<Vec<String>, GitError> {
        self.checked_revs(&[base, head])?;
        let args = [
            "diff",
            "--no-ext-diff",
            "--name-only",
            "-z",
            base,
            head,
            "--",
        ];
        Ok(split_z(&self.ok(&self.repo, &args).await?))
    }

    /// Merges `rev` into the branch checked out in `worktree` (always a
    /// merge commit). On conflict the merge is aborted and the conflicted
    /// files are returned; the worktree is left as it was.
    pub async fn merge_into_worktree(
        &self,
        worktree: &Path,
        rev: &str,
        message: &str,
    ) -> Result<MergeOutcome, GitError> {
        self.merge_in_worktree(worktree, rev, message, true).await
    }

    /// Like `merge_into_worktree`, but a conflicted merge is left in
    /// progress: the files hold git's conflict markers (diff3 style, with
    /// the common base) for someone to resolve, and a later `commit_all`
    /// records the merge with both parents.
    pub async fn merge_keeping_conflicts(
        &self,
        worktree: &Path,
        rev: &str,
        message: &str,
    ) -> Result<MergeOutcome, GitError> {
        self.merge_in_worktree(worktree, rev, message, false).await
    }

    async fn merge_in_worktree(
        &self,
        worktree: &Path,
        rev: &str,
        message: &str,
        abort: bool,
    ) -> Result<MergeOutcome, GitError> {
        checked("revision", rev)?;
        let mut args = IDENTITY.to_vec();
        args.extend([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "merge.conflictStyle=diff3",
            "merge",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "-m",
            message,
            rev,
        ]);
        let out = self
            .raw(worktree, &args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT)
            .await?;
        if out.success() {
            return Ok(MergeOutcome::Clean {
                head: self.head(worktree).await?,
            });
        }
        let conflicted = self
            .ok(
                worktree,
                &[
                    "diff",
                    "--no-ext-diff",
                    "--name-only",
                    "-z",
                    "--diff-filter=U",
                ],
            )
            .await?;
        let files = split_z(&conflicted);
        if files.is_empty() {
            // Refused before starting (dirty tree, untracked file in the way…).
            return Err(self.command_error(worktree, &args, &out));
        }
        if abort {
            self.ok(worktree, &["merge", "--abort"]).await?;
        }
        Ok(MergeOutcome::Conflict {
            files,
            output: out.combined(),
        })
    }

    /// Merges `branch` into `onto` without a worktree (in-process through
    /// gix when the merge is clean, else `git merge-tree --write-tree`,
    /// then a commit of that tree with both parents, written in-process
    /// when gix can): the result is a
    /// merge commit no branch points at yet, or the conflicting files. No
    /// working tree is touched, so merges need no checkout and no worktree
    /// lock; only verification needs a worktree.
    pub async fn merge_commit(
        &self,
        onto: &str,
        branch: &str,
        message: &str,
    ) -> Result<MergeOutcome, GitError> {
        self.checked_revs(&[onto, branch])?;
        let tree = match self.reader.merge_clean(&self.repo, onto, branch) {
            Some(tree) => tree,
            None => match self.merge_tree_cli(onto, branch).await? {
                Ok(tree) => tree,
                Err(conflict) => return Ok(conflict),
            },
        };
        if let Some(head) = self
            .reader
            .commit_tree(&self.repo, &tree, &[onto, branch], message)
        {
            return Ok(MergeOutcome::Clean { head });
        }
        let mut commit = IDENTITY.to_vec();
        commit.extend([
            "commit-tree",
            tree.as_str(),
            "-p",
            onto,
            "-p",
            branch,
            "-m",
            message,
        ]);
        Ok(MergeOutcome::Clean {
            head: self.ok(&self.repo, &commit).await?.trim().to_string(),
        })
    }

    /// `git merge-tree --write-tree` of `branch` into `onto`: the merged
    /// tree, or the conflict it reports.
    async fn merge_tree_cli(
        &self,
        onto: &str,
        branch: &str,
    ) -> Result<Result<String, MergeOutcome>, GitError> {
        let args = [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            onto,
            branch,
        ];
        let out = self
            .raw(&self.repo, &args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT)
            .await?;
        let mut fields = split_z(&out.stdout).into_iter();
        let tree = fields.next().unwrap_or_default();
        match out.exit_code {
            Some(0) => {}
            Some(1) => {
                return Ok(Err(MergeOutcome::Conflict {
                    files: fields.collect(),
                    output: out.combined(),
                }))
            }
            _ => return Err(self.command_error(&self.repo, &args, &out)),
        }
        Ok(Ok(tree.trim().to_string()))
    }

    /// Whether two commits hold the same tree (snapshot of files), so they
    /// verify the same way. One process.
    pub async fn same_tree(&self, a: &str, b: &str) -> Result<bool, GitError> {
        let (a, b) = (format!("{a}^{{tree}}"), format!("{b}^{{tree}}"));
        let [ta, tb] = self.rev_parse_all([a.as_str(), b.as_str()]).await?;
        Ok(ta == tb)
    }

    /// Full ids of several revisions in one `git rev-parse`.
    async fn rev_parse_all<const N: usize>(
        &self,
        revs: [&str; N],
    ) -> Result<[String; N], GitError> {
        self.checked_revs(&revs)?;
        let known: Option<Vec<String>> = revs
            .iter()
            .map(|r| self.reader.resolve(&self.repo, r))
            .collect();
        if let Some(ids) = known.and_then(|ids| <[String; N]>::try_from(ids).ok()) {
            return Ok(ids);
        }
        // `--verify` takes one name; without it rev-parse resolves each and
        // fails on any that does not exist.
        let mut args = vec!["rev-parse"];
        args.extend(revs);
        let out = self.ok(&self.repo, &args).await?;
        let ids: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        ids.try_into()
            .map_err(|ids: Vec<String>| GitError::Command {
                args: args.join(" "),
                code: None,
                stderr: format!("expected {N} object ids, got {}", ids.len()),
            })
    }

    /// Whether `ancestor` is reachable from `descendant`.
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        self.checked_revs(&[ancestor, descendant])?;
        if let Some(known) = self.reader.is_ancestor(&self.repo, ancestor, descendant) {
            return Ok(known);
        }
        let args = ["merge-base", "--is-ancestor", ancestor, descendant];
        let out = self.raw(&self.repo, &args, TIMEOUT, 4096).await?;
        match out.exit_code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.command_error(&self.repo, &args, &out)),
        }
    }

    /// Moves `worktree`'s branch and files back to `commit` (`git reset
    /// --hard`) and deletes untracked files that are not ignored, so the
    /// worktree is exactly that commit again (ignored caches stay).
    pub async fn reset_worktree(&self, worktree: &Path, commit: &str) -> Result<(), GitError> {
        checked("commit", commit)?;
        self.ok_with(
            worktree,
            &["reset", "--hard", "-q", commit],
            CHECKOUT_TIMEOUT,
        )
        .await?;
        self.ok(worktree, &["clean", "-f", "-d", "-q"]).await?;
        Ok(())
    }

    /// Whether `worktree` has changes to tracked files (staged or not).
    /// Untracked files do not count.
    pub async fn is_dirty(&self, worktree: &Path) -> Result<bool, GitError> {
        // Certain from the index's stat data alone (the usual case), else git.
        if tidy::tracked_unchanged(worktree) {
            return Ok(false);
        }
        let out = self
            .ok(worktree, &["status", "--porcelain", "--untracked-files=no"])
            .await?;
        Ok(!out.trim().is_empty())
    }

    /// Moves `branch` from `expected_old` to `new` (which must contain
    /// `expected_old`) without ever losing the user's work:
    /// - branch no longer at `expected_old` → `Moved`, nothing changed;
    /// - not checked out anywhere → atomic compare-and-swap of the ref;
    /// - checked out in a clean worktree → fast-forward merge there, so the
    ///   files follow the branch;
    /// - checked out with uncommitted tracked changes (or git refuses the
    ///   fast-forward) → `Deferred`, nothing changed.
    pub async fn advance_branch(
        &self,
        branch: &str,
        new: &str,
        expected_old: &str,
    ) -> Result<AdvanceOutcome, GitError> {
        checked("branch", branch)?;
        let refname = format!("refs/heads/{branch}");
        let commits = [refname.as_str(), expected_old, new].map(|r| format!("{r}^{{commit}}"));
        let [current, old, new] = self
            .rev_parse_all([&commits[0], &commits[1], &commits[2]].map(String::as_str))
            .await?;
        if current != old {
            return Ok(AdvanceOutcome::Moved { current });
        }
        if new == old {
            return Ok(AdvanceOutcome::Advanced);
        }
        if !self.is_ancestor(&old, &new).await? {
            return Err(GitError::NotFastForward {
                branch: branch.to_string(),
                old,
                new,
            });
        }

        let checkout = match self.reader.checkout_of(&self.repo, branch) {
            // A recorded worktree whose directory is gone is not a checkout:
            // let the CLI path below prune it.
            Some(found) if found.as_ref().is_none_or(|p| p.exists()) => found,
            _ => self.checkout_of_branch(branch).await?,
        };
        let Some(checkout) = checkout else {
            let args = [
                "update-ref",
                "-m",
                "orch: advance branch",
                &refname,
                &new,
                &old,
            ];
            let out = self.raw(&self.repo, &args, TIMEOUT, OUTPUT_LIMIT).await?;
            if out.success() {
                return Ok(AdvanceOutcome::Advanced);
            }
            // Lost a race with someone moving the branch: report where it is.
            let now = self.rev_parse(&refname).await?;
            if now != old {
                return Ok(AdvanceOutcome::Moved { current: now });
            }
            return Err(self.command_error(&self.repo, &args, &out));
        };

        let w = checkout;
        if self.is_dirty(&w).await? {
            return Ok(AdvanceOutcome::Deferred {
                reason: format!(
                    "`{branch}` is checked out at {} with uncommitted changes to tracked files; \
                     orch left it untouched. Commit or stash them (or check out another \
                     branch there) and the work will land on `{branch}` next time",
                    w.display()
                ),
                checkout: w,
            });
        }
        let args = ["merge", "--ff-only", "--no-edit", &new];
        let out = self.raw(&w, &args, CHECKOUT_TIMEOUT, OUTPUT_LIMIT).await?;
        if !out.success() {
            return Ok(AdvanceOutcome::Deferred {
                reason: format!(
                    "git refused to fast-forward the checkout of `{branch}` at {}: {}",
                    w.display(),
                    failure_text(&out)
                ),
                checkout: w,
            });
        }
        Ok(AdvanceOutcome::Advanced)
    }

    /// The worktree that has `branch` checked out, from `git worktree
    /// list` (pruning records of deleted worktrees first).
    async fn checkout_of_branch(&self, branch: &str) -> Result<Option<PathBuf>, GitError> {
        let _lock = self.lock.acquire().await?;
        let find = |list: Vec<WorktreeInfo>| {
            list.into_iter()
                .find(|w| w.branch.as_deref() == Some(branch))
                .map(|w| w.path)
        };
        Ok(match find(self.worktrees_locked().await?) {
            // The record of a deleted worktree is not a checkout.
            Some(p) if !p.exists() => {
                self.worktree_prune_locked().await?;
                find(self.worktrees_locked().await?)
            }
            found => found,
        })
    }

    fn checked_revs(&self, revs: &[&str]) -> Result<(), GitError> {
        for rev in revs {
            checked("revision", rev)?;
        }
        Ok(())
    }

    /// Makes `dir` ready for `worktree add`: parents created, a stale
    /// worktree (or leftover directory) at that place removed. The caller
    /// holds the worktree lock.
    async fn prepare_worktree_dir(&self, dir: &Path) -> Result<PathBuf, GitError> {
        let dir = normalize(dir);
        if let Some(parent) = dir.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| GitError::Io {
                    action: "cannot create the parent directory of worktree",
                    path: dir.clone(),
                    source,
                })?;
        }
        if !dir.exists() {
            // A stale record at this path is pruned by the add if needed.
            return Ok(dir);
        }
        let registered = self
            .worktrees_locked()
            .await?
            .iter()
            .any(|w| normalize(&w.path) == dir);
        if registered {
            self.worktree_remove_locked(&dir).await?;
        } else if dir.exists() {
            // Only a leftover worktree (its `.git` is a file) or an empty
            // directory may go; anything else could be someone's files.
            let leftover = dir.join(".git").is_file()
                || std::fs::read_dir(&dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !leftover {
                return Err(GitError::Io {
                    action: "cannot create a worktree: move away the existing directory",
                    path: dir,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "it exists and is not a git worktree",
                    ),
                });
            }
            self.worktree_remove_locked(&dir).await?;
        }
        Ok(normalize(&dir))
    }

    /// Runs git in `dir`, returning its output whatever the exit status.
    async fn raw(
        &self,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
        output_limit: usize,
    ) -> Result<ProcessOutput, GitError> {
        self.raw_in_index(dir, args, timeout, output_limit, None)
            .await
    }

    /// [`Self::raw`] with `index` as git's index file instead of the
    /// worktree's own.
    async fn raw_in_index(
        &self,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
        output_limit: usize,
        index: Option<&Path>,
    ) -> Result<ProcessOutput, GitError> {
        // No automatic `git maintenance`/`gc` after orch's own commits and
        // merges: it would add two processes to each, in the middle of a
        // run. The user's own git commands still run it as they always do.
        let mut spec = ProcessSpec::new("git")
            .arg("-C")
            .arg(path_arg(dir))
            .args(["-c", "maintenance.auto=false", "-c", "gc.auto=0"])
            .args(args.iter().copied())
            .timeout(timeout)
            .output_limit(output_limit);
        // Inherit the environment minus whatever would redirect git to
        // another repository; never prompt for credentials.
        spec.env_clear = true;
        spec.env = std::env::vars()
            .filter(|(k, _)| !REPO_LOCATING_ENV.contains(&k.as_str()))
            .collect();
        spec.env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
        spec.env.push(("LC_ALL".into(), "C".into()));
        // `status` must not rewrite the user's index as a side effect.
        spec.env.push(("GIT_OPTIONAL_LOCKS".into(), "0".into()));
        if let Some(index) = index {
            spec.env.push((
                "GIT_INDEX_FILE".into(),
                index.to_string_lossy().into_owned(),
            ));
        }
        // Git commands are short and must not be cut off mid-write: a ref
        // update killed with orch would leave a `.lock` behind.
        spec.finish_if_orch_dies = true;
        Ok(orch_process::run(spec).await?)
    }

    /// Runs git in `dir` and returns its stdout, or an error naming the
    /// command and what git said.
    async fn ok(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        self.ok_with(dir, args, TIMEOUT).await
    }

    async fn ok_with(
        &self,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, GitError> {
        let out = self.raw(dir, args, timeout, OUTPUT_LIMIT).await?;
        if !out.success() {
            return Err(self.command_error(dir, args, &out));
        }
        Ok(out.stdout)
    }

    /// [`Self::ok`] with `index` as git's index file.
    async fn ok_in_index(
        &self,
        dir: &Path,
        args: &[&str],
        index: &Path,
    ) -> Result<String, GitError> {
        let out = self
            .raw_in_index(dir, args, TIMEOUT, OUTPUT_LIMIT, Some(index))
            .await?;
        if !out.success() {
            return Err(self.command_error(dir, args, &out));
        }
        Ok(out.stdout)
    }

    fn command_error(&self, dir: &Path, args: &[&str], out: &ProcessOutput) -> GitError {
        GitError::Command {
            args: format!("git -C {} {}", dir.display(), args.join(" ")),
            code: out.exit_code,
            stderr: failure_text(out),
        }
    }
}

/// Parses `git status --porcelain=v1 -z --no-renames`: `XY path` entries.
/// A path staged as new and then deleted would commit nothing and is left
/// out; a path listed twice (staged deletion, then recreated untracked) is
/// present.
fn parse_status(out: &str) -> Vec<WorktreeChange> {
    let mut changes: Vec<WorktreeChange> = Vec::new();
    for entry in out.split('\0') {
        if entry.len() < 4 {
            continue;
        }
        let (xy, path) = entry.split_at(3);
        let xy = xy.as_bytes();
        let (x, y) = (xy[0], xy[1]);
        if x == b'A' && y == b'D' {
            continue;
        }
        let path = path.trim_end_matches('/').to_string();
        let deleted = y == b'D' || (x == b'D' && y == b' ');
        match changes.iter_mut().find(|c| c.path == path) {
            Some(c) => c.deleted &= deleted,
            None => changes.push(WorktreeChange { path, deleted }),
        }
    }
    changes
}

/// A relative, '/'-separated path inside a worktree, or an error naming why
/// it is refused.
fn checked_relative(p: &str) -> Result<String, GitError> {
    let trimmed = p.trim_end_matches('/');
    let refuse = |why: &str| GitError::Refused {
        what: "to discard path",
        name: p.to_string(),
        reason: format!("{why}; name paths relative to the worktree's top level"),
    };
    if trimmed.is_empty() {
        return Err(refuse("it is empty"));
    }
    if trimmed.starts_with('/') || Path::new(trimmed).is_absolute() {
        return Err(refuse("it is absolute"));
    }
    for part in trimmed.split('/') {
        match part {
            "" | "." => return Err(refuse("it has an empty or `.` component")),
            ".." => return Err(refuse("`..` could leave the worktree")),
            ".git" => return Err(refuse("it is inside git's own `.git` data")),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// Deletes untracked `paths` under `root` without following symlinks, then
/// the directories that emptied. A path whose parent is not a real
/// directory inside `root` (a symlink, a file, missing) is not there to
/// delete.
fn delete_untracked(root: &Path, paths: &[String]) -> Result<(), GitError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| GitError::Io {
            action,
            path,
            source,
        }
    };
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        let mut dir = root.to_path_buf();
        let mut reachable = true;
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    reachable = false;
                    break;
                }
            }
        }
        if !reachable {
            continue;
        }
        let target = root.join(p);
        let meta = match std::fs::symlink_metadata(&target) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("cannot inspect untracked path", &target)(e)),
        };
        if meta.is_dir() {
            // std's remove_dir_all does not follow symlinks inside.
            std::fs::remove_dir_all(&target)
                .map_err(io("cannot delete untracked directory", &target))?;
        } else {
            std::fs::remove_file(&target).map_err(io("cannot delete untracked file", &target))?;
        }
        // Remove parents this left empty, never the worktree itself.
        let mut parent = target.parent().map(Path::to_path_buf);
        while let Some(d) = parent {
            if d == root || !d.starts_with(root) {
                break;
            }
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            parent = d.parent().map(Path::to_path_buf);
        }
    }
    Ok(())
}

/// Parses `git worktree list --porcelain -z`: attribute lines ended by NUL,
/// records ended by an empty line.
fn parse_worktrees(out: &str) -> Vec<WorktreeInfo> {
    let mut list = Vec::new();
    let mut cur: Option<WorktreeInfo> = None;
    for line in out.split('\0') {
        if line.is_empty() {
            list.extend(cur.take());
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "worktree" => {
                list.extend(cur.take());
                cur = Some(WorktreeInfo {
                    path: PathBuf::from(value),
                    branch: None,
                    head: String::new(),
                });
            }
            "HEAD" => {
                if let Some(w) = cur.as_mut() {
                    w.head = value.to_string();
                }
            }
            "branch" => {
                if let Some(w) = cur.as_mut() {
                    w.branch = Some(
                        value
                            .strip_prefix("refs/heads/")
                            .unwrap_or(value)
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    list.extend(cur);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_porcelain_worktree_list() {
        let out = "worktree /repo\0HEAD aaaa\0branch refs/heads/main\0\0\
                   worktree /wt/one\0HEAD bbbb\0detached\0\0\
                   worktree /wt/two\0HEAD cccc\0branch refs/heads/orch/t-1\0locked\0prunable gitdir file points to non-existent location\0\0";
        let list = parse_worktrees(out);
        assert_eq!(
            list,
            vec![
                WorktreeInfo {
                    path: "/repo".into(),
                    branch: Some("main".into()),
                    head: "aaaa".into()
                },
                WorktreeInfo {
                    path: "/wt/one".into(),
                    branch: None,
                    head: "bbbb".into()
                },
                WorktreeInfo {
                    path: "/wt/two".into(),
                    branch: Some("orch/t-1".into()),
                    head: "cccc".into()
                },
            ]
        );
    }

    #[test]
    fn parses_porcelain_status() {
        let out = " M a.txt\0 D gone.txt\0AD added-then-gone\0D  back.txt\0?? back.txt\0\
                   D  staged-rm.txt\0?? nested/\0?? dir/x y.txt\0";
        let c = |path: &str, deleted| WorktreeChange {
            path: path.into(),
            deleted,
        };
        assert_eq!(
            parse_status(out),
            vec![
                c("a.txt", false),
                c("gone.txt", true),
                c("back.txt", false),
                c("staged-rm.txt", true),
                c("nested", false),
                c("dir/x y.txt", false),
            ]
        );
    }

    #[test]
    fn refuses_paths_that_could_leave_the_worktree() {
        for bad in [
            "",
            "/",
            "/etc/x",
            "..",
            "a/../../b",
            "a//b",
            "./a",
            ".git/config",
            "x/.git",
        ] {
            assert!(
                matches!(checked_relative(bad), Err(GitError::Refused { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(checked_relative("nested/").unwrap(), "nested");
        assert_eq!(checked_relative("a/b..c").unwrap(), "a/b..c");
    }

    #[test]
    fn rejects_option_like_names() {
        assert!(matches!(
            checked("revision", "--output=/etc/x"),
            Err(GitError::InvalidName { .. })
        ));
        assert!(checked("revision", "HEAD~1").is_ok());
    }

    #[test]
    fn normalize_handles_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(normalize(&dir.path().join("a/b")), real.join("a/b"));
    }

    #[test]
    fn command_errors_name_the_command_and_git_output() {
        let e = GitError::Command {
            args: "git -C /r merge x".into(),
            code: Some(128),
            stderr: "fatal: bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "`git -C /r merge x` failed with exit code 128: fatal: bad"
        );
    }
}
