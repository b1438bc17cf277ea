//! Crash recovery, run under the project lock before any work: attempts cut
//! off by a crash are marked interrupted and their tasks requeued, a merge
//! cut off half-way goes back to the queue (main was never moved), and
//! stale worktrees and branches are removed.

use crate::cycle::Engine;
use crate::Result;
use orch_core::{EventKind, TaskStatus};

impl Engine {
    pub(crate) async fn recover(&self) -> Result<()> {
        let name = self.project.name.clone();
        let recovered = self.store.recover_interrupted(&name)?;

        // Every worktree under our directory is stale: we hold the lock.
        self.git.worktree_prune().await?;
        let ours = self.paths.worktrees(&name);
        let mut removed = 0;
        for wt in self.git.worktrees().await? {
            if wt.path.starts_with(&ours) {
                self.git.worktree_remove(&wt.path).await?;
                removed += 1;
            }
        }
        if ours.exists() {
            if let Ok(entries) = std::fs::read_dir(&ours) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        self.git.worktree_prune().await?;

        // Branches of tasks that will start over, or are done, go; branches
        // of failed or waiting tasks stay for people to inspect or land.
        let mut deleted = 0;
        for branch in self.git.branches("orch/").await? {
            let id = branch.trim_start_matches("orch/");
            let Ok(task) = self.store.task(id) else {
                continue;
            };
            if task.id.as_str() != id || task.project != name {
                continue;
            }
            if matches!(
                task.status,
                TaskStatus::Pending | TaskStatus::Merged | TaskStatus::Cancelled
            ) {
                self.git.delete_branch(&branch).await?;
                deleted += 1;
            }
        }
        if !recovered.is_empty() || removed > 0 || deleted > 0 {
            let ids: Vec<_> = recovered.iter().map(|t| t.0.clone()).collect();
            self.rec.note(
                None,
                EventKind::Recovered,
                format!("recovered after an interrupted run: {} task(s) requeued, {removed} stale worktree(s) and {deleted} branch(es) removed", ids.len()),
                serde_json::json!({"tasks": ids, "worktrees": removed, "branches": deleted}),
            );
        }
        Ok(())
    }
}
