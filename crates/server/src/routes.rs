//! The JSON routes. Each answers the document the CLI's `--json` prints for
//! the same question (see [`crate::views`]); each write is one store
//! operation (a compare-and-set transaction), done only after every check on
//! the request passed, so a rejected request writes nothing.

use crate::error::{
    body_format, read_body, ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, Format, OptionalJson,
};
use crate::views::{self, CostDoc, ProjectStatus, Shown, StatusDoc};
use crate::{blocking, AppState, RunStarted};
use axum::extract::State;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use orch_config::{Config, ProjectConfig};
use orch_core::Task;
use orch_planner::task_file::{self, TaskFileErrorKind, TaskFileFormat, TaskSpec};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The configured project named `name`, or a 404 that lists them.
pub(crate) fn require_project<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a ProjectConfig, ApiError> {
    config
        .project_or_hint(name)
        .map_err(|m| ApiError::not_found(m).field("project"))
}

/// Registers the project in the store (as `orch` commands do before their
/// first write to it).
pub(crate) fn ensure_registered(
    config: &Config,
    store: &dyn orch_state::StateStore,
    project: &ProjectConfig,
) -> Result<(), ApiError> {
    store.ensure_project(
        &project.name,
        &config.project_path(project).display().to_string(),
    )?;
    Ok(())
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "The server is up.", body = Health)),
    security(())
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// A task body, JSON or YAML, parsed by the one task-file parser
/// (`orch add-task --file` reads the same documents).
pub(crate) struct TaskBody(pub TaskSpec);

