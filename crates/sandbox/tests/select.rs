//! `sandbox = "auto"` on this machine: Docker when its engine answers and
//! has the image, else bubblewrap, else a refusal; `none` only when asked
//! for by name. In CI both backends must be present, so `auto` must pick
//! Docker there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_sandbox::docker::{image_exists, prune, DockerOptions, DEFAULT_IMAGE};
use orch_sandbox::{
    docker_available, from_kind, select, AutoSandbox, BwrapSandbox, ExecRequest, Sandbox,
    SandboxOptions,
};
use std::time::Duration;

fn image() -> String {
    std::env::var("ORCH_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string())
}

fn docker_options(tag: &str) -> DockerOptions {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    DockerOptions {
        image: image(),
        project: format!("orchsel-{tag}-{}-{nanos:x}", std::process::id()),
        ..Default::default()
    }
}

/// What `auto` should pick here: "docker", "bwrap", or None (refuse).
async fn expected() -> Option<&'static str> {
    let docker = docker_available().await && image_exists(&image()).await.unwrap_or(false);
    if std::env::var_os("CI").is_some() {
        assert!(
            docker,
            "CI needs a Docker engine with {}: run scripts/build-sandbox-image.sh",
            image()
        );
    }
    if docker {
        return Some("docker");
    }
    let bwrap = BwrapSandbox::new(SandboxOptions::default()).check().await;
    bwrap.is_ok().then_some("bwrap")
}

#[tokio::test]
async fn auto_prefers_docker_then_bwrap_and_never_none() {
    let want = expected().await;
    let got = select("auto", SandboxOptions::default(), docker_options("pick")).await;
    match (want, got) {
        (Some(name), Ok(sel)) => {
            assert_eq!(sel.sandbox.name(), name, "notes: {:?}", sel.notes);
            assert!(sel.sandbox.isolates());
            assert!(
                sel.notes.iter().any(|n| n.starts_with("using")),
                "{:?}",
                sel.notes
            );
        }
        (None, Err(e)) => assert!(e.to_string().contains("refuses"), "{e}"),
        (want, got) => panic!("expected {want:?}, got {got:?}"),
    }
}

#[tokio::test]
async fn auto_from_kind_chooses_on_first_use() {
    let Some(want) = expected().await else {
        eprintln!("skipped: neither Docker nor bubblewrap works here");
        return;
    };
    assert_eq!(
        from_kind("auto", SandboxOptions::default()).unwrap().name(),
        "auto"
    );

    let docker = docker_options("lazy");
    let project = docker.project.clone();
    let sandbox = AutoSandbox::with_docker(SandboxOptions::default(), docker);
    assert_eq!(sandbox.name(), "auto");
    assert!(sandbox.isolates());
    let wt = tempfile::tempdir().unwrap();
    let out = sandbox
        .exec(&ExecRequest {
            command: "echo chosen".into(),
            workdir: wt.path().to_path_buf(),
            env: Vec::new(),
            extra_ro: Vec::new(),
            timeout: Duration::from_secs(120),
            output_limit: 4096,
        })
        .await;
    sandbox.release(wt.path()).await.unwrap();
    if want == "docker" {
        prune(&[], Some(&project)).await.unwrap();
    }
    let out = out.unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "chosen\n");
    assert_eq!(sandbox.name(), want);
    assert!(!sandbox.notes().is_empty());
}

#[tokio::test]
async fn none_only_when_named_and_it_says_so() {
    let sel = select("none", SandboxOptions::default(), DockerOptions::default())
        .await
        .unwrap();
    assert!(!sel.sandbox.isolates());
    assert!(
        sel.notes
            .iter()
            .any(|n| n.contains("without any isolation")),
        "{:?}",
        sel.notes
    );
    let err = select(
        "nspawn",
        SandboxOptions::default(),
        DockerOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown sandbox `nspawn`"),
        "{err}"
    );
}
