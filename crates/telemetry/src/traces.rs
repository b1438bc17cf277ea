//! OpenTelemetry traces, built from the event stream: no span is opened
//! inside the engine; a subscriber to the store's bus turns committed events
//! into spans with explicit start and end times and exports them over
//! OTLP/HTTP (protobuf).
//!
//! One trace per task attempt: the root span `attempt` runs from
//! `attempt_started` to its end (`attempt_finished`, `attempt_interrupted`
//! or `cancelled`); under it are the stages (`work`, `verify`, `judge`),
//! each model call (`chat <model>`), each tool call (`execute_tool <tool>`,
//! under `work`), each verification step (`step <kind>`, under `verify`),
//! and the merge (`merge`, which comes after the attempt ended and joins the
//! task's last attempt's trace). The planner's rounds are traces of their
//! own (`plan`, with the planner's model calls under it), and so are
//! best-of-N rounds (`candidates`, linked to each candidate's trace, with
//! the ranking's model call under it). A refining attempt's iterations are
//! events on its root; the merge queue's conflict resolver (an attempt of
//! kind `resolve`) is an attempt whose trace hangs under the merge it works
//! for.
//!
//! Several attempts of one task are open at once in a best-of-N round.
//! Every attempt-scoped event names its attempt (by row id, number or both)
//! and goes to that attempt's trace; one that names none (a row from an
//! older orch) goes to the task's one open attempt, and is left out when
//! several are open, rather than put in the wrong trace.
//!
//! A span is emitted whole once its end is known. Its id is chosen when it
//! is first referred to, so children (a model call during `work`) can point
//! at a parent that is emitted after them. Per-attempt state lives until the
//! attempt ends; every map is bounded.
//!
//! No prompt, tool argument or output, model error text or judge issue goes
//! into a span unless `trace_content` is set; events reach the bus redacted.

use opentelemetry::trace::{
    Event as SpanEvent, Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt,
    TraceFlags, TraceId, TraceState, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;
use orch_core::{AttemptKind, AttemptStatus};
use orch_protocol::{
    AttemptFinished, AttemptStarted, CandidatesRanked, CandidatesStarted, ConflictResolved,
    ConflictResolving, Event, ModelCall, Payload, PlanCreated, RefineIteration, RefineStopped,
    Stage, StageFinished, StageStarted, StepSummary, ToolCall, VerificationFinished,
};
use orch_state::StateStore;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, oneshot};

/// The variables that turn traces on; without either, nothing is started.
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Open attempts, merges, plans and remembered last attempts, each.
const MAX_OPEN: usize = 4096;

/// How long the exit waits for the collector to take the last spans.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Keeps the export running; dropping it (or [`TraceGuard::shutdown`])
/// turns what is still in the bus into spans, ends the spans still open,
/// and flushes everything to the collector before it returns.
pub struct TraceGuard {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TraceGuard {
    /// Exports what is left and shuts the exporter down.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("traces: the export thread panicked; some spans may be lost");
            }
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts exporting traces of every project's events, when an OTLP endpoint
/// is configured; None (and nothing started) otherwise.
pub fn start(store: Arc<dyn StateStore>, trace_content: bool) -> Option<TraceGuard> {
    start_for(store, trace_content, Vec::new())
}

/// As [`start`], for the events of `projects` only (all when empty): the
/// bus also carries events other processes committed to the same database,
/// which their own exporters report.
pub fn start_for(
    store: Arc<dyn StateStore>,
    trace_content: bool,
    projects: Vec<String>,
) -> Option<TraceGuard> {
    let endpoint = configured_endpoint()?;
    let rx = match store.subscribe() {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("traces: cannot follow the event log, no traces: {e}");
            return None;
        }
    };
    let provider = match provider(&endpoint) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("traces: cannot export to {endpoint}: {e}; check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS");
            return None;
        }
    };
    let (stop, stopped) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("orch-traces".into())
        .spawn(move || export(provider, rx, stopped, trace_content, projects));
    match spawned {
        Ok(thread) => Some(TraceGuard {
            stop: Some(stop),
            thread: Some(thread),
        }),
        Err(e) => {
            tracing::warn!("traces: cannot start the export thread, no traces: {e}");
            None
        }
    }
}

/// The traces endpoint the environment names, if any.
fn configured_endpoint() -> Option<String> {
    ENDPOINT_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// The SDK provider: OTLP/HTTP protobuf (endpoint, headers and timeout from
/// the standard variables), every trace kept, `service.name` from
/// OTEL_SERVICE_NAME or `orch`.
fn provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "orch".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reported {
            inner: exporter,
            endpoint: endpoint.to_string(),
            failures: AtomicU64::new(0),
        })
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource)
        .build())
}

/// The export thread: follows the bus on a runtime of its own until told to
/// stop, then drains it, ends what is open and shuts the provider down.
fn export(
    provider: SdkTracerProvider,
    rx: broadcast::Receiver<Event>,
    stop: oneshot::Receiver<()>,
    content: bool,
    projects: Vec<String>,
) {
    let mut projector = Projector::new(provider.tracer("orch"), content, projects);
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt.block_on(follow(&mut projector, rx, stop)),
        Err(e) => tracing::warn!("traces: cannot start the export runtime: {e}"),
    }
    projector.close_all(SystemTime::now());
    if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
        tracing::warn!("traces: the exporter did not shut down cleanly: {e}");
    }
}

