//! The one retry policy for every model call.
//!
//! [`retry`] runs an operation until it succeeds, fails with an error a
//! retry cannot fix, or runs out of tries. Only errors that
//! [`ProviderError::is_retryable`] (429, 5xx, 408/409, connection errors,
//! timeouts, cut streams) are retried; a 4xx such as a bad key or a bad
//! request fails at once with the provider's own message.
//!
//! The wait before each retry is the server's `Retry-After` when it sent one
//! (capped by [`RetryPolicy::max_retry_after`]), else the policy's schedule
//! plus jitter: retry `n` waits `schedule[n-1]` (the last entry repeats when
//! `max_attempts` asks for more tries than the schedule has waits) times a
//! random factor in `[1, 1 + jitter)`. The default schedule starts short
//! (2 s) and then follows the long outage schedule of the design notes:
//! 30 s, 60 s, 120 s, 300 s, 600 s, then give up.
//!
//! Every try is reported to `on_try` as a [`TryRecord`] (the engine records
//! each as an event). Time goes through a [`Timer`], so tests can run the
//! long schedule instantly: [`TokioTimer`] follows tokio's clock (and so
//! `tokio::time::pause`), [`VirtualTimer`] records each wait and returns at
//! once, which also works with real sockets (a paused tokio clock would
//! fire the HTTP client's own timeouts early).

use crate::ProviderError;
use async_trait::async_trait;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the retry policy and the circuit breaker get the time from.
#[async_trait]
pub trait Timer: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Wait `duration`.
    async fn sleep(&self, duration: Duration);
}

/// Real time, through tokio: honours `tokio::time::pause` and `advance`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioTimer;

#[async_trait]
impl Timer for TokioTimer {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock that only moves when told: `sleep` records the wait, moves the
/// clock on by it and returns at once. For tests (the long schedule runs
/// in microseconds) and anything else that must not really wait.
#[derive(Debug)]
pub struct VirtualTimer {
    start: Instant,
    state: Mutex<VirtualState>,
}

#[derive(Debug, Default)]
struct VirtualState {
    elapsed: Duration,
    sleeps: Vec<Duration>,
}

impl Default for VirtualTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualTimer {
    pub fn new() -> Self {
        VirtualTimer {
            start: Instant::now(),
            state: Mutex::new(VirtualState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VirtualState> {
        // Only plain numbers live here; a poisoned lock holds valid ones.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move the clock on without recording a sleep (time passing between
    /// calls).
    pub fn advance(&self, by: Duration) {
        self.lock().elapsed += by;
    }

    /// Every wait slept so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().sleeps.clone()
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().elapsed
    }
}

#[async_trait]
impl Timer for VirtualTimer {
    fn now(&self) -> Instant {
        self.start + self.lock().elapsed
    }
    async fn sleep(&self, duration: Duration) {
        {
            let mut state = self.lock();
            state.elapsed += duration;
            state.sleeps.push(duration);
        }
        // Still a suspension point, so other tasks get to run.
        tokio::task::yield_now().await;
    }
}

/// How a model call is retried. Build it from config with
/// [`RetryPolicy::from_schedule_seconds`] or set the fields directly.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Wait before retry 1, 2, ...; the last entry repeats if
    /// `max_attempts` asks for more retries than there are entries. Empty
    /// means retry without waiting.
    pub schedule: Vec<Duration>,
    /// Random spread added to each scheduled wait, as a fraction: a wait
    /// `w` becomes a value in `[w, w * (1 + jitter))`. Spreads out clients
    /// that failed together. Not applied to `Retry-After`.
    pub jitter: f64,
    /// Tries in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// Where waits and the breaker's clock come from.
    pub timer: Arc<dyn Timer>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("schedule", &self.schedule)
            .field("jitter", &self.jitter)
            .field("max_attempts", &self.max_attempts)
            .field("max_retry_after", &self.max_retry_after)
            .field("timer", &self.timer)
            .finish()
    }
}

/// The default schedule: a short first retry, then the long outage
/// schedule (30 s → 60 s → 120 s → 300 s → 600 s, then give up).
pub const DEFAULT_SCHEDULE_SECONDS: [u64; 6] = [2, 30, 60, 120, 300, 600];

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from_schedule_seconds(&DEFAULT_SCHEDULE_SECONDS, 0.2, 600)
    }
}

