//! The page layout and the overview: every project with its pause state,
//! the queue by status, the workers running now, the merge queue, tasks
//! that wait for a person, recent tasks, today's spending against the
//! budgets, the plots, and the form that adds a task.
//!
//! The overview's live part (everything but the form) is also served
//! alone at `/fragments/overview`, which the script re-fetches when an
//! event arrives.

use super::forms::AddTaskDraft;
use super::plots::{duration_text, BarChart, Series, Unit};
use super::session::{csrf_token, logged_in, Session};
use super::Dash;
use crate::error::ApiError;
use crate::views::{self, CostDoc, StatusDoc};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use orch_core::{Attempt, AttemptKind, AttemptStatus, Task, TaskStatus, TaskType};
use orch_state::dashboard::{EventLine, StatusSpan};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Tasks listed under "Recent tasks".
const RECENT: usize = 30;
/// Days of spending in the cost plot.
const COST_DAYS: u64 = 14;

/// What the header shows: the logout button (with its CSRF token) when
/// the server has a token and the browser gave it.
pub(crate) struct Nav {
    logout_csrf: Option<String>,
}

impl Nav {
    pub(crate) fn anonymous() -> Nav {
        Nav { logout_csrf: None }
    }

    pub(crate) fn for_session(
        dash: &Dash,
        session: &Session,
        headers: &axum::http::HeaderMap,
    ) -> Nav {
        let show = dash.app.token_digest.is_some() && logged_in(dash, headers);
        Nav {
            logout_csrf: show.then(|| csrf_token(&dash.secret, &session.id)),
        }
    }
}

/// The HTML document around every page.
pub(crate) fn layout(title: &str, nav: &Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · orch" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "orch" }
                        a href="/" { "Overview" }
                        a href="/#add-task" { "Add a task" }
                        a href="/#plots" { "Plots" }
                    }
                    p #live-status role="status" aria-live="polite" { "Live updates need JavaScript; reload to refresh." }
                    @if let Some(csrf) = &nav.logout_csrf {
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// An HTML answer: no caching, no framing, scripts and styles from this
/// server only.
pub(crate) fn html_page(status: StatusCode, markup: Markup) -> Response {
    fragment_response(status, markup)
}

/// Like [`html_page`], for a fragment.
pub(crate) fn fragment_response(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup.into_string()).into_response();
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    resp
}

/// A page for an error that stopped a page from being built.
pub(crate) fn error_page(err: &ApiError, nav: &Nav) -> Response {
    let body = html! {
        h1 { "Something went wrong" }
        p.error role="alert" { (err.message) }
        p { a href="/" { "Back to the overview" } }
    };
    html_page(err.status, layout("Error", nav, body))
}

/// A message above a page: what an action did, or why it failed.
pub(crate) enum Banner {
    Notice(Markup),
    Error(String),
}

pub(crate) fn banner(b: Option<&Banner>) -> Markup {
    html! {
        @match b {
            Some(Banner::Notice(m)) => p.notice role="status" { (m) },
            Some(Banner::Error(e)) => p.error role="alert" { (e) },
            None => {},
        }
    }
}

