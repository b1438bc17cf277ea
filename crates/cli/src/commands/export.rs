//! `orch export preferences --project P [--since 7d]`: what orch learned
//! about good and bad changes, as preference pairs for training (DPO). One
//! JSON line per (chosen, rejected) pair of attempts at the same task:
//!
//! - `outcome` pairs: every attempt that passed (a landed one, a ranked
//!   best-of-N candidate, a sequential attempt) against every attempt of
//!   the same task that failed, whether it came before or after;
//! - `ranking` pairs: within one best-of-N round, every ranked candidate
//!   against each one the judge ranked below it.
//!
//! Each side carries its diff (from the attempt's kept commit), its judge
//! score, its test and gate evidence, its model and worker. The format is
//! documented in the README (*Preference pairs*).

use super::{load_config, open_store, require_project};
use crate::{CliError, CliResult};
use clap::{Args, Subcommand};
use orch_core::{Attempt, AttemptKind, AttemptStatus, Task};
use orch_state::StateStore;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

/// Largest diff exported per side.
const DIFF_BYTES: usize = 200_000;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: ExportWhat,
}

#[derive(Subcommand, Debug)]
pub enum ExportWhat {
    /// Preference pairs (chosen, rejected) from each task's attempts, one
    /// JSON line each, for preference training (DPO).
    Preferences(PreferencesArgs),
}

#[derive(Args, Debug)]
pub struct PreferencesArgs {
    #[arg(long)]
    pub project: String,
    /// Only pairs whose later attempt finished on or after this UTC day:
    /// YYYY-MM-DD, `today`, or a number of days back like `7d`.
    #[arg(long)]
    pub since: Option<String>,
}

pub async fn run(config_flag: Option<&Path>, a: ExportArgs) -> CliResult {
    match a.what {
        ExportWhat::Preferences(p) => preferences(config_flag, p).await,
    }
}

/// Why a pair is a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairKind {
    /// One passed, the other failed.
    Outcome,
    /// Both passed; the best-of-N ranking put one above the other.
    Ranking,
}

/// A pair of attempts (indexes into the task's attempts).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub chosen: usize,
    pub rejected: usize,
    pub kind: PairKind,
    pub reason: String,
}