impl RetryPolicy {
    /// One try after each wait in `schedule_seconds`, then give up: the
    /// shape of the `[retry]` config section. `jitter` is clamped to 0..=1.
    pub fn from_schedule_seconds(
        schedule_seconds: &[u64],
        jitter: f64,
        max_retry_after_seconds: u64,
    ) -> Self {
        RetryPolicy {
            schedule: schedule_seconds
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            jitter: clamp_jitter(jitter),
            max_attempts: u32::try_from(schedule_seconds.len())
                .unwrap_or(u32::MAX - 1)
                .saturating_add(1),
            max_retry_after: Duration::from_secs(max_retry_after_seconds),
            timer: Arc::new(TokioTimer),
        }
    }

    /// Exponential backoff: `first`, then each wait `factor` times the one
    /// before, at most `cap`, for `retries` retries.
    pub fn exponential(first: Duration, factor: f64, cap: Duration, retries: u32) -> Self {
        let factor = if factor.is_finite() && factor >= 1.0 {
            factor
        } else {
            1.0
        };
        let mut schedule = Vec::new();
        let mut wait = first.min(cap);
        for _ in 0..retries {
            schedule.push(wait);
            wait = Duration::try_from_secs_f64(wait.as_secs_f64() * factor)
                .unwrap_or(cap)
                .min(cap);
        }
        RetryPolicy {
            schedule,
            max_attempts: retries.saturating_add(1),
            ..RetryPolicy::default()
        }
    }

    /// One try only: errors come back as they are.
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The same policy on another clock.
    pub fn with_timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }

    /// The scheduled wait before retry `retry` (1 = the first retry),
    /// before jitter.
    pub fn base_wait(&self, retry: u32) -> Duration {
        let i = usize::try_from(retry.max(1) - 1).unwrap_or(usize::MAX);
        self.schedule
            .get(i)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// The range a scheduled wait before retry `retry` falls in, jitter
    /// included: `[base, base * (1 + jitter)]`.
    pub fn wait_bounds(&self, retry: u32) -> (Duration, Duration) {
        let base = self.base_wait(retry);
        (base, base.mul_f64(1.0 + clamp_jitter(self.jitter)))
    }

    /// The wait before retry `retry`: `hint` (a `Retry-After` or a breaker's
    /// rest) capped by `max_retry_after`, else the schedule with jitter from
    /// `unit`, a number in `[0, 1)`.
    pub fn wait_for(&self, retry: u32, hint: Option<Duration>, unit: f64) -> Duration {
        match hint {
            Some(h) => h.min(self.max_retry_after),
            None => {
                let unit = if unit.is_finite() {
                    unit.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                self.base_wait(retry)
                    .mul_f64(1.0 + clamp_jitter(self.jitter) * unit)
            }
        }
    }
}

fn clamp_jitter(j: f64) -> f64 {
    if j.is_finite() {
        j.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Why a retry waits as long as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The policy's schedule, with jitter.
    Schedule,
    /// The server's `Retry-After`.
    RetryAfter,
    /// The provider's circuit breaker is open; wait for its rest to end.
    CircuitOpen,
}

/// One try of a call, as reported to `on_try`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TryRecord {
    pub provider: String,
    /// 1 for the first try.
    pub attempt: u32,
    pub max_attempts: u32,
    /// `None` when the try succeeded.
    pub error: Option<String>,
    /// Whether the error is one a retry may fix.
    pub retryable: bool,
    /// The wait before the next try; `None` when there is none (success,
    /// an error a retry cannot fix, or no tries left).
    #[serde(with = "millis_opt")]
    pub wait: Option<Duration>,
    pub wait_reason: Option<WaitReason>,
    /// How long the try itself took.
    #[serde(with = "millis")]
    pub took: Duration,
}

impl TryRecord {
    /// One line for logs and the event log.
    pub fn message(&self) -> String {
        let head = format!(
            "{} try {}/{}",
            self.provider, self.attempt, self.max_attempts
        );
        match (&self.error, self.wait) {
            (None, _) => format!("{head} succeeded in {} ms", self.took.as_millis()),
            (Some(e), Some(wait)) => {
                let why = match self.wait_reason {
                    Some(WaitReason::RetryAfter) => " (the server's Retry-After)",
                    Some(WaitReason::CircuitOpen) => " (circuit breaker open)",
                    _ => "",
                };
                format!(
                    "{head} failed: {e}; retrying in {:.1} s{why}",
                    wait.as_secs_f64()
                )
            }
            (Some(e), None) if !self.retryable => {
                format!("{head} failed: {e}; a retry cannot fix this, giving up")
            }
            (Some(e), None) => format!("{head} failed: {e}; no tries left, giving up"),
        }
    }
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

mod millis_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
}

/// What to do about a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fail now with this error.
    Stop,
    /// Retry after the scheduled wait.
    Retry,
    /// Retry after this wait (capped by `max_retry_after`).
    RetryAfter(Duration, WaitReason),
}

