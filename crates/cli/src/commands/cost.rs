//! `orch cost`: what the models cost, by day, project, role and model, from
//! the record of every call (planner and judge calls included).

use super::{load_config, open_store, print_json, require_project};
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::Args;
use orch_server::views::CostDoc;
use orch_state::CostRow;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CostArgs {
    #[arg(long)]
    pub project: Option<String>,
    /// First day to include: YYYY-MM-DD, `today`, or a number of days back like `7d`.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Parses `--since` into a UTC day.
pub fn parse_since(s: &str, today: chrono::NaiveDate) -> Result<String, CliError> {
    orch_server::views::parse_since(s, today).map_err(|m| CliError::usage(format!("--since {m}")))
}

pub fn cost(config_flag: Option<&Path>, a: CostArgs) -> CliResult {
    let config = load_config(config_flag)?;
    if let Some(p) = &a.project {
        require_project(&config, p)?;
    }
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, chrono::Utc::now().date_naive()))
        .transpose()?;
    let store = open_store(&config)?;
    // The document `GET /api/v1/cost` answers too.
    let doc = orch_server::views::cost(&store, a.project.as_deref(), since)?;
    if a.json {
        print_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let CostDoc {
        since,
        rows,
        by_role,
        total,
        ..
    } = doc;
    if rows.is_empty() {
        println!(
            "no model calls recorded{}",
            since.map(|s| format!(" since {s}")).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    cost_table(&rows).print();
    println!();
    let mut roles = Table::new(vec![
        Column::left("ROLE"),
        Column::right("CALLS"),
        Column::right("COST"),
    ]);
    for (role, t) in &by_role {
        roles.row([
            role.clone(),
            t.calls.to_string(),
            format!("${:.4}", t.cost_usd),
        ]);
    }
    roles.print();
    println!(
        "total: {} calls ({} failed), {} in / {} out tokens ({} cached), ${:.4}",
        total.calls,
        total.failed_calls,
        total.input_tokens,
        total.output_tokens,
        total.cached_tokens,
        total.cost_usd
    );
    Ok(ExitCode::SUCCESS)
}

/// The spending rows as a table; project and model names give way to fit.
fn cost_table(rows: &[CostRow]) -> Table {
    let mut table = Table::new(vec![
        Column::left("DAY"),
        Column::left("PROJECT").truncate(),
        Column::left("ROLE"),
        Column::left("MODEL").truncate(),
        Column::right("CALLS"),
        Column::right("IN"),
        Column::right("OUT"),
        Column::right("COST"),
    ]);
    for r in rows {
        table.row([
            r.day.clone(),
            r.project.clone(),
            r.role.clone(),
            r.model.clone(),
            r.calls.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            format!("${:.4}", r.cost_usd),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_today_and_days_back() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        assert_eq!(parse_since("today", today).unwrap(), "2026-03-10");
        assert_eq!(parse_since("7d", today).unwrap(), "2026-03-03");
        assert_eq!(parse_since("2026-01-02", today).unwrap(), "2026-01-02");
        let err = parse_since("last week", today).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("YYYY-MM-DD"));
    }
}
