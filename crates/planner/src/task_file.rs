//! Task files: one task as YAML or JSON (`orch add-task --file task.yaml`,
//! and the body of the HTTP API's `POST …/tasks`), parsed and validated in
//! one place so both accept exactly the same documents.
//!
//! Fields: `project` (optional when the caller names the project),
//! `title` (required), `description`, `type` (`code`, `test`, `fix`,
//! `review`; `task_type` is accepted too), `priority`, `allowed_files`,
//! `acceptance_tests`, `depends_on` (task ids or unique prefixes),
//! `candidates` (best-of-N, 1–8), `worker` (`builtin`, `claude-code`,
//! `codex`, `aider`, `mini-swe-agent`; unset = the project's). Unknown
//! fields are refused by name, so a misspelt key never goes unnoticed.
//! Whether the project can run the named worker (its CLI installed, a
//! sandbox that allows it) is the caller's check: it needs the config.

use crate::validate::{
    MAX_ACCEPTANCE_TESTS, MAX_ALLOWED_FILES, MAX_DESCRIPTION_CHARS, MAX_PATH_CHARS, MAX_TITLE_CHARS,
};
use orch_core::{NewTask, TaskId, TaskSource, TaskType, WorkerKind};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most `depends_on` entries per task.
pub const MAX_DEPENDS_ON: usize = 50;

/// The fields a task file may hold.
pub const FIELDS: &[&str] = &[
    "project",
    "title",
    "description",
    "type",
    "priority",
    "allowed_files",
    "acceptance_tests",
    "depends_on",
    "candidates",
    "worker",
];

/// One task as a person (or a client of the API) writes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    /// The project; may be left out when the caller names it (`--project`,
    /// the URL). When both are given they must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// A short title (at most 200 characters).
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `code` (default), `test`, `fix` or `review`.
    #[serde(default, rename = "type", alias = "task_type")]
    pub task_type: TaskType,
    /// Higher runs first. Default 0.
    #[serde(default)]
    pub priority: i64,
    /// Paths or globs, relative to the repository root, the worker may
    /// write; empty means any file in the worktree.
    #[serde(default)]
    pub allowed_files: Vec<String>,
    /// Tests that must pass for the task to pass: test ids
    /// (`tests/test_calc.py::test_add`) or test files.
    #[serde(default)]
    pub acceptance_tests: Vec<String>,
    /// Tasks (ids or unique prefixes) that must be merged before this one
    /// starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Best-of-N: attempts run in parallel per round (1–8); unset = the
    /// project's `candidates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u32>,
    /// What does the work: `builtin`, `claude-code`, `codex`, `aider` or
    /// `mini-swe-agent`; unset = the project's `worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerKind>,
}

/// How a task file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFileFormat {
    Yaml,
    Json,
}

impl TaskFileFormat {
    /// By extension (`.yaml`, `.yml`, `.json`), else by content: a
    /// document that starts with `{` is JSON, anything else YAML.
    pub fn detect(path: Option<&Path>, text: &str) -> TaskFileFormat {
        let ext = path
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => TaskFileFormat::Json,
            Some("yaml" | "yml") => TaskFileFormat::Yaml,
            _ if text
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with('{') =>
            {
                TaskFileFormat::Json
            }
            _ => TaskFileFormat::Yaml,
        }
    }
}

/// What kind of problem a task file has (the HTTP API answers 400 for
/// syntax and 422 for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFileErrorKind {
    /// Not readable YAML or JSON at all.
    Syntax,
    /// Readable, but a field is unknown, missing, of the wrong type or
    /// holds a value orch refuses.
    Invalid,
}

/// Why a task file was refused. `message` is complete: where, what was
/// expected and how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TaskFileError {
    pub kind: TaskFileErrorKind,
    /// The field at fault (`title`, `allowed_files[2]`); empty when it is
    /// the document as a whole.
    pub field: String,
    /// 1-based position in the text, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl TaskFileError {
    fn invalid(field: &str, detail: impl Into<String>) -> TaskFileError {
        let detail = detail.into();
        TaskFileError {
            kind: TaskFileErrorKind::Invalid,
            field: field.to_string(),
            line: None,
            column: None,
            message: if field.is_empty() {
                detail
            } else {
                format!("`{field}`: {detail}")
            },
        }
    }
}

