//! Checking a planner answer: schema-level errors (which get the model a
//! repair round) and the filters that drop individual tasks (duplicates,
//! unchanged repeats of failed tasks, unsafe `allowed_files` or
//! `acceptance_tests`), each with a recorded reason.
//!
//! Every size is bounded, here and in the `task_plan` schema alike, so a
//! model (or a server's grammar) cannot produce an answer without end.

use crate::{Plan, PlanError, PlanInput, ProposedTask};
use orch_core::TaskType;
use serde_json::{Map, Value};

/// Titles longer than this are cut (characters).
pub const MAX_TITLE_CHARS: usize = 200;
/// Descriptions longer than this are cut (characters).
pub const MAX_DESCRIPTION_CHARS: usize = 8000;
/// Notes longer than this are cut (characters).
pub const MAX_NOTES_CHARS: usize = 4000;
/// Most tasks one plan may hold, whatever number is wanted.
pub const MAX_PLAN_TASKS: usize = 20;
/// Most `allowed_files` entries per task.
pub const MAX_ALLOWED_FILES: usize = 50;
/// Most `acceptance_tests` entries per task.
pub const MAX_ACCEPTANCE_TESTS: usize = 20;
/// Longest `allowed_files` or `acceptance_tests` entry (characters).
pub const MAX_PATH_CHARS: usize = 300;

/// Validates a planner answer against the `task_plan` schema, then filters
/// its tasks for `input`: see the module docs. Kept tasks come highest
/// priority first, at most `input.want` of them.
pub fn validate(raw: &Value, input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let obj = raw.as_object().ok_or_else(|| {
        invalid(format!(
            "the plan must be a JSON object with `tasks` and `notes`, got {}",
            kind(raw)
        ))
    })?;
    let tasks_value = field(obj, "tasks", "")?;
    let tasks = tasks_value.as_array().ok_or_else(|| {
        invalid(format!(
            "`tasks` must be an array, got {}",
            kind(tasks_value)
        ))
    })?;
    let notes_value = field(obj, "notes", "")?;
    let notes = notes_value
        .as_str()
        .ok_or_else(|| {
            invalid(format!(
                "`notes` must be a string, got {}",
                kind(notes_value)
            ))
        })?
        .trim()
        .to_string();
    let notes = cap_chars(&notes, MAX_NOTES_CHARS);
    let proposed = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| parse_task(i, t))
        .collect::<Result<Vec<_>, _>>()?;

    let mut dropped = Vec::new();
    let mut kept: Vec<ProposedTask> = Vec::new();
    for task in proposed {
        match drop_reason(&task, &kept, input) {
            Some(reason) => dropped.push((task.title, reason)),
            None => kept.push(task),
        }
    }
    // Stable: equal priorities keep the model's order.
    kept.sort_by_key(|t| std::cmp::Reverse(t.priority));
    if kept.len() > input.want {
        for task in kept.split_off(input.want) {
            let reason = format!(
                "over the limit of {} task(s) wanted this cycle; lower priority than the ones kept",
                input.want
            );
            dropped.push((task.title, reason));
        }
    }
    Ok(Plan {
        tasks: kept,
        notes,
        dropped,
        raw: raw.clone(),
    })
}

