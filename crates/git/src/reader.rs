//! In-process reads of the object database and refs through gix: resolving
//! a revision, comparing trees, ancestry, which worktree has a branch
//! checked out, and writing orch's own refs. None of these touches a working tree, and each would
//! otherwise cost a git process; with many workers, those processes are
//! most of orch's own overhead.
//!
//! Every answer is optional: when gix cannot answer (a repository format it
//! does not read, an unusual revision), the caller asks the git CLI, which
//! stays the authority and gives the error message people know.

use gix::bstr::ByteSlice;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Handles kept for reuse at most, and each one's object cache.
const IDLE_HANDLES: usize = 8;
const OBJECT_CACHE_BYTES: usize = 1 << 20;

/// A lazily opened, shareable handle on one repository.
#[derive(Default)]
pub(crate) struct Reader {
    repo: OnceLock<Option<gix::ThreadSafeRepository>>,
    /// Handles given back after use. Each keeps its object cache, so the
    /// commits and trees every attempt reads (main's) come from memory:
    /// gix maps a loose object's file to read it, and unmapping it again
    /// interrupts every core the process runs on.
    idle: std::sync::Mutex<Vec<gix::Repository>>,
    /// Commits ancestry walks have read (see `ancestry`).
    commits: crate::ancestry::Commits,
}

/// A handle on the repository, back to the reader's pool when dropped.
pub(crate) struct Handle<'r> {
    repo: Option<gix::Repository>,
    idle: &'r std::sync::Mutex<Vec<gix::Repository>>,
}