/// Parses and validates a task file. The project is not required here;
/// [`TaskSpec::to_new_task`] settles it.
pub fn parse(text: &str, format: TaskFileFormat) -> Result<TaskSpec, TaskFileError> {
    let text = text.trim_start_matches('\u{feff}');
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l == "---" || (format == TaskFileFormat::Yaml && l.starts_with('#'))
    }) {
        return Err(TaskFileError::invalid(
            "",
            "the task file is empty; it needs at least a `title` (e.g. `title: Fix the parser`)",
        ));
    }
    let spec = match format {
        TaskFileFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let spec: TaskSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let field = clean_path(&e.path().to_string());
                let inner = e.into_inner();
                // An enum given a number is a "syntax" error to serde_json.
                let is_enum = field == "type" || field == "worker";
                let kind = if (inner.is_syntax() && !is_enum) || inner.is_eof() {
                    TaskFileErrorKind::Syntax
                } else {
                    TaskFileErrorKind::Invalid
                };
                let pos = (inner.line() > 0).then(|| (inner.line(), inner.column()));
                located(kind, field, pos, &inner.to_string())
            })?;
            de.end().map_err(|e| {
                located(
                    TaskFileErrorKind::Syntax,
                    String::new(),
                    Some((e.line(), e.column())),
                    &format!("{e}; a task file holds one JSON object"),
                )
            })?;
            spec
        }
        TaskFileFormat::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = clean_path(&e.path().to_string());
                let inner = e.into_inner();
                let pos = inner.location().map(|l| (l.line(), l.column()));
                let message = inner.to_string();
                // serde_yaml has no error categories: tell them by wording.
                let kind = if !is_data_error(&message) {
                    TaskFileErrorKind::Syntax
                } else {
                    TaskFileErrorKind::Invalid
                };
                located(kind, field, pos, &message)
            })?
        }
    };
    spec.validate()?;
    Ok(spec)
}

/// serde_path_to_error writes `?` for segments it could not name, and `.`
/// for the root.
fn clean_path(path: &str) -> String {
    let mut p = path.trim_matches('.');
    while let Some(rest) = p.strip_suffix('?') {
        p = rest.strip_suffix('.').unwrap_or(rest);
    }
    if p == "?" {
        String::new()
    } else {
        p.to_string()
    }
}