fn parse_task(i: usize, value: &Value) -> Result<ProposedTask, PlanError> {
    let at = format!("tasks[{i}]");
    let obj = value
        .as_object()
        .ok_or_else(|| invalid(format!("`{at}` must be an object, got {}", kind(value))))?;
    let string = |name: &str| -> Result<&str, PlanError> {
        let v = field(obj, name, &at)?;
        v.as_str()
            .ok_or_else(|| invalid(format!("`{at}.{name}` must be a string, got {}", kind(v))))
    };
    let title = string("title")?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if title.is_empty() {
        return Err(invalid(format!(
            "`{at}.title` is empty; every task needs a short title"
        )));
    }
    let description = string("description")?.trim().to_string();
    let type_name = string("type")?;
    let task_type = match type_name {
        "code" => TaskType::Code,
        "test" => TaskType::Test,
        "fix" => TaskType::Fix,
        "review" => TaskType::Review,
        other => {
            return Err(invalid(format!(
                "`{at}.type` is \"{other}\"; expected one of code, test, fix, review"
            )))
        }
    };
    let priority_value = field(obj, "priority", &at)?;
    let priority = priority_value
        .as_i64()
        .or_else(|| {
            priority_value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| {
            invalid(format!(
                "`{at}.priority` must be an integer, got {}",
                describe(priority_value)
            ))
        })?;
    let allowed_files = strings(
        field(obj, "allowed_files", &at)?,
        &at,
        "allowed_files",
        MAX_ALLOWED_FILES,
    )?;
    // Optional: a plan without it (an older script, a model that left it
    // out) names no acceptance tests.
    let acceptance_tests = match obj.get("acceptance_tests") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            let mut tests = strings(v, &at, "acceptance_tests", MAX_ACCEPTANCE_TESTS)?;
            // Blank entries say nothing; repeats say it twice.
            tests.retain(|t| !t.is_empty());
            let mut seen = std::collections::HashSet::new();
            tests.retain(|t| seen.insert(t.clone()));
            tests
        }
    };
    Ok(ProposedTask {
        title: cap_chars(&title, MAX_TITLE_CHARS),
        description: cap_chars(&description, MAX_DESCRIPTION_CHARS),
        task_type,
        priority,
        allowed_files,
        acceptance_tests,
    })
}

