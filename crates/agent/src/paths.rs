//! Path safety. Every path a file tool touches goes through [`resolve`]
//! first; the tools then operate on the real path it returns, never on the
//! string the model sent.
//!
//! The rules (checked in this order):
//! 1. absolute paths are refused;
//! 2. `..` is normalized lexically and a path that climbs above the worktree
//!    root is refused;
//! 3. anything inside `.git` (the repository metadata, or a worktree's `.git`
//!    file) is refused;
//! 4. symlinks are resolved: the longest existing ancestor is canonicalized
//!    (dangling links are followed by hand) and the result must stay inside
//!    the canonical worktree, and must not land in `.git` either.
//!
//! [`AllowList`] is the second gate for writes: a task's `allowed_files`
//! glob patterns.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlink hops followed by hand before giving up (the kernel's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Why a path was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error(
        "`{0}` is an absolute path; use a path relative to the worktree root, e.g. `src/main.rs`"
    )]
    Absolute(String),
    #[error("`{0}` leaves the worktree; use a path inside the worktree root")]
    Escapes(String),
    #[error("`{0}` goes through a symlink that points outside the worktree; only files inside the worktree can be used")]
    SymlinkOutside(String),
    #[error("`{0}` is inside .git; the repository metadata is off limits (use `run` with git commands to inspect history)")]
    GitDir(String),
    /// The path could not be checked at all (missing worktree, symlink
    /// loop, permission error). Not a safety refusal, but nothing is done.
    #[error("cannot check `{path}`: {detail}")]
    Unresolvable { path: String, detail: String },
}

impl PathRefusal {
    /// True for refusals made for safety (recorded as refusals); false when
    /// the path simply could not be checked.
    pub fn is_safety(&self) -> bool {
        !matches!(self, PathRefusal::Unresolvable { .. })
    }
}

/// A path that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Real absolute path (symlinks resolved); what the tools open.
    pub abs: PathBuf,
    /// `abs` relative to the canonical worktree; what allowed_files and
    /// listings use. Empty for the worktree root itself.
    pub rel: PathBuf,
    /// The canonical worktree root.
    pub root: PathBuf,
}

/// Checks `requested` (relative to `worktree`) and returns the real absolute
/// path to operate on. See the module docs for the rules.
pub fn resolve(worktree: &Path, requested: &str) -> Result<PathBuf, PathRefusal> {
    check(worktree, requested).map(|r| r.abs)
}

/// Like [`resolve`], also returning the relative path and canonical root.
pub fn check(worktree: &Path, requested: &str) -> Result<Resolved, PathRefusal> {
    let shown = requested.to_string();
    let req = Path::new(requested);
    if req.has_root() {
        return Err(PathRefusal::Absolute(shown));
    }
    let mut rel = PathBuf::new();
    for component in req.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !rel.pop() {
                    return Err(PathRefusal::Escapes(shown));
                }
            }
            Component::Normal(name) => rel.push(name),
            Component::RootDir | Component::Prefix(_) => return Err(PathRefusal::Absolute(shown)),
        }
    }
    if touches_git(&rel) {
        return Err(PathRefusal::GitDir(shown));
    }
    let root = fs::canonicalize(worktree).map_err(|e| PathRefusal::Unresolvable {
        path: shown.clone(),
        detail: format!("the worktree {} cannot be opened: {e}", worktree.display()),
    })?;
    let abs = real_path(&root.join(&rel), 0).map_err(|e| PathRefusal::Unresolvable {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let inside = match abs.strip_prefix(&root) {
        Ok(inside) => inside.to_path_buf(),
        Err(_) => return Err(PathRefusal::SymlinkOutside(shown)),
    };
    if touches_git(&inside) {
        return Err(PathRefusal::GitDir(shown));
    }
    Ok(Resolved {
        abs,
        rel: inside,
        root,
    })
}

/// True when any component is `.git` (any case: some filesystems fold it).
pub(crate) fn touches_git(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(name) => name.to_string_lossy().eq_ignore_ascii_case(".git"),
        _ => false,
    })
}