async fn preferences(config_flag: Option<&Path>, a: PreferencesArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let project = require_project(&config, &a.project)?;
    let since = a
        .since
        .as_deref()
        .map(|s| super::cost::parse_since(s, chrono::Utc::now().date_naive()))
        .transpose()?;
    let store = open_store(&config)?;
    let repo = config.project_path(project);
    let git = orch_git::Git::open(&repo).await.map_err(|e| {
        CliError::failed(format!("cannot read the diffs in {}: {e}", repo.display()))
    })?;
    let tasks = store.tasks(Some(&project.name), None)?;
    let ids: Vec<_> = tasks.iter().map(|t| t.id.clone()).collect();
    let mut attempts = store.attempts_of(&ids)?;
    let mut written = 0usize;
    for task in &tasks {
        let list = attempts.remove(task.id.as_str()).unwrap_or_default();
        let pairs: Vec<Pair> = build_pairs(&list)
            .into_iter()
            .filter(|p| recent_enough(&list[p.chosen], &list[p.rejected], since.as_deref()))
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let sides = Sides::read(store.as_ref(), &git, task, &list).await?;
        let prompt = prompt_of(task, project.max_attempts);
        let system = orch_engine::worker_system_prompt(task.task_type, &project.test_command);
        for p in &pairs {
            let line = json!({
                "task_id": task.id,
                "project": task.project,
                "title": task.title,
                "system": system,
                "prompt": prompt,
                "kind": p.kind,
                "reason": p.reason,
                "chosen": sides.side(&list[p.chosen]),
                "rejected": sides.side(&list[p.rejected]),
            });
            println!("{line}");
            written += 1;
        }
    }
    eprintln!(
        "{written} preference pair(s) from project {}{}",
        project.name,
        since.map(|s| format!(" since {s}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// The worker's task prompt as a first attempt sees it: without the
/// feedback of earlier attempts, so both sides share it.
fn prompt_of(task: &Task, max_attempts: u32) -> String {
    let mut t = task.clone();
    t.feedback = None;
    orch_engine::worker_task_prompt(&t, 1, max_attempts)
}

/// True when the later of the two attempts finished on or after `since`.
fn recent_enough(a: &Attempt, b: &Attempt, since: Option<&str>) -> bool {
    let Some(since) = since else {
        return true;
    };
    let last = a.finished_at.max(b.finished_at);
    last.is_some_and(|t| t.format("%Y-%m-%d").to_string().as_str() >= since)
}

/// The pairs of one task's attempts (see the module docs). Only the task's
/// work counts: conflict resolutions, interrupted, cancelled and errored
/// attempts say nothing about the change itself.
pub fn build_pairs(attempts: &[Attempt]) -> Vec<Pair> {
    let work = |s: AttemptStatus| {
        move |(_, a): &(usize, &Attempt)| a.kind == AttemptKind::Work && a.status == s
    };
    let indexed: Vec<(usize, &Attempt)> = attempts.iter().enumerate().collect();
    let passed: Vec<(usize, &Attempt)> = indexed
        .iter()
        .copied()
        .filter(work(AttemptStatus::Passed))
        .collect();
    let failed: Vec<(usize, &Attempt)> = indexed
        .iter()
        .copied()
        .filter(work(AttemptStatus::Failed))
        .collect();
    let mut pairs = Vec::new();
    for &(i, p) in &passed {
        for &(j, f) in &failed {
            pairs.push(Pair {
                chosen: i,
                rejected: j,
                kind: PairKind::Outcome,
                reason: format!(
                    "attempt {} passed; attempt {} failed: {}",
                    p.number,
                    f.number,
                    why_failed(f)
                ),
            });
        }
    }
    for &(i, a) in &passed {
        for &(j, b) in &passed {
            let (Some(ra), Some(rb)) = (a.rank, b.rank) else {
                continue;
            };
            if a.round.is_some() && a.round == b.round && ra < rb {
                pairs.push(Pair {
                    chosen: i,
                    rejected: j,
                    kind: PairKind::Ranking,
                    reason: format!(
                        "the ranking put candidate {} ({ra}) above candidate {} ({rb}): {}",
                        a.candidate.unwrap_or(0),
                        b.candidate.unwrap_or(0),
                        a.rank_reason.as_deref().unwrap_or("no reason recorded")
                    ),
                });
            }
        }
    }
    pairs
}

/// The first thing a failed attempt was told: its first issue, its error
/// or its verification summary.
fn why_failed(a: &Attempt) -> String {
    let issue = a
        .verdict
        .as_ref()
        .and_then(|v| v.get("issues"))
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    let summary = || {
        a.verification
            .as_ref()
            .and_then(|v| v.get("summary"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let text = issue
        .or_else(|| a.error.clone())
        .or_else(summary)
        .unwrap_or_else(|| "no reason recorded".into());
    text.lines().next().unwrap_or("").to_string()
}

/// What each attempt of a task is made of beyond its row: its diff, its
/// worker model and its worker.
struct Sides {
    diffs: BTreeMap<u32, String>,
    models: BTreeMap<i64, String>,
    workers: BTreeMap<u32, String>,
}

impl Sides {
    async fn read(
        store: &dyn StateStore,
        git: &orch_git::Git,
        task: &Task,
        attempts: &[Attempt],
    ) -> Result<Sides, CliError> {
        let mut models = BTreeMap::new();
        for m in store.attempt_models(&task.id)? {
            if m.role == "worker" {
                models.entry(m.attempt_id).or_insert(m.model);
            }
        }
        let workers = store.attempt_workers(&task.id)?;
        let mut diffs = BTreeMap::new();
        for a in attempts {
            diffs.insert(a.number, diff_of(git, task, a).await);
        }
        Ok(Sides {
            diffs,
            models,
            workers,
        })
    }

    fn side(&self, a: &Attempt) -> Value {
        let verification = a.verification.as_ref();
        let field = |k: &str| verification.and_then(|v| v.get(k)).cloned();
        let counts = verification
            .and_then(|v| v.get("steps"))
            .and_then(Value::as_array)
            .and_then(|steps| steps.iter().find(|s| s.get("kind") == Some(&json!("test"))))
            .and_then(|s| s.get("counts"))
            .cloned();
        let tests = json!({
            "passed": field("passed"),
            "summary": field("summary"),
            "new_failures": field("new_failures"),
            "targeted_failures": field("targeted_failures"),
            "preexisting_failures": field("preexisting_failures"),
            "counts": counts,
        });
        let verdict = a.verdict.as_ref();
        json!({
            "attempt": a.number,
            "status": a.status,
            "candidate": a.candidate,
            "round": a.round,
            "rank": a.rank,
            "model": self.models.get(&a.id),
            "worker": self.workers.get(&a.number),
            "commit": a.head_commit,
            "diff": self.diffs.get(&a.number).cloned().unwrap_or_default(),
            "diff_stat": a.diff_stat,
            "score": verdict.and_then(|v| v.get("score")).cloned(),
            "tests": tests,
            "gates": verdict.and_then(|v| v.get("gates")).cloned().unwrap_or(json!([])),
            "cost_usd": a.cost_usd,
            "finished_at": a.finished_at,
        })
    }
}

/// The attempt's change: its base against its commit (or the ref that
/// keeps it); empty when it made none or the commit is gone.
async fn diff_of(git: &orch_git::Git, task: &Task, a: &Attempt) -> String {
    let Some(base) = &a.base_commit else {
        return String::new();
    };
    let head = match &a.head_commit {
        Some(h) => Some(h.clone()),
        None => git.rev_parse(&task.id.attempt_ref(a.number)).await.ok(),
    };
    match head {
        Some(h) if &h != base => git.diff(base, &h, DIFF_BYTES).await.unwrap_or_else(|e| {
            eprintln!(
                "warning: no diff for attempt {} of task {}: {e}",
                a.number, task.id
            );
            String::new()
        }),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn attempt(number: u32, status: AttemptStatus) -> Attempt {
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-10T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Attempt {
            base_commit: Some("b".into()),
            started_at: at,
            finished_at: Some(at),
            verdict: Some(json!({"issues": ["hard-codes the answer"]})),
            ..orch_testkit::fixtures::attempt(number, status)
        }
    }
    fn candidate(number: u32, status: AttemptStatus, k: u32, rank: Option<u32>) -> Attempt {
        Attempt {
            candidate: Some(k),
            round: Some(1),
            rank,
            rank_reason: rank.map(|r| format!("place {r}")),
            ..attempt(number, status)
        }
    }

    fn summary(pairs: &[Pair], list: &[Attempt]) -> Vec<(u32, u32, PairKind)> {
        pairs
            .iter()
            .map(|p| (list[p.chosen].number, list[p.rejected].number, p.kind))
            .collect()
    }

    #[test]
    fn a_round_gives_outcome_pairs_and_ranking_pairs() {
        // Candidate 1 hard-codes (passed, ranked 2), 2 fails its tests, 3 is
        // right (ranked 1).
        let list = vec![
            candidate(1, AttemptStatus::Passed, 1, Some(2)),
            candidate(2, AttemptStatus::Failed, 2, None),
            candidate(3, AttemptStatus::Passed, 3, Some(1)),
        ];
        let pairs = build_pairs(&list);
        assert_eq!(
            summary(&pairs, &list),
            [
                (1, 2, PairKind::Outcome),
                (3, 2, PairKind::Outcome),
                (3, 1, PairKind::Ranking)
            ]
        );
        assert!(pairs[2]
            .reason
            .contains("candidate 3 (1) above candidate 1 (2): place 1"));
        assert!(pairs[0].reason.contains("hard-codes the answer"));
    }

    #[test]
    fn failures_after_a_pass_count_and_other_attempts_do_not() {
        let mut resolve = attempt(4, AttemptStatus::Failed);
        resolve.kind = AttemptKind::Resolve;
        let list = vec![
            attempt(1, AttemptStatus::Failed),
            attempt(2, AttemptStatus::Passed),
            attempt(3, AttemptStatus::Failed),
            resolve,
            attempt(5, AttemptStatus::Interrupted),
            attempt(6, AttemptStatus::Error),
            attempt(7, AttemptStatus::Cancelled),
        ];
        let pairs = build_pairs(&list);
        assert_eq!(
            summary(&pairs, &list),
            [(2, 1, PairKind::Outcome), (2, 3, PairKind::Outcome)]
        );
        // Ranks of different rounds are never compared.
        let mut a = candidate(1, AttemptStatus::Passed, 1, Some(1));
        let mut b = candidate(2, AttemptStatus::Passed, 1, Some(2));
        a.round = Some(1);
        b.round = Some(2);
        assert!(build_pairs(&[a, b]).is_empty());
    }

    #[test]
    fn since_keeps_pairs_whose_later_attempt_is_recent() {
        let old = attempt(1, AttemptStatus::Failed);
        let mut new = attempt(2, AttemptStatus::Passed);
        new.finished_at = Some(
            chrono::DateTime::parse_from_rfc3339("2026-03-12T08:00:00Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
        );
        assert!(recent_enough(&new, &old, Some("2026-03-12")));
        assert!(!recent_enough(&old, &old, Some("2026-03-11")));
        assert!(recent_enough(&old, &old, None));
    }
}