fn is_data_error(message: &str) -> bool {
    [
        "unknown field",
        "missing field",
        "invalid type",
        "unknown variant",
        "invalid value",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// A serde error in our words: the position, the field, what to do.
fn located(
    kind: TaskFileErrorKind,
    field: String,
    pos: Option<(usize, usize)>,
    raw: &str,
) -> TaskFileError {
    let raw = strip_position(raw);
    // serde_yaml repeats the field path in front of its message.
    let raw = raw
        .strip_prefix(&format!("{field}: "))
        .unwrap_or(&raw)
        .to_string();
    let detail = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        format!(
            "unknown field `{name}`; a task file may hold only: {} (check the spelling, or remove it)",
            FIELDS.join(", ")
        )
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        format!("missing required field `{name}`")
    } else if field == "type" && !raw.contains("expected one of") {
        // serde_json says only "expected value" for a number here.
        format!("{raw}; use one of code, test, fix, review")
    } else if field == "worker" && !raw.contains("expected one of") {
        format!("{raw}; use one of {}", WorkerKind::names())
    } else {
        raw
    };
    let mut message = String::new();
    if let Some((line, column)) = pos {
        message.push_str(&format!("line {line} column {column}: "));
    }
    // An unknown field's path ends with the field itself; name it once.
    if !field.is_empty() && !detail.starts_with("unknown field") {
        message.push_str(&format!("`{field}`: "));
    }
    message.push_str(&detail);
    TaskFileError {
        kind,
        field,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        message,
    }
}

/// Drops every ` at line N column M` of serde's (the position is reported
/// once, in front; YAML syntax errors carry one mid-message too).
fn strip_position(message: &str) -> String {
    const AT: &str = " at line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(AT) {
        let tail = &rest[i + AT.len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line_len = digits(tail);
        let column = tail[line_len..]
            .strip_prefix(" column ")
            .filter(|c| line_len > 0 && digits(c) > 0);
        match column {
            Some(c) => {
                out.push_str(&rest[..i]);
                rest = &c[digits(c)..];
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

/// True for a relative path or glob that stays inside the repository.
pub fn is_safe_relative(entry: &str) -> bool {
    !entry.is_empty()
        && !entry.starts_with('/')
        && !entry.starts_with('\\')
        && !entry.starts_with('~')
        && !entry.split(['/', '\\']).any(|part| part == "..")
}

/// A project name as the config accepts it: letters, digits, `_`, `.`, `-`.
fn is_project_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_list(
    field: &str,
    items: &[String],
    max: usize,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<(), TaskFileError> {
    if items.len() > max {
        return Err(TaskFileError::invalid(
            field,
            format!("has {} entries; at most {max} are allowed", items.len()),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let item = item.trim();
        if item.chars().count() > MAX_PATH_CHARS {
            return Err(TaskFileError::invalid(
                &at,
                format!("is longer than {MAX_PATH_CHARS} characters"),
            ));
        }
        if !ok(item) {
            return Err(TaskFileError::invalid(
                &at,
                format!("`{item}`: expected {what}"),
            ));
        }
    }
    Ok(())
}

impl TaskSpec {
    /// Checks every field's value (serde has already checked names and
    /// types): a title, sizes, paths inside the repository.
    pub fn validate(&self) -> Result<(), TaskFileError> {
        if let Some(p) = &self.project {
            if !is_project_name(p.trim()) {
                return Err(TaskFileError::invalid(
                    "project",
                    format!("`{p}` is not a project name (letters, digits, `_`, `.` and `-`)"),
                ));
            }
        }
        let title = self.title.trim();
        if title.is_empty() {
            return Err(TaskFileError::invalid(
                "title",
                "is empty; give the task a short title",
            ));
        }
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(TaskFileError::invalid(
                "title",
                format!(
                    "is longer than {MAX_TITLE_CHARS} characters; keep the title short and put the detail in `description`"
                ),
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(TaskFileError::invalid(
                "description",
                format!("is longer than {MAX_DESCRIPTION_CHARS} characters; split the task"),
            ));
        }
        check_list(
            "allowed_files",
            &self.allowed_files,
            MAX_ALLOWED_FILES,
            "a path or glob relative to the repository root, such as `src/**` (not empty, not starting with `/` or `~`, without `..`)",
            is_safe_relative,
        )?;
        check_list(
            "acceptance_tests",
            &self.acceptance_tests,
            MAX_ACCEPTANCE_TESTS,
            "a test id such as `tests/test_calc.py::test_add` or a test file, inside the repository",
            |t| is_safe_relative(t) && !t.starts_with('-'),
        )?;
        check_list(
            "depends_on",
            &self.depends_on,
            MAX_DEPENDS_ON,
            "a task id or a unique prefix of one (see `orch tasks`)",
            |d| !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric()),
        )?;
        if let Some(n) = self.candidates {
            if !(1..=orch_core::MAX_CANDIDATES).contains(&n) {
                return Err(TaskFileError::invalid(
                    "candidates",
                    format!(
                        "is {n}; expected 1 to {} (attempts run in parallel per round; 1 = one at a time)",
                        orch_core::MAX_CANDIDATES
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The task to store. `caller_project` is the project the caller named
    /// (`--project`, the URL); the file's own `project` must agree with it.
    /// Dependencies stay as written: the store resolves prefixes and
    /// refuses unknown ids.
    pub fn to_new_task(&self, caller_project: Option<&str>) -> Result<NewTask, TaskFileError> {
        let own = self.project.as_deref().map(str::trim);
        let project = match (own, caller_project) {
            (Some(a), Some(b)) if a != b => {
                return Err(TaskFileError::invalid(
                    "project",
                    format!("the file says `{a}` but the task is being added to `{b}`; make them agree or drop one"),
                ))
            }
            (Some(a), _) => a.to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) => {
                return Err(TaskFileError::invalid(
                    "project",
                    "no project named; add `project: <name>` to the file or pass --project",
                ))
            }
        };
        Ok(NewTask {
            project,
            title: self.title.trim().to_string(),
            description: self.description.trim().to_string(),
            task_type: self.task_type,
            priority: self.priority,
            allowed_files: trimmed(&self.allowed_files),
            source: TaskSource::Manual,
            acceptance_tests: trimmed(&self.acceptance_tests),
            depends_on: self
                .depends_on
                .iter()
                .map(|d| TaskId(d.trim().to_string()))
                .collect(),
            plan_key: None,
            candidates: self.candidates,
            worker: self.worker,
        })
    }
}

fn trimmed(items: &[String]) -> Vec<String> {
    items.iter().map(|s| s.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_YAML: &str = "\
# a comment
project: calc
title: Add sub()
description: |
  Add sub(a, b) to calc.py.
type: code
priority: 2
allowed_files: [calc.py, test_calc.py]
acceptance_tests:
  - test_calc.py::test_sub
depends_on: [abcd1234]
";

    fn yaml_err(text: &str) -> TaskFileError {
        parse(text, TaskFileFormat::Yaml).unwrap_err()
    }

    fn json_err(text: &str) -> TaskFileError {
        parse(text, TaskFileFormat::Json).unwrap_err()
    }

    #[test]
    fn a_good_yaml_file_becomes_a_task() {
        let spec = parse(GOOD_YAML, TaskFileFormat::Yaml).unwrap();
        assert_eq!(spec.title, "Add sub()");
        assert_eq!(spec.task_type, TaskType::Code);
        let t = spec.to_new_task(None).unwrap();
        assert_eq!(t.project, "calc");
        assert_eq!(t.description, "Add sub(a, b) to calc.py.");
        assert_eq!(t.priority, 2);
        assert_eq!(t.allowed_files, ["calc.py", "test_calc.py"]);
        assert_eq!(t.acceptance_tests, ["test_calc.py::test_sub"]);
        assert_eq!(t.depends_on, [TaskId("abcd1234".into())]);
        assert_eq!(t.source, TaskSource::Manual);
        assert_eq!(spec.to_new_task(Some("calc")).unwrap().project, "calc");
    }

    #[test]
    fn json_and_the_minimal_file_work_too() {
        let spec = parse(
            r#"{"title": "Fix add", "task_type": "fix", "priority": -1}"#,
            TaskFileFormat::Json,
        )
        .unwrap();
        assert_eq!(spec.task_type, TaskType::Fix);
        assert_eq!(spec.priority, -1);
        let t = spec.to_new_task(Some("calc")).unwrap();
        assert_eq!(t.project, "calc");
        assert!(t.allowed_files.is_empty() && t.depends_on.is_empty());
        let minimal = parse("title: x\n", TaskFileFormat::Yaml).unwrap();
        assert_eq!(minimal.task_type, TaskType::Code);
    }

    #[test]
    fn the_format_is_detected_by_extension_then_content() {
        let d = TaskFileFormat::detect;
        assert_eq!(
            d(Some(Path::new("t.json")), "title: x"),
            TaskFileFormat::Json
        );
        assert_eq!(d(Some(Path::new("t.YML")), "{}"), TaskFileFormat::Yaml);
        assert_eq!(
            d(Some(Path::new("t.txt")), "  {\"a\":1}"),
            TaskFileFormat::Json
        );
        assert_eq!(d(None, "title: x"), TaskFileFormat::Yaml);
    }

    #[test]
    fn unknown_fields_are_refused_by_name_with_the_list() {
        let e = yaml_err("title: x\ntitel: y\n");
        assert_eq!(e.kind, TaskFileErrorKind::Invalid);
        assert!(e.message.contains("unknown field `titel`"), "{}", e.message);
        assert!(
            e.message.contains("may hold only: project, title"),
            "{}",
            e.message
        );
        assert!(e.message.starts_with("line 2"), "{}", e.message);
        let e = json_err(r#"{"title": "x", "desc": "y"}"#);
        assert!(e.message.contains("unknown field `desc`"), "{}", e.message);
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn wrong_types_missing_titles_and_syntax_errors_are_named() {
        let e = yaml_err("title: x\ntype: feature\n");
        assert_eq!(e.field, "type");
        assert!(
            e.message
                .contains("expected one of `code`, `test`, `fix`, `review`"),
            "{}",
            e.message
        );
        let e = yaml_err("title: x\npriority: high\n");
        assert_eq!(e.field, "priority");
        assert!(
            e.message.contains("`priority`: invalid type"),
            "{}",
            e.message
        );
        let e = yaml_err("title: x\nallowed_files: [1, [2]]\n");
        assert!(e.field.starts_with("allowed_files"), "{e:?}");
        let e = yaml_err("description: no title\n");
        assert!(
            e.message.contains("missing required field `title`"),
            "{}",
            e.message
        );
        let e = yaml_err("# only a comment\n");
        assert!(e.message.contains("empty"), "{}", e.message);
        let e = yaml_err("title: x\n\tpriority: 1\n");
        assert_eq!(e.kind, TaskFileErrorKind::Syntax, "{e:?}");
        assert!(e.line.is_some(), "{e:?}");
        let e = json_err("{\"title\": \"x\",}");
        assert_eq!(e.kind, TaskFileErrorKind::Syntax, "{e:?}");
        let e = json_err("{\"title\": \"x\"} {}");
        assert!(e.message.contains("one JSON object"), "{}", e.message);
        let e = json_err("{\"title\": \"x\", \"type\": 3}");
        assert_eq!(e.kind, TaskFileErrorKind::Invalid, "{e:?}");
        assert!(e.message.contains("use one of code"), "{}", e.message);
        let e = json_err("[]");
        assert_eq!(e.kind, TaskFileErrorKind::Invalid, "{e:?}");
    }

    #[test]
    fn values_are_validated() {
        let e = yaml_err("title: '  '\n");
        assert_eq!(e.field, "title");
        let e = yaml_err(&format!("title: {}\n", "x".repeat(MAX_TITLE_CHARS + 1)));
        assert!(e.message.contains("longer than"), "{}", e.message);
        let e = yaml_err("title: x\nallowed_files: [src/ok.py, ../escape]\n");
        assert_eq!(e.field, "allowed_files[1]");
        assert!(e.message.contains("`../escape`"), "{}", e.message);
        let e = yaml_err("title: x\nallowed_files: [/etc/passwd]\n");
        assert_eq!(e.field, "allowed_files[0]");
        let e = yaml_err("title: x\nacceptance_tests: ['-k foo']\n");
        assert_eq!(e.field, "acceptance_tests[0]");
        let e = yaml_err("title: x\ndepends_on: ['ab cd']\n");
        assert_eq!(e.field, "depends_on[0]");
        let e = yaml_err("title: x\nproject: 'my project'\n");
        assert_eq!(e.field, "project");
        let many: Vec<String> = (0..=MAX_ALLOWED_FILES).map(|i| format!("f{i}")).collect();
        let e = yaml_err(&format!("title: x\nallowed_files: [{}]\n", many.join(", ")));
        assert!(e.message.contains("at most"), "{}", e.message);
    }

    #[test]
    fn a_task_may_ask_for_its_own_candidates() {
        let spec = parse("title: x\ncandidates: 3\n", TaskFileFormat::Yaml).unwrap();
        let new = spec.to_new_task(Some("p")).unwrap();
        assert_eq!(new.candidates, Some(3));
        let plain = parse("title: x\n", TaskFileFormat::Yaml).unwrap();
        assert_eq!(plain.to_new_task(Some("p")).unwrap().candidates, None);
        for bad in ["0", "9"] {
            let e = yaml_err(&format!("title: x\ncandidates: {bad}\n"));
            assert_eq!(e.field, "candidates");
            assert!(e.message.contains("1 to 8"), "{}", e.message);
        }
    }

    #[test]
    fn a_task_may_name_its_own_worker() {
        let spec = parse("title: x\nworker: mini-swe-agent\n", TaskFileFormat::Yaml).unwrap();
        let new = spec.to_new_task(Some("p")).unwrap();
        assert_eq!(new.worker, Some(WorkerKind::MiniSweAgent));
        let spec = parse(r#"{"title": "x", "worker": "codex"}"#, TaskFileFormat::Json).unwrap();
        assert_eq!(spec.worker, Some(WorkerKind::Codex));
        let plain = parse("title: x\n", TaskFileFormat::Yaml).unwrap();
        assert_eq!(plain.to_new_task(Some("p")).unwrap().worker, None);
        // An unknown kind names the field and every allowed value.
        let kinds = "`builtin`, `claude-code`, `codex`, `aider`, `mini-swe-agent`";
        let e = yaml_err("title: x\nworker: cursor\n");
        assert_eq!(
            (e.kind, e.field.as_str()),
            (TaskFileErrorKind::Invalid, "worker")
        );
        assert!(
            e.message.contains("`worker`: unknown variant `cursor`"),
            "{}",
            e.message
        );
        assert!(e.message.contains(kinds), "{}", e.message);
        let e = json_err(r#"{"title": "x", "worker": "Codex"}"#);
        assert_eq!(
            (e.kind, e.field.as_str()),
            (TaskFileErrorKind::Invalid, "worker")
        );
        assert!(e.message.contains(kinds), "{}", e.message);
        let e = json_err(r#"{"title": "x", "worker": 3}"#);
        assert_eq!(
            (e.kind, e.field.as_str()),
            (TaskFileErrorKind::Invalid, "worker")
        );
        assert!(
            e.message.contains("use one of builtin, claude-code"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_project_must_be_named_once_or_agree() {
        let spec = parse("title: x\nproject: a\n", TaskFileFormat::Yaml).unwrap();
        let e = spec.to_new_task(Some("b")).unwrap_err();
        assert!(
            e.message.contains("`a`") && e.message.contains("`b`"),
            "{}",
            e.message
        );
        let spec = parse("title: x\n", TaskFileFormat::Yaml).unwrap();
        let e = spec.to_new_task(None).unwrap_err();
        assert!(e.message.contains("--project"), "{}", e.message);
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../examples/task_example.yaml");
        let spec = parse(text, TaskFileFormat::Yaml).unwrap();
        assert!(!spec.title.is_empty());
        assert!(spec.to_new_task(Some("calc")).is_ok());
    }
}
