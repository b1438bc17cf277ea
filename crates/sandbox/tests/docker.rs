//! The Docker backend against the real engine and the real sandbox image
//! (`scripts/build-sandbox-image.sh` builds it): hardening, limits,
//! timeouts, the reset semantics of the design notes, and the housekeeping
//! behind `orch sandbox`. Outside CI the tests skip when the engine or the
//! image is missing; with `CI` set they fail and say how to fix it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_sandbox::docker::{
    self, container_processes, DockerOptions, DockerSandbox, DEFAULT_IMAGE, SANDBOX_UID,
};
use orch_sandbox::{ExecRequest, Limit, Limits, Sandbox, SandboxOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn image() -> String {
    std::env::var("ORCH_SANDBOX_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string())
}

/// True when the engine answers and has the image. Outside CI a missing
/// piece skips the test; in CI it fails with the fix.
async fn docker_ready() -> bool {
    let problem = match docker::ping().await {
        Err(e) => Some(e.to_string()),
        Ok(()) => match docker::image_exists(&image()).await {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "the image {} is missing; build it with scripts/build-sandbox-image.sh",
                image()
            )),
            Err(e) => Some(e.to_string()),
        },
    };
    match problem {
        None => true,
        Some(p) if std::env::var_os("CI").is_some() => panic!(
            "the Docker sandbox tests cannot run on this CI machine: {p}. Fix: start the \
             engine and run scripts/build-sandbox-image.sh (no registry needed)"
        ),
        Some(p) => {
            eprintln!("skipped: {p}");
            false
        }
    }
}

/// A project name no other test (or run) uses.
fn project(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "orchtest-{name}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn options(project: &str) -> DockerOptions {
    DockerOptions {
        image: image(),
        project: project.to_string(),
        ..Default::default()
    }
}

fn limited(memory: u64, pids: u64) -> SandboxOptions {
    SandboxOptions {
        network: false,
        limits: Limits {
            memory_bytes: Some(memory),
            pids: Some(pids),
            cpus: Some(1.0),
        },
        hidden: Vec::new(),
    }
}

fn request(workdir: &Path, command: &str) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        workdir: workdir.to_path_buf(),
        env: Vec::new(),
        extra_ro: Vec::new(),
        timeout: Duration::from_secs(120),
        output_limit: 64 * 1024,
    }
}

/// Stops the sandbox and removes everything the test's project left.
/// Removes a project's containers if the test panics before `finish`: a
/// failed fork-bomb test must not leave its bomb running for the rest of
/// the machine's tests.
struct RemoveOnPanic(String);

