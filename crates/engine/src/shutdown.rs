//! Graceful shutdown, shared by `orch run` (Ctrl-C) and `orch serve`
//! (SIGTERM, Ctrl-C). A request stops the engine claiming work and
//! starting attempts; running attempts get `grace` to finish; then they are
//! interrupted (recorded as `interrupted`, not counted, their tasks back to
//! pending) so a restart resumes them. `force` skips what is left of the
//! grace (a second Ctrl-C).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A shutdown switch; clones share it.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    stop: CancellationToken,
    now: CancellationToken,
    grace: Duration,
    requested_at: Mutex<Option<Instant>>,
}

impl Default for Shutdown {
    /// A switch nobody flips unless asked, with the default 60 s grace.
    fn default() -> Self {
        Shutdown::new(Duration::from_secs(60))
    }
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Shutdown(Arc::new(Inner {
            stop: CancellationToken::new(),
            now: CancellationToken::new(),
            grace,
            requested_at: Mutex::new(None),
        }))
    }

    /// Stop claiming work; running attempts have the grace to finish.
    pub fn request(&self) {
        let mut at = self
            .0
            .requested_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        at.get_or_insert_with(Instant::now);
        self.0.stop.cancel();
    }

    /// Interrupt running attempts now.
    pub fn force(&self) {
        self.request();
        self.0.now.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.0.stop.is_cancelled()
    }

    pub fn is_forced(&self) -> bool {
        self.0.now.is_cancelled()
    }

    pub fn grace(&self) -> Duration {
        self.0.grace
    }

    /// Resolves once shutdown is requested.
    pub async fn requested(&self) {
        self.0.stop.cancelled().await
    }

    /// A token cancelled when shutdown is requested (for servers and loops
    /// that take a `CancellationToken`).
    pub fn token(&self) -> CancellationToken {
        self.0.stop.clone()
    }

    /// Resolves when the grace after the request has passed, or at once
    /// when forced. Never before a request.
    pub async fn grace_over(&self) {
        self.requested().await;
        let at = *self
            .0
            .requested_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let deadline = at.and_then(|t| t.checked_add(self.0.grace));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = self.0.now.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_grace_runs_from_the_request_and_force_cuts_it_short() {
        let s = Shutdown::new(Duration::from_millis(200));
        assert!(!s.is_requested());
        // Nothing resolves before a request.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), s.grace_over())
                .await
                .is_err()
        );
        let started = Instant::now();
        s.clone().request();
        assert!(s.is_requested() && s.token().is_cancelled());
        s.grace_over().await;
        assert!(started.elapsed() >= Duration::from_millis(190));
        // A second look does not restart the grace.
        let again = Instant::now();
        s.grace_over().await;
        assert!(again.elapsed() < Duration::from_millis(50));

        let long = Shutdown::new(Duration::from_secs(3600));
        long.request();
        let other = long.clone();
        tokio::spawn(async move { other.force() });
        tokio::time::timeout(Duration::from_secs(5), long.grace_over())
            .await
            .unwrap();
        assert!(long.is_forced());
    }
}
