//! End-to-end: from a requirements file to a finished project, with the
//! real `orch` binary, real git, tar and bubblewrap; only the model is the
//! replay provider (scripting the architect, the workers and the judge).
//!
//! - `orch new todo --requirements todo.md` makes the repository with
//!   REQUIREMENTS.md, registers the project from `[new_projects]` (the
//!   rest of the config untouched), commits the architect's PLAN.md, works
//!   and merges both of its tasks in order, and archives main: `tar -tzf`
//!   lists the built files; `orch cost` shows the architect's, workers'
//!   and judge's calls;
//! - bad inputs (a missing or empty file, a bad name) exit 2 and write
//!   nothing; a plan without task sections exits 1, commits and imports
//!   nothing and leaves a project that a re-run of `orch new` refuses,
//!   naming `orch run --project NAME`;
//! - `orch serve` with `[server] requirements_dir` makes a project of a
//!   file dropped there, once: a restart does not make it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::serve::Serve;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REQUIREMENTS: &str = "# Todo\n\nA tiny todo list module in Python, with pytest tests:\nstore items, then count them.\n";

const PLAN: &str = "# Milestone 1: A todo list\n\n\
## Task 1.1: Store todo items\n\
**Type:** code\n\
**Files:** `todo.py`, `test_todo.py`\n\n\
Add `add(items, text)` to todo.py: it appends `text` to the list and returns the list.\n\n\
**Acceptance criteria:**\n\
- add([], \"a\") == [\"a\"]\n\n\
## Task 1.2: Count todo items\n\
**Type:** code\n\
**Files:** `todo.py`, `test_todo.py`\n\n\
Add `count(items)` to todo.py, the number of items.\n\n\
**Acceptance criteria:**\n\
- count([\"a\", \"b\"]) == 2\n";

const TODO_1: &str = "def add(items, text):\n    items.append(text)\n    return items\n";
/// Task 1.1's second refinement iteration: the judge asked for a docstring.
const TODO_1_DOC: &str =
    "def add(items, text):\n    \"\"\"Appends text to items.\"\"\"\n    items.append(text)\n    return items\n";
const TEST_1: &str =
    "from todo import add\n\n\ndef test_add():\n    assert add([], \"a\") == [\"a\"]\n";
const TODO_2: &str = "def add(items, text):\n    items.append(text)\n    return items\n\n\ndef count(items):\n    return len(items)\n";
const TEST_2: &str = "from todo import add, count\n\n\ndef test_add():\n    assert add([], \"a\") == [\"a\"]\n\n\ndef test_count():\n    assert count([\"a\", \"b\"]) == 2\n";

/// The phrase only the project architect's prompt has.
const PROJECT_ARCHITECT: &str = "Write the project's PLAN.md";

/// The architect (the project's plan first, then short per-task plans),
/// the workers told apart by their task's title — task 1.1 twice, for the
/// refinement iteration its first score (6.5, under the threshold of 8)
/// asks for — and the judge.
fn script(plan: &str) -> Value {
    json!({"responses": [
        {"model": "architect", "when": PROJECT_ARCHITECT, "content": plan},
        {"model": "architect", "times": 0, "content": "Write the module and its test, then run the tests."},
        worker_call(Some("Store todo items"), json!([
            {"name": "write_file", "arguments": {"path": "todo.py", "content": TODO_1}},
            {"name": "write_file", "arguments": {"path": "test_todo.py", "content": TEST_1}},
            {"name": "finish", "arguments": {"summary": "add() stores items"}}
        ])),
        worker_call(Some("Store todo items"), json!([
            {"name": "write_file", "arguments": {"path": "todo.py", "content": TODO_1_DOC}},
            {"name": "finish", "arguments": {"summary": "documented add()"}}
        ])),
        {"model": "judge", "json": {"passed": true, "score": 6.5, "reasoning": "works", "issues": ["add() has no docstring"]}},
        worker_call(Some("Count todo items"), json!([
            {"name": "write_file", "arguments": {"path": "todo.py", "content": TODO_2}},
            {"name": "write_file", "arguments": {"path": "test_todo.py", "content": TEST_2}},
            {"name": "finish", "arguments": {"summary": "count() counts them"}}
        ])),
        judge_pass(),
    ]})
}

/// The user's config: a comment, a provider, the template and `extra`.
fn config_text(extra: &str) -> String {
    format!(
        "# My portfolio (orch new must keep this comment)\n\
data_dir = \".orch\"\n\n\
[providers.replay]\n\
kind = \"replay\"\n\
script = \"script.json\"   # scripted answers\n\n\
# What orch new gives each project.\n\
[new_projects]\n\
worker_model = \"replay:worker\"\n\
judge_model = \"replay:judge\"\n\
architect_model = \"replay:architect\"\n\
test_command = \"python3 -m pytest -q\"\n\
max_workers = 1\n\
max_attempts = 2\n\
max_turns = 20\n\
worker_timeout_seconds = 120\n\
command_timeout_seconds = 120\n\
auto_plan = false\n\
sandbox = \"{}\"\n\n\
# Each attempt refines until the judge gives 8.\n\
[new_projects.refine]\n\
threshold = 8.0\n\
max_iterations = 3\n\
{extra}",
        sandbox()
    )
}

