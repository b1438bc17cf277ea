//! Milestone plan files: markdown with one `## Task N.M: Title` section per
//! task, as in the design notes. `orch plan import` and the daemon's file
//! triggers turn them into tasks that run in file order.
//!
//! ```markdown
//! # Milestone 1: Subtraction            (optional)
//!
//! ## Task 1.1: Add sub()
//! **Type:** code
//! **Files:** `calc.py`, `test_calc.py`
//!
//! Add `sub(a, b)` to calc.py …
//!
//! **Acceptance criteria:**
//! - sub(5, 3) == 2
//!
//! **Acceptance tests:**
//! - `test_calc.py::test_sub`
//! ```
//!
//! A section's body is the task's description. Recognised lines (with or
//! without the bold, optionally as a list item): `Type:` (`code`, `test`,
//! `fix`, `review`), `Worker:` (`builtin`, `claude-code`, `codex`, `aider`,
//! `mini-swe-agent`: what does the task's work; default the project's),
//! `Files:` (inline, comma-separated, or a list right below: the task's
//! `allowed_files`) and `Acceptance tests:` (the same forms:
//! `acceptance_tests`); they leave the description. `Acceptance
//! criteria:` / `Acceptance:` stay in it, for the worker and the judge to
//! read. Text before the first task and sections with other headings are
//! not tasks. Headings inside code blocks are text.
//!
//! Parsing is by lines (the format is a handful of line shapes, and every
//! error names its line); a malformed file is refused as a whole.

use crate::task_file::is_safe_relative;
use crate::validate::{
    MAX_ACCEPTANCE_TESTS, MAX_ALLOWED_FILES, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS,
};
use orch_core::{NewTask, TaskSource, TaskType, WorkerKind};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most task sections one plan file may hold.
pub const MAX_PLAN_FILE_TASKS: usize = 200;

/// A parsed plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// The `# …` heading before the first task, if any.
    pub milestone: Option<String>,
    /// The task sections, in file order.
    pub tasks: Vec<PlanSection>,
}

/// One `## Task N.M: Title` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSection {
    /// `1.2` in `## Task 1.2: …`.
    pub number: String,
    pub title: String,
    pub description: String,
    pub task_type: TaskType,
    pub allowed_files: Vec<String>,
    pub acceptance_tests: Vec<String>,
    /// A `Worker:` line's worker; None = the project's.
    #[serde(default)]
    pub worker: Option<WorkerKind>,
    /// 1-based line of the heading.
    pub line: usize,
}

/// Why a plan file was refused: the line and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PlanFileError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> PlanFileError {
    PlanFileError {
        line,
        message: message.into(),
    }
}

/// The plan key of section `number` of the plan named `source`:
/// `<source>#<number>`.
pub fn plan_key(source: &str, number: &str) -> String {
    format!("{source}#{number}")
}

/// The name a plan file's keys start with: its file name, so the same file
/// imported from another directory (or by the daemon) keeps its keys.
pub fn source_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string())
}

impl PlanFile {
    /// The tasks to import into `project`, in file order, keyed
    /// `<source>#<N.M>`. The store adds the order as dependencies
    /// (`Store::import_plan`).
    pub fn new_tasks(&self, project: &str, source: &str) -> Vec<NewTask> {
        self.tasks
            .iter()
            .map(|s| NewTask {
                project: project.to_string(),
                title: s.title.clone(),
                description: s.description.clone(),
                task_type: s.task_type,
                priority: 0,
                allowed_files: s.allowed_files.clone(),
                source: TaskSource::Manual,
                acceptance_tests: s.acceptance_tests.clone(),
                depends_on: Vec::new(),
                plan_key: Some(plan_key(source, &s.number)),
                candidates: None,
                worker: s.worker,
            })
            .collect()
    }
}