impl std::ops::Deref for Handle<'_> {
    type Target = gix::Repository;

    fn deref(&self) -> &gix::Repository {
        // Some until drop.
        self.repo
            .as_ref()
            .unwrap_or_else(|| unreachable!("a handle is taken only on drop"))
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        if let (Some(repo), Ok(mut idle)) = (self.repo.take(), self.idle.lock()) {
            if idle.len() < IDLE_HANDLES {
                idle.push(repo);
            }
        }
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// Which worktree has a branch checked out (see `Reader::find_checkout`).
enum Holder {
    Nobody,
    At(PathBuf),
    /// One has, but its path could not be read.
    Unplaced,
}

impl Holder {
    fn at(place: Option<PathBuf>) -> Self {
        place.map_or(Holder::Unplaced, Holder::At)
    }
}

impl Reader {
    fn repo(&self, path: &Path) -> Option<Handle<'_>> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let repo = match pooled {
            Some(repo) => repo,
            None => {
                let mut repo = self
                    .repo
                    .get_or_init(|| gix::ThreadSafeRepository::open(path).ok())
                    .as_ref()?
                    .to_thread_local();
                repo.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
                repo
            }
        };
        Some(Handle {
            repo: Some(repo),
            idle: &self.idle,
        })
    }

    /// The full id `spec` (e.g. `main^{commit}`, `<id>^{tree}`) names.
    pub(crate) fn resolve(&self, path: &Path, spec: &str) -> Option<String> {
        let repo = self.repo(path)?;
        let id = repo.rev_parse_single(spec).ok()?;
        Some(id.detach().to_string())
    }

    /// The top level of the work tree at `path` when `path` is that top
    /// level itself (not a subdirectory, a `.git` directory or a bare
    /// repository, and no `core.worktree` elsewhere) in a repository owned
    /// by this user, as `git rev-parse --show-toplevel` would print it
    /// (normalized). None otherwise: the CLI finds it, or says why not.
    pub(crate) fn top_level(&self, path: &Path) -> Option<PathBuf> {
        let repo = self.repo(path)?;
        // git refuses a repository of another owner (`safe.directory`).
        if repo.git_dir_trust() != gix::sec::Trust::Full {
            return None;
        }
        let top = crate::normalize(&repo.current_dir().join(repo.workdir()?));
        (top == crate::normalize(path)).then_some(top)
    }

    /// `git rev-parse --path-format=absolute --git-common-dir`, normalized.
    pub(crate) fn common_dir(&self, path: &Path) -> Option<PathBuf> {
        let repo = self.repo(path)?;
        Some(crate::normalize(
            &repo.current_dir().join(repo.common_dir()),
        ))
    }

    /// The common dir when git's worktree records are plain (no
    /// per-worktree configuration, absolute paths, refs in files), so they
    /// can be written in-process (see `register`); None otherwise.
    pub(crate) fn plain_worktree_records(&self, path: &Path) -> Option<PathBuf> {
        let repo = self.repo(path)?;
        let config = repo.config_snapshot();
        let set = |key: &str| config.string(key).is_some();
        // A reftable repository keeps HEAD in its tables, not in a file.
        let keys = [
            "extensions.worktreeConfig",
            "worktree.useRelativePaths",
            "extensions.refStorage",
        ];
        if keys.iter().any(|k| set(k)) {
            return None;
        }
        Some(crate::normalize(
            &repo.current_dir().join(repo.common_dir()),
        ))
    }

    /// `git symbolic-ref --short -q HEAD` when HEAD names an existing local
    /// branch whose short name nothing else claims (git would print
    /// `heads/<name>` if a tag or another ref had that name). None
    /// otherwise, and when HEAD is detached: the caller asks the CLI.
    pub(crate) fn head_branch(&self, path: &Path) -> Option<String> {
        let repo = self.repo(path)?;
        let full = repo.head_name().ok()??;
        let short = full.as_bstr().to_str().ok()?.strip_prefix("refs/heads/")?;
        // git's and gix's lookup try refs/<name> and refs/tags/<name>
        // before refs/heads/<name>: finding the branch itself means no
        // other ref makes the short name ambiguous.
        let found = repo.try_find_reference(short).ok()??;
        (found.name().as_bstr() == full.as_bstr()).then(|| short.to_string())
    }

    /// Short names of the local branches starting with `prefix`, sorted,
    /// as `git for-each-ref refs/heads/` lists them (a branch whose commit
    /// is missing too). None when a branch is a symbolic ref or gix cannot
    /// read them.
    pub(crate) fn branches(&self, path: &Path, prefix: &str) -> Option<Vec<String>> {
        let repo = self.repo(path)?;
        let refs = repo.references().ok()?;
        let mut found = Vec::new();
        for r in refs.local_branches().ok()? {
            let r = r.ok()?;
            r.target().try_id()?;
            let name = r.name().as_bstr().to_str().ok()?;
            let short = name.strip_prefix("refs/heads/")?;
            if short.starts_with(prefix) {
                found.push(short.to_string());
            }
        }
        found.sort();
        Some(found)
    }

    /// `git worktree list`: the main worktree first, then the linked ones
    /// (including those whose directory is gone), each with its HEAD read
    /// from git's records. None when gix cannot tell as git would: a bare
    /// repository, a HEAD that is neither a commit id nor a branch with a
    /// commit, a record it cannot read.
    pub(crate) fn worktrees(&self, path: &Path) -> Option<Vec<crate::WorktreeInfo>> {
        let repo = self.repo(path)?;
        let common = repo.current_dir().join(repo.common_dir());
        // git names the main worktree after the common directory.
        let common = crate::normalize(&common);
        if common.file_name()? != ".git" {
            return None;
        }
        let mut list = vec![worktree_info(&repo, common.parent()?, &common)?];
        for proxy in repo.worktrees().ok()? {
            let base = proxy.base().ok()?;
            list.push(worktree_info(&repo, &base, proxy.git_dir())?);
        }
        Some(list)
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
        let a = object_id(&repo, ancestor)?;
        let d = object_id(&repo, descendant)?;
        self.commits.is_ancestor(&repo, a, d)
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
        match self.find_checkout(path, |name| name == wanted)? {
            Holder::Nobody => Some(None),
            Holder::At(place) => Some(Some(place)),
            // Found, but where it is cannot be told: ask the CLI.
            Holder::Unplaced => None,
        }
    }

    /// The first worktree whose checked-out branch (full ref name) `wanted`
    /// accepts, the main one first; None when gix cannot tell. A worktree's
    /// path is looked up only for the one found, so asking costs one small
    /// read per worktree.
    fn find_checkout(&self, path: &Path, wanted: impl Fn(&str) -> bool) -> Option<Holder> {
        let repo = self.repo(path)?;
        if repo.kind() != gix::repository::Kind::Common || repo.workdir().is_none() {
            return None;
        }
        if let Some(name) = repo.head_name().ok()? {
            if wanted(&name.as_bstr().to_string()) {
                return Some(Holder::at(repo.workdir().map(Path::to_path_buf)));
            }
        }
        for proxy in repo.worktrees().ok()? {
            let head = std::fs::read_to_string(proxy.git_dir().join("HEAD")).ok()?;
            if let Some(name) = head.trim().strip_prefix("ref: ") {
                if wanted(name.trim()) {
                    return Some(Holder::at(proxy.base().ok()));
                }
            }
        }
        Some(Holder::Nobody)
    }

    /// git's private directory for the linked worktree at `dir` (normalized),
    /// found through git's own records in the common directory, never
    /// through the worktree's `.git` file, which whatever ran in the
    /// worktree could have rewritten. None when there is no such record or
    /// gix cannot tell.
    pub(crate) fn worktree_git_dir(&self, path: &Path, dir: &Path) -> Option<PathBuf> {
        let repo = self.repo(path)?;
        if let Some(record) = named_record(&repo, dir) {
            return Some(record);
        }
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
        let fulls: Vec<String> = names.iter().map(|n| format!("refs/heads/{n}")).collect();
        if !matches!(
            self.find_checkout(path, |name| fulls.iter().any(|f| f == name))?,
            Holder::Nobody
        ) {
            return None;
        }
        let mut edits = Vec::with_capacity(names.len());
        for full in fulls {
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

    /// `git diff --stat base head`, computed in-process (see `stat`).
    pub(crate) fn diff_stat(&self, path: &Path, base: &str, head: &str) -> Option<String> {
        let repo = self.repo(path)?;
        crate::stat::files(&repo, base, head).map(|f| crate::stat::render(&f))
    }

    /// Detaches HEAD of the linked worktree whose git record is `record`
    /// at the commit its branch holds (not peeled), so it holds no branch.
    /// HEAD is rewritten as a file (see `register::write_head`) and the
    /// branch read through the shared handle: opening the worktree as a
    /// repository of its own (its configuration, its refs) cost more than
    /// the rest of parking, and parking holds the worktree lock. None when
    /// HEAD is not a plain branch or detached id.
    pub(crate) fn detach_head(&self, path: &Path, record: &Path) -> Option<()> {
        match self.head_of(path, record)? {
            (id, true) => {
                let id = id.to_string();
                crate::register::write_head(record, &crate::register::Head::Detached(&id)).ok()
            }
            // Already detached.
            (_, false) => Some(()),
        }
    }

    /// The commit HEAD of the linked worktree whose git record is `record`
    /// is at, read as [`Self::detach_head`] reads it. None when HEAD is not
    /// a plain branch or detached id.
    pub(crate) fn worktree_head(&self, path: &Path, record: &Path) -> Option<gix::ObjectId> {
        self.head_of(path, record).map(|(id, _)| id)
    }

    /// HEAD's commit, and whether HEAD names a branch (else it is detached).
    fn head_of(&self, path: &Path, record: &Path) -> Option<(gix::ObjectId, bool)> {
        let text = read_small_file(&record.join("HEAD"))?;
        let head = text.trim_end();
        let Some(name) = head.strip_prefix("ref: ") else {
            return gix::ObjectId::from_hex(head.as_bytes())
                .ok()
                .map(|id| (id, false));
        };
        if !name.starts_with("refs/heads/") {
            return None;
        }
        let repo = self.repo(path)?;
        let id = repo
            .try_find_reference(name)
            .ok()??
            .target()
            .try_id()?
            .to_owned();
        Some((id, true))
    }

    /// Points HEAD of the linked worktree whose git record is `record` at
    /// the branch `branch` (a symbolic ref, as a checkout of it leaves).
    /// None when `branch` is not a valid branch name or the write failed.
    pub(crate) fn attach_head(&self, record: &Path, branch: &str) -> Option<()> {
        let _: gix::refs::FullName = format!("refs/heads/{branch}").try_into().ok()?;
        crate::register::write_head(record, &crate::register::Head::Branch(branch)).ok()
    }

    /// The tree of merging `theirs` into `ours`, written to the object
    /// database, when gix merges them with no conflict at all, not even one
    /// it would resolve by force or on its own. None otherwise (and when gix
    /// cannot merge them): `git merge-tree` then decides, so a conflict is
    /// always reported by git.
    pub(crate) fn merge_clean(&self, path: &Path, ours: &str, theirs: &str) -> Option<String> {
        use gix::merge::blob::builtin_driver::text::Labels;
        use gix::merge::tree::TreatAsUnresolved;
        let repo = self.repo(path)?;
        let ours = object_id(&repo, ours)?;
        let theirs = object_id(&repo, theirs)?;
        let options = repo.tree_merge_options().ok()?;
        let labels = Labels {
            ancestor: None,
            current: Some("ours".into()),
            other: Some("theirs".into()),
        };
        let mut merged = match self.plain_base(&repo, ours, theirs) {
            // No history walk: the base is known.
            Some(base) => {
                let tree = |id: gix::ObjectId| -> Option<gix::ObjectId> {
                    Some(repo.find_commit(id).ok()?.tree_id().ok()?.detach())
                };
                repo.merge_trees(tree(base)?, tree(ours)?, tree(theirs)?, labels, options)
                    .ok()?
            }
            None => {
                repo.merge_commits(ours, theirs, labels, options.into())
                    .ok()?
                    .tree_merge
            }
        };
        if !merged.conflicts.is_empty()
            || merged.has_unresolved_conflicts(TreatAsUnresolved::forced_resolution())
        {
            return None;
        }
        Some(merged.tree.write().ok()?.to_string())
    }

    /// The merge base of `ours` and `theirs` when it needs no search:
    /// `theirs` has a single parent that `ours` descends from (an orch
    /// branch of one commit on an earlier main). Every common ancestor is
    /// then an ancestor of that parent, so it is the one best base git
    /// would find. None when that does not hold, or `theirs` is an
    /// ancestor of `ours` itself.
    fn plain_base(
        &self,
        repo: &gix::Repository,
        ours: gix::ObjectId,
        theirs: gix::ObjectId,
    ) -> Option<gix::ObjectId> {
        let commit = repo.find_commit(theirs).ok()?;
        let mut parents = commit.parent_ids();
        let (parent, None) = (parents.next()?.detach(), parents.next()) else {
            return None;
        };
        let merged_already = self.commits.is_ancestor(repo, theirs, ours)?;
        (!merged_already && self.commits.is_ancestor(repo, parent, ours)?).then_some(parent)
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

/// The object `spec` names: a full id is that object, as it is to git
/// (without the ref lookups a revision costs); anything else is parsed.
fn object_id(repo: &gix::Repository, spec: &str) -> Option<gix::ObjectId> {
    if crate::is_full_id(spec) {
        return gix::ObjectId::from_hex(spec.as_bytes()).ok();
    }
    Some(repo.rev_parse_single(spec).ok()?.detach())
}

/// The record `<dir>/.git` names, when git's own record agrees: a direct
/// child of `<common dir>/worktrees` whose `gitdir` file points back at
/// `<dir>/.git`. The `.git` file only says where to look (one record read
/// instead of all of them): whatever ran in the worktree may have rewritten
/// it, so it is read without following links or blocking, and what it
/// names counts only when the common directory confirms it.
fn named_record(repo: &gix::Repository, dir: &Path) -> Option<PathBuf> {
    let text = read_small_file(&dir.join(".git"))?;
    let named = Path::new(text.strip_prefix("gitdir:")?.trim());
    let record = dir.join(named).canonicalize().ok()?;
    // Spelled as the listing spells records, which callers compare with.
    let worktrees = repo.current_dir().join(repo.common_dir()).join("worktrees");
    if record.parent() != Some(worktrees.canonicalize().ok()?.as_path()) {
        return None;
    }
    let record = worktrees.join(record.file_name()?);
    let gitdir = record.join("gitdir");
    let base = gix::discover::path::without_dot_git_dir(
        gix::discover::path::from_plain_file_relative_to_file(&gitdir)?.ok()?,
    );
    let back = base == dir || base.canonicalize().ok().as_deref() == Some(dir);
    back.then_some(record)
}

/// The text of the regular file at `path` if it is small (a pointer file),
/// read without following a symlink and without waiting on a FIFO.
fn read_small_file(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MAX: u64 = 4096;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX {
        return None;
    }
    let mut text = String::new();
    file.take(MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// One `git worktree list` entry: the worktree at `path`, whose HEAD is in
/// the git directory `git_dir`. None when HEAD is not plainly a commit id
/// or a branch at a commit.
fn worktree_info(
    repo: &gix::Repository,
    path: &Path,
    git_dir: &Path,
) -> Option<crate::WorktreeInfo> {
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim_end();
    let (branch, id) = match head.strip_prefix("ref: ") {
        Some(name) => {
            let name = name.trim();
            let found = repo.try_find_reference(name).ok()??;
            if found.name().as_bstr() != name {
                return None;
            }
            let id = found.target().try_id()?.to_string();
            let short = name.strip_prefix("refs/heads/").unwrap_or(name);
            (Some(short.to_string()), id)
        }
        None if crate::is_full_id(head) => (None, head.to_string()),
        None => return None,
    };
    Some(crate::WorktreeInfo {
        path: path.to_path_buf(),
        branch,
        head: id,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    /// Runs git for test setup; its trimmed stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = git_raw(dir, args);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn git_raw(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap()
    }

    fn commit(dir: &Path, file: &str) -> String {
        std::fs::write(dir.join(file), file).unwrap();
        git(dir, &["add", file]);
        git(dir, &["commit", "-q", "-m", file]);
        git(dir, &["rev-parse", "HEAD"])
    }

    /// A repository on `main` with one commit, and a place beside it.
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().canonicalize().unwrap().join("repo");
        std::fs::create_dir(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        commit(&path, "a.txt");
        (tmp, path)
    }

    #[test]
    fn the_top_level_common_dir_and_branch_are_the_clis() {
        let (tmp, path) = repo();
        let wt = tmp.path().canonicalize().unwrap().join("wt");
        git(
            &path,
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
        );
        std::fs::create_dir(path.join("sub")).unwrap();
        let cli_top = |p: &Path| PathBuf::from(git(p, &["rev-parse", "--show-toplevel"]));
        let cli_common = |p: &Path| {
            let out = git(
                p,
                &["rev-parse", "--path-format=absolute", "--git-common-dir"],
            );
            crate::normalize(Path::new(&out))
        };
        for p in [&path, &wt] {
            let reader = Reader::default();
            assert_eq!(reader.top_level(p), Some(cli_top(p)));
            assert_eq!(reader.common_dir(p), Some(cli_common(p)));
            let branch = git(p, &["symbolic-ref", "--short", "-q", "HEAD"]);
            assert_eq!(reader.head_branch(p), Some(branch));
        }
        // Not a top level: the CLI is asked (and finds it, or says why not).
        assert_eq!(Reader::default().top_level(&path.join("sub")), None);
        assert_eq!(Reader::default().top_level(&path.join(".git")), None);

        // A tag of the branch's name makes git print `heads/main`.
        git(&path, &["tag", "main"]);
        assert_eq!(
            git(&path, &["symbolic-ref", "--short", "-q", "HEAD"]),
            "heads/main"
        );
        assert_eq!(Reader::default().head_branch(&path), None);
        git(&path, &["tag", "-d", "main"]);
        git(&path, &["checkout", "-q", "--detach"]);
        assert_eq!(Reader::default().head_branch(&path), None);
    }

    #[test]
    fn branches_are_for_each_refs() {
        let (_tmp, path) = repo();
        for b in ["orch/b", "orch/a", "orch-not", "other"] {
            git(&path, &["branch", b]);
        }
        git(&path, &["pack-refs", "--all"]);
        git(&path, &["branch", "orch/c"]);
        // A branch whose commit is missing: git lists it.
        let missing = "1".repeat(40);
        std::fs::write(
            path.join(".git/refs/heads/orch/broken"),
            format!("{missing}\n"),
        )
        .unwrap();
        let cli = |prefix: &str| -> Vec<String> {
            git(
                &path,
                &["for-each-ref", "--format=%(refname)", "refs/heads/"],
            )
            .lines()
            .filter_map(|l| l.strip_prefix("refs/heads/"))
            .filter(|b| b.starts_with(prefix))
            .map(str::to_string)
            .collect()
        };
        let reader = Reader::default();
        for prefix in ["orch/", "", "o"] {
            assert_eq!(
                reader.branches(&path, prefix),
                Some(cli(prefix)),
                "{prefix}"
            );
        }
        assert_eq!(cli("orch/"), ["orch/a", "orch/b", "orch/broken", "orch/c"]);
        // A symbolic branch: the CLI answers.
        git(
            &path,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );
        assert_eq!(reader.branches(&path, "orch/"), None);
    }

    #[test]
    fn worktrees_are_the_listing() {
        let (tmp, path) = repo();
        let root = tmp.path().canonicalize().unwrap();
        let dir = |n: &str| root.join(n).to_str().unwrap().to_string();
        git(&path, &["worktree", "add", "-q", "-b", "one", &dir("one")]);
        git(&path, &["worktree", "add", "-q", "--detach", &dir("two")]);
        git(
            &path,
            &["worktree", "add", "-q", "-b", "gone", &dir("gone")],
        );
        git(&path, &["worktree", "add", "-q", "--detach", &dir("lost")]);
        commit(&root.join("one"), "b.txt");
        std::fs::remove_dir_all(root.join("gone")).unwrap();
        // A record without its `gitdir` file, and a stray directory: git
        // lists neither.
        std::fs::remove_file(path.join(".git/worktrees/lost/gitdir")).unwrap();
        std::fs::create_dir(path.join(".git/worktrees/stray")).unwrap();
        let by_path = |mut l: Vec<crate::WorktreeInfo>| {
            l[1..].sort_by(|a, b| a.path.cmp(&b.path));
            l
        };
        let cli = crate::parse_worktrees(&git(&path, &["worktree", "list", "--porcelain", "-z"]));
        let ours = Reader::default().worktrees(&path).unwrap();
        assert_eq!(by_path(ours), by_path(cli.clone()));
        assert_eq!(cli.len(), 4);
        // The same from a linked worktree.
        let from_linked = Reader::default().worktrees(&root.join("one")).unwrap();
        assert_eq!(by_path(from_linked), by_path(cli));
        // A worktree on an unborn branch: the CLI answers.
        git(
            &root.join("two"),
            &["symbolic-ref", "HEAD", "refs/heads/unborn"],
        );
        assert!(Reader::default().worktrees(&path).is_none());
    }

    #[test]
    fn a_worktrees_record_is_found_by_its_git_file_and_checked() {
        let (tmp, path) = repo();
        let root = tmp.path().canonicalize().unwrap();
        let one = root.join("one");
        let two = root.join("two");
        for d in [&one, &two] {
            git(
                &path,
                &["worktree", "add", "-q", "--detach", d.to_str().unwrap()],
            );
        }
        let reader = Reader::default();
        let listed = |dir: &Path| {
            let repo = reader.repo(&path).unwrap();
            let proxies = repo.worktrees().unwrap();
            proxies
                .iter()
                .find(|p| p.base().unwrap() == dir)
                .map(|p| p.git_dir().to_path_buf())
        };
        let repo = reader.repo(&path).unwrap();
        let record_one = named_record(&repo, &one).unwrap();
        assert_eq!(Some(record_one.clone()), listed(&one));
        assert_eq!(
            record_one.canonicalize().unwrap(),
            PathBuf::from(git(&one, &["rev-parse", "--absolute-git-dir"]))
        );

        // `.git` rewritten to name another worktree's record: not believed,
        // and the listing gives the true one.
        let record_two = named_record(&repo, &two).unwrap();
        std::fs::write(
            one.join(".git"),
            format!("gitdir: {}\n", record_two.display()),
        )
        .unwrap();
        assert_eq!(named_record(&repo, &one), None);
        assert_eq!(
            reader.worktree_git_dir(&path, &one),
            Some(record_one.clone())
        );
        // Nor one outside the common directory, a FIFO or a symlink.
        std::fs::write(
            one.join(".git"),
            format!("gitdir: {}\n", path.join(".git").display()),
        )
        .unwrap();
        assert_eq!(named_record(&repo, &one), None);
        std::fs::remove_file(one.join(".git")).unwrap();
        let fifo = std::ffi::CString::new(one.join(".git").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(named_record(&repo, &one), None);
        std::fs::remove_file(one.join(".git")).unwrap();
        std::os::unix::fs::symlink(two.join(".git"), one.join(".git")).unwrap();
        assert_eq!(named_record(&repo, &one), None);
        assert_eq!(reader.worktree_git_dir(&path, &one), Some(record_one));
    }

    #[test]
    fn ancestry_is_merge_bases() {
        let (_tmp, path) = repo();
        let base = git(&path, &["rev-parse", "HEAD"]);
        let a1 = commit(&path, "b.txt");
        let a2 = commit(&path, "c.txt");
        git(&path, &["checkout", "-q", "-b", "side", &base]);
        let s1 = commit(&path, "d.txt");
        git(&path, &["merge", "-q", "--no-edit", "main"]);
        let merge = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["checkout", "-q", "--orphan", "alone"]);
        let alone = commit(&path, "e.txt");
        let all = [&base, &a1, &a2, &s1, &merge, &alone];
        let reader = Reader::default();
        for a in all {
            for d in all {
                let cli = git_raw(&path, &["merge-base", "--is-ancestor", a, d]);
                let expected = cli.status.code() == Some(0);
                assert_eq!(reader.is_ancestor(&path, a, d), Some(expected), "{a} {d}");
            }
        }
    }

    #[test]
    fn an_open_repository_sees_refs_objects_and_packs_made_after() {
        let (_tmp, path) = repo();
        let reader = Reader::default();
        let first = reader.resolve(&path, "HEAD").unwrap();
        let second = commit(&path, "b.txt");
        assert_eq!(reader.resolve(&path, "main").unwrap(), second);
        assert!(reader.is_ancestor(&path, &first, &second).unwrap());
        // Everything packed and the loose copies gone.
        git(&path, &["gc", "-q", "--prune=now"]);
        assert!(!path.join(".git/refs/heads/main").exists());
        let third = commit(&path, "c.txt");
        git(&path, &["branch", "later"]);
        git(&path, &["repack", "-q", "-a", "-d"]);
        git(&path, &["pack-refs", "--all"]);
        git(&path, &["prune", "--expire=now"]);
        for (spec, id) in [("later", &third), ("main~1", &second), ("main~2", &first)] {
            assert_eq!(reader.resolve(&path, spec).as_ref(), Some(id), "{spec}");
        }
        assert!(reader.is_ancestor(&path, &first, &third).unwrap());
        assert_eq!(
            reader.diff_stat(&path, &first, &third).unwrap(),
            String::from_utf8(git_raw(&path, &["diff", "--stat", &first, &third]).stdout).unwrap()
        );
        assert_eq!(reader.branches(&path, "").unwrap(), ["later", "main"]);
    }

    /// A clean in-process merge yields exactly the tree `git merge-tree`
    /// writes; anything with a conflict, even one gix would resolve, is
    /// left to git.
    #[test]
    fn clean_merges_match_git_merge_tree_and_conflicts_are_left_to_git() {
        let (_tmp, path) = repo();
        let base = git(&path, &["rev-parse", "HEAD"]);
        let branch = |name: &str, edit: &dyn Fn(&Path)| {
            git(&path, &["checkout", "-q", "-b", name, &base]);
            edit(&path);
            git(&path, &["add", "-A"]);
            git(&path, &["commit", "-q", "-m", name]);
            git(&path, &["rev-parse", "HEAD"])
        };
        let write = |f: &str, text: &str| {
            let f = f.to_string();
            let text = text.to_string();
            move |p: &Path| {
                let file = p.join(&f);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, &text).unwrap();
            }
        };
        let adds_b = branch("adds-b", &write("b.txt", "b\n"));
        let adds_deep = branch("adds-deep", &write("src/deep/c.txt", "c\n"));
        let removes_a = branch("removes-a", &|p: &Path| {
            std::fs::remove_file(p.join("a.txt")).unwrap()
        });
        let rewrites_a = branch("rewrites-a", &write("a.txt", "left\n"));
        let rewrites_a_too = branch("rewrites-a-too", &write("a.txt", "right\n"));
        // Two commits (the base is searched for), and a merge commit as
        // ours (the base is the branch's parent, found without a search).
        branch("two-steps", &write("d.txt", "d\n"));
        write("e.txt", "e\n")(&path);
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "second step"]);
        let two_steps = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["checkout", "-q", "adds-b"]);
        git(&path, &["merge", "-q", "--no-edit", "adds-deep"]);
        let merged = git(&path, &["rev-parse", "HEAD"]);
        let reader = Reader::default();
        let cli_tree =
            |ours: &str, theirs: &str| git(&path, &["merge-tree", "--write-tree", ours, theirs]);
        for (ours, theirs) in [
            (&adds_b, &adds_deep),
            (&adds_deep, &removes_a),
            (&adds_b, &rewrites_a),
            (&base, &adds_b),
            (&merged, &removes_a),
            (&merged, &two_steps),
            (&two_steps, &merged),
            (&merged, &adds_deep),
        ] {
            let tree = reader.merge_clean(&path, ours, theirs).unwrap();
            assert_eq!(tree, cli_tree(ours, theirs), "{ours} + {theirs}");
        }
        // Branch names work as git's revisions do.
        assert_eq!(
            reader.merge_clean(&path, "adds-b", "adds-deep"),
            Some(cli_tree(&adds_b, &adds_deep))
        );
        // Both sides change the same line, or one removes what the other
        // changes: git reports it.
        assert_eq!(
            reader.merge_clean(&path, &rewrites_a, &rewrites_a_too),
            None
        );
        assert_eq!(reader.merge_clean(&path, &removes_a, &rewrites_a), None);
        assert_eq!(reader.merge_clean(&path, &adds_b, "no-such-branch"), None);
    }
}