/// The standard classification: retry what [`ProviderError::is_retryable`]
/// says, after its `Retry-After` when it has one.
pub fn classify(error: &ProviderError) -> Decision {
    if !error.is_retryable() {
        return Decision::Stop;
    }
    match error.retry_after() {
        Some(wait) => Decision::RetryAfter(wait, WaitReason::RetryAfter),
        None => Decision::Retry,
    }
}

/// Run `op` under `policy`, retrying retryable errors. `provider` names the
/// provider in the [`TryRecord`]s given to `on_try` (one per try, the
/// successful one included). Returns the first success or the last error.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    provider: &str,
    on_try: impl Fn(&TryRecord),
    op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    retry_with(policy, provider, classify, on_try, op).await
}

/// [`retry`] with a custom classification of errors (the circuit breaker
/// uses it to wait out an open breaker when there is no fallback).
pub async fn retry_with<T, F, Fut>(
    policy: &RetryPolicy,
    provider: &str,
    classify: impl Fn(&ProviderError) -> Decision,
    on_try: impl Fn(&TryRecord),
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1u32;
    loop {
        let started = policy.timer.now();
        let result = op().await;
        let took = policy.timer.now().saturating_duration_since(started);
        let error = match result {
            Ok(value) => {
                on_try(&TryRecord {
                    provider: provider.to_string(),
                    attempt,
                    max_attempts,
                    error: None,
                    retryable: false,
                    wait: None,
                    wait_reason: None,
                    took,
                });
                return Ok(value);
            }
            Err(e) => e,
        };
        let decision = classify(&error);
        let retryable = decision != Decision::Stop;
        let next = if retryable && attempt < max_attempts {
            Some(match decision {
                Decision::RetryAfter(hint, reason) => {
                    (policy.wait_for(attempt, Some(hint), 0.0), reason)
                }
                _ => (
                    policy.wait_for(attempt, None, fastrand::f64()),
                    WaitReason::Schedule,
                ),
            })
        } else {
            None
        };
        on_try(&TryRecord {
            provider: provider.to_string(),
            attempt,
            max_attempts,
            error: Some(error.to_string()),
            retryable,
            wait: next.map(|(w, _)| w),
            wait_reason: next.map(|(_, r)| r),
            took,
        });
        let Some((wait, _)) = next else {
            return Err(error);
        };
        tracing::info!(provider, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying a model call");
        policy.timer.sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn http(status: u16, retry_after: Option<u64>) -> ProviderError {
        ProviderError::Http {
            provider: "p".into(),
            status,
            body: format!("status {status}"),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn default_is_short_then_the_long_outage_schedule() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = p.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![2, 30, 60, 120, 300, 600]);
        assert_eq!(p.max_attempts, 7);
        assert_eq!(p.max_retry_after, Duration::from_secs(600));
        assert_eq!(p.base_wait(1), Duration::from_secs(2));
        assert_eq!(p.base_wait(6), Duration::from_secs(600));
        // Beyond the schedule the last wait repeats.
        assert_eq!(p.base_wait(9), Duration::from_secs(600));
        assert_eq!(
            p.wait_bounds(2),
            (Duration::from_secs(30), Duration::from_secs(36))
        );
    }

    #[test]
    fn exponential_schedule_doubles_up_to_the_cap() {
        let p = RetryPolicy::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(10), 6);
        let secs: Vec<u64> = p.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.max_attempts, 7);
        assert_eq!(RetryPolicy::no_retries().max_attempts, 1);
    }

    #[test]
    fn waits_honour_retry_after_up_to_the_cap_and_jitter_bounds() {
        let p = RetryPolicy::from_schedule_seconds(&[10, 20], 0.5, 60);
        assert_eq!(
            p.wait_for(1, Some(Duration::from_secs(7)), 0.9),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait_for(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(60)
        );
        assert_eq!(p.wait_for(1, None, 0.0), Duration::from_secs(10));
        assert_eq!(p.wait_for(2, None, 0.5), Duration::from_secs(25));
        assert_eq!(p.wait_for(2, None, f64::NAN), Duration::from_secs(20));
        // Jitter out of range is clamped rather than producing odd waits.
        let wild = RetryPolicy::from_schedule_seconds(&[10], 7.0, 60);
        assert_eq!(wild.jitter, 1.0);
    }

    #[test]
    fn classification_follows_the_error() {
        assert_eq!(classify(&http(500, None)), Decision::Retry);
        assert_eq!(
            classify(&http(429, Some(4))),
            Decision::RetryAfter(Duration::from_secs(4), WaitReason::RetryAfter)
        );
        assert_eq!(classify(&http(400, None)), Decision::Stop);
        assert_eq!(classify(&http(401, Some(4))), Decision::Stop);
        let cut = ProviderError::StreamCut {
            provider: "p".into(),
            detail: "x".into(),
        };
        assert_eq!(classify(&cut), Decision::Retry);
    }

    /// Under `tokio::time::pause` the real timer's waits take no wall time,
    /// and tokio's clock moves by exactly the waits chosen.
    #[tokio::test(start_paused = true)]
    async fn paused_tokio_clock_follows_the_policy() {
        let policy = RetryPolicy::from_schedule_seconds(&[30, 60, 120], 0.2, 600);
        let calls = AtomicU32::new(0);
        let records: Mutex<Vec<TryRecord>> = Mutex::new(Vec::new());
        let start = tokio::time::Instant::now();
        let wall = Instant::now();
        let result = retry(
            &policy,
            "p",
            |r| records.lock().unwrap().push(r.clone()),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(http(503, None)),
                    1 => Err(http(429, Some(5))),
                    2 => Err(http(500, None)),
                    _ => Ok("answer"),
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), "answer");
        let records = records.into_inner().unwrap();
        assert_eq!(records.len(), 4);
        let waits: Vec<Duration> = records.iter().filter_map(|r| r.wait).collect();
        assert_eq!(waits.len(), 3);
        assert!(waits[0] >= Duration::from_secs(30) && waits[0] <= Duration::from_secs(36));
        assert_eq!(waits[1], Duration::from_secs(5));
        assert_eq!(records[1].wait_reason, Some(WaitReason::RetryAfter));
        assert!(waits[2] >= Duration::from_secs(120) && waits[2] <= Duration::from_secs(144));
        assert_eq!(records[3].error, None);
        assert_eq!(records[3].attempt, 4);
        // The paused clock moved by the waits, give or take tokio's 1 ms timer grain.
        let moved = start.elapsed();
        let total: Duration = waits.iter().sum();
        assert!(
            moved >= total && moved <= total + Duration::from_millis(10),
            "{moved:?} vs {total:?}"
        );
        assert!(wall.elapsed() < Duration::from_secs(30), "no real waiting");
    }

    #[tokio::test]
    async fn non_retryable_errors_fail_at_once() {
        let timer = Arc::new(VirtualTimer::new());
        let policy = RetryPolicy::default().with_timer(timer.clone());
        let calls = AtomicU32::new(0);
        let records: Mutex<Vec<TryRecord>> = Mutex::new(Vec::new());
        let err = retry(
            &policy,
            "p",
            |r| records.lock().unwrap().push(r.clone()),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(http(400, None))
            },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("status 400"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(timer.sleeps().is_empty());
        let records = records.into_inner().unwrap();
        assert_eq!(records.len(), 1);
        assert!(!records[0].retryable);
        assert_eq!(records[0].wait, None);
        assert!(
            records[0].message().contains("cannot fix"),
            "{}",
            records[0].message()
        );
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let timer = Arc::new(VirtualTimer::new());
        let policy = RetryPolicy::default().with_timer(timer.clone());
        let calls = AtomicU32::new(0);
        let records: Mutex<Vec<TryRecord>> = Mutex::new(Vec::new());
        let err = retry(
            &policy,
            "p",
            |r| records.lock().unwrap().push(r.clone()),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(ProviderError::Http {
                    provider: "p".into(),
                    status: 502,
                    body: format!("bad gateway #{n}"),
                    retry_after: None,
                })
            },
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert!(err.to_string().contains("bad gateway #6"), "{err}");
        let sleeps = timer.sleeps();
        assert_eq!(sleeps.len(), 6, "{sleeps:?}");
        for (i, wait) in sleeps.iter().enumerate() {
            let (lo, hi) = policy.wait_bounds(i as u32 + 1);
            assert!(
                *wait >= lo && *wait <= hi,
                "retry {}: {wait:?} not in {lo:?}..{hi:?}",
                i + 1
            );
        }
        let records = records.into_inner().unwrap();
        assert!(records.last().unwrap().message().contains("no tries left"));
        assert!(
            records[0].message().contains("retrying in"),
            "{}",
            records[0].message()
        );
        let json = serde_json::to_value(&records[0]).unwrap();
        assert_eq!(json["attempt"], 1);
        assert!(json["wait"].as_u64().unwrap() >= 2000);
    }
}
