//! A small `.env` reader: `KEY=VALUE` lines, `#` comments, an optional
//! `export ` prefix and optional single or double quotes.
//!
//! Written here rather than pulled in because the format we accept is tiny
//! and we want errors that name the file and line in our own words.

use crate::load::ConfigError;
use std::collections::BTreeMap;
use std::path::Path;

/// Read `path` if it exists. A missing file is simply no values.
pub(crate) fn read(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parse `.env` text; `path` is only used in error messages.
pub(crate) fn parse(text: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut values = BTreeMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            line: Some(line_no),
            column: None,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with(char::is_whitespace))
            .map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err(format!(
                "expected `KEY=VALUE`, found `{}`; comment the line out with `#` if it is not a variable",
                key_only(line)
            )));
        };
        let key = key.trim();
        if !is_env_name(key) {
            return Err(err(format!(
                "`{key}` is not a valid variable name: use letters, digits and `_`, not starting with a digit"
            )));
        }
        let value = parse_value(rest.trim_start()).map_err(|m| err(format!("{key}: {m}")))?;
        values.insert(key.to_string(), value);
    }
    Ok(values)
}

/// A line without `=` may be a pasted secret; show at most its first word.
fn key_only(line: &str) -> &str {
    let word = line.split_whitespace().next().unwrap_or("");
    if word.len() > 24 {
        "…"
    } else {
        word
    }
}

fn parse_value(rest: &str) -> Result<String, String> {
    let Some(first) = rest.chars().next() else {
        return Ok(String::new());
    };
    let (value, after) = match first {
        '"' => {
            let mut out = String::new();
            let mut chars = rest[1..].char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 2);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, 'r')) => out.push('\r'),
                        Some((_, other)) => out.push(other),
                        None => out.push('\\'),
                    },
                    c => out.push(c),
                }
            }
            let end = end.ok_or(
                "unterminated double quote: close the value with `\"` on the same line".to_string(),
            )?;
            (out, &rest[end..])
        }
        '\'' => {
            let end = rest[1..].find('\'').ok_or(
                "unterminated single quote: close the value with `'` on the same line".to_string(),
            )?;
            (rest[1..1 + end].to_string(), &rest[end + 2..])
        }
        _ => {
            // An unquoted value ends at a ` #` comment.
            let end = rest
                .char_indices()
                .find(|&(i, c)| c == '#' && rest[..i].ends_with(char::is_whitespace))
                .map_or(rest.len(), |(i, _)| i);
            return Ok(rest[..end].trim_end().to_string());
        }
    };
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Ok(value)
    } else {
        Err(format!(
            "unexpected text after the closing quote: `{after}`; put comments after ` #`"
        ))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what a shell accepts as a variable name.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> BTreeMap<String, String> {
        parse(text, Path::new("/x/.env")).unwrap()
    }

    #[test]
    fn parses_plain_quoted_export_and_comments() {
        let v = p(concat!(
            "# a comment\n",
            "\n",
            "PLAIN=value\n",
            "SPACED = spaced value   # trailing comment\n",
            "export EXPORTED=yes\n",
            "DQ=\"double # not a comment\\n\\\"q\\\"\"  # comment\n",
            "SQ='single \\n stays'\n",
            "EMPTY=\n",
            "HASH=a#b\n",
            "exporter=plain key starting with export\n",
        ));
        assert_eq!(v["PLAIN"], "value");
        assert_eq!(v["SPACED"], "spaced value");
        assert_eq!(v["EXPORTED"], "yes");
        assert_eq!(v["DQ"], "double # not a comment\n\"q\"");
        assert_eq!(v["SQ"], "single \\n stays");
        assert_eq!(v["EMPTY"], "");
        assert_eq!(v["HASH"], "a#b");
        assert_eq!(v["exporter"], "plain key starting with export");
        assert_eq!(v.len(), 8);
    }

    #[test]
    fn later_lines_override_earlier_ones() {
        let v = p("A=1\nA=2\n");
        assert_eq!(v["A"], "2");
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let e = parse("A=1\nnot a variable\n", Path::new("/x/.env")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/x/.env:2:"), "{msg}");
        assert!(msg.contains("expected `KEY=VALUE`"), "{msg}");

        let e = parse("1BAD=x\n", Path::new("/x/.env")).unwrap_err();
        assert!(e
            .to_string()
            .contains("`1BAD` is not a valid variable name"));

        let e = parse("A=\"open\n", Path::new("/x/.env")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/x/.env:1"), "{msg}");
        assert!(msg.contains("unterminated double quote"), "{msg}");

        let e = parse("A='x' junk\n", Path::new("/x/.env")).unwrap_err();
        assert!(e
            .to_string()
            .contains("unexpected text after the closing quote"));
    }

    #[test]
    fn a_pasted_secret_line_is_not_echoed() {
        let e = parse(
            "sk-0123456789abcdefghijklmnopqrstuvwxyz\n",
            Path::new(".env"),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("0123456789"), "{e}");
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join(".env")).unwrap().is_empty());
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("A"));
        assert!(is_env_name("_a1"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A-B"));
    }
}
