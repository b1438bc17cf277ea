//! The dashboard's sessions, login and CSRF protection.
//!
//! - Every browser gets a random session id in the `orch_session` cookie
//!   (HttpOnly, SameSite=Strict, Path=/) on its first page.
//! - With a server token, pages need the token once: `/login` checks it
//!   (as the API does, by digest in constant time) and keeps it in the
//!   token cookie ([`crate::auth::COOKIE`]), which also authenticates the
//!   page's reads of `/api/v1/events` and of the page fragments.
//! - Every form that changes something carries a CSRF token, the
//!   HMAC-SHA256 of the session id under a secret made when the server
//!   starts, and every POST is refused unless that token matches and, when
//!   the browser sends them, `Sec-Fetch-Site` says same-origin and
//!   `Origin` is this server. This holds without a server token too.

use super::pages::{fragment_response, html_page, layout, Nav};
use super::Dash;
use crate::auth;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use hmac::{Hmac, Mac};
use maud::{html, Markup};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie holding the session id.
pub(crate) const SESSION_COOKIE: &str = "orch_session";

/// The browser's session, set by [`ensure_session`] for every dashboard
/// request.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
}

/// A fresh random session id (128 random bits, hex).
fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A session id this server could have made: 32 hex digits.
fn plausible_session(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 256-bit secret for the CSRF tokens, new at every start.
pub(crate) fn new_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret
}

/// `Set-Cookie` for a dashboard cookie: HttpOnly, SameSite=Strict, Path=/;
/// `clear` expires it.
pub(crate) fn set_cookie(name: &str, value: &str, clear: bool) -> HeaderValue {
    let age = if clear { "; Max-Age=0" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("orch_invalid=; Max-Age=0"))
}

/// Gives every request a [`Session`]: the one in its cookie, else a new
/// one that the response sets.
pub(crate) async fn ensure_session(mut req: Request, next: Next) -> Response {
    let existing = auth::cookie(req.headers(), SESSION_COOKIE)
        .filter(|id| plausible_session(id))
        .map(str::to_string);
    let (id, new) = match existing {
        Some(id) => (id, false),
        None => (new_session_id(), true),
    };
    req.extensions_mut().insert(Session { id: id.clone() });
    let mut resp = next.run(req).await;
    if new {
        resp.headers_mut()
            .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, false));
    }
    resp
}

/// The CSRF token of `session`: hex HMAC-SHA256 under `secret`.
pub(crate) fn csrf_token(secret: &[u8; 32], session: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(b"orch-dashboard-csrf\0");
    mac.update(session.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a cross-site POST: `Sec-Fetch-Site` other than same-origin
/// (or `none`, a user's own navigation), or an `Origin` that is not this
/// server's (`Host`). Requests without the headers pass; the CSRF token
/// still guards them.
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(format!(
                "this form was sent from another site (Sec-Fetch-Site: {site}); submit it from the dashboard's own page"
            ));
        }
    }
    if let Some(origin) = get("origin") {
        let host = get("host").unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(format!(
                "this form was sent from {origin}, not from this server ({host}); submit it from the dashboard's own page"
            ));
        }
    }
    Ok(())
}

/// The checks every dashboard POST passes before it does anything: same
/// origin, and the form's CSRF token is the session's.
pub(crate) fn check_post(
    secret: &[u8; 32],
    headers: &HeaderMap,
    session: &Session,
    form_token: &str,
) -> Result<(), String> {
    same_origin(headers)?;
    let expected = csrf_token(secret, &session.id);
    let ok: bool = expected
        .as_bytes()
        .ct_eq(form_token.trim().as_bytes())
        .into();
    if !ok {
        return Err(
            "the form's security token is missing or stale (the server restarted, or the session cookie is gone); reload the page and send the form again".into(),
        );
    }
    Ok(())
}

/// The answer to a POST that failed [`check_post`].
pub(crate) fn forbidden(message: &str, nav: &Nav) -> Response {
    let body = html! {
        h1 { "Request refused" }
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the overview" } }
    };
    html_page(StatusCode::FORBIDDEN, layout("Refused", nav, body))
}

/// True when the request carries the server's token in its cookie (or
/// the server has none).
pub(crate) fn logged_in(dash: &Dash, headers: &HeaderMap) -> bool {
    match &dash.app.token_digest {
        None => true,
        Some(expected) => {
            auth::cookie_token(headers).is_some_and(|t| auth::token_matches(expected, &t))
        }
    }
}

