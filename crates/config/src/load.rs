//! Reading, interpolating, parsing and validating the config file.
//!
//! Order: read the file, read `.env` beside it, expand `${VAR}`, parse with
//! serde (errors carry line, column and the key path), then validate the
//! values serde cannot check (ranges, references, paths on disk).

use crate::dotenv;
use crate::interpolate;
use crate::model::{Config, DotEnv};
use crate::validate;
use std::path::{Path, PathBuf};

/// The syntax a config file is written in, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Toml,
    Yaml,
    Json,
}

impl ConfigFormat {
    /// The extensions we accept, for error messages.
    pub const SUPPORTED: &'static str = "`.toml`, `.yaml`, `.yml` or `.json`";

    /// The format for `path`'s extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("toml") => Ok(ConfigFormat::Toml),
            Some("yaml" | "yml") => Ok(ConfigFormat::Yaml),
            Some("json") => Ok(ConfigFormat::Json),
            other => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "file extension".to_string(),
                expected: format!("one of {}", Self::SUPPORTED),
                found: match other {
                    Some(e) => format!("`.{e}`"),
                    None => "no extension".to_string(),
                },
            }),
        }
    }
}

/// The fix offered when the config file does not exist.
pub const NOT_FOUND_HINT: &str = "create one with `orch init PATH`, or pass --config";

/// Everything that can go wrong loading a config. Every message starts with
/// the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: no such config file; {hint}", path.display())]
    NotFound { path: PathBuf, hint: String },

    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Syntax errors and type errors from serde. `message` starts with the
    /// key path when one is known (e.g. `projects[0].max_workers: ...`).
    #[error("{}{}: {message}", path.display(), position(*line, *column))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// A value that parsed but is not acceptable.
    #[error("{}: {key}: expected {expected}, found {found}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },

    /// `${VAR}` expansion failed. `hint` says what is wrong and how to fix it.
    #[error("{}:{line}: {hint}", path.display())]
    Interpolation {
        path: PathBuf,
        line: usize,
        var: String,
        hint: String,
    },

    /// The config could not be written back out (see [`Config::to_toml`]).
    #[error("{}: cannot write the config as TOML: {message}", path.display())]
    Serialize { path: PathBuf, message: String },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The config file to use: the `--config` flag, else `$ORCH_CONFIG`, else
/// `orch.toml` in the current directory.
pub fn resolve_config_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match std::env::var_os("ORCH_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("orch.toml"),
    }
}

/// Read, interpolate, parse and validate the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    // Check the extension first: a typo'd extension should not read as
    // "file not found" or a confusing parse error.
    let format = ConfigFormat::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
                hint: NOT_FOUND_HINT.to_string(),
            }
        } else {
            ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    load_str(&text, format, path)
}

/// Like [`load`] with the text given. `path` names the file in messages and
/// locates `base_dir` and the `.env` file; it need not exist.
pub fn load_str(text: &str, format: ConfigFormat, path: &Path) -> Result<Config, ConfigError> {
    let process_env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    load_str_with_env(text, format, path, &process_env)
}

/// Like [`load_str`], with `env` standing in for the process environment
/// (for hermetic tests and callers that build the environment themselves).
/// `.env` beside the config is still read; `env` wins over it.
pub fn load_str_with_env(
    text: &str,
    format: ConfigFormat,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let base_dir = base_dir_of(path);
    let env_file = base_dir.join(".env");
    let dotenv = DotEnv::new(dotenv::read(&env_file)?);
    let lookup = |name: &str| env(name).or_else(|| dotenv.get(name).cloned());
    let cx = interpolate::Context {
        path,
        env_file: &env_file,
        lookup: &lookup,
    };
    let text = interpolate::expand(text, format, &cx)?;
    let mut config = parse(&text, format, path)?;
    config.base_dir = base_dir;
    config.source = path.to_path_buf();
    for provider in config.providers.values_mut() {
        provider.dotenv = dotenv.clone();
    }
    config.dotenv = dotenv;
    validate::validate(&config)?;
    Ok(config)
}

