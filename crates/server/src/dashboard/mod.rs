//! The web dashboard `orch serve` answers at `/`, beside the JSON API and
//! over the same store: server-rendered HTML (maud) that reads without
//! JavaScript, forms that post and redirect, SVG plots drawn on the
//! server, and one small script (embedded in the binary) that follows
//! `/api/v1/events` and re-fetches the page's live part when an event for
//! it arrives.
//!
//! | route | shows or does |
//! |---|---|
//! | `GET /` | projects, queue, workers, merge queue, spending, plots |
//! | `GET /tasks/{id}` | one task: attempts, transcript, diff, verification, verdict |
//! | `GET /fragments/overview[/plots]`, `/fragments/tasks/{id}` | the pages' live parts |
//! | `POST /actions/…` | add, answer, cancel, retry; pause, resume, run now |
//! | `GET`/`POST /login`, `POST /logout` | the token, kept in a cookie |
//! | `GET /assets/dashboard.{js,css}` | the script and the style sheet |
//!
//! None of these are in `/openapi.json`: they are for people, the API is
//! for programs. Every action goes through the same functions as its API
//! route ([`crate::routes`], [`crate::views`]).

mod forms;
mod pages;
mod plots;
mod session;
mod task_page;

use crate::AppState;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What the dashboard's handlers share: the API's state and the secret
/// its CSRF tokens are made with.
#[derive(Clone)]
pub(crate) struct Dash {
    pub(crate) app: AppState,
    pub(crate) secret: Arc<[u8; 32]>,
}

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The dashboard's routes, to merge into the API's router.
pub(crate) fn router(app: AppState) -> Router<AppState> {
    let dash = Dash {
        app,
        secret: Arc::new(session::new_secret()),
    };
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/fragments/overview", get(pages::overview_fragment))
        .route("/fragments/overview/plots", get(pages::plots_fragment))
        .route("/tasks/:id", get(task_page::page))
        .route("/fragments/tasks/:id", get(task_page::fragment))
        .route("/actions/tasks", post(forms::add_task))
        .route("/actions/tasks/:id/answer", post(forms::answer))
        .route("/actions/tasks/:id/cancel", post(forms::cancel))
        .route("/actions/tasks/:id/retry", post(forms::retry))
        .route("/actions/projects/:project/pause", post(forms::pause))
        .route("/actions/projects/:project/resume", post(forms::resume))
        .route("/actions/projects/:project/run", post(forms::run_now))
        .route_layer(axum::middleware::from_fn_with_state(
            dash.clone(),
            session::require_login,
        ));
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .merge(protected)
        .layer(axum::middleware::from_fn(session::ensure_session))
        .with_state(dash)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
