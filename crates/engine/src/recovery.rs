//! Crash recovery, run under the project lock before any work: attempts cut
//! off by a crash (their lease expired, or their owner is gone) are marked
//! interrupted and their tasks requeued, a merge cut off half-way goes back
//! to the queue (main was never moved), and stale worktrees and branches are
//! removed. An attempt a live process still holds by its lease is left
//! alone, with its worktree.

use crate::cycle::Engine;
use crate::Result;
use orch_core::TaskStatus;
use orch_protocol::{self as protocol, Stage};

impl Engine {
    pub(crate) async fn recover(&self) -> Result<()> {
        let name = self.project.name.clone();
        let recovery = self.store.recover_expired(&name)?;
        let recovered = recovery.requeued;
        let held: Vec<std::path::PathBuf> = recovery
            .held
            .iter()
            .map(|h| self.paths.worktree(&name, h.task_id.as_str()))
            .collect();
        for h in &recovery.held {
            self.rec.note(
                Some(h.task_id.as_str()),
                protocol::LeaseHeld {
                    attempt_id: h.attempt_id,
                    owner: h.owner.clone(),
                    lease_expires_at: h.expires_at,
                },
                format!(
                    "attempt {} is held by {} until {} (a live lease): left alone; it is taken over only if that lease expires",
                    h.attempt_id, h.owner, h.expires_at.to_rfc3339()
                ),
            );
        }

        // Every other worktree under our directory is stale: we hold the lock.
        self.git.worktree_prune().await?;
        let ours = self.paths.worktrees(&name);
        let mut removed = 0;
        for wt in self.git.worktrees().await? {
            if wt.path.starts_with(&ours) && !held.contains(&wt.path) {
                self.git.worktree_remove(&wt.path).await?;
                removed += 1;
            }
        }
        // Directories git did not list under our directory (or listed by
        // another spelling of its path) go too; git's records of any that
        // were worktrees are pruned after, which the prune above cannot do.
        let mut leftovers = false;
        if let Ok(entries) = std::fs::read_dir(&ours) {
            for entry in entries.flatten() {
                let path = entry.path();
                if !held.contains(&path) {
                    // An empty directory was no worktree: nothing to prune.
                    let empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
                    let _ = std::fs::remove_dir_all(&path);
                    leftovers |= !empty;
                }
            }
        }
        if leftovers {
            self.git.worktree_prune().await?;
        }

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
                // A branch that cannot go now (a git lock held elsewhere)
                // is cleaned up next time; it must not stop the run.
                match self.git.delete_branch(&branch).await {
                    Ok(()) => deleted += 1,
                    Err(e) => self.rec.note(
                        None,
                        protocol::Warning::at(Stage::Recovery),
                        format!("could not delete the stale branch {branch}: {e}"),
                    ),
                }
            }
        }
        if !recovered.is_empty() || removed > 0 || deleted > 0 {
            let ids: Vec<_> = recovered.iter().map(|t| t.0.clone()).collect();
            self.rec.note(
                None,
                protocol::Recovered {
                    tasks: ids.iter().map(|i| i.to_string()).collect(),
                    worktrees: removed,
                    branches: deleted,
                    ..Default::default()
                },
                format!("recovered after an interrupted run: {} task(s) requeued, {removed} stale worktree(s) and {deleted} branch(es) removed", ids.len()),
            );
        }
        Ok(())
    }
}
