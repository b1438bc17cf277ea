//! The no-isolation backend: same runner, minimal environment, and honest
//! about protecting nothing.

use orch_sandbox::{ExecRequest, NoSandbox, Sandbox};
use std::time::{Duration, Instant};

fn request(workdir: &std::path::Path, command: &str) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        workdir: workdir.to_path_buf(),
        env: vec![("GIVEN".to_string(), "yes".to_string())],
        extra_ro: Vec::new(),
        timeout: Duration::from_secs(60),
        output_limit: 64 * 1024,
    }
}

#[tokio::test]
async fn runs_in_workdir_with_a_minimal_environment() {
    std::env::set_var("ORCH_NONE_TEST_SECRET", "leaked");
    let wt = tempfile::tempdir().unwrap();
    let sandbox = NoSandbox::new();
    assert!(!sandbox.isolates());
    sandbox.check().await.unwrap();
    let out = sandbox
        .exec(&request(
            wt.path(),
            "pwd; echo \"[$ORCH_NONE_TEST_SECRET][$GIVEN][$LANG]\"; echo hi > f",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    let canonical = wt.path().canonicalize().unwrap();
    assert_eq!(
        out.stdout,
        format!("{}\n[][yes][C.UTF-8]\n", canonical.display())
    );
    assert_eq!(
        std::fs::read_to_string(wt.path().join("f")).unwrap(),
        "hi\n"
    );
}

#[tokio::test]
async fn timeout_applies() {
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(wt.path(), "sleep 100");
    req.timeout = Duration::from_millis(300);
    let out = NoSandbox::new().exec(&req).await.unwrap();
    assert!(out.timed_out);
}

use orch_testkit::procs::processes_matching;

#[tokio::test]
async fn a_dropped_exec_leaves_nothing_running() {
    let wt = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("5{}{nanos:09}", std::process::id());
    let cmd = format!("sleep {marker} & (sleep {marker} & wait) & sleep {marker}");
    let sandbox = NoSandbox::new();
    let req = request(wt.path(), &cmd);
    let mut exec = Box::pin(sandbox.exec(&req));
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_matching(&format!("sleep {marker}")).len() < 5 {
        tokio::select! {
            out = &mut exec => panic!("the command ended early: {out:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(Instant::now() < deadline, "the tree never started");
    }
    drop(exec);
    let dropped = Instant::now();
    while !processes_matching(&marker).is_empty() {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "still running after the drop: {:?}",
            processes_matching(&marker)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
