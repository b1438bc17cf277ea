//! An attempt's commit with one git process: `git add` stages the work (the
//! CLI stays the authority on what a worktree holds: ignore rules,
//! attributes and filters, embedded repositories), and the rest happens
//! in-process through gix: listing what is staged (the worktree's index
//! against HEAD's tree), writing the index's trees as `git write-tree`
//! would, the commit object, and HEAD's move with its reflog entry.
//!
//! Every in-process step is optional: whenever the repository or the
//! worktree is in a state gix should not judge (an unborn HEAD, a merge in
//! progress, conflicted, sparse or split indexes, hooks that `git commit`
//! would run, identity set by the environment…), the CLI does it exactly as
//! before. What is written in-process is what `git commit` would write.

use crate::{
    Git, GitError, WorktreeChange, EXCLUDED_FROM_COMMITS, IDENTITY, OUTPUT_LIMIT, TIMEOUT,
};
use gix::bstr::ByteSlice;
use gix::objs::tree::{Entry, EntryKind, EntryMode};
use gix::ObjectId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Files in a worktree's git directory that mean `git commit` would do more
/// than commit the index (finish a merge, a cherry-pick, a rebase step…).
const IN_PROGRESS: [&str; 11] = [
    "MERGE_HEAD",
    "MERGE_MSG",
    "MERGE_MODE",
    "MERGE_RR",
    "AUTO_MERGE",
    "SQUASH_MSG",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "sequencer",
    "rebase-merge",
    "rebase-apply",
];

/// Hooks `git commit --no-verify` still runs.
const COMMIT_HOOKS: [&str; 4] = [
    "prepare-commit-msg",
    "post-commit",
    "reference-transaction",
    "post-index-change",
];

/// Environment that changes what `git commit` records (identity, dates,
/// the reflog message).
const COMMIT_ENV: [&str; 7] = [
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_REFLOG_ACTION",
];

/// Configuration that `git commit` honours over the identity orch passes,
/// or that changes how objects and refs are written.
const COMMIT_CONFIG: [&str; 8] = [
    "author.name",
    "author.email",
    "committer.name",
    "committer.email",
    "core.sharedRepository",
    "extensions.objectFormat",
    "extensions.compatObjectFormat",
    "extensions.refStorage",
];

impl Git {
    /// Stages everything in `worktree` as `commit_all` does (generated
    /// caches skipped) and returns what is now staged relative to HEAD:
    /// the same entries `worktree_changes` gives for the worktree before
    /// the add, sorted by path. Read in-process when gix can; otherwise
    /// `worktree_changes` after the add answers (which also lists a
    /// submodule's uncommitted work, as before the add).
    pub async fn stage_all(&self, worktree: &Path) -> Result<Vec<WorktreeChange>, GitError> {
        self.add_all(worktree).await?;
        self.staged_now(worktree).await
    }

    /// Commits what is staged in `worktree` as orch (hooks skipped), on
    /// HEAD's branch or a detached HEAD. None when the index holds HEAD's
    /// tree (nothing to commit); otherwise the new HEAD. In-process when it
    /// is safe, else through `git commit`.
    pub async fn commit_staged(
        &self,
        worktree: &Path,
        message: &str,
    ) -> Result<Option<String>, GitError> {
        let (dir, text) = (worktree.to_path_buf(), message.to_string());
        let prepared = self.prepared.take(&crate::normalize(worktree));
        match in_blocking(move || commit_in_process(&dir, &text, prepared)).await {
            Some(done) => Ok(done),
            None => self.commit_cli(worktree, message).await,
        }
    }

    /// Stages everything in `worktree` as [`Self::stage_all`] would, into an
    /// index file of its own: the worktree's index is left as it was, so
    /// the agent's own `git diff` still shows its work. Adopted later with
    /// [`Self::adopt_staged`], it commits exactly what the worktree held at
    /// this moment, whatever ran in it since (a test run's outputs).
    pub async fn snapshot_staged(&self, worktree: &Path) -> Result<StagedSnapshot, GitError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = crate::normalize(worktree);
        let record = self
            .reader
            .worktree_git_dir(&self.repo, &dir)
            .ok_or_else(|| GitError::Io {
                action: "cannot snapshot a worktree git does not list",
                path: dir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut snapshot = StagedSnapshot {
            index: record.join(format!("orch-snapshot-{}-{n}.index", std::process::id())),
            live: record.join("index"),
            worktree: dir,
            prepared: None,
        };
        // From the worktree's index itself, linked: its stat cache spares
        // the add hashing every unchanged file again, and the file's own
        // mtime keeps git's racy-clean check intact (a copy, newer than a
        // same-size edit made in the same second, would hide that edit).
        // git writes the snapshot through a lock file and a rename, so the
        // link is replaced, never written through.
        match tokio::fs::hard_link(&snapshot.live, &snapshot.index).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GitError::Io {
                    action: "cannot link the worktree's index",
                    path: snapshot.live.clone(),
                    source,
                })
            }
        }
        let mut add = vec!["add", "-A", "--", "."];
        add.extend(EXCLUDED_FROM_COMMITS);
        self.ok_in_index(worktree, &add, &snapshot.index).await?;
        // While nothing waits on it: the tree the commit will need, and
        // what it changes.
        let (dir, index) = (snapshot.worktree.clone(), snapshot.index.clone());
        snapshot.prepared = in_blocking(move || prepare(&dir, &index)).await;
        Ok(snapshot)
    }

    /// Makes `snapshot` the worktree's index (one rename) and returns what
    /// is staged relative to HEAD, as [`Self::stage_all`] does.
    pub async fn adopt_staged(
        &self,
        mut snapshot: StagedSnapshot,
    ) -> Result<Vec<WorktreeChange>, GitError> {
        tokio::fs::rename(&snapshot.index, &snapshot.live)
            .await
            .map_err(|source| GitError::Io {
                action: "cannot adopt a staged snapshot as the worktree's index",
                path: snapshot.index.clone(),
                source,
            })?;
        // The rename keeps the file, so its stamp still matches unless
        // something replaced the index since; HEAD must not have moved.
        let record = snapshot.live.parent().map(Path::to_path_buf);
        let still = |p: &Prepared| {
            IndexStamp::of(&snapshot.live) == Some(p.stamp)
                && record
                    .as_deref()
                    .and_then(|r| self.reader.worktree_head(&self.repo, r))
                    == Some(p.head)
        };
        match snapshot.prepared.take().filter(still) {
            Some(prepared) => {
                let changes = prepared.changes.clone();
                self.prepared.keep(&snapshot.worktree, prepared);
                Ok(changes)
            }
            None => self.staged_now(&snapshot.worktree).await,
        }
    }

    /// What is staged in `worktree` relative to HEAD, sorted by path.
    async fn staged_now(&self, worktree: &Path) -> Result<Vec<WorktreeChange>, GitError> {
        let dir = worktree.to_path_buf();
        match in_blocking(move || staged(&dir)).await {
            Some(changes) => Ok(changes),
            None => {
                let mut changes = self.worktree_changes(worktree).await?;
                changes.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(changes)
            }
        }
    }

    /// `git add -A` of everything but the generated caches.
    pub(crate) async fn add_all(&self, worktree: &Path) -> Result<(), GitError> {
        let mut add = vec!["add", "-A", "--", "."];
        add.extend(EXCLUDED_FROM_COMMITS);
        self.ok(worktree, &add).await?;
        Ok(())
    }

    /// Puts `paths` (relative to `worktree`'s top level) back in the index
    /// as HEAD has them, leaving the files alone, so a later add hashes
    /// them again.
    pub async fn unstage(&self, worktree: &Path, paths: &[String]) -> Result<(), GitError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut args = vec!["--literal-pathspecs", "reset", "-q", "--"];
        args.extend(paths.iter().map(String::as_str));
        self.ok(worktree, &args).await?;
        Ok(())
    }

    /// `git commit` of the index, as orch with hooks skipped.
    async fn commit_cli(&self, worktree: &Path, message: &str) -> Result<Option<String>, GitError> {
        // core.abbrev=40 makes the summary line `[branch <full id>] …`, so
        // the new commit is known without another process.
        let mut commit = IDENTITY.to_vec();
        commit.extend([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.abbrev=40",
            "commit",
            "--no-verify",
            "-m",
            message,
        ]);
        let out = self.raw(worktree, &commit, TIMEOUT, OUTPUT_LIMIT).await?;
        if out.success() {
            return match crate::commit_id_from_summary(&out.stdout) {
                Some(id) => Ok(Some(id)),
                None => Ok(Some(self.head(worktree).await?)),
            };
        }
        // Exit 1 is also "nothing to commit"; tell it apart from a failure.
        let args = ["diff", "--cached", "--quiet"];
        let staged = self.raw(worktree, &args, TIMEOUT, 4096).await?;
        match staged.exit_code {
            Some(0) => Ok(None),
            _ => Err(self.command_error(worktree, &commit, &out)),
        }
    }
}

