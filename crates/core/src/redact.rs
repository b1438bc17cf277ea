//! The redaction layer. Secret values (API keys read from the environment)
//! are registered once when they are loaded; every place that writes text
//! somewhere lasting — process output, tool results, events, audit files,
//! logs — passes it through `redact`, so a key that leaks into a command's
//! output or a file the worker reads never reaches disk or a log.
//!
//! The first line of defence is that sandboxed commands cannot read the
//! secrets at all (the sandbox hides the config, `.env` and data_dir).
//! This layer is the second, so it also catches the common encodings of
//! each secret, which a command can produce as easily as a copy:
//!
//! - base64, standard and URL-safe alphabets, with and without padding,
//!   and inside a longer base64 blob at each of the 3 byte alignments (for
//!   each alignment, the run of characters that depends only on the
//!   secret's bytes: `base64 .env` encodes the key somewhere in the middle);
//! - hex, lower and upper case;
//! - URL-encoding (reserved bytes only, or every byte; either hex case).
//!
//! base64 and hex are matched across line breaks too (`base64` wraps at 76
//! columns, `xxd -p` at 60). Each match is replaced by the marker.

use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret.
pub const MARKER: &str = "[redacted]";

/// Values shorter than this are not treated as secrets: replacing them
/// would mangle ordinary text, and no real API key is that short.
const MIN_SECRET_LEN: usize = 8;

/// One form in which a secret may appear.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    /// May be split by line breaks (base64, hex).
    wrapped: bool,
}

#[derive(Debug, Default)]
struct Registry {
    secrets: Vec<String>,
    /// Every pattern of every secret, longest first.
    patterns: Vec<Pattern>,
}

static SECRETS: RwLock<Registry> = RwLock::new(Registry {
    secrets: Vec::new(),
    patterns: Vec::new(),
});

/// Registers a secret value to be redacted from now on, with its encodings.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut reg) = SECRETS.write() {
        if reg.secrets.iter().any(|s| s == secret) {
            return;
        }
        reg.secrets.push(secret.to_string());
        for p in patterns(secret.as_bytes()) {
            if !reg.patterns.contains(&p) {
                reg.patterns.push(p);
            }
        }
        reg.patterns
            .sort_by_key(|p| std::cmp::Reverse(p.text.len()));
    }
}

/// The forms of `secret` that are redacted: itself and its encodings.
fn patterns(secret: &[u8]) -> Vec<Pattern> {
    let mut out: Vec<Pattern> = Vec::new();
    let mut add = |text: String, wrapped: bool| {
        // Short fragments would match ordinary text.
        if text.len() >= MIN_SECRET_LEN && !out.iter().any(|p| p.text == text) {
            out.push(Pattern { text, wrapped });
        }
    };
    add(String::from_utf8_lossy(secret).into_owned(), false);
    for alphabet in [STANDARD, URL_SAFE] {
        let whole = base64(secret, alphabet);
        add(padded(&whole), true);
        add(whole, true);
        for offset in 0..3 {
            add(base64_core(secret, offset, alphabet), true);
        }
    }
    let lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    add(lower.to_ascii_uppercase(), true);
    add(lower, true);
    for every_byte in [false, true] {
        let url = url_encode(secret, every_byte);
        add(url.to_ascii_lowercase(), false);
        add(url, false);
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64 of `data`, without padding.
fn base64(data: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(alphabet[index as usize]));
        }
    }
    out
}

