//! The dashboard's forms: add a task, answer a question, cancel, retry,
//! pause, resume and start work now. Each is a plain POST that works
//! without JavaScript: it passes the CSRF check, calls the same function
//! as its API route (so it validates and refuses exactly as the API does),
//! then redirects to the page it came from with a notice, or renders that
//! page again with the API's error message beside the field at fault.

use super::pages::{self, html_page, layout, load_overview, overview_page, Banner, Nav};
use super::session::{check_post, forbidden, Session};
use super::task_page;
use super::Dash;
use crate::error::ApiError;
use crate::routes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use orch_planner::task_file::TaskSpec;
use serde::Deserialize;

/// The add-task form as sent (every field text), and what to show again
/// when the task is refused.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AddTaskDraft {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default, rename = "type")]
    task_type: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    allowed_files: String,
    #[serde(default)]
    acceptance_tests: String,
    #[serde(default)]
    depends_on: String,
    /// A worker kind, or empty for the project's.
    #[serde(default)]
    worker: String,
    /// The refusal: the form field at fault (if any) and the message.
    #[serde(skip)]
    error: Option<(Option<String>, String)>,
}

/// One entry per non-empty line.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The form field an API error's `field` (`allowed_files[1]`, `type`)
/// belongs to.
fn form_field(api_field: &str) -> String {
    let base = api_field.split('[').next().unwrap_or(api_field);
    match base {
        "task_type" => "type".to_string(),
        other => other.to_string(),
    }
}

impl AddTaskDraft {
    pub(crate) fn empty(project: Option<String>) -> Self {
        AddTaskDraft {
            project: project.unwrap_or_default(),
            task_type: "code".into(),
            ..Default::default()
        }
    }

