//! [`ResilientProvider`]: any provider behind the one retry policy, a
//! per-provider circuit breaker and an optional fallback model. It is a
//! [`Provider`] itself, so the rest of orch uses it without knowing.
//!
//! A call goes like this:
//! 1. The breaker is asked first. Closed: the call goes out. Open: no
//!    request is sent; the try fails fast with
//!    [`ProviderError::CircuitOpen`]. After the cool-down the breaker is
//!    half-open and lets exactly one call through as a probe; its success
//!    closes the breaker, its failure opens it for another cool-down.
//! 2. Each try's outcome feeds the breaker: `N` consecutive retryable
//!    failures (429, 5xx, connection errors, timeouts, cut streams) open it.
//!    An error a retry cannot fix (400, 401, ...) proves the server is up
//!    and counts as a success for the breaker, while the call itself fails
//!    at once with the provider's message.
//! 3. Retryable failures are retried under the [`RetryPolicy`]. Without a
//!    fallback, an open breaker is waited out like a `Retry-After` (the try
//!    still counts against `max_attempts`), so an outage is ridden out on
//!    the long schedule without sending requests into it.
//! 4. With a fallback, an open breaker or exhausted retries hand the
//!    request to the fallback provider with the fallback model (once; wrap
//!    the fallback in its own `ResilientProvider` to retry it too). If the
//!    fallback cannot enforce a JSON schema, the schema moves into the
//!    prompt (the structured-output layer validates the answer either way).
//!
//! 5. A request the server refuses for what it is, not because it is down,
//!    is not ridden through the outage schedule: when two tries in a row
//!    fail with the same status and the same error body (a 500 or other
//!    deterministic server error, without `Retry-After`; never 429, 502,
//!    503 or 504, which mean overload or an outage), one tiny probe request
//!    goes to the same server. If the probe is answered, the server is up
//!    and refuses this request: the call fails with
//!    [`ProviderError::RejectedTwice`], which is not retryable. If the
//!    probe fails too, it is an outage after all and the schedule goes on.
//!
//! Charging: only the successful try's response is returned, so its usage
//! is the only usage anyone sees; failed tries carry none. Nothing is
//! charged twice.
//!
//! Streaming: a stream cut mid-way is retried as a whole. The sink has then
//! already seen the cut try's partial deltas, and the retry's deltas start
//! again from the beginning (text from the start, tool-call indices from
//! 0). The observer gets a [`ResilienceEvent::Try`] with the error before
//! the restart, which is the signal for a live display to start over; the
//! returned response holds only the successful try's answer.

use crate::chat::{ChatRequest, ChatResponse};
use crate::retry::{self, Decision, RetryPolicy, Timer, TryRecord, WaitReason};
use crate::{structured, Capabilities, DeltaSink, Provider, ProviderError};
use async_trait::async_trait;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When the breaker opens and how long it rests the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures (tries) that open the breaker.
    pub failures: u32,
    /// How long an open breaker rests the provider before one probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cool_down: Duration::from_secs(60),
        }
    }
}

/// The breaker's state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast for `retry_in` more.
    Open { retry_in: Duration },
    /// The cool-down is over: the next call is a probe.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A change of breaker state, reported as a [`ResilienceEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Opened { failures: u32 },
    HalfOpen,
    Closed,
}