/// The real location of `path`: the longest existing ancestor canonicalized,
/// the not-yet-existing rest appended. Dangling symlinks are followed by
/// hand, because writing through one creates its target.
fn real_path(path: &Path, hops: usize) -> io::Result<PathBuf> {
    if hops > MAX_SYMLINK_HOPS {
        return Err(io::Error::other("too many levels of symbolic links"));
    }
    let mut existing = path.to_path_buf();
    // Names below `existing` that do not exist yet, innermost last.
    let mut tail: Vec<OsString> = Vec::new();
    loop {
        match fs::symlink_metadata(&existing) {
            Ok(meta) => match fs::canonicalize(&existing) {
                Ok(canon) => return Ok(join_tail(canon, &tail)),
                Err(e) if meta.file_type().is_symlink() => {
                    let target = fs::read_link(&existing)?;
                    let parent = existing.parent().ok_or(e)?;
                    let next = fs::canonicalize(parent)?.join(target);
                    return real_path(&join_tail(next, &tail), hops + 1);
                }
                Err(e) => return Err(e),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                // `file_name` is None for a trailing `..`: such a path cannot be
                // placed without the directory existing, so give up.
                let Some(name) = existing.file_name() else {
                    return Err(e);
                };
                tail.push(name.to_os_string());
                if !existing.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn join_tail(mut base: PathBuf, tail: &[OsString]) -> PathBuf {
    for name in tail.iter().rev() {
        base.push(name);
    }
    base
}

/// A task's `allowed_files`: glob patterns relative to the repository root.
///
/// `*` does not cross `/` (use `**` for that). A pattern that matches a
/// directory allows everything below it (`src` allows `src/lib.rs`). An
/// empty list allows every file. An invalid pattern is matched literally,
/// so a typo never widens what may be written.
#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<String>,
    set: Option<GlobSet>,
}

impl AllowList {
    pub fn new(patterns: &[String]) -> Self {
        let cleaned: Vec<String> = patterns
            .iter()
            .map(|p| {
                p.trim()
                    .trim_start_matches("./")
                    .trim_start_matches('/')
                    .trim_end_matches('/')
            })
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if cleaned.is_empty() {
            return AllowList {
                patterns: Vec::new(),
                set: None,
            };
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in &cleaned {
            let glob = GlobBuilder::new(pattern).literal_separator(true).build().or_else(|e| {
                tracing::warn!("allowed_files pattern `{pattern}` is not a valid glob ({e}); matching it literally");
                GlobBuilder::new(&globset::escape(pattern)).build()
            });
            match glob {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => tracing::warn!("allowed_files pattern `{pattern}` ignored: {e}"),
            }
        }
        // A set that fails to build allows nothing: fail closed.
        let set = builder.build().unwrap_or_else(|e| {
            tracing::warn!(
                "allowed_files patterns cannot be compiled ({e}); no file may be written"
            );
            GlobSet::empty()
        });
        AllowList {
            patterns: cleaned,
            set: Some(set),
        }
    }

    /// True when every file may be written.
    pub fn is_unrestricted(&self) -> bool {
        self.set.is_none()
    }

    /// The patterns, as given (trimmed).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `rel` (relative to the worktree root) may be written.
    pub fn permits(&self, rel: &Path) -> bool {
        let Some(set) = &self.set else { return true };
        let mut current = Some(rel);
        while let Some(p) = current {
            if p.as_os_str().is_empty() {
                break;
            }
            if set.is_match(p) {
                return true;
            }
            current = p.parent();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        /// The worktree (inside the temp dir).
        wt: PathBuf,
        /// A sibling directory outside the worktree.
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        let outside = dir.path().join("outside");
        fs::create_dir_all(wt.join("src")).unwrap();
        fs::create_dir_all(wt.join(".git")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(wt.join("src/lib.rs"), "fn main() {}\n").unwrap();
        fs::write(outside.join("secret.txt"), "secret\n").unwrap();
        Fixture {
            _dir: dir,
            wt,
            outside,
        }
    }

    fn canon(p: &Path) -> PathBuf {
        fs::canonicalize(p).unwrap()
    }

    #[test]
    fn plain_relative_paths_resolve_inside() {
        let f = fixture();
        let root = canon(&f.wt);
        assert_eq!(
            resolve(&f.wt, "src/lib.rs").unwrap(),
            root.join("src/lib.rs")
        );
        assert_eq!(
            resolve(&f.wt, "./src/./lib.rs").unwrap(),
            root.join("src/lib.rs")
        );
        assert_eq!(
            resolve(&f.wt, "src/new/deep/file.rs").unwrap(),
            root.join("src/new/deep/file.rs")
        );
        assert_eq!(resolve(&f.wt, "").unwrap(), root);
        assert_eq!(resolve(&f.wt, ".").unwrap(), root);
        // `..` that stays inside is fine.
        assert_eq!(
            resolve(&f.wt, "src/../README.md").unwrap(),
            root.join("README.md")
        );
        let r = check(&f.wt, "src/x/../lib.rs").unwrap();
        assert_eq!(r.rel, PathBuf::from("src/lib.rs"));
        assert_eq!(r.root, root);
    }

    #[test]
    fn absolute_paths_are_refused() {
        let f = fixture();
        assert!(matches!(
            resolve(&f.wt, "/etc/passwd"),
            Err(PathRefusal::Absolute(_))
        ));
        let inside_abs = f.wt.join("src/lib.rs");
        assert!(matches!(
            resolve(&f.wt, inside_abs.to_str().unwrap()),
            Err(PathRefusal::Absolute(_))
        ));
    }

    #[test]
    fn dotdot_escapes_are_refused() {
        let f = fixture();
        for p in [
            "..",
            "../outside/secret.txt",
            "a/../../x",
            "src/../../outside",
            "./../wt/src",
        ] {
            assert!(
                matches!(resolve(&f.wt, p), Err(PathRefusal::Escapes(_))),
                "{p} should be refused"
            );
        }
    }

    #[test]
    fn git_dir_is_refused() {
        let f = fixture();
        for p in [
            ".git",
            ".git/config",
            "./.git/hooks/pre-commit",
            "src/../.git/HEAD",
            ".GIT/config",
            "sub/.git/x",
        ] {
            assert!(
                matches!(resolve(&f.wt, p), Err(PathRefusal::GitDir(_))),
                "{p} should be refused"
            );
        }
        // A symlink that lands in .git is refused too.
        symlink(".git", f.wt.join("meta")).unwrap();
        assert!(matches!(
            resolve(&f.wt, "meta/config"),
            Err(PathRefusal::GitDir(_))
        ));
        // Names that merely contain .git are fine.
        assert!(resolve(&f.wt, ".gitignore").is_ok());
        assert!(resolve(&f.wt, "src/x.git").is_ok());
    }

    #[test]
    fn symlinked_dir_pointing_out_is_refused() {
        let f = fixture();
        symlink(&f.outside, f.wt.join("escape")).unwrap();
        assert!(matches!(
            resolve(&f.wt, "escape"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        assert!(matches!(
            resolve(&f.wt, "escape/secret.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        assert!(matches!(
            resolve(&f.wt, "escape/new/file.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        // Relative links climbing out are caught the same way.
        symlink("../../outside", f.wt.join("src/up")).unwrap();
        assert!(matches!(
            resolve(&f.wt, "src/up/secret.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
    }

    #[test]
    fn symlinked_file_pointing_out_is_refused_even_when_dangling() {
        let f = fixture();
        symlink(f.outside.join("secret.txt"), f.wt.join("link.txt")).unwrap();
        assert!(matches!(
            resolve(&f.wt, "link.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        // Dangling: writing through it would create the outside file.
        symlink(f.outside.join("created.txt"), f.wt.join("dangling.txt")).unwrap();
        assert!(matches!(
            resolve(&f.wt, "dangling.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        // Dangling through a missing directory outside.
        symlink(
            f.outside.join("nodir/created.txt"),
            f.wt.join("dangling2.txt"),
        )
        .unwrap();
        assert!(matches!(
            resolve(&f.wt, "dangling2.txt"),
            Err(PathRefusal::SymlinkOutside(_))
        ));
        assert!(!f.outside.join("created.txt").exists());
    }

    #[test]
    fn symlinks_staying_inside_are_followed() {
        let f = fixture();
        let root = canon(&f.wt);
        symlink("src", f.wt.join("source")).unwrap();
        assert_eq!(
            resolve(&f.wt, "source/lib.rs").unwrap(),
            root.join("src/lib.rs")
        );
        symlink("src/new.rs", f.wt.join("dangling-inside")).unwrap();
        assert_eq!(
            resolve(&f.wt, "dangling-inside").unwrap(),
            root.join("src/new.rs")
        );
    }

    #[test]
    fn symlink_loops_are_unresolvable_not_panics() {
        let f = fixture();
        symlink("b", f.wt.join("a")).unwrap();
        symlink("a", f.wt.join("b")).unwrap();
        let err = resolve(&f.wt, "a").unwrap_err();
        assert!(matches!(err, PathRefusal::Unresolvable { .. }), "{err:?}");
        assert!(!err.is_safety());
    }

    #[test]
    fn worktree_reached_through_a_symlink_still_works() {
        let f = fixture();
        let alias = f.outside.join("alias");
        symlink(&f.wt, &alias).unwrap();
        assert_eq!(
            resolve(&alias, "src/lib.rs").unwrap(),
            canon(&f.wt).join("src/lib.rs")
        );
    }

    #[test]
    fn missing_worktree_is_unresolvable() {
        let f = fixture();
        let err = resolve(&f.wt.join("nope"), "a.txt").unwrap_err();
        assert!(matches!(err, PathRefusal::Unresolvable { .. }));
    }

    #[test]
    fn allow_list_matches_globs_and_directories() {
        let allow = AllowList::new(&[
            "src/*.rs".into(),
            "docs".into(),
            "./tests/**".into(),
            "[bad".into(),
        ]);
        assert!(!allow.is_unrestricted());
        assert!(allow.permits(Path::new("src/lib.rs")));
        assert!(
            !allow.permits(Path::new("src/deep/mod.rs")),
            "* must not cross /"
        );
        assert!(allow.permits(Path::new("docs/guide/intro.md")));
        assert!(allow.permits(Path::new("tests/a/b.rs")));
        assert!(
            allow.permits(Path::new("[bad")),
            "invalid patterns match literally"
        );
        assert!(!allow.permits(Path::new("Cargo.toml")));
        assert!(!allow.permits(Path::new("")));

        let open = AllowList::new(&[]);
        assert!(open.is_unrestricted());
        assert!(open.permits(Path::new("anything/at/all")));
    }
}
