//! Metering: every model call is priced, recorded in `model_calls` with its
//! role, task and attempt, and checked against the budgets first. A call
//! that would push a task past `max_budget_per_task_usd` is not sent; a
//! project whose day's spending reached `daily_budget_usd` is paused with a
//! clear message. Budgets are enforced here, in code; models only advise.
//!
//! Token caps are enforced here too, because every role's call passes this
//! one boundary: a request without `max_tokens` gets its role's cap
//! (`max_tokens.<role>` in the project config), a larger one is lowered to
//! it. Without a cap a single-slot local server generates until its context
//! is full, past the request timeout, while the retry waits behind it.

use crate::recorder::Recorder;
use async_trait::async_trait;
use orch_providers::pricing::PriceTable;
use orch_providers::{Capabilities, ChatRequest, ChatResponse, DeltaSink, Provider, ProviderError};
use orch_state::{ModelCall, StateStore};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// Starts the message of a call refused by the task budget; the engine
/// fails such a task at once instead of retrying it.
pub const TASK_BUDGET_REACHED: &str = "task budget reached";
/// Starts the message of a call refused by the project's daily budget; the
/// project is paused and the task waits, without losing an attempt.
pub const DAILY_BUDGET_REACHED: &str = "daily budget reached";

/// Output tokens assumed for a call that sets no `max_tokens`, when
/// estimating whether it fits the budget.
const ASSUMED_OUTPUT_TOKENS: u64 = 1024;

/// What every metered provider of one project shares.
pub struct Meter {
    pub store: Arc<dyn StateStore>,
    pub prices: Arc<PriceTable>,
    pub rec: Recorder,
    pub project: String,
    pub task_budget_usd: Option<f64>,
    pub daily_budget_usd: Option<f64>,
    /// The most output tokens each role may ask for.
    pub max_tokens: orch_config::RoleTokens,
    /// Estimated costs of each task's calls in flight.
    pub in_flight: InFlight,
}

/// The estimated cost of every task's model calls under way, so calls in
/// parallel (best-of-N candidates) cannot each fit the task's budget on
/// their own and pass it together: each is checked against what is spent
/// plus what the others may still spend.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashMap<String, f64>>);

/// A call's share of [`InFlight`], given back when the call is recorded.
struct Reserved<'a> {
    in_flight: &'a InFlight,
    task: String,
    usd: f64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut map = self
            .in_flight
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(v) = map.get_mut(&self.task) {
            *v -= self.usd;
            if *v <= 1e-12 {
                map.remove(&self.task);
            }
        }
    }
}

/// Who is calling: recorded with each call.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub role: &'static str,
    pub task_id: Option<String>,
    pub attempt_id: Option<i64>,
}

pub struct MeteredProvider {
    inner: Arc<dyn Provider>,
    meter: Arc<Meter>,
    ctx: CallContext,
}

impl MeteredProvider {
    pub fn wrap(
        inner: Arc<dyn Provider>,
        meter: Arc<Meter>,
        ctx: CallContext,
    ) -> Arc<dyn Provider> {
        Arc::new(MeteredProvider { inner, meter, ctx })
    }

