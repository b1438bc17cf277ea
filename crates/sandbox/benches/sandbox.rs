//! Sandbox start, reset and per-command cost, per backend:
//! `cargo bench -p orch-sandbox`. Prints the median (and p90) of:
//!
//! - create → first command: a new sandbox object, then `true` run in it
//!   until it exits (for a container backend, this includes making the
//!   container);
//! - reset → next command: `release` of a workspace that just ran a
//!   command, then `true` in it again (and `release` alone);
//! - exec: `true` in an existing sandbox, and the overhead over running
//!   `sh -c true` directly through the same process runner.
//!
//! For bubblewrap a reset is nothing: every command already starts in fresh
//! namespaces with a fresh /tmp. For Docker it retires the slot's container
//! (kill, clear logs, removal in the background); the next command's
//! container creation then shows up in its create time.
//!
//! Targets: bubblewrap under 50 ms, Docker under 1 s. A backend that cannot
//! run here is reported and skipped (and fails the bench when `CI` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_sandbox::docker::{prune, DockerOptions, DockerSandbox, DEFAULT_IMAGE};
use orch_sandbox::{BwrapSandbox, ExecRequest, Limits, Sandbox, SandboxOptions};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a backend is made, and how many rounds each measurement gets.
struct Backend {
    name: &'static str,
    make: Box<dyn Fn() -> Arc<dyn Sandbox>>,
    rounds: usize,
    target: Duration,
    /// Docker project whose containers and volumes are pruned afterwards.
    project: Option<String>,
}

fn limited() -> SandboxOptions {
    SandboxOptions {
        network: false,
        limits: Limits {
            memory_bytes: Some(1 << 30),
            pids: Some(256),
            cpus: Some(1.0),
        },
        hidden: Vec::new(),
    }
}

fn backends() -> Vec<Backend> {
    // One project for every Docker sandbox the bench makes: each new
    // instance takes the slot over, as a restarted orch would.
    let project = format!("orchbench-{}", std::process::id());
    let docker = DockerOptions {
        image: std::env::var("ORCH_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into()),
        project: project.clone(),
        volumes: vec![("cache".into(), "/cache".into())],
        ..Default::default()
    };
    vec![
        Backend {
            name: "bwrap",
            make: Box::new(|| Arc::new(BwrapSandbox::new(limited()))),
            rounds: 40,
            target: Duration::from_millis(50),
            project: None,
        },
        Backend {
            name: "bwrap (no limits)",
            make: Box::new(|| Arc::new(BwrapSandbox::new(SandboxOptions::default()))),
            rounds: 40,
            target: Duration::from_millis(50),
            project: None,
        },
        Backend {
            name: "docker",
            make: Box::new(move || Arc::new(DockerSandbox::new(docker.clone(), limited()))),
            rounds: 15,
            target: Duration::from_secs(1),
            project: Some(project),
        },
    ]
}

fn request(workdir: &Path) -> ExecRequest {
    ExecRequest {
        command: "true".to_string(),
        workdir: workdir.to_path_buf(),
        env: Vec::new(),
        extra_ro: Vec::new(),
        timeout: Duration::from_secs(120),
        output_limit: 64 * 1024,
    }
}

/// Median and 90th percentile.
fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure<'a, F>(rounds: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Pin<Box<dyn Future<Output = Duration> + 'a>>,
{
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        samples.push(f().await);
    }
    stats(samples)
}

async fn bench(b: &Backend, baseline: Duration) -> bool {
    let probe = (b.make)();
    if let Err(e) = probe.check().await {
        if std::env::var_os("CI").is_some() {
            panic!("{}: cannot run on this CI machine: {e}", b.name);
        }
        println!("{:<20} skipped: {e}", b.name);
        return true;
    }
    let wt = tempfile::tempdir().unwrap();
    let dir = wt.path().to_path_buf();

    let (create, create90) = measure(b.rounds, || {
        let make = &b.make;
        let dir = dir.clone();
        let started = Instant::now();
        let sandbox = make();
        Box::pin(async move {
            let out = sandbox.exec(&request(&dir)).await.unwrap();
            assert!(out.success(), "{}", out.combined());
            let took = started.elapsed();
            sandbox.release(&dir).await.unwrap();
            took
        })
    })
    .await;

    let sandbox = (b.make)();
    let release_only = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (reset, reset90) = measure(b.rounds, || {
        let sandbox = sandbox.clone();
        let dir = dir.clone();
        let release_only = release_only.clone();
        let out = async move {
            let out = sandbox.exec(&request(&dir)).await.unwrap();
            assert!(out.success(), "{}", out.combined());
            let started = Instant::now();
            sandbox.release(&dir).await.unwrap();
            let released = started.elapsed();
            let out = sandbox.exec(&request(&dir)).await.unwrap();
            assert!(out.success(), "{}", out.combined());
            (released, started.elapsed())
        };
        Box::pin(async move {
            let (released, total) = out.await;
            release_only.borrow_mut().push(released);
            total
        })
    })
    .await;
    let (release, _) = stats(release_only.take());

    // Warm: one command first, then each one timed.
    sandbox.exec(&request(&dir)).await.unwrap();
    let (exec, exec90) = measure(b.rounds, || {
        let sandbox = sandbox.clone();
        let dir = dir.clone();
        Box::pin(async move {
            let started = Instant::now();
            let out = sandbox.exec(&request(&dir)).await.unwrap();
            assert!(out.success(), "{}", out.combined());
            started.elapsed()
        })
    })
    .await;
    sandbox.release(&dir).await.unwrap();
    if let Some(project) = &b.project {
        // Retired containers are removed in the background: give them a
        // moment, then remove whatever is left, volumes included.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Err(e) = prune(&[], Some(project)).await {
            println!("{}: cleanup of {project} failed: {e}", b.name);
        }
    }

    let overhead = exec.saturating_sub(baseline);
    let ok = create <= b.target && reset <= b.target && exec <= b.target;
    println!(
        "{:<18} create→first command {:>9} (p90 {:>9})   reset→next command {:>9} (p90 \
         {:>9}; release alone {:>9})   exec {:>9} (p90 {:>9}, overhead {:>9})   target {} {}",
        b.name,
        ms(create),
        ms(create90),
        ms(reset),
        ms(reset90),
        ms(release),
        ms(exec),
        ms(exec90),
        ms(overhead),
        ms(b.target),
        if ok { "met" } else { "MISSED" }
    );
    ok
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The process runner alone: what any command costs without a sandbox.
        let (baseline, _) = measure(40, || {
            Box::pin(async {
                let started = Instant::now();
                let spec = orch_process::ProcessSpec::new("sh").args(["-c", "true"]);
                let out = orch_process::run(spec).await.unwrap();
                assert!(out.success());
                started.elapsed()
            })
        })
        .await;
        println!(
            "{:<20} sh -c true through the process runner: median {}",
            "baseline",
            ms(baseline)
        );
        let mut all_met = true;
        for b in backends() {
            all_met &= bench(&b, baseline).await;
        }
        if !all_met {
            println!("some medians missed their target (see MISSED above)");
        }
    });
}
