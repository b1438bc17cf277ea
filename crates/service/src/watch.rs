//! File triggers: a project's `watch` globs, relative to its repository,
//! followed with the `notify` crate through a debouncer (a burst of writes
//! is one change). Only the directories the globs can match are watched —
//! the repository root for a top-level name like `BACKLOG.md`, `plans/`
//! for `plans/*.md` (recursively for `**` or deeper globs) — not the whole
//! tree. A directory that does not exist yet is picked up when it appears.
//!
//! A file counts as changed when its modification time or size differs
//! from what was last seen (or it appeared or went): inotify also reports
//! mere opens — the planner reading `BACKLOG.md` — which must not wake the
//! project again.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a file must be quiet before its change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The globs of one project, compiled, and the directories they need.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    repo: PathBuf,
    set: GlobSet,
    /// (directory relative to the repository, recursive)
    bases: Vec<(PathBuf, bool)>,
}

impl WatchSpec {
    /// Compiles `globs` (relative to `repo`; `*` does not cross `/`, `**`
    /// does). Absolute paths and `..` are refused: a trigger watches the
    /// repository only.
    pub fn new(repo: &Path, globs: &[String]) -> Result<WatchSpec, String> {
        let mut set = GlobSetBuilder::new();
        let mut bases: Vec<(PathBuf, bool)> = Vec::new();
        for g in globs {
            let p = Path::new(g);
            if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!(
                    "watch glob `{g}` leaves the repository; write it relative to the repository, e.g. `BACKLOG.md` or `plans/*.md`"
                ));
            }
            let glob = GlobBuilder::new(g.trim_start_matches("./"))
                .literal_separator(true)
                .build()
                .map_err(|e| format!("watch glob `{g}` is not a glob ({e}); e.g. `plans/*.md`"))?;
            set.add(glob);
            let parts: Vec<&str> = g.trim_start_matches("./").split('/').collect();
            let literal = parts
                .iter()
                .take_while(|s| !s.contains(['*', '?', '[', '{']))
                .count();
            // All literal: a file path, watched through its directory.
            let base_len = literal.min(parts.len() - 1);
            let base: PathBuf = parts[..base_len].iter().collect();
            let recursive = parts.len() - base_len > 1 || g.contains("**");
            match bases.iter_mut().find(|(b, _)| *b == base) {
                Some(slot) => slot.1 |= recursive,
                None => bases.push((base, recursive)),
            }
        }
        let set = set
            .build()
            .map_err(|e| format!("watch globs {globs:?} cannot be compiled: {e}"))?;
        Ok(WatchSpec {
            repo: repo.to_path_buf(),
            set,
            bases,
        })
    }

    /// Whether `path` (absolute, under the repository) matches a glob.
    pub fn matches(&self, path: &Path) -> bool {
        match path.strip_prefix(&self.repo) {
            Ok(rel) => !rel.starts_with(".git") && self.set.is_match(rel),
            Err(_) => false,
        }
    }

    /// The files under the repository that match now (for a directory that
    /// just appeared, whose first files may predate its watch).
    fn existing_matches(&self, dir: &Path, recursive: bool) -> Vec<PathBuf> {
        let depth = if recursive { usize::MAX } else { 1 };
        walkdir::WalkDir::new(dir)
            .max_depth(depth)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && self.matches(e.path()))
            .map(|e| e.into_path())
            .collect()
    }
}

/// A live watch; changes stop when it is dropped.
pub struct FileWatch {
    debouncer: Debouncer<RecommendedWatcher>,
    spec: WatchSpec,
    /// Base directories watched so far.
    armed: BTreeSet<PathBuf>,
    /// Ancestors watched while their base does not exist.
    waiting: BTreeSet<PathBuf>,
    /// Last seen (modification time, size) of each matching file.
    stamps: HashMap<PathBuf, Stamp>,
}

