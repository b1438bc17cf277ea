//! End-to-end: nothing outlives orch. The real `orch run`, a scripted
//! worker whose `run` command starts a tree of background processes in the
//! sandbox (in a subshell, behind `nohup`, in a new session), then
//! `kill -9` of orch while they run. One second later no process of that
//! tree is alive (found by a unique number in their command lines, via
//! /proc), orch's guardian has exited, and the per-command cgroups orch
//! made (`orch-<pid>-<n>`) are gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use orch_testkit::procs::{processes_matching, processes_running};

/// cgroup directories named `orch-<pid>-…` (the per-command cgroups of the
/// orch process `pid`), anywhere under /sys/fs/cgroup.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("orch-{pid}-");
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() || p.is_symlink() {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(p);
            } else if depth < 6 {
                stack.push((p, depth + 1));
            }
        }
    }
    found
}

/// Kills orch and whatever of the tree is left, even when the test fails.
struct Cleanup {
    orch: std::process::Child,
    marker: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.orch.kill();
        let _ = self.orch.wait();
        for pid in processes_matching(&self.marker) {
            // SAFETY: kill(2) on a leftover of this test.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn one_second_after_kill_9_nothing_of_orchs_tree_runs_and_its_cgroups_are_gone() {
    if sandbox() == "docker" {
        // Container processes are the engine's, not orch's children; a
        // killed orch's containers are removed by the next run.
        eprintln!("skipped: ORCH_TEST_SANDBOX=docker");
        return;
    }
    let fx = Fixture::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // A number for `sleep` that nothing else on the machine uses.
    let marker = format!("7{}{nanos:09}", std::process::id());
    // `none` isolates nothing: a process that leaves its process group
    // (setsid) is out of reach there. In bwrap it stays in the sandbox's
    // PID namespace and dies with it.
    let new_session = if sandbox() == "none" { "" } else { "setsid " };
    let tree = format!(
        "sleep {m} & (sleep {m} & wait) & {new_session}sleep {m} & \
         nohup sleep {m} >/dev/null 2>&1 & sleep {m}",
        m = marker
    );
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([{"name": "run", "arguments": {"command": tree, "timeout_s": 600}}])),
            judge_pass(),
        ]}),
        "",
    );
    fx.add_task("Fix add", "");
    let orch = fx
        .orch_cmd(&["run", "--project", "calc"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = orch.id();
    let mut cleanup = Cleanup {
        orch,
        marker: marker.clone(),
    };

    // Five sleeps (the shells and bwrap name them in their arguments too).
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_running(&format!("sleep {marker}")).len() < 5 {
        if let Some(status) = cleanup.orch.try_wait().unwrap() {
            panic!("orch ended ({status}) before the tree ran");
        }
        assert!(Instant::now() < deadline, "the tree never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tree_pids = processes_matching(&marker);
    let cgroups = cgroups_of(pid);
    if cgroups.is_empty() {
        // Only where orch cannot write cgroups (limits fall back to rlimits).
        assert!(
            std::env::var_os("CI").is_none(),
            "CI expects per-command cgroups for the sandbox's limits"
        );
        eprintln!("note: no per-command cgroups on this machine; only processes are checked");
    }
    let guardian = format!("orch-reaper {pid}");
    let guardians = processes_matching(&guardian).len();

    cleanup.orch.kill().unwrap(); // SIGKILL: no cleanup code of orch runs
    cleanup.orch.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let left = processes_matching(&marker);
    let cgroups_left: Vec<&PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
    let guardian_left = processes_matching(&guardian);
    assert!(
        left.is_empty(),
        "alive 1 s after kill -9: {left:?} (the tree was {tree_pids:?})"
    );
    assert!(cgroups_left.is_empty(), "cgroups left: {cgroups_left:?}");
    assert!(cgroups_of(pid).is_empty(), "{:?}", cgroups_of(pid));
    assert_eq!(guardians, 1, "orch ran one guardian");
    assert!(guardian_left.is_empty(), "the guardian outlived its work");
}

/// When the guardian is killed too (so nobody removes the cgroups at
/// once), the next orch start removes the cgroups of the dead orch.
#[test]
fn cgroups_left_by_a_killed_orch_and_guardian_are_removed_by_the_next_start() {
    if sandbox() != "bwrap" {
        eprintln!("skipped: per-command cgroups belong to the bwrap sandbox");
        return;
    }
    let fx = Fixture::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("8{}{nanos:09}", std::process::id());
    fx.with_replay(
        json!({"responses": [
            worker_call(None, json!([{"name": "run", "arguments": {"command": format!("sleep {marker}")}}])),
            judge_pass(),
        ]}),
        "",
    );
    fx.add_task("Fix add", "");
    let orch = fx
        .orch_cmd(&["run", "--project", "calc"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = orch.id();
    let mut cleanup = Cleanup {
        orch,
        marker: marker.clone(),
    };
    // The sleep itself, not bwrap, whose arguments name it too: until bwrap's
    // child has set its own parent-death signal, only the guardian (killed
    // below) would stop it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while processes_running(&format!("sleep {marker}")).is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cgroups = cgroups_of(pid);
    if cgroups.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI expects per-command cgroups for the sandbox's limits"
        );
        eprintln!("skipped: no per-command cgroups on this machine");
        return;
    }
    for g in processes_matching(&format!("orch-reaper {pid}")) {
        // SAFETY: kill(2) on the guardian of the orch this test started.
        unsafe {
            libc::kill(g, libc::SIGKILL);
        }
    }
    cleanup.orch.kill().unwrap();
    cleanup.orch.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        processes_matching(&marker).is_empty(),
        "the command died with orch (parent-death signal)"
    );

    let stale: Vec<&PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(!stale.is_empty(), "nobody was left to remove them");
    // Any start that uses the sandbox removes them: `orch doctor` checks it.
    let _ = fx.orch(&["doctor"]);
    let left: Vec<&PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "stale cgroups not removed: {left:?}");
}
