//! Where orch keeps things inside data_dir.
//!
//! ```text
//! <data_dir>/
//!   orch.db                       SQLite state
//!   locks/<project>.lock          one runner per project
//!   worktrees/<project>/<task>    a task's worktree while it is worked on
//!   audit/<project>/plans/        planner output, one markdown file per plan
//!   audit/<project>/attempts/     one markdown file per attempt
//!   audit/<project>/verdicts/     one markdown file per verdict
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataPaths {
    pub root: PathBuf,
}

impl DataPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataPaths { root: root.into() }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("orch.db")
    }
    pub fn lock(&self, project: &str) -> PathBuf {
        self.root.join("locks").join(format!("{project}.lock"))
    }
    pub fn worktrees(&self, project: &str) -> PathBuf {
        self.root.join("worktrees").join(project)
    }
    pub fn worktree(&self, project: &str, name: &str) -> PathBuf {
        self.worktrees(project).join(name)
    }
    pub fn audit(&self, project: &str) -> PathBuf {
        self.root.join("audit").join(project)
    }
    pub fn plans(&self, project: &str) -> PathBuf {
        self.audit(project).join("plans")
    }
    pub fn attempts(&self, project: &str) -> PathBuf {
        self.audit(project).join("attempts")
    }
    pub fn verdicts(&self, project: &str) -> PathBuf {
        self.audit(project).join("verdicts")
    }

    /// Creates data_dir with a `.gitignore` of `*`, so a data_dir inside a
    /// repository never shows up as untracked files or gets committed.
    pub fn ensure(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let ignore = self.root.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(ignore, "*\n")?;
        }
        Ok(())
    }
}

/// Writes a file atomically (temp file + rename), creating parent dirs, so a
/// crash never leaves a half-written audit file.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, orch_core::redact::redact(contents).as_bytes())?;
    std::fs::rename(&tmp, path)
}