/// A worktree's changes staged into an index file of their own (see
/// [`Git::snapshot_staged`]). Dropped without being adopted, the file goes.
#[derive(Debug)]
pub struct StagedSnapshot {
    index: PathBuf,
    /// The worktree's own index, which adoption replaces.
    live: PathBuf,
    worktree: PathBuf,
    /// Its tree and changes, when gix could work them out.
    prepared: Option<Prepared>,
}

/// A snapshot index's tree (written to the object store) and its changes
/// against the HEAD it was staged on, worked out while the model thought,
/// so that the attempt's end neither lists nor writes them again.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    head: ObjectId,
    tree: ObjectId,
    changes: Vec<WorktreeChange>,
    /// The index file they were read from.
    stamp: IndexStamp,
}

/// Which index file, in which state: git never writes an index in place
/// (it writes `index.lock` and renames it over), so any change to the
/// index is a different file, and a rename keeps the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl IndexStamp {
    fn of(path: &Path) -> Option<IndexStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(IndexStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The prepared trees of adopted snapshots, by worktree, until their commit.
#[derive(Debug, Default)]
pub(crate) struct PreparedTrees(std::sync::Mutex<HashMap<PathBuf, Prepared>>);

impl PreparedTrees {
    fn keep(&self, worktree: &Path, prepared: Prepared) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(worktree.to_path_buf(), prepared);
        }
    }

    fn take(&self, worktree: &Path) -> Option<Prepared> {
        self.0.lock().ok()?.remove(worktree)
    }
}

/// The tree of the index file `index_path` for the worktree at `worktree`,
/// written as `git write-tree` would, and what it changes against HEAD.
/// None when gix should not answer (as for [`staged`] and the commit).
fn prepare(worktree: &Path, index_path: &Path) -> Option<Prepared> {
    let repo = open(worktree)?;
    let head = head(&repo)?;
    let stamp = IndexStamp::of(index_path)?;
    let file = gix::index::File::at(index_path, repo.object_hash(), false, Default::default());
    let index = plain(file.ok()?)?;
    let gitlink = gix::index::entry::Mode::COMMIT;
    if index.entries().iter().any(|e| e.mode == gitlink) {
        return None;
    }
    let mut walk = Walk::new(&repo, &index, true);
    let tree = walk.dir(b"", index.entries(), Some(head.tree), index.tree())?;
    // Read whole and unchanged: nothing replaced it meanwhile.
    (IndexStamp::of(index_path)? == stamp).then(|| Prepared {
        head: head.commit,
        tree,
        changes: walk.into_changes(),
        stamp,
    })
}

impl Drop for StagedSnapshot {
    fn drop(&mut self) {
        // Gone already once adopted.
        let _ = std::fs::remove_file(&self.index);
    }
}

/// Runs `work` off the async threads (a large index or tree takes a while);
/// None when it answers None or could not run.
async fn in_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok().flatten()
}

/// The worktree at `worktree` in gix, when it is that worktree's top level
/// (the CLI's `-- .` covers the whole worktree only then) and fully trusted
/// (otherwise gix hides configuration, such as `core.hooksPath`, that git
/// would use or refuse the repository over).
pub(crate) fn open(worktree: &Path) -> Option<gix::Repository> {
    let repo = gix::open(worktree).ok()?;
    if repo.git_dir_trust() != gix::sec::Trust::Full {
        return None;
    }
    let top = repo.workdir()?.canonicalize().ok()?;
    (top == worktree.canonicalize().ok()?).then_some(repo)
}

/// The commit HEAD is on, and its tree.
struct Head {
    commit: ObjectId,
    tree: ObjectId,
}

/// HEAD when it is a branch under `refs/heads/` that points at a commit, or
/// a detached commit. None otherwise (unborn, a symbolic chain, a tag…).
fn head(repo: &gix::Repository) -> Option<Head> {
    let head = repo.find_reference("HEAD").ok()?;
    let commit = match head.target() {
        gix::refs::TargetRef::Symbolic(name) => {
            if !name.as_bstr().starts_with(b"refs/heads/") {
                return None;
            }
            let branch = repo.find_reference(name).ok()?;
            branch.target().try_id()?.to_owned()
        }
        gix::refs::TargetRef::Object(id) => id.to_owned(),
    };
    let tree = repo.find_commit(commit).ok()?.tree_id().ok()?.detach();
    Some(Head { commit, tree })
}

/// The worktree's index when every entry is a plain stage-0 file, symlink or
/// gitlink with a canonical mode: no conflicts, no intent-to-add or
/// skip-worktree entries, not sparse, not split.
fn plain_index(repo: &gix::Repository) -> Option<gix::index::File> {
    plain(repo.open_index().ok()?)
}