type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl FileWatch {
    /// Starts watching. Debounced batches of changed paths (matching or
    /// not) arrive on `raw`; pass each to [`FileWatch::filter`], which
    /// keeps the matching files and arms directories that appeared.
    pub fn start(
        spec: WatchSpec,
        raw: mpsc::UnboundedSender<Vec<PathBuf>>,
    ) -> Result<FileWatch, String> {
        let debouncer = new_debouncer(DEBOUNCE, move |res: DebounceEventResult| match res {
            Ok(events) => {
                let _ = raw.send(events.into_iter().map(|e| e.path).collect());
            }
            Err(e) => tracing::warn!("file watch error: {e}"),
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        let mut w = FileWatch {
            debouncer,
            spec,
            armed: BTreeSet::new(),
            waiting: BTreeSet::new(),
            stamps: HashMap::new(),
        };
        for f in w.arm(true)? {
            w.stamps.insert(f.clone(), stamp(&f));
        }
        Ok(w)
    }

    /// Watches every base directory that exists and is not watched yet,
    /// and the nearest existing ancestor of each that does not. With
    /// `scan`, returns the matching files in directories armed just now.
    fn arm(&mut self, scan: bool) -> Result<Vec<PathBuf>, String> {
        let mut found = Vec::new();
        for (base, recursive) in self.spec.bases.clone() {
            let dir = self.spec.repo.join(&base);
            if self.armed.contains(&dir) {
                continue;
            }
            if dir.is_dir() {
                let mode = if recursive {
                    RecursiveMode::Recursive
                } else {
                    RecursiveMode::NonRecursive
                };
                self.debouncer
                    .watcher()
                    .watch(&dir, mode)
                    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
                if scan {
                    found.extend(self.spec.existing_matches(&dir, recursive));
                }
                self.armed.insert(dir);
                continue;
            }
            // Wait for it through the nearest ancestor that exists.
            let mut anc = dir.parent();
            while let Some(a) = anc {
                if a.is_dir() {
                    if !self.waiting.contains(a) && !self.armed.contains(a) {
                        self.debouncer
                            .watcher()
                            .watch(a, RecursiveMode::NonRecursive)
                            .map_err(|e| format!("cannot watch {}: {e}", a.display()))?;
                        self.waiting.insert(a.to_path_buf());
                    }
                    break;
                }
                if a == self.spec.repo {
                    break;
                }
                anc = a.parent();
            }
        }
        Ok(found)
    }

    /// The files of a raw batch that match the globs and really changed,
    /// plus files found in directories that appeared (their first files
    /// may predate the directory's watch). Deduplicated, in order.
    pub fn filter(&mut self, raw: Vec<PathBuf>) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = raw.into_iter().filter(|p| self.spec.matches(p)).collect();
        match self.arm(true) {
            Ok(found) => out.extend(found),
            Err(e) => tracing::warn!("{e}"),
        }
        let mut seen = BTreeSet::new();
        out.retain(|p| seen.insert(p.clone()));
        out.retain(|p| {
            let now = stamp(p);
            let before = self.stamps.insert(p.clone(), now);
            before.flatten() != now
        });
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn globs_are_relative_to_the_repository_and_star_stays_in_its_directory() {
        let repo = Path::new("/r");
        let spec = WatchSpec::new(repo, &["BACKLOG.md".into(), "plans/*.md".into()]).unwrap();
        assert!(spec.matches(Path::new("/r/BACKLOG.md")));
        assert!(spec.matches(Path::new("/r/plans/m1.md")));
        assert!(!spec.matches(Path::new("/r/plans/old/m0.md")));
        assert!(!spec.matches(Path::new("/r/docs/BACKLOG.md")));
        assert!(!spec.matches(Path::new("/elsewhere/BACKLOG.md")));
        assert_eq!(
            spec.bases,
            vec![(PathBuf::new(), false), (PathBuf::from("plans"), false)]
        );
        let deep = WatchSpec::new(repo, &["docs/**/*.md".into()]).unwrap();
        assert_eq!(deep.bases, vec![(PathBuf::from("docs"), true)]);
        assert!(deep.matches(Path::new("/r/docs/a/b/c.md")));
        assert!(!deep.matches(Path::new("/r/.git/docs/x.md")));
    }

    #[test]
    fn globs_that_leave_the_repository_are_refused() {
        for bad in ["/etc/passwd", "../other/BACKLOG.md"] {
            let err = WatchSpec::new(Path::new("/r"), &[bad.into()]).unwrap_err();
            assert!(err.contains("relative to the repository"), "{err}");
        }
        let err = WatchSpec::new(Path::new("/r"), &["plans/[.md".into()]).unwrap_err();
        assert!(err.contains("not a glob"), "{err}");
    }

    async fn next_match(
        w: &mut FileWatch,
        rx: &mut mpsc::UnboundedReceiver<Vec<PathBuf>>,
    ) -> Vec<PathBuf> {
        loop {
            let raw = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a change within 10 s")
                .unwrap();
            let got = w.filter(raw);
            if !got.is_empty() {
                return got;
            }
        }
    }

    #[tokio::test]
    async fn a_changed_file_and_a_file_in_a_new_directory_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().canonicalize().unwrap();
        std::fs::write(repo.join("BACKLOG.md"), "- one\n").unwrap();
        let spec = WatchSpec::new(&repo, &["BACKLOG.md".into(), "plans/*.md".into()]).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut w = FileWatch::start(spec, tx).unwrap();

        // Reading a watched file is no change.
        std::fs::read_to_string(repo.join("BACKLOG.md")).unwrap();
        std::fs::write(repo.join("notes.txt"), "not watched\n").unwrap();
        std::fs::write(repo.join("BACKLOG.md"), "- one\n- two\n").unwrap();
        assert_eq!(
            next_match(&mut w, &mut rx).await,
            vec![repo.join("BACKLOG.md")]
        );

        // plans/ did not exist when the watch started.
        std::fs::create_dir(repo.join("plans")).unwrap();
        std::fs::write(repo.join("plans/m1.md"), "## Task 1.1: x\n").unwrap();
        let got = next_match(&mut w, &mut rx).await;
        assert!(got.contains(&repo.join("plans/m1.md")), "{got:?}");
    }
}
