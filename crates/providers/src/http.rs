//! The small HTTP helpers every wire-format client needs, kept once here:
//! checking `base_url` and building the client, logging a request, reading
//! a body under a size cap, `Retry-After`, turning transport failures and
//! error bodies into [`ProviderError`]s, keeping the API key out of error
//! text, and capping what goes into an error.
//!
//! Each client keeps what really differs (its hints, its error-body shape,
//! how it reports timeouts) and passes it in.

use crate::{ChatResponse, DeltaSink, ProviderError, StreamDelta};
use serde_json::Value;
use std::time::Duration;

/// Error bodies are cut to this many bytes before they go into an error.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 2048;

/// Longest `Retry-After` taken from a server; a longer one is cut to this
/// (the retry policy caps it further).
const MAX_RETRY_AFTER_SECONDS: f64 = 86_400.0;

/// Log one outgoing chat request at debug level. A macro, not a function,
/// so the event keeps the calling client's module as its target.
macro_rules! debug_request {
    ($provider:expr, $request:expr, $what:literal) => {
        ::tracing::debug!(
            provider = %$provider,
            model = %$request.model,
            messages = $request.messages.len(),
            tools = $request.tools.len(),
            $what
        )
    };
}
pub(crate) use debug_request;

/// `base` (the trimmed `base_url`) as an http(s) URL. Errors quote
/// `base_url` as configured and show `example`, a right one.
pub(crate) fn parse_base_url(
    provider: &str,
    base_url: &str,
    base: &str,
    example: &str,
) -> Result<reqwest::Url, ProviderError> {
    let parsed = reqwest::Url::parse(base).map_err(|e| {
        ProviderError::Config(format!(
            "provider {provider}: base_url {base_url:?} is not a valid URL ({e}); \
             use something like {example}"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ProviderError::Config(format!(
            "provider {provider}: base_url {base_url:?} must start with http:// or https://"
        )));
    }
    Ok(parsed)
}

/// The HTTP client for one provider. Connecting may take `request_timeout`
/// (30 s at most); with `whole_request`, every request is also cut off
/// after `request_timeout` (clients that stream long answers bound each
/// read themselves instead). A zero timeout is refused.
pub(crate) fn client(
    provider: &str,
    request_timeout: Duration,
    whole_request: bool,
) -> Result<reqwest::Client, ProviderError> {
    if request_timeout.is_zero() {
        return Err(ProviderError::Config(format!(
            "provider {provider}: the request timeout is 0; set request_timeout_seconds above 0"
        )));
    }
    let mut builder =
        reqwest::Client::builder().connect_timeout(request_timeout.min(Duration::from_secs(30)));
    if whole_request {
        builder = builder.timeout(request_timeout);
    }
    builder.build().map_err(|e| {
        ProviderError::Config(format!(
            "provider {provider}: cannot build the HTTP client: {e}"
        ))
    })
}

/// Read the body, stopping once it passes `max` bytes; the flag says it was
/// cut. `idle` bounds the wait for each chunk and makes the error when it
/// passes (for clients without a client-wide timeout); `fail` turns a
/// transport error into the client's error.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    idle: Option<(Duration, &(dyn Fn() -> ProviderError + Sync))>,
    fail: impl Fn(&reqwest::Error) -> ProviderError,
) -> Result<(Vec<u8>, bool), ProviderError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok((Vec::new(), true));
    }
    let mut buf = Vec::new();
    loop {
        let next = match idle {
            Some((limit, on_idle)) => tokio::time::timeout(limit, response.chunk())
                .await
                .map_err(|_| on_idle())?,
            None => response.chunk().await,
        };
        let Some(chunk) = next.map_err(|e| fail(&e))? else {
            break;
        };
        if buf.len() + chunk.len() > max {
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// The response's `Retry-After`, when it is a number of seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()
        .and_then(parse_retry_after)
}

/// `Retry-After` as seconds, fractions allowed (the form APIs use). The
/// HTTP-date form is ignored: the retry schedule applies then.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER_SECONDS)))
}

/// `Unreachable` for a request to `url` that could not be sent or read: the
/// error with its causes, then `hint` (what to check), with `key` redacted.
pub(crate) fn unreachable(
    provider: &str,
    url: &str,
    e: &reqwest::Error,
    hint: &str,
    key: Option<&str>,
) -> ProviderError {
    ProviderError::Unreachable {
        provider: provider.to_string(),
        url: url.to_string(),
        detail: redact(&format!("{} ({hint})", error_chain(e)), key),
    }
}

/// A reqwest error with its causes ("error sending request: ... connection refused").
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Servers sometimes echo the credentials they rejected; never pass that on.
pub(crate) fn redact(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) if text.contains(key) => text.replace(key, "<redacted>"),
        _ => text.to_string(),
    }
}

/// The API's own message from an error body (`{"error": ...}`, else a
/// top-level `{"message": "..."}`), else the body, capped.
pub(crate) fn error_message(bytes: &[u8]) -> String {
    error_message_with(bytes, |v| match v.get("error") {
        Some(err) => Some(error_text(err)),
        None => v.get("message").and_then(Value::as_str).map(str::to_string),
    })
}