    /// The task file the form describes; the type, priority and worker
    /// are checked here, everything else by the API's own validation.
    fn spec(&self) -> Result<TaskSpec, ApiError> {
        let task_type = match self.task_type.trim() {
            "" => orch_core::TaskType::default(),
            t => t
                .parse()
                .map_err(|e: String| ApiError::invalid("type", e))?,
        };
        let priority = match self.priority.trim() {
            "" => 0,
            p => p.parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "priority",
                    format!("`priority` must be a whole number (higher runs first), not `{p}`"),
                )
            })?,
        };
        let worker = match self.worker.trim() {
            "" => None,
            w => Some(
                w.parse()
                    .map_err(|e: String| ApiError::invalid("worker", format!("`worker`: {e}")))?,
            ),
        };
        Ok(TaskSpec {
            project: None,
            title: self.title.clone(),
            description: self.description.clone(),
            task_type,
            priority,
            allowed_files: lines(&self.allowed_files),
            acceptance_tests: lines(&self.acceptance_tests),
            depends_on: lines(&self.depends_on),
            candidates: None,
            worker,
        })
    }

    fn error_for(&self, field: &str) -> Option<&str> {
        match &self.error {
            Some((Some(f), m)) if f == field => Some(m.as_str()),
            _ => None,
        }
    }

    /// A labelled text input or textarea, with its error when it has one.
    fn field(&self, name: &str, label: &str, hint: &str, value: &str, multiline: bool) -> Markup {
        let id = format!("f-{name}");
        let err_id = format!("{id}-error");
        let hint_id = format!("{id}-hint");
        let err = self.error_for(name);
        let described = if err.is_some() {
            format!("{hint_id} {err_id}")
        } else {
            hint_id.clone()
        };
        html! {
            div.field {
                label for=(id) { (label) }
                @if multiline {
                    textarea id=(id) name=(name) rows="3" aria-describedby=(described)
                        aria-invalid=[err.map(|_| "true")] { (value) }
                } @else {
                    input id=(id) type="text" name=(name) value=(value) aria-describedby=(described)
                        aria-invalid=[err.map(|_| "true")] required[name == "title"];
                }
                @if !hint.is_empty() { small id=(hint_id) { (hint) } }
                @if let Some(e) = err { p.error id=(err_id) { (e) } }
            }
        }
    }

    /// The form, filled with this draft.
    pub(crate) fn render(&self, csrf: &str, projects: &[String]) -> Markup {
        html! {
            section.card #add-task aria-labelledby="h-add" {
                h2 #h-add { "Add a task" }
                form method="post" action="/actions/tasks" novalidate {
                    input type="hidden" name="csrf" value=(csrf);
                    @if let Some((field, message)) = &self.error {
                        div.error #add-error role="alert" {
                            "The task was not added: " (message)
                            @if let Some(f) = field { " (field " code { (f) } ")" }
                        }
                    }
                    div.field {
                        label for="f-project" { "Project" }
                        select #f-project name="project" aria-invalid=[self.error_for("project").map(|_| "true")] {
                            @for p in projects {
                                option value=(p) selected[*p == self.project] { (p) }
                            }
                        }
                        @if let Some(e) = self.error_for("project") { p.error { (e) } }
                    }
                    (self.field("title", "Title", "A short title, at most 200 characters.", &self.title, false))
                    (self.field("description", "Description", "What to do and why; the worker reads it.", &self.description, true))
                    div.field {
                        label for="f-type" { "Type" }
                        select #f-type name="type" {
                            @for t in pages::TASK_TYPES {
                                option value=(t.as_str()) selected[t.as_str() == self.task_type.trim()] { (t.as_str()) }
                            }
                        }
                        @if let Some(e) = self.error_for("type") { p.error { (e) } }
                    }
                    div.field {
                        label for="f-worker" { "Worker" }
                        select #f-worker name="worker" aria-describedby="f-worker-hint" aria-invalid=[self.error_for("worker").map(|_| "true")] {
                            option value="" selected[self.worker.trim().is_empty()] { "the project's" }
                            @for w in orch_core::WorkerKind::ALL {
                                option value=(w.as_str()) selected[w.as_str() == self.worker.trim()] { (w.as_str()) }
                            }
                        }
                        small #f-worker-hint { "What does the work: the built-in agent or an agent CLI." }
                        @if let Some(e) = self.error_for("worker") { p.error { (e) } }
                    }
                    (self.field("priority", "Priority", "A whole number; higher runs first. Empty = 0.", &self.priority, false))
                    (self.field("allowed_files", "Allowed files", "Globs the worker may write, one per line; empty = any file.", &self.allowed_files, true))
                    (self.field("acceptance_tests", "Acceptance tests", "Test ids or files that must pass, one per line (tests/test_x.py::test_y).", &self.acceptance_tests, true))
                    (self.field("depends_on", "Depends on", "Ids (or unique prefixes) of tasks to merge first, one per line.", &self.depends_on, true))
                    button type="submit" { "Add task" }
                }
            }
        }
    }
}

