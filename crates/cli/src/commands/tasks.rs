//! `orch add-task`, `orch tasks`, `orch answer`, `orch cancel`.

use super::{load_config, open_store, print_json, require_project};
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::Args;
use orch_core::{NewTask, Task, TaskSource, TaskStatus, TaskType};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AddTaskArgs {
    #[arg(long)]
    pub project: String,
    #[arg(long)]
    pub title: String,
    #[arg(long = "desc", default_value = "")]
    pub description: String,
    /// code | test | fix | review
    #[arg(long = "type", default_value = "code")]
    pub task_type: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i64,
    /// Glob patterns of files the worker may write (repeat or comma-separate).
    #[arg(long = "allowed-files", value_delimiter = ',')]
    pub allowed_files: Vec<String>,
    /// A test that proves the task done: a test id (`test_calc.py::test_add`)
    /// or a test file (repeatable). It must pass for the task to pass.
    #[arg(long = "accept", value_name = "TEST")]
    pub acceptance_tests: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn add(config_flag: Option<&Path>, a: AddTaskArgs) -> CliResult {
    let config = load_config(config_flag)?;
    require_project(&config, &a.project)?;
    let task_type: TaskType = a.task_type.parse().map_err(CliError::usage)?;
    let title = a.title.trim();
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
    let store = open_store(&config)?;
    let project = require_project(&config, &a.project)?;
    store.ensure_project(
        &project.name,
        &config.project_path(project).display().to_string(),
    )?;
    let task = store.add_task(&NewTask {
        project: a.project.clone(),
        title: title.to_string(),
        description: a.description.clone(),
        task_type,
        priority: a.priority,
        allowed_files: a.allowed_files.clone(),
        source: TaskSource::Manual,
        acceptance_tests: accept,
        ..NewTask::default()
    })?;
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
    let config = load_config(config_flag)?;
    require_project(&config, &a.project)?;
    let status: Option<TaskStatus> = a
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(CliError::usage)?;
    let store = open_store(&config)?;
    let tasks = store.tasks(Some(&a.project), status)?;
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
    let config = load_config(config_flag)?;
    let store = open_store(&config)?;
    if a.text.trim().is_empty() {
        return Err(CliError::usage("the answer must not be empty"));
    }
    let task = store.answer(&a.task, a.text.trim())?;
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
    let config = load_config(config_flag)?;
    let store = open_store(&config)?;
    let task = store.cancel_task(&a.task)?;
    println!("cancelled {}: {}", task.id, task.title);
    Ok(ExitCode::SUCCESS)
}
