//! The no-isolation backend: same runner, minimal environment, and honest
//! about protecting nothing.

use orch_sandbox::{ExecRequest, NoSandbox, Sandbox};
use std::time::Duration;

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