    /// `request` with its role's token cap applied: set when missing,
    /// lowered when larger; borrowed when it already fits.
    fn capped<'r>(&self, request: &'r ChatRequest) -> Cow<'r, ChatRequest> {
        let cap = self.meter.max_tokens.for_role(self.ctx.role);
        match request.max_tokens {
            Some(asked) if asked <= cap => Cow::Borrowed(request),
            _ => {
                let mut capped = request.clone();
                capped.max_tokens = Some(cap);
                Cow::Owned(capped)
            }
        }
    }

    fn estimate(&self, request: &ChatRequest) -> f64 {
        let chars: usize = request
            .messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.arguments.len())
                        .sum::<usize>()
            })
            .sum();
        let usage = orch_core::Usage {
            input_tokens: (chars as u64).div_ceil(4),
            output_tokens: request
                .max_tokens
                .map(u64::from)
                .unwrap_or(ASSUMED_OUTPUT_TOKENS),
            cached_tokens: 0,
            cost_usd: 0.0,
        };
        self.meter.prices.cost(&request.model, &usage)
    }

    /// Refuses the call when it would break a budget; otherwise holds its
    /// estimate against the task's budget until it is recorded.
    fn check_budgets(&self, request: &ChatRequest) -> Result<Option<Reserved<'_>>, ProviderError> {
        let m = &self.meter;
        let estimate = self.estimate(request);
        let internal =
            |e: orch_state::StateError| ProviderError::Config(format!("cannot read spending: {e}"));
        if let Some(limit) = m.daily_budget_usd {
            let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let spent = m.store.spent_on_day(&m.project, &day).map_err(internal)?;
            if spent + estimate > limit {
                let reason = format!(
                    "{DAILY_BUDGET_REACHED}: ${spent:.4} spent today (UTC) of daily_budget_usd = ${limit:.2}; work resumes when you raise the budget or tomorrow, with `orch resume --project {}`",
                    m.project
                );
                let _ = m.store.set_paused(&m.project, true, Some(&reason));
                return Err(ProviderError::Budget(reason));
            }
        }
        if let (Some(limit), Some(task)) = (m.task_budget_usd, &self.ctx.task_id) {
            // Held while reading, so two parallel calls see each other.
            let mut in_flight = m
                .in_flight
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let spent = m.store.spent_on_task(task).map_err(internal)?;
            let pending = in_flight.get(task).copied().unwrap_or(0.0);
            if spent + pending + estimate > limit {
                let under_way = if pending > 0.0 {
                    format!(" (and about ${pending:.4} under way in parallel)")
                } else {
                    String::new()
                };
                return Err(ProviderError::Budget(format!(
                    "{TASK_BUDGET_REACHED}: ${spent:.4} spent{under_way}, the next call would cost about ${estimate:.4}, and max_budget_per_task_usd = ${limit:.2}"
                )));
            }
            *in_flight.entry(task.clone()).or_insert(0.0) += estimate;
            return Ok(Some(Reserved {
                in_flight: &m.in_flight,
                task: task.clone(),
                usd: estimate,
            }));
        }
        Ok(None)
    }

    fn record(
        &self,
        request: &ChatRequest,
        started: Instant,
        result: &Result<ChatResponse, ProviderError>,
    ) {
        let (usage, ok, error, model) = match result {
            Ok(r) => (r.usage, true, None, request.model.clone()),
            Err(e) => (
                orch_core::Usage::default(),
                false,
                Some(e.to_string()),
                request.model.clone(),
            ),
        };
        let call = ModelCall {
            at: chrono::Utc::now(),
            project: self.meter.project.clone(),
            task_id: self.ctx.task_id.clone(),
            attempt_id: self.ctx.attempt_id,
            role: self.ctx.role.to_string(),
            provider: self.inner.name().to_string(),
            model,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_tokens,
            cost_usd: usage.cost_usd,
            duration_ms: started.elapsed().as_millis() as u64,
            ok,
            error,
        };
        if let Err(e) = self.meter.store.record_model_call(&call) {
            tracing::warn!("could not record a model call: {e}");
        }
    }

    fn price(&self, request: &ChatRequest, response: &mut ChatResponse) {
        // The model that answered (a fallback, a dated version) first, then
        // the one asked for.
        let prices = &self.meter.prices;
        let cost = match prices
            .price(&response.model)
            .or_else(|| prices.price(&request.model))
        {
            Some(p) => p.cost(&response.usage),
            None => 0.0,
        };
        // A provider that reports its own cost (none do yet) wins.
        if response.usage.cost_usd == 0.0 {
            response.usage.cost_usd = cost;
        }
    }
}