/// The message `find` picks out of a JSON error body, else the body itself
/// (or "(empty body)"), capped at [`MAX_ERROR_BODY_BYTES`] either way.
pub(crate) fn error_message_with(
    bytes: &[u8],
    find: impl FnOnce(&Value) -> Option<String>,
) -> String {
    if let Some(message) = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| find(&v))
    {
        return cap(&message, MAX_ERROR_BODY_BYTES);
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        cap(text, MAX_ERROR_BODY_BYTES)
    }
}

/// `{"message": ...}` or a bare string; otherwise the JSON itself.
pub(crate) fn error_text(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        other => match other.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => other.to_string(),
        },
    }
}

/// The start of a body for an error message, quoted, at most `max` bytes.
pub(crate) fn preview(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max * 4)]);
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        format!("{:?}", cap(&text, max))
    }
}

/// At most `max` bytes, cut at a character boundary, with a marker.
pub(crate) fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
}

/// A whole answer as the deltas a stream of it would have produced (for a
/// server that ignored the request to stream).
pub(crate) fn replay_to_sink(response: &ChatResponse, sink: DeltaSink<'_>) {
    if !response.message.content.is_empty() {
        sink(&StreamDelta::Text(response.message.content.clone()));
    }
    for (index, call) in response.message.tool_calls.iter().enumerate() {
        sink(&StreamDelta::ToolCallStart {
            index,
            id: call.id.clone(),
            name: call.name.clone(),
        });
        sink(&StreamDelta::ToolCallArgs {
            index,
            fragment: call.arguments.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_reads_seconds_and_ignores_the_rest() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_retry_after("9999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    }

    #[test]
    fn error_bodies_give_the_message_the_caller_finds() {
        assert_eq!(error_message(br#"{"error":{"message":"m"}}"#), "m");
        assert_eq!(error_message(br#"{"message":"top"}"#), "top");
        // A caller that reads only `error` quotes other JSON whole.
        let only_error = |b: &[u8]| error_message_with(b, |v| v.get("error").map(error_text));
        assert_eq!(only_error(br#"{"message":"top"}"#), r#"{"message":"top"}"#);
        assert_eq!(only_error(br#"{"error":{"code":1}}"#), r#"{"code":1}"#);
        assert_eq!(only_error(b" \n"), "(empty body)");
        let long = error_message_with("x".repeat(5000).as_bytes(), |_| None);
        assert!(
            long.starts_with(&"x".repeat(MAX_ERROR_BODY_BYTES)),
            "{long}"
        );
        assert!(long.ends_with("… (2952 bytes cut)"), "{long}");
        assert_eq!(error_text(&json!("plain")), "plain");
    }

    #[test]
    fn base_url_and_client_errors_say_what_to_fix() {
        let err = parse_base_url("p", " nope ", "nope", "http://h:1/v1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\" nope \"") && err.contains("use something like http://h:1/v1"),
            "{err}"
        );
        let err = parse_base_url("p", "ftp://h", "ftp://h", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must start with http://"), "{err}");
        assert_eq!(
            parse_base_url("p", "http://h:1/v1/", "http://h:1/v1", "x")
                .unwrap()
                .path(),
            "/v1"
        );
        let err = client("p", Duration::ZERO, true).unwrap_err().to_string();
        assert!(err.contains("set request_timeout_seconds above 0"), "{err}");
        assert!(client("p", Duration::from_millis(1), false).is_ok());
    }

    /// Records each event's target and fields.
    #[derive(Clone, Default)]
    struct Events(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

    impl tracing::field::Visit for Events {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if let Some(last) = self.0.lock().unwrap().last_mut() {
                last.1.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
    }

    impl tracing::Subscriber for Events {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let target = event.metadata().target().to_string();
            self.0.lock().unwrap().push((target, String::new()));
            event.record(&mut self.clone());
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn request_log_keeps_the_callers_target() {
        let events = Events::default();
        let request = crate::ChatRequest::new("m-1", vec![crate::Message::user("hi")]);
        tracing::subscriber::with_default(events.clone(), || {
            debug_request!("prov", request, "test request");
        });
        let seen = events.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(
                module_path!().to_string(),
                "message=test request provider=prov model=m-1 messages=1 tools=0 ".to_string()
            )]
        );
    }

    #[test]
    fn cap_preview_and_redact() {
        // Never cut inside a character: "é" is two bytes.
        assert_eq!(cap("ééé", 3), "é… (4 bytes cut)");
        assert_eq!(cap("short", 10), "short");
        assert_eq!(preview(b"  ", 10), "(empty body)");
        assert_eq!(preview(b"abcdef", 3), "\"abc… (3 bytes cut)\"");
        assert_eq!(redact("key k-1 bad", Some("k-1")), "key <redacted> bad");
        assert_eq!(redact("key k-1 bad", None), "key k-1 bad");
    }
}
