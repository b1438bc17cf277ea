//! The redaction layer. Secret values (API keys read from the environment)
//! are registered once when they are loaded; every place that writes text
//! somewhere lasting — process output, tool results, events, audit files,
//! logs — passes it through `redact`, so a key that leaks into a command's
//! output or a file the worker reads never reaches disk or a log.

use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret.
pub const MARKER: &str = "[redacted]";

/// Values shorter than this are not treated as secrets: replacing them
/// would mangle ordinary text, and no real API key is that short.
const MIN_SECRET_LEN: usize = 8;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value to be redacted from now on.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut list) = SECRETS.write() {
        if !list.iter().any(|s| s == secret) {
            list.push(secret.to_string());
            // Longest first, so a secret containing another is cut whole.
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

/// `text` with every registered secret replaced by the marker.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(list) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    if !list.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in list.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MARKER);
        }
    }
    Cow::Owned(out)
}

/// Redacts every string inside a JSON value.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_replaced_everywhere() {
        register("sk-unit-test-secret-0001");
        register("short");
        assert_eq!(redact("key=sk-unit-test-secret-0001;"), "key=[redacted];");
        assert_eq!(redact("short stays"), "short stays");
        let mut v = serde_json::json!({"a": ["x sk-unit-test-secret-0001 y"], "b": 1});
        redact_json(&mut v);
        assert_eq!(v["a"][0], "x [redacted] y");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