/// `POST /actions/tasks`: the add-task form.
pub(crate) async fn add_task(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(mut draft): Form<AddTaskDraft>,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    if let Err(m) = check_post(&dash.secret, &headers, &session, &draft.csrf) {
        return forbidden(&m, &nav);
    }
    let result = match draft.spec() {
        Ok(spec) => routes::add_task_spec(dash.app.clone(), draft.project.clone(), spec).await,
        Err(e) => Err(e),
    };
    let err = match result {
        Ok(task) => {
            return Redirect::to(&format!("/?done=added&task={}#tasks", task.id)).into_response()
        }
        Err(e) => e,
    };
    draft.error = Some((err.field.as_deref().map(form_field), err.message.clone()));
    match load_overview(&dash).await {
        Ok(data) => {
            let page = overview_page(&dash, &session, &data, &draft, None);
            html_page(err.status, layout("Overview", &nav, page))
        }
        Err(e) => pages::error_page(&e, &nav),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AnswerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    answer: String,
}

/// Starts work on a task's project after a person unblocked it; a refusal
/// (paused, shutting down) only means it waits.
async fn resume_work(dash: &Dash, task: &orch_core::Task) {
    let _ = dash.app.control.run_now(&task.project).await;
}

/// The task page again, with `err` above it (and in the answer form).
async fn task_error(
    dash: &Dash,
    session: &Session,
    nav: &Nav,
    id: &str,
    err: ApiError,
    answer: Option<&str>,
) -> Response {
    task_page::render_with(
        dash,
        session,
        nav,
        id,
        Some(&Banner::Error(err.message.clone())),
        answer.map(|a| (a, err.message.as_str())),
        err.status,
    )
    .await
}

/// `POST /actions/tasks/{id}/answer`.
pub(crate) async fn answer(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    if let Err(m) = check_post(&dash.secret, &headers, &session, &form.csrf) {
        return forbidden(&m, &nav);
    }
    match routes::answer_task(dash.app.clone(), id.clone(), &form.answer).await {
        Ok(task) => {
            resume_work(&dash, &task).await;
            Redirect::to(&format!("/tasks/{}?done=answered", task.id)).into_response()
        }
        Err(e) => task_error(&dash, &session, &nav, &id, e, Some(&form.answer)).await,
    }
}

/// What a task button does.
#[derive(Clone, Copy)]
enum TaskAction {
    Cancel,
    Retry,
}

async fn task_action(
    dash: Dash,
    session: Session,
    headers: HeaderMap,
    id: String,
    form: CsrfOnly,
    action: TaskAction,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    if let Err(m) = check_post(&dash.secret, &headers, &session, &form.csrf) {
        return forbidden(&m, &nav);
    }
    let store = dash.app.store.clone();
    let key = id.clone();
    let result = crate::blocking(move || match action {
        TaskAction::Cancel => Ok(store.cancel_task(&key)?),
        TaskAction::Retry => Ok(store.retry_task(&key)?),
    })
    .await;
    match result {
        Ok(task) => {
            let done = match action {
                TaskAction::Cancel => "cancelled",
                TaskAction::Retry => {
                    resume_work(&dash, &task).await;
                    "retried"
                }
            };
            Redirect::to(&format!("/tasks/{}?done={done}", task.id)).into_response()
        }
        Err(e) => task_error(&dash, &session, &nav, &id, e, None).await,
    }
}

/// `POST /actions/tasks/{id}/cancel`.
pub(crate) async fn cancel(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    task_action(dash, session, headers, id, form, TaskAction::Cancel).await
}

/// `POST /actions/tasks/{id}/retry`.
pub(crate) async fn retry(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    task_action(dash, session, headers, id, form, TaskAction::Retry).await
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PauseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// The overview again with `err` above it.
async fn overview_error(dash: &Dash, session: &Session, nav: &Nav, err: ApiError) -> Response {
    match load_overview(dash).await {
        Ok(data) => {
            let draft = AddTaskDraft::empty(data.projects.first().cloned());
            let b = Banner::Error(err.message.clone());
            let page = overview_page(dash, session, &data, &draft, Some(&b));
            html_page(err.status, layout("Overview", nav, page))
        }
        Err(e) => pages::error_page(&e, nav),
    }
}

/// What a project button does.
enum ProjectAction {
    Pause(String),
    Resume,
    Run,
}

async fn project_action(
    dash: Dash,
    session: Session,
    headers: HeaderMap,
    project: String,
    csrf: &str,
    action: ProjectAction,
) -> Response {
    let nav = Nav::for_session(&dash, &session, &headers);
    if let Err(m) = check_post(&dash.secret, &headers, &session, csrf) {
        return forbidden(&m, &nav);
    }
    let app = dash.app.clone();
    let result = match action {
        ProjectAction::Pause(reason) => {
            routes::set_paused(app, project.clone(), true, Some(reason))
                .await
                .map(|_| "paused")
        }
        ProjectAction::Resume => routes::set_paused(app, project.clone(), false, None)
            .await
            .map(|_| "resumed"),
        ProjectAction::Run => routes::run_project(&app, &project).await.map(|r| {
            if r.started {
                "started"
            } else {
                "running"
            }
        }),
    };
    match result {
        Ok(done) => Redirect::to(&format!(
            "/?done={done}&project={}#projects",
            super::session::encode_query(&project)
        ))
        .into_response(),
        Err(e) => overview_error(&dash, &session, &nav, e).await,
    }
}

/// `POST /actions/projects/{project}/pause`.
pub(crate) async fn pause(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(form): Form<PauseForm>,
) -> Response {
    let action = ProjectAction::Pause(form.reason.clone());
    project_action(dash, session, headers, project, &form.csrf, action).await
}

/// `POST /actions/projects/{project}/resume`.
pub(crate) async fn resume(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    project_action(
        dash,
        session,
        headers,
        project,
        &form.csrf,
        ProjectAction::Resume,
    )
    .await
}

/// `POST /actions/projects/{project}/run`: start work now.
pub(crate) async fn run_now(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    project_action(
        dash,
        session,
        headers,
        project,
        &form.csrf,
        ProjectAction::Run,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_a_task_file() {
        let d = AddTaskDraft {
            title: "Fix add".into(),
            task_type: "fix".into(),
            priority: " 3 ".into(),
            allowed_files: "calc.py\n\n  lib/*.py \n".into(),
            acceptance_tests: "test_calc.py::test_add\n".into(),
            ..Default::default()
        };
        let spec = d.spec().unwrap();
        assert_eq!(spec.allowed_files, ["calc.py", "lib/*.py"]);
        assert_eq!(spec.acceptance_tests, ["test_calc.py::test_add"]);
        assert_eq!(spec.priority, 3);
        assert_eq!(spec.task_type, orch_core::TaskType::Fix);
        let bad = AddTaskDraft {
            priority: "high".into(),
            ..d.clone()
        };
        assert_eq!(bad.spec().unwrap_err().field.as_deref(), Some("priority"));
        let bad = AddTaskDraft {
            task_type: "poem".into(),
            ..d.clone()
        };
        assert_eq!(bad.spec().unwrap_err().field.as_deref(), Some("type"));
        assert_eq!(d.spec().unwrap().worker, None, "empty = the project's");
        let codex = AddTaskDraft {
            worker: "codex".into(),
            ..d.clone()
        };
        assert_eq!(
            codex.spec().unwrap().worker,
            Some(orch_core::WorkerKind::Codex)
        );
        let bad = AddTaskDraft {
            worker: "cursor".into(),
            ..d.clone()
        };
        let e = bad.spec().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("worker"));
        assert!(e.body().error.message.contains("mini-swe-agent"), "{e:?}");
        assert_eq!(form_field("allowed_files[1]"), "allowed_files");
        assert_eq!(form_field("task_type"), "type");
    }

    #[test]
    fn a_refused_draft_shows_the_message_at_its_field() {
        let mut d = AddTaskDraft::empty(Some("calc".into()));
        d.title = "<b>x</b>".into();
        d.error = Some((Some("title".into()), "too long".into()));
        let html = d
            .render("tok", &["calc".into(), "api".into()])
            .into_string();
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
        assert!(html.contains("too long"), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "escaped: {html}");
        assert!(html.contains(r#"name="csrf" value="tok""#), "{html}");
        assert!(html.contains(r#"<option value="calc" selected>"#), "{html}");
        assert!(html.contains(r#"<label for="f-title">"#), "{html}");
        // The worker: the project's by default, or any kind.
        assert!(
            html.contains(r#"<option value="" selected>the project's</option>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="mini-swe-agent">"#),
            "{html}"
        );
        d.worker = "aider".into();
        d.error = Some((Some("worker".into()), "no aider CLI".into()));
        let html = d.render("tok", &["calc".into()]).into_string();
        assert!(
            html.contains(r#"<option value="aider" selected>"#),
            "{html}"
        );
        assert!(html.contains("no aider CLI"), "{html}");
    }
}