#[async_trait]
impl Provider for MeteredProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let request = &*self.capped(request);
        let _reserved = self.check_budgets(request)?;
        let started = Instant::now();
        let mut result = self.inner.chat(request).await;
        if let Ok(r) = &mut result {
            self.price(request, r);
        }
        self.record(request, started, &result);
        result
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let request = &*self.capped(request);
        let _reserved = self.check_budgets(request)?;
        let started = Instant::now();
        let mut result = self.inner.chat_stream(request, sink).await;
        if let Ok(r) = &mut result {
            self.price(request, r);
        }
        self.record(request, started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orch_providers::{Message, StreamDelta};
    use std::sync::Mutex;

    /// Stands in for the model: answers "ok" and keeps the `max_tokens`
    /// of every request it was sent.
    #[derive(Default)]
    struct Recording {
        seen: Mutex<Vec<Option<u32>>>,
    }

    impl Recording {
        fn answer(&self, request: &ChatRequest) -> ChatResponse {
            self.seen.lock().unwrap().push(request.max_tokens);
            ChatResponse {
                message: Message::assistant("ok"),
                usage: orch_core::Usage::default(),
                finish_reason: "stop".into(),
                model: request.model.clone(),
            }
        }
    }

    #[async_trait]
    impl Provider for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            Ok(self.answer(request))
        }
        async fn chat_stream(
            &self,
            request: &ChatRequest,
            _sink: DeltaSink<'_>,
        ) -> Result<ChatResponse, ProviderError> {
            Ok(self.answer(request))
        }
    }

    fn meter(max_tokens: orch_config::RoleTokens) -> Arc<Meter> {
        let store = Arc::new(orch_state::Store::open_in_memory().unwrap());
        Arc::new(Meter {
            store: store.clone(),
            prices: Arc::new(PriceTable::default()),
            rec: Recorder::new(store, "p"),
            project: "p".into(),
            task_budget_usd: None,
            daily_budget_usd: None,
            max_tokens,
            in_flight: InFlight::default(),
        })
    }

    fn ask(max_tokens: Option<u32>) -> ChatRequest {
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.max_tokens = max_tokens;
        req
    }

    #[tokio::test]
    async fn every_role_is_capped_at_its_configured_max_tokens() {
        let caps = orch_config::RoleTokens {
            worker: 400,
            planner: 300,
            judge: 100,
            architect: 200,
            reviewer: 500,
        };
        let meter = meter(caps);
        for (role, cap) in [
            ("worker", 400),
            ("planner", 300),
            ("judge", 100),
            ("architect", 200),
            ("reviewer", 500),
        ] {
            let inner = Arc::new(Recording::default());
            let ctx = CallContext {
                role,
                ..CallContext::default()
            };
            let metered = MeteredProvider::wrap(inner.clone(), meter.clone(), ctx);
            // No cap asked: the role's is set. A larger one is lowered.
            // A smaller one is kept, on both the whole and the streamed call.
            metered.chat(&ask(None)).await.unwrap();
            metered.chat(&ask(Some(cap + 1))).await.unwrap();
            metered.chat(&ask(Some(u32::MAX))).await.unwrap();
            metered.chat(&ask(Some(cap - 1))).await.unwrap();
            metered.chat(&ask(Some(cap))).await.unwrap();
            let sink = |_: &StreamDelta| {};
            metered.chat_stream(&ask(None), &sink).await.unwrap();
            metered
                .chat_stream(&ask(Some(cap * 2)), &sink)
                .await
                .unwrap();
            assert_eq!(
                *inner.seen.lock().unwrap(),
                [
                    Some(cap),
                    Some(cap),
                    Some(cap),
                    Some(cap - 1),
                    Some(cap),
                    Some(cap),
                    Some(cap)
                ],
                "role {role}"
            );
        }
    }

    #[tokio::test]
    async fn the_defaults_cap_every_role() {
        let meter = meter(orch_config::RoleTokens::default());
        let inner = Arc::new(Recording::default());
        let judge = CallContext {
            role: "judge",
            ..CallContext::default()
        };
        let metered = MeteredProvider::wrap(inner.clone(), meter.clone(), judge);
        metered.chat(&ask(None)).await.unwrap();
        // A role without its own cap gets the worker's.
        let other = CallContext {
            role: "something-new",
            ..CallContext::default()
        };
        let metered = MeteredProvider::wrap(inner.clone(), meter, other);
        metered.chat(&ask(None)).await.unwrap();
        assert_eq!(*inner.seen.lock().unwrap(), [Some(1024), Some(4096)]);
    }
}

#[cfg(test)]
mod in_flight_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orch_providers::pricing::Price;
    use orch_providers::Message;

    /// Answers after a pause, so two calls overlap; costs nothing itself.
    struct Slow;

    #[async_trait]
    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            Ok(ChatResponse {
                message: Message::assistant("ok"),
                usage: orch_core::Usage::default(),
                finish_reason: "stop".into(),
                model: request.model.clone(),
            })
        }
        async fn chat_stream(
            &self,
            request: &ChatRequest,
            _sink: DeltaSink<'_>,
        ) -> Result<ChatResponse, ProviderError> {
            self.chat(request).await
        }
    }

    #[tokio::test]
    async fn parallel_calls_of_one_task_share_its_budget() {
        let store = Arc::new(orch_state::Store::open_in_memory().unwrap());
        store.ensure_project("p", "/repo").unwrap();
        let task = store
            .add_task(&orch_core::NewTask {
                project: "p".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        // One output token costs $1; each call asks for one: about $1.
        let mut prices = PriceTable::default();
        prices.set("m", Price::new(0.0, 1_000_000.0, 0.0));
        let meter = Arc::new(Meter {
            store: store.clone(),
            prices: Arc::new(prices),
            rec: Recorder::new(store, "p"),
            project: "p".into(),
            task_budget_usd: Some(1.5),
            daily_budget_usd: None,
            max_tokens: orch_config::RoleTokens::default(),
            in_flight: InFlight::default(),
        });
        let ctx = CallContext {
            role: "worker",
            task_id: Some(task.id.to_string()),
            attempt_id: None,
        };
        let a = MeteredProvider::wrap(Arc::new(Slow), meter.clone(), ctx.clone());
        let b = MeteredProvider::wrap(Arc::new(Slow), meter.clone(), ctx);
        let mut req = ChatRequest::new("m", vec![Message::user("hi")]);
        req.max_tokens = Some(1);
        let (first, second) = tokio::join!(a.chat(&req), async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            b.chat(&req).await
        });
        assert!(first.is_ok());
        let refused = second.unwrap_err().to_string();
        assert!(
            refused.contains(TASK_BUDGET_REACHED) && refused.contains("under way"),
            "{refused}"
        );
        // The first call cost nothing in the end: its share was given back.
        assert!(meter.in_flight.0.lock().unwrap().is_empty());
        assert!(b.chat(&req).await.is_ok());
    }
}
