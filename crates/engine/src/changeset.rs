//! The commit boundary: before an attempt is committed, its whole change set
//! is checked against the task's limits, whatever wrote the files (a tool,
//! a shell command, a test run, an external agent). The file tools refuse
//! bad writes as they happen; this is the check that cannot be bypassed.
//!
//! Refused: paths outside `allowed_files`, anything under `.git`, symlinks
//! that point outside the worktree (or into `.git`), and files over the size
//! cap. Refused changes are reverted to the base before the commit, so they
//! never reach a branch, let alone main.

use orch_agent::paths::{self, AllowList};
use orch_git::{Git, GitError, WorktreeChange};
use std::path::{Component, Path};

/// One change that was not committed, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Refusal {
    pub path: String,
    pub reason: String,
}

impl crate::cycle::Engine {
    /// The commit boundary of one attempt: [`enforce`] on `worktree`, each
    /// refusal recorded as a `tool_refused` event of stage `commit`.
    pub(crate) async fn enforce_change_set(
        &self,
        task: &orch_core::Task,
        attempt: u32,
        worktree: &Path,
        snapshot: Option<orch_git::StagedSnapshot>,
    ) -> Result<Vec<Refusal>, GitError> {
        let refused = enforce(
            &self.git,
            worktree,
            &task.allowed_files,
            crate::attempt::MAX_FILE_BYTES,
            snapshot,
        )
        .await?;
        for r in &refused {
            self.rec.note(
                Some(task.id.as_str()),
                orch_protocol::ToolRefused {
                    stage: Some(orch_protocol::Stage::Commit),
                    path: Some(r.path.clone()),
                    refused: r.reason.clone(),
                    attempt: Some(attempt),
                    ..Default::default()
                },
                format!("not committed: {}: {}", r.path, r.reason),
            );
        }
        Ok(refused)
    }
}

/// Stages every change in `worktree` (`Git::stage_all`, or adopts
/// `snapshot`, staged earlier), checks each, reverts the refused ones (out
/// of the index and the worktree) and returns them. What is left staged is
/// safe to commit with `Git::commit_staged`.
pub(crate) async fn enforce(
    git: &Git,
    worktree: &Path,
    allowed_files: &[String],
    max_file_bytes: usize,
    snapshot: Option<orch_git::StagedSnapshot>,
) -> Result<Vec<Refusal>, GitError> {
    let allow = AllowList::new(allowed_files);
    let limits = |changes: &[WorktreeChange]| -> Vec<Refusal> {
        changes
            .iter()
            .filter_map(|c| {
                refusal(worktree, c, &allow, max_file_bytes).map(|reason| Refusal {
                    path: c.path.clone(),
                    reason,
                })
            })
            .collect()
    };
    let mut refused = Vec::new();
    let staging = match snapshot {
        Some(snapshot) => git.adopt_staged(snapshot).await,
        None => git.stage_all(worktree).await,
    };
    let staged = match staging {
        Ok(staged) => staged,
        // `git add` fails outright on some paths (an embedded repository
        // with no commit, an unreadable file): revert what is refused from
        // the worktree as it is, then stage the rest.
        Err(GitError::Command { .. }) => {
            refused = limits(&git.worktree_changes(worktree).await?);
            revert(git, worktree, &refused).await?;
            git.stage_all(worktree).await?
        }
        Err(e) => return Err(e),
    };
    let mut more = limits(&staged);
    revert(git, worktree, &more).await?;
    if more.iter().any(|r| is_attributes(&r.path)) {
        // The add read the refused .gitattributes (its filters, its eol
        // rules): stage the rest again without it.
        let kept: Vec<String> = staged
            .iter()
            .filter(|c| !more.iter().any(|r| r.path == c.path))
            .map(|c| c.path.clone())
            .collect();
        git.unstage(worktree, &kept).await?;
        let again = limits(&git.stage_all(worktree).await?);
        revert(git, worktree, &again).await?;
        more.extend(again);
    }
    refused.extend(more);
    Ok(refused)
}

