//! In-process reads of the object database and refs through gix: resolving
//! a revision, comparing trees, ancestry, which worktree has a branch
//! checked out, and writing orch's own refs. None of these touches a working tree, and each would
//! otherwise cost a git process; with many workers, those processes are
//! most of orch's own overhead.
//!
//! Every answer is optional: when gix cannot answer (a repository format it
//! does not read, an unusual revision), the caller asks the git CLI, which
//! stays the authority and gives the error message people know.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A lazily opened, shareable handle on one repository.
#[derive(Default)]
pub(crate) struct Reader {
    repo: OnceLock<Option<gix::ThreadSafeRepository>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    fn repo(&self, path: &Path) -> Option<gix::Repository> {
        self.repo
            .get_or_init(|| gix::ThreadSafeRepository::open(path).ok())
            .as_ref()
            .map(gix::ThreadSafeRepository::to_thread_local)
    }

    /// The full id `spec` (e.g. `main^{commit}`, `<id>^{tree}`) names.
    pub(crate) fn resolve(&self, path: &Path, spec: &str) -> Option<String> {
        let repo = self.repo(path)?;
        let id = repo.rev_parse_single(spec).ok()?;
        Some(id.detach().to_string())
    }

    /// Whether `ancestor` is reachable from `descendant` (both full ids or
    /// revisions).
    pub(crate) fn is_ancestor(
        &self,
        path: &Path,
        ancestor: &str,
        descendant: &str,
    ) -> Option<bool> {
        let repo = self.repo(path)?;
        let a = repo.rev_parse_single(ancestor).ok()?.detach();
        let d = repo.rev_parse_single(descendant).ok()?.detach();
        if a == d {
            return Some(true);
        }
        // The merge base of the two is the ancestor exactly when it is one.
        match repo.merge_base(a, d).ok()? {
            Some(base) => Some(base.detach() == a),
            // Unrelated histories: no common ancestor at all.
            None => Some(false),
        }
    }

    /// Points `refname` at the full id `commit`, creating or moving it,
    /// with a reflog entry. True when written.
    pub(crate) fn write_ref(
        &self,
        path: &Path,
        refname: &str,
        commit: &str,
        message: &str,
    ) -> bool {
        let Some(repo) = self.repo(path) else {
            return false;
        };
        let Ok(id) = gix::ObjectId::from_hex(commit.as_bytes()) else {
            return false;
        };
        let written = repo
            .reference(
                refname,
                id,
                gix::refs::transaction::PreviousValue::Any,
                message,
            )
            .is_ok();
        written
    }

    /// The worktree that has `branch` checked out: `Some(None)` when none
    /// has, `None` when gix cannot tell (the caller asks the CLI). Reads each
    /// worktree's HEAD file, as `git worktree list` does.
    pub(crate) fn checkout_of(&self, path: &Path, branch: &str) -> Option<Option<PathBuf>> {
        let wanted = format!("refs/heads/{branch}");
        let checkouts = self.checkouts(path)?;
        Some(
            checkouts
                .into_iter()
                .find(|(r, _)| *r == wanted)
                .map(|(_, p)| p),
        )
    }

    /// Every worktree that has a branch checked out, as (full ref name,
    /// worktree path), the main one first. None when gix cannot tell.
    fn checkouts(&self, path: &Path) -> Option<Vec<(String, PathBuf)>> {
        let repo = self.repo(path)?;
        if repo.kind() != gix::repository::Kind::Common || repo.workdir().is_none() {
            return None;
        }
        let mut found = Vec::new();
        if let Some(name) = repo.head_name().ok()? {
            found.push((name.as_bstr().to_string(), repo.workdir()?.to_path_buf()));
        }
        for proxy in repo.worktrees().ok()? {
            let head = std::fs::read_to_string(proxy.git_dir().join("HEAD")).ok()?;
            if let Some(name) = head.trim().strip_prefix("ref: ") {
                found.push((name.trim().to_string(), proxy.base().ok()?));
            }
        }
        Some(found)
    }

    /// git's private directory for the linked worktree at `dir` (normalized),
    /// found through git's own records in the common directory, never
    /// through the worktree's `.git` file, which whatever ran in the
    /// worktree could have rewritten. None when there is no such record or
    /// gix cannot tell.
    pub(crate) fn worktree_git_dir(&self, path: &Path, dir: &Path) -> Option<PathBuf> {
        let repo = self.repo(path)?;
        let proxies = repo.worktrees().ok()?;
        proxies
            .iter()
            .find(|p| {
                p.base()
                    .ok()
                    .is_some_and(|b| b == dir || b.canonicalize().ok().as_deref() == Some(dir))
            })
            .map(|p| p.git_dir().to_path_buf())
    }