fn padded(unpadded: &str) -> String {
    let mut s = unpadded.to_string();
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

/// The characters of base64(`offset` unknown bytes + `secret` + unknown
/// bytes) that depend on the secret's bytes alone: what any base64 text
/// holding the secret at that alignment contains.
fn base64_core(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> String {
    let mut data = vec![0u8; offset];
    data.extend_from_slice(secret);
    let encoded = base64(&data, alphabet);
    let start = (8 * offset).div_ceil(6);
    let end = (8 * (offset + secret.len())) / 6;
    encoded.get(start..end).unwrap_or_default().to_string()
}

/// Percent-encoding with upper-case hex: of every byte, or of all but the
/// unreserved ones (RFC 3986).
fn url_encode(data: &[u8], every_byte: bool) -> String {
    let mut out = String::with_capacity(data.len() * 3);
    for &b in data {
        if !every_byte && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with every registered secret (and every encoding of one)
/// replaced by the marker.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(reg) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    if reg.patterns.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut hits: Vec<(usize, usize)> = Vec::new();
    for p in reg.patterns.iter().filter(|p| !p.wrapped) {
        hits.extend(
            text.match_indices(p.text.as_str())
                .map(|(i, m)| (i, i + m.len())),
        );
    }
    let wrapped = reg.patterns.iter().filter(|p| p.wrapped);
    if text.contains(['\n', '\r']) {
        // Search with the line breaks taken out, then map back: `breaks`
        // holds, per removed byte, the index in `joined` it preceded.
        let mut joined = String::with_capacity(text.len());
        let mut breaks: Vec<usize> = Vec::new();
        for c in text.chars() {
            if c == '\n' || c == '\r' {
                breaks.push(joined.len());
            } else {
                joined.push(c);
            }
        }
        let origin = |j: usize| j + breaks.partition_point(|&b| b <= j);
        for p in wrapped {
            for (i, m) in joined.match_indices(p.text.as_str()) {
                // Patterns are ASCII: the last byte maps to one byte of `text`.
                hits.push((origin(i), origin(i + m.len() - 1) + 1));
            }
        }
    } else {
        for p in wrapped {
            hits.extend(
                text.match_indices(p.text.as_str())
                    .map(|(i, m)| (i, i + m.len())),
            );
        }
    }
    if hits.is_empty() {
        return Cow::Borrowed(text);
    }
    hits.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in hits {
        if end <= at {
            continue;
        }
        // A hit overlapping the previous one only extends its marker.
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(MARKER);
        }
        at = end;
    }
    out.push_str(&text[at..]);
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

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b"", STANDARD), "");
        assert_eq!(padded(&base64(b"f", STANDARD)), "Zg==");
        assert_eq!(padded(&base64(b"fo", STANDARD)), "Zm8=");
        assert_eq!(padded(&base64(b"foo", STANDARD)), "Zm9v");
        assert_eq!(padded(&base64(b"foobar", STANDARD)), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff], STANDARD), "+/8");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8");
    }

    /// The secret inside `prefix + secret + suffix`, base64 encoded, for
    /// every alignment and both alphabets: the result never shows the
    /// secret's own characters again.
    #[test]
    fn base64_inside_a_longer_blob_is_caught_at_every_offset() {
        let secret = "sk-b64-inside-blob-7777";
        register(secret);
        for prefix in ["", "A", "AB", "KEY=", "OTHER=1\nKEY="] {
            for suffix in ["", "\n", "x\nMORE=2\n"] {
                let data = format!("{prefix}{secret}{suffix}");
                for alphabet in [STANDARD, URL_SAFE] {
                    let encoded = padded(&base64(data.as_bytes(), alphabet));
                    let out = redact(&encoded);
                    assert!(out.contains(MARKER), "{prefix:?}+{suffix:?}: {out}");
                    let core = base64_core(secret.as_bytes(), prefix.len() % 3, alphabet);
                    assert!(!out.contains(&core), "{out}");
                    // Fewer than 2 characters of the secret's encoding can
                    // be left at each edge.
                    let kept = out.replace(MARKER, "");
                    assert!(kept.len() + core.len() <= encoded.len() + 4, "{out}");
                }
            }
        }
    }

    #[test]
    fn wrapped_base64_like_the_base64_tool_prints_is_caught() {
        let secret = "sk-wrapped-in-base64-output-31337";
        register(secret);
        let prefix = format!("{}KEY=", "PADDING_LINE=abcdefghij\n".repeat(2));
        let data = format!("{prefix}{secret}\n");
        let encoded = padded(&base64(data.as_bytes(), STANDARD));
        // Wrapped at 76 columns, the way `base64 FILE` prints it.
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        assert!(wrapped.lines().count() > 1);
        let out = redact(&wrapped);
        assert!(out.contains(MARKER), "{out}");
        let core = base64_core(secret.as_bytes(), prefix.len() % 3, STANDARD);
        assert!(wrapped.replace('\n', "").contains(&core));
        assert!(!out.replace('\n', "").contains(&core), "{out}");
        // The text before the secret's encoding survives.
        assert!(out.starts_with(&wrapped[..20]), "{out}");
    }

    #[test]
    fn standalone_base64_is_replaced_whole_with_or_without_padding() {
        let secret = "sk-standalone-b64-99";
        register(secret);
        for alphabet in [STANDARD, URL_SAFE] {
            let bare = base64(secret.as_bytes(), alphabet);
            assert_eq!(redact(&format!("[{bare}]")), "[[redacted]]");
            assert_eq!(redact(&format!("[{}]", padded(&bare))), "[[redacted]]");
        }
    }

    #[test]
    fn hex_in_either_case_is_caught_even_when_wrapped() {
        let secret = "sk-hex-encoded-1234";
        register(secret);
        let lower: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(redact(&format!("x {lower} y")), "x [redacted] y");
        assert_eq!(
            redact(&format!("x {} y", lower.to_uppercase())),
            "x [redacted] y"
        );
        // `xxd -p` wraps at 60 columns.
        let dump = format!("2d2d{lower}0a");
        let wrapped = format!("{}\n{}\n", &dump[..30], &dump[30..]);
        let out = redact(&wrapped);
        assert!(out.starts_with("2d2d[redacted]"), "{out}");
    }

    #[test]
    fn url_encodings_are_caught() {
        let secret = "sk+url/encoded=key 42";
        register(secret);
        for encoded in [
            "sk%2Burl%2Fencoded%3Dkey%2042",
            "sk%2burl%2fencoded%3dkey%2042",
            &url_encode(secret.as_bytes(), true),
            &url_encode(secret.as_bytes(), true).to_lowercase(),
        ] {
            assert_eq!(redact(&format!("?k={encoded}&")), "?k=[redacted]&");
        }
    }

    #[test]
    fn matches_are_replaced_in_place_and_other_text_is_kept() {
        let secret = "sk-overlap-0123456789";
        register(secret);
        let lower: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let text = format!("é {secret}{secret} and {lower}\r\nend ✓");
        let out = redact(&text);
        assert_eq!(out, "é [redacted][redacted] and [redacted]\r\nend ✓");
        // Text without line breaks or secrets is returned as is.
        assert!(matches!(redact("plain text ✓"), Cow::Borrowed(_)));
        assert!(matches!(redact("two\nlines"), Cow::Borrowed(_)));
    }
}
