//! The task page, `/tasks/{id}`: the task (what `GET /api/v1/tasks/{id}`
//! answers, from the same [`views::show`]), its attempts with their worker
//! and models, and per attempt the transcript (tool calls and results,
//! long outputs folded), the diff from the attempt's ref, the verification
//! steps and the verdict, and where its audit files are. The question of a
//! task that needs a person comes with the form that answers it.
//! Best-of-N candidates are marked with their number, round, rank and
//! branch, the merge queue's conflict resolutions as such, and a refining
//! attempt lists its iterations (and the score plot draws each one).
//!
//! The page's live part is also served alone at `/fragments/tasks/{id}`.

use super::pages::{
    self, banner, done_banner, elapsed, error_page, fragment_response, html_page, layout,
    seconds_text, status_badge, usd, when, Banner, Done, Nav,
};
use super::plots::{BarChart, Series, Unit, PALETTE};
use super::session::{csrf_token, Session};
use super::Dash;
use crate::error::ApiError;
use crate::views::{self, Shown, ShownAttempt};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use orch_core::{
    Attempt, AttemptKind, IterationOutcome, RefineIteration, Task, TaskStatus, Verdict,
    VerificationReport,
};
use orch_state::dashboard::AttemptModel;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

/// Most of a diff shown.
const DIFF_BYTES: usize = 256 * 1024;
/// Largest transcript file read.
const TRANSCRIPT_BYTES: u64 = 8 * 1024 * 1024;
/// Text longer than this (characters or lines) is folded.
const FOLD_CHARS: usize = 1200;
const FOLD_LINES: usize = 12;

/// Everything the task page shows.
pub(crate) struct TaskData {
    now: DateTime<Utc>,
    shown: Shown,
    models: Vec<AttemptModel>,
    workers: BTreeMap<u32, String>,
    transcripts: BTreeMap<u32, Result<Vec<Value>, String>>,
    diffs: BTreeMap<u32, Result<String, String>>,
    last_event: i64,
}

/// Reads the task, its attempts' extras and their diffs.
async fn load(dash: &Dash, id: &str) -> Result<TaskData, ApiError> {
    let app = dash.app.clone();
    let key = id.to_string();
    let mut data = crate::blocking(move || {
        let store = &app.store;
        let shown = views::show(store, &key)?;
        let transcripts = shown
            .attempts
            .iter()
            .filter_map(|a| {
                let md = a.attempt.audit_path.as_ref()?;
                Some((
                    a.attempt.number,
                    read_transcript(&FsPath::new(md).with_extension("json")),
                ))
            })
            .collect();
        Ok(TaskData {
            now: Utc::now(),
            models: store.attempt_models(&shown.task.id)?,
            workers: store.attempt_workers(&shown.task.id)?,
            last_event: store.last_event_id()?,
            transcripts,
            diffs: BTreeMap::new(),
            shown,
        })
    })
    .await?;
    let repo = dash
        .app
        .config
        .project(&data.shown.task.project)
        .map(|p| dash.app.config.project_path(p));
    data.diffs = diffs(repo.as_deref(), &data.shown.attempts).await;
    Ok(data)
}