    /// Deletes the local branches `names` (short names) with their reflogs
    /// in one transaction, as `git branch -D` does; branches already gone
    /// are skipped. None when gix cannot do it safely (a branch checked out
    /// somewhere, which git refuses to delete, or a failed transaction): the
    /// caller asks the CLI.
    pub(crate) fn delete_branches(&self, path: &Path, names: &[&str]) -> Option<()> {
        use gix::refs::transaction::{Change, PreviousValue, RefEdit, RefLog};
        let repo = self.repo(path)?;
        let checkouts = self.checkouts(path)?;
        let mut edits = Vec::with_capacity(names.len());
        for name in names {
            let full = format!("refs/heads/{name}");
            if checkouts.iter().any(|(r, _)| *r == full) {
                return None;
            }
            if repo.try_find_reference(full.as_str()).ok()?.is_none() {
                continue;
            }
            edits.push(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::MustExist,
                    log: RefLog::AndReference,
                },
                name: full.try_into().ok()?,
                deref: false,
            });
        }
        repo.edit_references(edits).ok().map(|_| ())
    }

    /// Detaches HEAD of the linked worktree whose git record is `record`
    /// at the commit it is on, so it holds no branch. None when gix cannot.
    pub(crate) fn detach_head(&self, path: &Path, record: &Path) -> Option<()> {
        self.set_worktree_head(path, record, "orch: park worktree", |wt| {
            Some(gix::refs::Target::Object(wt.head_id().ok()?.detach()))
        })
    }

    /// Points HEAD of the linked worktree whose git record is `record` at
    /// what `target` answers for it, with a reflog entry. None when gix
    /// cannot.
    fn set_worktree_head(
        &self,
        path: &Path,
        record: &Path,
        message: &str,
        target: impl FnOnce(&gix::Repository) -> Option<gix::refs::Target>,
    ) -> Option<()> {
        use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
        let repo = self.repo(path)?;
        let proxy = repo
            .worktrees()
            .ok()?
            .into_iter()
            .find(|p| p.git_dir() == record)?;
        let wt = proxy.into_repo_with_possibly_inaccessible_worktree().ok()?;
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: message.into(),
                },
                expected: PreviousValue::Any,
                new: target(&wt)?,
            },
            name: "HEAD".try_into().ok()?,
            deref: false,
        };
        wt.edit_reference(edit).ok().map(|_| ())
    }

    /// `git diff --stat base head`, computed in-process (see `stat`).
    pub(crate) fn diff_stat(&self, path: &Path, base: &str, head: &str) -> Option<String> {
        let repo = self.repo(path)?;
        crate::stat::files(&repo, base, head).map(|f| crate::stat::render(&f))
    }

    /// Points HEAD of the linked worktree whose git record is `record` at
    /// the branch `branch` (a symbolic ref, as a checkout of it leaves).
    /// None when gix cannot.
    pub(crate) fn attach_head(&self, path: &Path, record: &Path, branch: &str) -> Option<()> {
        let message = format!("orch: worktree on {branch}");
        self.set_worktree_head(path, record, &message, |_| {
            let name: gix::refs::FullName = format!("refs/heads/{branch}").try_into().ok()?;
            Some(gix::refs::Target::Symbolic(name))
        })
    }

    /// Writes a commit of `tree` with `parents` and `message`, authored and
    /// committed by orch now, as `git commit-tree` does (no ref moves).
    /// Its full id, or None when gix cannot.
    pub(crate) fn commit_tree(
        &self,
        path: &Path,
        tree: &str,
        parents: &[&str],
        message: &str,
    ) -> Option<String> {
        let repo = self.repo(path)?;
        let tree = gix::ObjectId::from_hex(tree.as_bytes()).ok()?;
        let parents: Vec<gix::ObjectId> = parents
            .iter()
            .map(|p| repo.rev_parse_single(*p).ok().map(|id| id.detach()))
            .collect::<Option<_>>()?;
        let orch = gix::actor::Signature {
            name: "orch".into(),
            email: "orch@localhost".into(),
            time: gix::date::Time::now_local_or_utc(),
        };
        let mut time = gix::date::parse::TimeBuf::default();
        let signature = orch.to_ref(&mut time);
        // git's `commit-tree -m` ends the message with a newline.
        let message = if message.ends_with('\n') {
            message.to_string()
        } else {
            format!("{message}\n")
        };
        let commit = repo
            .new_commit_as(signature, signature, message, tree, parents)
            .ok()?;
        Some(commit.id.to_string())
    }
}
