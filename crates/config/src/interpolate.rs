//! `${VAR}` expansion over the raw config text, before parsing.
//!
//! Working on the text (not the parsed tree) keeps line numbers for errors
//! and lets a variable fill any value, numbers included. Values are inserted
//! verbatim, as `envsubst` does. Whole-line `#` comments in TOML and YAML are
//! left alone so a commented-out example never needs its variables set.
//!
//! - `${VAR}`: the variable; undefined is an error.
//! - `${VAR:-default}`: the default when the variable is unset or empty.
//! - `$${`: a literal `${`.

use crate::dotenv::is_env_name;
use crate::load::{ConfigError, ConfigFormat};
use std::path::Path;

/// Where variables come from and how errors are reported.
pub(crate) struct Context<'a> {
    /// Config file, for messages.
    pub path: &'a Path,
    /// The `.env` file that could define the variable, for the fix hint.
    pub env_file: &'a Path,
    /// Looks a name up (process environment first, then `.env`).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
}

pub(crate) fn expand(
    text: &str,
    format: ConfigFormat,
    cx: &Context,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let is_comment = format != ConfigFormat::Json && line.trim_start().starts_with('#');
        if is_comment {
            out.push_str(line);
        } else {
            expand_line(line, idx + 1, cx, &mut out)?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    line_no: usize,
    cx: &Context,
    out: &mut String,
) -> Result<(), ConfigError> {
    let err = |var: &str, hint: String| ConfigError::Interpolation {
        path: cx.path.to_path_buf(),
        line: line_no,
        var: var.to_string(),
        hint,
    };
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let here = &rest[pos..];
        if let Some(after) = here.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = here.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(err(
                    "",
                    "unterminated `${`: close it with `}` on the same line, or write `$${` for a literal `${`"
                        .to_string(),
                ));
            };
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            if !is_env_name(name) {
                return Err(err(
                    name,
                    format!(
                        "`${{{body}}}` is not a variable reference: names use letters, digits and `_` and do not start with a digit; write `$${{` for a literal `${{`"
                    ),
                ));
            }
            let value = match ((cx.lookup)(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(err(
                        name,
                        format!(
                            "undefined variable `{name}`: set {name} in the environment or in {}, or give a default with `${{{name}:-value}}`",
                            cx.env_file.display()
                        ),
                    ))
                }
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &here[1..];
        }
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(text: &str, format: ConfigFormat, vars: &[(&str, &str)]) -> Result<String, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| vars.get(k).cloned();
        let cx = Context {
            path: Path::new("orch.toml"),
            env_file: Path::new("/cfg/.env"),
            lookup: &lookup,
        };
        expand(text, format, &cx)
    }

    #[test]
    fn expands_variables_and_defaults() {
        let out = run(
            "a = \"${A}\"\nb = ${B:-7}\nc = \"${C:-x y}\"\nd = \"${EMPTY:-fallback}\" e = \"${EMPTY}\"\n",
            ConfigFormat::Toml,
            &[("A", "alpha"), ("C", "set"), ("EMPTY", "")],
        )
        .unwrap();
        assert_eq!(
            out,
            "a = \"alpha\"\nb = 7\nc = \"set\"\nd = \"fallback\" e = \"\"\n"
        );
    }

    #[test]
    fn escapes_and_lone_dollars_stay() {
        let out = run(
            "a = \"$${HOME} $$ $5 $ $$${A}\"",
            ConfigFormat::Toml,
            &[("A", "v")],
        )
        .unwrap();
        // `$$${A}` is a `$` followed by the escape `$${`, so `A` stays literal.
        assert_eq!(out, "a = \"${HOME} $$ $5 $ $${A}\"");
    }

    #[test]
    fn comment_lines_are_skipped_except_in_json() {
        let text = "  # example: ${UNSET}\nx = 1\n";
        assert_eq!(run(text, ConfigFormat::Toml, &[]).unwrap(), text);
        assert_eq!(run(text, ConfigFormat::Yaml, &[]).unwrap(), text);
        assert!(run(text, ConfigFormat::Json, &[]).is_err());
    }

    #[test]
    fn undefined_variable_names_var_file_line_and_fix() {
        let e = run("x = 1\ny = \"${NOPE}\"\n", ConfigFormat::Toml, &[]).unwrap_err();
        match &e {
            ConfigError::Interpolation { line, var, .. } => {
                assert_eq!(*line, 2);
                assert_eq!(var, "NOPE");
            }
            other => panic!("wrong error {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.starts_with("orch.toml:2: "), "{msg}");
        assert!(msg.contains("undefined variable `NOPE`"), "{msg}");
        assert!(
            msg.contains("set NOPE in the environment or in /cfg/.env"),
            "{msg}"
        );
    }

    #[test]
    fn unterminated_and_bad_names_are_errors() {
        let e = run("y = \"${OPEN\"\n", ConfigFormat::Toml, &[]).unwrap_err();
        assert!(e.to_string().contains("unterminated `${`"), "{e}");
        let e = run("y = \"${1X}\"\n", ConfigFormat::Toml, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("`${1X}` is not a variable reference"),
            "{e}"
        );
        let e = run("y = \"${}\"\n", ConfigFormat::Toml, &[]).unwrap_err();
        assert!(
            e.to_string().contains("`${}` is not a variable reference"),
            "{e}"
        );
    }
}
