//! The API's one error shape, `{ "error": { "status", "field"?, "message" } }`,
//! and the extractors that turn every malformed request (bad JSON, wrong
//! content type, oversized body, bad path or query) into it.
//!
//! Every message says what was expected and how to fix the request, like
//! the CLI's errors do.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use orch_state::StateError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status code, repeated for clients that only keep the body.
    pub status: u16,
    /// The request field at fault (a JSON path such as `acceptance_tests[1]`,
    /// a path or query parameter, or a header), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What was wrong, what was expected and how to fix it.
    pub message: String,
}

/// An error answer. Handlers return `Result<_, ApiError>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// The request was well-formed but a field's value is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                field: self.field.clone(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::NotFound { .. } => ApiError::not_found(e.to_string()),
            // An id prefix the client can lengthen: a bad request, not a conflict.
            StateError::Ambiguous { .. } => ApiError::bad_request(e.to_string()),
            StateError::InvalidTransition { .. } => ApiError::conflict(e.to_string()),
            StateError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            StateError::Sqlite(rusqlite_err) if is_busy(&rusqlite_err.to_string()) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            _ => {
                tracing::error!("state store error answering an API request: {e}");
                ApiError::internal(e.to_string())
            }
        }
    }
}

fn is_busy(detail: &str) -> bool {
    detail.contains("locked") || detail.contains("busy")
}

/// A JSON body: `Content-Type: application/json`, at most the configured
/// body size, decoded with the path of the field at fault in the error.
/// Malformed JSON is a 400, a missing or wrong content type a 415, a
/// well-formed body with a bad field a 422 naming the field, an oversized
/// body a 413.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

#[async_trait::async_trait]
impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let format = body_format(req.headers(), false)?;
        let bytes = read_body(req, state).await?;
        decode(&bytes, format).map(ApiJson)
    }
}

/// An optional JSON body: an empty body (with or without a content type)
/// is `T::default()`; anything else must be valid JSON as for [`ApiJson`].
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

#[async_trait::async_trait]
impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let format = if has_type {
            Some(body_format(req.headers(), false)?)
        } else {
            None
        };
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let Some(format) = format else {
            return Err(missing_content_type(false));
        };
        decode(&bytes, format).map(OptionalJson)
    }
}

/// How a request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Yaml,
}

fn missing_content_type(yaml: bool) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        if yaml {
            "the request body needs the header `Content-Type: application/json` (or `application/yaml`); send the body as JSON with that header"
        } else {
            "the request body needs the header `Content-Type: application/json`; send the body as JSON with that header"
        },
    )
    .field("Content-Type")
}

pub(crate) fn body_format(headers: &HeaderMap, yaml: bool) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(missing_content_type(yaml));
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(Format::Json);
    }
    if yaml
        && matches!(
            mime.as_str(),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
        )
    {
        return Ok(Format::Yaml);
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "unsupported Content-Type `{mime}`: expected `application/json`{}; send the body with that header",
            if yaml { " or `application/yaml`" } else { "" }
        ),
    )
    .field("Content-Type"))
}

pub(crate) async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<bytes::Bytes, ApiError> {
    bytes::Bytes::from_request(req, state).await.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "the request body is larger than the server accepts (`[server] max_body_bytes`); send a smaller body or raise the limit",
            )
        } else {
            ApiError::new(status, format!("cannot read the request body: {}", rej.body_text()))
        }
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8], format: Format) -> Result<T, ApiError> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
            de.end().map_err(|e| {
                ApiError::bad_request(format!(
                    "the request body is not valid JSON: {e}; send one JSON document"
                ))
            })?;
            Ok(value)
        }
        Format::Yaml => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this route takes JSON only; send the body with `Content-Type: application/json`",
        )
        .field("Content-Type")),
    }
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    use serde_json::error::Category;
    match inner.classify() {
        Category::Data => {
            let message = strip_position(&inner.to_string()).to_string();
            if path == "." {
                // The document as a whole has the wrong shape (an array
                // where an object belongs, a missing required field).
                let field = missing_field(&message);
                let err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the request body does not match what this route expects: {message}; see /openapi.json for the fields"),
                );
                match field {
                    Some(f) => err.field(f),
                    None => err,
                }
            } else {
                ApiError::invalid(
                    path.clone(),
                    format!("`{path}`: {message}; see /openapi.json for the expected type"),
                )
            }
        }
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(format!(
            "the request body is not valid JSON: {inner}; send one JSON document with `Content-Type: application/json`"
        )),
    }
}

/// serde_json appends " at line L column C", which says nothing to an API
/// client that sent one line.
fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// A path parameter (a `String`), with the API's error shape.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

#[async_trait::async_trait]
impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rej| {
                ApiError::bad_request(format!(
                    "bad path parameter: {}; see /openapi.json for the route's parameters",
                    rej.body_text()
                ))
            })
    }
}

/// Query parameters, with the API's error shape.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

#[async_trait::async_trait]
impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|rej| {
                ApiError::bad_request(format!(
                    "bad query string: {}; see /openapi.json for the route's parameters",
                    rej.body_text()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        title: String,
        #[serde(default)]
        #[allow(dead_code)]
        tags: Vec<String>,
    }

    #[test]
    fn decode_names_the_field_and_the_expectation() {
        let e = decode::<Body>(br#"{"title": "x", "tags": ["a", 3]}"#, Format::Json).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("tags[1]"));
        assert!(e.message.contains("expected a string"), "{}", e.message);

        let e = decode::<Body>(br#"{"tags": []}"#, Format::Json).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("title"));
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);

        let e = decode::<Body>(br#"{"title": "#, Format::Json).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = decode::<Body>(br#"{"title": "x"} {}"#, Format::Json).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let e = decode::<Body>(br#"{"title": "x", "nope": 1}"#, Format::Json).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("nope"), "{}", e.message);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert_eq!(
            body_format(&h, false).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(body_format(&h, false).unwrap(), Format::Json);
        h.insert(header::CONTENT_TYPE, "application/yaml".parse().unwrap());
        assert!(body_format(&h, false).is_err());
        assert_eq!(body_format(&h, true).unwrap(), Format::Yaml);
    }

    #[test]
    fn state_errors_map_to_statuses() {
        let e: ApiError = StateError::NotFound { what: "x".into() }.into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = StateError::InvalidTransition {
            task: "t".into(),
            from: orch_core::TaskStatus::Merged,
            wanted: "be cancelled".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let body = serde_json::to_value(e.body()).unwrap();
        assert_eq!(body["error"]["status"], 409);
        assert!(body["error"].get("field").is_none());
    }
}
