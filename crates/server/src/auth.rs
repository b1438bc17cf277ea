//! Bearer-token auth. The token comes from the environment variable named
//! by `[server] token_env` (or the `.env` beside the config); requests carry
//! `Authorization: Bearer <token>`. Tokens are compared as SHA-256 digests
//! in constant time, so neither their content nor their length leaks
//! through timing.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The digest a token is compared by.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
    match bearer(&req) {
        None => denied(
            "this server needs a bearer token: send the header `Authorization: Bearer <token>` with the token from the variable named by `[server] token_env` (the CLI reads it from ORCH_TOKEN)",
        ),
        Some(token) if bool::from(digest(token).ct_eq(&expected)) => next.run(req).await,
        Some(_) => denied(
            "the bearer token is wrong: send the token held by the variable named by `[server] token_env` on the server",
        ),
    }
}