/// A code fence: its character and length.
fn fence_of(line: &str) -> Option<(char, usize)> {
    let t = indent_ok(line)?;
    let c = t.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// The line without up to three spaces of indentation (more makes it an
/// indented code block, not a heading or fence).
fn indent_ok(line: &str) -> Option<&str> {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    (spaces <= 3).then(|| &line[spaces..])
}

/// An ATX heading: its level and text.
fn heading(line: &str) -> Option<(usize, &str)> {
    let t = indent_ok(line)?;
    let level = t.chars().take_while(|&c| c == '#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    // A closing sequence of #s is not part of the text.
    let text = rest.trim();
    let text = match text.trim_end_matches('#') {
        stripped if stripped.is_empty() || stripped.ends_with([' ', '\t']) => stripped.trim_end(),
        _ => text,
    };
    Some((level, text))
}

/// Whether a heading's text is meant as a task: `Task` then a number or a
/// colon (`## Task Summary` is another section).
fn looks_like_task(text: &str) -> bool {
    let Some(rest) = text.get(..4).filter(|t| t.eq_ignore_ascii_case("task")) else {
        return false;
    };
    let rest = text[rest.len()..].trim_start();
    rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == ':')
}

const HEADING_FIX: &str = "write task headings as `## Task 1.2: Title`";

/// Parses `Task N.M: Title` (the separator may be `:`, `-`, `–`, `—` or `.`).
fn task_heading(text: &str, line: usize) -> Result<(String, String), PlanFileError> {
    let rest = text.get(4..).unwrap_or_default().trim_start();
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let number = number.trim_end_matches('.').to_string();
    let after = rest[number.len()..].trim_start();
    if number.is_empty() {
        return Err(err(
            line,
            format!("`{text}` has no task number; {HEADING_FIX}"),
        ));
    }
    if number.split('.').any(str::is_empty) {
        return Err(err(
            line,
            format!("`{number}` is not a task number (numbers separated by single dots, like `1.2`); {HEADING_FIX}"),
        ));
    }
    let title = after
        .strip_prefix([':', '-', '–', '—', '.'])
        .map(str::trim)
        .unwrap_or_default();
    if title.is_empty() {
        return Err(err(
            line,
            format!("task {number} has no title (or no `:` before it); {HEADING_FIX}"),
        ));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(err(
            line,
            format!("task {number}'s title is longer than {MAX_TITLE_CHARS} characters; keep it short and put the detail in the section's text"),
        ));
    }
    Ok((number, title.to_string()))
}

/// Which structured line a body line is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Label {
    Files,
    Type,
    Worker,
    AcceptanceTests,
}

/// `**Files:** a, b`, `Files: a`, `- **Type**: code` … → the label and the
/// text after it.
fn labelled(line: &str) -> Option<(Label, &str)> {
    let t = strip_list_marker(line.trim()).unwrap_or(line.trim());
    let t = t.trim_start_matches(['*', '_']);
    let (name, after) = t.split_once(':')?;
    let name = name.trim().trim_end_matches(['*', '_']).trim();
    let label = match name.to_ascii_lowercase().as_str() {
        "files" | "file" | "allowed files" => Label::Files,
        "type" | "task type" => Label::Type,
        "worker" => Label::Worker,
        "acceptance tests" | "acceptance test" => Label::AcceptanceTests,
        _ => return None,
    };
    let value = after.trim_start_matches(['*', '_']).trim();
    Some((label, value))
}

/// The text of a list item (`- x`, `* x`, `+ x`, `1. x`), if it is one.
fn strip_list_marker(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix(['-', '*', '+']) {
        return (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.trim());
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let rest = &t[digits..];
        if let Some(r) = rest.strip_prefix(['.', ')']) {
            return (r.is_empty() || r.starts_with([' ', '\t'])).then(|| r.trim());
        }
    }
    None
}

