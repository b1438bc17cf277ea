//! Nothing outlives orch: a process using the runner is killed with
//! SIGKILL (no cleanup code runs) while its command has a tree of
//! background children, and one second later nothing of that tree is
//! alive. The victim is this test binary itself, started again with
//! `ORCH_VICTIM_MARKER` set so that its `victim` test runs the tree.
//! Also: the parent-death signal does not hit a command whose spawning
//! thread exits while it runs.

mod common;

use common::{processes_matching, unique_marker};
use orch_process::{run, ProcessSpec};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

const VICTIM_ENV: &str = "ORCH_VICTIM_MARKER";

/// Runs only inside the victim process: a command whose shell starts
/// background sleeps (one in a subshell, one behind `nohup`) and waits.
#[test]
fn victim() {
    let Some(marker) = std::env::var_os(VICTIM_ENV) else {
        return;
    };
    let marker = marker.to_string_lossy().into_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let script = format!(
            "sleep {marker} & (sleep {marker} & wait) & nohup sleep {marker} >/dev/null 2>&1 & \
             sleep {marker}"
        );
        let out = run(ProcessSpec::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_secs(300)))
        .await;
        // Never reached: the test kills this process first.
        panic!("the victim's command ended: {out:?}");
    });
}

/// Kills the victim (and whatever it left) even when an assertion fails,
/// so a failed test does not leave a process holding the test's pipes.
struct Victim {
    child: std::process::Child,
    marker: String,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in processes_matching(&self.marker) {
            // SAFETY: kill(2) on a process this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn a_killed_orch_leaves_no_process_of_its_commands_behind() {
    // A number for `sleep`, unique to this run.
    let marker = format!("3{}", &unique_marker()[..12]);
    let mut victim = Victim {
        child: std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "victim", "--nocapture", "--test-threads", "1"])
            .env(VICTIM_ENV, &marker)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        marker: marker.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Four sleeps, the shell and its subshell (both name them).
    while processes_matching(&format!("sleep {marker}")).len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the victim never started its tree"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = processes_matching(&marker);
    let guardian = format!("orch-reaper {}", victim.child.id());
    let guardians = processes_matching(&guardian);

    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let left = processes_matching(&marker);
    assert!(
        left.is_empty(),
        "still alive 1 s after the kill: {left:?} (of {before:?})"
    );
    assert_eq!(guardians.len(), 1, "one guardian ran for the victim");
    assert!(
        processes_matching(&guardian).is_empty(),
        "the guardian exits too"
    );
}

type Boxed = Pin<
    Box<
        dyn Future<Output = Result<orch_process::ProcessOutput, orch_process::ProcessError>> + Send,
    >,
>;

#[test]
fn a_command_outlives_the_thread_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("touch {}; sleep 1; echo survived", started.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    // Start the command on a thread that exits while it still runs: a
    // parent-death signal tied to that thread would kill it.
    let fut = std::thread::spawn(move || {
        let mut fut: Boxed = Box::pin(run(ProcessSpec::new("sh").args(["-c", &script])));
        handle.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !started.exists() {
                tokio::select! {
                    out = &mut fut => panic!("ended before its thread did: {out:?}"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                assert!(Instant::now() < deadline, "the command never started");
            }
        });
        fut
    })
    .join()
    .unwrap();
    let out = rt.block_on(fut).unwrap();
    assert_eq!(out.signal, None, "killed: {out:?}");
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "survived\n");
}

#[tokio::test]
async fn watched_groups_are_withdrawn_when_their_command_ends() {
    // Many short commands: each registers its group with the guardian and
    // withdraws it; the guardian keeps up and nothing is killed by mistake.
    for i in 0..50 {
        let out = run(ProcessSpec::new("sh").args(["-c", &format!("echo {i}")]))
            .await
            .unwrap();
        assert_eq!(out.stdout, format!("{i}\n"));
    }
    let pid = orch_process::reaper::guardian_pid().expect("a guardian runs");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
}
