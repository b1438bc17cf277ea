//! Helpers shared by the process runner's integration tests: looking at
//! /proc to prove which processes are still alive.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Processes (not zombies) whose process group is `pgid`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) start
        // after the last ')': state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if *state == "Z" || *state == "X" {
            continue;
        }
        if pgrp.parse::<i32>().ok() == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Waits (generously) until no live process is left in `pgid`.
pub fn group_is_gone(pgid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if live_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use orch_testkit::procs::processes_matching;

/// A string no other test (or earlier run) uses.
pub fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}{:09}", std::process::id(), nanos)
}