/// The path or test id in a `Files`/`Acceptance tests` entry: the first
/// `code span` if there is one, else the first word (so `calc.py (new)`
/// gives `calc.py`).
fn entry_value(item: &str) -> Option<String> {
    let item = item.trim();
    if let Some(start) = item.find('`') {
        let rest = &item[start + 1..];
        if let Some(end) = rest.find('`') {
            let v = rest[..end].trim();
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    let word = item
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| matches!(c, ',' | ';' | '*' | '_' | '"' | '\''));
    (!word.is_empty()).then(|| word.to_string())
}

/// The worker a `Worker:` line names (`` `codex` `` and `Codex` too).
fn worker_line(value: &str, number: &str, line: usize) -> Result<WorkerKind, PlanFileError> {
    let word = value
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_ascii_lowercase();
    word.parse().map_err(|_| {
        err(
            line,
            format!(
                "task {number} has worker `{}`; write `**Worker:** ` and one of {}",
                value.trim(),
                WorkerKind::names()
            ),
        )
    })
}

/// A section being read.
struct Draft {
    number: String,
    title: String,
    line: usize,
    task_type: Option<TaskType>,
    worker: Option<WorkerKind>,
    allowed_files: Vec<String>,
    acceptance_tests: Vec<String>,
    /// Body lines kept for the description.
    body: Vec<String>,
}

impl Draft {
    fn finish(self) -> Result<PlanSection, PlanFileError> {
        let mut body = self.body;
        // Trailing rules (`---` between sections) and blank lines are layout.
        while body
            .last()
            .is_some_and(|l| l.trim().is_empty() || is_rule(l))
        {
            body.pop();
        }
        let start = body.iter().take_while(|l| l.trim().is_empty()).count();
        let description = body[start..].join("\n");
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(err(
                self.line,
                format!(
                    "task {}'s text is longer than {MAX_DESCRIPTION_CHARS} characters; split it into smaller tasks",
                    self.number
                ),
            ));
        }
        Ok(PlanSection {
            number: self.number,
            title: self.title,
            description,
            task_type: self.task_type.unwrap_or_default(),
            allowed_files: self.allowed_files,
            acceptance_tests: self.acceptance_tests,
            worker: self.worker,
            line: self.line,
        })
    }
}

fn is_rule(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    t.len() >= 3
        && (t.chars().all(|c| c == '-')
            || t.chars().all(|c| c == '*')
            || t.chars().all(|c| c == '_'))
}