fn read_transcript(path: &FsPath) -> Result<Vec<Value>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len > TRANSCRIPT_BYTES {
        return Err(format!(
            "{} is {len} bytes, too large to show here; open the file itself",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JSON list of messages: {e}", path.display()))
}

/// The diff of each attempt that made a commit, base to head (the commit
/// its attempt ref keeps), read with git (read-only).
async fn diffs(
    repo: Option<&FsPath>,
    attempts: &[ShownAttempt],
) -> BTreeMap<u32, Result<String, String>> {
    let mut out = BTreeMap::new();
    let wanted: Vec<_> = attempts
        .iter()
        .filter_map(|a| {
            let at = &a.attempt;
            Some((at.number, at.base_commit.clone()?, at.head_commit.clone()?))
        })
        .collect();
    if wanted.is_empty() {
        return out;
    }
    let Some(repo) = repo else {
        for (n, _, _) in wanted {
            out.insert(
                n,
                Err("the task's project is not in the configuration".to_string()),
            );
        }
        return out;
    };
    let git = match orch_git::Git::open(repo).await {
        Ok(g) => g,
        Err(e) => {
            for (n, _, _) in wanted {
                out.insert(n, Err(e.to_string()));
            }
            return out;
        }
    };
    for (n, base, head) in wanted {
        let d = git
            .diff(&base, &head, DIFF_BYTES)
            .await
            .map_err(|e| e.to_string());
        out.insert(n, d);
    }
    out
}

/// `GET /tasks/{id}`.
pub(crate) async fn page(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Done>,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    render_with(
        &dash,
        &session,
        &nav,
        &id,
        done_banner(&q).as_ref(),
        None,
        StatusCode::OK,
    )
    .await
}

/// The task page with a banner and, after a refused answer, the answer
/// typed and the reason it was refused.
pub(crate) async fn render_with(
    dash: &Dash,
    session: &Session,
    nav: &Nav,
    id: &str,
    b: Option<&Banner>,
    answer: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    match load(dash, id).await {
        Ok(data) => {
            let body = html! {
                (banner(b))
                div #live data-live=(format!("/fragments/tasks/{}", data.shown.task.id))
                    data-after=(data.last_event) data-task=(data.shown.task.id) {
                    (live(dash, session, &data, answer))
                }
            };
            html_page(status, layout(&data.shown.task.title, nav, body))
        }
        Err(e) => error_page(&e, nav),
    }
}

/// `GET /fragments/tasks/{id}`.
pub(crate) async fn fragment(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match load(&dash, &id).await {
        Ok(data) => fragment_response(StatusCode::OK, live(&dash, &session, &data, None)),
        Err(e) => fragment_response(e.status, html! { p.error role="alert" { (e.message) } }),
    }
}

fn live(dash: &Dash, session: &Session, d: &TaskData, answer: Option<(&str, &str)>) -> Markup {
    let t = &d.shown.task;
    let csrf = csrf_token(&dash.secret, &session.id);
    let latest = d.shown.attempts.last().map(|a| a.attempt.number);
    html! {
        h1 { (t.title) " " span.task-status { (status_badge(t.status.as_str())) } }
        (task_facts(t))
        (question(t, &csrf, answer))
        (actions(t, &csrf))
        section #attempts aria-labelledby="h-attempts" {
            h2 #h-attempts { "Attempts" }
            @if d.shown.attempts.is_empty() {
                p.muted { "No attempt yet." }
            } @else {
                (attempts_table(d))
                div.plots { (score_chart(&d.shown.attempts).render()) }
                @for a in d.shown.attempts.iter().rev() {
                    (attempt_detail(d, a, Some(a.attempt.number) == latest))
                }
            }
        }
    }
}

fn task_facts(t: &Task) -> Markup {
    html! {
        dl.facts {
            dt { "Id" } dd { code { (t.id) } }
            dt { "Project" } dd { (t.project) }
            dt { "Type" } dd { (t.task_type.as_str()) }
            dt { "Priority" } dd { (t.priority) }
            @if let Some(w) = t.worker { dt { "Worker" } dd { code { (w.as_str()) } " (the task's own)" } }
            dt { "Source" } dd { (t.source.as_str()) @if let Some(k) = &t.plan_key { " (" code { (k) } ")" } }
            dt { "Attempts counted" } dd { (t.attempts) @if t.infra_failures > 0 { ", " (t.infra_failures) " lost to infrastructure failures" } }
            dt { "Tokens" } dd { (t.input_tokens) " in, " (t.output_tokens) " out" }
            dt { "Cost" } dd { (usd(t.cost_usd)) }
            dt { "Created" } dd { (when(t.created_at)) }
            dt { "Updated" } dd { (when(t.updated_at)) }
            @if let Some(nb) = t.not_before { dt { "Not before" } dd { (when(nb)) } }
            @if !t.depends_on.is_empty() {
                dt { "Depends on" } dd { @for d in &t.depends_on { a href=(format!("/tasks/{d}")) { code { (pages::short_id(d.as_str())) } } " " } }
            }
            @if !t.acceptance_tests.is_empty() {
                dt { "Acceptance tests" } dd { ul { @for a in &t.acceptance_tests { li { code { (a) } } } } }
            }
            @if !t.allowed_files.is_empty() {
                dt { "Allowed files" } dd { ul { @for a in &t.allowed_files { li { code { (a) } } } } }
            }
        }
        @if !t.description.trim().is_empty() {
            h2 { "Description" }
            div.prose { (t.description) }
        }
        @if let Some(r) = &t.failure_reason { p.error { "Failed: " (r) } }
        @if let Some(f) = &t.feedback { (fold("Feedback for the next attempt", f)) }
        @if let Some(a) = &t.answer { p { "A person answered: " q { (a) } } }
    }
}

fn question(t: &Task, csrf: &str, answer: Option<(&str, &str)>) -> Markup {
    html! {
        @if t.status == TaskStatus::NeedsHuman {
            section.card.ask #answer aria-labelledby="h-question" {
                h2 #h-question { "The worker asks" }
                blockquote #question { (t.question.as_deref().unwrap_or("(no question recorded)")) }
                form method="post" action=(format!("/actions/tasks/{}/answer", t.id)) {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="f-answer" { "Your answer" }
                    textarea #f-answer name="answer" rows="3" required
                        aria-invalid=[answer.map(|_| "true")]
                        aria-describedby=[answer.map(|_| "answer-error")] {
                        (answer.map(|a| a.0).unwrap_or(""))
                    }
                    @if let Some((_, e)) = answer { p.error #answer-error { (e) } }
                    button type="submit" { "Send the answer" }
                }
            }
        }
    }
}

fn actions(t: &Task, csrf: &str) -> Markup {
    let retryable = matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled);
    html! {
        div.actions {
            @if !t.status.is_terminal() {
                form.inline method="post" action=(format!("/actions/tasks/{}/cancel", t.id)) {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Cancel the task" }
                }
            }
            @if retryable {
                form.inline method="post" action=(format!("/actions/tasks/{}/retry", t.id)) {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Retry" }
                }
            }
            a href=(format!("/api/v1/tasks/{}", t.id)) { "As JSON" }
        }
    }
}