/// `index` when it is plain (see [`plain_index`]).
fn plain(index: gix::index::File) -> Option<gix::index::File> {
    use gix::index::entry::Flags;
    let plain = !index.is_sparse()
        && index.link().is_none()
        && index.entries().iter().all(|e| {
            e.stage_raw() == 0
                && !e
                    .flags
                    .intersects(Flags::INTENT_TO_ADD | Flags::SKIP_WORKTREE)
                && leaf_kind(e).is_some()
        });
    plain.then_some(index)
}

/// The tree entry kind of an index entry; None for anything a tree would
/// not hold as is (a sparse directory, a non-canonical mode).
fn leaf_kind(entry: &gix::index::Entry) -> Option<EntryKind> {
    let mode = entry.mode.to_tree_entry_mode()?;
    (mode == mode.normalized() && !mode.is_tree()).then(|| mode.kind())
}

/// What is staged in `worktree` relative to HEAD, sorted by path; None
/// when gix cannot tell as `git status` would.
pub(crate) fn staged(worktree: &Path) -> Option<Vec<WorktreeChange>> {
    staged_in(&open(worktree)?)
}

/// [`staged`] in a repository already opened at its worktree.
pub(crate) fn staged_in(repo: &gix::Repository) -> Option<Vec<WorktreeChange>> {
    let head = head(repo)?;
    let index = plain_index(repo)?;
    // A submodule's own uncommitted work shows in `git status` but is not in
    // the index: let the CLI list it.
    let gitlink = gix::index::entry::Mode::COMMIT;
    if index.entries().iter().any(|e| e.mode == gitlink) {
        return None;
    }
    let mut walk = Walk::new(repo, &index, false);
    walk.dir(b"", index.entries(), Some(head.tree), index.tree())?;
    Some(walk.into_changes())
}

/// `git commit --no-verify -m message` of `worktree`'s index as orch, done
/// in-process: `Some(None)` when the index holds HEAD's tree, `Some(id)`
/// for the new commit, None when the CLI should do it.
fn commit_in_process(
    worktree: &Path,
    message: &str,
    prepared: Option<Prepared>,
) -> Option<Option<String>> {
    let repo = open(worktree)?;
    if !plain_commit(&repo) {
        return None;
    }
    let start = head(&repo)?;
    // The prepared tree stands while HEAD and the index are the ones it
    // was read from.
    let index_now = IndexStamp::of(&repo.index_path());
    let tree = match prepared.filter(|p| p.head == start.commit && index_now == Some(p.stamp)) {
        Some(p) => p.tree,
        None => {
            let index = plain_index(&repo)?;
            let mut walk = Walk::new(&repo, &index, true);
            walk.dir(b"", index.entries(), Some(start.tree), index.tree())?
        }
    };
    if tree == start.tree {
        return Some(None);
    }
    let message = cleaned(message)?;
    let orch = gix::actor::Signature {
        name: "orch".into(),
        email: "orch@localhost".into(),
        time: gix::date::Time::now_local_or_utc(),
    };
    let commit = gix::objs::Commit {
        tree,
        parents: std::iter::once(start.commit).collect(),
        author: orch.clone(),
        committer: orch.clone(),
        encoding: None,
        message: message.as_str().into(),
        extra_headers: Vec::new(),
    };
    let id = repo.write_object(&commit).ok()?.detach();
    let subject = message.lines().next().unwrap_or_default();
    let reflog = reflog_message(&format!("commit: {subject}"));
    let mut time = gix::date::parse::TimeBuf::default();
    let moved = move_head(&repo, start.commit, id, &reflog, orch.to_ref(&mut time));
    // A failed edit may still have moved HEAD (a reflog write failing after
    // the ref); only a HEAD that is not at the new commit needs the CLI.
    if moved || head(&repo).is_some_and(|h| h.commit == id) {
        return Some(Some(id.to_string()));
    }
    None
}

/// Moves HEAD (its branch, or HEAD itself when detached) from `old` to
/// `new` if it is still at `old`, with reflog entries for both as `git
/// commit` writes them. False when it did not.
fn move_head(
    repo: &gix::Repository,
    old: ObjectId,
    new: ObjectId,
    reflog: &str,
    committer: gix::actor::SignatureRef<'_>,
) -> bool {
    use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
    use gix::refs::Target;
    let Ok(name) = "HEAD".try_into() else {
        return false;
    };
    let edit = RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: reflog.into(),
            },
            // Split onto the branch when HEAD is symbolic: the branch must
            // still be at `old`.
            expected: PreviousValue::MustExistAndMatch(Target::Object(old)),
            new: Target::Object(new),
        },
        name,
        deref: true,
    };
    repo.edit_references_as([edit], Some(committer)).is_ok()
}

/// Whether `git commit --no-verify` in this worktree would do nothing but
/// commit the index as orch: no operation in progress, no hook it would
/// run, no identity or format setting that would change what it writes,
/// and no other git process writing the index right now.
fn plain_commit(repo: &gix::Repository) -> bool {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let git_dir = repo.git_dir();
    if IN_PROGRESS.iter().any(|f| exists(&git_dir.join(f))) || exists(&git_dir.join("index.lock")) {
        return false;
    }
    if COMMIT_ENV.iter().any(|v| std::env::var_os(v).is_some()) {
        return false;
    }
    let config = repo.config_snapshot();
    if COMMIT_CONFIG.iter().any(|k| config.string(*k).is_some()) {
        return false;
    }
    // With -m, git cleans the message up as "whitespace" unless told else.
    let cleanup = config.string("commit.cleanup");
    if cleanup.is_some_and(|c| c != "default" && c != "whitespace") {
        return false;
    }
    let encoding = config.string("i18n.commitEncoding");
    if encoding
        .is_some_and(|e| !e.eq_ignore_ascii_case(b"utf-8") && !e.eq_ignore_ascii_case(b"utf8"))
    {
        return false;
    }
    // Hooks configured by name (`hook.<name>.command`) rather than by file.
    if config
        .plumbing()
        .sections_by_name("hook")
        .is_some_and(|mut s| s.next().is_some())
    {
        return false;
    }
    match hooks_dir(repo) {
        Some(dir) => !COMMIT_HOOKS.iter().any(|h| exists(&dir.join(h))),
        None => false,
    }
}

/// Where git looks for hooks: `core.hooksPath` (relative to the worktree's
/// top level, where hooks run), else the common directory's `hooks`.
fn hooks_dir(repo: &gix::Repository) -> Option<PathBuf> {
    match repo.config_snapshot().trusted_path("core.hooksPath").ok()? {
        Some(p) if p.is_absolute() => Some(p),
        Some(p) => Some(repo.workdir()?.join(p)),
        None => Some(repo.common_dir().join("hooks")),
    }
}

