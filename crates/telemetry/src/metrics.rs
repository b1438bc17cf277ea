//! Prometheus metrics as a projection of the event stream.
//!
//! Two kinds of figure, kept apart on purpose:
//! - **Counters and histograms** are counted from events ([`observe`]):
//!   [`Metrics::follow`] subscribes to the store's bus and observes every
//!   committed event, so a metric can never disagree with the event log.
//!   They start at zero with each process (Prometheus' `rate`/`increase`
//!   handle the reset).
//! - **Gauges** that describe the state (tasks by status, merge-queue
//!   depth, today's spend, pauses) are read from the store when scraped
//!   ([`Metrics::render`]), so they are right across restarts and for work
//!   other processes did.
//!
//! [`CATALOGUE`] lists every metric with its labels; the README's table and
//! the Grafana dashboard (deploy/grafana/orch.json) are checked against it.
//! Rendering goes through the server's own `/metrics` route: the exporter
//! runs no listener of its own.

use metrics::Label;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use orch_config::Config;
use orch_core::TaskStatus;
use orch_protocol::{Event, HealthChange, Payload, ResolutionOutcome};
use orch_state::StateStore;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

pub const EVENTS: &str = "orch_events_total";
pub const EVENTS_LAGGED: &str = "orch_events_lagged_total";
pub const ATTEMPTS: &str = "orch_attempts_total";
pub const STAGE_DURATION: &str = "orch_stage_duration_seconds";
pub const MODEL_CALLS: &str = "orch_model_calls_total";
pub const MODEL_TOKENS: &str = "orch_model_tokens_total";
pub const MODEL_COST: &str = "orch_model_cost_usd_total";
pub const MODEL_CALL_DURATION: &str = "orch_model_call_duration_seconds";
pub const MODEL_TRY_ERRORS: &str = "orch_model_try_errors_total";
pub const MODEL_RETRIES: &str = "orch_model_retries_total";
pub const CIRCUIT_STATE: &str = "orch_provider_circuit_state";
pub const FALLBACKS: &str = "orch_provider_fallbacks_total";
pub const TOOL_CALLS: &str = "orch_tool_calls_total";
pub const TOOL_REFUSALS: &str = "orch_tool_refusals_total";
pub const SANDBOX_EXEC: &str = "orch_sandbox_exec_duration_seconds";
pub const VERIFICATIONS: &str = "orch_verifications_total";
pub const VERDICTS: &str = "orch_verdicts_total";
pub const MERGE_BATCH: &str = "orch_merge_batch_size";
pub const MERGE_REJECTIONS: &str = "orch_merge_rejections_total";
pub const INFRA_FAILURES: &str = "orch_infra_failures_total";
pub const PATROL_INTERRUPTIONS: &str = "orch_patrol_interruptions_total";
pub const ESCALATIONS: &str = "orch_escalations_total";
pub const TASKS_CREATED: &str = "orch_tasks_created_total";
pub const TASKS_MERGED: &str = "orch_tasks_merged_total";
pub const TASKS_FAILED: &str = "orch_tasks_failed_total";
pub const TASKS_CANCELLED: &str = "orch_tasks_cancelled_total";
pub const PROJECT_PAUSES: &str = "orch_project_pauses_total";
pub const CANDIDATES: &str = "orch_candidates_total";
pub const CANDIDATE_RANKINGS: &str = "orch_candidate_rankings_total";
pub const REFINE_ITERATIONS: &str = "orch_refine_iterations_total";
pub const REFINE_STOPS: &str = "orch_refine_stops_total";
pub const CONFLICT_RESOLUTIONS: &str = "orch_conflict_resolutions_total";
pub const PROJECTS_CREATED: &str = "orch_projects_created_total";
pub const PROJECTS_ARCHIVED: &str = "orch_projects_archived_total";
pub const TASKS: &str = "orch_tasks";
pub const MERGE_QUEUE_DEPTH: &str = "orch_merge_queue_depth";
pub const SPEND_TODAY: &str = "orch_spend_today_usd";
pub const PROJECT_PAUSED: &str = "orch_project_paused";
pub const SCRAPE_ERRORS: &str = "orch_metrics_store_errors_total";