/// The worker's models (and the other roles') of one attempt.
fn models_of(d: &TaskData, a: &Attempt) -> (String, String) {
    let mine: Vec<&AttemptModel> = d.models.iter().filter(|m| m.attempt_id == a.id).collect();
    let worker: Vec<&str> = mine
        .iter()
        .filter(|m| m.role == "worker")
        .map(|m| m.model.as_str())
        .collect();
    let others: Vec<String> = mine
        .iter()
        .filter(|m| m.role != "worker")
        .map(|m| format!("{}: {}", m.role, m.model))
        .collect();
    (worker.join(", "), others.join("; "))
}

fn attempts_table(d: &TaskData) -> Markup {
    html! {
        table #attempt-table {
            thead { tr {
                th scope="col" { "#" } th scope="col" { "Status" } th scope="col" { "Kind" } th scope="col" { "Turns" }
                th scope="col" { "Tokens in / out" } th scope="col" { "Cost" } th scope="col" { "Duration" }
                th scope="col" { "Worker" } th scope="col" { "Model" } th scope="col" { "Judge score" } th scope="col" { "Started" }
            } }
            tbody {
                @for s in &d.shown.attempts {
                    @let a = &s.attempt;
                    @let (model, others) = models_of(d, a);
                    tr data-attempt=(a.number) data-kind=(a.kind.as_str()) {
                        td { a href=(format!("#attempt-{}", a.number)) { (a.number) } }
                        td { (status_badge(a.status.as_str())) }
                        td.kind { (kind_cell(a)) }
                        td { (a.turns) }
                        td { (a.input_tokens) " / " (a.output_tokens) }
                        td { (usd(a.cost_usd)) }
                        td {
                            @match a.duration_ms {
                                Some(ms) => (seconds_text(ms)),
                                None => (elapsed(a.started_at, d.now)),
                            }
                        }
                        td { (d.workers.get(&a.number).map(String::as_str).unwrap_or("–")) }
                        td { @if model.is_empty() { "–" } @else { (model) } @if !others.is_empty() { br; small { (others) } } }
                        td { @match pages::score(a) { Some(s) => (format!("{s:.1}")), None => "–" } }
                        td { (when(a.started_at)) }
                    }
                }
            }
        }
    }
}

