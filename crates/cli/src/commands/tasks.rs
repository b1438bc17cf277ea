//! `orch add-task` (from flags or a YAML/JSON task file), `orch tasks`,
//! `orch answer`, `orch cancel`.

use super::{load_config, open_store, print_json, require_project};
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::Args;
use orch_core::{NewTask, Task, TaskId, TaskSource, TaskStatus, TaskType};
use orch_planner::task_file::{self, TaskFileFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AddTaskArgs {
    /// The project (with --file, may be named in the file instead).
    #[arg(long, required_unless_present = "file")]
    pub project: Option<String>,
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub title: Option<String>,
    #[arg(long = "desc", default_value = "", conflicts_with = "file")]
    pub description: String,
    /// code | test | fix | review
    #[arg(long = "type", default_value = "code", conflicts_with = "file")]
    pub task_type: String,
    /// Higher runs first.
    #[arg(
        long,
        default_value_t = 0,
        allow_hyphen_values = true,
        conflicts_with = "file"
    )]
    pub priority: i64,
    /// Glob patterns of files the worker may write (repeat or comma-separate).
    #[arg(long = "allowed-files", value_delimiter = ',', conflicts_with = "file")]
    pub allowed_files: Vec<String>,
    /// A test that proves the task done: a test id (`test_calc.py::test_add`)
    /// or a test file (repeatable). It must pass for the task to pass.
    #[arg(long = "accept", value_name = "TEST", conflicts_with = "file")]
    pub acceptance_tests: Vec<String>,
    /// A task (id or unique prefix) that must be merged before this one
    /// starts (repeatable).
    #[arg(long = "depends-on", value_name = "TASK", conflicts_with = "file")]
    pub depends_on: Vec<String>,
    /// Best-of-N: run this many attempts in parallel per round (1-8), the
    /// best of those that pass lands; default: the project's `candidates`.
    #[arg(long, value_name = "N", conflicts_with = "file")]
    pub candidates: Option<u32>,
    /// What does the work: builtin | claude-code | codex | aider |
    /// mini-swe-agent; default: the project's `worker`.
    #[arg(long, value_name = "WORKER", conflicts_with = "file")]
    pub worker: Option<String>,
    /// Read the task from a YAML or JSON file (`-` for stdin) with the
    /// fields project, title, description, type, priority, allowed_files,
    /// acceptance_tests, depends_on, candidates, worker (see examples/task_example.yaml).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The task a `--file` describes.
fn task_from_file(path: &Path, project: Option<&str>) -> Result<NewTask, CliError> {
    let (text, shown) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::usage(format!("cannot read the task from stdin: {e}")))?;
        (text, "stdin".to_string())
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "cannot read task file {}: {e}; give the path of a YAML or JSON task file",
                path.display()
            ))
        })?;
        (text, path.display().to_string())
    };
    let format = TaskFileFormat::detect(Some(path), &text);
    let refused = |e: task_file::TaskFileError| {
        CliError::usage(format!("task file {shown}: {e}; nothing was written"))
    };
    let spec = task_file::parse(&text, format).map_err(refused)?;
    spec.to_new_task(project).map_err(refused)
}