/// One metric as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDoc {
    pub name: &'static str,
    /// counter, gauge or histogram.
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn doc(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDoc {
    MetricDoc {
        name,
        kind,
        labels,
        help,
    }
}

const P: &[&str] = &["project"];
const MODEL: &[&str] = &["project", "role", "provider", "model"];

/// Every metric orch exports.
pub const CATALOGUE: &[MetricDoc] = &[
    doc(EVENTS, "counter", &["project", "kind"], "Events committed, by kind."),
    doc(EVENTS_LAGGED, "counter", &[], "Events the metrics missed because they fell behind the bus."),
    doc(ATTEMPTS, "counter", &["project", "kind", "outcome"], "Attempts finished, by kind (work, or resolve for the merge queue's conflict resolver) and outcome (passed, failed, needs_human, interrupted, error, cancelled)."),
    doc(STAGE_DURATION, "histogram", &["project", "stage", "ok"], "How long stages took (work, verify, judge, merge, ...); skipped stages are not counted."),
    doc(MODEL_CALLS, "counter", &["project", "role", "provider", "model", "ok"], "Model calls as metered, by role and model."),
    doc(MODEL_TOKENS, "counter", &["project", "role", "provider", "model", "kind"], "Tokens of model calls; kind is input, output or cached."),
    doc(MODEL_COST, "counter", MODEL, "What model calls cost, in US dollars."),
    doc(MODEL_CALL_DURATION, "histogram", MODEL, "How long model calls took."),
    doc(MODEL_TRY_ERRORS, "counter", &["project", "provider", "retryable"], "Model tries that failed."),
    doc(MODEL_RETRIES, "counter", &["project", "provider"], "Failed model tries that were tried again after a wait."),
    doc(CIRCUIT_STATE, "gauge", &["provider"], "A provider's circuit breaker: 0 closed, 1 half-open, 2 open."),
    doc(FALLBACKS, "counter", &["provider", "to_provider", "to_model"], "Calls a fallback model took over from a provider."),
    doc(TOOL_CALLS, "counter", &["project", "tool", "ok"], "The worker's tool calls (unknown tool names count as `other`)."),
    doc(TOOL_REFUSALS, "counter", P, "Tool calls or changes refused (path escapes, files outside allowed_files)."),
    doc(SANDBOX_EXEC, "histogram", &["project", "stage", "kind"], "Commands run in the sandbox: the worker's `run` tool (stage work, kind run) and verification steps (kind setup, format, lint, test)."),
    doc(VERIFICATIONS, "counter", &["project", "stage", "passed"], "Verifications finished: an attempt's own (stage verify) or the merge queue's (stage merge)."),
    doc(VERDICTS, "counter", &["project", "passed"], "Verdicts recorded by the gates and the judge."),
    doc(MERGE_BATCH, "histogram", P, "How many tasks landed together in one merge."),
    doc(MERGE_REJECTIONS, "counter", P, "Tasks the merge queue sent back."),
    doc(INFRA_FAILURES, "counter", P, "Attempts lost to orch's own failures (git, sandbox start-up, provider outage)."),
    doc(PATROL_INTERRUPTIONS, "counter", P, "Attempts the patrol interrupted for making no progress."),
    doc(ESCALATIONS, "counter", P, "Questions asked of a person (tasks that went to needs_human)."),
    doc(TASKS_CREATED, "counter", P, "Tasks created (by hand, the API, the planner or a plan file)."),
    doc(TASKS_MERGED, "counter", P, "Tasks merged."),
    doc(TASKS_FAILED, "counter", P, "Tasks failed."),
    doc(TASKS_CANCELLED, "counter", P, "Tasks cancelled."),
    doc(PROJECT_PAUSES, "counter", P, "Times a project was paused."),
    doc(CANDIDATES, "counter", P, "Best-of-N candidates started (each candidate of each round)."),
    doc(CANDIDATE_RANKINGS, "counter", &["project", "method"], "Best-of-N rounds ranked, by how the order was decided (judge, scores, only, none: no candidate passed)."),
    doc(REFINE_ITERATIONS, "counter", &["project", "outcome"], "Refinement iterations judged, by what became of the snapshot (kept, reverted, unchanged)."),
    doc(REFINE_STOPS, "counter", &["project", "reason", "passed"], "Refinements that stopped, by why (threshold, max_iterations, plateau, worker_stopped) and whether the best snapshot passed."),
    doc(CONFLICT_RESOLUTIONS, "counter", &["project", "outcome"], "Merge conflicts the resolver worked on, by outcome (resolved, failed, stopped)."),
    doc(PROJECTS_CREATED, "counter", P, "Projects made from a requirements file."),
    doc(PROJECTS_ARCHIVED, "counter", P, "Finished projects whose main was archived."),
    doc(TASKS, "gauge", &["project", "status"], "Tasks by status, read from the store at scrape time."),
    doc(MERGE_QUEUE_DEPTH, "gauge", P, "Tasks waiting to merge or merging (status passed or merging), read at scrape time."),
    doc(SPEND_TODAY, "gauge", P, "What the project spent on models today (UTC), in US dollars, read at scrape time."),
    doc(PROJECT_PAUSED, "gauge", P, "1 while the project is paused, read at scrape time."),
    doc(SCRAPE_ERRORS, "counter", &[], "Scrapes whose store reads failed (the gauges kept their last values)."),
];

/// Bucket bounds of every `_seconds` histogram: 5 ms to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
/// Bucket bounds of the merge batch size.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0];
/// The worker's tools (the README's public contract); others are `other`.
const TOOLS: &[&str] = &[
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search",
    "run",
    "ask_human",
    "finish",
];
/// The counters labelled by project alone, shown at 0 for every project.
const PER_PROJECT_COUNTERS: &[&str] = &[
    TASKS_CREATED,
    TASKS_MERGED,
    TASKS_FAILED,
    TASKS_CANCELLED,
    ESCALATIONS,
    PATROL_INTERRUPTIONS,
    PROJECT_PAUSES,
    INFRA_FAILURES,
    MERGE_REJECTIONS,
    TOOL_REFUSALS,
    CANDIDATES,
    PROJECTS_ARCHIVED,
];
/// How often [`Metrics::follow`] trims the exporter's histogram buffers.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's metrics: a Prometheus recorder and the handle that renders
/// it. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Set when the recorder is not the process-wide one: what is observed
    /// through this handle is recorded into it alone.
    local: Option<Arc<PrometheusRecorder>>,
    /// Counters with fractional values (dollars), which the `metrics`
    /// facade cannot count.
    floats: Arc<FloatCounters>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("process_wide", &self.local.is_none())
            .finish_non_exhaustive()
    }
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(MERGE_BATCH.into()), BATCH_BUCKETS))
        .unwrap_or_else(|e| {
            tracing::warn!(
                "metrics: histogram buckets not set ({e}); histograms render as summaries"
            );
            PrometheusBuilder::new()
        })
}