/// What an attempt was, beyond the task's own work: a best-of-N
/// candidate (its number, round, rank and why, its branch), the merge
/// queue's conflict resolution, or a refining attempt (its iterations).
fn kind_cell(a: &Attempt) -> Markup {
    html! {
        @if a.kind == AttemptKind::Resolve {
            span.kind-resolve { "conflict resolution, not counted" }
        } @else if let Some(k) = a.candidate {
            span.candidate data-candidate=(k) { "c" (k) }
            @if let Some(r) = a.round { " · round " (r) }
            " · " (rank_text(a.rank))
            @if let Some(why) = &a.rank_reason { br; small.rank-reason { (why) } }
            @if let Some(b) = &a.branch { br; code.branch { (b) } }
        } @else {
            "work"
        }
        @if !a.iterations.is_empty() {
            br; a href=(format!("#refine-{}", a.number)) { (a.iterations.len()) " refinement iterations" }
        }
    }
}

/// `ranked 1 (chosen)`, `ranked 2`, or `not ranked` for a candidate that
/// did not pass.
fn rank_text(rank: Option<u32>) -> Markup {
    html! {
        @match rank {
            Some(1) => span.rank data-rank="1" { "ranked 1 (chosen)" },
            Some(r) => span.rank data-rank=(r) { "ranked " (r) },
            None => span.rank { "not ranked" },
        }
    }
}

/// The judge's score across the attempts; a refining attempt has a bar
/// per iteration instead, coloured by what became of it.
fn score_chart(attempts: &[ShownAttempt]) -> BarChart {
    let refined = attempts.iter().any(|a| !a.attempt.iterations.is_empty());
    // (name, axis label, series index, score)
    let mut bars: Vec<(String, String, usize, f64)> = Vec::new();
    for s in attempts {
        let a = &s.attempt;
        if a.iterations.is_empty() {
            let name = format!("attempt {}", a.number);
            bars.push((name.clone(), name, 0, pages::score(a).unwrap_or(0.0)));
        }
        for it in &a.iterations {
            let series = match it.outcome {
                IterationOutcome::Kept => 1,
                IterationOutcome::Reverted => 2,
                IterationOutcome::Unchanged => 3,
            };
            bars.push((
                format!("attempt {}, iteration {}", a.number, it.iteration),
                format!("{} · it {}", a.number, it.iteration),
                series,
                it.score.unwrap_or(0.0),
            ));
        }
    }
    let names: &[&str] = if refined {
        &[
            "attempt",
            "iteration kept",
            "iteration reverted",
            "iteration unchanged",
        ]
    } else {
        &["score"]
    };
    let series = names
        .iter()
        .enumerate()
        .map(|(k, name)| Series {
            name: name.to_string(),
            values: bars
                .iter()
                .map(|b| if b.2 == k { b.3 } else { 0.0 })
                .collect(),
        })
        .collect();
    BarChart {
        id: "plot-attempt-scores".into(),
        title: if refined {
            "Judge score by attempt and refinement iteration (0–10)".into()
        } else {
            "Judge score by attempt (0–10)".into()
        },
        unit: Unit::Score,
        categories: bars.iter().map(|b| b.0.clone()).collect(),
        labels: bars.iter().map(|b| b.1.clone()).collect(),
        // Blue attempts; kept green, reverted vermilion, unchanged grey.
        colours: vec![PALETTE[0], PALETTE[2], PALETTE[5], PALETTE[7]],
        series,
        max: Some(10.0),
    }
}

/// Text shown whole when short, else folded under its first line.
fn fold(label: &str, text: &str) -> Markup {
    let lines = text.lines().count();
    let long = text.chars().count() > FOLD_CHARS || lines > FOLD_LINES;
    html! {
        @if long {
            details.fold {
                summary { (label) " (" (lines) " lines)" }
                pre { (text) }
            }
        } @else {
            div.block { span.label { (label) } pre { (text) } }
        }
    }
}

fn attempt_detail(d: &TaskData, s: &ShownAttempt, open: bool) -> Markup {
    let a = &s.attempt;
    html! {
        details.attempt id=(format!("attempt-{}", a.number)) open[open] {
            summary { h3 { "Attempt " (a.number) " " (status_badge(a.status.as_str())) (heading_note(a)) } }
            (what_it_was(a))
            @if let Some(sum) = &a.summary { p { "Summary: " (sum) } }
            @if let Some(e) = &a.error { p.error { (e) } }
            (refinement(a))
            @if let Some(v) = &a.verification { (verification(v)) }
            @if let Some(v) = &a.verdict { (verdict(v)) }
            (diff_section(s, d.diffs.get(&a.number)))
            (transcript_section(d.transcripts.get(&a.number)))
            (audit_files(a))
        }
    }
}

