//! Scheduler throughput and orchestration overhead, on the real `orch`
//! binary, real git and bwrap; only the model is scripted.
//!
//! (a) 64 tasks, a model that takes 500 ms per answer and 3 answers per
//!     task, `true` as the test command: efficiency = ideal / measured at
//!     1, 8, 32 and 64 workers (ideal = tasks × 1.5 s / workers).
//! (b) The same 64 tasks with an instant model, one worker: orchestration
//!     time per task, and processes started per task: a second run under
//!     `strace -f -e trace=execve` counts every program orch's process tree
//!     starts (git, bwrap, the test command; threads are not processes and
//!     other programs on the machine are not counted). Time it on a quiet
//!     machine; the count does not depend on load. Each run's files stay
//!     until the bench ends, so no run pays for another's cleanup.
//!
//! `cargo bench -p orch-cli --bench scheduler`; `ORCH_BENCH_WORKERS=1,8`
//! picks the widths, `ORCH_BENCH_TASKS` the task count.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ANSWER_MS: u64 = 500;
const ANSWERS_PER_TASK: u64 = 3;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git {args:?}");
}

/// Programs that `trace` (an `strace -f -e trace=execve` log) shows were
/// started: successful execve calls only, not the PATH lookups that failed.
fn programs_started(trace: &Path) -> u64 {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("execve(") && l.trim_end().ends_with("= 0"))
        .count() as u64
}

fn have_strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Three answers per task: write its file, list files, finish.
fn script(tasks: usize, delay_ms: u64) -> Value {
    let mut responses = Vec::new();
    for i in 0..tasks {
        let when = format!("# Task: bench-{i:03}\n");
        let calls = [
            json!({"name": "write_file", "arguments": {"path": format!("f{i:03}.txt"), "content": format!("{i}\n")}}),
            json!({"name": "list_files", "arguments": {}}),
            json!({"name": "finish", "arguments": {"summary": format!("file {i}")}}),
        ];
        for call in calls {
            responses.push(json!({"model": "worker", "when": when, "delay_ms": delay_ms, "tool_calls": [call]}));
        }
    }
    json!({ "responses": responses })
}

struct Measured {
    /// The run's files, removed when the bench ends: on a file system that
    /// skips recently freed inodes when it allocates (ext4 without a
    /// journal, as here) a run right after another's cleanup would pay for
    /// that cleanup.
    _dir: tempfile::TempDir,
    seconds: f64,
    /// Programs started by the run, when it was traced.
    programs: Option<u64>,
    merged: usize,
}

fn run(tasks: usize, workers: usize, delay_ms: u64, traced: bool) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "bench\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "initial"]);
    std::fs::write(
        dir.path().join("script.json"),
        script(tasks, delay_ms).to_string(),
    )
    .unwrap();
    let config = dir.path().join("orch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \".orch\"\n[providers.replay]\nkind = \"replay\"\nscript = \"script.json\"\n\n\
             [[projects]]\nname = \"bench\"\npath = \"repo\"\ntest_command = \"true\"\n\
             worker_model = \"replay:worker\"\nmax_workers = {workers}\nauto_plan = false\nsandbox = \"bwrap\"\n"
        ),
    )
    .unwrap();
    let orch = env!("CARGO_BIN_EXE_orch");
    for i in 0..tasks {
        let title = format!("bench-{i:03}");
        let out = Command::new(orch)
            .args([
                "--config",
                config.to_str().unwrap(),
                "add-task",
                "--project",
                "bench",
                "--title",
                &title,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let trace = dir.path().join("execve.trace");
    let mut command = if traced {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=execve", "-o"])
            .arg(&trace)
            .arg(orch);
        c
    } else {
        Command::new(orch)
    };
    let started = Instant::now();
    let out = command
        .args([
            "--config",
            config.to_str().unwrap(),
            "run",
            "--project",
            "bench",
            "--until-idle",
            "--cycles",
            "5",
            "--quiet",
            "--json",
        ])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // The traced run counts orch itself too: one program for the run.
    let programs = traced.then(|| programs_started(&trace).saturating_sub(1));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let merged = summary["tasks"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["status"] == "merged").count())
        .unwrap_or(0);
    Measured {
        _dir: dir,
        seconds,
        programs,
        merged,
    }
}

fn main() {
    // `cargo test --benches` runs benches with --bench absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tasks: usize = std::env::var("ORCH_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let widths: Vec<usize> = std::env::var("ORCH_BENCH_WORKERS")
        .unwrap_or_else(|_| "1,8,32,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    // (b) first: the file system's inode allocator slows down after many
    // recent deletions, so (b) right after (a) would measure (a)'s churn.
    let mut kept = Vec::new();
    let m = run(tasks, 1, 0, false);
    let per_task = match have_strace() {
        true => {
            let traced = run(tasks, 1, 0, true);
            let n = traced.programs.unwrap_or(0) as f64 / tasks as f64;
            kept.push(traced);
            format!("{n:.1}")
        }
        false => "(install strace to count)".to_string(),
    };
    println!("(b) {tasks} tasks, instant model, test `true`, 1 worker\n");
    println!("| per-task overhead | processes per task | merged |");
    println!("|---|---|---|");
    println!(
        "| {:.0} ms | {per_task} | {}/{tasks} |",
        m.seconds * 1000.0 / tasks as f64,
        m.merged
    );
    println!("\n(a) {tasks} tasks, {ANSWER_MS} ms per answer, {ANSWERS_PER_TASK} answers per task, test `true`, bwrap\n");
    println!("| workers | ideal s | measured s | efficiency | merged |");
    println!("|---|---|---|---|---|");
    for w in widths {
        let ideal = Duration::from_millis(ANSWER_MS * ANSWERS_PER_TASK * tasks as u64)
            .as_secs_f64()
            / w as f64;
        let m = run(tasks, w, ANSWER_MS, false);
        println!(
            "| {w} | {ideal:.1} | {:.1} | {:.2} | {}/{tasks} |",
            m.seconds,
            ideal / m.seconds,
            m.merged
        );
        kept.push(m);
    }
}