impl Metrics {
    /// The process-wide metrics, installing the recorder on the first call;
    /// every later call returns the same handle.
    pub fn install() -> Metrics {
        static INSTALLED: OnceLock<Metrics> = OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                let recorder = builder().build_recorder();
                let handle = recorder.handle();
                let local = match metrics::set_global_recorder(recorder) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!("metrics: another recorder is installed in this process; orch's metrics keep a recorder of their own");
                        Some(Arc::new(e.into_inner()))
                    }
                };
                Metrics::with(handle, local)
            })
            .clone()
    }

    /// Metrics with a recorder of their own, not installed process-wide:
    /// for tests, or to render several independent sets in one process.
    pub fn private() -> Metrics {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        Metrics::with(handle, Some(Arc::new(recorder)))
    }

    fn with(handle: PrometheusHandle, local: Option<Arc<PrometheusRecorder>>) -> Metrics {
        let m = Metrics {
            handle,
            local,
            floats: Arc::new(FloatCounters::default()),
        };
        m.scoped(describe);
        m
    }

    /// Runs `f` with this handle's recorder as the current one.
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.local {
            Some(r) => metrics::with_local_recorder(r.as_ref(), f),
            None => f(),
        }
    }

    /// Counts one event.
    pub fn observe(&self, event: &Event) {
        self.scoped(|| count(event, &self.floats));
    }

    /// Observes every event the store commits from now on, until `stop`.
    /// Subscribes before returning, so nothing committed after this call is
    /// missed; falling behind the bus is counted and skipped over.
    pub fn follow(
        &self,
        store: Arc<dyn StateStore>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rx = store.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            match rx {
                Ok(rx) => me.follow_bus(rx, stop).await,
                Err(e) => tracing::warn!("metrics: cannot follow the event bus ({e}); counters stay at zero, the store's gauges still work"),
            }
        })
    }

    async fn follow_bus(
        &self,
        mut rx: tokio::sync::broadcast::Receiver<Event>,
        stop: CancellationToken,
    ) {
        let mut upkeep = tokio::time::interval(UPKEEP);
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => {
                    while let Ok(ev) = rx.try_recv() {
                        self.observe(&ev);
                    }
                    return;
                }
                _ = upkeep.tick() => {
                    self.handle.run_upkeep();
                    continue;
                }
                r = rx.recv() => r,
            };
            match received {
                Ok(ev) => self.observe(&ev),
                Err(RecvError::Lagged(n)) => {
                    self.scoped(|| metrics::counter!(EVENTS_LAGGED).increment(n))
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The metrics in Prometheus' text format, the store's gauges read
    /// first (for every configured project and every one in the store).
    pub fn render(&self, store: &dyn StateStore, config: &Config) -> String {
        self.scoped(|| refresh(store, config));
        let mut text = self.handle.render();
        self.floats.render_into(&mut text);
        text
    }
}

/// Counts `event` into the process-wide metrics ([`Metrics::install`]).
pub fn observe(event: &Event) {
    Metrics::install().observe(event);
}

fn describe() {
    for m in CATALOGUE {
        match m.kind {
            "counter" => metrics::describe_counter!(m.name, m.help),
            "gauge" => metrics::describe_gauge!(m.name, m.help),
            _ => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect()
}

fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    metrics::counter!(name, labels(pairs)).increment(1);
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The one match over the payloads: what each event counts.
fn count(ev: &Event, floats: &FloatCounters) {
    let project = ev.project.as_str();
    let p = [("project", project)];
    inc(
        EVENTS,
        &[("project", project), ("kind", ev.kind().as_str())],
    );
    match &ev.payload {
        Payload::AttemptFinished(a) => inc(
            ATTEMPTS,
            &[
                ("project", project),
                ("kind", a.kind.as_str()),
                ("outcome", a.status.as_str()),
            ],
        ),
        Payload::StageFinished(s) if !s.skipped => {
            let l = [
                ("project", project),
                ("stage", s.stage.as_str()),
                ("ok", yes_no(s.ok)),
            ];
            metrics::histogram!(STAGE_DURATION, labels(&l)).record(seconds(s.duration_ms));
        }
        Payload::ModelCall(c) => model_call(project, c, floats),
        Payload::ModelTry(t) => model_try(project, t),
        Payload::ProviderHealth(h) => provider_health(h),
        Payload::ToolCall(t) => tool_call(project, t),
        Payload::ToolRefused(_) => inc(TOOL_REFUSALS, &p),
        Payload::VerificationFinished(v) => verification(project, v),
        Payload::VerdictRecorded(v) => inc(
            VERDICTS,
            &[("project", project), ("passed", yes_no(v.passed))],
        ),
        Payload::Merged(m) => metrics::histogram!(MERGE_BATCH, labels(&p)).record(m.batch as f64),
        Payload::MergeRejected(_) => inc(MERGE_REJECTIONS, &p),
        Payload::InfraFailure(_) => inc(INFRA_FAILURES, &p),
        Payload::PatrolInterrupted(_) => inc(PATROL_INTERRUPTIONS, &p),
        Payload::HumanAsked(_) => inc(ESCALATIONS, &p),
        Payload::TaskCreated(_) => inc(TASKS_CREATED, &p),
        Payload::StatusChanged(c) => match c.to {
            TaskStatus::Merged => inc(TASKS_MERGED, &p),
            TaskStatus::Failed => inc(TASKS_FAILED, &p),
            TaskStatus::Cancelled => inc(TASKS_CANCELLED, &p),
            _ => {}
        },
        Payload::ProjectPaused(_) => inc(PROJECT_PAUSES, &p),
        Payload::CandidatesStarted(c) => {
            metrics::counter!(CANDIDATES, labels(&p)).increment(u64::from(c.candidates))
        }
        Payload::CandidatesRanked(r) => inc(
            CANDIDATE_RANKINGS,
            &[("project", project), ("method", ranking_method(&r.method))],
        ),
        Payload::RefineIteration(i) => inc(
            REFINE_ITERATIONS,
            &[("project", project), ("outcome", i.outcome.as_str())],
        ),
        Payload::RefineStopped(s) => inc(
            REFINE_STOPS,
            &[
                ("project", project),
                ("reason", s.reason.as_str()),
                ("passed", yes_no(s.passed)),
            ],
        ),
        Payload::ConflictResolved(c) => inc(
            CONFLICT_RESOLUTIONS,
            &[("project", project), ("outcome", resolution(c.outcome))],
        ),
        Payload::ProjectCreated(_) => inc(PROJECTS_CREATED, &p),
        Payload::ProjectArchived(_) => inc(PROJECTS_ARCHIVED, &p),
        _ => {}
    }
}

/// The ranking's method as a label: the four the engine writes, anything
/// else `other` (a label value is never free text).
fn ranking_method(method: &str) -> &'static str {
    ["judge", "scores", "only", "none"]
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

/// A resolution's outcome as its wire name.
pub(crate) fn resolution(outcome: ResolutionOutcome) -> &'static str {
    match outcome {
        ResolutionOutcome::Resolved => "resolved",
        ResolutionOutcome::Failed => "failed",
        ResolutionOutcome::Stopped => "stopped",
    }
}

fn model_call(project: &str, c: &orch_protocol::ModelCall, floats: &FloatCounters) {
    let base = [
        ("project", project),
        ("role", c.role.as_str()),
        ("provider", c.provider.as_str()),
        ("model", c.model.as_str()),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut l = base.to_vec();
        l.push((k, v));
        labels(&l)
    };
    metrics::counter!(MODEL_CALLS, with("ok", yes_no(c.ok))).increment(1);
    for (kind, n) in [
        ("input", c.input_tokens),
        ("output", c.output_tokens),
        ("cached", c.cached_tokens),
    ] {
        metrics::counter!(MODEL_TOKENS, with("kind", kind)).increment(n);
    }
    metrics::histogram!(MODEL_CALL_DURATION, labels(&base)).record(seconds(c.duration_ms));
    floats.add(MODEL_COST, &base, c.cost_usd);
}

fn model_try(project: &str, t: &orch_protocol::ModelTry) {
    if t.error.is_none() {
        return;
    }
    let l = [
        ("project", project),
        ("provider", t.provider.as_str()),
        ("retryable", yes_no(t.retryable)),
    ];
    inc(MODEL_TRY_ERRORS, &l);
    if t.wait_ms.is_some() && t.attempt < t.max_attempts {
        inc(MODEL_RETRIES, &l[..2]);
    }
}

fn provider_health(h: &orch_protocol::ProviderHealth) {
    let state = match h.change {
        HealthChange::CircuitClosed => 0.0,
        HealthChange::CircuitHalfOpen => 1.0,
        HealthChange::CircuitOpened => 2.0,
        HealthChange::Fallback => {
            let l = [
                ("provider", h.provider.as_str()),
                ("to_provider", h.to_provider.as_deref().unwrap_or("")),
                ("to_model", h.to_model.as_deref().unwrap_or("")),
            ];
            return inc(FALLBACKS, &l);
        }
    };
    metrics::gauge!(CIRCUIT_STATE, labels(&[("provider", h.provider.as_str())])).set(state);
}

fn tool_call(project: &str, t: &orch_protocol::ToolCall) {
    let tool = TOOLS
        .iter()
        .find(|k| **k == t.tool)
        .copied()
        .unwrap_or("other");
    inc(
        TOOL_CALLS,
        &[("project", project), ("tool", tool), ("ok", yes_no(t.ok))],
    );
    if tool == "run" {
        let l = [("project", project), ("stage", "work"), ("kind", "run")];
        metrics::histogram!(SANDBOX_EXEC, labels(&l)).record(seconds(t.duration_ms));
    }
}

fn verification(project: &str, v: &orch_protocol::VerificationFinished) {
    let stage = v.stage.map(|s| s.as_str()).unwrap_or("verify");
    inc(
        VERIFICATIONS,
        &[
            ("project", project),
            ("stage", stage),
            ("passed", yes_no(v.passed)),
        ],
    );
    for step in &v.steps {
        let l = [
            ("project", project),
            ("stage", stage),
            ("kind", step.kind.as_str()),
        ];
        metrics::histogram!(SANDBOX_EXEC, labels(&l)).record(seconds(step.duration_ms));
    }
}

/// Sets the gauges read from the store. A failed read is counted and the
/// gauge keeps its last value.
fn refresh(store: &dyn StateStore, config: &Config) {
    let mut names: BTreeSet<String> = config.projects.iter().map(|p| p.name.clone()).collect();
    let paused: BTreeMap<String, bool> = match store.projects() {
        Ok(rows) => rows.into_iter().map(|r| (r.name, r.paused)).collect(),
        Err(e) => return store_error("the projects", &e),
    };
    names.extend(paused.keys().cloned());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for name in &names {
        let p = labels(&[("project", name)]);
        for counter in PER_PROJECT_COUNTERS {
            // A series that exists at 0 before its first event, so that
            // `increase()` sees that first event too.
            metrics::counter!(*counter, p.clone()).increment(0);
        }
        let flag = if paused.get(name).copied().unwrap_or(false) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(PROJECT_PAUSED, p.clone()).set(flag);
        match store.spent_on_day(name, &today) {
            Ok(usd) => metrics::gauge!(SPEND_TODAY, p.clone()).set(usd),
            Err(e) => store_error("today's spend", &e),
        }
        match store.count_by_status(name) {
            Ok(counts) => task_gauges(name, &counts),
            Err(e) => store_error("the task counts", &e),
        }
    }
}

fn task_gauges(project: &str, counts: &BTreeMap<String, u64>) {
    for status in TaskStatus::ALL {
        let n = counts.get(status.as_str()).copied().unwrap_or(0);
        let l = [("project", project), ("status", status.as_str())];
        metrics::gauge!(TASKS, labels(&l)).set(n as f64);
    }
    let queued: u64 = [TaskStatus::Passed, TaskStatus::Merging]
        .iter()
        .map(|s| counts.get(s.as_str()).copied().unwrap_or(0))
        .sum();
    metrics::gauge!(MERGE_QUEUE_DEPTH, labels(&[("project", project)])).set(queued as f64);
}

fn store_error(what: &str, e: &orch_state::StateError) {
    tracing::warn!("metrics: cannot read {what} from the store: {e}");
    metrics::counter!(SCRAPE_ERRORS).increment(1);
}

/// One fractional counter's series: label pairs → value.
type Series = BTreeMap<Vec<(String, String)>, f64>;

/// Counters with fractional values, rendered after the exporter's text.
#[derive(Default)]
struct FloatCounters {
    /// name → series.
    values: Mutex<BTreeMap<&'static str, Series>>,
}

impl FloatCounters {
    fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        if !by.is_finite() || by < 0.0 {
            return;
        }
        let key: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        *values.entry(name).or_default().entry(key).or_insert(0.0) += by;
    }

    fn render_into(&self, out: &mut String) {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, series) in values.iter() {
            let help = CATALOGUE
                .iter()
                .find(|m| m.name == *name)
                .map(|m| m.help)
                .unwrap_or("");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (key, value) in series {
                let l: Vec<String> = key
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
            }
            out.push('\n');
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use orch_core::{AttemptKind, AttemptStatus, IterationOutcome, NewTask};
    use orch_protocol as pr;

    /// The value of the one series `name` whose labels include `pairs`
    /// (summed when several match), None when none does.
    pub(crate) fn sample(text: &str, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                continue;
            }
            let rest = rest.trim_end_matches('}');
            let have: Vec<(&str, &str)> = rest
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k, v.trim_matches('"'))
                })
                .collect();
            if pairs.iter().all(|p| have.contains(p)) {
                *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
            }
        }
        found
    }

    fn ev(payload: impl Into<Payload>) -> Event {
        Event::new("calc", payload, "m")
    }

    fn finished(status: AttemptStatus) -> Event {
        finished_as(AttemptKind::Work, status)
    }

    fn finished_as(kind: AttemptKind, status: AttemptStatus) -> Event {
        ev(pr::AttemptFinished {
            attempt_id: 1,
            number: 1,
            status,
            kind,
            turns: 1,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            error: None,
            task_attempts: 1,
            infra_failures: 0,
        })
    }

    fn stage(stage: pr::Stage, ms: u64, skipped: bool) -> Event {
        let mut s = pr::StageFinished::new(stage, Some(1), Duration::from_millis(ms), true);
        s.skipped = skipped;
        ev(s)
    }

    fn worker_call(cost: f64) -> Event {
        ev(pr::ModelCall {
            role: "worker".into(),
            provider: "replay".into(),
            model: "worker".into(),
            input_tokens: 100,
            output_tokens: 20,
            cached_tokens: 5,
            cost_usd: cost,
            duration_ms: 1200,
            ok: true,
            ..Default::default()
        })
    }

    fn render(m: &Metrics) -> String {
        m.render(
            &orch_state::Store::open_in_memory().unwrap(),
            &Config::default(),
        )
    }

    #[test]
    fn attempts_stages_and_model_calls_are_counted_with_their_labels() {
        let m = Metrics::private();
        for e in [
            finished(AttemptStatus::Passed),
            finished(AttemptStatus::Passed),
            finished(AttemptStatus::Failed),
            stage(pr::Stage::Work, 1500, false),
            stage(pr::Stage::Work, 500, false),
            stage(pr::Stage::Verify, 0, true),
            worker_call(0.25),
            worker_call(0.5),
        ] {
            m.observe(&e);
        }
        let t = render(&m);
        let outcome = |o| sample(&t, ATTEMPTS, &[("project", "calc"), ("outcome", o)]);
        assert_eq!(outcome("passed"), Some(2.0), "{t}");
        assert_eq!(outcome("failed"), Some(1.0));
        assert_eq!(outcome("error"), None);
        assert_eq!(
            sample(&t, ATTEMPTS, &[("kind", "work"), ("outcome", "passed")]),
            Some(2.0),
            "{t}"
        );
        let work = [("project", "calc"), ("stage", "work")];
        assert_eq!(
            sample(&t, "orch_stage_duration_seconds_count", &work),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, "orch_stage_duration_seconds_sum", &work),
            Some(2.0)
        );
        // 0.5 s and 1.5 s: one at or under 1 s, both under 2.5 s.
        let le = |b| {
            sample(
                &t,
                "orch_stage_duration_seconds_bucket",
                &[work[1], ("le", b)],
            )
        };
        assert_eq!((le("1"), le("2.5")), (Some(1.0), Some(2.0)), "{t}");
        // A skipped stage is not a duration.
        assert_eq!(
            sample(
                &t,
                "orch_stage_duration_seconds_count",
                &[("stage", "verify")]
            ),
            None
        );
        let worker = [
            ("role", "worker"),
            ("provider", "replay"),
            ("model", "worker"),
        ];
        assert_eq!(sample(&t, MODEL_CALLS, &worker), Some(2.0));
        let tokens = |k| sample(&t, MODEL_TOKENS, &[worker[0], ("kind", k)]);
        assert_eq!(
            (tokens("input"), tokens("output"), tokens("cached")),
            (Some(200.0), Some(40.0), Some(10.0))
        );
        assert_eq!(sample(&t, MODEL_COST, &worker), Some(0.75));
        assert!(
            t.contains("# TYPE orch_model_cost_usd_total counter"),
            "{t}"
        );
        assert_eq!(
            sample(&t, "orch_model_call_duration_seconds_sum", &worker),
            Some(2.4)
        );
        assert_eq!(sample(&t, EVENTS, &[("kind", "model_call")]), Some(2.0));
    }

    #[test]
    fn retries_circuits_merges_sandbox_runs_and_task_outcomes_are_counted() {
        let m = Metrics::private();
        let try_ = |error: Option<&str>, attempt, wait_ms| {
            ev(pr::ModelTry {
                provider: "openai".into(),
                attempt,
                max_attempts: 3,
                error: error.map(str::to_string),
                retryable: true,
                wait_ms,
                ..Default::default()
            })
        };
        let health = |change| {
            ev(pr::ProviderHealth {
                change,
                provider: "openai".into(),
                ..Default::default()
            })
        };
        let status = |to| {
            ev(pr::StatusChanged {
                from: TaskStatus::Merging,
                to,
                note: None,
            })
        };
        let tool = |name: &str, ms| {
            ev(pr::ToolCall {
                tool: name.into(),
                ok: true,
                duration_ms: ms,
                ..Default::default()
            })
        };
        let steps = vec![
            pr::StepSummary {
                kind: "test".into(),
                duration_ms: 2000,
                ..Default::default()
            },
            pr::StepSummary {
                kind: "lint".into(),
                duration_ms: 100,
                ..Default::default()
            },
        ];
        for e in [
            try_(Some("HTTP 503"), 1, Some(10)),
            try_(Some("HTTP 503"), 2, Some(20)),
            try_(Some("HTTP 503"), 3, None),
            try_(None, 1, None),
            health(HealthChange::CircuitOpened),
            health(HealthChange::CircuitHalfOpen),
            ev(pr::Merged {
                batch: 3,
                ..Default::default()
            }),
            tool("run", 250),
            tool("made_up_tool", 1),
            ev(pr::VerificationFinished {
                passed: true,
                steps,
                ..Default::default()
            }),
            ev(pr::HumanAsked {
                question: "which?".into(),
            }),
            ev(pr::PatrolInterrupted::default()),
            ev(pr::ProjectPaused::default()),
            status(TaskStatus::Merged),
            status(TaskStatus::Failed),
            status(TaskStatus::Pending),
        ] {
            m.observe(&e);
        }
        let t = render(&m);
        let openai = [("provider", "openai")];
        assert_eq!(sample(&t, MODEL_TRY_ERRORS, &openai), Some(3.0), "{t}");
        assert_eq!(
            sample(&t, MODEL_RETRIES, &openai),
            Some(2.0),
            "the last try is not retried"
        );
        assert_eq!(
            sample(&t, CIRCUIT_STATE, &openai),
            Some(1.0),
            "half-open after open"
        );
        m.observe(&health(HealthChange::CircuitClosed));
        assert_eq!(sample(&render(&m), CIRCUIT_STATE, &openai), Some(0.0));
        assert_eq!(sample(&t, "orch_merge_batch_size_sum", &[]), Some(3.0));
        assert_eq!(
            sample(&t, "orch_merge_batch_size_bucket", &[("le", "2")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "orch_merge_batch_size_bucket", &[("le", "3")]),
            Some(1.0)
        );
        let exec = |kind| {
            sample(
                &t,
                "orch_sandbox_exec_duration_seconds_sum",
                &[("kind", kind)],
            )
        };
        assert_eq!(
            (exec("run"), exec("test"), exec("lint")),
            (Some(0.25), Some(2.0), Some(0.1))
        );
        assert_eq!(
            sample(
                &t,
                "orch_sandbox_exec_duration_seconds_count",
                &[("stage", "verify")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&t, TOOL_CALLS, &[("tool", "other")]),
            Some(1.0),
            "a made-up name is not a label"
        );
        assert_eq!(
            sample(
                &t,
                VERIFICATIONS,
                &[("stage", "verify"), ("passed", "true")]
            ),
            Some(1.0)
        );
        for (name, n) in [
            (ESCALATIONS, 1.0),
            (PATROL_INTERRUPTIONS, 1.0),
            (PROJECT_PAUSES, 1.0),
            (TASKS_MERGED, 1.0),
            (TASKS_FAILED, 1.0),
        ] {
            assert_eq!(sample(&t, name, &[("project", "calc")]), Some(n), "{name}");
        }
        assert_eq!(sample(&t, TASKS_CANCELLED, &[]), None);
    }

    #[test]
    fn resolver_attempts_are_counted_by_their_kind_not_as_work() {
        let m = Metrics::private();
        for e in [
            finished_as(AttemptKind::Work, AttemptStatus::Passed),
            finished_as(AttemptKind::Resolve, AttemptStatus::Passed),
            finished_as(AttemptKind::Resolve, AttemptStatus::Failed),
        ] {
            m.observe(&e);
        }
        let t = render(&m);
        let n = |kind, outcome| sample(&t, ATTEMPTS, &[("kind", kind), ("outcome", outcome)]);
        assert_eq!(
            (
                n("work", "passed"),
                n("work", "failed"),
                n("resolve", "passed"),
                n("resolve", "failed")
            ),
            (Some(1.0), None, Some(1.0), Some(1.0)),
            "{t}"
        );
        // An end recorded before kinds existed reads as work.
        let old = Event::payload_from_parts(
            "attempt_finished",
            serde_json::json!({"attempt_id": 9, "number": 1, "status": "failed"}),
        )
        .unwrap();
        m.observe(&Event::new("calc", old, "m"));
        let t = render(&m);
        assert_eq!(
            sample(&t, ATTEMPTS, &[("kind", "work"), ("outcome", "failed")]),
            Some(1.0),
            "{t}"
        );
    }

    #[test]
    fn candidates_refinement_conflicts_and_archives_are_counted() {
        let m = Metrics::private();
        let iteration = |n, outcome| {
            ev(pr::RefineIteration {
                attempt_id: 1,
                number: 1,
                iteration: n,
                score: Some(6.0),
                outcome,
                best_score: Some(6.0),
                best_iteration: 1,
                commit: None,
                reverted_to: None,
            })
        };
        let resolved = |outcome| {
            ev(pr::ConflictResolved {
                outcome,
                ..Default::default()
            })
        };
        let ranked = |method: &str| {
            ev(pr::CandidatesRanked {
                method: method.into(),
                ..Default::default()
            })
        };
        for e in [
            ev(pr::CandidatesStarted {
                candidates: 3,
                slots: vec![],
            }),
            ev(pr::CandidatesStarted {
                candidates: 2,
                slots: vec![],
            }),
            ranked("judge"),
            ranked("none"),
            ranked("made up"),
            iteration(1, IterationOutcome::Kept),
            iteration(2, IterationOutcome::Reverted),
            iteration(3, IterationOutcome::Reverted),
            iteration(4, IterationOutcome::Unchanged),
            ev(pr::RefineStopped {
                attempt_id: 1,
                number: 1,
                reason: pr::RefineStop::Plateau,
                iterations: 4,
                best_iteration: 1,
                best_score: Some(6.0),
                passed: false,
                detail: None,
            }),
            ev(pr::ConflictResolving::default()),
            resolved(pr::ResolutionOutcome::Resolved),
            resolved(pr::ResolutionOutcome::Failed),
            resolved(pr::ResolutionOutcome::Failed),
            ev(pr::ProjectCreated::default()),
            ev(pr::ProjectArchived::default()),
        ] {
            m.observe(&e);
        }
        let t = render(&m);
        assert_eq!(
            sample(&t, CANDIDATES, &[("project", "calc")]),
            Some(5.0),
            "{t}"
        );
        let method = |x| sample(&t, CANDIDATE_RANKINGS, &[("method", x)]);
        assert_eq!(
            (
                method("judge"),
                method("none"),
                method("other"),
                method("scores")
            ),
            (Some(1.0), Some(1.0), Some(1.0), None),
            "free text is not a label: {t}"
        );
        let it = |x| sample(&t, REFINE_ITERATIONS, &[("outcome", x)]);
        assert_eq!(
            (it("kept"), it("reverted"), it("unchanged")),
            (Some(1.0), Some(2.0), Some(1.0))
        );
        assert_eq!(
            sample(
                &t,
                REFINE_STOPS,
                &[("reason", "plateau"), ("passed", "false")]
            ),
            Some(1.0)
        );
        let res = |x| sample(&t, CONFLICT_RESOLUTIONS, &[("outcome", x)]);
        assert_eq!(
            (res("resolved"), res("failed"), res("stopped")),
            (Some(1.0), Some(2.0), None),
            "a resolution is counted at its end"
        );
        assert_eq!(
            sample(&t, PROJECTS_CREATED, &[("project", "calc")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, PROJECTS_ARCHIVED, &[("project", "calc")]),
            Some(1.0)
        );
    }

    #[test]
    fn gauges_are_read_from_the_store_at_scrape_time() {
        let store = orch_state::Store::open_in_memory().unwrap();
        store.ensure_project("calc", "/repo").unwrap();
        let add = |title: &str| {
            store
                .add_task(&NewTask {
                    project: "calc".into(),
                    title: title.into(),
                    ..Default::default()
                })
                .unwrap()
        };
        let (a, b, _c) = (add("a"), add("b"), add("c"));
        assert!(store
            .transition(&a.id, &[TaskStatus::Pending], TaskStatus::Passed, "t")
            .unwrap());
        assert!(store
            .transition(&b.id, &[TaskStatus::Pending], TaskStatus::Merging, "t")
            .unwrap());
        store
            .record_model_call(&orch_state::ModelCall {
                at: chrono::Utc::now(),
                project: "calc".into(),
                task_id: None,
                attempt_id: None,
                role: "worker".into(),
                provider: "replay".into(),
                model: "worker".into(),
                input_tokens: 1,
                output_tokens: 1,
                cached_tokens: 0,
                cost_usd: 1.5,
                duration_ms: 1,
                ok: true,
                error: None,
            })
            .unwrap();
        store.set_paused("calc", true, Some("by hand")).unwrap();
        let mut config = Config::default();
        let idle =
            serde_json::json!({"name": "idle", "path": "idle", "worker_model": "sim:worker"});
        config.projects.push(serde_json::from_value(idle).unwrap());
        let m = Metrics::private();
        let t = m.render(&store, &config);
        let tasks = |s| sample(&t, TASKS, &[("project", "calc"), ("status", s)]);
        assert_eq!(
            (
                tasks("pending"),
                tasks("passed"),
                tasks("merging"),
                tasks("merged")
            ),
            (Some(1.0), Some(1.0), Some(1.0), Some(0.0)),
            "{t}"
        );
        assert_eq!(
            sample(&t, MERGE_QUEUE_DEPTH, &[("project", "calc")]),
            Some(2.0)
        );
        assert_eq!(sample(&t, SPEND_TODAY, &[("project", "calc")]), Some(1.5));
        assert_eq!(
            sample(&t, PROJECT_PAUSED, &[("project", "calc")]),
            Some(1.0)
        );
        // A configured project with nothing in the store yet reads as zeros.
        assert_eq!(sample(&t, TASKS, &[("project", "idle")]), Some(0.0));
        assert_eq!(
            sample(&t, PROJECT_PAUSED, &[("project", "idle")]),
            Some(0.0)
        );
        // Its counters exist at 0, so the first merge is an increase.
        assert_eq!(sample(&t, TASKS_MERGED, &[("project", "idle")]), Some(0.0));
        // The next scrape sees the next state.
        assert!(store
            .transition(&a.id, &[TaskStatus::Passed], TaskStatus::Merged, "t")
            .unwrap());
        store.set_paused("calc", false, None).unwrap();
        let t = m.render(&store, &config);
        assert_eq!(
            sample(&t, MERGE_QUEUE_DEPTH, &[("project", "calc")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, PROJECT_PAUSED, &[("project", "calc")]),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn follow_counts_what_the_store_commits_until_stopped() {
        let store = Arc::new(orch_state::Store::open_in_memory().unwrap());
        store.ensure_project("calc", "/repo").unwrap();
        let m = Metrics::private();
        let stop = CancellationToken::new();
        let task = m.follow(store.clone(), stop.clone());
        let t = store
            .add_task(&NewTask {
                project: "calc".into(),
                title: "t".into(),
                ..Default::default()
            })
            .unwrap();
        store.fail_task(&t.id, "gave up").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let created = loop {
            let text = m.render(&store, &Config::default());
            if sample(&text, TASKS_FAILED, &[("project", "calc")]) == Some(1.0) {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not followed:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            sample(&created, TASKS_CREATED, &[("project", "calc")]),
            Some(1.0)
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn install_twice_gives_the_one_process_wide_handle() {
        let a = Metrics::install();
        let b = Metrics::install();
        assert!(
            a.local.is_none(),
            "the first install owns the global recorder"
        );
        let e = Event::new("install-test", pr::HumanAsked::default(), "m");
        observe(&e);
        a.observe(&e);
        let t = render(&b);
        assert_eq!(
            sample(&t, ESCALATIONS, &[("project", "install-test")]),
            Some(2.0),
            "{t}"
        );
        // A private set sees none of it.
        assert_eq!(sample(&render(&Metrics::private()), ESCALATIONS, &[]), None);
    }

    #[test]
    fn fractional_counters_escape_label_values_and_skip_bad_amounts() {
        let f = FloatCounters::default();
        f.add(MODEL_COST, &[("model", "a\"b\\c\nd")], 0.5);
        f.add(MODEL_COST, &[("model", "x")], f64::NAN);
        f.add(MODEL_COST, &[("model", "x")], -1.0);
        let mut out = String::new();
        f.render_into(&mut out);
        assert!(
            out.contains(r#"orch_model_cost_usd_total{model="a\"b\\c\nd"} 0.5"#),
            "{out}"
        );
        assert!(!out.contains("model=\"x\""), "{out}");
    }

    #[test]
    fn the_readme_documents_every_metric() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let names: BTreeSet<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), CATALOGUE.len(), "a name is listed twice");
        for m in CATALOGUE {
            assert!(m.name.starts_with("orch_"), "{}", m.name);
            let row = format!("| `{}` | {} |", m.name, m.kind);
            assert!(
                readme.contains(&row),
                "README.md's Metrics table lacks the row starting {row}"
            );
        }
    }
}