/// After an attempt's heading: ` · candidate c3` or ` · conflict resolution`.
fn heading_note(a: &Attempt) -> Markup {
    html! {
        @if a.kind == AttemptKind::Resolve {
            " · conflict resolution"
        } @else if let Some(k) = a.candidate {
            " · candidate c" (k)
        }
    }
}

/// A candidate's round, branch and ranking, or what a resolver attempt is.
fn what_it_was(a: &Attempt) -> Markup {
    html! {
        @if a.kind == AttemptKind::Resolve {
            p.attempt-kind {
                "The merge queue's conflict resolution: the task's worker merged its passing branch onto main and resolved the conflicts, under verification. It does not count against max_attempts."
            }
        } @else if let Some(k) = a.candidate {
            p.attempt-kind {
                "Candidate " (k)
                @if let Some(r) = a.round { " of round " (r) }
                @if let Some(b) = &a.branch { ", on branch " code { (b) } }
                ": "
                @match a.rank {
                    Some(1) => "ranked 1, its commit went to the merge queue",
                    Some(r) => { "ranked " (r) },
                    None => "not ranked (it did not pass)",
                }
                @if let Some(why) = &a.rank_reason { " — " q.rank-reason { (why) } }
                "."
            }
        }
    }
}

/// A refining attempt's iterations: score, what became of each snapshot,
/// tests and verdict, its commit.
fn refinement(a: &Attempt) -> Markup {
    let Some(last) = a.iterations.last() else {
        return html! {};
    };
    let best = a
        .iterations
        .iter()
        .find(|i| i.iteration == last.best_iteration);
    html! {
        section.refinement id=(format!("refine-{}", a.number)) {
            h4 { "Refinement: " (a.iterations.len()) " iterations" }
            p {
                "Best: iteration " (last.best_iteration) ", " (orch_core::refine::score_text(last.best_score))
                @if let Some(c) = best.and_then(|b| b.commit.as_deref()) { " (" code { (short(Some(c))) } ")" }
                "; the attempt ends with that snapshot."
            }
            table {
                thead { tr {
                    th scope="col" { "Iteration" } th scope="col" { "Score" } th scope="col" { "Outcome" }
                    th scope="col" { "Tests" } th scope="col" { "Verdict" } th scope="col" { "Best so far" } th scope="col" { "Commit" }
                } }
                tbody {
                    @for it in &a.iterations { (iteration_row(it)) }
                }
            }
        }
    }
}

fn iteration_row(it: &RefineIteration) -> Markup {
    let pass_fail = |ok: bool| {
        html! {
            @if ok { span.status.status-passed { "passed" } } @else { span.status.status-failed { "failed" } }
        }
    };
    html! {
        tr class=(format!("it-{}", it.outcome.as_str())) data-iteration=(it.iteration) data-outcome=(it.outcome.as_str()) {
            td { (it.iteration) }
            td { @match it.score { Some(s) => (format!("{s:.1}")), None => "–" } }
            td {
                @match it.outcome {
                    IterationOutcome::Reverted => { "reverted to iteration " (it.best_iteration) },
                    other => (other.as_str()),
                }
                @if let Some(n) = &it.note { br; small { (n) } }
            }
            td { (pass_fail(it.tests_passed)) }
            td { (pass_fail(it.verdict_passed)) }
            td { "iteration " (it.best_iteration) @if let Some(s) = it.best_score { ", " (format!("{s:.1}")) } }
            td { @match &it.commit { Some(c) => code { (short(Some(c))) }, None => "–" } }
        }
    }
}

fn failure_list(title: &str, class: &str, items: &[String]) -> Markup {
    html! {
        @if !items.is_empty() {
            div class=(class) {
                h5 { (title) " (" (items.len()) ")" }
                ul { @for i in items { li { code { (i) } } } }
            }
        }
    }
}

