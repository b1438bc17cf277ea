//! The worktree a worker runs in may still be filling when the worker
//! starts: orch checks it out while the first model call is under way, so
//! the model's latency hides the checkout's. [`Workspace`] is the gate:
//! nothing touches the worktree (a tool call, an external agent's start)
//! before [`Workspace::ready`] says it is there.

use tokio::sync::watch;

/// Whether the worktree is there yet; cheap to clone.
#[derive(Debug, Clone)]
pub struct Workspace(watch::Receiver<Option<Result<(), String>>>);

/// The other end of a pending [`Workspace`]: says once how filling it went.
#[derive(Debug)]
pub struct WorkspaceFilled(watch::Sender<Option<Result<(), String>>>);

impl Workspace {
    /// A worktree that is already there.
    pub fn present() -> Self {
        let (_tx, rx) = watch::channel(Some(Ok(())));
        Self(rx)
    }

    /// A worktree still being filled: `WorkspaceFilled::done` opens the gate.
    pub fn pending() -> (WorkspaceFilled, Self) {
        let (tx, rx) = watch::channel(None);
        (WorkspaceFilled(tx), Self(rx))
    }

    /// Waits until the worktree is there; the error says why it never will
    /// be (filling it failed, or whoever filled it gave up).
    pub async fn ready(&self) -> Result<(), String> {
        let mut rx = self.0.clone();
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| Err("the worktree was abandoned before it was ready".into()))
    }
}

impl WorkspaceFilled {
    /// Opens the gate with how filling the worktree went.
    pub fn done(self, result: Result<(), String>) {
        // No receiver left means no worker waits; nothing to tell.
        let _ = self.0.send(Some(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_present_workspace_is_ready_at_once() {
        assert_eq!(Workspace::present().ready().await, Ok(()));
    }

    #[tokio::test]
    async fn a_pending_workspace_waits_for_its_filler() {
        let (filled, ws) = Workspace::pending();
        let waiter = tokio::spawn({
            let ws = ws.clone();
            async move { ws.ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        filled.done(Err("checkout failed: disk full".into()));
        assert_eq!(
            waiter.await.unwrap(),
            Err("checkout failed: disk full".into())
        );
        // Later waiters get the same answer.
        assert_eq!(ws.ready().await, Err("checkout failed: disk full".into()));
    }

    #[tokio::test]
    async fn an_abandoned_workspace_says_so() {
        let (filled, ws) = Workspace::pending();
        drop(filled);
        let err = ws.ready().await.unwrap_err();
        assert!(err.contains("abandoned"), "{err}");
    }
}