/// The message as `git commit -m` records it ("whitespace" cleanup, git's
/// `strbuf_stripspace` without comments): trailing blanks off each line,
/// runs of empty lines as one, none at either end, a final newline. None
/// when nothing is left, which git refuses (and the CLI then reports).
fn cleaned(message: &str) -> Option<String> {
    let mut out = String::with_capacity(message.len() + 1);
    let mut gap = false;
    for line in message.split('\n') {
        // git's isspace: space, tab, CR (and the newline split on).
        let line = line.trim_end_matches([' ', '\t', '\r']);
        if line.is_empty() {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push('\n');
        }
        gap = false;
        out.push_str(line);
        out.push('\n');
    }
    (!out.is_empty() && !out.contains('\0')).then_some(out)
}

/// A reflog message as git's files backend writes it: each run of
/// whitespace as one space, none at the end.
fn reflog_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut was_space = false;
    for c in message.chars() {
        let space = matches!(c, ' ' | '\t' | '\n' | '\r');
        if !(was_space && space) {
            out.push(if space { ' ' } else { c });
        }
        was_space = space;
    }
    out.truncate(out.trim_end_matches(' ').len());
    out
}

/// One pass over the index and HEAD's tree, directory by directory: records
/// what differs and, when writing, builds each directory's tree from the
/// index entries under it, as `git write-tree` does. Directories whose
/// entries did not change keep HEAD's tree, and so do those the index's
/// cache-tree already knows to be HEAD's (as git trusts it too).
struct Walk<'a> {
    repo: &'a gix::Repository,
    index: &'a gix::index::State,
    write: bool,
    changes: Vec<WorktreeChange>,
}

/// A tree's entries by name.
type Entries = HashMap<Vec<u8>, (EntryMode, ObjectId)>;

impl<'a> Walk<'a> {
    fn new(repo: &'a gix::Repository, index: &'a gix::index::State, write: bool) -> Self {
        Walk {
            repo,
            index,
            write,
            changes: Vec::new(),
        }
    }

    fn into_changes(mut self) -> Vec<WorktreeChange> {
        self.changes.sort_by(|a, b| a.path.cmp(&b.path));
        self.changes
    }

    /// The tree of `entries` (all of the index's entries under `prefix`,
    /// which is empty or ends with '/'), given HEAD's tree there and the
    /// cache-tree node for it. Its id when writing (else HEAD's, or a null
    /// id); None when gix should not answer.
    fn dir(
        &mut self,
        prefix: &[u8],
        entries: &[gix::index::Entry],
        head: Option<ObjectId>,
        cache: Option<&gix::index::extension::Tree>,
    ) -> Option<ObjectId> {
        if let (Some(h), Some(c)) = (head, cache) {
            if c.id == h && c.num_entries.is_some_and(|n| n as usize == entries.len()) {
                return Some(h);
            }
        }
        let mut old = match head {
            Some(id) => self.tree_entries(id)?,
            None => Entries::new(),
        };
        let before = self.changes.len();
        let index = self.index;
        let mut new = Vec::new();
        let mut rest = entries;
        while let Some(first) = rest.first() {
            let path: &[u8] = first.path(index);
            let rel = path.get(prefix.len()..)?;
            let Some(slash) = rel.find_byte(b'/') else {
                let name = checked_name(rel)?;
                let kind = leaf_kind(first)?;
                self.leaf(path, old.remove(name), kind, first.id)?;
                new.push(Entry {
                    mode: kind.into(),
                    filename: name.into(),
                    oid: first.id,
                });
                rest = &rest[1..];
                continue;
            };
            let name = checked_name(&rel[..slash])?;
            let sub = &path[..prefix.len() + slash + 1];
            let n = rest
                .iter()
                .position(|e| !e.path(index).starts_with(sub))
                .unwrap_or(rest.len());
            let sub_head = match old.remove(name) {
                Some((mode, id)) if mode.is_tree() => Some(id),
                Some(_) => {
                    self.change(&sub[..sub.len() - 1], true)?;
                    None
                }
                None => None,
            };
            let sub_cache =
                cache.and_then(|c| c.children.iter().find(|t| t.name.as_slice() == name));
            let oid = self.dir(sub, &rest[..n], sub_head, sub_cache)?;
            new.push(Entry {
                mode: EntryKind::Tree.into(),
                filename: name.into(),
                oid,
            });
            rest = &rest[n..];
        }
        for (name, (mode, id)) in old {
            let mut path = prefix.to_vec();
            path.extend_from_slice(&name);
            if mode.is_tree() {
                path.push(b'/');
                self.deleted_tree(&path, id)?;
            } else {
                self.change(&path, true)?;
            }
        }
        self.finish_dir(new, head, self.changes.len() == before)
    }