fn verification(v: &Value) -> Markup {
    let Ok(r) = serde_json::from_value::<VerificationReport>(v.clone()) else {
        return html! { h4 { "Verification" } pre { (v.to_string()) } };
    };
    html! {
        section.verification {
            h4 { "Verification: " @if r.passed { span.status.status-passed { "passed" } } @else { span.status.status-failed { "failed" } } }
            p { (r.summary) }
            table {
                thead { tr { th scope="col" { "Step" } th scope="col" { "Command" } th scope="col" { "Exit" } th scope="col" { "Time" } th scope="col" { "Tests passed" } th scope="col" { "failed" } th scope="col" { "skipped" } } }
                tbody {
                    @for step in &r.steps {
                        tr class=(if step.succeeded() { "ok" } else { "bad" }) {
                            td { (step.kind.as_str()) }
                            td { code { (step.command) } }
                            td { @match step.exit_code { Some(c) => (c), None => "–" } @if step.timed_out { " (timed out)" } }
                            td { (seconds_text(step.duration_ms)) }
                            @if let Some(c) = &step.counts {
                                td { (c.passed) } td { (c.failed) } td { (c.skipped) }
                            } @else { td { "–" } td { "–" } td { "–" } }
                        }
                    }
                }
            }
            @for step in &r.steps {
                @if !step.output_tail.trim().is_empty() {
                    (fold(&format!("Output of {} (`{}`), last part", step.kind.as_str(), step.command), &step.output_tail))
                }
            }
            (failure_list("Targeted tests still failing", "targeted", &r.targeted_failures))
            (failure_list("New failures", "new-failures", &r.new_failures))
            (failure_list("Pre-existing failures (also fail on the base commit)", "preexisting", &r.preexisting_failures))
            @if let Some(g) = &r.goal_unmet { p.error { "Goal not shown to be reached: " (g) } }
            @if r.empty_diff { p.error { "The attempt changed no files." } }
        }
    }
}

fn verdict(v: &Value) -> Markup {
    let Ok(v) = serde_json::from_value::<Verdict>(v.clone()) else {
        return html! { h4 { "Verdict" } pre { (v.to_string()) } };
    };
    html! {
        section.verdict {
            h4 { "Verdict: "
                @if v.passed { span.status.status-passed { "passed" } } @else { span.status.status-failed { "failed" } }
                @if let Some(s) = v.score { " · score " (format!("{s:.1}")) " of 10" }
            }
            @if !v.reasoning.is_empty() { p { (v.reasoning) } }
            @if !v.issues.is_empty() {
                h5 { "Issues" }
                ul { @for i in &v.issues { li { (i) } } }
            }
            table {
                caption { "Gates" }
                thead { tr { th scope="col" { "Gate" } th scope="col" { "Result" } th scope="col" { "Detail" } } }
                tbody {
                    @for g in &v.gates {
                        tr {
                            td { (g.name) }
                            td { @if g.passed { span.status.status-passed { "pass" } } @else { span.status.status-failed { "fail" } } }
                            td { (g.detail) }
                        }
                    }
                }
            }
        }
    }
}

/// One diff line's class: added, removed, hunk header or file header.
fn diff_class(line: &str) -> &'static str {
    if line.starts_with("+++")
        || line.starts_with("---")
        || line.starts_with("diff ")
        || line.starts_with("index ")
    {
        "d-meta"
    } else if line.starts_with('+') {
        "d-add"
    } else if line.starts_with('-') {
        "d-del"
    } else if line.starts_with("@@") {
        "d-hunk"
    } else {
        "d-ctx"
    }
}

fn diff_section(s: &ShownAttempt, diff: Option<&Result<String, String>>) -> Markup {
    let a = &s.attempt;
    html! {
        section.diff-section {
            h4 { "Diff" }
            @if let Some(r) = &s.attempt_ref {
                p.muted { code { (r) } " (" code { (short(a.base_commit.as_deref())) } ".." code { (short(a.head_commit.as_deref())) } ")" }
            }
            @if let Some(stat) = &a.diff_stat { @if !stat.trim().is_empty() { pre.stat { (stat) } } }
            @match diff {
                None => p.muted { "No commit: the attempt changed nothing, or has not committed yet." },
                Some(Err(e)) => p.error { "The diff cannot be shown: " (e) },
                Some(Ok(text)) if text.trim().is_empty() => p.muted { "An empty diff." },
                Some(Ok(text)) => {
                    @let lines = text.lines().count();
                    details.fold open[lines <= 400] {
                        summary { (lines) " lines" }
                        pre.diff { code {
                            @for line in text.lines() { span class=(diff_class(line)) { (line) "\n" } }
                        } }
                    }
                }
            }
        }
    }
}