/// The task the flags describe.
fn task_from_flags(a: &AddTaskArgs, project: &str) -> Result<NewTask, CliError> {
    let task_type: TaskType = a.task_type.parse().map_err(CliError::usage)?;
    let title = a.title.as_deref().unwrap_or_default().trim();
    if title.is_empty() {
        return Err(CliError::usage("--title must not be empty"));
    }
    for f in &a.allowed_files {
        if f.starts_with('/') || f.split('/').any(|c| c == "..") {
            return Err(CliError::usage(format!("--allowed-files `{f}`: expected a path relative to the repository root, without `..`")));
        }
    }
    let accept: Vec<String> = a
        .acceptance_tests
        .iter()
        .map(|t| t.trim().to_string())
        .collect();
    if let Some(bad) = accept.iter().find(|t| t.is_empty() || t.starts_with('-')) {
        return Err(CliError::usage(format!(
            "--accept `{bad}`: expected a test id such as `tests/test_calc.py::test_add` or a test file"
        )));
    }
    if let Some(n) = a
        .candidates
        .filter(|n| !(1..=orch_core::MAX_CANDIDATES).contains(n))
    {
        return Err(CliError::usage(format!(
            "--candidates {n}: expected 1 to {} attempts in parallel per round",
            orch_core::MAX_CANDIDATES
        )));
    }
    let worker = a
        .worker
        .as_deref()
        .map(|w| w.trim().parse())
        .transpose()
        .map_err(|e: String| CliError::usage(format!("--worker: {e}")))?;
    if let Some(bad) = a.depends_on.iter().find(|d| d.trim().is_empty()) {
        return Err(CliError::usage(format!(
            "--depends-on `{bad}`: expected a task id or a unique prefix of one (see `orch tasks --project {project}`)"
        )));
    }
    Ok(NewTask {
        project: project.to_string(),
        title: title.to_string(),
        description: a.description.clone(),
        task_type,
        priority: a.priority,
        allowed_files: a.allowed_files.clone(),
        source: TaskSource::Manual,
        acceptance_tests: accept,
        depends_on: a
            .depends_on
            .iter()
            .map(|d| TaskId(d.trim().to_string()))
            .collect(),
        candidates: a.candidates,
        worker,
        ..NewTask::default()
    })
}

fn add_local(config_flag: Option<&Path>, a: &AddTaskArgs) -> Result<Task, CliError> {
    let config = load_config(config_flag)?;
    if let Some(p) = &a.project {
        require_project(&config, p)?;
    }
    let new = match &a.file {
        Some(path) => task_from_file(path, a.project.as_deref())?,
        None => task_from_flags(a, a.project.as_deref().unwrap_or_default())?,
    };
    let project = require_project(&config, &new.project)?;
    if let Some(kind) = new.worker {
        // The project's own worker is checked when the engine starts; a
        // task's is checked here, so a CLI that is not there writes nothing.
        orch_agent::external::factory::worker_for_task(&config, &project.name, kind).map_err(
            |e| CliError::usage(format!("{}: {e}; nothing was written", worker_source(a))),
        )?;
    }
    let store = open_store(&config)?;
    store.ensure_project(
        &project.name,
        &config.project_path(project).display().to_string(),
    )?;
    Ok(store.add_task(&new)?)
}

/// Where the task's worker was named, for its error message.
fn worker_source(a: &AddTaskArgs) -> String {
    match &a.file {
        Some(path) => format!("task file {}: `worker`", path.display()),
        None => "--worker".to_string(),
    }
}

/// `orch --server URL add-task`: the same checks, then the task is sent to
/// the server, which checks it again and adds it.
fn add_via_server(server: &crate::client::Client, a: &AddTaskArgs) -> Result<Task, CliError> {
    let new = match &a.file {
        Some(path) => task_from_file(path, a.project.as_deref())?,
        None => task_from_flags(a, a.project.as_deref().unwrap_or_default())?,
    };
    let body = serde_json::json!({
        "title": new.title,
        "description": new.description,
        "type": new.task_type,
        "priority": new.priority,
        "allowed_files": new.allowed_files,
        "acceptance_tests": new.acceptance_tests,
        "depends_on": new.depends_on,
        "candidates": new.candidates,
        "worker": new.worker,
    });
    server.post(
        &format!(
            "/api/v1/projects/{}/tasks",
            crate::client::segment(&new.project)
        ),
        crate::client::Body::Json(body),
    )
}

