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
use orch_git::{Git, WorktreeChange};
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
    ) -> Result<Vec<Refusal>, orch_git::GitError> {
        let refused = enforce(
            &self.git,
            worktree,
            &task.allowed_files,
            crate::attempt::MAX_FILE_BYTES,
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

/// Checks every change in `worktree`, reverts the refused ones, and returns
/// them. What is left is safe to commit.
pub(crate) async fn enforce(
    git: &Git,
    worktree: &Path,
    allowed_files: &[String],
    max_file_bytes: usize,
) -> Result<Vec<Refusal>, orch_git::GitError> {
    let allow = AllowList::new(allowed_files);
    let refused: Vec<Refusal> = git
        .worktree_changes(worktree)
        .await?
        .iter()
        .filter_map(|c| {
            refusal(worktree, c, &allow, max_file_bytes).map(|reason| Refusal {
                path: c.path.clone(),
                reason,
            })
        })
        .collect();
    if !refused.is_empty() {
        let paths: Vec<String> = refused.iter().map(|r| r.path.clone()).collect();
        git.discard_changes(worktree, &paths).await?;
    }
    Ok(refused)
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

    #[test]
    fn feedback_names_each_refused_path() {
        let f = feedback(&[Refusal {
            path: "notes.txt".into(),
            reason: "it is outside the task's allowed_files (calc.py)".into(),
        }]);
        assert!(f.contains("- `notes.txt`: it is outside"), "{f}");
    }
}