/// Puts the refused paths back as they are at the base.
async fn revert(git: &Git, worktree: &Path, refused: &[Refusal]) -> Result<(), GitError> {
    if refused.is_empty() {
        return Ok(());
    }
    let paths: Vec<String> = refused.iter().map(|r| r.path.clone()).collect();
    git.discard_changes(worktree, &paths).await
}

/// Whether `path` is a `.gitattributes` file, which changes how `git add`
/// stages other files.
fn is_attributes(path: &str) -> bool {
    path.rsplit('/').next() == Some(".gitattributes")
}

/// Why `change` may not be committed, or None when it may.
fn refusal(
    worktree: &Path,
    change: &WorktreeChange,
    allow: &AllowList,
    max_file_bytes: usize,
) -> Option<String> {
    let rel = Path::new(&change.path);
    if rel
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n == ".git"))
    {
        return Some("it is inside .git; repository metadata is never committed".into());
    }
    if !allow.permits(rel) {
        return Some(format!(
            "it is outside the task's allowed_files ({})",
            allow.patterns().join(", ")
        ));
    }
    if change.deleted {
        return None;
    }
    let abs = worktree.join(rel);
    let meta = std::fs::symlink_metadata(&abs).ok()?;
    if meta.file_type().is_symlink() {
        if let Err(e) = paths::check(worktree, &change.path) {
            if e.is_safety() {
                return Some(format!("it is a symlink that leaves the worktree: {e}"));
            }
        }
        let target = std::fs::read_link(&abs).ok()?;
        if target.is_absolute() {
            return Some(format!(
                "it is a symlink to the absolute path {}; only relative links inside the worktree are committed",
                target.display()
            ));
        }
        return None;
    }
    let size = meta.len();
    if size > max_file_bytes as u64 {
        return Some(format!(
            "it is {size} bytes, over the {max_file_bytes}-byte cap for one file"
        ));
    }
    None
}