pub fn add(config_flag: Option<&Path>, a: AddTaskArgs) -> CliResult {
    let task = match crate::client::connect()? {
        Some(server) => add_via_server(&server, &a)?,
        None => add_local(config_flag, &a)?,
    };
    if a.json {
        print_json(&task)?;
    } else {
        println!("added task {} to {}: {}", task.id, task.project, task.title);
        if !task.acceptance_tests.is_empty() {
            println!(
                "  acceptance tests (must pass for the task to pass): {}",
                task.acceptance_tests.join(", ")
            );
        }
        if !task.allowed_files.is_empty() {
            println!("  allowed files: {}", task.allowed_files.join(", "));
        }
        if !task.depends_on.is_empty() {
            let ids: Vec<&str> = task.depends_on.iter().map(TaskId::as_str).collect();
            println!("  starts after these tasks merged: {}", ids.join(", "));
        }
        if let Some(n) = task.candidates {
            println!("  candidates per round: {n}");
        }
        if let Some(w) = task.worker {
            println!("  worker: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    #[arg(long)]
    pub project: String,
    /// Only tasks in this status (pending, running, verifying, judging,
    /// needs_human, passed, merging, merged, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn list(config_flag: Option<&Path>, a: TasksArgs) -> CliResult {
    let status: Option<TaskStatus> = a
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(CliError::usage)?;
    let tasks: Vec<Task> = match crate::client::connect()? {
        Some(server) => server.get(
            &format!(
                "/api/v1/projects/{}/tasks",
                crate::client::segment(&a.project)
            ),
            &status
                .map(|s| vec![("status", s.to_string())])
                .unwrap_or_default(),
        )?,
        None => {
            let config = load_config(config_flag)?;
            require_project(&config, &a.project)?;
            let store = open_store(&config)?;
            store.tasks(Some(&a.project), status)?
        }
    };
    if a.json {
        print_json(&tasks)?;
        return Ok(ExitCode::SUCCESS);
    }
    if tasks.is_empty() {
        println!(
            "no tasks{}",
            status
                .map(|s| format!(" with status {s}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    tasks_table(&tasks).print();
    Ok(ExitCode::SUCCESS)
}

/// `orch tasks` as a table: the title gives way to fit the terminal; a
/// waiting task's question goes on a line of its own under it.
fn tasks_table(tasks: &[Task]) -> Table {
    let mut table = Table::new(vec![
        Column::left("ID"),
        Column::left("STATUS"),
        Column::right("PRIO"),
        Column::right("TRY"),
        Column::left("TYPE"),
        Column::left("TITLE").truncate(),
    ]);
    for t in tasks {
        table.row([
            t.id.to_string(),
            t.status.to_string(),
            t.priority.to_string(),
            t.attempts.to_string(),
            t.task_type.to_string(),
            t.title.clone(),
        ]);
        if let Some(q) = t
            .question
            .as_deref()
            .filter(|_| t.status == TaskStatus::NeedsHuman)
        {
            table.note(&format!("asks: {q}"));
        }
    }
    table
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// Task id (or a unique prefix of at least 4 characters).
    pub task: String,
    pub text: String,
}

pub fn answer(config_flag: Option<&Path>, a: AnswerArgs) -> CliResult {
    if a.text.trim().is_empty() {
        return Err(CliError::usage("the answer must not be empty"));
    }
    let task: Task = match crate::client::connect()? {
        Some(server) => server.post(
            &format!("/api/v1/tasks/{}/answer", crate::client::segment(&a.task)),
            crate::client::Body::Json(serde_json::json!({ "answer": a.text.trim() })),
        )?,
        None => {
            let config = load_config(config_flag)?;
            let store = open_store(&config)?;
            store.answer(&a.task, a.text.trim())?
        }
    };
    println!(
        "answered {}; it is pending again and the next attempt will see your answer",
        task.id
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    pub task: String,
}

pub fn cancel(config_flag: Option<&Path>, a: CancelArgs) -> CliResult {
    let task: Task = match crate::client::connect()? {
        Some(server) => server.post(
            &format!("/api/v1/tasks/{}/cancel", crate::client::segment(&a.task)),
            crate::client::Body::None,
        )?,
        None => {
            let config = load_config(config_flag)?;
            let store = open_store(&config)?;
            store.cancel_task(&a.task)?
        }
    };
    println!("cancelled {}: {}", task.id, task.title);
    Ok(ExitCode::SUCCESS)
}