/// The absolute directory holding `path`, symlinks resolved when it exists.
fn base_dir_of(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match abs.parent() {
        Some(d) => d.to_path_buf(),
        None => abs,
    };
    dir.canonicalize().unwrap_or(dir)
}

impl Config {
    /// The config as TOML, for `orch init` to write. `${` in values is
    /// written as `$${` so loading the output gives back the same config.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Serialize {
            path: self.source.clone(),
            message: e.to_string(),
        })?;
        Ok(text.replace("${", "$${"))
    }
}

/// serde, with the key path of any error and its position in the text.
fn parse(text: &str, format: ConfigFormat, path: &Path) -> Result<Config, ConfigError> {
    let err = |key: String, line: Option<usize>, column: Option<usize>, message: &str| {
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: friendly_message(&key, message),
        }
    };
    match format {
        ConfigFormat::Toml => serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = match inner.span() {
                    Some(span) => {
                        let (l, c) = line_col(text, span.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                err(key, line, column, inner.message())
            }),
        ConfigFormat::Yaml => {
            // An empty (or all-comment) YAML document is an empty config, as
            // an empty TOML file is.
            let text = if is_blank_yaml(text) { "{}" } else { text };
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(
                |e| {
                    let key = e.path().to_string();
                    let inner = e.into_inner();
                    let (line, column) = match inner.location() {
                        Some(loc) => (Some(loc.line()), Some(loc.column())),
                        None => (None, None),
                    };
                    let message = strip_location(&inner.to_string());
                    // serde_yaml prefixes its own copy of the key path: ours,
                    // or ours without the last segment for unknown keys.
                    let message = [key.as_str(), parent_key(&key)]
                        .iter()
                        .filter(|k| !k.is_empty())
                        .find_map(|k| message.strip_prefix(&format!("{k}: ")))
                        .unwrap_or(&message)
                        .to_string();
                    err(key, line, column, &message)
                },
            )
        }
        ConfigFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = match inner.line() {
                    0 => (None, None),
                    l => (Some(l), Some(inner.column())),
                };
                err(key, line, column, &strip_location(&inner.to_string()))
            })?;
            de.end().map_err(|e| {
                err(
                    String::new(),
                    Some(e.line()),
                    Some(e.column()),
                    &strip_location(&e.to_string()),
                )
            })?;
            Ok(config)
        }
    }
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Drop every ` at line N column M` (we report the position ourselves;
/// YAML syntax errors carry one mid-message too).
fn strip_location(message: &str) -> String {
    const AT: &str = " at line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(AT) {
        let tail = &rest[i + AT.len()..];
        let line_len = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let after_line = &tail[line_len..];
        let col = after_line.strip_prefix(" column ").filter(|_| line_len > 0);
        match col {
            Some(col) => {
                let col_len = col.find(|c: char| !c.is_ascii_digit()).unwrap_or(col.len());
                if col_len == 0 {
                    out.push_str(&rest[..i + AT.len()]);
                    rest = tail;
                    continue;
                }
                out.push_str(&rest[..i]);
                rest = &col[col_len..];
            }
            None => {
                out.push_str(&rest[..i + AT.len()]);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Rephrase serde's wording in the config's terms, prefixed by the key path.
fn friendly_message(key: &str, message: &str) -> String {
    // toml's syntax errors span several lines; keep them on one.
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // serde_path_to_error writes `?` for segments it could not name (YAML
    // syntax errors); a path ending in them says nothing useful.
    let mut key = key;
    while let Some(k) = key.strip_suffix('?') {
        key = k.strip_suffix('.').unwrap_or(k);
    }
    let message = if let Some(rest) = message.strip_prefix("unknown field `") {
        // The path ends with the unknown key itself; report its table.
        if rest
            .split('`')
            .next()
            .is_some_and(|name| key == name || key.ends_with(&format!(".{name}")))
        {
            key = parent_key(key);
        }
        unknown_key_message(rest)
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        format!("missing required key `{rest}")
    } else {
        message
    };
    if key.is_empty() || key == "." {
        message
    } else {
        format!("{key}: {message}")
    }
}

/// `projects[0].name` -> `projects[0]`, `projects[0]` -> `projects`,
/// `data_dir` -> ``.
fn parent_key(key: &str) -> &str {
    match key.rfind(['.', '[']) {
        Some(i) => &key[..i],
        None => "",
    }
}

/// `rest` is serde's text after "unknown field `":
/// "foo`, expected one of `a`, `b`" / "foo`, expected `a` or `b`" /
/// "foo`, there are no fields".
fn unknown_key_message(rest: &str) -> String {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    if looks_like_secret_key(name) {
        return format!(
            "unknown key `{name}`: secrets never go in the config file; put the key in an \
             environment variable (or in the .env file beside the config) and name that \
             variable with `api_key_env = \"MY_API_KEY\"`"
        );
    }
    let valid = tail
        .strip_prefix(", expected one of ")
        .or_else(|| tail.strip_prefix(", expected "));
    match valid {
        Some(list) => format!(
            "unknown key `{name}`; valid keys: {}",
            list.replace(" or ", ", ")
        ),
        None => format!("unknown key `{name}`"),
    }
}

fn looks_like_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n != "api_key_env"
        && (n.contains("key")
            || n.contains("token")
            || n.contains("secret")
            || n.contains("password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            ConfigFormat::from_path(Path::new("a/orch.toml")).unwrap(),
            ConfigFormat::Toml
        );
        assert_eq!(
            ConfigFormat::from_path(Path::new("x.YAML")).unwrap(),
            ConfigFormat::Yaml
        );
        assert_eq!(
            ConfigFormat::from_path(Path::new("x.yml")).unwrap(),
            ConfigFormat::Yaml
        );
        assert_eq!(
            ConfigFormat::from_path(Path::new("x.json")).unwrap(),
            ConfigFormat::Json
        );
        let e = ConfigFormat::from_path(Path::new("orch.ini")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "orch.ini: file extension: expected one of `.toml`, `.yaml`, `.yml` or `.json`, found `.ini`"
        );
        let e = ConfigFormat::from_path(Path::new("orch")).unwrap_err();
        assert!(e.to_string().ends_with("found no extension"), "{e}");
    }

    #[test]
    fn line_col_counts_chars() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, t.find('f').unwrap()), (3, 1));
        assert_eq!(line_col(t, t.len()), (3, 2));
    }

    #[test]
    fn strip_location_only_strips_positions() {
        assert_eq!(strip_location("bad at line 3 column 7"), "bad");
        assert_eq!(strip_location("look at line two"), "look at line two");
        assert_eq!(strip_location("at line 3 column x"), "at line 3 column x");
        assert_eq!(
            strip_location("no key at line 4 column 4, while parsing a map at line 2 column 3"),
            "no key, while parsing a map"
        );
    }

    #[test]
    fn parent_keys() {
        assert_eq!(parent_key("projects[0].name"), "projects[0]");
        assert_eq!(parent_key("projects[0]"), "projects");
        assert_eq!(parent_key("data_dir"), "");
    }

    #[test]
    fn unknown_key_rewording() {
        assert_eq!(
            friendly_message(
                "projects[0].foo",
                "unknown field `foo`, expected one of `a`, `b`"
            ),
            "projects[0]: unknown key `foo`; valid keys: `a`, `b`"
        );
        assert_eq!(
            friendly_message("foo", "unknown field `foo`, expected `a` or `b`"),
            "unknown key `foo`; valid keys: `a`, `b`"
        );
        assert!(
            friendly_message("providers.x", "unknown field `token`, expected `kind`")
                .contains("api_key_env")
        );
        assert_eq!(
            friendly_message(".", "missing field `name`"),
            "missing required key `name`"
        );
    }

    #[test]
    fn resolve_config_path_prefers_the_flag() {
        // Only the flag branch is tested here: the env branch reads a process
        // variable, which tests/process_env.rs covers in its own process.
        assert_eq!(
            resolve_config_path(Some(Path::new("x/y.yaml"))),
            PathBuf::from("x/y.yaml")
        );
    }
}