/// `value` as a list of at most `max` trimmed strings of at most
/// [`MAX_PATH_CHARS`] characters each.
fn strings(value: &Value, at: &str, name: &str, max: usize) -> Result<Vec<String>, PlanError> {
    let items = value.as_array().ok_or_else(|| {
        invalid(format!(
            "`{at}.{name}` must be an array of strings, got {}",
            kind(value)
        ))
    })?;
    if items.len() > max {
        return Err(invalid(format!(
            "`{at}.{name}` has {} entries; at most {max} are allowed (name fewer, broader ones)",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let s = f.as_str().map(str::trim).ok_or_else(|| {
                invalid(format!(
                    "`{at}.{name}[{j}]` must be a string, got {}",
                    kind(f)
                ))
            })?;
            if s.chars().count() > MAX_PATH_CHARS {
                return Err(invalid(format!(
                    "`{at}.{name}[{j}]` is longer than {MAX_PATH_CHARS} characters"
                )));
            }
            Ok(s.to_string())
        })
        .collect()
}

/// Why `task` must not be created, if it must not.
fn drop_reason(
    task: &ProposedTask,
    kept: &[ProposedTask],
    input: &PlanInput<'_>,
) -> Option<String> {
    if let Some(bad) = task.allowed_files.iter().find(|f| !is_safe_relative(f)) {
        return Some(format!(
            "allowed_files entry `{bad}` is not a relative path or glob inside the repository \
             (it must not be empty, start with `/` or `~`, or contain `..`)"
        ));
    }
    if let Some(bad) = task.acceptance_tests.iter().find(|t| !is_safe_relative(t)) {
        return Some(format!(
            "acceptance_tests entry `{bad}` is not a test id or test file inside the repository \
             (like `tests/test_x.py::test_y`; it must not start with `/` or `~`, or contain `..`)"
        ));
    }
    let title = normalize(&task.title);
    let description = normalize(&task.description);
    if let Some(failed) = input
        .recent_failures
        .iter()
        .find(|f| normalize(&f.title) == title && normalize(&f.description) == description)
    {
        return Some(format!(
            "identical to task {} (\"{}\"), which failed; a failed task must be decomposed or \
             changed, never re-emitted unchanged",
            failed.id, failed.title
        ));
    }
    if let Some(open) = input
        .open_tasks
        .iter()
        .find(|t| normalize(&t.title) == title)
    {
        return Some(format!(
            "duplicate of open task {} (\"{}\")",
            open.id, open.title
        ));
    }
    if kept.iter().any(|k| normalize(&k.title) == title) {
        return Some("duplicate of an earlier task in this plan".to_string());
    }
    None
}

/// True for a relative path or glob that stays inside the repository.
fn is_safe_relative(entry: &str) -> bool {
    !entry.is_empty()
        && !entry.starts_with('/')
        && !entry.starts_with('\\')
        && !entry.starts_with('~')
        && !entry.split(['/', '\\']).any(|part| part == "..")
}

/// Lowercase, with every run of whitespace and punctuation collapsed to one
/// space, so "Fix: the parser!" and "fix the  parser" compare equal.
pub fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn cap_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a Value, PlanError> {
    obj.get(name).ok_or_else(|| {
        let path = if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        };
        invalid(format!("missing required field `{path}`"))
    })
}

fn invalid(detail: String) -> PlanError {
    PlanError::Invalid(detail)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `kind`, plus the value itself for short scalars ("a number (2.5)").
fn describe(v: &Value) -> String {
    match v {
        Value::Number(_) | Value::Bool(_) => format!("{} ({v})", kind(v)),
        Value::String(s) if s.len() <= 40 => format!("a string ({v})"),
        _ => kind(v).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::PlanContext;
    use orch_core::{Task, TaskStatus};
    use serde_json::json;

    fn task_json(title: &str, priority: i64) -> Value {
        json!({"title": title, "description": format!("Do {title}."), "type": "code", "priority": priority, "allowed_files": []})
    }

    fn run(raw: Value, open: &[Task], failed: &[Task], want: usize) -> Result<Plan, PlanError> {
        let ctx = PlanContext::default();
        validate(
            &raw,
            &PlanInput {
                project: "demo",
                context: &ctx,
                open_tasks: open,
                recent_failures: failed,
                want,
            },
        )
    }

    fn err(raw: Value) -> String {
        match run(raw, &[], &[], 10) {
            Err(PlanError::Invalid(detail)) => detail,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn schema_errors_are_specific() {
        assert_eq!(
            err(json!([])),
            "the plan must be a JSON object with `tasks` and `notes`, got an array"
        );
        assert_eq!(err(json!({"notes": ""})), "missing required field `tasks`");
        assert_eq!(err(json!({"tasks": []})), "missing required field `notes`");
        assert_eq!(
            err(json!({"tasks": [], "notes": 3})),
            "`notes` must be a string, got a number"
        );
        assert_eq!(
            err(json!({"tasks": [1], "notes": ""})),
            "`tasks[0]` must be an object, got a number"
        );
        let mut t = task_json("A", 1);
        t.as_object_mut().unwrap().remove("description");
        assert_eq!(
            err(json!({"tasks": [task_json("ok", 1), t], "notes": ""})),
            "missing required field `tasks[1].description`"
        );
        let mut t = task_json("A", 1);
        t["title"] = json!("  \n ");
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].title` is empty; every task needs a short title"
        );
        let mut t = task_json("A", 1);
        t["type"] = json!("feature");
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].type` is \"feature\"; expected one of code, test, fix, review"
        );
        let mut t = task_json("A", 1);
        t["priority"] = json!(2.5);
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].priority` must be an integer, got a number (2.5)"
        );
        let mut t = task_json("A", 1);
        t["priority"] = json!("high");
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].priority` must be an integer, got a string (\"high\")"
        );
        let mut t = task_json("A", 1);
        t["allowed_files"] = json!("src/**");
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].allowed_files` must be an array of strings, got a string"
        );
        let mut t = task_json("A", 1);
        t["allowed_files"] = json!(["ok", null]);
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].allowed_files[1]` must be a string, got null"
        );
    }

    #[test]
    fn whole_number_floats_are_accepted_as_priorities() {
        let mut t = task_json("A", 1);
        t["priority"] = json!(3.0);
        let plan = run(json!({"tasks": [t], "notes": ""}), &[], &[], 10).unwrap();
        assert_eq!(plan.tasks[0].priority, 3);
    }

    #[test]
    fn absurd_lengths_are_capped() {
        let mut t = task_json("A", 1);
        t["title"] = json!("t".repeat(500));
        t["description"] = json!("é".repeat(9000));
        let plan = run(json!({"tasks": [t], "notes": ""}), &[], &[], 10).unwrap();
        assert_eq!(plan.tasks[0].title.chars().count(), MAX_TITLE_CHARS);
        assert!(plan.tasks[0].title.ends_with('…'));
        assert_eq!(
            plan.tasks[0].description.chars().count(),
            MAX_DESCRIPTION_CHARS
        );
    }

    #[test]
    fn duplicates_of_open_tasks_and_within_the_plan_are_dropped() {
        let open = vec![stored_task(
            "Fix the parser",
            "old words",
            TaskStatus::Pending,
        )];
        let raw = json!({"tasks": [
            task_json("fix: The  PARSER!", 5),
            task_json("Add CLI flag", 3),
            task_json("add cli flag.", 4),
        ], "notes": "n"});
        let plan = run(raw, &open, &[], 10).unwrap();
        let titles: Vec<_> = plan.tasks.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(titles, vec!["Add CLI flag"]);
        assert_eq!(plan.dropped.len(), 2);
        assert_eq!(plan.dropped[0].0, "fix: The PARSER!");
        assert!(
            plan.dropped[0]
                .1
                .starts_with(&format!("duplicate of open task {}", open[0].id)),
            "{}",
            plan.dropped[0].1
        );
        assert_eq!(
            plan.dropped[1],
            (
                "add cli flag.".to_string(),
                "duplicate of an earlier task in this plan".to_string()
            )
        );
    }

    #[test]
    fn failed_task_is_never_re_emitted_unchanged() {
        let failed = vec![stored_task(
            "Speed up import",
            "Make `import x` take < 1s.",
            TaskStatus::Failed,
        )];
        let same = json!({"title": "speed up import", "description": "Make import x take 1s", "type": "code", "priority": 1, "allowed_files": []});
        let decomposed = json!({"title": "Speed up import", "description": "Profile import x and lazy-load the plugins module only.", "type": "code", "priority": 1, "allowed_files": []});
        let plan = run(
            json!({"tasks": [same, decomposed], "notes": ""}),
            &[],
            &failed,
            10,
        )
        .unwrap();
        assert_eq!(plan.tasks.len(), 1, "a changed description is allowed");
        assert!(plan.tasks[0].description.starts_with("Profile"));
        assert_eq!(plan.dropped.len(), 1);
        assert!(
            plan.dropped[0].1.contains("which failed"),
            "{}",
            plan.dropped[0].1
        );
        assert!(
            plan.dropped[0].1.contains(failed[0].id.as_str()),
            "{}",
            plan.dropped[0].1
        );
    }

    #[test]
    fn unsafe_allowed_files_drop_the_task() {
        let mut ok = task_json("Ok paths", 1);
        ok["allowed_files"] = json!(["src/**/*.rs", "tests/test_x.py", "./docs/a.md", "a..b.txt"]);
        let mut bad = vec![];
        for (i, entry) in ["/etc/passwd", "../other/x", "src/../../x", "~/x", ""]
            .iter()
            .enumerate()
        {
            let mut t = task_json(&format!("Bad {i}"), 1);
            t["allowed_files"] = json!(["src/ok.rs", entry]);
            bad.push(t);
        }
        let mut tasks = vec![ok];
        tasks.extend(bad);
        let plan = run(json!({"tasks": tasks, "notes": ""}), &[], &[], 10).unwrap();
        assert_eq!(plan.tasks.len(), 1);
        assert_eq!(plan.tasks[0].allowed_files.len(), 4);
        assert_eq!(plan.dropped.len(), 5);
        assert!(
            plan.dropped[0].1.contains("`/etc/passwd`"),
            "{}",
            plan.dropped[0].1
        );
        assert!(plan
            .dropped
            .iter()
            .all(|(_, r)| r.contains("not a relative path")));
    }

    #[test]
    fn acceptance_tests_are_optional_relative_safe_and_bounded() {
        // Missing or null: none named.
        let plan = run(
            json!({"tasks": [task_json("A", 1)], "notes": ""}),
            &[],
            &[],
            10,
        )
        .unwrap();
        assert!(plan.tasks[0].acceptance_tests.is_empty());
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = Value::Null;
        let plan = run(json!({"tasks": [t], "notes": ""}), &[], &[], 10).unwrap();
        assert!(plan.tasks[0].acceptance_tests.is_empty());

        // Trimmed, blanks and repeats dropped, order kept.
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = json!([
            " tests/test_calc.py::test_add ",
            "",
            "test_calc.py",
            "tests/test_calc.py::test_add"
        ]);
        let plan = run(json!({"tasks": [t], "notes": ""}), &[], &[], 10).unwrap();
        assert_eq!(
            plan.tasks[0].acceptance_tests,
            vec!["tests/test_calc.py::test_add", "test_calc.py"]
        );

        // Outside the repository: the task is dropped, with the reason.
        for entry in ["/etc/passwd", "../x/test_a.py", "~/t.py"] {
            let mut t = task_json("A", 1);
            t["acceptance_tests"] = json!(["test_ok.py", entry]);
            let plan = run(json!({"tasks": [t], "notes": ""}), &[], &[], 10).unwrap();
            assert!(plan.tasks.is_empty(), "{entry}");
            assert!(
                plan.dropped[0]
                    .1
                    .starts_with(&format!("acceptance_tests entry `{entry}`")),
                "{}",
                plan.dropped[0].1
            );
        }

        // Wrong shapes and sizes are schema errors (a repair round).
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = json!("test_a.py");
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].acceptance_tests` must be an array of strings, got a string"
        );
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = json!([1]);
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].acceptance_tests[0]` must be a string, got a number"
        );
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = json!((0..=MAX_ACCEPTANCE_TESTS)
            .map(|i| format!("test_{i}.py"))
            .collect::<Vec<_>>());
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].acceptance_tests` has 21 entries; at most 20 are allowed (name fewer, broader ones)"
        );
        let mut t = task_json("A", 1);
        t["acceptance_tests"] = json!(["t".repeat(MAX_PATH_CHARS + 1)]);
        assert_eq!(
            err(json!({"tasks": [t], "notes": ""})),
            "`tasks[0].acceptance_tests[0]` is longer than 300 characters"
        );
        let mut t = task_json("A", 1);
        t["allowed_files"] = json!((0..=MAX_ALLOWED_FILES)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>());
        assert!(err(json!({"tasks": [t], "notes": ""})).contains("at most 50 are allowed"),);
    }

    #[test]
    fn long_notes_are_capped() {
        let plan = run(
            json!({"tasks": [], "notes": "n".repeat(MAX_NOTES_CHARS * 2)}),
            &[],
            &[],
            10,
        )
        .unwrap();
        assert_eq!(plan.notes.chars().count(), MAX_NOTES_CHARS);
    }

    #[test]
    fn keeps_at_most_want_highest_priority_first() {
        let raw = json!({"tasks": [task_json("low", 1), task_json("high", 9), task_json("mid", 5), task_json("mid2", 5)], "notes": ""});
        let plan = run(raw, &[], &[], 2).unwrap();
        let titles: Vec<_> = plan.tasks.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(titles, vec!["high", "mid"]);
        let dropped: Vec<_> = plan.dropped.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(dropped, vec!["mid2", "low"]);
        assert!(plan.dropped[0].1.contains("limit of 2"));
    }

    #[test]
    fn normalize_collapses_case_space_and_punctuation() {
        assert_eq!(
            normalize("  Fix:  the\tParser!! (v2) "),
            "fix the parser v2"
        );
        assert_eq!(normalize("fix-the_parser"), "fix the parser");
    }
}