async fn follow<T: Tracer>(
    projector: &mut Projector<T>,
    mut rx: broadcast::Receiver<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    use broadcast::error::{RecvError, TryRecvError};
    loop {
        tokio::select! {
            biased;
            ev = rx.recv() => match ev {
                Ok(ev) => projector.on_event(&ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!("traces: fell {n} events behind; some spans are missing");
                }
                Err(RecvError::Closed) => return,
            },
            _ = &mut stop => loop {
                match rx.try_recv() {
                    Ok(ev) => projector.on_event(&ev),
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            },
        }
    }
}

/// The OTLP exporter, saying when the collector does not take spans (the
/// SDK itself is silent): on the first failure and then ever more rarely.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    endpoint: String,
    failures: AtomicU64,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    "traces: {spans} span(s) not taken by {} ({n} failed export(s) so far): {e}; is the collector listening?",
                    self.endpoint
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

// ---------------------------------------------------------------------------
// The projection: events in, spans out.

/// A span whose id is fixed before its end is known.
struct Pending {
    id: SpanId,
    start: SystemTime,
    attrs: Vec<KeyValue>,
    events: Vec<SpanEvent>,
    links: Vec<Link>,
}

/// An attempt's trace while the attempt runs.
struct AttemptTrace {
    trace: TraceId,
    root: Pending,
    number: Option<u32>,
    /// The attempt's row id, from its start (model calls name it).
    id: Option<i64>,
    /// Work or resolve, once an event has said (its start does).
    kind: Option<AttemptKind>,
    /// The merge span this attempt hangs under: set for the merge queue's
    /// conflict resolver, which works inside the merge; None for a root.
    under_merge: Option<SpanId>,
    /// Stages referred to and not yet finished.
    stages: Vec<(Stage, Pending)>,
    seq: u64,
}

/// A best-of-N round of one task, from its start to its ranking.
struct RoundTrace {
    trace: TraceId,
    span: Pending,
    /// Each candidate's finished attempt, by number, for the merge to hang
    /// under the winner's.
    finished: Vec<Finished>,
    seq: u64,
}

/// Where an attempt-scoped event goes.
enum Route {
    /// The task's open attempt at this index.
    Open(usize),
    /// Late for the task's finished attempt.
    Late(Finished),
    /// Several of the task's attempts are open (a best-of-N round) and the
    /// event does not say which it is for: it is left out.
    Unknown,
}

/// Which attempt an event names: its number, its row id, both or neither.
#[derive(Clone, Copy)]
struct Who {
    number: Option<u32>,
    id: Option<i64>,
}

impl Who {
    /// An event that names no attempt.
    const ANY: Who = Who {
        number: None,
        id: None,
    };

    fn of(id: Option<i64>, number: Option<u32>) -> Who {
        Who { number, id }
    }

    fn number(number: Option<u32>) -> Who {
        Who { number, id: None }
    }

    fn named(self) -> bool {
        self.number.is_some() || self.id.is_some()
    }

    /// Whether the attempt with `id` and `number` is the one named: by row
    /// id when both sides know it, else by number (an attempt seen only in
    /// part may know one and not the other).
    fn is(self, id: Option<i64>, number: Option<u32>) -> bool {
        match (self.id, id) {
            (Some(a), Some(b)) => a == b,
            _ => matches!((self.number, number), (Some(a), Some(b)) if a == b),
        }
    }

    /// Whether it names an attempt other than that one.
    fn other_than(self, id: Option<i64>, number: Option<u32>) -> bool {
        match (self.id, id) {
            (Some(a), Some(b)) => a != b,
            _ => matches!((self.number, number), (Some(a), Some(b)) if a != b),
        }
    }
}

/// Where a finished attempt's trace is, for what comes after it (the merge,
/// a late event).
#[derive(Clone, Copy)]
struct Finished {
    trace: TraceId,
    root: SpanId,
    number: Option<u32>,
    id: Option<i64>,
    seq: u64,
}

/// A merge under way for one task, and where it hangs.
struct MergeTrace {
    trace: TraceId,
    /// The last attempt's root; None when the merge is its trace's root.
    parent: Option<SpanId>,
    span: Pending,
    seq: u64,
}

/// A planning round of one project.
struct PlanTrace {
    trace: TraceId,
    root: Pending,
    seq: u64,
}

/// One span, complete.
struct SpanOut {
    name: Cow<'static, str>,
    kind: SpanKind,
    trace: TraceId,
    parent: Option<SpanId>,
    span: Pending,
    end: SystemTime,
    status: Status,
}

/// The tracer, the ids, and whether content may go into spans.
struct Out<T> {
    tracer: T,
    ids: RandomIdGenerator,
    content: bool,
}

impl<T: Tracer> Out<T> {
    fn pending(&self, start: SystemTime) -> Pending {
        Pending {
            id: self.ids.new_span_id(),
            start,
            attrs: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    fn emit(&self, s: SpanOut) {
        let start = s.span.start;
        let mut b = self
            .tracer
            .span_builder(s.name)
            .with_kind(s.kind)
            .with_start_time(start)
            .with_attributes(s.span.attrs)
            .with_status(s.status);
        b.span_id = Some(s.span.id);
        b.trace_id = Some(s.trace);
        if !s.span.events.is_empty() {
            b.events = Some(s.span.events);
        }
        if !s.span.links.is_empty() {
            b.links = Some(s.span.links);
        }
        let cx = match s.parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                s.trace,
                parent,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut span = b.start_with_context(&self.tracer, &cx);
        span.end_with_timestamp(s.end.max(start));
    }
}

/// Turns events into spans.
pub(crate) struct Projector<T> {
    out: Out<T>,
    projects: Vec<String>,
    /// Each task's open attempts: one, or a best-of-N round's candidates.
    attempts: HashMap<String, Vec<AttemptTrace>>,
    finished: HashMap<String, Finished>,
    merges: HashMap<String, MergeTrace>,
    plans: HashMap<String, PlanTrace>,
    rounds: HashMap<String, RoundTrace>,
    seq: u64,
}

fn at(ev: &Event) -> SystemTime {
    SystemTime::from(ev.at)
}

/// `ms` before `t`.
fn before(t: SystemTime, ms: u64) -> SystemTime {
    t.checked_sub(Duration::from_millis(ms)).unwrap_or(t)
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::I64(n.try_into().unwrap_or(i64::MAX))
}

fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(key, value)
}

/// The stage a model role works in, when it has a stage span of its own.
fn stage_of_role(role: &str) -> Option<Stage> {
    match role {
        "worker" => Some(Stage::Work),
        "judge" => Some(Stage::Judge),
        _ => None,
    }
}

/// The key of the oldest entry, by `seq`.
fn oldest<V>(map: &HashMap<String, V>, seq: impl Fn(&V) -> u64) -> Option<String> {
    map.iter()
        .min_by_key(|(_, v)| seq(v))
        .map(|(k, _)| k.clone())
}

impl<T: Tracer> Projector<T> {
    pub(crate) fn new(tracer: T, content: bool, projects: Vec<String>) -> Self {
        Projector {
            out: Out {
                tracer,
                ids: RandomIdGenerator::default(),
                content,
            },
            projects,
            attempts: HashMap::new(),
            finished: HashMap::new(),
            merges: HashMap::new(),
            plans: HashMap::new(),
            rounds: HashMap::new(),
            seq: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Turns one event into spans (or into state for spans to come).
    pub(crate) fn on_event(&mut self, ev: &Event) {
        if !self.projects.is_empty() && !self.projects.contains(&ev.project) {
            return;
        }
        let task = ev.task_id.as_deref();
        match (&ev.payload, task) {
            (Payload::AttemptStarted(p), Some(t)) => self.attempt_started(ev, t, p),
            (Payload::AttemptFinished(p), Some(t)) => self.attempt_finished(ev, t, p),
            (Payload::AttemptInterrupted(p), Some(t)) => {
                let mut attrs = vec![kv("orch.attempt.interrupted_reason", p.reason.clone())];
                attrs.extend(p.stage.map(|s| kv("orch.attempt.stage", s.as_str())));
                let who = Who::of(Some(p.attempt_id), Some(p.number));
                self.end_attempt(ev, t, who, AttemptStatus::Interrupted, None, attrs);
            }
            (Payload::Cancelled(p), Some(t)) => {
                let attrs = p
                    .stage
                    .map(|s| kv("orch.attempt.stage", s.as_str()))
                    .into_iter()
                    .collect();
                let who = Who::of(Some(p.attempt_id), Some(p.number));
                self.end_attempt(ev, t, who, AttemptStatus::Cancelled, None, attrs);
            }
            (Payload::ModelCall(p), _) if p.role == "planner" || task.is_none() => {
                self.planner_call(ev, p)
            }
            (Payload::ModelCall(p), Some(t)) => self.model_call(ev, t, p),
            (Payload::ToolCall(p), Some(t)) => self.tool_call(ev, t, p),
            (Payload::ToolRefused(p), Some(t)) => {
                let mut attrs = vec![];
                attrs.extend(p.tool.clone().map(|x| kv("gen_ai.tool.name", x)));
                attrs.extend(p.turn.map(|n| kv("orch.turn", int(n))));
                if self.out.content {
                    attrs.push(kv("orch.refused", p.refused.clone()));
                    attrs.extend(p.path.clone().map(|x| kv("orch.path", x)));
                }
                let stage = p.stage.unwrap_or(Stage::Work);
                self.stage_event(ev, t, Who::number(p.attempt), stage, "tool_refused", attrs);
            }
            (Payload::StageStarted(p), Some(t)) => self.stage_started(ev, t, p),
            (Payload::StageStarted(p), None) if p.stage == Stage::Plan => self.plan_started(ev, p),
            (Payload::StageFinished(p), Some(t)) => self.stage_finished(ev, t, p),
            (Payload::VerificationFinished(p), Some(t)) => self.verification(ev, t, p),
            (Payload::VerdictRecorded(p), Some(t)) => {
                let mut attrs = vec![
                    kv("orch.verdict.passed", p.passed),
                    kv("orch.verdict.issues", int(p.issues.len())),
                ];
                attrs.extend(p.score.map(|s| kv("orch.verdict.score", s)));
                if self.out.content && !p.issues.is_empty() {
                    attrs.push(kv("orch.verdict.issue_text", p.issues.join("\n")));
                }
                let who = Who::of(p.attempt_id, p.attempt);
                self.stage_attrs(ev, t, who, Stage::Judge, attrs);
            }
            (Payload::HumanAsked(p), Some(t)) => {
                let attrs = if self.out.content {
                    vec![kv("orch.question", p.question.clone())]
                } else {
                    vec![]
                };
                self.root_event(ev, t, Who::ANY, "human_asked", attrs);
            }
            (Payload::InfraFailure(p), Some(t)) => {
                let mut attrs = vec![
                    kv("orch.infra_failures", int(p.infra_failures)),
                    kv("orch.backoff_seconds", int(p.backoff_seconds)),
                ];
                if self.out.content {
                    attrs.push(kv("orch.error", p.error.clone()));
                }
                self.root_event(ev, t, Who::ANY, "infra_failure", attrs);
            }
            (Payload::Merged(p), Some(t)) => {
                if let Some(m) = self.merges.get_mut(t) {
                    m.span.attrs.extend([
                        kv("orch.merge.commit", p.commit.clone()),
                        kv("orch.merge.branch", p.branch.clone()),
                        kv("orch.merge.batch", int(p.batch)),
                    ]);
                }
            }
            (Payload::MergeRejected(p), Some(t)) => {
                // The merge's own end (landed = false) follows.
                if let Some(m) = self.merges.get_mut(t) {
                    let attrs = if self.out.content {
                        vec![kv("orch.merge.feedback", p.feedback.clone())]
                    } else {
                        vec![]
                    };
                    m.span
                        .events
                        .push(SpanEvent::new("merge_rejected", at(ev), attrs, 0));
                }
            }
            (Payload::PlanCreated(p), None) => self.plan_created(ev, p),
            (Payload::CandidatesStarted(p), Some(t)) => self.round_started(ev, t, p),
            (Payload::CandidatesRanked(p), Some(t)) => self.round_ranked(ev, t, p),
            (Payload::RefineIteration(p), Some(t)) => self.refine_iteration(ev, t, p),
            (Payload::RefineStopped(p), Some(t)) => self.refine_stopped(ev, t, p),
            (Payload::ConflictResolving(p), Some(t)) => self.conflict_resolving(ev, t, p),
            (Payload::ConflictResolved(p), Some(t)) => self.conflict_resolved(ev, t, p),
            (Payload::Warning(w), None) if w.stage == Some(Stage::Plan) => {
                if let Some(mut plan) = self.plans.remove(&ev.project) {
                    if self.out.content {
                        plan.root.attrs.push(kv("orch.error", ev.message.clone()));
                    }
                    self.emit_plan(plan, at(ev), Status::error("planning failed"));
                }
            }
            _ => {}
        }
    }

    // --- attempts -----------------------------------------------------------

    fn attempt_started(&mut self, ev: &Event, task: &str, p: &AttemptStarted) {
        // In a best-of-N round the task's candidates run at once; outside
        // one, an attempt still open is one whose end was never seen (the
        // bus lagged): end it here.
        if !self.rounds.contains_key(task) {
            for stale in self.attempts.remove(task).unwrap_or_default() {
                self.close_attempt(task, stale, at(ev));
            }
        }
        let who = Who::of(Some(p.attempt_id), Some(p.number));
        self.open_attempt(ev, task, who, Some(p.kind), at(ev), false);
        let Some(a) = self.attempts.get_mut(task).and_then(|v| v.last_mut()) else {
            return;
        };
        a.root.attrs.push(kv("orch.attempt.id", p.attempt_id));
        a.root.attrs.extend(
            p.base_commit
                .clone()
                .map(|b| kv("orch.attempt.base_commit", b)),
        );
        let link = SpanContext::new(
            a.trace,
            a.root.id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        if let Some(round) = self.rounds.get_mut(task) {
            round.span.links.push(Link::new(
                link,
                vec![kv("orch.attempt.number", int(p.number))],
                0,
            ));
        }
    }

    /// Opens the attempt's trace; `partial` when its start was not seen.
    /// A conflict resolver (kind resolve) hangs under the task's merge when
    /// that is under way; any other attempt is a trace of its own.
    fn open_attempt(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        kind: Option<AttemptKind>,
        start: SystemTime,
        partial: bool,
    ) {
        let number = who.number;
        let seq = self.next_seq();
        let mut root = self.out.pending(start);
        root.attrs.extend([
            kv("orch.project", ev.project.clone()),
            kv("orch.task.id", task.to_string()),
        ]);
        root.attrs
            .extend(number.map(|n| kv("orch.attempt.number", int(n))));
        if partial {
            root.attrs.push(kv("orch.attempt.partial", true));
        }
        let merge = self.merges.get(task);
        let (trace, under_merge) = match merge.filter(|_| kind == Some(AttemptKind::Resolve)) {
            Some(m) => (m.trace, Some(m.span.id)),
            None => (self.out.ids.new_trace_id(), None),
        };
        self.attempts
            .entry(task.to_string())
            .or_default()
            .push(AttemptTrace {
                trace,
                root,
                number,
                id: who.id,
                kind,
                under_merge,
                stages: Vec::new(),
                seq,
            });
        if self.attempts.len() > MAX_OPEN {
            let first = |v: &Vec<AttemptTrace>| v.iter().map(|a| a.seq).min().unwrap_or(0);
            if let Some(k) = oldest(&self.attempts, first) {
                for a in self.attempts.remove(&k).unwrap_or_default() {
                    self.close_attempt(&k, a, start);
                }
            }
        }
    }

    /// Which of `task`'s open attempts an event is for: the one it names
    /// (by row id or number); else, when it names none or its attempt is
    /// not known by that name yet, the only one. None when it has none
    /// open, or names one that is not; Err when several could be meant.
    fn find(&self, task: &str, who: Who) -> Result<Option<usize>, ()> {
        let Some(open) = self.attempts.get(task) else {
            return Ok(None);
        };
        if let Some(i) = open.iter().position(|a| who.is(a.id, a.number)) {
            return Ok(Some(i));
        }
        if let [lone] = open.as_slice() {
            // An attempt seen only in part may lack the name the event uses.
            return Ok((!who.other_than(lone.id, lone.number)).then_some(0));
        }
        if who.named() {
            Ok(None)
        } else {
            Err(())
        }
    }

    /// Where an attempt-scoped event of `task` goes: an open attempt (opened
    /// now, partial, when never seen), the finished attempt it is late for,
    /// or nowhere when it could be for any of several. The open attempt
    /// learns the id or number the event gives it.
    fn resolve(&mut self, ev: &Event, task: &str, who: Who, start: SystemTime) -> Route {
        match self.find(task, who) {
            Ok(Some(i)) => {
                if let Some(a) = self.open_mut(task, i) {
                    a.id = a.id.or(who.id);
                    a.number = a.number.or(who.number);
                }
                return Route::Open(i);
            }
            Err(()) => return Route::Unknown,
            Ok(None) => {}
        }
        if let Some(f) = self.finished.get(task) {
            if !who.named() || who.is(f.id, f.number) {
                return Route::Late(*f);
            }
        }
        self.open_attempt(ev, task, who, None, start, true);
        match self.attempts.get(task) {
            Some(v) if !v.is_empty() => Route::Open(v.len() - 1),
            _ => Route::Unknown,
        }
    }

    /// The open attempt at `i` of `task`, taken out.
    fn take(&mut self, task: &str, i: usize) -> Option<AttemptTrace> {
        let open = self.attempts.get_mut(task)?;
        let a = (i < open.len()).then(|| open.remove(i));
        if open.is_empty() {
            self.attempts.remove(task);
        }
        a
    }

    fn open_mut(&mut self, task: &str, i: usize) -> Option<&mut AttemptTrace> {
        self.attempts.get_mut(task)?.get_mut(i)
    }

    fn attempt_finished(&mut self, ev: &Event, task: &str, p: &AttemptFinished) {
        let mut attrs = vec![
            kv("orch.attempt.turns", int(p.turns)),
            kv("gen_ai.usage.input_tokens", int(p.input_tokens)),
            kv("gen_ai.usage.output_tokens", int(p.output_tokens)),
            kv("orch.cost_usd", p.cost_usd),
            kv("orch.attempt.task_attempts", int(p.task_attempts)),
            kv("orch.attempt.infra_failures", int(p.infra_failures)),
        ];
        if self.out.content {
            attrs.extend(p.error.clone().map(|e| kv("orch.error", e)));
        }
        let who = Who::of(Some(p.attempt_id), Some(p.number));
        self.end_attempt(ev, task, who, p.status, Some(p.kind), attrs);
    }

    /// Ends the attempt `who` names; `kind` when the end says it (an
    /// attempt's own start, when seen, said it first).
    fn end_attempt(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        status: AttemptStatus,
        kind: Option<AttemptKind>,
        attrs: Vec<KeyValue>,
    ) {
        let Route::Open(i) = self.resolve(ev, task, who, at(ev)) else {
            return; // already ended, or not known which
        };
        let Some(mut a) = self.take(task, i) else {
            return;
        };
        a.kind = a.kind.or(kind);
        let has = |a: &AttemptTrace, key: &str| a.root.attrs.iter().any(|k| k.key.as_str() == key);
        if let (false, Some(n)) = (has(&a, "orch.attempt.number"), a.number) {
            a.root.attrs.push(kv("orch.attempt.number", int(n)));
        }
        a.root
            .attrs
            .push(kv("orch.attempt.status", status.as_str()));
        a.root.attrs.extend(attrs);
        let status = match status {
            AttemptStatus::Passed => Status::Ok,
            AttemptStatus::Failed | AttemptStatus::Error => {
                Status::error(format!("attempt {}", status.as_str()))
            }
            _ => Status::Unset,
        };
        self.emit_attempt(task, a, at(ev), status);
    }

    /// Ends an attempt whose end was not seen, at `end`.
    fn close_attempt(&mut self, task: &str, mut a: AttemptTrace, end: SystemTime) {
        a.root.attrs.push(kv("orch.attempt.unfinished", true));
        self.emit_attempt(
            task,
            a,
            end,
            Status::error("the attempt's end was not seen"),
        );
    }

    /// Emits the stages still open, then the root; remembers the trace for
    /// the merge.
    fn emit_attempt(&mut self, task: &str, mut a: AttemptTrace, end: SystemTime, status: Status) {
        if let Some(kind) = a.kind {
            a.root.attrs.push(kv("orch.attempt.kind", kind.as_str()));
        }
        for (stage, mut span) in a.stages {
            span.attrs.extend([
                kv("orch.stage", stage.as_str()),
                kv("orch.stage.unfinished", true),
            ]);
            self.out.emit(SpanOut {
                name: Cow::Borrowed(stage.as_str()),
                kind: SpanKind::Internal,
                trace: a.trace,
                parent: Some(a.root.id),
                span,
                end,
                status: Status::error("the attempt ended before this stage"),
            });
        }
        let finished = Finished {
            trace: a.trace,
            root: a.root.id,
            number: a.number,
            id: a.id,
            seq: self.next_seq(),
        };
        let resolver = a.kind == Some(AttemptKind::Resolve);
        self.out.emit(SpanOut {
            name: Cow::Borrowed("attempt"),
            kind: SpanKind::Internal,
            trace: a.trace,
            parent: a.under_merge,
            span: a.root,
            end,
            status,
        });
        if resolver {
            // The task's last attempt stays its work's: later merges hang
            // there, not inside this merge.
            return;
        }
        if let Some(round) = self.rounds.get_mut(task) {
            round.finished.push(finished);
        }
        self.finished.insert(task.to_string(), finished);
        if self.finished.len() > MAX_OPEN {
            if let Some(k) = oldest(&self.finished, |f| f.seq) {
                self.finished.remove(&k);
            }
        }
    }

    // --- stages -------------------------------------------------------------

    /// The open stage `stage` of the attempt `who` of `task`, referred to
    /// first at `start`; None when the event is late for a finished attempt
    /// or it is not known which attempt it is for.
    fn stage_mut(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        stage: Stage,
        start: SystemTime,
    ) -> Option<&mut Pending> {
        let Route::Open(i) = self.resolve(ev, task, who, start) else {
            return None;
        };
        self.stage_at(task, i, stage, start)
    }

    /// The stage `stage` of the open attempt at `at` of `task`, opened now
    /// when it is not yet; a conflict resolver's root (it has no stages).
    fn stage_at(
        &mut self,
        task: &str,
        at: usize,
        stage: Stage,
        start: SystemTime,
    ) -> Option<&mut Pending> {
        let a = self.attempts.get_mut(task)?.get_mut(at)?;
        if a.kind == Some(AttemptKind::Resolve) {
            return Some(&mut a.root);
        }
        let i = match a.stages.iter().position(|(s, _)| *s == stage) {
            Some(i) => i,
            None => {
                a.stages.push((stage, self.out.pending(start)));
                a.stages.len() - 1
            }
        };
        let span = &mut a.stages[i].1;
        span.start = span.start.min(start);
        Some(span)
    }

    fn stage_started(&mut self, ev: &Event, task: &str, p: &StageStarted) {
        match p.stage {
            Stage::Merge => self.merge_started(ev, task, p),
            Stage::Work | Stage::Verify | Stage::Judge => {
                let who = Who::number(p.attempt);
                let Some(span) = self.stage_mut(ev, task, who, p.stage, at(ev)) else {
                    return;
                };
                span.attrs
                    .extend(p.model.clone().map(|m| kv("orch.model", m)));
                span.attrs
                    .extend(p.worker.clone().map(|w| kv("orch.worker", w)));
                span.attrs
                    .extend(p.workflow.clone().map(|w| kv("orch.workflow", w)));
            }
            // Other stages (the architect's, say) become spans from their
            // finish event; their start is an event on the root.
            _ => {
                let mut attrs = vec![kv("orch.stage", p.stage.as_str())];
                attrs.extend(p.model.clone().map(|m| kv("orch.model", m)));
                self.root_event(ev, task, Who::number(p.attempt), p.stage.as_str(), attrs);
            }
        }
    }

    fn stage_finished(&mut self, ev: &Event, task: &str, p: &StageFinished) {
        if p.stage == Stage::Merge {
            return self.merge_finished(ev, task, p);
        }
        let end = at(ev);
        let start = before(end, p.duration_ms);
        let attrs = vec![
            kv("orch.stage", p.stage.as_str()),
            kv("orch.stage.ok", p.ok),
            kv("orch.stage.skipped", p.skipped),
        ];
        let status = if p.ok {
            Status::Unset
        } else {
            Status::error(format!("{} did not reach its goal", p.stage))
        };
        // After the attempt (the merge queue's post-merge check): under the
        // merge, else the last attempt.
        if p.attempt.is_none() && !self.attempts.contains_key(task) {
            if let Some((trace, parent)) = self.after_attempt(task) {
                let mut span = self.out.pending(start);
                span.attrs = attrs;
                return self.out.emit(SpanOut {
                    name: Cow::Borrowed(p.stage.as_str()),
                    kind: SpanKind::Internal,
                    trace,
                    parent: Some(parent),
                    span,
                    end,
                    status,
                });
            }
        }
        let i = match self.resolve(ev, task, Who::number(p.attempt), start) {
            Route::Open(i) => i,
            Route::Unknown => return,
            Route::Late(f) => {
                let mut span = self.out.pending(start);
                span.attrs = attrs;
                return self.out.emit(SpanOut {
                    name: Cow::Borrowed(p.stage.as_str()),
                    kind: SpanKind::Internal,
                    trace: f.trace,
                    parent: Some(f.root),
                    span,
                    end,
                    status,
                });
            }
        };
        let Some(a) = self.attempts.get_mut(task).and_then(|v| v.get_mut(i)) else {
            return;
        };
        let mut span = match a.stages.iter().position(|(s, _)| *s == p.stage) {
            Some(i) => a.stages.remove(i).1,
            None => self.out.pending(start),
        };
        span.start = start.min(span.start);
        span.attrs.extend(attrs);
        self.out.emit(SpanOut {
            name: Cow::Borrowed(p.stage.as_str()),
            kind: SpanKind::Internal,
            trace: a.trace,
            parent: Some(a.root.id),
            span,
            end,
            status,
        });
    }

    /// Adds attributes to an open stage of the attempt `who` of `task`.
    fn stage_attrs(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        stage: Stage,
        attrs: Vec<KeyValue>,
    ) {
        if let Some(span) = self.stage_mut(ev, task, who, stage, at(ev)) {
            span.attrs.extend(attrs);
        }
    }

    /// Adds an event to an open stage of the attempt `who` of `task`.
    fn stage_event(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        stage: Stage,
        name: &'static str,
        attrs: Vec<KeyValue>,
    ) {
        if let Some(span) = self.stage_mut(ev, task, who, stage, at(ev)) {
            span.events.push(SpanEvent::new(name, at(ev), attrs, 0));
        }
    }

    /// Adds an event to the root of the attempt `who` of `task`.
    fn root_event(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        name: &'static str,
        attrs: Vec<KeyValue>,
    ) {
        if let Some(a) = self.root_mut(ev, task, who) {
            a.root.events.push(SpanEvent::new(name, at(ev), attrs, 0));
        }
    }

    /// The open attempt `who` of `task` an event for its root is for; None
    /// when late or not known which.
    fn root_mut(&mut self, ev: &Event, task: &str, who: Who) -> Option<&mut AttemptTrace> {
        let Route::Open(i) = self.resolve(ev, task, who, at(ev)) else {
            return None;
        };
        self.open_mut(task, i)
    }

    // --- model and tool calls -------------------------------------------------

    fn model_span(&self, ev: &Event, p: &ModelCall) -> (Pending, Status) {
        let end = at(ev);
        let mut span = self.out.pending(before(end, p.duration_ms));
        span.attrs = vec![
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", p.provider.clone()),
            kv("gen_ai.request.model", p.model.clone()),
            kv("gen_ai.usage.input_tokens", int(p.input_tokens)),
            kv("gen_ai.usage.output_tokens", int(p.output_tokens)),
            kv("orch.usage.cached_tokens", int(p.cached_tokens)),
            kv("orch.cost_usd", p.cost_usd),
            kv("orch.role", p.role.clone()),
            kv("orch.ok", p.ok),
        ];
        let status = if p.ok {
            Status::Unset
        } else {
            span.attrs.push(kv("error.type", "model_call_failed"));
            if self.out.content {
                span.attrs
                    .extend(p.error.clone().map(|e| kv("orch.error", e)));
            }
            Status::error("the model call failed")
        };
        (span, status)
    }

    fn model_call(&mut self, ev: &Event, task: &str, p: &ModelCall) {
        let (span, status) = self.model_span(ev, p);
        let name = Cow::Owned(format!("chat {}", p.model));
        let parent = match (stage_of_role(&p.role), self.rounds.get(task)) {
            // The ranking of a best-of-N round is no candidate's call.
            (_, Some(round)) if p.attempt_id.is_none() => Some((round.trace, round.span.id)),
            (Some(stage), _) => {
                let who = Who::of(p.attempt_id, None);
                self.child_of_stage(ev, task, who, stage, span.start)
            }
            (None, _) => self.child_of_root(ev, task, Who::of(p.attempt_id, None), span.start),
        };
        let Some((trace, parent)) = parent else {
            return;
        };
        self.out.emit(SpanOut {
            name,
            kind: SpanKind::Client,
            trace,
            parent: Some(parent),
            span,
            end: at(ev),
            status,
        });
    }

    fn tool_call(&mut self, ev: &Event, task: &str, p: &ToolCall) {
        let end = at(ev);
        let mut span = self.out.pending(before(end, p.duration_ms));
        span.attrs = vec![
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", p.tool.clone()),
            kv("orch.turn", int(p.turn)),
            kv("orch.ok", p.ok),
        ];
        if self.out.content {
            span.attrs.extend([
                kv("gen_ai.tool.call.arguments", p.arguments.clone()),
                kv("gen_ai.tool.call.result", p.output.clone()),
            ]);
        }
        let status = if p.ok {
            Status::Unset
        } else {
            Status::error("the tool call failed")
        };
        let who = Who::of(p.attempt_id, p.attempt);
        let Some((trace, parent)) = self.child_of_stage(ev, task, who, Stage::Work, span.start)
        else {
            return;
        };
        self.out.emit(SpanOut {
            name: Cow::Owned(format!("execute_tool {}", p.tool)),
            kind: SpanKind::Internal,
            trace,
            parent: Some(parent),
            span,
            end,
            status,
        });
    }

    /// The trace and parent for a child of `stage` of the attempt `who`:
    /// the root of a finished attempt, for a late event; the root of a
    /// conflict resolver, which has no stages of its own.
    fn child_of_stage(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        stage: Stage,
        start: SystemTime,
    ) -> Option<(TraceId, SpanId)> {
        let i = match self.resolve(ev, task, who, start) {
            Route::Open(i) => i,
            Route::Late(f) => return Some((f.trace, f.root)),
            Route::Unknown => return None,
        };
        let trace = self.open_mut(task, i)?.trace;
        let span = self.stage_at(task, i, stage, start)?.id;
        Some((trace, span))
    }

    fn child_of_root(
        &mut self,
        ev: &Event,
        task: &str,
        who: Who,
        start: SystemTime,
    ) -> Option<(TraceId, SpanId)> {
        match self.resolve(ev, task, who, start) {
            Route::Open(i) => self.open_mut(task, i).map(|a| (a.trace, a.root.id)),
            Route::Late(f) => Some((f.trace, f.root)),
            Route::Unknown => None,
        }
    }

    // --- verification ---------------------------------------------------------

    fn verification(&mut self, ev: &Event, task: &str, p: &VerificationFinished) {
        let mut attrs = vec![
            kv("orch.verify.passed", p.passed),
            kv("orch.verify.new_failures", int(p.new_failures.len())),
            kv(
                "orch.verify.targeted_failures",
                int(p.targeted_failures.len()),
            ),
            kv(
                "orch.verify.preexisting_failures",
                int(p.preexisting_failures.len()),
            ),
        ];
        attrs.extend(p.batch.map(|b| kv("orch.verify.batch", int(b))));
        if self.out.content {
            attrs.extend(
                p.goal_unmet
                    .clone()
                    .map(|g| kv("orch.verify.goal_unmet", g)),
            );
        }
        let total: u64 = p.steps.iter().map(|s| s.duration_ms).sum();
        let first = before(at(ev), total);
        let target = if p.stage == Some(Stage::Merge) {
            // The merge queue's check of a candidate: under the merge.
            match self.merges.get_mut(task) {
                Some(m) => {
                    m.span.attrs.extend(attrs);
                    Some((m.trace, m.span.id))
                }
                None => self.after_attempt(task),
            }
        } else {
            let who = Who::of(p.attempt_id, p.attempt);
            let target = self.child_of_stage(ev, task, who, Stage::Verify, first);
            if let Some(span) = self.stage_mut(ev, task, who, Stage::Verify, first) {
                span.attrs.extend(attrs);
            }
            target
        };
        if let Some((trace, parent)) = target {
            self.steps(trace, parent, &p.steps, first);
        }
    }

    /// The steps, laid end to end from `start`.
    fn steps(&self, trace: TraceId, parent: SpanId, steps: &[StepSummary], start: SystemTime) {
        let mut t = start;
        for s in steps {
            let end = t + Duration::from_millis(s.duration_ms);
            let mut span = self.out.pending(t);
            span.attrs = vec![
                kv("orch.step.kind", s.kind.clone()),
                kv("orch.step.timed_out", s.timed_out),
                kv("orch.step.duration_ms", int(s.duration_ms)),
            ];
            span.attrs
                .extend(s.exit_code.map(|c| kv("process.exit.code", i64::from(c))));
            span.attrs
                .extend(s.passed.map(|n| kv("orch.step.tests_passed", int(n))));
            span.attrs
                .extend(s.failed.map(|n| kv("orch.step.tests_failed", int(n))));
            let status = if s.timed_out {
                Status::error("timed out")
            } else if s.exit_code.is_some_and(|c| c != 0) {
                Status::error("exited non-zero")
            } else {
                Status::Unset
            };
            self.out.emit(SpanOut {
                name: Cow::Owned(format!("step {}", s.kind)),
                kind: SpanKind::Internal,
                trace,
                parent: Some(parent),
                span,
                end,
                status,
            });
            t = end;
        }
    }

    // --- merge ----------------------------------------------------------------

    /// Where spans after the attempt hang: the merge under way, else the
    /// task's last attempt's root.
    fn after_attempt(&self, task: &str) -> Option<(TraceId, SpanId)> {
        if let Some(m) = self.merges.get(task) {
            return Some((m.trace, m.span.id));
        }
        self.finished.get(task).map(|f| (f.trace, f.root))
    }

    /// A merge trace for `task` from `start`: in the last attempt's trace,
    /// or a trace of its own when that is not known.
    fn new_merge(&mut self, ev: &Event, task: &str, start: SystemTime) -> MergeTrace {
        let seq = self.next_seq();
        let mut span = self.out.pending(start);
        span.attrs.push(kv("orch.stage", "merge"));
        let (trace, parent) = match self.finished.get(task) {
            Some(f) => (f.trace, Some(f.root)),
            None => {
                span.attrs.extend([
                    kv("orch.project", ev.project.clone()),
                    kv("orch.task.id", task.to_string()),
                ]);
                (self.out.ids.new_trace_id(), None)
            }
        };
        MergeTrace {
            trace,
            parent,
            span,
            seq,
        }
    }

    fn merge_started(&mut self, ev: &Event, task: &str, p: &StageStarted) {
        if let Some(m) = self.merges.get_mut(task) {
            // The batch is built again (main moved, a red batch split).
            let attrs = p
                .commit
                .clone()
                .map(|c| kv("orch.merge.onto", c))
                .into_iter()
                .collect();
            m.span
                .events
                .push(SpanEvent::new("merge_rebuilt", at(ev), attrs, 0));
            return;
        }
        let mut m = self.new_merge(ev, task, at(ev));
        m.span
            .attrs
            .extend(p.commit.clone().map(|c| kv("orch.merge.onto", c)));
        self.merges.insert(task.to_string(), m);
        if self.merges.len() > MAX_OPEN {
            if let Some(k) = oldest(&self.merges, |m| m.seq) {
                if let Some(m) = self.merges.remove(&k) {
                    self.emit_merge(m, at(ev), Status::error("the merge's end was not seen"));
                }
            }
        }
    }

    fn merge_finished(&mut self, ev: &Event, task: &str, p: &StageFinished) {
        let end = at(ev);
        let start = before(end, p.duration_ms);
        let mut m = match self.merges.remove(task) {
            Some(m) => m,
            None => self.new_merge(ev, task, start),
        };
        m.span.start = start;
        m.span
            .attrs
            .extend([kv("orch.stage.ok", p.ok), kv("orch.merge.landed", p.ok)]);
        let status = if p.ok {
            Status::Ok
        } else {
            Status::error("the merge did not land")
        };
        if p.ok {
            // Landed: nothing more comes for this task.
            self.finished.remove(task);
        }
        self.emit_merge(m, end, status);
    }

    fn emit_merge(&self, m: MergeTrace, end: SystemTime, status: Status) {
        self.out.emit(SpanOut {
            name: Cow::Borrowed("merge"),
            kind: SpanKind::Internal,
            trace: m.trace,
            parent: m.parent,
            span: m.span,
            end,
            status,
        });
    }

    // --- best-of-N rounds, refinement, conflict resolution ----------------------

    /// A round's span opens; the candidates' attempts that follow link to it.
    fn round_started(&mut self, ev: &Event, task: &str, p: &CandidatesStarted) {
        if let Some(stale) = self.rounds.remove(task) {
            self.emit_round(
                stale,
                at(ev),
                Status::error("the round's ranking was not seen"),
            );
        }
        // Attempts still open from before the round: their ends were missed.
        for stale in self.attempts.remove(task).unwrap_or_default() {
            self.close_attempt(task, stale, at(ev));
        }
        let seq = self.next_seq();
        let mut span = self.out.pending(at(ev));
        span.attrs.extend([
            kv("orch.project", ev.project.clone()),
            kv("orch.task.id", task.to_string()),
            kv("orch.candidates.count", int(p.candidates)),
        ]);
        let list = |f: fn(&orch_protocol::CandidateSlot) -> &str| {
            p.slots.iter().map(f).collect::<Vec<_>>().join(",")
        };
        if !p.slots.is_empty() {
            span.attrs.extend([
                kv("orch.candidates.models", list(|s| s.model.as_str())),
                kv("orch.candidates.workers", list(|s| s.worker.as_str())),
            ]);
        }
        let round = RoundTrace {
            trace: self.out.ids.new_trace_id(),
            span,
            finished: Vec::new(),
            seq,
        };
        self.rounds.insert(task.to_string(), round);
        if self.rounds.len() > MAX_OPEN {
            if let Some(k) = oldest(&self.rounds, |r| r.seq) {
                if let Some(r) = self.rounds.remove(&k) {
                    self.emit_round(r, at(ev), Status::error("the round's ranking was not seen"));
                }
            }
        }
    }

    /// The ranking ends the round's span; the merge then hangs under the
    /// winner's trace.
    fn round_ranked(&mut self, ev: &Event, task: &str, p: &CandidatesRanked) {
        let Some(mut round) = self.rounds.remove(task) else {
            return;
        };
        let order: Vec<String> = p.order.iter().map(|k| k.to_string()).collect();
        round.span.attrs.extend([
            kv("orch.candidates.method", p.method.clone()),
            kv("orch.candidates.order", order.join(",")),
            kv("orch.candidates.passed", int(p.order.len())),
        ]);
        round
            .span
            .attrs
            .extend(p.winner.map(|w| kv("orch.candidates.winner", int(w))));
        if self.out.content {
            if !p.reasons.is_empty() {
                round
                    .span
                    .attrs
                    .push(kv("orch.candidates.reasons", p.reasons.join("\n")));
            }
            round
                .span
                .attrs
                .extend(p.warning.clone().map(|w| kv("orch.candidates.warning", w)));
        }
        let winner = p
            .attempts
            .first()
            .and_then(|n| round.finished.iter().find(|f| f.number == Some(*n)));
        if let Some(f) = winner {
            self.finished.insert(task.to_string(), *f);
        }
        let status = match p.winner {
            Some(_) => Status::Ok,
            None => Status::error("no candidate passed"),
        };
        self.emit_round(round, at(ev), status);
    }

    fn emit_round(&self, round: RoundTrace, end: SystemTime, status: Status) {
        self.out.emit(SpanOut {
            name: Cow::Borrowed("candidates"),
            kind: SpanKind::Internal,
            trace: round.trace,
            parent: None,
            span: round.span,
            end,
            status,
        });
    }

    fn refine_iteration(&mut self, ev: &Event, task: &str, p: &RefineIteration) {
        let mut attrs = vec![
            kv("orch.refine.iteration", int(p.iteration)),
            kv("orch.refine.outcome", p.outcome.as_str()),
            kv("orch.refine.best_iteration", int(p.best_iteration)),
        ];
        attrs.extend(p.score.map(|s| kv("orch.refine.score", s)));
        attrs.extend(p.best_score.map(|s| kv("orch.refine.best_score", s)));
        attrs.extend(p.commit.clone().map(|c| kv("orch.refine.commit", c)));
        let who = Who::of(Some(p.attempt_id), Some(p.number));
        self.root_event(ev, task, who, "refine_iteration", attrs);
    }

    fn refine_stopped(&mut self, ev: &Event, task: &str, p: &RefineStopped) {
        let content = self.out.content;
        let who = Who::of(Some(p.attempt_id), Some(p.number));
        let Some(a) = self.root_mut(ev, task, who) else {
            return;
        };
        a.root.attrs.extend([
            kv("orch.refine.stop_reason", p.reason.as_str()),
            kv("orch.refine.iterations", int(p.iterations)),
            kv("orch.refine.best_iteration", int(p.best_iteration)),
            kv("orch.refine.passed", p.passed),
        ]);
        a.root
            .attrs
            .extend(p.best_score.map(|s| kv("orch.refine.best_score", s)));
        if content {
            a.root
                .attrs
                .extend(p.detail.clone().map(|d| kv("orch.refine.detail", d)));
        }
    }

    /// The resolver's attempt says what it is; the merge gets an event. A
    /// resolver whose start was not seen is opened here, under the merge.
    fn conflict_resolving(&mut self, ev: &Event, task: &str, p: &ConflictResolving) {
        let mut attrs = vec![kv("orch.conflict.files", int(p.files.len()))];
        if self.out.content {
            attrs.push(kv("orch.conflict.file_names", p.files.join("\n")));
        }
        if let Some(m) = self.merges.get_mut(task) {
            let mut e = attrs.clone();
            e.push(kv("orch.attempt.number", int(p.number)));
            m.span
                .events
                .push(SpanEvent::new("conflict_resolving", at(ev), e, 0));
        }
        let who = Who::of(Some(p.attempt_id), Some(p.number));
        if matches!(self.find(task, who), Ok(None)) {
            let resolve = Some(AttemptKind::Resolve);
            self.open_attempt(ev, task, who, resolve, at(ev), true);
        }
        if let Some(a) = self.root_mut(ev, task, who) {
            a.kind = Some(AttemptKind::Resolve);
            a.root.attrs.extend(attrs);
            a.root
                .attrs
                .extend(p.model.clone().map(|m| kv("orch.model", m)));
            a.root
                .attrs
                .extend(p.worker.clone().map(|w| kv("orch.worker", w)));
        }
    }

    /// How the resolution ended, as an event on the merge (the resolver's
    /// attempt has ended just before).
    fn conflict_resolved(&mut self, ev: &Event, task: &str, p: &ConflictResolved) {
        let Some(m) = self.merges.get_mut(task) else {
            return;
        };
        let mut attrs = vec![
            kv(
                "orch.conflict.outcome",
                crate::metrics::resolution(p.outcome),
            ),
            kv("orch.attempt.number", int(p.number)),
            kv("orch.conflict.duration_ms", int(p.duration_ms)),
        ];
        attrs.extend(p.commit.clone().map(|c| kv("orch.conflict.commit", c)));
        if self.out.content {
            attrs.extend(p.reason.clone().map(|r| kv("orch.conflict.reason", r)));
        }
        m.span
            .events
            .push(SpanEvent::new("conflict_resolved", at(ev), attrs, 0));
    }

    // --- planner --------------------------------------------------------------

    fn plan_started(&mut self, ev: &Event, p: &StageStarted) {
        if let Some(stale) = self.plans.remove(&ev.project) {
            self.emit_plan(stale, at(ev), Status::error("the plan's end was not seen"));
        }
        self.open_plan(ev, at(ev));
        if let Some(plan) = self.plans.get_mut(&ev.project) {
            plan.root
                .attrs
                .extend(p.model.clone().map(|m| kv("orch.model", m)));
        }
    }

    fn open_plan(&mut self, ev: &Event, start: SystemTime) {
        let seq = self.next_seq();
        let mut root = self.out.pending(start);
        root.attrs.push(kv("orch.project", ev.project.clone()));
        let trace = self.out.ids.new_trace_id();
        self.plans
            .insert(ev.project.clone(), PlanTrace { trace, root, seq });
        if self.plans.len() > MAX_OPEN {
            if let Some(k) = oldest(&self.plans, |p| p.seq) {
                if let Some(p) = self.plans.remove(&k) {
                    self.emit_plan(p, start, Status::error("the plan's end was not seen"));
                }
            }
        }
    }

    fn planner_call(&mut self, ev: &Event, p: &ModelCall) {
        let (span, status) = self.model_span(ev, p);
        if !self.plans.contains_key(&ev.project) {
            self.open_plan(ev, span.start);
        }
        let Some(plan) = self.plans.get(&ev.project) else {
            return;
        };
        self.out.emit(SpanOut {
            name: Cow::Owned(format!("chat {}", p.model)),
            kind: SpanKind::Client,
            trace: plan.trace,
            parent: Some(plan.root.id),
            span,
            end: at(ev),
            status,
        });
    }

    fn plan_created(&mut self, ev: &Event, p: &PlanCreated) {
        let source = match p.source {
            orch_protocol::PlanSource::Planner => "planner",
            orch_protocol::PlanSource::PlanFile => "plan_file",
        };
        let mut plan = match self.plans.remove(&ev.project) {
            Some(plan) if source == "planner" => plan,
            other => {
                // A plan file (or a plan whose start was not seen): a span
                // of its own, at this moment.
                if let Some(o) = other {
                    self.plans.insert(ev.project.clone(), o);
                }
                let mut root = self.out.pending(at(ev));
                root.attrs.push(kv("orch.project", ev.project.clone()));
                PlanTrace {
                    trace: self.out.ids.new_trace_id(),
                    root,
                    seq: 0,
                }
            }
        };
        plan.root.attrs.extend([
            kv("orch.plan.source", source),
            kv("orch.plan.created", int(p.created.len())),
            kv("orch.plan.skipped", int(p.skipped.len())),
            kv("orch.plan.dropped", int(p.dropped.len())),
            kv("gen_ai.usage.input_tokens", int(p.input_tokens)),
            kv("gen_ai.usage.output_tokens", int(p.output_tokens)),
            kv("orch.cost_usd", p.cost_usd),
        ]);
        plan.root
            .attrs
            .extend(p.file.clone().map(|f| kv("orch.plan.file", f)));
        if self.out.content {
            plan.root
                .attrs
                .extend(p.notes.clone().map(|n| kv("orch.plan.notes", n)));
        }
        self.emit_plan(plan, at(ev), Status::Ok);
    }

    fn emit_plan(&self, plan: PlanTrace, end: SystemTime, status: Status) {
        self.out.emit(SpanOut {
            name: Cow::Borrowed("plan"),
            kind: SpanKind::Internal,
            trace: plan.trace,
            parent: None,
            span: plan.root,
            end,
            status,
        });
    }

    /// Ends everything still open at `end` (the process is stopping).
    pub(crate) fn close_all(&mut self, end: SystemTime) {
        for (task, open) in std::mem::take(&mut self.attempts) {
            for a in open {
                self.close_attempt(&task, a, end);
            }
        }
        for (_, round) in std::mem::take(&mut self.rounds) {
            self.emit_round(round, end, Status::error("orch stopped during the round"));
        }
        for (_, m) in std::mem::take(&mut self.merges) {
            self.emit_merge(m, end, Status::error("orch stopped during the merge"));
        }
        for (_, p) in std::mem::take(&mut self.plans) {
            self.emit_plan(p, end, Status::error("orch stopped during planning"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use orch_protocol::{AttemptStarted, MergeRejected, Merged, PlannedTask, VerdictRecorded};

    const T: &str = "task-1";

    struct Rig {
        exporter: InMemorySpanExporter,
        projector: Projector<opentelemetry_sdk::trace::SdkTracer>,
        base: chrono::DateTime<chrono::Utc>,
    }

    impl Rig {
        fn new(content: bool) -> Rig {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            Rig {
                exporter,
                projector: Projector::new(provider.tracer("test"), content, vec!["p".into()]),
                base: chrono::Utc::now(),
            }
        }

        /// Feeds `payload` for `task` at `ms` after the start.
        fn feed(&mut self, ms: i64, task: Option<&str>, payload: impl Into<Payload>) {
            let mut e = Event::new("p", payload, "message text that never goes into a span");
            e.task_id = task.map(str::to_string);
            e.at = self.base + chrono::Duration::milliseconds(ms);
            self.projector.on_event(&e);
        }

        fn spans(&self) -> Vec<SpanData> {
            self.exporter.get_finished_spans().unwrap()
        }

        fn time(&self, ms: i64) -> SystemTime {
            SystemTime::from(self.base + chrono::Duration::milliseconds(ms))
        }
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
        spans.iter().filter(|s| s.name == name).collect()
    }

    fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        let found = named(spans, name);
        assert_eq!(found.len(), 1, "one `{name}` span in {:?}", names(spans));
        found[0]
    }

    fn names(spans: &[SpanData]) -> Vec<String> {
        spans.iter().map(|s| s.name.to_string()).collect()
    }

    fn attr(s: &SpanData, key: &str) -> Option<Value> {
        s.attributes
            .iter()
            .find(|k| k.key.as_str() == key)
            .map(|k| k.value.clone())
    }

    fn finished(number: u32, status: AttemptStatus) -> AttemptFinished {
        ended(7, number, AttemptKind::Work, status)
    }

    fn ended(id: i64, number: u32, kind: AttemptKind, status: AttemptStatus) -> AttemptFinished {
        AttemptFinished {
            attempt_id: id,
            number,
            status,
            kind,
            turns: 3,
            input_tokens: 120,
            output_tokens: 40,
            cost_usd: 0.25,
            error: None,
            task_attempts: number,
            infra_failures: 0,
        }
    }

    fn model(role: &str, duration_ms: u64) -> ModelCall {
        ModelCall {
            role: role.into(),
            provider: "replay".into(),
            model: role.into(),
            input_tokens: 10,
            output_tokens: 5,
            duration_ms,
            ok: true,
            ..Default::default()
        }
    }

    /// A tool call that names no attempt, as rows from before they did.
    fn tool() -> ToolCall {
        ToolCall {
            turn: 1,
            tool: "write_file".into(),
            arguments: r#"{"path":"calc.py","content":"SECRET-CONTENT"}"#.into(),
            ok: true,
            output: "TOOL-OUTPUT".into(),
            duration_ms: 20,
            attempt_id: None,
            attempt: None,
        }
    }

    /// A tool call `name` by the worker of the attempt `id`, number `number`.
    fn tool_for(id: i64, number: u32, name: &str) -> ToolCall {
        ToolCall {
            tool: name.into(),
            attempt_id: Some(id),
            attempt: Some(number),
            ..tool()
        }
    }

    fn stage(s: Stage, ms: u64, ok: bool) -> StageFinished {
        StageFinished::new(s, Some(1), Duration::from_millis(ms), ok)
    }

    /// One whole attempt and its merge, as the engine records them.
    fn whole_attempt(r: &mut Rig) {
        r.feed(
            0,
            Some(T),
            AttemptStarted {
                attempt_id: 7,
                number: 1,
                base_commit: Some("abc".into()),
                kind: AttemptKind::Work,
            },
        );
        r.feed(
            10,
            Some(T),
            StageStarted {
                attempt: Some(1),
                model: Some("replay:worker".into()),
                ..StageStarted::new(Stage::Work)
            },
        );
        r.feed(110, Some(T), model("worker", 100));
        r.feed(140, Some(T), tool_for(7, 1, "write_file"));
        r.feed(200, Some(T), stage(Stage::Work, 190, true));
        let steps = vec![
            StepSummary {
                kind: "lint".into(),
                exit_code: Some(0),
                duration_ms: 30,
                ..Default::default()
            },
            StepSummary {
                kind: "test".into(),
                exit_code: Some(1),
                duration_ms: 50,
                failed: Some(1),
                ..Default::default()
            },
        ];
        r.feed(
            300,
            Some(T),
            VerificationFinished {
                passed: true,
                steps,
                ..Default::default()
            },
        );
        r.feed(301, Some(T), stage(Stage::Verify, 101, true));
        r.feed(400, Some(T), model("judge", 60));
        r.feed(
            410,
            Some(T),
            VerdictRecorded {
                passed: true,
                score: Some(9.0),
                issues: vec!["ISSUE-TEXT".into()],
                file: "v.md".into(),
                attempt_id: Some(7),
                attempt: Some(1),
            },
        );
        r.feed(411, Some(T), stage(Stage::Judge, 100, true));
        r.feed(420, Some(T), finished(1, AttemptStatus::Passed));
        r.feed(
            500,
            Some(T),
            StageStarted {
                commit: Some("abc".into()),
                ..StageStarted::new(Stage::Merge)
            },
        );
        r.feed(
            540,
            Some(T),
            Merged {
                commit: "def".into(),
                branch: "main".into(),
                batch: 1,
            },
        );
        r.feed(
            550,
            Some(T),
            StageFinished::new(Stage::Merge, None, Duration::from_millis(60), true),
        );
    }

    #[test]
    fn an_attempt_is_one_trace_whose_spans_form_a_tree_under_the_root() {
        let mut r = Rig::new(false);
        whole_attempt(&mut r);
        let spans = r.spans();
        let root = one(&spans, "attempt");
        let trace = root.span_context.trace_id();
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert!(
            spans.iter().all(|s| s.span_context.trace_id() == trace),
            "{:?}",
            names(&spans)
        );
        let by_id: HashMap<SpanId, &SpanData> = spans
            .iter()
            .map(|s| (s.span_context.span_id(), s))
            .collect();
        let parent_name = |s: &SpanData| by_id[&s.parent_span_id].name.to_string();
        // Every span leads up to the root.
        for s in &spans {
            let mut cur: &SpanData = s;
            let mut hops = 0;
            while cur.parent_span_id != SpanId::INVALID {
                cur = by_id
                    .get(&cur.parent_span_id)
                    .copied()
                    .unwrap_or_else(|| panic!("{}'s parent is missing", s.name));
                hops += 1;
                assert!(hops < 10);
            }
            assert_eq!(cur.span_context.span_id(), root.span_context.span_id());
        }
        assert_eq!(parent_name(one(&spans, "chat worker")), "work");
        assert_eq!(parent_name(one(&spans, "execute_tool write_file")), "work");
        assert_eq!(parent_name(one(&spans, "chat judge")), "judge");
        assert_eq!(parent_name(one(&spans, "step lint")), "verify");
        assert_eq!(parent_name(one(&spans, "step test")), "verify");
        for s in ["work", "verify", "judge", "merge"] {
            assert_eq!(parent_name(one(&spans, s)), "attempt", "{s}");
        }
        // Times: the root from start to end, a stage from at − duration,
        // a model call ending at its event, steps end to end up to the event.
        assert_eq!(root.start_time, r.time(0));
        assert_eq!(root.end_time, r.time(420));
        let work = one(&spans, "work");
        assert_eq!((work.start_time, work.end_time), (r.time(10), r.time(200)));
        let chat = one(&spans, "chat worker");
        assert_eq!((chat.start_time, chat.end_time), (r.time(10), r.time(110)));
        let (lint, test) = (one(&spans, "step lint"), one(&spans, "step test"));
        assert_eq!((lint.start_time, lint.end_time), (r.time(220), r.time(250)));
        assert_eq!((test.start_time, test.end_time), (r.time(250), r.time(300)));
        let merge = one(&spans, "merge");
        assert_eq!(
            (merge.start_time, merge.end_time),
            (r.time(490), r.time(550))
        );
        // Attributes.
        assert_eq!(attr(root, "orch.task.id"), Some(Value::from(T)));
        assert_eq!(attr(root, "orch.attempt.number"), Some(Value::I64(1)));
        assert_eq!(
            attr(root, "orch.attempt.status"),
            Some(Value::from("passed"))
        );
        assert_eq!(
            attr(root, "gen_ai.usage.input_tokens"),
            Some(Value::I64(120))
        );
        assert_eq!(attr(root, "orch.cost_usd"), Some(Value::F64(0.25)));
        assert_eq!(root.status, Status::Ok);
        assert_eq!(
            attr(chat, "gen_ai.request.model"),
            Some(Value::from("worker"))
        );
        assert_eq!(
            attr(chat, "gen_ai.provider.name"),
            Some(Value::from("replay"))
        );
        assert_eq!(attr(chat, "orch.role"), Some(Value::from("worker")));
        assert_eq!(attr(test, "process.exit.code"), Some(Value::I64(1)));
        assert!(matches!(test.status, Status::Error { .. }));
        let judge = one(&spans, "judge");
        assert_eq!(attr(judge, "orch.verdict.passed"), Some(Value::Bool(true)));
        assert_eq!(attr(judge, "orch.verdict.score"), Some(Value::F64(9.0)));
        assert_eq!(attr(merge, "orch.merge.commit"), Some(Value::from("def")));
        assert_eq!(attr(merge, "orch.merge.landed"), Some(Value::Bool(true)));
        // No content: tool arguments, output and judge issues stay out.
        let text = format!("{spans:?}");
        for secret in [
            "SECRET-CONTENT",
            "TOOL-OUTPUT",
            "ISSUE-TEXT",
            "message text",
        ] {
            assert!(!text.contains(secret), "{secret} in a span");
        }
        // Nothing is left open; the merge landed, so the task is forgotten.
        assert!(r.projector.attempts.is_empty());
        assert!(r.projector.merges.is_empty());
        assert!(r.projector.finished.is_empty());
    }

    #[test]
    fn trace_content_puts_tool_arguments_output_and_issues_in() {
        let mut r = Rig::new(true);
        whole_attempt(&mut r);
        let spans = r.spans();
        let t = one(&spans, "execute_tool write_file");
        let args = attr(t, "gen_ai.tool.call.arguments").unwrap().to_string();
        assert!(args.contains("SECRET-CONTENT"), "{args}");
        assert_eq!(
            attr(t, "gen_ai.tool.call.result"),
            Some(Value::from("TOOL-OUTPUT"))
        );
        let judge = one(&spans, "judge");
        assert_eq!(
            attr(judge, "orch.verdict.issue_text"),
            Some(Value::from("ISSUE-TEXT"))
        );
    }

    #[test]
    fn an_attempt_never_seen_starting_is_traced_from_its_first_event() {
        let mut r = Rig::new(false);
        r.feed(100, Some(T), tool());
        // The stage names the attempt (2) that the tool call did not.
        r.feed(
            200,
            Some(T),
            StageFinished::new(Stage::Work, Some(2), Duration::from_millis(150), true),
        );
        assert_eq!(r.projector.attempts.len(), 1);
        r.feed(300, Some(T), finished(2, AttemptStatus::Failed));
        // A repeat of the end is late, not a second trace.
        r.feed(301, Some(T), finished(2, AttemptStatus::Failed));
        let spans = r.spans();
        let root = one(&spans, "attempt");
        assert_eq!(attr(root, "orch.attempt.partial"), Some(Value::Bool(true)));
        assert_eq!(attr(root, "orch.attempt.number"), Some(Value::I64(2)));
        assert_eq!(root.start_time, r.time(80), "from the tool call's start");
        assert!(matches!(root.status, Status::Error { .. }));
        let work = one(&spans, "work");
        assert_eq!(work.parent_span_id, root.span_context.span_id());
        assert_eq!(work.start_time, r.time(50));
        assert!(r.projector.attempts.is_empty());
    }

    #[test]
    fn stages_the_attempt_did_not_finish_end_with_it_and_shutdown_ends_the_rest() {
        let mut r = Rig::new(false);
        r.feed(
            0,
            Some(T),
            AttemptStarted {
                attempt_id: 1,
                number: 1,
                base_commit: None,
                kind: AttemptKind::Work,
            },
        );
        r.feed(10, Some(T), StageStarted::new(Stage::Work));
        r.feed(
            50,
            Some(T),
            orch_protocol::AttemptInterrupted {
                attempt_id: 1,
                number: 1,
                reason: "shutdown".into(),
                stage: Some(Stage::Work),
            },
        );
        r.feed(
            60,
            Some("other"),
            AttemptStarted {
                attempt_id: 2,
                number: 1,
                base_commit: None,
                kind: AttemptKind::Work,
            },
        );
        r.projector.close_all(r.time(90));
        let spans = r.spans();
        let roots = named(&spans, "attempt");
        assert_eq!(roots.len(), 2);
        let work = one(&spans, "work");
        assert_eq!(work.end_time, r.time(50));
        assert_eq!(attr(work, "orch.stage.unfinished"), Some(Value::Bool(true)));
        let other = roots
            .iter()
            .find(|s| attr(s, "orch.task.id") == Some(Value::from("other")))
            .unwrap();
        assert_eq!(other.end_time, r.time(90));
        assert_eq!(
            attr(other, "orch.attempt.unfinished"),
            Some(Value::Bool(true))
        );
        assert!(r.projector.attempts.is_empty());
    }

    #[test]
    fn a_rejected_merge_is_one_span_in_the_last_attempts_trace() {
        let mut r = Rig::new(false);
        r.feed(
            0,
            Some(T),
            AttemptStarted {
                attempt_id: 7,
                number: 1,
                base_commit: None,
                kind: AttemptKind::Work,
            },
        );
        r.feed(10, Some(T), finished(1, AttemptStatus::Passed));
        r.feed(20, Some(T), StageStarted::new(Stage::Merge));
        r.feed(25, Some(T), StageStarted::new(Stage::Merge));
        r.feed(
            30,
            Some(T),
            MergeRejected {
                feedback: "FEEDBACK-TEXT".into(),
            },
        );
        r.feed(
            40,
            Some(T),
            StageFinished::new(Stage::Merge, None, Duration::from_millis(25), false),
        );
        let spans = r.spans();
        let root = one(&spans, "attempt");
        let merge = one(&spans, "merge");
        assert_eq!(merge.span_context.trace_id(), root.span_context.trace_id());
        assert_eq!(merge.parent_span_id, root.span_context.span_id());
        assert_eq!(attr(merge, "orch.merge.landed"), Some(Value::Bool(false)));
        let events: Vec<&str> = merge.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["merge_rebuilt", "merge_rejected"]);
        assert!(!format!("{spans:?}").contains("FEEDBACK-TEXT"));
        // Not landed: the task's trace is kept for its next merge.
        assert!(r.projector.finished.contains_key(T));
    }

    #[test]
    fn the_planner_has_traces_of_its_own_and_other_projects_are_ignored() {
        let mut r = Rig::new(false);
        r.feed(
            0,
            None,
            StageStarted {
                model: Some("replay:planner".into()),
                ..StageStarted::new(Stage::Plan)
            },
        );
        r.feed(100, None, model("planner", 80));
        r.feed(
            120,
            None,
            PlanCreated {
                created: vec![PlannedTask {
                    id: "a".into(),
                    plan_key: None,
                }],
                notes: Some("PLANNER-NOTES".into()),
                input_tokens: 10,
                ..Default::default()
            },
        );
        let mut other = Event::new("elsewhere", AttemptStarted::default(), "m").task("x");
        other.at = r.base;
        r.projector.on_event(&other);
        let spans = r.spans();
        assert_eq!(names(&spans), ["chat planner", "plan"]);
        let plan = one(&spans, "plan");
        let chat = one(&spans, "chat planner");
        assert_eq!(chat.parent_span_id, plan.span_context.span_id());
        assert_eq!(chat.span_context.trace_id(), plan.span_context.trace_id());
        assert_eq!(attr(plan, "orch.plan.created"), Some(Value::I64(1)));
        assert_eq!(attr(plan, "orch.plan.source"), Some(Value::from("planner")));
        assert_eq!((plan.start_time, plan.end_time), (r.time(0), r.time(120)));
        assert!(!format!("{spans:?}").contains("PLANNER-NOTES"));
        assert!(r.projector.attempts.is_empty() && r.projector.plans.is_empty());
    }

    fn started(r: &mut Rig, ms: i64, id: i64, number: u32) {
        started_as(r, ms, id, number, AttemptKind::Work);
    }

    fn started_as(r: &mut Rig, ms: i64, id: i64, number: u32, kind: AttemptKind) {
        r.feed(
            ms,
            Some(T),
            AttemptStarted {
                attempt_id: id,
                number,
                base_commit: None,
                kind,
            },
        );
    }

    fn call_for(role: &str, attempt_id: Option<i64>) -> ModelCall {
        ModelCall {
            attempt_id,
            ..model(role, 10)
        }
    }

    fn by_id(spans: &[SpanData]) -> HashMap<SpanId, &SpanData> {
        spans
            .iter()
            .map(|s| (s.span_context.span_id(), s))
            .collect()
    }

    #[test]
    fn candidates_each_have_their_trace_and_the_round_links_them() {
        let mut r = Rig::new(false);
        r.feed(
            0,
            Some(T),
            orch_protocol::CandidatesStarted {
                candidates: 2,
                slots: vec![],
            },
        );
        started(&mut r, 1, 11, 1);
        started(&mut r, 2, 12, 2);
        for n in [1, 2] {
            r.feed(
                5,
                Some(T),
                StageStarted {
                    attempt: Some(n),
                    ..StageStarted::new(Stage::Work)
                },
            );
        }
        r.feed(20, Some(T), call_for("worker", Some(11)));
        r.feed(21, Some(T), call_for("worker", Some(12)));
        // Both are at work: a tool call that names neither is left out.
        r.feed(22, Some(T), tool());
        r.feed(30, Some(T), stage(Stage::Work, 25, true));
        r.feed(
            31,
            Some(T),
            StageFinished::new(Stage::Work, Some(2), Duration::from_millis(26), true),
        );
        // Only candidate 2 is judged: its verdict names it.
        r.feed(40, Some(T), call_for("judge", Some(12)));
        r.feed(
            41,
            Some(T),
            VerdictRecorded {
                passed: true,
                score: Some(8.0),
                attempt_id: Some(12),
                attempt: Some(2),
                ..Default::default()
            },
        );
        r.feed(
            42,
            Some(T),
            StageFinished::new(Stage::Judge, Some(2), Duration::from_millis(5), true),
        );
        r.feed(
            50,
            Some(T),
            ended(11, 1, AttemptKind::Work, AttemptStatus::Failed),
        );
        r.feed(
            51,
            Some(T),
            ended(12, 2, AttemptKind::Work, AttemptStatus::Passed),
        );
        // The ranking's call belongs to the round.
        r.feed(60, Some(T), call_for("judge", None));
        r.feed(
            61,
            Some(T),
            orch_protocol::CandidatesRanked {
                order: vec![2],
                reasons: vec!["REASON-TEXT".into()],
                attempts: vec![2],
                winner: Some(2),
                method: "only".into(),
                warning: None,
            },
        );
        r.feed(70, Some(T), StageStarted::new(Stage::Merge));
        r.feed(
            80,
            Some(T),
            StageFinished::new(Stage::Merge, None, Duration::from_millis(10), true),
        );
        let spans = r.spans();
        let ids = by_id(&spans);
        let roots = named(&spans, "attempt");
        assert_eq!(roots.len(), 2, "{:?}", names(&spans));
        let root = |n: i64| {
            *roots
                .iter()
                .find(|s| attr(s, "orch.attempt.number") == Some(Value::I64(n)))
                .unwrap()
        };
        let (c1, c2) = (root(1), root(2));
        assert_ne!(c1.span_context.trace_id(), c2.span_context.trace_id());
        assert_eq!(attr(c1, "orch.attempt.status"), Some(Value::from("failed")));
        assert_eq!(attr(c2, "orch.attempt.status"), Some(Value::from("passed")));
        assert_eq!(
            attr(c1, "orch.attempt.unfinished"),
            None,
            "not closed as stale"
        );
        // Each worker call under its own candidate's work span.
        for (call, owner) in named(&spans, "chat worker").iter().zip([c1, c2]) {
            let work = ids[&call.parent_span_id];
            assert_eq!(work.name, "work");
            assert_eq!(work.parent_span_id, owner.span_context.span_id());
        }
        assert!(named(&spans, "execute_tool write_file").is_empty());
        let judges = named(&spans, "judge");
        assert_eq!(judges.len(), 1);
        assert_eq!(judges[0].parent_span_id, c2.span_context.span_id());
        assert_eq!(attr(judges[0], "orch.verdict.score"), Some(Value::F64(8.0)));
        // The round: its own trace, linked to both, the ranking's call under it.
        let round = one(&spans, "candidates");
        assert_eq!(round.parent_span_id, SpanId::INVALID);
        let linked: Vec<_> = round
            .links
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect();
        assert_eq!(
            linked,
            [c1.span_context.span_id(), c2.span_context.span_id()]
        );
        assert_eq!(attr(round, "orch.candidates.count"), Some(Value::I64(2)));
        assert_eq!(attr(round, "orch.candidates.order"), Some(Value::from("2")));
        assert_eq!(attr(round, "orch.candidates.winner"), Some(Value::I64(2)));
        assert_eq!(
            attr(round, "orch.candidates.method"),
            Some(Value::from("only"))
        );
        assert_eq!((round.start_time, round.end_time), (r.time(0), r.time(61)));
        let ranking = named(&spans, "chat judge")
            .into_iter()
            .find(|s| s.parent_span_id == round.span_context.span_id());
        assert!(ranking.is_some(), "the ranking's call is under the round");
        // The winner's trace holds the merge.
        let merge = one(&spans, "merge");
        assert_eq!(merge.parent_span_id, c2.span_context.span_id());
        assert!(!format!("{spans:?}").contains("REASON-TEXT"));
        assert!(r.projector.attempts.is_empty() && r.projector.rounds.is_empty());
    }

    #[test]
    fn parallel_candidates_tool_calls_verification_and_verdicts_land_on_their_own_traces() {
        let mut r = Rig::new(false);
        r.feed(
            0,
            Some(T),
            orch_protocol::CandidatesStarted {
                candidates: 2,
                slots: vec![],
            },
        );
        started(&mut r, 1, 11, 1);
        started(&mut r, 2, 12, 2);
        for n in [1, 2] {
            r.feed(
                3,
                Some(T),
                StageStarted {
                    attempt: Some(n),
                    ..StageStarted::new(Stage::Work)
                },
            );
        }
        // Both at work at once, their calls interleaved.
        r.feed(30, Some(T), tool_for(12, 2, "read_file"));
        r.feed(31, Some(T), tool_for(11, 1, "write_file"));
        r.feed(32, Some(T), tool_for(12, 2, "run"));
        r.feed(33, Some(T), tool()); // names neither: left out
        for n in [2, 1] {
            r.feed(
                40,
                Some(T),
                StageFinished::new(Stage::Work, Some(n), Duration::from_millis(37), true),
            );
        }
        // Both verified: candidate 2's red test first, then 1's green lint.
        let verified = |id, n, passed, kind: &str, exit| VerificationFinished {
            passed,
            attempt_id: Some(id),
            attempt: Some(n),
            steps: vec![StepSummary {
                kind: kind.into(),
                exit_code: Some(exit),
                duration_ms: 10,
                ..Default::default()
            }],
            ..Default::default()
        };
        r.feed(60, Some(T), verified(12, 2, false, "test", 1));
        r.feed(61, Some(T), verified(11, 1, true, "lint", 0));
        for n in [2, 1] {
            r.feed(
                62,
                Some(T),
                StageFinished::new(Stage::Verify, Some(n), Duration::from_millis(20), true),
            );
        }
        // Both judged at once; the verdicts come in the other order.
        r.feed(70, Some(T), call_for("judge", Some(11)));
        r.feed(71, Some(T), call_for("judge", Some(12)));
        let verdict = |id, n, passed, score| VerdictRecorded {
            passed,
            score: Some(score),
            attempt_id: Some(id),
            attempt: Some(n),
            ..Default::default()
        };
        r.feed(72, Some(T), verdict(12, 2, false, 3.0));
        r.feed(73, Some(T), verdict(11, 1, true, 9.0));
        for n in [1, 2] {
            r.feed(
                74,
                Some(T),
                StageFinished::new(Stage::Judge, Some(n), Duration::from_millis(10), true),
            );
        }
        r.feed(
            80,
            Some(T),
            ended(11, 1, AttemptKind::Work, AttemptStatus::Passed),
        );
        r.feed(
            81,
            Some(T),
            ended(12, 2, AttemptKind::Work, AttemptStatus::Failed),
        );
        let spans = r.spans();
        let ids = by_id(&spans);
        let roots = named(&spans, "attempt");
        assert_eq!(roots.len(), 2, "{:?}", names(&spans));
        let root_of = |n: i64| {
            *roots
                .iter()
                .find(|s| attr(s, "orch.attempt.number") == Some(Value::I64(n)))
                .unwrap()
        };
        let (c1, c2) = (root_of(1), root_of(2));
        assert_ne!(c1.span_context.trace_id(), c2.span_context.trace_id());
        // The candidate whose stage `s` (named `stage`) is the parent.
        let owner = |s: &SpanData, stage: &str| {
            let parent = ids[&s.parent_span_id];
            assert_eq!(parent.name, stage, "{} is under {}", s.name, parent.name);
            assert_eq!(parent.span_context.trace_id(), s.span_context.trace_id());
            let root = ids[&parent.parent_span_id];
            attr(root, "orch.attempt.number")
        };
        assert_eq!(
            owner(one(&spans, "execute_tool write_file"), "work"),
            Some(Value::I64(1))
        );
        for t in ["execute_tool read_file", "execute_tool run"] {
            assert_eq!(owner(one(&spans, t), "work"), Some(Value::I64(2)), "{t}");
        }
        let tools = spans.iter().filter(|s| s.name.starts_with("execute_tool"));
        assert_eq!(
            tools.count(),
            3,
            "the call that names no candidate is left out"
        );
        assert_eq!(
            owner(one(&spans, "step lint"), "verify"),
            Some(Value::I64(1))
        );
        assert_eq!(
            owner(one(&spans, "step test"), "verify"),
            Some(Value::I64(2))
        );
        let stage_of = |stage: &str, root: &SpanData| {
            *named(&spans, stage)
                .iter()
                .find(|s| s.parent_span_id == root.span_context.span_id())
                .unwrap()
        };
        let passed = |s: &SpanData| attr(s, "orch.verify.passed");
        assert_eq!(passed(stage_of("verify", c1)), Some(Value::Bool(true)));
        assert_eq!(passed(stage_of("verify", c2)), Some(Value::Bool(false)));
        let score = |s: &SpanData| {
            (
                attr(s, "orch.verdict.passed"),
                attr(s, "orch.verdict.score"),
            )
        };
        assert_eq!(
            score(stage_of("judge", c1)),
            (Some(Value::Bool(true)), Some(Value::F64(9.0)))
        );
        assert_eq!(
            score(stage_of("judge", c2)),
            (Some(Value::Bool(false)), Some(Value::F64(3.0)))
        );
        for (root, kind) in [(c1, "work"), (c2, "work")] {
            assert_eq!(attr(root, "orch.attempt.kind"), Some(Value::from(kind)));
        }
        assert_eq!(named(&spans, "work").len(), 2);
        assert_eq!(named(&spans, "verify").len(), 2);
        assert_eq!(named(&spans, "judge").len(), 2);
    }

    #[test]
    fn a_work_attempt_that_starts_during_a_merge_is_its_own_trace() {
        // The kind decides what hangs under the merge, not the timing.
        let mut r = Rig::new(false);
        started(&mut r, 0, 7, 1);
        r.feed(10, Some(T), finished(1, AttemptStatus::Passed));
        r.feed(20, Some(T), StageStarted::new(Stage::Merge));
        started(&mut r, 30, 8, 2);
        r.feed(40, Some(T), tool_for(8, 2, "write_file"));
        r.feed(
            50,
            Some(T),
            ended(8, 2, AttemptKind::Work, AttemptStatus::Failed),
        );
        let spans = r.spans();
        let second = named(&spans, "attempt")
            .into_iter()
            .find(|s| attr(s, "orch.attempt.number") == Some(Value::I64(2)))
            .unwrap();
        assert_eq!(
            second.parent_span_id,
            SpanId::INVALID,
            "a root, not under the merge"
        );
        let first = named(&spans, "attempt")
            .into_iter()
            .find(|s| attr(s, "orch.attempt.number") == Some(Value::I64(1)))
            .unwrap();
        assert_ne!(
            second.span_context.trace_id(),
            first.span_context.trace_id()
        );
        let work = one(&spans, "work");
        assert_eq!(work.parent_span_id, second.span_context.span_id());
        assert_eq!(
            one(&spans, "execute_tool write_file").parent_span_id,
            work.span_context.span_id()
        );
    }

    #[test]
    fn a_conflict_resolver_is_an_attempt_under_the_merge() {
        let mut r = Rig::new(false);
        started(&mut r, 0, 7, 1);
        r.feed(10, Some(T), finished(1, AttemptStatus::Passed));
        r.feed(20, Some(T), StageStarted::new(Stage::Merge));
        started_as(&mut r, 30, 2, 2, AttemptKind::Resolve);
        r.feed(
            31,
            Some(T),
            orch_protocol::ConflictResolving {
                attempt_id: 2,
                number: 2,
                files: vec!["calc.py".into()],
                onto: "abc".into(),
                model: Some("replay:worker".into()),
                worker: Some("builtin".into()),
            },
        );
        r.feed(40, Some(T), call_for("worker", Some(2)));
        r.feed(45, Some(T), tool_for(2, 2, "write_file"));
        r.feed(
            60,
            Some(T),
            VerificationFinished {
                stage: Some(Stage::Merge),
                attempt_id: Some(2),
                attempt: Some(2),
                passed: true,
                steps: vec![StepSummary {
                    kind: "test".into(),
                    exit_code: Some(0),
                    duration_ms: 10,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        r.feed(
            70,
            Some(T),
            ended(2, 2, AttemptKind::Resolve, AttemptStatus::Passed),
        );
        r.feed(
            71,
            Some(T),
            orch_protocol::ConflictResolved {
                attempt_id: 2,
                number: 2,
                files: vec!["calc.py".into()],
                outcome: orch_protocol::ResolutionOutcome::Resolved,
                reason: None,
                commit: Some("def".into()),
                duration_ms: 40,
            },
        );
        r.feed(
            80,
            Some(T),
            StageFinished::new(Stage::Merge, None, Duration::from_millis(60), true),
        );
        let spans = r.spans();
        let trace = spans[0].span_context.trace_id();
        assert!(
            spans.iter().all(|s| s.span_context.trace_id() == trace),
            "one trace: {:?}",
            names(&spans)
        );
        let merge = one(&spans, "merge");
        assert_eq!(
            merge.status,
            Status::Ok,
            "the merge was not closed as stale"
        );
        let resolver = named(&spans, "attempt")
            .into_iter()
            .find(|s| attr(s, "orch.attempt.kind") == Some(Value::from("resolve")))
            .expect("the resolver's attempt");
        assert_eq!(resolver.parent_span_id, merge.span_context.span_id());
        assert_eq!(attr(resolver, "orch.attempt.number"), Some(Value::I64(2)));
        assert_eq!(attr(resolver, "orch.conflict.files"), Some(Value::I64(1)));
        for s in ["chat worker", "execute_tool write_file"] {
            assert_eq!(
                one(&spans, s).parent_span_id,
                resolver.span_context.span_id(),
                "{s}"
            );
        }
        assert!(named(&spans, "work").is_empty(), "a resolver has no stages");
        assert_eq!(
            one(&spans, "step test").parent_span_id,
            merge.span_context.span_id()
        );
        let events: Vec<&str> = merge.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["conflict_resolving", "conflict_resolved"]);
        let resolved = &merge.events.events[1];
        assert!(resolved.attributes.iter().any(
            |k| k.key.as_str() == "orch.conflict.outcome" && k.value == Value::from("resolved")
        ));
        assert!(
            !format!("{spans:?}").contains("calc.py"),
            "file names are content"
        );
        assert!(r.projector.attempts.is_empty() && r.projector.finished.is_empty());
    }

    #[test]
    fn refinement_iterations_are_events_on_the_attempt_and_the_stop_its_attributes() {
        let mut r = Rig::new(false);
        started(&mut r, 0, 7, 1);
        for (ms, n, score, outcome) in [
            (10, 1, 6.0, orch_core::IterationOutcome::Kept),
            (20, 2, 5.0, orch_core::IterationOutcome::Reverted),
        ] {
            r.feed(
                ms,
                Some(T),
                orch_protocol::RefineIteration {
                    attempt_id: 7,
                    number: 1,
                    iteration: n,
                    score: Some(score),
                    outcome,
                    best_score: Some(6.0),
                    best_iteration: 1,
                    commit: Some(format!("c{n}")),
                    reverted_to: None,
                },
            );
        }
        r.feed(
            30,
            Some(T),
            orch_protocol::RefineStopped {
                attempt_id: 7,
                number: 1,
                reason: orch_protocol::RefineStop::Plateau,
                iterations: 2,
                best_iteration: 1,
                best_score: Some(6.0),
                passed: false,
                detail: Some("DETAIL-TEXT".into()),
            },
        );
        r.feed(40, Some(T), finished(1, AttemptStatus::Failed));
        let spans = r.spans();
        let root = one(&spans, "attempt");
        let events: Vec<&SpanEvent> = root
            .events
            .iter()
            .filter(|e| e.name == "refine_iteration")
            .collect();
        assert_eq!(events.len(), 2);
        let value = |e: &SpanEvent, key: &str| {
            e.attributes
                .iter()
                .find(|k| k.key.as_str() == key)
                .map(|k| k.value.clone())
        };
        assert_eq!(
            value(events[1], "orch.refine.outcome"),
            Some(Value::from("reverted"))
        );
        assert_eq!(value(events[1], "orch.refine.score"), Some(Value::F64(5.0)));
        assert_eq!(events[1].timestamp, r.time(20));
        assert_eq!(
            attr(root, "orch.refine.stop_reason"),
            Some(Value::from("plateau"))
        );
        assert_eq!(attr(root, "orch.refine.iterations"), Some(Value::I64(2)));
        assert_eq!(attr(root, "orch.refine.best_score"), Some(Value::F64(6.0)));
        assert!(!format!("{spans:?}").contains("DETAIL-TEXT"));
    }

    #[test]
    fn open_state_is_bounded() {
        let mut r = Rig::new(false);
        for i in 0..(MAX_OPEN + 10) {
            r.feed(
                i as i64,
                Some(&format!("t{i}")),
                AttemptStarted {
                    attempt_id: i as i64,
                    number: 1,
                    base_commit: None,
                    kind: AttemptKind::Work,
                },
            );
        }
        assert_eq!(r.projector.attempts.len(), MAX_OPEN);
        // The oldest were ended, not dropped.
        assert_eq!(r.spans().len(), 10);
        assert!(!r.projector.attempts.contains_key("t0"));
    }

    #[test]
    fn nothing_starts_without_an_endpoint() {
        if ENDPOINT_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            eprintln!("skipped: an OTLP endpoint is set in this environment");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(orch_state::Store::open(&dir.path().join("orch.db")).unwrap());
        assert!(start(store, false).is_none());
    }
}