/// `UTC` time, as a `<time>` element.
pub(crate) fn when(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// A task or attempt status as a labelled badge (the text says it; the
/// colour only repeats it).
pub(crate) fn status_badge(status: &str) -> Markup {
    html! {
        span class=(format!("status status-{status}")) data-status=(status) { (status.replace('_', " ")) }
    }
}

pub(crate) fn usd(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// The time since `from`, which the script keeps counting.
pub(crate) fn elapsed(from: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let secs = (now - from).num_seconds().max(0);
    html! {
        span.elapsed data-since=(from.to_rfc3339()) { (elapsed_text(secs)) }
    }
}

fn elapsed_text(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub(crate) fn task_link(t: &Task) -> Markup {
    html! {
        a href=(format!("/tasks/{}", t.id)) { (t.title) }
        " " code.id { (short_id(t.id.as_str())) }
    }
}

pub(crate) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Today's spending of one project, and its budgets.
struct Spend {
    project: String,
    today_usd: f64,
    daily_budget: Option<f64>,
    per_task_budget: Option<f64>,
}

/// Everything the overview shows, read in one go.
pub(crate) struct OverviewData {
    now: DateTime<Utc>,
    status: StatusDoc,
    spend: Vec<Spend>,
    flying: Vec<(Task, Option<Attempt>, Option<EventLine>)>,
    merge_queue: Vec<Task>,
    waiting: Vec<Task>,
    recent: Vec<Task>,
    cost: CostDoc,
    merged: Vec<(String, u64)>,
    spans: Vec<StatusSpan>,
    attempts: BTreeMap<String, Vec<Attempt>>,
    pub(crate) last_event: i64,
    pub(crate) projects: Vec<String>,
}

/// Reads the overview's data from the store.
pub(crate) async fn load_overview(dash: &Dash) -> Result<OverviewData, ApiError> {
    let app = dash.app.clone();
    crate::blocking(move || {
        let store = &app.store;
        let now = Utc::now();
        let today = now.format("%Y-%m-%d").to_string();
        let status = views::status(&app.config, store)?;
        let spend = app
            .config
            .projects
            .iter()
            .map(|p| {
                Ok(Spend {
                    project: p.name.clone(),
                    today_usd: store.spent_on_day(&p.name, &today)?,
                    daily_budget: p.daily_budget_usd,
                    per_task_budget: p.max_budget_per_task_usd,
                })
            })
            .collect::<Result<Vec<_>, orch_state::StateError>>()?;
        let in_flight = store.tasks_in_flight()?;
        let ids: Vec<_> = in_flight.iter().map(|(t, _)| t.id.clone()).collect();
        let mut last = store.last_events(&ids)?;
        let flying = in_flight
            .into_iter()
            .map(|(t, a)| {
                let e = last.remove(t.id.as_str());
                (t, a, e)
            })
            .collect();
        let recent = store.recent_tasks(None, RECENT)?;
        let recent_ids: Vec<_> = recent.iter().map(|t| t.id.clone()).collect();
        let since = views::parse_since(&format!("{COST_DAYS}d"), now.date_naive())
            .map_err(ApiError::internal)?;
        Ok(OverviewData {
            now,
            status,
            spend,
            flying,
            merge_queue: store.tasks(None, Some(TaskStatus::Passed))?,
            waiting: store.tasks(None, Some(TaskStatus::NeedsHuman))?,
            attempts: store.attempts_of(&recent_ids)?,
            recent,
            cost: views::cost(store, None, Some(since))?,
            merged: store.merged_per_hour(now - chrono::Duration::hours(24))?,
            spans: store.status_spans(now - chrono::Duration::days(7))?,
            last_event: store.last_event_id()?,
            projects: app.config.projects.iter().map(|p| p.name.clone()).collect(),
        })
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
    task: Option<String>,
    project: Option<String>,
}

/// The notice for `?done=…` after an action redirected here.
pub(crate) fn done_banner(q: &Done) -> Option<Banner> {
    let project = q.project.as_deref().unwrap_or("the project");
    let task = q.task.as_deref().unwrap_or("");
    let link = html! { a href=(format!("/tasks/{task}")) { code { (short_id(task)) } } };
    let m = match q.done.as_deref()? {
        "added" => {
            html! { "Task " (link) " added; work on it starts now unless the project is paused." }
        }
        "answered" => html! { "Answered; the task is pending again and work on it starts now." },
        "cancelled" => html! { "Task cancelled; a running attempt stops within a moment." },
        "retried" => html! { "The task is pending again and gets one more attempt." },
        "paused" => {
            html! { "Project " (project) " paused: running attempts finish, no new work starts." }
        }
        "resumed" => html! { "Project " (project) " resumed." },
        "started" => html! { "Work on " (project) " started." },
        "running" => html! { "Work on " (project) " was already in progress." },
        _ => return None,
    };
    Some(Banner::Notice(m))
}

/// `GET /`.
pub(crate) async fn overview(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: axum::http::HeaderMap,
    Query(q): Query<Done>,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    match load_overview(&dash).await {
        Ok(data) => {
            let draft = AddTaskDraft::empty(data.projects.first().cloned());
            let page = overview_page(&dash, &session, &data, &draft, done_banner(&q).as_ref());
            html_page(StatusCode::OK, layout("Overview", &nav, page))
        }
        Err(e) => error_page(&e, &nav),
    }
}

/// `GET /fragments/overview`.
pub(crate) async fn overview_fragment(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
) -> Response {
    match load_overview(&dash).await {
        Ok(data) => fragment_response(StatusCode::OK, overview_live(&dash, &session, &data)),
        Err(e) => fragment_response(e.status, html! { p.error role="alert" { (e.message) } }),
    }
}

/// The whole overview: the live parts (status, plots) and the add-task form.
pub(crate) fn overview_page(
    dash: &Dash,
    session: &Session,
    data: &OverviewData,
    draft: &AddTaskDraft,
    b: Option<&Banner>,
) -> Markup {
    html! {
        h1 { "Overview" }
        (banner(b))
        div.columns {
            div #live data-live="/fragments/overview" data-after=(data.last_event) {
                (overview_live(dash, session, data))
            }
            aside {
                (draft.render(&csrf_token(&dash.secret, &session.id), &data.projects))
            }
        }
        div #live-plots data-live="/fragments/overview/plots" { (plots_section(data)) }
    }
}

/// `GET /fragments/overview/plots`.
pub(crate) async fn plots_fragment(State(dash): State<Dash>) -> Response {
    match load_overview(&dash).await {
        Ok(data) => fragment_response(StatusCode::OK, plots_section(&data)),
        Err(e) => fragment_response(e.status, html! { p.error role="alert" { (e.message) } }),
    }
}

/// The overview's live part.
fn overview_live(dash: &Dash, session: &Session, d: &OverviewData) -> Markup {
    let csrf = csrf_token(&dash.secret, &session.id);
    html! {
        (projects_section(d, &csrf))
        (workers_section(d))
        (waiting_section(d))
        (merge_queue_section(d))
        (recent_section(d))
        (spending_section(d))
    }
}

fn projects_section(d: &OverviewData, csrf: &str) -> Markup {
    html! {
        section #projects aria-labelledby="h-projects" {
            h2 #h-projects { "Projects" }
            @for p in &d.status.projects {
                article.card.project data-project=(p.name) {
                    h3 { (p.name) " "
                        @if p.paused { span.status.status-paused { "paused" } }
                        @else { span.status.status-active { "active" } }
                    }
                    p.muted { code { (p.path) } }
                    @if p.paused {
                        p { "Paused: " (p.pause_reason.as_deref().unwrap_or("no reason given")) }
                    }
                    table.queue {
                        caption { "Queue by status" }
                        thead { tr { @for s in TaskStatus::ALL { th scope="col" { (s.as_str().replace('_', " ")) } } } }
                        tbody { tr {
                            @for s in TaskStatus::ALL {
                                td data-count=(s.as_str()) { (p.tasks.get(s.as_str()).copied().unwrap_or(0)) }
                            }
                        } }
                    }
                    p.muted { "All time: " (p.input_tokens) " tokens in, " (p.output_tokens) " out, " (usd(p.cost_usd)) "." }
                    div.actions {
                        @let base = format!("/actions/projects/{}", p.name);
                        form.inline method="post" action=(format!("{base}/run")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Start work now" }
                        }
                        @if p.paused {
                            form.inline method="post" action=(format!("{base}/resume")) {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Resume" }
                            }
                        } @else {
                            form.inline method="post" action=(format!("{base}/pause")) {
                                input type="hidden" name="csrf" value=(csrf);
                                @let rid = format!("reason-{}", p.name);
                                label for=(rid) { "Reason" }
                                input id=(rid) type="text" name="reason" placeholder="optional";
                                button type="submit" { "Pause" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a task in flight is doing, from its status.
fn stage_of(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Running => "work",
        TaskStatus::Verifying => "verify",
        TaskStatus::Judging => "judge",
        TaskStatus::Merging => "merge",
        _ => "",
    }
}

fn workers_section(d: &OverviewData) -> Markup {
    html! {
        section #workers aria-labelledby="h-workers" {
            h2 #h-workers { "Workers running now" }
            @if d.flying.is_empty() {
                p.muted { "No worker is running." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Task" } th scope="col" { "Project" } th scope="col" { "Stage" } th scope="col" { "Attempt" } th scope="col" { "Elapsed" } th scope="col" { "Latest event" } } }
                    tbody {
                        @for (t, a, e) in &d.flying {
                            tr data-task=(t.id) {
                                td { (task_link(t)) }
                                td { (t.project) }
                                td { (stage_of(t.status)) @if a.as_ref().is_some_and(resolving) { " (resolving a conflict)" } " " (status_badge(t.status.as_str())) }
                                td { @if let Some(a) = a { (attempt_label(a)) } @else { "–" } }
                                td { (elapsed(a.as_ref().map(|a| a.started_at).unwrap_or(t.updated_at), d.now)) }
                                td.latest-event { @if let Some(e) = e {
                                    small.event-kind data-kind=(e.kind) { (kind_label(&e.kind)) } " " (e.message)
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The merge queue's resolver is working on the task's conflict.
fn resolving(a: &Attempt) -> bool {
    a.kind == AttemptKind::Resolve && a.status == AttemptStatus::Running
}

/// An attempt's number, and what it is when it is not the task's plain
/// work: `4 (conflict resolution)`, `3 (candidates of round 1)`.
fn attempt_label(a: &Attempt) -> Markup {
    html! {
        (a.number)
        @if a.kind == AttemptKind::Resolve {
            " (conflict resolution)"
        } @else if a.candidate.is_some() {
            " (candidates" @if let Some(r) = a.round { " of round " (r) } ")"
        }
    }
}

/// A readable name for an event kind, shown before its message.
pub(crate) fn kind_label(kind: &str) -> String {
    match kind {
        "candidates_started" => "candidates".into(),
        "candidates_ranked" => "ranking".into(),
        "refine_iteration" => "refinement".into(),
        "refine_stopped" => "refinement stopped".into(),
        "conflict_resolving" | "conflict_resolved" => "merge conflict".into(),
        "project_archived" => "archived".into(),
        other => other.replace('_', " "),
    }
}

fn waiting_section(d: &OverviewData) -> Markup {
    html! {
        @if !d.waiting.is_empty() {
            section #needs-human aria-labelledby="h-waiting" {
                h2 #h-waiting { "Waiting for a person" }
                ul {
                    @for t in &d.waiting {
                        li data-task=(t.id) {
                            (task_link(t)) ": "
                            q { (t.question.as_deref().unwrap_or("(no question recorded)")) }
                            " " a href=(format!("/tasks/{}#answer", t.id)) { "Answer" }
                        }
                    }
                }
            }
        }
    }
}

fn merge_queue_section(d: &OverviewData) -> Markup {
    html! {
        section #merge-queue aria-labelledby="h-merge" {
            h2 #h-merge { "Merge queue" }
            @if d.merge_queue.is_empty() {
                p.muted { "Nothing is waiting to land." }
            } @else {
                ol {
                    @for t in &d.merge_queue {
                        li data-task=(t.id) { (task_link(t)) " (" (t.project) "), passed " (when(t.updated_at)) }
                    }
                }
            }
        }
    }
}

fn recent_section(d: &OverviewData) -> Markup {
    html! {
        section #tasks aria-labelledby="h-tasks" {
            h2 #h-tasks { "Recent tasks" }
            @if d.recent.is_empty() {
                p.muted { "No tasks yet. Add one with the form." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Task" } th scope="col" { "Project" } th scope="col" { "Type" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Cost" } th scope="col" { "Updated" } } }
                    tbody {
                        @for t in &d.recent {
                            tr data-task=(t.id) {
                                td { (task_link(t)) }
                                td { (t.project) }
                                td { (t.task_type.as_str()) }
                                td.task-status { (status_badge(t.status.as_str())) }
                                td { (t.attempts) }
                                td { (usd(t.cost_usd)) }
                                td { (when(t.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn spending_section(d: &OverviewData) -> Markup {
    let total: f64 = d.spend.iter().map(|s| s.today_usd).sum();
    html! {
        section #spending aria-labelledby="h-spending" {
            h2 #h-spending { "Spending today (UTC)" }
            table {
                thead { tr { th scope="col" { "Project" } th scope="col" { "Spent today" } th scope="col" { "Daily budget" } th scope="col" { "Per-task budget" } } }
                tbody {
                    @for s in &d.spend {
                        tr {
                            td { (s.project) }
                            td { (usd(s.today_usd)) }
                            td {
                                @if let Some(b) = s.daily_budget {
                                    meter min="0" max=(b) value=(s.today_usd.min(b)) { (usd(s.today_usd)) " of " (usd(b)) }
                                    " " (usd(s.today_usd)) " of " (usd(b))
                                    @if s.today_usd >= b { " " strong { "reached: the project pauses" } }
                                } @else { "none" }
                            }
                            td { @if let Some(b) = s.per_task_budget { (usd(b)) } @else { "none" } }
                        }
                    }
                }
                tfoot { tr { th scope="row" { "All projects" } td { (usd(total)) } td {} td {} } }
            }
        }
    }
}

fn plots_section(d: &OverviewData) -> Markup {
    html! {
        section #plots aria-labelledby="h-plots" {
            h2 #h-plots { "Plots" }
            div.plots {
                (cost_chart(&d.cost).render())
                (throughput_chart(&d.merged, d.now).render())
                (stage_chart(&d.spans).render())
                (attempts_chart(&d.recent, &d.attempts).render())
                (score_chart(&d.recent, &d.attempts).render())
            }
        }
    }
}

/// Spending per day, stacked by role and model.
fn cost_chart(cost: &CostDoc) -> BarChart {
    let mut days: Vec<String> = cost.rows.iter().map(|r| r.day.clone()).collect();
    days.dedup();
    let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &cost.rows {
        let key = format!("{} · {}", r.role, r.model);
        let values = by_key.entry(key).or_insert_with(|| vec![0.0; days.len()]);
        if let Some(i) = days.iter().position(|d| *d == r.day) {
            values[i] += r.cost_usd;
        }
    }
    BarChart {
        id: "plot-cost".into(),
        title: format!("Spending per day by role and model (last {COST_DAYS} days)"),
        unit: Unit::Usd,
        categories: days,
        labels: Vec::new(),
        colours: Vec::new(),
        series: by_key
            .into_iter()
            .map(|(name, values)| Series { name, values })
            .collect(),
        max: None,
    }
}

/// Tasks merged per hour over the last 24 hours.
fn throughput_chart(merged: &[(String, u64)], now: DateTime<Utc>) -> BarChart {
    let counts: BTreeMap<&str, u64> = merged.iter().map(|(h, n)| (h.as_str(), *n)).collect();
    let hours: Vec<DateTime<Utc>> = (0..24)
        .rev()
        .map(|k| now - chrono::Duration::hours(k))
        .collect();
    let values = hours
        .iter()
        .map(|h| {
            let key = h.format("%Y-%m-%dT%H").to_string();
            counts.get(key.as_str()).copied().unwrap_or(0) as f64
        })
        .collect();
    BarChart {
        id: "plot-throughput".into(),
        title: "Tasks merged per hour (last 24 hours, UTC)".into(),
        unit: Unit::Count,
        categories: hours
            .iter()
            .map(|h| h.format("%H:00").to_string())
            .collect(),
        labels: Vec::new(),
        colours: Vec::new(),
        series: vec![Series {
            name: "merged".into(),
            values,
        }],
        max: None,
    }
}

/// The statuses a task passes through, and what the plot calls them.
const STAGES: [(&str, &str); 6] = [
    ("pending", "queued"),
    ("running", "work"),
    ("verifying", "verify"),
    ("judging", "judge"),
    ("passed", "merge queue"),
    ("merging", "merge"),
];

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Median time in each stage (tasks of the last 7 days).
fn stage_chart(spans: &[StatusSpan]) -> BarChart {
    let values = STAGES
        .iter()
        .map(|(status, _)| {
            median(
                spans
                    .iter()
                    .filter(|s| s.status == *status)
                    .map(|s| s.millis() as f64 / 1000.0)
                    .collect(),
            )
        })
        .collect();
    BarChart {
        id: "plot-stages".into(),
        title: "Median time per stage (tasks of the last 7 days)".into(),
        unit: Unit::Seconds,
        categories: STAGES.iter().map(|(_, l)| l.to_string()).collect(),
        labels: Vec::new(),
        colours: Vec::new(),
        series: vec![Series {
            name: "median".into(),
            values,
        }],
        max: None,
    }
}

/// Recent tasks that had attempts, oldest first, labelled by short id.
fn with_attempts<'a>(
    recent: &'a [Task],
    attempts: &'a BTreeMap<String, Vec<Attempt>>,
) -> Vec<(&'a Task, &'a [Attempt])> {
    let mut v: Vec<(&Task, &[Attempt])> = recent
        .iter()
        .filter_map(|t| {
            let a = attempts.get(t.id.as_str())?;
            (!a.is_empty()).then_some((t, a.as_slice()))
        })
        .take(12)
        .collect();
    v.reverse();
    v
}

/// Attempts per recent task, stacked by how each ended.
fn attempts_chart(recent: &[Task], attempts: &BTreeMap<String, Vec<Attempt>>) -> BarChart {
    let tasks = with_attempts(recent, attempts);
    let kinds: [(&str, &[AttemptStatus]); 4] = [
        ("passed", &[AttemptStatus::Passed]),
        ("failed", &[AttemptStatus::Failed]),
        ("asked a person", &[AttemptStatus::NeedsHuman]),
        (
            "other (running, interrupted, error, cancelled)",
            &[
                AttemptStatus::Running,
                AttemptStatus::Interrupted,
                AttemptStatus::Error,
                AttemptStatus::Cancelled,
            ],
        ),
    ];
    let series = kinds
        .iter()
        .map(|(name, statuses)| Series {
            name: name.to_string(),
            values: tasks
                .iter()
                .map(|(_, a)| a.iter().filter(|x| statuses.contains(&x.status)).count() as f64)
                .collect(),
        })
        .collect();
    BarChart {
        id: "plot-attempts".into(),
        title: "Attempts per task (recent tasks)".into(),
        unit: Unit::Count,
        categories: tasks
            .iter()
            .map(|(t, _)| short_id(t.id.as_str()).to_string())
            .collect(),
        labels: Vec::new(),
        colours: Vec::new(),
        series,
        max: None,
    }
}

/// The judge's score of an attempt, when the judge gave one.
pub(crate) fn score(a: &Attempt) -> Option<f64> {
    a.verdict.as_ref()?.get("score")?.as_f64()
}

/// The judge's last score per recent task.
fn score_chart(recent: &[Task], attempts: &BTreeMap<String, Vec<Attempt>>) -> BarChart {
    let tasks = with_attempts(recent, attempts);
    BarChart {
        id: "plot-scores".into(),
        title: "Judge score per task (its latest scored attempt, 0–10)".into(),
        unit: Unit::Score,
        categories: tasks
            .iter()
            .map(|(t, _)| short_id(t.id.as_str()).to_string())
            .collect(),
        labels: Vec::new(),
        colours: Vec::new(),
        series: vec![Series {
            name: "score".into(),
            values: tasks
                .iter()
                .map(|(_, a)| a.iter().rev().find_map(score).unwrap_or(0.0))
                .collect(),
        }],
        max: Some(10.0),
    }
}

/// The type choices of the add-task form.
pub(crate) const TASK_TYPES: [TaskType; 4] = [
    TaskType::Code,
    TaskType::Test,
    TaskType::Fix,
    TaskType::Review,
];

/// Seconds as text, for the task page.
pub(crate) fn seconds_text(ms: u64) -> String {
    duration_text(ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_elapsed_text() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(elapsed_text(5), "5 s");
        assert_eq!(elapsed_text(125), "2 min 5 s");
        assert_eq!(elapsed_text(7260), "2 h 1 min");
    }

    #[test]
    fn event_kinds_read_as_words() {
        for (kind, label) in [
            ("candidates_started", "candidates"),
            ("candidates_ranked", "ranking"),
            ("refine_iteration", "refinement"),
            ("refine_stopped", "refinement stopped"),
            ("conflict_resolving", "merge conflict"),
            ("conflict_resolved", "merge conflict"),
            ("project_created", "project created"),
            ("project_archived", "archived"),
            ("tool_call", "tool call"),
        ] {
            assert_eq!(kind_label(kind), label, "{kind}");
        }
    }

    #[test]
    fn the_throughput_chart_puts_merges_in_their_hour() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = throughput_chart(
            &[("2026-03-01T12".into(), 3), ("2026-03-01T10".into(), 1)],
            now,
        );
        assert_eq!(c.categories.len(), 24);
        assert_eq!(c.categories[23], "12:00");
        assert_eq!(c.series[0].values[23], 3.0);
        assert_eq!(c.series[0].values[21], 1.0);
        assert_eq!(c.series[0].values.iter().sum::<f64>(), 4.0);
    }
}
