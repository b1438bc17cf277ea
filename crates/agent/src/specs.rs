//! The tool contract the model sees: names, argument names and JSON schemas.
//! Scripted responses (replay files, tests) depend on these exact names, so
//! they are part of the public API and documented in the crate README.

use orch_providers::ToolSpec;
use serde::Deserialize;
use serde_json::{json, Value};

pub const READ_FILE: &str = "read_file";
pub const WRITE_FILE: &str = "write_file";
pub const EDIT_FILE: &str = "edit_file";
pub const LIST_FILES: &str = "list_files";
pub const SEARCH: &str = "search";
pub const RUN: &str = "run";
pub const ASK_HUMAN: &str = "ask_human";
pub const FINISH: &str = "finish";

/// Whether a call to tool `name` may change the worktree. Only the tools
/// known to read are spared; `run` may do anything.
pub fn may_write(name: &str) -> bool {
    !matches!(name, READ_FILE | LIST_FILES | SEARCH | ASK_HUMAN | FINISH)
}

/// Every tool name, in the order they are offered.
pub const TOOL_NAMES: [&str; 8] = [
    READ_FILE, WRITE_FILE, EDIT_FILE, LIST_FILES, SEARCH, RUN, ASK_HUMAN, FINISH,
];

/// The JSON schemas of all tools, for `ChatRequest::tools`.
pub fn tool_specs() -> Vec<ToolSpec> {
    TOOL_NAMES
        .iter()
        .filter_map(|name| tool_spec(name))
        .collect()
}

/// The spec of one tool, or None for an unknown name.
pub fn tool_spec(name: &str) -> Option<ToolSpec> {
    let (description, parameters) = match name {
        READ_FILE => (
            "Read a text file. Each output line is prefixed by its line number and a tab; the prefix is not part of the file. \
             Long files are cut with a marker that tells you which offset to continue from.",
            object(
                json!({
                    "path": {"type": "string", "description": "File path relative to the worktree root."},
                    "offset": {"type": "integer", "minimum": 1, "description": "1-based line to start at (default 1)."},
                    "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to return (default: as many as fit)."}
                }),
                &["path"],
            ),
        ),
        WRITE_FILE => (
            "Create or overwrite a file with the given content. Parent directories are created.",
            object(
                json!({
                    "path": {"type": "string", "description": "File path relative to the worktree root."},
                    "content": {"type": "string", "description": "The complete new content of the file."}
                }),
                &["path", "content"],
            ),
        ),
        EDIT_FILE => (
            "Replace one exact piece of text in a file. `old` must occur exactly once in the file \
             (copy it exactly, including whitespace; add surrounding lines to make it unique).",
            object(
                json!({
                    "path": {"type": "string", "description": "File path relative to the worktree root."},
                    "old": {"type": "string", "description": "The exact text to replace; must occur exactly once."},
                    "new": {"type": "string", "description": "The replacement text."}
                }),
                &["path", "old", "new"],
            ),
        ),
        LIST_FILES => (
            "List files recursively (skipping .git), one path per line relative to the worktree root.",
            object(
                json!({
                    "path": {"type": "string", "description": "Directory to list, relative to the worktree root (default: the root)."},
                    "pattern": {"type": "string", "description": "Glob such as `*.rs` or `src/**/mod.rs`, matched against the path or the file name."}
                }),
                &[],
            ),
        ),
        SEARCH => (
            "Search file contents with a regular expression (Rust regex syntax). Prints `file:line: text` for each matching line.",
            object(
                json!({
                    "pattern": {"type": "string", "description": "Regular expression, e.g. `fn\\s+parse_`."},
                    "path": {"type": "string", "description": "File or directory to search, relative to the worktree root (default: the root)."}
                }),
                &["pattern"],
            ),
        ),
        RUN => (
            "Run a shell command (sh -c) in the sandbox with the worktree root as working directory. \
             Returns the exit code and the combined stdout and stderr.",
            object(
                json!({
                    "command": {"type": "string", "description": "The shell command line, e.g. `cargo test -q`."},
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds before the command is killed (capped by the configured maximum)."}
                }),
                &["command"],
            ),
        ),
        ASK_HUMAN => (
            "Stop and ask a person a question, when the task cannot be done without a decision or information you do not have. Ends your work on this task.",
            object(
                json!({"question": {"type": "string", "description": "A specific question a person can answer."}}),
                &["question"],
            ),
        ),
        FINISH => (
            "Call when the change is complete. Ends your work on this task.",
            object(
                json!({"summary": {"type": "string", "description": "What you changed and why, in a few sentences."}}),
                &["summary"],
            ),
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReadFileArgs {
    pub path: String,
    pub offset: Option<u64>,
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WriteFileArgs {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EditFileArgs {
    pub path: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListFilesArgs {
    pub path: Option<String>,
    pub pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchArgs {
    pub pattern: String,
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunArgs {
    pub command: String,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AskHumanArgs {
    pub question: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FinishArgs {
    pub summary: String,
}

/// Parses a call's raw argument text into `T`. The error names the problem
/// and shows the expected schema so the model can correct itself.
pub(crate) fn parse_args<T: for<'de> Deserialize<'de>>(tool: &str, raw: &str) -> Result<T, String> {
    // Some servers send an empty string for "no arguments".
    let text = if raw.trim().is_empty() { "{}" } else { raw };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "arguments for `{tool}` are not valid JSON ({e}). {}",
            expected(tool)
        )
    })?;
    if !value.is_object() {
        return Err(format!(
            "arguments for `{tool}` must be a JSON object, got `{}`. {}",
            short(text),
            expected(tool)
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| format!("invalid arguments for `{tool}`: {e}. {}", expected(tool)))
}

fn expected(tool: &str) -> String {
    match tool_spec(tool) {
        Some(spec) => format!(
            "Expected arguments matching this JSON schema: {}",
            spec.parameters
        ),
        None => String::new(),
    }
}

fn short(s: &str) -> &str {
    crate::tools::prefix_at_boundary(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_with_its_required_fields() {
        let specs = tool_specs();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, TOOL_NAMES.to_vec());
        for spec in &specs {
            assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
            assert!(!spec.description.is_empty());
            for req in spec.parameters["required"].as_array().unwrap() {
                let field = req.as_str().unwrap();
                assert!(
                    spec.parameters["properties"].get(field).is_some(),
                    "{}.{field}",
                    spec.name
                );
            }
        }
        let edit = tool_spec(EDIT_FILE).unwrap();
        assert_eq!(edit.parameters["required"], json!(["path", "old", "new"]));
        assert!(tool_spec("rm_rf").is_none());
    }

    #[test]
    fn parse_errors_name_the_problem_and_the_schema() {
        let err = parse_args::<EditFileArgs>(EDIT_FILE, r#"{"path": "a"}"#).unwrap_err();
        assert!(err.contains("missing field `old`"), "{err}");
        assert!(err.contains("JSON schema"), "{err}");
        let err =
            parse_args::<ReadFileArgs>(READ_FILE, r#"{"path": "a", "offset": "ten"}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = parse_args::<ReadFileArgs>(READ_FILE, "{not json").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_args::<ReadFileArgs>(READ_FILE, "[1]").unwrap_err();
        assert!(err.contains("JSON object"), "{err}");
        let ok = parse_args::<ListFilesArgs>(LIST_FILES, "").unwrap();
        assert!(ok.path.is_none() && ok.pattern.is_none());
    }
}
