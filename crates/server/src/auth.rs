//! Bearer-token auth. The token comes from the environment variable named
//! by `[server] token_env` (or the `.env` beside the config); requests carry
//! `Authorization: Bearer <token>`. Tokens are compared as SHA-256 digests
//! in constant time, so neither their content nor their length leaks
//! through timing. The dashboard's login keeps the token in a cookie
//! ([`COOKIE`], hex-encoded); it is accepted instead of the header for
//! reads only (GET, HEAD), so every state-changing request still needs the
//! header or a dashboard form with its CSRF token.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The digest a token is compared by.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The cookie that holds the dashboard's token, hex-encoded.
pub(crate) const COOKIE: &str = "orch_token";

/// True when `token` is the one whose digest is `expected` (constant time).
pub(crate) fn token_matches(expected: &[u8; 32], token: &str) -> bool {
    bool::from(digest(token).ct_eq(expected))
}

/// The value of cookie `name`, if the request has it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The token kept in the [`COOKIE`], decoded.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let hex = cookie(headers, COOKIE)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The token in `Authorization: Bearer <token>`, if the header is that.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Lets the request through when no token is configured or it carries the
/// right one; otherwise a 401 that says what to send.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.token_digest else {
        return next.run(req).await;
    };
    let denied = |message: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
            .field("Authorization")
            .into_response()
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let offered = bearer(&req)
        .map(str::to_string)
        .or_else(|| read_only.then(|| cookie_token(req.headers())).flatten());
    match offered.as_deref() {
        None => denied(
            "this server needs a bearer token: send the header `Authorization: Bearer <token>` with the token from the variable named by `[server] token_env` (the CLI reads it from ORCH_TOKEN)",
        ),
        Some(token) if token_matches(&expected, token) => next.run(req).await,
        Some(_) => denied(
            "the bearer token is wrong: send the token held by the variable named by `[server] token_env` on the server",
        ),
    }
}
