//! The process runner against real processes: exit codes, stdin, env,
//! timeouts that kill whole trees, daemonized grandchildren, big output and
//! cancellation.

mod common;

use common::{group_is_gone, processes_matching, unique_marker};
use orch_process::{run, ProcessError, ProcessSpec};
use std::time::{Duration, Instant};

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("sh").arg("-c").arg(script)
}

#[tokio::test]
async fn reports_exit_codes_and_output() {
    let ok = run(sh("echo hello; echo oops >&2")).await.unwrap();
    assert!(ok.success());
    assert_eq!(ok.exit_code, Some(0));
    assert_eq!(ok.signal, None);
    assert_eq!(ok.stdout, "hello\n");
    assert_eq!(ok.stderr, "oops\n");
    assert_eq!(ok.combined(), "hello\n--- stderr ---\noops\n");
    assert!(!ok.truncated && !ok.timed_out);

    let failed = run(sh("exit 42")).await.unwrap();
    assert!(!failed.success());
    assert_eq!(failed.exit_code, Some(42));
}

#[tokio::test]
async fn reports_the_killing_signal() {
    let out = run(sh("kill -TERM $$")).await.unwrap();
    assert_eq!(out.exit_code, None);
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(!out.success());
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let err = run(ProcessSpec::new("/nonexistent/orch-no-such-program"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("/nonexistent/orch-no-such-program"));
}

#[tokio::test]
async fn feeds_stdin() {
    let mut spec = ProcessSpec::new("cat");
    spec.stdin = Some(b"from stdin\n".to_vec());
    let out = run(spec).await.unwrap();
    assert_eq!(out.stdout, "from stdin\n");
}

#[tokio::test]
async fn stdin_defaults_to_null() {
    // With no stdin given, `cat` must see EOF at once rather than hang.
    let out = run(ProcessSpec::new("cat").timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(out.success());
    assert!(!out.timed_out);
    assert_eq!(out.stdout, "");
}

#[tokio::test]
async fn large_stdin_is_written_while_output_is_read() {
    // 4 MB through `cat` deadlocks unless stdin and stdout run concurrently.
    let data = vec![b'x'; 4 * 1024 * 1024];
    let mut spec = ProcessSpec::new("cat").output_limit(8 * 1024 * 1024);
    spec.stdin = Some(data.clone());
    let out = run(spec.timeout(Duration::from_secs(60))).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), data.len());
}

#[tokio::test]
async fn env_clear_starts_empty() {
    std::env::set_var("ORCH_PROCESS_TEST_SECRET", "leaked");
    let inherited = run(sh("echo \"[$ORCH_PROCESS_TEST_SECRET]\""))
        .await
        .unwrap();
    assert_eq!(inherited.stdout, "[leaked]\n");

    let mut spec = ProcessSpec::new("/bin/sh")
        .arg("-c")
        .arg("echo \"[$ORCH_PROCESS_TEST_SECRET][$MINE]\"")
        .env("MINE", "given");
    spec.env_clear = true;
    let cleared = run(spec).await.unwrap();
    assert_eq!(cleared.stdout, "[][given]\n");
}

#[tokio::test]
async fn runs_in_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ProcessSpec::new("pwd").cwd(dir.path())).await.unwrap();
    assert_eq!(
        out.stdout.trim(),
        dir.path().canonicalize().unwrap().to_str().unwrap()
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let started = Instant::now();
    let out = run(sh("echo $$; sleep 100 & sleep 100").timeout(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.timed_out);
    assert!(!out.success());
    assert_eq!(out.signal, Some(libc::SIGKILL));
    let pgid: i32 = out.stdout.trim().parse().unwrap();
    assert!(
        group_is_gone(pgid),
        "left alive: {:?}",
        common::live_members(pgid)
    );
}

#[tokio::test]
async fn background_children_are_killed_after_normal_exit() {
    let marker = unique_marker();
    let out = run(sh(&format!(
        "echo $$; sleep 1000.{marker} > /dev/null 2>&1 &"
    )))
    .await
    .unwrap();
    assert!(out.success());
    let pgid: i32 = out.stdout.trim().parse().unwrap();
    assert!(group_is_gone(pgid));
    assert!(processes_matching(&format!("sleep 1000.{marker}")).is_empty());
}

#[tokio::test]
async fn background_child_holding_stdout_does_not_hang() {
    // Stays in the group and holds stdout: killed after the main child exits.
    let started = Instant::now();
    let out = run(sh("echo first; sleep 100 & echo done")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.success());
    assert_eq!(out.stdout, "first\ndone\n");
}

#[tokio::test]
async fn daemonized_grandchild_holding_stdout_does_not_hang() {
    // setsid moves the grandchild out of our group, so it survives the group
    // kill and keeps the pipe open; run must still return. The parent waits
    // for the daemon's flag so the escape has happened before it exits.
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let marker = unique_marker();
    let script = format!(
        "echo started; setsid sh -c 'touch {flag}; exec sleep 1000.{marker}' & \
         while [ ! -f {flag} ]; do sleep 0.05; done; echo parent-done",
        flag = flag.display()
    );
    let started = Instant::now();
    let out = run(sh(&script).timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let daemons = processes_matching(&format!("sleep 1000.{marker}"));
    for pid in &daemons {
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    assert!(
        !daemons.is_empty(),
        "the daemon should have escaped the group kill"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert!(!out.timed_out);
    assert!(out.success());
    assert!(out.stdout.contains("parent-done"), "{:?}", out.stdout);
}

#[tokio::test]
async fn huge_output_is_capped_with_a_marker() {
    let out = run(sh("yes | head -c 50000000; echo END >&2").output_limit(1000))
        .await
        .unwrap();
    assert!(out.success());
    assert!(out.truncated);
    assert!(
        out.stdout
            .contains("[… orch cut 49999000 bytes of output …]"),
        "{:?}",
        out.stdout
    );
    assert!(out.stdout.starts_with("y\ny\n"));
    assert!(out.stdout.ends_with("y\n"));
    assert!(out.stdout.len() < 1100);
    assert_eq!(out.stderr, "END\n");
}

#[tokio::test]
async fn dropping_the_future_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; sleep 100 & sleep 100", pid_file.display());
    let handle = tokio::spawn(run(sh(&script)));

    let deadline = Instant::now() + Duration::from_secs(20);
    let pgid: i32 = loop {
        if let Ok(s) = std::fs::read_to_string(&pid_file) {
            if let Ok(p) = s.trim().parse() {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "child never wrote its pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Both sleeps started?
    while common::live_members(pgid).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!common::live_members(pgid).is_empty());

    handle.abort();
    let _ = handle.await;
    assert!(
        group_is_gone(pgid),
        "left alive: {:?}",
        common::live_members(pgid)
    );
}