/// A per-provider circuit breaker. Share one `Arc<CircuitBreaker>` among
/// every [`ResilientProvider`] that calls the same provider, so all of
/// them stop when it is down.
pub struct CircuitBreaker {
    provider: String,
    config: BreakerConfig,
    timer: Arc<dyn Timer>,
    state: Mutex<State>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("provider", &self.provider)
            .field("config", &self.config)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker for `provider`. `timer` is the clock for the
    /// cool-down (use the retry policy's).
    pub fn new(provider: &str, config: BreakerConfig, timer: Arc<dyn Timer>) -> Self {
        CircuitBreaker {
            provider: provider.to_string(),
            config: BreakerConfig {
                failures: config.failures.max(1),
                ..config
            },
            timer,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value, valid even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    pub fn state(&self) -> CircuitState {
        let now = self.timer.now();
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open {
                retry_in: until - now,
            },
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// May a request go out now? `Err` is how long to wait.
    fn admit(&self) -> Result<(Permit<'_>, Option<Transition>), Duration> {
        let now = self.timer.now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok((self.permit(false), None)),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => {
                *state = State::HalfOpen { probing: true };
                Ok((self.permit(true), Some(Transition::HalfOpen)))
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok((self.permit(true), None))
            }
            // One probe at a time; the others rest another cool-down.
            State::HalfOpen { probing: true } => Err(self.config.cool_down),
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            settled: false,
        }
    }

    fn on_success(&self) -> Option<Transition> {
        let mut state = self.lock();
        let was_closed = matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        (!was_closed).then_some(Transition::Closed)
    }

    fn on_failure(&self) -> Option<Transition> {
        let now = self.timer.now();
        let mut state = self.lock();
        match *state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.config.failures {
                    *state = State::Open {
                        until: now + self.config.cool_down,
                    };
                    Some(Transition::Opened { failures })
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            // The probe (or a call from before) failed: rest again.
            State::HalfOpen { .. } => {
                *state = State::Open {
                    until: now + self.config.cool_down,
                };
                Some(Transition::Opened { failures: 1 })
            }
            State::Open { .. } => None,
        }
    }
}

/// Leave to send one request; settle it with the outcome. A permit
/// dropped unsettled (the call was cancelled) frees the probe slot.
struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    fn success(mut self) -> Option<Transition> {
        self.settled = true;
        self.breaker.on_success()
    }
    fn failure(mut self) -> Option<Transition> {
        self.settled = true;
        self.breaker.on_failure()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { probing: true } = *state {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

/// What the resilience layer did, for the event log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResilienceEvent {
    /// One try against the primary provider.
    Try(TryRecord),
    CircuitOpened {
        provider: String,
        /// Consecutive failures that opened it (1 when a probe failed).
        failures: u32,
        #[serde(serialize_with = "secs")]
        cool_down: Duration,
    },
    /// The cool-down is over; one probe goes out.
    CircuitHalfOpen {
        provider: String,
    },
    CircuitClosed {
        provider: String,
    },
    /// The fallback model takes this call.
    Fallback {
        from_provider: String,
        from_model: String,
        to_provider: String,
        to_model: String,
        reason: String,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ResilienceEvent {
    /// One line for logs and the event log.
    pub fn message(&self) -> String {
        match self {
            ResilienceEvent::Try(r) => r.message(),
            ResilienceEvent::CircuitOpened {
                provider,
                failures,
                cool_down,
            } => format!(
                "{provider} failed {failures} time(s) in a row; circuit breaker open, \
                 no requests for {} s",
                cool_down.as_secs()
            ),
            ResilienceEvent::CircuitHalfOpen { provider } => {
                format!("{provider}: cool-down over, sending one probe request")
            }
            ResilienceEvent::CircuitClosed { provider } => {
                format!("{provider} answers again; circuit breaker closed")
            }
            ResilienceEvent::Fallback {
                from_provider,
                from_model,
                to_provider,
                to_model,
                reason,
            } => format!(
                "{from_provider}:{from_model} is unavailable ({reason}); \
                 falling back to {to_provider}:{to_model}"
            ),
        }
    }
}

/// Receives every [`ResilienceEvent`].
pub type Observer = Arc<dyn Fn(&ResilienceEvent) + Send + Sync>;

/// A provider with retries, a circuit breaker and an optional fallback.
pub struct ResilientProvider {
    primary: Arc<dyn Provider>,
    policy: RetryPolicy,
    breaker: Arc<CircuitBreaker>,
    fallback: Option<(Arc<dyn Provider>, String)>,
    observer: Option<Observer>,
}

impl fmt::Debug for ResilientProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientProvider")
            .field("primary", &self.primary.name())
            .field("policy", &self.policy)
            .field("breaker", &self.breaker)
            .field(
                "fallback",
                &self
                    .fallback
                    .as_ref()
                    .map(|(p, m)| format!("{}:{m}", p.name())),
            )
            .finish()
    }
}

impl ResilientProvider {
    /// `primary` under `policy`, with its own breaker (default config, on
    /// the policy's clock) and no fallback.
    pub fn new(primary: Arc<dyn Provider>, policy: RetryPolicy) -> Self {
        let breaker = Arc::new(CircuitBreaker::new(
            primary.name(),
            BreakerConfig::default(),
            policy.timer.clone(),
        ));
        ResilientProvider {
            primary,
            policy,
            breaker,
            fallback: None,
            observer: None,
        }
    }

    /// Use this (possibly shared) breaker.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = breaker;
        self
    }

    /// When the primary is down, send the call to `provider` as `model`.
    pub fn with_fallback(mut self, provider: Arc<dyn Provider>, model: impl Into<String>) -> Self {
        self.fallback = Some((provider, model.into()));
        self
    }

    /// Report every try, breaker change and fallback to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn emit(&self, event: ResilienceEvent) {
        match &event {
            ResilienceEvent::Try(r) if r.error.is_none() => {}
            _ => tracing::info!(event = %event.message(), "provider resilience"),
        }
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    fn transition(&self, t: Option<Transition>) {
        let provider = self.breaker.provider.clone();
        match t {
            None => {}
            Some(Transition::Opened { failures }) => self.emit(ResilienceEvent::CircuitOpened {
                provider,
                failures,
                cool_down: self.breaker.config.cool_down,
            }),
            Some(Transition::HalfOpen) => self.emit(ResilienceEvent::CircuitHalfOpen { provider }),
            Some(Transition::Closed) => self.emit(ResilienceEvent::CircuitClosed { provider }),
        }
    }

    /// One try against the primary, through the breaker.
    async fn try_primary(
        &self,
        request: &ChatRequest,
        sink: Option<DeltaSink<'_>>,
    ) -> Result<ChatResponse, ProviderError> {
        let (permit, transition) =
            self.breaker
                .admit()
                .map_err(|retry_in| ProviderError::CircuitOpen {
                    provider: self.primary.name().to_string(),
                    retry_in,
                })?;
        self.transition(transition);
        let result = match sink {
            Some(sink) => self.primary.chat_stream(request, sink).await,
            None => self.primary.chat(request).await,
        };
        let transition = match &result {
            Err(e) if e.is_retryable() => permit.failure(),
            _ => permit.success(),
        };
        self.transition(transition);
        result
    }

    /// [`Self::try_primary`], turning the second identical rejection in a
    /// row into [`ProviderError::RejectedTwice`] when a probe shows the
    /// server is up (see the module docs). `last` is the previous try's
    /// rejection, if it was one.
    async fn try_checked(
        &self,
        request: &ChatRequest,
        sink: Option<DeltaSink<'_>>,
        last: &Mutex<Option<(u16, String)>>,
    ) -> Result<ChatResponse, ProviderError> {
        let result = self.try_primary(request, sink).await;
        let rejection = match &result {
            Err(ProviderError::Http {
                status,
                body,
                retry_after: None,
                ..
            }) if may_be_a_rejection(*status) => Some((*status, body.clone())),
            _ => None,
        };
        let previous = std::mem::replace(
            &mut *last.lock().unwrap_or_else(|p| p.into_inner()),
            rejection.clone(),
        );
        match (rejection, previous) {
            (Some(now), Some(before)) if now == before && self.server_is_up(request).await => {
                Err(ProviderError::RejectedTwice {
                    provider: self.primary.name().to_string(),
                    status: now.0,
                    body: now.1,
                })
            }
            _ => result,
        }
    }

    /// Whether the primary answers a minimal request for the same model:
    /// one short user message, one output token, no tools.
    async fn server_is_up(&self, request: &ChatRequest) -> bool {
        let mut probe = ChatRequest::new(
            request.model.clone(),
            vec![crate::chat::Message::user("Reply with OK.")],
        );
        probe.max_tokens = Some(1);
        let answered = self.primary.chat(&probe).await.is_ok();
        tracing::info!(
            provider = self.primary.name(),
            answered,
            "the same error twice in a row; probed the server to tell an outage from a rejected request"
        );
        answered
    }

    async fn run(
        &self,
        request: &ChatRequest,
        sink: Option<DeltaSink<'_>>,
    ) -> Result<ChatResponse, ProviderError> {
        let has_fallback = self.fallback.is_some();
        let classify = |e: &ProviderError| match e {
            // Without a fallback, wait the rest out instead of failing.
            ProviderError::CircuitOpen { retry_in, .. } if !has_fallback => {
                Decision::RetryAfter(*retry_in, WaitReason::CircuitOpen)
            }
            other => retry::classify(other),
        };
        let last_rejection = Mutex::new(None);
        let result = retry::retry_with(
            &self.policy,
            self.primary.name(),
            classify,
            |r| self.emit(ResilienceEvent::Try(r.clone())),
            || self.try_checked(request, sink, &last_rejection),
        )
        .await;
        let error = match result {
            Ok(response) => return Ok(response),
            Err(e) => e,
        };
        let down = error.is_retryable() || matches!(error, ProviderError::CircuitOpen { .. });
        let Some((provider, model)) = self.fallback.as_ref().filter(|_| down) else {
            return Err(error);
        };
        let mut fallback_request = request.clone();
        fallback_request.model = model.clone();
        if !provider.capabilities().json_schema {
            structured::schema_in_prompt(&mut fallback_request);
        }
        self.emit(ResilienceEvent::Fallback {
            from_provider: self.primary.name().to_string(),
            from_model: request.model.clone(),
            to_provider: provider.name().to_string(),
            to_model: model.clone(),
            reason: error.to_string(),
        });
        match sink {
            Some(sink) => provider.chat_stream(&fallback_request, sink).await,
            None => provider.chat(&fallback_request).await,
        }
    }
}

/// Whether a retryable HTTP status may be the server refusing the request
/// itself (llama-cpp-python answers a request it cannot validate with 500).
/// 429, 408, 502, 503 and 504 say the server or a gateway is overloaded or
/// down, and an identical body is normal for those.
fn may_be_a_rejection(status: u16) -> bool {
    !matches!(status, 408 | 429 | 502 | 503 | 504)
}

#[async_trait]
impl Provider for ResilientProvider {
    fn name(&self) -> &str {
        self.primary.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.primary.capabilities()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.run(request, None).await
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        self.run(request, Some(sink)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::retry::VirtualTimer;
    use orch_core::Usage;
    use std::collections::VecDeque;

    /// Fails or answers from a queue (a unit-test mock; the HTTP versions
    /// of these tests are in tests/retry_faults.rs).
    struct Scripted {
        name: &'static str,
        outcomes: Mutex<VecDeque<Result<u64, u16>>>,
        calls: Mutex<u32>,
    }

    impl Scripted {
        fn new(name: &'static str, outcomes: Vec<Result<u64, u16>>) -> Arc<Self> {
            Arc::new(Scripted {
                name,
                outcomes: Mutex::new(outcomes.into()),
                calls: Mutex::new(0),
            })
        }
        fn calls(&self) -> u32 {
            *self.calls.lock().unwrap()
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            *self.calls.lock().unwrap() += 1;
            match self.outcomes.lock().unwrap().pop_front().unwrap_or(Ok(1)) {
                Ok(tokens) => Ok(ChatResponse {
                    message: Message::assistant(format!("{} says hi", self.name)),
                    usage: Usage {
                        input_tokens: tokens,
                        output_tokens: tokens,
                        cached_tokens: 0,
                        cost_usd: 0.0,
                    },
                    finish_reason: "stop".into(),
                    model: request.model.clone(),
                }),
                Err(status) => Err(ProviderError::Http {
                    provider: self.name.into(),
                    status,
                    body: format!("HTTP {status} from {}", self.name),
                    retry_after: None,
                }),
            }
        }
    }

    fn events() -> (Observer, Arc<Mutex<Vec<ResilienceEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (
            Arc::new(move |e: &ResilienceEvent| sink.lock().unwrap().push(e.clone())),
            seen,
        )
    }

    fn req() -> ChatRequest {
        ChatRequest::new("big", vec![Message::user("hi")])
    }

    #[tokio::test]
    async fn breaker_cycle_closed_open_half_open_closed() {
        let timer = Arc::new(VirtualTimer::new());
        let breaker = CircuitBreaker::new(
            "p",
            BreakerConfig {
                failures: 2,
                cool_down: Duration::from_secs(60),
            },
            timer.clone(),
        );
        let (p, _) = breaker.admit().unwrap();
        assert_eq!(p.failure(), None);
        let (p, _) = breaker.admit().unwrap();
        assert_eq!(p.failure(), Some(Transition::Opened { failures: 2 }));
        assert_eq!(
            breaker.state(),
            CircuitState::Open {
                retry_in: Duration::from_secs(60)
            }
        );
        assert_eq!(breaker.admit().err(), Some(Duration::from_secs(60)));
        timer.advance(Duration::from_secs(61));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let (probe, t) = breaker.admit().unwrap();
        assert_eq!(t, Some(Transition::HalfOpen));
        // Only one probe at a time.
        assert!(breaker.admit().is_err());
        // A cancelled probe frees the slot.
        drop(probe);
        let (probe, t) = breaker.admit().unwrap();
        assert_eq!(t, None);
        // A failed probe rests the provider again.
        assert_eq!(probe.failure(), Some(Transition::Opened { failures: 1 }));
        assert!(breaker.admit().is_err());
        timer.advance(Duration::from_secs(60));
        let (probe, _) = breaker.admit().unwrap();
        assert_eq!(probe.success(), Some(Transition::Closed));
        assert_eq!(breaker.state(), CircuitState::Closed);
        // A success resets the count of consecutive failures.
        let (p, _) = breaker.admit().unwrap();
        assert_eq!(p.failure(), None);
        let (p, _) = breaker.admit().unwrap();
        assert_eq!(p.success(), None);
        let (p, _) = breaker.admit().unwrap();
        assert_eq!(p.failure(), None);
    }

    #[tokio::test]
    async fn retries_then_falls_back_when_the_breaker_opens() {
        let timer = Arc::new(VirtualTimer::new());
        let policy =
            RetryPolicy::from_schedule_seconds(&[1, 2, 3, 4, 5], 0.0, 60).with_timer(timer.clone());
        let primary = Scripted::new("primary", vec![Err(503), Err(503), Err(503)]);
        let backup = Scripted::new("backup", vec![Ok(7)]);
        let (observer, seen) = events();
        let breaker = Arc::new(CircuitBreaker::new(
            "primary",
            BreakerConfig {
                failures: 3,
                cool_down: Duration::from_secs(600),
            },
            timer.clone(),
        ));
        let p = ResilientProvider::new(primary.clone(), policy)
            .with_breaker(breaker)
            .with_fallback(backup.clone(), "small")
            .with_observer(observer);
        let r = p.chat(&req()).await.unwrap();
        assert_eq!(r.model, "small");
        assert_eq!(r.message.content, "backup says hi");
        assert_eq!(r.usage.input_tokens, 7);
        assert_eq!(
            primary.calls(),
            3,
            "the open breaker stopped the 4th request"
        );
        let kinds: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["try", "try", "circuit_opened", "try", "try", "fallback"]
        );
        // 3 scheduled waits, then the fast CircuitOpen try ended the loop.
        assert_eq!(
            timer.sleeps(),
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            ]
        );
    }

    #[tokio::test]
    async fn without_fallback_an_open_breaker_is_waited_out() {
        let timer = Arc::new(VirtualTimer::new());
        let policy =
            RetryPolicy::from_schedule_seconds(&[1, 1, 1], 0.0, 600).with_timer(timer.clone());
        // 503, not 500: the same 500 twice would be probed as a possible
        // rejection of the request itself (tests/repeated_rejection.rs).
        let primary = Scripted::new("primary", vec![Err(503), Err(503)]);
        let breaker = Arc::new(CircuitBreaker::new(
            "primary",
            BreakerConfig {
                failures: 2,
                cool_down: Duration::from_secs(90),
            },
            timer.clone(),
        ));
        let (observer, seen) = events();
        let p = ResilientProvider::new(primary.clone(), policy)
            .with_breaker(breaker.clone())
            .with_observer(observer);
        let r = p.chat(&req()).await.unwrap();
        assert_eq!(r.message.content, "primary says hi");
        assert_eq!(primary.calls(), 3);
        // fail, wait 1 s, fail (opens), wait 1 s, open: wait the 89 s left, probe succeeds.
        assert_eq!(
            timer.sleeps(),
            vec![
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(89)
            ]
        );
        assert_eq!(breaker.state(), CircuitState::Closed);
        let seen = seen.lock().unwrap();
        assert!(seen
            .iter()
            .any(|e| matches!(e, ResilienceEvent::CircuitClosed { .. })));
        let waited = seen.iter().find_map(|e| match e {
            ResilienceEvent::Try(r) if r.wait_reason == Some(WaitReason::CircuitOpen) => {
                Some(r.clone())
            }
            _ => None,
        });
        assert!(waited.unwrap().message().contains("circuit breaker open"));
    }

    #[tokio::test]
    async fn client_errors_neither_retry_nor_fall_back_nor_trip_the_breaker() {
        let timer = Arc::new(VirtualTimer::new());
        let policy = RetryPolicy::default().with_timer(timer.clone());
        let primary = Scripted::new("primary", vec![Err(500), Err(400)]);
        let backup = Scripted::new("backup", vec![]);
        let breaker = Arc::new(CircuitBreaker::new(
            "primary",
            BreakerConfig {
                failures: 2,
                cool_down: Duration::from_secs(60),
            },
            timer.clone(),
        ));
        let p = ResilientProvider::new(primary.clone(), policy)
            .with_breaker(breaker.clone())
            .with_fallback(backup.clone(), "small");
        let err = p.chat(&req()).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 400 from primary"), "{err}");
        assert_eq!(primary.calls(), 2);
        assert_eq!(backup.calls(), 0);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(timer.sleeps().len(), 1);
    }
}