fn short(sha: Option<&str>) -> &str {
    sha.map(|s| s.get(..10).unwrap_or(s)).unwrap_or("?")
}

/// The name of each tool call, by id, for labelling results.
fn call_names(messages: &[Value]) -> BTreeMap<String, String> {
    messages
        .iter()
        .filter_map(|m| m.get("tool_calls")?.as_array())
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("id")?.as_str()?.to_string(),
                c.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Tool arguments as indented JSON when they parse.
fn pretty_arguments(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string())
}

fn transcript_section(t: Option<&Result<Vec<Value>, String>>) -> Markup {
    html! {
        section.transcript {
            h4 { "Transcript" }
            @match t {
                None => p.muted { "Written when the attempt ends." },
                Some(Err(e)) => p.error { (e) },
                Some(Ok(messages)) => {
                    @let names = call_names(messages);
                    ol.messages {
                        @for m in messages { (message(m, &names)) }
                    }
                }
            }
        }
    }
}

fn message(m: &Value, names: &BTreeMap<String, String>) -> Markup {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("?");
    let content = m.get("content").and_then(Value::as_str).unwrap_or("");
    let calls = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    html! {
        li class=(format!("msg msg-{role}")) {
            @match role {
                "system" => details.fold { summary { "System prompt" } pre { (content) } },
                "user" => (fold("Task prompt", content)),
                "tool" => {
                    @let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                    @let name = names.get(id).map(String::as_str).unwrap_or("tool");
                    (fold(&format!("← result of {name}"), content))
                },
                _ => {
                    @if !content.trim().is_empty() { (fold("Assistant", content)) }
                    @for c in &calls {
                        @let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                        @let args = c.get("arguments").and_then(Value::as_str).unwrap_or("");
                        (fold(&format!("→ {name}"), &pretty_arguments(args)))
                    }
                },
            }
        }
    }
}

/// The attempt's files in the audit trail.
fn audit_files(a: &Attempt) -> Markup {
    let Some(md) = &a.audit_path else {
        return html! {};
    };
    let md = PathBuf::from(md);
    let json = md.with_extension("json");
    let verdict = md
        .parent()
        .and_then(FsPath::parent)
        .zip(md.file_name())
        .map(|(audit, name)| audit.join("verdicts").join(name));
    html! {
        section.audit {
            h4 { "Audit files" }
            ul {
                li { "Attempt: " code { (md.display()) } }
                li { "Transcript (JSON): " code { (json.display()) } " — also at "
                    a href=(format!("/api/v1/tasks/{}/attempts/{}/transcript", a.task_id, a.number)) { "the API" } }
                @if let Some(v) = verdict.filter(|v| v.exists()) { li { "Verdict: " code { (v.display()) } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_are_classed_by_kind() {
        assert_eq!(diff_class("+++ b/calc.py"), "d-meta");
        assert_eq!(diff_class("--- a/calc.py"), "d-meta");
        assert_eq!(diff_class("+    return a + b"), "d-add");
        assert_eq!(diff_class("-    return a - b"), "d-del");
        assert_eq!(diff_class("@@ -1,2 +1,2 @@"), "d-hunk");
        assert_eq!(diff_class(" def add(a, b):"), "d-ctx");
    }

    #[test]
    fn a_transcript_names_each_result_by_its_call_and_folds_long_output() {
        let long = "line\n".repeat(40);
        let messages: Vec<Value> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "be careful"},
            {"role": "user", "content": "fix add"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "name": "run", "arguments": "{\"command\":\"pytest\"}"}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": long},
        ]))
        .unwrap();
        let html = transcript_section(Some(&Ok(messages))).into_string();
        assert!(html.contains("→ run"), "{html}");
        assert!(html.contains("← result of run (40 lines)"), "{html}");
        assert!(
            html.contains("&quot;command&quot;: &quot;pytest&quot;"),
            "{html}"
        );
        assert_eq!(
            html.matches("<details").count(),
            2,
            "system prompt and the long result: {html}"
        );
    }
}