/// Adds the entries of a `Files:`/`Acceptance tests:` line: inline ones
/// (comma-separated) or, with nothing inline, the list right below it.
/// Returns how many following lines were consumed.
fn read_entries(
    label: Label,
    inline: &str,
    following: &[(usize, &str)],
    line: usize,
    out: &mut Vec<String>,
) -> Result<usize, PlanFileError> {
    let mut items: Vec<(usize, String)> = Vec::new();
    let mut consumed = 0;
    if inline.is_empty() {
        let mut seen_item = false;
        for (n, l) in following {
            if l.trim().is_empty() {
                if seen_item {
                    break;
                }
                consumed += 1;
                continue;
            }
            match strip_list_marker(l) {
                Some(item) => {
                    items.push((*n, item.to_string()));
                    seen_item = true;
                    consumed += 1;
                }
                None => break,
            }
        }
        if !seen_item {
            // Blank lines after a bare label are the description's.
            consumed = 0;
        }
    } else if inline.contains('`') {
        // Code spans may hold commas (`src/{a,b}.py`): take each span.
        let spans = inline.split('`').skip(1).step_by(2);
        items.extend(spans.map(|s| (line, format!("`{s}`"))));
    } else {
        items.extend(inline.split(',').map(|s| (line, s.to_string())));
    }
    let (what, example, max) = match label {
        Label::Files => (
            "file",
            "`src/app.py` or a glob like `src/**`",
            MAX_ALLOWED_FILES,
        ),
        _ => (
            "acceptance test",
            "`tests/test_app.py::test_x` or a test file",
            MAX_ACCEPTANCE_TESTS,
        ),
    };
    if items.is_empty() {
        return Err(err(
            line,
            format!("no {what} after the label; write them on the same line, comma-separated, or as a list below it (e.g. {example})"),
        ));
    }
    for (n, item) in items {
        let Some(v) = entry_value(&item) else {
            if item.trim().is_empty() {
                continue;
            }
            return Err(err(
                n,
                format!("`{}` names no {what}; write e.g. {example}", item.trim()),
            ));
        };
        let bad_test = label == Label::AcceptanceTests && v.starts_with('-');
        if !is_safe_relative(&v) || bad_test {
            return Err(err(
                n,
                format!("{what} `{v}` is not inside the repository; write a path relative to its root, e.g. {example} (not starting with `/` or `~`, without `..`)"),
            ));
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.len() > max {
        return Err(err(
            line,
            format!("more than {max} {what} entries in one task; name fewer, broader ones (globs) or split the task"),
        ));
    }
    Ok(consumed)
}

/// Parses a plan file. Errors name the line and the fix; nothing is
/// returned for a file with any error.
pub fn parse(text: &str) -> Result<PlanFile, PlanFileError> {
    let text = text.trim_start_matches('\u{feff}');
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    let mut milestone: Option<String> = None;
    let mut done: Vec<PlanSection> = Vec::new();
    let mut current: Option<Draft> = None;
    let mut fence: Option<(char, usize, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let (n, line) = lines[i];
        i += 1;
        if let Some((c, len, _)) = fence {
            if fence_of(line).is_some_and(|(c2, len2)| c2 == c && len2 >= len)
                && indent_ok(line).is_some_and(|t| t.trim_start_matches(c).trim().is_empty())
            {
                fence = None;
            }
            if let Some(d) = current.as_mut() {
                d.body.push(line.to_string());
            }
            continue;
        }
        if let Some((c, len)) = fence_of(line) {
            fence = Some((c, len, n));
            if let Some(d) = current.as_mut() {
                d.body.push(line.to_string());
            }
            continue;
        }
        if let Some((level, htext)) = heading(line) {
            let is_task = looks_like_task(htext);
            if level == 2 && is_task {
                let (number, title) = task_heading(htext, n)?;
                if let Some(prev) =
                    done.iter()
                        .find(|s| s.number == number)
                        .map(|s| s.line)
                        .or(current
                            .as_ref()
                            .filter(|d| d.number == number)
                            .map(|d| d.line))
                {
                    return Err(err(
                        n,
                        format!("task {number} is already defined at line {prev}; give each task its own number"),
                    ));
                }
                if let Some(d) = current.take() {
                    done.push(d.finish()?);
                }
                if done.len() >= MAX_PLAN_FILE_TASKS {
                    return Err(err(
                        n,
                        format!("more than {MAX_PLAN_FILE_TASKS} tasks in one plan file; split it into several milestones"),
                    ));
                }
                current = Some(Draft {
                    number,
                    title,
                    line: n,
                    task_type: None,
                    worker: None,
                    allowed_files: Vec::new(),
                    acceptance_tests: Vec::new(),
                    body: Vec::new(),
                });
                continue;
            }
            if is_task && level > 2 {
                return Err(err(
                    n,
                    format!("task headings are level 2 (`## `), this one is level {level}; {HEADING_FIX}"),
                ));
            }
            if level <= 2 {
                // Another top-level section (notes, a summary) ends the task.
                if let Some(d) = current.take() {
                    done.push(d.finish()?);
                }
                if level == 1 && milestone.is_none() && done.is_empty() {
                    milestone = Some(htext.to_string()).filter(|m| !m.is_empty());
                }
                continue;
            }
        }
        let Some(d) = current.as_mut() else {
            continue;
        };
        if let Some((label, value)) = labelled(line) {
            match label {
                Label::Type => {
                    let word = value
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                        .to_ascii_lowercase();
                    let parsed: TaskType = word.parse().map_err(|_| {
                        err(
                            n,
                            format!("task {} has type `{}`; write `**Type:** code`, `test`, `fix` or `review`", d.number, value.trim()),
                        )
                    })?;
                    if d.task_type.is_some_and(|t| t != parsed) {
                        return Err(err(
                            n,
                            format!(
                                "task {} has a second, different **Type:** line; keep one",
                                d.number
                            ),
                        ));
                    }
                    d.task_type = Some(parsed);
                }
                Label::Worker => {
                    let parsed = worker_line(value, &d.number, n)?;
                    if d.worker.is_some_and(|w| w != parsed) {
                        return Err(err(
                            n,
                            format!(
                                "task {} has a second, different **Worker:** line; keep one",
                                d.number
                            ),
                        ));
                    }
                    d.worker = Some(parsed);
                }
                Label::Files => {
                    i += read_entries(label, value, &lines[i..], n, &mut d.allowed_files)?;
                }
                Label::AcceptanceTests => {
                    i += read_entries(label, value, &lines[i..], n, &mut d.acceptance_tests)?;
                }
            }
            continue;
        }
        d.body.push(line.to_string());
    }
    if let Some((_, _, opened)) = fence {
        return Err(err(
            opened,
            "this code block is never closed, so everything after it would be read as code; close it with a line of ``` (or ~~~)",
        ));
    }
    if let Some(d) = current.take() {
        done.push(d.finish()?);
    }
    if done.is_empty() {
        return Err(err(
            1,
            format!("no task sections found; a plan file needs at least one `## Task 1.1: Title` heading ({HEADING_FIX})"),
        ));
    }
    Ok(PlanFile {
        milestone,
        tasks: done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# Milestone 1: Subtraction and division

Some context that is not a task.

## Task 1.1: Add sub()
**Type:** code
**Files:** `calc.py`, `test_calc.py`

Add `sub(a, b)` to calc.py.

**Acceptance criteria:**
- sub(5, 3) == 2

**Acceptance tests:**
- `test_calc.py::test_sub`

---

## Task 1.2 - Add div()

- **Type**: test
- Files:
  - calc.py (change)
  - `tests/**`

Division, with a test for zero:

```python
## Task 9.9: not a heading inside a fence
def div(a, b): ...
```

Acceptance tests: test_calc.py::test_div, test_calc.py::test_div_zero

## Notes

Not part of task 1.2.
";

    #[test]
    fn a_good_plan_is_read_section_by_section() {
        let plan = parse(GOOD).unwrap();
        assert_eq!(
            plan.milestone.as_deref(),
            Some("Milestone 1: Subtraction and division")
        );
        assert_eq!(plan.tasks.len(), 2);
        let a = &plan.tasks[0];
        assert_eq!(
            (a.number.as_str(), a.title.as_str(), a.line),
            ("1.1", "Add sub()", 5)
        );
        assert_eq!(a.task_type, TaskType::Code);
        assert_eq!(a.allowed_files, ["calc.py", "test_calc.py"]);
        assert_eq!(a.acceptance_tests, ["test_calc.py::test_sub"]);
        assert_eq!(
            a.description,
            "Add `sub(a, b)` to calc.py.\n\n**Acceptance criteria:**\n- sub(5, 3) == 2"
        );
        let b = &plan.tasks[1];
        assert_eq!((b.number.as_str(), b.title.as_str()), ("1.2", "Add div()"));
        assert_eq!(b.task_type, TaskType::Test);
        assert_eq!(b.allowed_files, ["calc.py", "tests/**"]);
        assert_eq!(
            b.acceptance_tests,
            ["test_calc.py::test_div", "test_calc.py::test_div_zero"]
        );
        assert!(b
            .description
            .starts_with("Division, with a test for zero:\n\n```python\n## Task 9.9"));
        assert!(b.description.ends_with("```"), "{}", b.description);
        assert!(!b.description.contains("Notes"));

        let tasks = plan.new_tasks("calc", "m1.md");
        assert_eq!(tasks[1].plan_key.as_deref(), Some("m1.md#1.2"));
        assert_eq!(tasks[0].project, "calc");
        assert_eq!(tasks[0].source, TaskSource::Manual);
        assert!(
            tasks.iter().all(|t| t.depends_on.is_empty()),
            "the store adds the order"
        );
    }

    #[test]
    fn minimal_sections_need_only_a_heading() {
        let plan = parse("## Task 1: Say hello\r\n\r\nPrint hello.\r\n").unwrap();
        assert_eq!(plan.milestone, None);
        assert_eq!(plan.tasks[0].number, "1");
        assert_eq!(plan.tasks[0].description, "Print hello.");
        assert_eq!(plan.tasks[0].task_type, TaskType::Code);
        assert!(plan.tasks[0].allowed_files.is_empty());
        let plan = parse("\u{feff}## Task 2.1: Title ##\n").unwrap();
        assert_eq!(plan.tasks[0].title, "Title");
        assert_eq!(plan.tasks[0].description, "");
    }

    fn error(text: &str) -> PlanFileError {
        parse(text).unwrap_err()
    }

    #[test]
    fn malformed_headings_name_the_line_and_the_fix() {
        let e = error("# M\n\n## Task 1.1 Add sub\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("no title") && e.message.contains("## Task 1.2: Title"),
            "{e}"
        );
        let e = error("## Task: Add sub\n");
        assert!(e.message.contains("no task number"), "{e}");
        let plan = parse("## Task 1.2. Dotted\n\n## Task Summary\n\n| a | b |\n").unwrap();
        assert_eq!(plan.tasks[0].title, "Dotted");
        assert_eq!(
            plan.tasks[0].description, "",
            "another section ends the task"
        );
        let e = error("## Task 1..2: x\n");
        assert!(e.message.contains("`1..2` is not a task number"), "{e}");
        let e = error("## Task 1.1: a\n\n### Task 1.2: b\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("level 2"), "{e}");
        let e = error("## Task 1.1: a\n## Task 1.1: b\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("already defined at line 1"), "{e}");
        let e = error(&format!("## Task 1: {}\n", "x".repeat(MAX_TITLE_CHARS + 1)));
        assert!(e.message.contains("longer than"), "{e}");
        assert_eq!(e.to_string(), format!("line 1: {}", e.message));
    }

    #[test]
    fn malformed_fields_name_the_line_and_the_fix() {
        let e = error("## Task 1.1: a\n**Type:** feature\n");
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("`feature`") && e.message.contains("`fix`"),
            "{e}"
        );
        let e = error("## Task 1.1: a\nType: code\nType: fix\n");
        assert_eq!(e.line, 3);
        let e = error("## Task 1.1: a\n**Files:**\n- ok.py\n- ../../etc/passwd\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("`../../etc/passwd`"), "{e}");
        let e = error("## Task 1.1: a\nFiles: /abs.py\n");
        assert_eq!(e.line, 2);
        let e = error("## Task 1.1: a\n**Files:**\n\nSome prose.\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("no file after the label"), "{e}");
        let e = error("## Task 1.1: a\nAcceptance tests: -k x\n");
        assert!(e.message.contains("acceptance test `-k`"), "{e}");
        let e = error(&format!(
            "## Task 1.1: a\n\n{}\n",
            "y".repeat(MAX_DESCRIPTION_CHARS + 1)
        ));
        assert_eq!(e.line, 1);
    }

    #[test]
    fn a_section_may_name_its_worker() {
        let plan = parse("## Task 1: a\n**Worker:** `mini-swe-agent`\n\nDo it.\n\n## Task 2: b\n")
            .unwrap();
        assert_eq!(plan.tasks[0].worker, Some(WorkerKind::MiniSweAgent));
        assert_eq!(plan.tasks[0].description, "Do it.");
        assert_eq!(plan.tasks[1].worker, None);
        let tasks = plan.new_tasks("p", "m1.md");
        assert_eq!(tasks[0].worker, Some(WorkerKind::MiniSweAgent));
        assert_eq!(tasks[1].worker, None);
        let e = error("## Task 1.1: a\n- Worker: cursor\n");
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("`cursor`")
                && e.message
                    .contains("builtin, claude-code, codex, aider, mini-swe-agent"),
            "{e}"
        );
        let e = error("## Task 1.1: a\nWorker: codex\nWorker: aider\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("second, different **Worker:**"), "{e}");
    }

    #[test]
    fn files_without_tasks_or_with_open_fences_are_refused() {
        let e = error("# Milestone\n\nJust prose.\n");
        assert!(e.message.contains("no task sections"), "{e}");
        let e = error("");
        assert_eq!(e.line, 1);
        let e = error("## Task 1.1: a\n\n```\n## Task 1.2: b\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("never closed"), "{e}");
    }

    #[test]
    fn code_spans_keep_their_commas() {
        let plan = parse("## Task 1: a\nFiles: `src/{a,b}.py`, `docs/x.md`\n").unwrap();
        assert_eq!(plan.tasks[0].allowed_files, ["src/{a,b}.py", "docs/x.md"]);
    }

    #[test]
    fn prose_that_merely_mentions_labels_stays_description() {
        let plan = parse(
            "## Task 1.1: a\nThe files: see below.\nA type: of thing.\nAcceptance: it works.\n",
        )
        .unwrap();
        let t = &plan.tasks[0];
        assert!(t.allowed_files.is_empty());
        assert_eq!(t.description.lines().count(), 3);
    }

    #[test]
    fn every_shipped_example_plan_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let plan = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(plan.milestone.is_some(), "{}", path.display());
            assert!(
                plan.tasks.iter().all(|t| !t.description.is_empty()),
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(
            seen >= 5,
            "examples/plans holds the design notes' test plans"
        );
    }
}