/// A directory with the config, the replay script and a requirements
/// file; `Fixture::repo` is where `orch new NAME` puts the repository.
fn setup(name: &str, plan: &str, extra: &str) -> (Fixture, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orch.toml");
    std::fs::write(&config, config_text(extra)).unwrap();
    std::fs::write(
        dir.path().join("script.json"),
        serde_json::to_string_pretty(&script(plan)).unwrap(),
    )
    .unwrap();
    let requirements = dir.path().join(format!("{name}.md"));
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    let repo = dir.path().join(".orch/projects").join(name);
    (Fixture { dir, repo, config }, requirements)
}

fn json_of(fx: &Fixture, args: &[&str]) -> Value {
    serde_json::from_str(&fx.orch_ok(args, 0)).unwrap()
}

fn archives(fx: &Fixture) -> Vec<PathBuf> {
    let dir = fx.root().join(".orch/archive");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn tar_listing(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn calls_by_role(fx: &Fixture, project: &str) -> Value {
    json_of(fx, &["cost", "--project", project, "--json"])["by_role"].clone()
}

fn events_of(fx: &Fixture, project: &str) -> Vec<Value> {
    serde_json::from_str(&fx.orch_ok(
        &[
            "events",
            "--project",
            project,
            "--json",
            "--limit",
            "100000",
        ],
        0,
    ))
    .unwrap()
}

#[test]
fn a_requirements_file_becomes_a_built_merged_and_archived_project() {
    let (fx, requirements) = setup("todo", PLAN, "");
    let before = std::fs::read_to_string(&fx.config).unwrap();
    let out = fx.orch_ok(
        &[
            "new",
            "todo",
            "--requirements",
            requirements.to_str().unwrap(),
        ],
        0,
    );
    assert!(out.contains("registered project `todo`"), "{out}");
    assert!(out.contains("2 task(s), run in order"), "{out}");

    // The config: the user's text kept as written, the project appended
    // from the template.
    let after = std::fs::read_to_string(&fx.config).unwrap();
    assert!(after.starts_with(&before), "config rewritten:\n{after}");
    assert!(after.contains("[[projects]]\nname = \"todo\"\n"), "{after}");
    assert!(after.contains("architect_model = \"replay:architect\""));

    // The repository: requirements, then the plan, then both tasks in
    // order, all on main.
    let subjects = git(&fx.repo, &["log", "main", "--reverse", "--format=%s"]);
    let subjects: Vec<&str> = subjects.lines().collect();
    assert_eq!(subjects[0], "Requirements for todo", "{subjects:?}");
    assert_eq!(
        subjects[1], "Plan for todo, by the architect",
        "{subjects:?}"
    );
    assert!(subjects.len() >= 4, "{subjects:?}");
    assert_eq!(
        git(&fx.repo, &["show", "main:REQUIREMENTS.md"]),
        REQUIREMENTS.trim_end()
    );
    assert_eq!(git(&fx.repo, &["show", "main:PLAN.md"]), PLAN.trim_end());
    assert_eq!(git(&fx.repo, &["show", "main:todo.py"]), TODO_2.trim_end());
    assert_eq!(
        git(&fx.repo, &["show", "main:test_todo.py"]),
        TEST_2.trim_end()
    );

    let tasks = json_of(&fx, &["tasks", "--project", "todo", "--json"]);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["status"] == "merged"), "{tasks:?}");
    let id_of = |title: &str| {
        tasks.iter().find(|t| t["title"] == title).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first, second) = (id_of("Store todo items"), id_of("Count todo items"));
    // In plan order: the second is claimed only after the first merged.
    let events = events_of(&fx, "todo");
    let at = |task: &str, kind: &str| {
        events
            .iter()
            .find(|e| e["task_id"] == task && e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} for {task}"))["id"]
            .as_i64()
            .unwrap()
    };
    assert!(at(&first, "merged") < at(&second, "task_claimed"));
    // The template's [new_projects.refine] applied: task 1.1's attempt
    // iterated until the judge's score reached the threshold, and landed
    // its best snapshot (the documented add()).
    let shown = json_of(&fx, &["show", &first, "--json"]);
    let iterations = shown["attempts"][0]["iterations"].as_array().unwrap();
    let scores: Vec<f64> = iterations
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, vec![6.5, 9.0], "{iterations:?}");
    let history = git(&fx.repo, &["log", "main", "-p", "--", "todo.py"]);
    assert!(history.contains("Appends text to items"), "{history}");
    assert!(events.iter().any(|e| e["kind"] == "project_created"));

    // The archive: under data_dir, named after the project, holding the
    // built tree.
    let found = archives(&fx);
    assert_eq!(found.len(), 1, "{found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("todo_") && name.ends_with("Z.tar.gz"),
        "{name}"
    );
    assert!(out.contains(&found[0].display().to_string()), "{out}");
    assert_eq!(
        tar_listing(&found[0]),
        vec!["PLAN.md", "REQUIREMENTS.md", "test_todo.py", "todo.py"]
    );
    let archived = events
        .iter()
        .find(|e| e["kind"] == "project_archived")
        .expect("a project_archived event");
    assert_eq!(
        archived["data"]["bytes"].as_u64().unwrap(),
        std::fs::metadata(&found[0]).unwrap().len()
    );

    // Usage per role: the architect (the project's plan and one per task),
    // the workers and the judge, all metered.
    let roles = calls_by_role(&fx, "todo");
    assert_eq!(roles["architect"]["calls"], 3, "{roles}");
    assert_eq!(roles["worker"]["calls"], 3, "{roles}");
    assert_eq!(roles["judge"]["calls"], 3, "{roles}");
    for role in ["architect", "worker", "judge"] {
        assert!(out.contains(role), "usage table lacks {role}:\n{out}");
    }
}

