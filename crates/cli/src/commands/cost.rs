//! `orch cost`: what the models cost, by day, project, role and model, from
//! the record of every call (planner and judge calls included).

use super::{load_config, open_store, print_json, require_project};
use crate::table::{Column, Table};
use crate::{CliError, CliResult};
use clap::Args;
use orch_state::CostRow;
use serde::Serialize;
use std::collections::BTreeMap;
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

#[derive(Serialize, Default)]
struct Totals {
    calls: u64,
    failed_calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_usd: f64,
}

impl Totals {
    fn add(&mut self, r: &CostRow) {
        self.calls += r.calls;
        self.failed_calls += r.failed_calls;
        self.input_tokens += r.input_tokens;
        self.output_tokens += r.output_tokens;
        self.cached_tokens += r.cached_tokens;
        self.cost_usd += r.cost_usd;
    }
}

/// Parses `--since` into a UTC day.
pub fn parse_since(s: &str, today: chrono::NaiveDate) -> Result<String, CliError> {
    if s == "today" {
        return Ok(today.format("%Y-%m-%d").to_string());
    }
    if let Some(n) = s.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        let day = today - chrono::Days::new(n);
        return Ok(day.format("%Y-%m-%d").to_string());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| {
            CliError::usage(format!(
                "--since `{s}`: expected YYYY-MM-DD, `today`, or days back like `7d`"
            ))
        })
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
    let rows = store.cost_report(a.project.as_deref(), since.as_deref())?;
    let mut total = Totals::default();
    let mut by_role: BTreeMap<String, Totals> = BTreeMap::new();
    let mut by_project: BTreeMap<String, Totals> = BTreeMap::new();
    for r in &rows {
        total.add(r);
        by_role.entry(r.role.clone()).or_default().add(r);
        by_project.entry(r.project.clone()).or_default().add(r);
    }
    if a.json {
        print_json(&serde_json::json!({
            "since": since, "rows": rows, "by_role": by_role, "by_project": by_project, "total": total,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
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
