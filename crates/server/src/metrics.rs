//! `GET /metrics`: the Prometheus text exposition of orch's metrics
//! (crates/telemetry). It sits behind the API's bearer token when one is
//! configured (Prometheus sends it with `authorization: credentials_file`);
//! on loopback without a token it is open. Not in the OpenAPI document: it
//! is Prometheus' format, not the API's JSON.

use crate::error::ApiError;
use crate::{blocking, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use orch_telemetry::metrics::Metrics;

/// The content type of Prometheus' text format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = blocking(move || Ok(Metrics::install().render(&state.store, &state.config))).await?;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}