#[async_trait::async_trait]
impl<S: Send + Sync> FromRequest<S> for TaskBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let format = match body_format(req.headers(), true)? {
            Format::Json => TaskFileFormat::Json,
            Format::Yaml => TaskFileFormat::Yaml,
        };
        let bytes = read_body(req, state).await?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::bad_request(format!("the request body is not UTF-8 text: {e}"))
        })?;
        task_file::parse(text, format).map(TaskBody).map_err(|e| {
            let err = match e.kind {
                TaskFileErrorKind::Syntax => ApiError::bad_request(e.message),
                TaskFileErrorKind::Invalid => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.message)
                }
            };
            if e.field.is_empty() {
                err
            } else {
                err.field(e.field)
            }
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/tasks",
    tag = "tasks",
    params(("project" = String, Path, description = "A configured project's name.")),
    request_body(
        description = "The new task's fields (as `orch add-task`), as JSON or as YAML (a task file).",
        content(
            (TaskSpec = "application/json"),
            (TaskSpec = "application/yaml"),
        )
    ),
    responses(
        (status = 201, description = "The task was added; it is pending.", body = Task),
        (status = 400, description = "The body is not valid JSON or YAML.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
        (status = 413, description = "The body is larger than `[server] max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` or `application/yaml`.", body = ErrorBody),
        (status = 422, description = "A field is missing or has a bad value; `field` names it.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_task(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
    TaskBody(spec): TaskBody,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let task = add_task_spec(state, project, spec).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// Adds `spec` to `project` and starts work on it: the API's and the
/// dashboard's form's one way to add a task.
pub(crate) async fn add_task_spec(
    state: AppState,
    project: String,
    spec: TaskSpec,
) -> Result<Task, ApiError> {
    let control = state.control.clone();
    let task = blocking(move || {
        let p = require_project(&state.config, &project)?;
        let new = views::new_task(&state.store, &p.name, &spec)
            .map_err(|e| ApiError::invalid(e.field, e.message))?;
        if let Some(kind) = new.worker {
            // Checked as the project's own worker is when the engine starts.
            orch_agent::external::factory::worker_for_task(&state.config, &p.name, kind)
                .map_err(|e| ApiError::invalid("worker", format!("`worker`: {e}")))?;
        }
        ensure_registered(&state.config, &state.store, p)?;
        Ok(state.store.add_task(&new)?)
    })
    .await?;
    // A task added to a running daemon starts without a separate
    // `POST …/run`; a run in progress takes it, or another follows it.
    // The task is stored either way, so a refusal (paused, shutting down)
    // only means it waits.
    let _ = control.run_now(&task.project).await;
    Ok(task)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// Only tasks in this status.
    #[param(value_type = Option<orch_core::TaskStatus>)]
    pub status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/projects/{project}/tasks",
    tag = "tasks",
    params(("project" = String, Path, description = "A configured project's name."), TasksQuery),
    responses(
        (status = 200, description = "The project's tasks, highest priority first, then oldest (`orch tasks --json`).", body = Vec<Task>),
        (status = 400, description = "Unknown status.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
    ApiQuery(q): ApiQuery<TasksQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    let tasks = blocking(move || {
        let p = require_project(&state.config, &project)?;
        let status = q
            .status
            .as_deref()
            .map(str::parse::<orch_core::TaskStatus>)
            .transpose()
            .map_err(|e| ApiError::bad_request(e).field("status"))?;
        Ok(state.store.tasks(Some(&p.name), status)?)
    })
    .await?;
    Ok(Json(tasks))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix of at least 4 characters.")),
    responses(
        (status = 200, description = "The task and its attempts, with verification and verdict (`orch show --json`).", body = Shown),
        (status = 400, description = "The id prefix matches several tasks.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_task(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Shown>, ApiError> {
    let shown = blocking(move || Ok(views::show(&state.store, &id)?)).await?;
    Ok(Json(shown))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/attempts/{n}/transcript",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "A task id, or a unique prefix of at least 4 characters."),
        ("n" = u32, Path, description = "The attempt's number (1-based)."),
    ),
    responses(
        (status = 200, description = "The attempt's full transcript (the run log) from the audit trail, as the JSON file the engine wrote.", body = serde_json::Value),
        (status = 400, description = "A bad attempt number, or an ambiguous id prefix.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "No such task or attempt, or no transcript written yet.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn transcript(
    State(state): State<AppState>,
    ApiPath((id, n)): ApiPath<(String, u32)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let value = blocking(move || {
        let task = state.store.task(&id)?;
        let attempts = state.store.attempts(&task.id)?;
        let Some(at) = attempts.iter().find(|a| a.number == n) else {
            return Err(ApiError::not_found(format!(
                "task {} has no attempt {n}; it has {} (see GET /api/v1/tasks/{})",
                task.id,
                if attempts.is_empty() {
                    "none yet".to_string()
                } else {
                    format!("attempts 1 to {}", attempts.len())
                },
                task.id
            ))
            .field("n"));
        };
        let Some(md) = &at.audit_path else {
            return Err(ApiError::not_found(format!(
                "attempt {n} of task {} has no transcript yet: it is written when the attempt ends; try again then",
                task.id
            )));
        };
        let path = std::path::Path::new(md).with_extension("json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ApiError::not_found(format!(
                "the transcript of attempt {n} of task {} cannot be read at {}: {e}; the audit trail may have been moved or pruned",
                task.id,
                path.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            ApiError::internal(format!(
                "the transcript at {} is not valid JSON: {e}",
                path.display()
            ))
        })
    })
    .await?;
    Ok(Json(value))
}

/// `POST /api/v1/tasks/{id}/answer`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// The answer to the task's question; the next attempt sees it.
    pub answer: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/answer",
    tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix of at least 4 characters.")),
    request_body(content = AnswerRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Answered: the task is pending again, with the answer for its next attempt.", body = Task),
        (status = 400, description = "The body is not valid JSON, or the id prefix is ambiguous.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "The task is not waiting for an answer (not `needs_human`).", body = ErrorBody),
        (status = 413, description = "The body is larger than `[server] max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "The answer is missing or empty.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn answer(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AnswerRequest>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(answer_task(state, id, &req.answer).await?))
}

/// Answers a `needs_human` task (the API's and the dashboard's one way).
pub(crate) async fn answer_task(
    state: AppState,
    id: String,
    answer: &str,
) -> Result<Task, ApiError> {
    let text = answer.trim().to_string();
    if text.is_empty() {
        return Err(ApiError::invalid(
            "answer",
            "the answer must not be empty; write what the worker should know",
        ));
    }
    blocking(move || Ok(state.store.answer(&id, &text)?)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix of at least 4 characters.")),
    responses(
        (status = 200, description = "Cancelled; a running attempt stops within a moment.", body = Task),
        (status = 400, description = "The id prefix is ambiguous.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "The task already finished (merged, failed or cancelled).", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Task>, ApiError> {
    let task = blocking(move || Ok(state.store.cancel_task(&id)?)).await?;
    Ok(Json(task))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/retry",
    tag = "tasks",
    params(("id" = String, Path, description = "A task id, or a unique prefix of at least 4 characters.")),
    responses(
        (status = 200, description = "The failed or cancelled task is pending again (its attempt count is kept, its failure reason cleared).", body = Task),
        (status = 400, description = "The id prefix is ambiguous.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "The task is neither failed nor cancelled, or its cancelled attempt is still stopping.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Task>, ApiError> {
    let task = blocking(move || Ok(state.store.retry_task(&id)?)).await?;
    Ok(Json(task))
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/run",
    tag = "projects",
    params(("project" = String, Path, description = "A configured project's name.")),
    responses(
        (status = 200, description = "Work was started now, or was already in progress (`started` says which).", body = RunStarted),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
        (status = 409, description = "The daemon cannot start work on the project now; `message` says why.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn run(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
) -> Result<Json<RunStarted>, ApiError> {
    Ok(Json(run_project(&state, &project).await?))
}

/// Starts work on `project` now (the API's and the dashboard's one way).
pub(crate) async fn run_project(state: &AppState, project: &str) -> Result<RunStarted, ApiError> {
    let name = require_project(&state.config, project)?.name.clone();
    let started = state
        .control
        .run_now(&name)
        .await
        .map_err(|m| ApiError::conflict(m).field("project"))?;
    Ok(started)
}

/// `POST /api/v1/projects/{project}/pause`'s optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why; shown in the status.
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/pause",
    tag = "projects",
    params(("project" = String, Path, description = "A configured project's name.")),
    request_body(content = Option<PauseRequest>, content_type = "application/json", description = "Optional; an empty body pauses without a reason."),
    responses(
        (status = 200, description = "Paused: running attempts finish, no new work starts. The project's status.", body = ProjectStatus),
        (status = 400, description = "The body is not valid JSON.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
        (status = 413, description = "The body is larger than `[server] max_body_bytes`.", body = ErrorBody),
        (status = 415, description = "A body that is not `application/json`.", body = ErrorBody),
        (status = 422, description = "A field has a bad value.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
    OptionalJson(req): OptionalJson<PauseRequest>,
) -> Result<Json<ProjectStatus>, ApiError> {
    set_paused(state, project, true, req.reason).await
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{project}/resume",
    tag = "projects",
    params(("project" = String, Path, description = "A configured project's name.")),
    responses(
        (status = 200, description = "Resumed (and the failures-in-a-row counter reset). The project's status.", body = ProjectStatus),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
) -> Result<Json<ProjectStatus>, ApiError> {
    set_paused(state, project, false, None).await
}

pub(crate) async fn set_paused(
    state: AppState,
    project: String,
    paused: bool,
    reason: Option<String>,
) -> Result<Json<ProjectStatus>, ApiError> {
    let reason = reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let status = blocking(move || {
        let p = require_project(&state.config, &project)?;
        ensure_registered(&state.config, &state.store, p)?;
        state.store.set_paused(&p.name, paused, reason.as_deref())?;
        Ok(views::project_status(&state.config, &state.store, p)?)
    })
    .await?;
    Ok(Json(status))
}

#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "projects",
    responses(
        (status = 200, description = "Every configured project at a glance (`orch status --json`).", body = StatusDoc),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<StatusDoc>, ApiError> {
    let doc = blocking(move || Ok(views::status(&state.config, &state.store)?)).await?;
    Ok(Json(doc))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostQuery {
    /// First day to include: YYYY-MM-DD, `today`, or days back like `7d`.
    pub since: Option<String>,
    /// Only this project.
    pub project: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/cost",
    tag = "projects",
    params(CostQuery),
    responses(
        (status = 200, description = "Model spending by day, project, role and model (`orch cost --json`).", body = CostDoc),
        (status = 400, description = "A bad `since`.", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token.", body = ErrorBody),
        (status = 404, description = "Unknown project.", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cost(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CostQuery>,
) -> Result<Json<CostDoc>, ApiError> {
    let doc = blocking(move || {
        if let Some(p) = &q.project {
            require_project(&state.config, p)?;
        }
        let since = q
            .since
            .as_deref()
            .map(|s| views::parse_since(s.trim(), chrono::Utc::now().date_naive()))
            .transpose()
            .map_err(|m| ApiError::bad_request(m).field("since"))?;
        Ok(views::cost(&state.store, q.project.as_deref(), since)?)
    })
    .await?;
    Ok(Json(doc))
}