/// The feedback paragraph that tells the next attempt what was refused.
pub(crate) fn feedback(refused: &[Refusal]) -> String {
    let mut f =
        String::from("These changes were not committed, because they break the task's limits:\n");
    for r in refused {
        f.push_str(&format!("- `{}`: {}\n", r.path, r.reason));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_testkit::repo::git;

    fn change(path: &str) -> WorktreeChange {
        WorktreeChange {
            path: path.into(),
            deleted: false,
        }
    }

    #[test]
    fn every_limit_is_checked_on_the_change_itself() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path();
        std::fs::write(wt.join("calc.py"), "x").unwrap();
        std::fs::write(wt.join("notes.txt"), "x").unwrap();
        std::fs::write(wt.join("big.bin"), vec![0u8; 2048]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", wt.join("leak")).unwrap();
        std::os::unix::fs::symlink("calc.py", wt.join("alias.py")).unwrap();
        let any = AllowList::new(&[]);
        let only_calc = AllowList::new(&["calc.py".to_string()]);

        assert_eq!(refusal(wt, &change("calc.py"), &only_calc, 1024), None);
        let outside = refusal(wt, &change("notes.txt"), &only_calc, 1024).unwrap();
        assert!(outside.contains("allowed_files (calc.py)"), "{outside}");
        let deleted = WorktreeChange {
            path: "sub/other.py".into(),
            deleted: true,
        };
        assert!(refusal(wt, &deleted, &only_calc, 1024).is_some());
        assert!(refusal(wt, &change(".git/config"), &any, 1024)
            .unwrap()
            .contains(".git"));
        assert!(refusal(wt, &change("big.bin"), &any, 1024)
            .unwrap()
            .contains("2048 bytes"));
        assert!(refusal(wt, &change("leak"), &any, 1024)
            .unwrap()
            .contains("symlink"));
        assert_eq!(refusal(wt, &change("alias.py"), &any, 1024), None);
    }

    #[tokio::test]
    async fn refused_changes_are_neither_committed_nor_left_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let wt = tmp.path().canonicalize().unwrap();
        git(&wt, &["init", "-q", "-b", "main"]);
        std::fs::write(wt.join("calc.py"), "x = 0\n").unwrap();
        std::fs::write(wt.join("tracked.txt"), "base\n").unwrap();
        git(&wt, &["add", "-A"]);
        git(&wt, &["commit", "-q", "-m", "base"]);
        let g = Git::open(&wt).await.unwrap();

        // Allowed, with CRLF line ends the refused .gitattributes would
        // have normalized away in the index.
        std::fs::write(wt.join("calc.py"), "x = 1\r\n").unwrap();
        std::fs::write(wt.join(".gitattributes"), "calc.py text\n").unwrap();
        std::fs::write(wt.join("notes.txt"), "n\n").unwrap();
        std::fs::write(wt.join("tracked.txt"), "changed\n").unwrap();
        std::fs::write(wt.join("big.bin"), vec![0u8; 2048]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", wt.join("leak")).unwrap();
        let nested = wt.join("nested");
        std::fs::create_dir(&nested).unwrap();
        git(&nested, &["init", "-q"]);
        std::fs::write(nested.join("f"), "f\n").unwrap();
        git(&nested, &["add", "f"]);
        git(&nested, &["commit", "-q", "-m", "n"]);

        let allowed = ["calc.py".to_string(), "big.bin".to_string()];
        let refused = enforce(&g, &wt, &allowed, 1024, None).await.unwrap();
        let mut paths: Vec<&str> = refused.iter().map(|r| r.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                ".gitattributes",
                "big.bin",
                "leak",
                "nested",
                "notes.txt",
                "tracked.txt"
            ]
        );
        // Only the allowed change is staged; the refused ones are gone.
        assert_eq!(git(&wt, &["diff", "--cached", "--name-only"]), "calc.py");
        assert_eq!(git(&wt, &["status", "--porcelain"]), "M  calc.py");
        assert_eq!(
            std::fs::read_to_string(wt.join("tracked.txt")).unwrap(),
            "base\n"
        );
        for gone in [".gitattributes", "notes.txt", "big.bin", "leak", "nested"] {
            assert!(std::fs::symlink_metadata(wt.join(gone)).is_err(), "{gone}");
        }

        let head = g.commit_staged(&wt, "work").await.unwrap().unwrap();
        assert_eq!(
            git(
                &wt,
                &["diff-tree", "--no-commit-id", "--name-only", "-r", &head]
            ),
            "calc.py"
        );
        let blob = format!("{head}:calc.py");
        let committed = std::process::Command::new("git")
            .args(["-C", wt.to_str().unwrap(), "cat-file", "blob", &blob])
            .output()
            .unwrap()
            .stdout;
        assert_eq!(
            committed, b"x = 1\r\n",
            "staged without the refused attributes"
        );
        assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    }

    #[tokio::test]
    async fn a_path_git_add_fails_on_is_refused_before_the_rest_is_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let wt = tmp.path().canonicalize().unwrap();
        git(&wt, &["init", "-q", "-b", "main"]);
        std::fs::write(wt.join("calc.py"), "x = 0\n").unwrap();
        git(&wt, &["add", "-A"]);
        git(&wt, &["commit", "-q", "-m", "base"]);
        let g = Git::open(&wt).await.unwrap();
        std::fs::write(wt.join("calc.py"), "x = 1\n").unwrap();
        // A repository with no commit: `git add -A` fails on it outright.
        let nested = wt.join("empty");
        std::fs::create_dir(&nested).unwrap();
        git(&nested, &["init", "-q"]);
        std::fs::write(nested.join("f"), "f\n").unwrap();

        let refused = enforce(&g, &wt, &["calc.py".to_string()], 1024, None)
            .await
            .unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].path, "empty");
        assert!(!nested.exists());
        assert_eq!(git(&wt, &["status", "--porcelain"]), "M  calc.py");
    }

    #[test]
    fn feedback_names_each_refused_path() {
        let f = feedback(&[Refusal {
            path: "notes.txt".into(),
            reason: "it is outside the task's allowed_files (calc.py)".into(),
        }]);
        assert!(f.contains("- `notes.txt`: it is outside"), "{f}");
    }
}