impl Drop for RemoveOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let filter = format!("label=orch.project={}", self.0);
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = listed {
            let ids = String::from_utf8_lossy(&out.stdout);
            for id in ids.split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

async fn finish(sandbox: &DockerSandbox) {
    sandbox.shutdown().await.unwrap();
    let project = sandbox.docker_options().project.clone();
    docker::prune(&[], Some(&project)).await.unwrap();
}

async fn exec(sandbox: &DockerSandbox, req: &ExecRequest) -> orch_sandbox::ProcessOutput {
    sandbox.exec(req).await.unwrap()
}

/// Processes in the container whose command line contains `needle`.
async fn processes_matching(sandbox: &DockerSandbox, workdir: &Path, needle: &str) -> Vec<String> {
    let id = sandbox
        .container_for(workdir)
        .await
        .expect("a container serves the workdir");
    container_processes(&id)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.contains(needle))
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn check_passes_and_explains_a_missing_image() {
    if !docker_ready().await {
        return;
    }
    let p = project("check");
    DockerSandbox::new(options(&p), SandboxOptions::default())
        .check()
        .await
        .unwrap();
    let mut missing = options(&p);
    missing.image = "orch-no-such-image:never".to_string();
    let err = DockerSandbox::new(missing, SandboxOptions::default())
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/build-sandbox-image.sh"), "{err}");
    assert!(err.contains("orch sandbox build --rootfs"), "{err}");
}

#[tokio::test]
async fn runs_in_the_workspace_as_a_non_root_user_and_git_still_works() {
    if !docker_ready().await {
        return;
    }
    let p = project("workspace");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    git(wt.path(), &["init", "-q"]);
    std::fs::write(wt.path().join("seed.txt"), "seed\n").unwrap();
    git(wt.path(), &["add", "."]);
    git(wt.path(), &["commit", "-qm", "seed"]);
    let owner = std::fs::metadata(wt.path()).unwrap().uid();

    let out = exec(
        &sandbox,
        &request(
            wt.path(),
            "pwd; id -u; echo made > result.txt; mkdir -p sub && echo x > sub/y; echo more >> seed.txt",
        ),
    )
    .await;
    assert!(out.success(), "{}", out.combined());
    let (uid, _) = sandbox.user().unwrap();
    assert_ne!(uid, 0);
    assert_eq!(out.stdout, format!("/workspace\n{uid}\n"));
    assert_eq!(
        std::fs::read_to_string(wt.path().join("result.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.path().join("sub/y")).unwrap(),
        "x\n"
    );

    // A file the host (the agent's tools) creates mid-attempt is writable
    // inside too.
    std::fs::create_dir(wt.path().join("hostdir")).unwrap();
    std::fs::write(wt.path().join("hostdir/h.txt"), "h\n").unwrap();
    let out = exec(
        &sandbox,
        &request(
            wt.path(),
            "echo inside >> hostdir/h.txt && touch hostdir/new",
        ),
    )
    .await;
    assert!(out.success(), "{}", out.combined());

    sandbox.release(wt.path()).await.unwrap();
    // Everything is the worktree owner's again, and host-side git works
    // without any safe.directory override.
    for f in ["result.txt", "sub", "sub/y", "hostdir/new", "seed.txt"] {
        assert_eq!(
            std::fs::symlink_metadata(wt.path().join(f)).unwrap().uid(),
            owner,
            "{f}"
        );
    }
    let status = git(wt.path(), &["status", "--porcelain"]);
    assert!(status.contains("M seed.txt"), "{status}");
    git(wt.path(), &["add", "."]);
    git(wt.path(), &["commit", "-qm", "work"]);
    finish(&sandbox).await;
}

#[tokio::test]
async fn a_git_worktree_resolves_inside_through_its_read_only_git_dir() {
    if !docker_ready().await {
        return;
    }
    let p = project("gitwt");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    std::fs::write(repo.path().join("a.txt"), "a\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "a"]);
    let wt = repo.path().join("wt");
    git(
        repo.path(),
        &["worktree", "add", "-q", "-b", "task", wt.to_str().unwrap()],
    );
    let mut req = request(
        &wt,
        "git log --oneline | wc -l; git rev-parse --abbrev-ref HEAD",
    );
    req.extra_ro = vec![repo.path().join(".git")];
    let out = exec(&sandbox, &req).await;
    assert!(out.stdout.starts_with("1\ntask\n"), "{}", out.combined());
    // The git dir is read-only inside.
    let out = exec(&sandbox, &{
        let mut r = req.clone();
        r.command = format!("touch {}/.git/escape", repo.path().display());
        r
    })
    .await;
    assert!(!out.success());
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    finish(&sandbox).await;
}

#[tokio::test]
async fn writes_outside_the_workspace_fail() {
    if !docker_ready().await {
        return;
    }
    let p = project("readonly");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    for target in [
        "/etc/escaped",
        "/usr/local/bin/escaped",
        "/escaped",
        "/home/orch/escaped",
    ] {
        let out = exec(&sandbox, &request(wt.path(), &format!("echo x > {target}"))).await;
        assert!(!out.success(), "writing {target} succeeded");
        assert!(
            out.stderr.contains("Read-only file system"),
            "{target}: {}",
            out.stderr
        );
    }
    let out = exec(
        &sandbox,
        &request(wt.path(), "echo ok > /tmp/scratch && cat /tmp/scratch"),
    )
    .await;
    assert_eq!(out.stdout, "ok\n", "{}", out.combined());
    // No capability is left to undo any of it.
    let out = exec(
        &sandbox,
        &request(
            wt.path(),
            "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status",
        ),
    )
    .await;
    assert!(
        out.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("NoNewPrivs:\t1"), "{}", out.stdout);
    finish(&sandbox).await;
}

#[tokio::test]
async fn the_network_is_unreachable_when_off_and_present_when_allowed() {
    if !docker_ready().await {
        return;
    }
    let connect =
        "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=5)\"";
    let p = project("net");
    let off = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let out = exec(&off, &request(wt.path(), connect)).await;
    assert!(!out.success());
    assert!(
        out.stderr.contains("Network is unreachable"),
        "{}",
        out.stderr
    );
    let out = exec(&off, &request(wt.path(), "cat /proc/net/dev")).await;
    assert!(!out.stdout.contains("eth0"), "{}", out.stdout);
    finish(&off).await;

    let on = DockerSandbox::new(
        options(&p),
        SandboxOptions {
            network: true,
            ..Default::default()
        },
    );
    let out = exec(&on, &request(wt.path(), "cat /proc/net/dev")).await;
    assert!(out.stdout.contains("eth0"), "{}", out.stdout);
    finish(&on).await;
}

#[tokio::test]
async fn an_environment_variable_reaches_the_sandbox_only_if_passed() {
    if !docker_ready().await {
        return;
    }
    std::env::set_var("ORCH_DOCKER_TEST_SECRET", "leaked");
    let p = project("env");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(
        wt.path(),
        "echo \"[$ORCH_DOCKER_TEST_SECRET][$PASSED]\"; env",
    );
    let out = exec(&sandbox, &req).await;
    assert!(out.stdout.starts_with("[][]\n"), "{}", out.stdout);
    assert!(!out.stdout.contains("leaked"), "{}", out.stdout);
    req.env = vec![("PASSED".into(), "yes".into())];
    let out = exec(&sandbox, &req).await;
    assert!(out.stdout.starts_with("[][yes]\n"), "{}", out.stdout);
    finish(&sandbox).await;
}

#[tokio::test]
async fn a_timeout_kills_the_processes_inside_and_leaves_nothing() {
    if !docker_ready().await {
        return;
    }
    let p = project("timeout");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(
        wt.path(),
        "sleep 987651 & setsid sleep 987652 & (sleep 987653 &); echo started; sleep 987654",
    );
    req.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let out = exec(&sandbox, &req).await;
    assert!(out.timed_out);
    assert_eq!(out.killed_by, Some(Limit::Timeout));
    assert!(!out.success());
    assert_eq!(out.stdout, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        processes_matching(&sandbox, wt.path(), "98765").await,
        Vec::<String>::new()
    );

    // The container still works afterwards.
    let out = exec(&sandbox, &request(wt.path(), "echo alive")).await;
    assert_eq!(out.stdout, "alive\n");
    finish(&sandbox).await;
}

#[tokio::test]
async fn background_leftovers_die_with_their_command() {
    if !docker_ready().await {
        return;
    }
    let p = project("leftovers");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let out = exec(
        &sandbox,
        &request(wt.path(), "sleep 876543 >/dev/null 2>&1 & echo done"),
    )
    .await;
    assert_eq!(out.stdout, "done\n");
    assert_eq!(
        processes_matching(&sandbox, wt.path(), "876543").await,
        Vec::<String>::new()
    );
    finish(&sandbox).await;
}

#[tokio::test]
async fn a_caller_that_stops_waiting_leaves_nothing_running() {
    if !docker_ready().await {
        return;
    }
    let p = project("cancel");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    exec(&sandbox, &request(wt.path(), "true")).await;
    let gave_up = tokio::time::timeout(
        Duration::from_secs(2),
        sandbox.exec(&request(wt.path(), "sleep 765432")),
    )
    .await;
    assert!(gave_up.is_err());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_matching(&sandbox, wt.path(), "765432").await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finish(&sandbox).await;
}

#[tokio::test]
async fn a_memory_hog_is_killed_and_reported_as_such() {
    if !docker_ready().await {
        return;
    }
    let p = project("memory");
    let sandbox = DockerSandbox::new(options(&p), limited(128 << 20, 256));
    let wt = tempfile::tempdir().unwrap();
    let hog = "python3 -c \"x = []\nwhile True: x.append(bytearray(10 ** 7))\"";
    let out = exec(&sandbox, &request(wt.path(), hog)).await;
    assert!(!out.success());
    assert!(!out.timed_out);
    assert_eq!(out.killed_by, Some(Limit::Memory), "{out:?}");
    // A later ordinary failure is not blamed on memory.
    let out = exec(&sandbox, &request(wt.path(), "exit 3")).await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.killed_by, None);
    finish(&sandbox).await;
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_pid_limit() {
    if !docker_ready().await {
        return;
    }
    let p = project("pids");
    let _cleanup = RemoveOnPanic(p.clone());
    let sandbox = DockerSandbox::new(options(&p), limited(512 << 20, 64));
    let wt = tempfile::tempdir().unwrap();
    // Counts how many children the limit lets it make.
    let counted = r#"python3 -c "
import os, time
n = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        n += 1
except OSError as e:
    print('refused after', n, e.errno)
""#;
    let out = exec(&sandbox, &request(wt.path(), counted)).await;
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"refused"), "{}", out.combined());
    let made: u64 = words[2].parse().unwrap();
    assert!(made < 64, "{made} children under a limit of 64");
    assert_eq!(words[3], "11", "EAGAIN expected: {}", out.stdout);
    // A classic bomb that never ends is killed at its timeout, with
    // nothing left, and the container stays usable.
    let mut bomb = request(
        wt.path(),
        "python3 -c \"import os\nwhile True:\n  try: os.fork()\n  except OSError: pass\"",
    );
    bomb.timeout = Duration::from_secs(5);
    let out = exec(&sandbox, &bomb).await;
    assert!(out.timed_out);
    assert_eq!(out.killed_by, Some(Limit::Timeout));
    // The kill races the bomb's last forks; on a loaded machine the tail
    // may take a moment to go, but it must go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = processes_matching(&sandbox, wt.path(), "python3").await;
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = processes_matching(&sandbox, wt.path(), "python3").await;
    }
    assert_eq!(left, Vec::<String>::new());
    let out = exec(&sandbox, &request(wt.path(), "echo alive")).await;
    assert_eq!(out.stdout, "alive\n", "{}", out.combined());
    finish(&sandbox).await;
}

#[tokio::test]
async fn output_over_the_cap_is_cut_with_a_marker() {
    if !docker_ready().await {
        return;
    }
    let p = project("cap");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(
        wt.path(),
        "echo START; head -c 200000 /dev/zero | tr '\\0' a; echo; echo END",
    );
    req.output_limit = 1000;
    let out = exec(&sandbox, &req).await;
    assert!(out.success(), "{}", out.combined());
    assert!(out.truncated);
    assert!(out.stdout.starts_with("START\n"), "{}", &out.stdout[..40]);
    assert!(out.stdout.ends_with("END\n"));
    assert!(out.stdout.contains("[… orch cut "), "{}", out.stdout);
    assert!(out.stdout.len() < 1100, "{}", out.stdout.len());
    finish(&sandbox).await;
}

#[tokio::test]
async fn reset_replaces_the_workspace_clears_logs_and_keeps_volumes_and_shared_data() {
    if !docker_ready().await {
        return;
    }
    let p = project("reset");
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("dataset.csv"), "a,b\n1,2\n").unwrap();
    let mut opts = options(&p);
    opts.volumes = vec![("cache".to_string(), "/cache".to_string())];
    opts.shared_data = Some((shared.path().to_path_buf(), "/shared/data".to_string()));
    let sandbox = DockerSandbox::new(opts, SandboxOptions::default());
    let wt1 = tempfile::tempdir().unwrap();
    let wt2 = tempfile::tempdir().unwrap();
    std::fs::write(wt1.path().join("task.txt"), "first\n").unwrap();
    std::fs::write(wt2.path().join("task.txt"), "second\n").unwrap();

    let out = exec(
        &sandbox,
        &request(
            wt1.path(),
            "cat /workspace/task.txt; echo kept > /cache/keep; mkdir -p /env/logs/d && echo log > /env/logs/d/run.log; \
             cat /shared/data/dataset.csv; echo x > /shared/data/dataset.csv || echo shared-ro",
        ),
    )
    .await;
    assert_eq!(
        out.stdout,
        "first\na,b\n1,2\nshared-ro\n",
        "{}",
        out.combined()
    );
    let first = sandbox.container_for(wt1.path()).await.unwrap();

    sandbox.release(wt1.path()).await.unwrap();
    let out = exec(
        &sandbox,
        &request(wt2.path(), "cat /workspace/task.txt; cat /cache/keep; ls -A /env/logs | wc -l; cat /shared/data/dataset.csv"),
    )
    .await;
    assert_eq!(
        out.stdout,
        "second\nkept\n0\na,b\n1,2\n",
        "{}",
        out.combined()
    );
    assert_ne!(sandbox.container_for(wt2.path()).await.unwrap(), first);
    assert_eq!(
        std::fs::read_to_string(shared.path().join("dataset.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    // The first worktree is untouched by the second task.
    assert_eq!(
        std::fs::read_to_string(wt1.path().join("task.txt")).unwrap(),
        "first\n"
    );
    finish(&sandbox).await;
}

#[tokio::test]
async fn concurrent_worktrees_get_their_own_containers() {
    if !docker_ready().await {
        return;
    }
    let p = project("concurrent");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt1 = tempfile::tempdir().unwrap();
    let wt2 = tempfile::tempdir().unwrap();
    std::fs::write(wt1.path().join("who"), "one\n").unwrap();
    std::fs::write(wt2.path().join("who"), "two\n").unwrap();
    let r1 = request(wt1.path(), "cat who; ls /workspace");
    let r2 = request(wt2.path(), "cat who; ls /workspace");
    let (a, b) = tokio::join!(sandbox.exec(&r1), sandbox.exec(&r2));
    assert_eq!(a.unwrap().stdout, "one\nwho\n");
    assert_eq!(b.unwrap().stdout, "two\nwho\n");
    assert_ne!(
        sandbox.container_for(wt1.path()).await,
        sandbox.container_for(wt2.path()).await
    );
    finish(&sandbox).await;
}

#[tokio::test]
async fn two_sandboxes_of_one_project_do_not_disturb_each_other() {
    if !docker_ready().await {
        return;
    }
    let p = project("twins");
    let a = DockerSandbox::new(options(&p), SandboxOptions::default());
    let b = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wa = tempfile::tempdir().unwrap();
    let wb = tempfile::tempdir().unwrap();
    let out = exec(&a, &request(wa.path(), "echo a > /env/logs/a")).await;
    assert!(out.success(), "{}", out.combined());
    let out = exec(
        &b,
        &request(wb.path(), "echo b > /env/logs/b; ls /env/logs"),
    )
    .await;
    assert_eq!(
        out.stdout,
        "b\n",
        "separate logs volumes: {}",
        out.combined()
    );
    b.release(wb.path()).await.unwrap();
    let out = exec(&a, &request(wa.path(), "cat /env/logs/a")).await;
    assert_eq!(out.stdout, "a\n", "{}", out.combined());
    finish(&a).await;
    finish(&b).await;
}

#[tokio::test]
async fn a_vanished_container_is_replaced_and_reset_project_keeps_named_volumes() {
    if !docker_ready().await {
        return;
    }
    let p = project("resetproj");
    let mut opts = options(&p);
    opts.volumes = vec![("models".to_string(), "/models".to_string())];
    let sandbox = DockerSandbox::new(opts, SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let out = exec(
        &sandbox,
        &request(
            wt.path(),
            "echo weights > /models/w; echo line > /env/logs/l",
        ),
    )
    .await;
    assert!(out.success(), "{}", out.combined());

    let report = docker::reset_project(&p).await.unwrap();
    assert_eq!(report.containers.len(), 1, "{report:?}");
    assert_eq!(report.logs_cleared, vec![docker::logs_volume_name(&p, 0)]);
    assert_eq!(report.kept, vec![docker::volume_name(&p, "models")]);

    let out = exec(
        &sandbox,
        &request(wt.path(), "cat /models/w; ls -A /env/logs | wc -l"),
    )
    .await;
    assert_eq!(out.stdout, "weights\n0\n", "{}", out.combined());
    finish(&sandbox).await;
}

#[tokio::test]
async fn prune_removes_only_orphans() {
    if !docker_ready().await {
        return;
    }
    let scope = project("prune");
    let live = format!("{scope}-live");
    let gone = format!("{scope}-gone");
    let mut sandboxes = Vec::new();
    let wt = tempfile::tempdir().unwrap();
    for name in [&live, &gone] {
        let mut opts = options(name);
        opts.volumes = vec![("cache".to_string(), "/cache".to_string())];
        let sandbox = DockerSandbox::new(opts, SandboxOptions::default());
        exec(&sandbox, &request(wt.path(), "true")).await;
        sandboxes.push(sandbox);
    }
    let report = docker::prune(std::slice::from_ref(&live), Some(&scope))
        .await
        .unwrap();
    assert_eq!(report.containers.len(), 1, "{report:?}");
    assert!(
        report.containers[0].starts_with(&format!("orch-{gone}-")),
        "{report:?}"
    );
    let mut removed = report.volumes.clone();
    removed.sort();
    let mut expected = vec![
        docker::volume_name(&gone, "cache"),
        docker::logs_volume_name(&gone, 0),
    ];
    expected.sort();
    assert_eq!(removed, expected);

    let inv = docker::list().await.unwrap();
    assert!(inv
        .containers
        .iter()
        .any(|c| c.project == live && c.state == "running"));
    assert!(!inv.containers.iter().any(|c| c.project == gone));
    assert!(inv
        .volumes
        .iter()
        .any(|v| v.project == live && v.name == docker::volume_name(&live, "cache")));
    assert!(!inv.volumes.iter().any(|v| v.project == gone));
    // The live project keeps working.
    let out = exec(&sandboxes[0], &request(wt.path(), "echo ok")).await;
    assert_eq!(out.stdout, "ok\n");
    for s in &sandboxes {
        finish(s).await;
    }
}

#[tokio::test]
async fn a_shell_joins_the_worker_container_or_makes_a_read_only_one() {
    if !docker_ready().await {
        return;
    }
    let p = project("shell");
    let sandbox = DockerSandbox::new(options(&p), SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    std::fs::write(wt.path().join("marker"), "worker\n").unwrap();
    exec(&sandbox, &request(wt.path(), "echo busy > /env/logs/state")).await;
    let checkout = tempfile::tempdir().unwrap();
    let shell = |command: &str, fresh: bool| docker::ShellOptions {
        docker: options(&p),
        sandbox: SandboxOptions::default(),
        workdir: checkout.path().to_path_buf(),
        read_only: true,
        command: Some(command.to_string()),
        fresh,
    };
    // Joins the running worker container: its workspace and logs.
    let code = docker::open_shell(shell("cat marker /env/logs/state > seen; exit 4", false))
        .await
        .unwrap();
    assert_eq!(code, 4);
    assert_eq!(
        std::fs::read_to_string(wt.path().join("seen")).unwrap(),
        "worker\nbusy\n"
    );
    // A fresh one mounts the given directory read-only, then goes away.
    let code = docker::open_shell(shell("touch /workspace/x", true))
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert!(!checkout.path().join("x").exists());
    let inv = docker::list().await.unwrap();
    assert!(!inv
        .containers
        .iter()
        .any(|c| c.project == p && c.role == "shell"));
    finish(&sandbox).await;
}

/// A tiny root filesystem: dash plus the few tools the sandbox needs, with
/// their libraries, copied from this host.
fn tiny_rootfs(dir: &Path) {
    let tools = [
        "/bin/sh",
        "/bin/dash",
        "/bin/sleep",
        "/usr/bin/setsid",
        "/bin/cat",
    ];
    let mut files: Vec<PathBuf> = Vec::new();
    for tool in tools {
        let real = std::fs::canonicalize(tool).unwrap();
        files.push(real.clone());
        let ldd = std::process::Command::new("ldd")
            .arg(&real)
            .output()
            .unwrap();
        for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
    }
    for f in files {
        let target = dir.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&f, &target).unwrap();
    }
    for tool in tools {
        let target = dir.join(tool.trim_start_matches('/'));
        if !target.exists() {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(std::fs::canonicalize(tool).unwrap(), target).unwrap();
        }
    }
    for d in ["tmp", "workspace", "proc", "dev", "sys", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

async fn remove_image(tag: &str) {
    let docker = docker::connect().await.unwrap();
    let _ = docker
        .remove_image(
            tag,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        )
        .await;
}

#[tokio::test]
async fn an_imported_root_filesystem_runs_as_a_sandbox() {
    if !docker_ready().await {
        return;
    }
    let p = project("import");
    let tag = format!("{p}:tiny");
    let rootfs = tempfile::tempdir().unwrap();
    tiny_rootfs(rootfs.path());
    let id = docker::import_rootfs(rootfs.path(), &tag).await.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(docker::image_exists(&tag).await.unwrap());
    let docker = docker::connect().await.unwrap();
    let config = docker.inspect_image(&tag).await.unwrap().config.unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));

    let mut opts = options(&p);
    opts.image = tag.clone();
    opts.logs_path = String::new();
    let sandbox = DockerSandbox::new(opts, SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    std::fs::write(wt.path().join("f"), "from the host\n").unwrap();
    let out = exec(&sandbox, &request(wt.path(), "cat f")).await;
    assert_eq!(out.stdout, "from the host\n", "{}", out.combined());
    finish(&sandbox).await;
    remove_image(&tag).await;

    let err = docker::import_rootfs(wt.path(), &tag)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not look like a root filesystem"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dockerfile_builds_through_the_api() {
    if !docker_ready().await {
        return;
    }
    let p = project("build");
    let tag = format!("{p}:built");
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("hello.txt"), "built in\n").unwrap();
    // Outside the context, so it travels under its own name.
    let elsewhere = tempfile::tempdir().unwrap();
    let dockerfile = elsewhere.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        format!(
            "FROM {}\nCOPY hello.txt /opt/hello.txt\nLABEL orch.test=1\n",
            image()
        ),
    )
    .unwrap();
    let mut lines = Vec::new();
    docker::build_image(&dockerfile, context.path(), &tag, &mut |l| {
        lines.push(l.to_string())
    })
    .await
    .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("COPY hello.txt")),
        "{lines:?}"
    );
    let mut opts = options(&p);
    opts.image = tag.clone();
    let sandbox = DockerSandbox::new(opts, SandboxOptions::default());
    let wt = tempfile::tempdir().unwrap();
    let out = exec(&sandbox, &request(wt.path(), "cat /opt/hello.txt")).await;
    assert_eq!(out.stdout, "built in\n", "{}", out.combined());
    finish(&sandbox).await;

    std::fs::write(&dockerfile, "FROM scratch\nRUN false\n").unwrap();
    let err = docker::build_image(&dockerfile, context.path(), &tag, &mut |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("building"), "{err}");
    remove_image(&tag).await;
}

/// Median of the durations.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prints the medians the issue asks for (the formal benchmark lives in
/// benches/); asserts only the design notes' 30 s reset bound.
#[tokio::test]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn measure_start_reset_and_exec_overhead() {
    if !docker_ready().await {
        return;
    }
    let p = project("measure");
    let mut opts = options(&p);
    opts.volumes = vec![("cache".to_string(), "/cache".to_string())];
    let sandbox = DockerSandbox::new(opts, limited(512 << 20, 256));
    let dirs: Vec<tempfile::TempDir> = (0..12).map(|_| tempfile::tempdir().unwrap()).collect();
    // Warm up: volumes and image layers.
    exec(&sandbox, &request(dirs[0].path(), "true")).await;
    sandbox.release(dirs[0].path()).await.unwrap();

    let mut first = Vec::new();
    let mut reset = Vec::new();
    for pair in dirs[1..].windows(2) {
        let t = Instant::now();
        exec(&sandbox, &request(pair[0].path(), "true")).await;
        first.push(t.elapsed());
        let t = Instant::now();
        sandbox.release(pair[0].path()).await.unwrap();
        exec(&sandbox, &request(pair[1].path(), "true")).await;
        reset.push(t.elapsed());
        sandbox.release(pair[1].path()).await.unwrap();
    }
    let mut per_exec = Vec::new();
    exec(&sandbox, &request(dirs[0].path(), "true")).await;
    for _ in 0..30 {
        let t = Instant::now();
        exec(&sandbox, &request(dirs[0].path(), "true")).await;
        per_exec.push(t.elapsed());
    }
    let (f, r, e) = (median(first), median(reset), median(per_exec));
    eprintln!("docker: create→first command {f:?}, reset (release + next first command) {r:?}, per exec {e:?}");
    assert!(r < Duration::from_secs(30));
    assert_eq!(SANDBOX_UID, 10001);
    finish(&sandbox).await;
}