    /// The id of a directory's tree made of `new`: HEAD's when nothing in it
    /// changed, else the written tree (a null id when not writing).
    fn finish_dir(
        &self,
        mut new: Vec<Entry>,
        head: Option<ObjectId>,
        unchanged: bool,
    ) -> Option<ObjectId> {
        // A file and a directory of one name (an index git would not write).
        let mut names: Vec<&[u8]> = new.iter().map(|e| e.filename.as_slice()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        if let (true, Some(h)) = (unchanged, head) {
            return Some(h);
        }
        if !self.write {
            return Some(ObjectId::null(self.repo.object_hash()));
        }
        new.sort();
        let tree = gix::objs::Tree { entries: new };
        Some(self.repo.write_object(&tree).ok()?.detach())
    }

    /// Records the index entry at `path` against HEAD's entry of that name.
    fn leaf(
        &mut self,
        path: &[u8],
        old: Option<(EntryMode, ObjectId)>,
        kind: EntryKind,
        id: ObjectId,
    ) -> Option<()> {
        let changed = match old {
            Some((mode, old_id)) if mode.is_tree() => {
                let mut dir = path.to_vec();
                dir.push(b'/');
                self.deleted_tree(&dir, old_id)?;
                true
            }
            Some((mode, old_id)) => mode.kind() != kind || old_id != id,
            None => true,
        };
        if !changed {
            return Some(());
        }
        // `git write-tree` refuses an entry whose object is missing (a
        // gitlink's commit lives in another repository).
        if self.write && kind != EntryKind::Commit && !self.repo.has_object(id) {
            return None;
        }
        self.change(path, false)
    }

    /// Records every file of HEAD's tree `id` at `prefix` (ending with '/')
    /// as deleted.
    fn deleted_tree(&mut self, prefix: &[u8], id: ObjectId) -> Option<()> {
        for (name, (mode, sub)) in self.tree_entries(id)? {
            let mut path = prefix.to_vec();
            path.extend_from_slice(&name);
            if mode.is_tree() {
                path.push(b'/');
                self.deleted_tree(&path, sub)?;
            } else {
                self.change(&path, true)?;
            }
        }
        Some(())
    }

    fn change(&mut self, path: &[u8], deleted: bool) -> Option<()> {
        let path = String::from_utf8(path.to_vec()).ok()?;
        self.changes.push(WorktreeChange { path, deleted });
        Some(())
    }

    /// HEAD's tree `id` by entry name; None unless it is a tree as git
    /// writes them (canonical modes, git's order, no duplicates), since
    /// otherwise `git write-tree` would not reproduce it.
    fn tree_entries(&self, id: ObjectId) -> Option<Entries> {
        let tree = self.repo.find_tree(id).ok()?;
        let decoded = tree.decode().ok()?;
        let mut map = Entries::with_capacity(decoded.entries.len());
        let mut last: Option<gix::objs::tree::EntryRef<'_>> = None;
        for e in &decoded.entries {
            if e.mode != e.mode.normalized() || last.is_some_and(|l| l >= *e) {
                return None;
            }
            if map
                .insert(e.filename.to_vec(), (e.mode, e.oid.to_owned()))
                .is_some()
            {
                return None;
            }
            last = Some(*e);
        }
        Some(map)
    }
}

/// A path component git would have written into a tree.
fn checked_name(name: &[u8]) -> Option<&[u8]> {
    let bad =
        name.is_empty() || name == b"." || name == b".." || name.eq_ignore_ascii_case(b".git");
    (!bad).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_testkit::repo::{git, write};
    use std::process::Command;

    fn remove(dir: &Path, name: &str) {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }

    fn chmod(dir: &Path, name: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn symlink(dir: &Path, target: &str, name: &str) {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }

    /// A repository on `main` whose first commit has nested directories,
    /// an executable, a symlink, ignore rules and names that sort
    /// differently in trees than in the index.
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        for (name, content) in [
            ("a.txt", "one\n"),
            (".gitignore", "*.log\nbuild/\n"),
            ("docs/readme.md", "docs\n"),
            ("old/a", "a\n"),
            ("old/sub/b", "b\n"),
            ("run.sh", "#!/bin/sh\n"),
            ("tool.sh", "#!/bin/sh\necho\n"),
            ("swap_f", "file\n"),
            ("swap_d/one", "1\n"),
            ("swap_d/two/three", "3\n"),
            ("foo.c", "c\n"),
            ("foo/bar", "bar\n"),
            ("foo-bar", "-\n"),
            ("src/lib/mod.rs", "mod\n"),
            ("src/main.rs", "main\n"),
        ] {
            write(&path, name, content);
        }
        chmod(&path, "tool.sh", 0o755);
        symlink(&path, "a.txt", "alias");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "first"]);
        let path = path.canonicalize().unwrap();
        (tmp, path)
    }

    fn sorted(mut changes: Vec<WorktreeChange>) -> Vec<WorktreeChange> {
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        changes
    }

    /// Stages `wt`, checks the in-process list against `git status` taken
    /// before and the in-process commit against git's own view of it; the
    /// new commit, or None when there was nothing to commit.
    async fn check_commit(g: &Git, wt: &Path, message: &str) -> Option<String> {
        let before = sorted(g.worktree_changes(wt).await.unwrap());
        g.add_all(wt).await.unwrap();
        assert_eq!(staged(wt).expect("listed in-process"), before, "{message}");
        let tree = git(wt, &["write-tree"]);
        let old = git(wt, &["rev-parse", "HEAD"]);
        let branch = git(wt, &["rev-parse", "--symbolic-full-name", "HEAD"]);
        let Some(id) = commit_in_process(wt, message, None).expect("committed in-process") else {
            assert_eq!(git(wt, &["rev-parse", "HEAD^{tree}"]), tree, "{message}");
            assert!(before.is_empty(), "{message}: {before:?}");
            return None;
        };
        assert!(!before.is_empty(), "{message}");
        assert_eq!(git(wt, &["rev-parse", "HEAD"]), id);
        assert_eq!(git(wt, &["rev-parse", "HEAD^{tree}"]), tree, "{message}");
        assert_eq!(git(wt, &["rev-parse", "HEAD^@"]), old);
        git(wt, &["fsck", "--strict", "--no-progress"]);
        let subject = message.lines().next().unwrap();
        assert_eq!(
            git(wt, &["log", "-1", "--format=%an%n%ae%n%cn%n%ce%n%s"]),
            format!("orch\norch@localhost\norch\norch@localhost\n{subject}")
        );
        assert_eq!(
            git(wt, &["log", "-1", "--format=%B"]),
            git_cleaned(message).trim()
        );
        let reflogs = if branch == "HEAD" {
            vec!["HEAD".to_string()]
        } else {
            vec!["HEAD".to_string(), branch]
        };
        for r in reflogs {
            let entry = git(wt, &["log", "-g", "-1", "--format=%gs%n%gn %ge%n%H", &r]);
            assert_eq!(
                entry,
                format!(
                    "{}\norch orch@localhost\n{id}",
                    reflog_message(&format!("commit: {subject}"))
                ),
                "{r}"
            );
            let prev = format!("{r}@{{1}}");
            assert_eq!(git(wt, &["rev-parse", &prev]), old, "{r}");
        }
        let mut status = vec!["status", "--porcelain", "--", "."];
        status.extend(EXCLUDED_FROM_COMMITS);
        assert_eq!(git(wt, &status), "", "{message}");
        Some(id)
    }

    /// What `git commit -m` makes of `message`, from git itself.
    fn git_cleaned(message: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("git")
            .arg("stripspace")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// A change made to a worktree.
    type Step = Box<dyn Fn(&Path)>;

    /// Applies each change in turn to `wt`, committing after each.
    async fn run_states(g: &Git, wt: &Path) {
        let steps: Vec<(&str, Step)> = vec![
            ("nothing changed", Box::new(|_| {})),
            (
                "new files in new nested dirs",
                Box::new(|w| {
                    write(w, "src/deep/er/new.rs", "new\n");
                    write(w, "x/y/z.txt", "z\n");
                    write(w, "foo/baz", "baz\n");
                    write(w, "foo-bar2", "2\n");
                }),
            ),
            (
                "modified",
                Box::new(|w| {
                    write(w, "a.txt", "two\n");
                    write(w, "src/lib/mod.rs", "changed\n");
                }),
            ),
            (
                "deleted file and deleted dir",
                Box::new(|w| {
                    remove(w, "docs/readme.md");
                    remove(w, "old");
                }),
            ),
            ("chmod +x", Box::new(|w| chmod(w, "run.sh", 0o755))),
            ("chmod -x", Box::new(|w| chmod(w, "tool.sh", 0o644))),
            (
                "symlinks",
                Box::new(|w| {
                    symlink(w, "src", "srclink");
                    remove(w, "alias");
                    symlink(w, "run.sh", "alias");
                    remove(w, "foo.c");
                    symlink(w, "foo", "foo.c");
                }),
            ),
            (
                "file to dir and dir to file",
                Box::new(|w| {
                    remove(w, "swap_f");
                    write(w, "swap_f/inner.txt", "in\n");
                    remove(w, "swap_d");
                    write(w, "swap_d", "now a file\n");
                }),
            ),
            (
                "ignored files and excluded caches only",
                Box::new(|w| {
                    write(w, "app.log", "log\n");
                    write(w, "build/out.bin", "bin\n");
                    write(w, "node_modules/pkg/index.js", "js\n");
                    write(w, "src/__pycache__/m.cpython.pyc", "pyc\n");
                    write(w, "target/debug/x", "x\n");
                    write(w, "mod.pyc", "pyc\n");
                }),
            ),
            (
                "a bit of everything\n\nTask: t-1\n\n  trailing blanks   \n\n\n",
                Box::new(|w| {
                    write(w, "x/y/z.txt", "zz\n");
                    remove(w, "foo");
                    write(w, "foo", "foo is a file\n");
                    write(w, "node_modules/pkg/other.js", "js\n");
                    write(w, "new dir/with space.txt", "sp\n");
                }),
            ),
            (
                "everything deleted",
                Box::new(|w| {
                    for e in std::fs::read_dir(w).unwrap() {
                        let name = e.unwrap().file_name();
                        if name != ".git" {
                            remove(w, name.to_str().unwrap());
                        }
                    }
                }),
            ),
            (
                "back from nothing",
                Box::new(|w| write(w, "a.txt", "again\n")),
            ),
        ];
        for (message, apply) in steps {
            apply(wt);
            let committed = check_commit(g, wt, message).await;
            assert_eq!(
                committed.is_none(),
                message.starts_with("nothing") || message.starts_with("ignored"),
                "{message}"
            );
        }
    }

    #[tokio::test]
    async fn commits_of_many_worktree_states_match_git_on_a_branch() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        run_states(&g, &repo).await;
    }

    #[tokio::test]
    async fn commits_match_git_in_a_linked_worktree() {
        let (tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let wt = tmp.path().join("wt");
        git(
            &repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "orch/t-1",
                wt.to_str().unwrap(),
            ],
        );
        let wt = wt.canonicalize().unwrap();
        run_states(&g, &wt).await;
        // The branch moved, main did not.
        assert_eq!(
            git(&repo, &["rev-parse", "main"]),
            git(&repo, &["rev-parse", "main@{0}"])
        );
        assert_eq!(git(&repo, &["log", "-1", "--format=%s", "main"]), "first");
    }

    #[tokio::test]
    async fn commits_match_git_on_a_detached_head() {
        let (tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let wt = tmp.path().join("wt");
        git(
            &repo,
            &["worktree", "add", "-q", "--detach", wt.to_str().unwrap()],
        );
        let wt = wt.canonicalize().unwrap();
        run_states(&g, &wt).await;
        assert_eq!(git(&repo, &["log", "-1", "--format=%s", "main"]), "first");
        assert_eq!(
            git(&wt, &["rev-parse", "--symbolic-full-name", "HEAD"]),
            "HEAD"
        );
    }

    #[tokio::test]
    async fn public_calls_agree_with_status_and_commit() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        write(&repo, "new/file.txt", "n\n");
        remove(&repo, "old");
        let before = sorted(g.worktree_changes(&repo).await.unwrap());
        assert_eq!(g.stage_all(&repo).await.unwrap(), before);
        let id = g.commit_staged(&repo, "staged").await.unwrap().unwrap();
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), id);
        assert_eq!(g.commit_staged(&repo, "again").await.unwrap(), None);
        write(&repo, "a.txt", "all\n");
        let id = g.commit_all(&repo, "all").await.unwrap().unwrap();
        assert_eq!(
            git(&repo, &["log", "-1", "--format=%H %s"]),
            format!("{id} all")
        );
    }

    #[tokio::test]
    async fn an_unborn_branch_goes_through_the_cli() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        git(&repo, &["checkout", "-q", "--orphan", "fresh"]);
        git(&repo, &["rm", "-q", "-r", "--cached", "."]);
        write(&repo, "new.txt", "n\n");
        let before = sorted(g.worktree_changes(&repo).await.unwrap());
        assert!(!before.is_empty());
        g.add_all(&repo).await.unwrap();
        assert_eq!(staged(&repo), None);
        assert_eq!(commit_in_process(&repo, "root", None), None);
        assert_eq!(sorted(g.worktree_changes(&repo).await.unwrap()), before);
        let id = g.commit_staged(&repo, "root").await.unwrap().unwrap();
        assert_eq!(git(&repo, &["rev-list", "--count", &id]), "1");
        assert_eq!(git(&repo, &["log", "-1", "--format=%an %s"]), "orch root");
    }

    #[tokio::test]
    async fn an_embedded_repository_is_listed_by_the_cli_and_committed_in_process() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let nested = repo.join("nested");
        std::fs::create_dir(&nested).unwrap();
        git(&nested, &["init", "-q"]);
        write(&nested, "f", "x\n");
        git(&nested, &["add", "f"]);
        git(&nested, &["commit", "-q", "-m", "n"]);
        write(&repo, "a.txt", "changed\n");
        let before = sorted(g.worktree_changes(&repo).await.unwrap());
        assert_eq!(g.stage_all(&repo).await.unwrap(), before);
        assert_eq!(staged(&repo), None, "gitlinks are left to git status");
        let tree = git(&repo, &["write-tree"]);
        let id = commit_in_process(&repo, "with gitlink", None)
            .unwrap()
            .unwrap();
        assert_eq!(git(&repo, &["rev-parse", &format!("{id}^{{tree}}")]), tree);
        git(&repo, &["fsck", "--strict", "--no-progress"]);
    }

    #[tokio::test]
    async fn what_git_commit_would_do_more_goes_through_the_cli() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        write(&repo, "a.txt", "changed\n");
        g.add_all(&repo).await.unwrap();
        let git_dir = repo.join(".git");
        let head = git(&repo, &["rev-parse", "HEAD"]);

        std::fs::write(git_dir.join("MERGE_HEAD"), format!("{head}\n")).unwrap();
        assert_eq!(
            commit_in_process(&repo, "m", None),
            None,
            "merge in progress"
        );
        std::fs::remove_file(git_dir.join("MERGE_HEAD")).unwrap();

        let hook = git_dir.join("hooks/post-commit");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        assert_eq!(
            commit_in_process(&repo, "m", None),
            None,
            "post-commit hook"
        );
        std::fs::remove_file(&hook).unwrap();

        git(&repo, &["config", "core.hooksPath", "my-hooks"]);
        write(&repo, "my-hooks/prepare-commit-msg", "#!/bin/sh\n");
        assert_eq!(
            commit_in_process(&repo, "m", None),
            None,
            "hook in core.hooksPath"
        );
        git(&repo, &["config", "--unset", "core.hooksPath"]);
        remove(&repo, "my-hooks");

        git(&repo, &["config", "author.name", "Someone"]);
        assert_eq!(
            commit_in_process(&repo, "m", None),
            None,
            "author.name wins over user.name"
        );
        git(&repo, &["config", "--unset", "author.name"]);

        git(&repo, &["config", "commit.cleanup", "strip"]);
        assert_eq!(commit_in_process(&repo, "m", None), None, "another cleanup");
        git(&repo, &["config", "--unset", "commit.cleanup"]);

        std::fs::write(git_dir.join("index.lock"), "").unwrap();
        assert_eq!(
            commit_in_process(&repo, "m", None),
            None,
            "index being written"
        );
        std::fs::remove_file(git_dir.join("index.lock")).unwrap();

        assert_eq!(
            commit_in_process(&repo, " \n\n", None),
            None,
            "empty message"
        );
        assert_eq!(
            git(&repo, &["rev-parse", "HEAD"]),
            head,
            "nothing committed so far"
        );
        assert!(commit_in_process(&repo, "m", None).unwrap().is_some());
    }

    #[tokio::test]
    async fn head_moves_only_from_where_it_was() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let first = git(&repo, &["rev-parse", "HEAD"]);
        write(&repo, "a.txt", "2\n");
        let second = g.commit_all(&repo, "second").await.unwrap().unwrap();
        let repo_gix = open(&repo).unwrap();
        let [first, second] = [first, second].map(|h| ObjectId::from_hex(h.as_bytes()).unwrap());
        let orch = gix::actor::Signature {
            name: "orch".into(),
            email: "orch@localhost".into(),
            time: gix::date::Time::now_local_or_utc(),
        };
        let mut time = gix::date::parse::TimeBuf::default();
        // HEAD is at `second`, not `first`: the swap is refused.
        assert!(!move_head(
            &repo_gix,
            first,
            first,
            "commit: x",
            orch.to_ref(&mut time)
        ));
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), second.to_string());
    }

    /// Old (status, add, commit: three processes) against new (add, then
    /// in-process) commits of a small project's linked worktree, with the
    /// new path's parts timed apart.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "timing: cargo test --release -p orch-git --lib time_ -- --ignored --nocapture"]
    async fn time_old_and_new_commit_paths() {
        use std::time::{Duration, Instant};
        let (tmp, repo) = repo();
        for i in 0..300 {
            write(
                &repo,
                &format!("d{}/sub/f{i}.txt", i % 30),
                &format!("{i}\n"),
            );
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "project"]);
        let g = Git::open(&repo).await.unwrap();
        let wt = tmp.path().join("wt");
        g.worktree_add(&wt, "orch/t-1", "main").await.unwrap();
        let wt = wt.canonicalize().unwrap();
        let rounds = 50;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(rounds);
        let message = "orch: task\n\nTask: t-1";
        for (label, new) in [("old", false), ("new", true), ("old", false), ("new", true)] {
            let mut parts = [Duration::ZERO; 3];
            for i in 0..rounds {
                let body = format!("{label} {i} {:?}\n", Instant::now());
                write(&wt, &format!("d{}/sub/f{}.txt", i % 30, i % 30), &body);
                write(&wt, &format!("new/{label}/{i}.txt"), &body);
                let t = Instant::now();
                if new {
                    g.add_all(&wt).await.unwrap();
                    parts[0] += t.elapsed();
                    let t = Instant::now();
                    assert_eq!(staged(&wt).unwrap().len(), 2);
                    parts[1] += t.elapsed();
                    let t = Instant::now();
                    assert!(commit_in_process(&wt, message, None).unwrap().is_some());
                    parts[2] += t.elapsed();
                } else {
                    assert_eq!(g.worktree_changes(&wt).await.unwrap().len(), 2);
                    parts[0] += t.elapsed();
                    let t = Instant::now();
                    g.add_all(&wt).await.unwrap();
                    parts[1] += t.elapsed();
                    let t = Instant::now();
                    assert!(g.commit_cli(&wt, message).await.unwrap().is_some());
                    parts[2] += t.elapsed();
                }
            }
            let total = ms(parts.iter().sum());
            let [a, b, c] = parts.map(ms);
            let names = if new {
                "git add, list, commit"
            } else {
                "git status, git add, git commit"
            };
            println!("{label}: {total:.2} ms per commit ({names}: {a:.2} + {b:.2} + {c:.2})");
        }
    }

    #[tokio::test]
    async fn reflog_messages_are_the_ones_git_writes() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let message = "  tabs\tand   spaces \t\n\nbody";
        write(&repo, "a.txt", "by git\n");
        g.add_all(&repo).await.unwrap();
        assert!(g.commit_cli(&repo, message).await.unwrap().is_some());
        let by_git = git(&repo, &["log", "-g", "-1", "--format=%gs%n%B", "main"]);
        write(&repo, "a.txt", "in-process\n");
        g.add_all(&repo).await.unwrap();
        assert!(commit_in_process(&repo, message, None).unwrap().is_some());
        let ours = git(&repo, &["log", "-g", "-1", "--format=%gs%n%B", "main"]);
        assert_eq!(ours, by_git);
        assert!(ours.starts_with("commit: tabs and spaces\n"), "{ours}");
    }

    #[test]
    fn messages_are_cleaned_up_as_git_does() {
        for m in [
            "one line",
            "subject\n\nbody\n",
            "\n\n  subject  \t\n\n\n\nbody line   \nnext\r\n\n\n",
            "orch: t\n\nTask: t-1\nAttempt: 2\n\n# not a comment with -m\n",
            "tabs\tinside\t \n",
        ] {
            assert_eq!(cleaned(m).unwrap(), git_cleaned(m), "{m:?}");
        }
        assert_eq!(cleaned(" \n\t\n"), None);
    }

    #[tokio::test]
    async fn unstage_puts_head_back_in_the_index_only() {
        let (_tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        write(&repo, "a.txt", "changed\n");
        write(&repo, "new.txt", "n\n");
        g.add_all(&repo).await.unwrap();
        g.unstage(&repo, &["a.txt".into(), "new.txt".into()])
            .await
            .unwrap();
        assert_eq!(git(&repo, &["diff", "--cached", "--name-only"]), "");
        assert_eq!(
            std::fs::read_to_string(repo.join("a.txt")).unwrap(),
            "changed\n"
        );
        assert!(repo.join("new.txt").exists());
    }

    #[tokio::test]
    async fn a_snapshot_commits_what_the_worktree_held_then_and_leaves_its_index_alone() {
        let (tmp, repo) = repo();
        let g = Git::open(&repo).await.unwrap();
        let wt = tmp.path().join("wt");
        g.worktree_add(&wt, "orch/t-1", "main").await.unwrap();
        let wt = wt.canonicalize().unwrap();
        write(&wt, "a.txt", "changed\n");
        write(&wt, "new.txt", "new\n");
        // Same size, rewritten in place, with the mtime it had: only git's
        // racy-clean check (an entry as new as the index file itself) sees
        // this edit, and only if the snapshot starts from an index file as
        // old as the worktree's, not from a fresh copy of it.
        let readme = wt.join("docs/readme.md");
        let tick = std::fs::metadata(&readme).unwrap().modified().unwrap();
        std::fs::write(&readme, "DOCS\n").unwrap();
        let set_mtime = |path: &Path| {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_modified(tick).unwrap();
        };
        set_mtime(&readme);
        set_mtime(&PathBuf::from(git(
            &wt,
            &["rev-parse", "--git-path", "index"],
        )));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let snapshot = g.snapshot_staged(&wt).await.unwrap();
        // The worktree's own index still differs from the files: the
        // agent's `git diff` shows its work.
        assert_eq!(git(&wt, &["diff", "--name-only"]), "a.txt\ndocs/readme.md");
        assert_eq!(git(&wt, &["diff", "--cached", "--name-only"]), "");
        // Written after the snapshot (say, by a test run): not committed.
        write(&wt, "later.txt", "later\n");
        write(&wt, "a.txt", "changed again\n");
        let staged = g.adopt_staged(snapshot).await.unwrap();
        let paths: Vec<&str> = staged.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "docs/readme.md", "new.txt"]);
        let id = g
            .commit_staged(&wt, "orch: snapshot")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(git(&wt, &["show", &format!("{id}:a.txt")]), "changed");
        assert_eq!(git(&wt, &["ls-tree", "--name-only", &id, "later.txt"]), "");
        git(&wt, &["fsck", "--strict", "--no-progress"]);
        // No snapshot file is left in git's directory for the worktree.
        let record = git(&wt, &["rev-parse", "--absolute-git-dir"]);
        let left: Vec<_> = std::fs::read_dir(&record)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("orch-snapshot"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A snapshot dropped without adoption takes its file with it.
        write(&wt, "dropped.txt", "x\n");
        drop(g.snapshot_staged(&wt).await.unwrap());
        let left = std::fs::read_dir(&record)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("orch-snapshot"))
            .count();
        assert_eq!(left, 0);
        assert_eq!(git(&wt, &["diff", "--cached", "--name-only"]), "");
    }

    /// A worktree on `orch/t-1` with one edit and one new file.
    async fn edited_worktree(tmp: &Path, repo: &Path) -> (Git, PathBuf) {
        let g = Git::open(repo).await.unwrap();
        let wt = tmp.join("wt");
        g.worktree_add(&wt, "orch/t-1", "main").await.unwrap();
        let wt = wt.canonicalize().unwrap();
        write(&wt, "a.txt", "changed\n");
        write(&wt, "sub/new.txt", "new\n");
        (g, wt)
    }

    #[tokio::test]
    async fn a_snapshot_prepares_the_tree_git_would_write_and_the_commit_uses_it() {
        let (tmp, repo) = repo();
        let (g, wt) = edited_worktree(tmp.path(), &repo).await;
        let snapshot = g.snapshot_staged(&wt).await.unwrap();
        let prepared = snapshot.prepared.clone().expect("prepared in-process");
        let staged = g.adopt_staged(snapshot).await.unwrap();
        let paths: Vec<&str> = staged.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "sub/new.txt"]);
        let kept = |g: &Git| g.prepared.0.lock().unwrap().contains_key(&wt);
        assert!(kept(&g), "kept for the commit");
        // git's own answers for the adopted index: the same tree, the same
        // changes.
        assert_eq!(git(&wt, &["write-tree"]), prepared.tree.to_string());
        assert_eq!(
            git(&wt, &["diff", "--cached", "--name-only"]),
            "a.txt\nsub/new.txt"
        );
        let id = g
            .commit_staged(&wt, "orch: prepared")
            .await
            .unwrap()
            .unwrap();
        assert!(!kept(&g), "taken by the commit");
        assert_eq!(
            git(&wt, &["rev-parse", &format!("{id}^{{tree}}")]),
            prepared.tree.to_string()
        );
        git(&wt, &["fsck", "--strict", "--no-progress"]);
    }

    #[tokio::test]
    async fn a_prepared_tree_is_not_used_once_the_index_changed() {
        let (tmp, repo) = repo();
        let (g, wt) = edited_worktree(tmp.path(), &repo).await;
        let snapshot = g.snapshot_staged(&wt).await.unwrap();
        assert!(snapshot.prepared.is_some());
        g.adopt_staged(snapshot).await.unwrap();
        // What the change-set check does to a refused path.
        g.unstage(&wt, &["sub/new.txt".to_string()]).await.unwrap();
        let id = g.commit_staged(&wt, "orch: less").await.unwrap().unwrap();
        assert_eq!(git(&wt, &["ls-tree", "-r", "--name-only", &id, "sub"]), "");
        assert_eq!(git(&wt, &["show", &format!("{id}:a.txt")]), "changed");
        assert_eq!(
            git(&wt, &["write-tree"]),
            git(&wt, &["rev-parse", &format!("{id}^{{tree}}")])
        );
    }

    #[tokio::test]
    async fn a_prepared_tree_is_not_used_once_head_moved() {
        let (tmp, repo) = repo();
        let (g, wt) = edited_worktree(tmp.path(), &repo).await;
        let snapshot = g.snapshot_staged(&wt).await.unwrap();
        assert!(snapshot.prepared.is_some());
        // HEAD moves under the snapshot (a commit of a.txt alone).
        git(&wt, &["add", "a.txt"]);
        git(
            &wt,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "by hand",
            ],
        );
        let staged = g.adopt_staged(snapshot).await.unwrap();
        assert!(g.prepared.0.lock().unwrap().is_empty());
        // Listed against the new HEAD, which already holds a.txt.
        let paths: Vec<&str> = staged.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["sub/new.txt"]);
        let id = g.commit_staged(&wt, "orch: rest").await.unwrap().unwrap();
        assert_eq!(
            git(&wt, &["rev-parse", &format!("{id}^")]),
            git(&wt, &["rev-parse", "HEAD^"])
        );
        assert_eq!(
            git(&wt, &["diff", "--name-only", "HEAD^", "HEAD"]),
            "sub/new.txt"
        );
    }
}
