//! `orch status`, `orch pause`, `orch resume`, `orch events`.

use super::{load_config, open_store, print_json, require_project};
use crate::table::{Column, Table};
use crate::CliResult;
use clap::Args;
use orch_server::views::{ProjectStatus, StatusDoc};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ProjectArg {
    #[arg(long)]
    pub project: String,
    /// Why (shown by `orch status`).
    #[arg(long)]
    pub reason: Option<String>,
}

pub fn status(config_flag: Option<&Path>, a: StatusArgs) -> CliResult {
    let (doc, source) = match crate::client::connect()? {
        Some(server) => (
            server.get::<StatusDoc>("/api/v1/status", &[])?,
            "the server's config".to_string(),
        ),
        None => {
            let config = load_config(config_flag)?;
            let store = open_store(&config)?;
            for p in &config.projects {
                store.ensure_project(&p.name, &config.project_path(p).display().to_string())?;
            }
            (
                orch_server::views::status(&config, &store)?,
                config.source.display().to_string(),
            )
        }
    };
    if a.json {
        print_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = doc.projects;
    if out.is_empty() {
        println!("no projects in {source}; add one with `orch init PATH`");
        return Ok(ExitCode::SUCCESS);
    }
    status_table(&out).print();
    Ok(ExitCode::SUCCESS)
}

/// `orch status` as a table, one row per project; the path and a pause
/// reason go on lines of their own under it.
fn status_table(projects: &[ProjectStatus]) -> Table {
    let mut table = Table::new(vec![
        Column::left("PROJECT"),
        Column::left("STATE"),
        Column::left("TASKS").wrap(),
        Column::right("IN"),
        Column::right("OUT"),
        Column::right("COST"),
    ]);
    for p in projects {
        let counts: Vec<String> = p
            .tasks
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        table.row([
            p.name.clone(),
            if p.paused { "PAUSED" } else { "active" }.to_string(),
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            },
            p.input_tokens.to_string(),
            p.output_tokens.to_string(),
            format!("${:.4}", p.cost_usd),
        ]);
        table.note(&format!("path: {}", p.path));
        if let Some(r) = p.pause_reason.as_deref().filter(|_| p.paused) {
            table.note(&format!("paused: {r}"));
        }
    }
    table
}

pub fn pause(config_flag: Option<&Path>, a: ProjectArg, paused: bool) -> CliResult {
    let config = load_config(config_flag)?;
    let project = require_project(&config, &a.project)?;
    let store = open_store(&config)?;
    store.ensure_project(
        &project.name,
        &config.project_path(project).display().to_string(),
    )?;
    store.set_paused(&project.name, paused, a.reason.as_deref())?;
    if paused {
        println!("paused {}: running attempts finish, no new work starts until `orch resume --project {}`", project.name, project.name);
    } else {
        store.reset_consecutive_failures(&project.name)?;
        println!("resumed {}", project.name);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub task: Option<String>,
    /// Show only the last N events.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn events(config_flag: Option<&Path>, a: EventsArgs) -> CliResult {
    let mut events = match crate::client::connect()? {
        Some(server) => server.events(a.project.as_deref(), a.task.as_deref())?,
        None => {
            let config = load_config(config_flag)?;
            let store = open_store(&config)?;
            let task_id = match &a.task {
                Some(t) => Some(store.task(t)?.id.0),
                None => None,
            };
            store.events(&orch_state::EventFilter {
                project: a.project.clone(),
                task_id,
                after_id: None,
                limit: None,
            })?
        }
    };
    if events.len() > a.limit {
        events.drain(..events.len() - a.limit);
    }
    if a.json {
        print_json(&events)?;
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!("no events recorded yet");
        return Ok(ExitCode::SUCCESS);
    }
    events_table(&events, a.project.is_none()).print();
    Ok(ExitCode::SUCCESS)
}

/// `orch events` as a table; the message wraps rather than being cut, so
/// nothing of the log is lost in a narrow terminal. The project column is
/// left out when `--project` already says which.
fn events_table(events: &[orch_protocol::Event], with_project: bool) -> Table {
    let mut columns = vec![Column::left("TIME (UTC)")];
    if with_project {
        columns.push(Column::left("PROJECT"));
    }
    columns.extend([
        Column::left("TASK"),
        Column::left("KIND"),
        Column::left("MESSAGE").wrap(),
    ]);
    let mut table = Table::new(columns);
    for e in events {
        let mut cells = vec![e.at.format("%Y-%m-%d %H:%M:%S").to_string()];
        if with_project {
            cells.push(e.project.clone());
        }
        cells.extend([
            e.task_id.clone().unwrap_or_else(|| "-".into()),
            e.kind().as_str().to_string(),
            e.message.clone(),
        ]);
        table.row(cells);
    }
    table
}