#[test]
fn bad_inputs_write_nothing_and_a_plan_without_tasks_leaves_a_resumable_project() {
    let (fx, requirements) = setup("bad", "Sure! I would build a todo app with a list.", "");
    let config_before = std::fs::read_to_string(&fx.config).unwrap();
    let untouched = |fx: &Fixture| {
        assert_eq!(std::fs::read_to_string(&fx.config).unwrap(), config_before);
        assert!(!fx.root().join(".orch/projects").exists());
    };

    let missing = fx.root().join("nope.md");
    let out = fx.orch(&["new", "x", "--requirements", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.md does not exist"), "{err}");
    untouched(&fx);

    let empty = fx.root().join("empty.md");
    std::fs::write(&empty, "\n  \n").unwrap();
    let out = fx.orch(&["new", "x", "--requirements", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    untouched(&fx);

    let req = requirements.to_str().unwrap();
    let out = fx.orch(&["new", "../escape", "--requirements", req]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not usable"));
    untouched(&fx);

    // The architect answers without a single task section.
    let out = fx.orch(&["new", "bad", "--requirements", req]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("PLAN.md was refused"), "{err}");
    assert!(err.contains("no task sections found"), "{err}");
    assert!(
        err.contains("orch plan import PLAN.md --project bad"),
        "{err}"
    );
    // Nothing half-written: only the requirements are committed, the
    // worktree is clean, the queue is empty, nothing is archived.
    assert_eq!(
        git(&fx.repo, &["ls-tree", "--name-only", "main"]),
        "REQUIREMENTS.md"
    );
    assert_eq!(git(&fx.repo, &["status", "--porcelain"]), "");
    assert_eq!(
        json_of(&fx, &["tasks", "--project", "bad", "--json"]),
        json!([])
    );
    assert!(archives(&fx).is_empty());
    // The answer is kept for a person to read.
    let kept = std::fs::read_dir(fx.root().join(".orch/audit/bad/plans"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("PLAN.md.refused-"))
        .expect("the refused answer is kept");
    assert!(std::fs::read_to_string(kept).unwrap().contains("Sure!"));
    let roles = calls_by_role(&fx, "bad");
    assert_eq!(roles["architect"]["calls"], 1, "{roles}");

    // The project is registered; orch new does not make it again.
    let out = fx.orch(&["new", "bad", "--requirements", req]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("project `bad` already exists"), "{err}");
    assert!(err.contains("orch run --project bad --until-idle"), "{err}");
}

#[test]
fn serve_makes_a_project_of_a_file_dropped_in_its_folder_once() {
    let (fx, _) = setup(
        "shop",
        PLAN,
        "\n[server]\nrequirements_dir = \"inbox\"\nshutdown_grace_seconds = 5\n",
    );
    let mut serve = Serve::start(&fx, &[]);
    serve.wait_log("becomes a project", Duration::from_secs(60));
    // Written elsewhere and moved in whole, as a person would save it.
    let inbox = fx.root().join("inbox");
    std::fs::write(fx.root().join("shop.tmp"), REQUIREMENTS).unwrap();
    std::fs::rename(fx.root().join("shop.tmp"), inbox.join("shop.md")).unwrap();
    serve.wait_log("shop: made from", Duration::from_secs(180));
    let log = serve.log();
    assert!(log.contains("shop: making a project from"), "{log}");
    assert!(log.contains("shop: usage: architect 3 call(s)"), "{log}");
    serve.terminate();

    let found = archives(&fx);
    assert_eq!(found.len(), 1, "{found:?}\n{log}");
    assert!(tar_listing(&found[0]).contains(&"todo.py".to_string()));
    assert_eq!(git(&fx.repo, &["show", "main:todo.py"]), TODO_2.trim_end());

    // A restart serves the new project like any other and does not make
    // it again.
    let mut again = Serve::start(&fx, &[]);
    again.wait_log("shop: run finished", Duration::from_secs(60));
    again.wait_log("becomes a project", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let log = again.log();
    assert!(!log.contains("making a project"), "{log}");
    again.terminate();
    assert_eq!(archives(&fx).len(), 1);
    let tasks = json_of(&fx, &["tasks", "--project", "shop", "--json"]);
    assert_eq!(tasks.as_array().unwrap().len(), 2, "{tasks}");
}