/// Pages and fragments need the token cookie when the server has a token:
/// a page sends the browser to `/login`, a fragment or form gets a 401.
pub(crate) async fn require_login(State(dash): State<Dash>, req: Request, next: Next) -> Response {
    if logged_in(&dash, req.headers()) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    if req.method() == axum::http::Method::GET && !path.starts_with("/fragments/") {
        let next_url = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        return Redirect::to(&format!("/login?next={}", encode_query(&next_url))).into_response();
    }
    let body = html! {
        p.error role="alert" { "This dashboard needs its token: " a href="/login" { "log in" } " and give it." }
    };
    fragment_response(StatusCode::UNAUTHORIZED, body)
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `next` if it is a path on this server (`/…`, not `//host`), else `/`.
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

fn login_markup(dash: &Dash, session: &Session, next: &str, error: Option<&str>) -> Markup {
    let nav = Nav::anonymous();
    let body = html! {
        h1 { "Log in to orch" }
        @if dash.app.token_digest.is_none() {
            p { "This server needs no token (it listens on loopback without one). "
                a href="/" { "Open the overview" } "." }
        } @else {
            p { "This server needs its API token: the value of the environment variable that "
                code { "[server] token_env" } " names. It is kept in a cookie for this browser session." }
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf_token(&dash.secret, &session.id));
                input type="hidden" name="next" value=(next);
                @if let Some(e) = error {
                    p.error #login-error role="alert" { (e) }
                }
                label for="token" { "Token" }
                input #token type="password" name="token" required autocomplete="current-password"
                    aria-describedby=[error.map(|_| "login-error")];
                button type="submit" { "Log in" }
            }
        }
    };
    layout("Log in", &nav, body)
}

/// `GET /login`.
pub(crate) async fn login_page(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    html_page(StatusCode::OK, login_markup(&dash, &session, &next, None))
}

/// `POST /login`: the token is checked and kept in the cookie.
pub(crate) async fn login(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(Some(&form.next));
    if let Err(m) = check_post(&dash.secret, &headers, &session, &form.csrf) {
        return forbidden(&m, &Nav::anonymous());
    }
    let Some(expected) = &dash.app.token_digest else {
        return Redirect::to(&next).into_response();
    };
    let token = form.token.trim();
    if !auth::token_matches(expected, token) {
        let message = if token.is_empty() {
            "Give the token: the value of the variable `[server] token_env` names on the server."
        } else {
            "That is not the server's token. Give the value of the variable `[server] token_env` names on the server."
        };
        return html_page(
            StatusCode::UNAUTHORIZED,
            login_markup(&dash, &session, &next, Some(message)),
        );
    }
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(auth::COOKIE, &hex, false));
    resp
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: forgets the token cookie.
pub(crate) async fn logout(
    State(dash): State<Dash>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Err(m) = check_post(&dash.secret, &headers, &session, &form.csrf) {
        return forbidden(&m, &Nav::anonymous());
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(auth::COOKIE, "", true));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn session(id: &str) -> Session {
        Session { id: id.into() }
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_session_and_the_secret() {
        let secret = [7u8; 32];
        let a = csrf_token(&secret, "aaaa");
        assert_eq!(a.len(), 64);
        assert_eq!(a, csrf_token(&secret, "aaaa"), "deterministic");
        assert_ne!(a, csrf_token(&secret, "bbbb"), "per session");
        assert_ne!(a, csrf_token(&[8u8; 32], "aaaa"), "per server start");
        let h = headers(&[]);
        assert!(check_post(&secret, &h, &session("aaaa"), &a).is_ok());
        let err = check_post(&secret, &h, &session("bbbb"), &a).unwrap_err();
        assert!(err.contains("reload the page"), "{err}");
        assert!(check_post(&secret, &h, &session("aaaa"), "").is_err());
        assert!(check_post(&secret, &h, &session("aaaa"), &a[..63]).is_err());
    }

    #[test]
    fn cross_site_posts_are_refused_even_with_the_token() {
        let secret = [1u8; 32];
        let t = csrf_token(&secret, "s");
        let ok = headers(&[
            ("host", "127.0.0.1:7777"),
            ("origin", "http://127.0.0.1:7777"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check_post(&secret, &ok, &session("s"), &t).is_ok());
        for bad in [
            headers(&[("host", "127.0.0.1:7777"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:7777"), ("sec-fetch-site", "same-site")]),
            headers(&[
                ("host", "127.0.0.1:7777"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:7777"),
                ("origin", "http://127.0.0.1:8888"),
            ]),
            headers(&[("host", "127.0.0.1:7777"), ("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:7777")]),
        ] {
            let err = check_post(&secret, &bad, &session("s"), &t).unwrap_err();
            assert!(err.contains("dashboard's own page"), "{err}");
        }
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/tasks/abc?x=1")), "/tasks/abc?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil")), "/");
        assert_eq!(local_path(None), "/");
        assert_eq!(encode_query("/tasks/a b?x=1&y"), "/tasks/a%20b%3Fx%3D1%26y");
    }

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        let c = set_cookie(SESSION_COOKIE, "abc", false);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(set_cookie("x", "", true)
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        assert!(plausible_session(&new_session_id()));
        assert!(!plausible_session("x; y"));
        assert_ne!(new_secret(), new_secret());
    }
}
