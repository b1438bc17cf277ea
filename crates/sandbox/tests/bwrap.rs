//! The bubblewrap backend against the real bwrap: what the sandbox lets
//! through and what it does not. (Limits, timeouts, output caps and resets
//! are covered for every backend in `conformance.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orch_sandbox::{BwrapSandbox, ExecRequest, Limits, Sandbox, SandboxOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn sandbox() -> BwrapSandbox {
    BwrapSandbox::new(SandboxOptions::default())
}

fn request(workdir: &Path, command: &str) -> ExecRequest {
    ExecRequest {
        command: command.to_string(),
        workdir: workdir.to_path_buf(),
        env: Vec::new(),
        extra_ro: Vec::new(),
        timeout: Duration::from_secs(60),
        output_limit: 64 * 1024,
    }
}

/// A directory outside /tmp (so not hidden by the sandbox's private /tmp).
/// A host directory that is not under /tmp (the sandbox replaces /tmp with
/// a private tmpfs, which would hide it instead of making it read-only).
/// The checkout itself may live under /tmp, so the target dir won't do.
fn dir_outside_tmp() -> std::io::Result<tempfile::TempDir> {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if target.starts_with("/tmp") {
        std::fs::create_dir_all("/var/tmp")?;
        tempfile::tempdir_in("/var/tmp")
    } else {
        tempfile::tempdir_in(target)
    }
}

fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}{:09}", std::process::id(), nanos)
}

use orch_testkit::procs::processes_matching;

#[tokio::test]
async fn check_passes_on_this_machine() {
    sandbox().check().await.unwrap();
}

#[tokio::test]
async fn check_explains_a_missing_bwrap() {
    let err = sandbox()
        .with_binary("/nonexistent/bwrap")
        .check()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("apt-get install bubblewrap"), "{msg}");
    assert!(msg.contains("sandbox = \"none\""), "{msg}");
}

#[tokio::test]
async fn runs_in_the_workdir_and_writes_persist() {
    let wt = tempfile::tempdir().unwrap(); // under /tmp: must survive the private /tmp
    let out = sandbox()
        .exec(&request(
            wt.path(),
            "pwd; echo made > result.txt; mkdir -p sub && echo x > sub/y",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout.trim(), wt.path().to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(wt.path().join("result.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.path().join("sub/y")).unwrap(),
        "x\n"
    );
}

#[tokio::test]
async fn writes_outside_the_workdir_fail() {
    let wt = dir_outside_tmp().unwrap();
    let outside = dir_outside_tmp().unwrap();
    let home = PathBuf::from(std::env::var("HOME").unwrap());
    let marker = unique_marker();
    let in_outside = outside.path().join("escaped.txt");
    let in_home = home.join(format!("orch-sandbox-escape-{marker}"));

    for target in [&in_outside, &in_home] {
        let out = sandbox()
            .exec(&request(
                wt.path(),
                &format!("echo escaped > '{}'", target.display()),
            ))
            .await
            .unwrap();
        let _ = std::fs::remove_file(target);
        assert!(!out.success(), "writing {} succeeded", target.display());
        assert!(
            out.stderr.contains("Read-only file system"),
            "{}",
            out.stderr
        );
        assert!(!target.exists());
    }

    // Existing host files stay untouched too.
    std::fs::write(outside.path().join("keep.txt"), "original").unwrap();
    let out = sandbox()
        .exec(&request(
            wt.path(),
            &format!(
                "echo changed > '{}/keep.txt'; rm -f '{}/keep.txt'",
                outside.path().display(),
                outside.path().display()
            ),
        ))
        .await
        .unwrap();
    assert!(!out.success());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("keep.txt")).unwrap(),
        "original"
    );
}

#[tokio::test]
async fn extra_ro_paths_are_readable_not_writable() {
    let wt = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap(); // under /tmp: hidden unless bound
    std::fs::write(ro.path().join("data.txt"), "shared").unwrap();
    let cmd = format!(
        "cat '{0}/data.txt'; echo more >> '{0}/data.txt'",
        ro.path().display()
    );

    let mut req = request(wt.path(), &cmd);
    let hidden = sandbox().exec(&req).await.unwrap();
    assert!(
        !hidden.stdout.contains("shared"),
        "host /tmp leaked: {}",
        hidden.stdout
    );

    req.extra_ro = vec![ro.path().to_path_buf()];
    let out = sandbox().exec(&req).await.unwrap();
    assert_eq!(out.stdout, "shared");
    assert!(!out.success());
    assert_eq!(
        std::fs::read_to_string(ro.path().join("data.txt")).unwrap(),
        "shared"
    );
}

#[tokio::test]
async fn tmp_is_private() {
    let wt = dir_outside_tmp().unwrap();
    let name = format!("orch-private-{}", unique_marker());
    let host_file = Path::new("/tmp").join(&name);
    std::fs::write(host_file.with_extension("host"), "host").unwrap();
    let cmd = format!(
        "echo inside > /tmp/{name} && cat /tmp/{name} && test ! -e /tmp/{name}.host && echo host-hidden"
    );
    let out = sandbox().exec(&request(wt.path(), &cmd)).await.unwrap();
    let _ = std::fs::remove_file(host_file.with_extension("host"));
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "inside\nhost-hidden\n");
    assert!(!host_file.exists(), "sandbox /tmp write reached the host");
}

#[tokio::test]
async fn network_is_off_unless_allowed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let wt = tempfile::tempdir().unwrap();
    let cmd = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')\""
    );

    let off = sandbox().exec(&request(wt.path(), &cmd)).await.unwrap();
    assert!(
        !off.success(),
        "connected with network off: {}",
        off.combined()
    );
    assert!(!off.stdout.contains("connected"));

    let on = BwrapSandbox::new(SandboxOptions {
        network: true,
        ..Default::default()
    })
    .exec(&request(wt.path(), &cmd))
    .await
    .unwrap();
    assert!(on.success(), "network on: {}", on.combined());
    assert_eq!(on.stdout, "connected\n");
}

#[tokio::test]
async fn environment_is_only_what_is_passed() {
    std::env::set_var("ORCH_SANDBOX_TEST_SECRET", "leaked");
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(
        wt.path(),
        "echo \"[$ORCH_SANDBOX_TEST_SECRET][$GIVEN][$HOME][$LANG]\"",
    );
    req.env = vec![("GIVEN".to_string(), "yes".to_string())];
    let out = sandbox().exec(&req).await.unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "[][yes][/tmp][C.UTF-8]\n");
}

#[tokio::test]
async fn timeout_kills_everything_inside() {
    let wt = tempfile::tempdir().unwrap();
    let marker = format!("1000.{}", unique_marker());
    let mut req = request(wt.path(), &format!("sleep {marker} & sleep {marker}"));
    req.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let out = sandbox().exec(&req).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.timed_out);
    assert!(!out.success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_matching(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_matching(&marker);
    }
    assert!(left.is_empty(), "survivors: {left:?}");
}

#[tokio::test]
async fn output_is_capped() {
    let wt = tempfile::tempdir().unwrap();
    let mut req = request(wt.path(), "yes | head -c 1000000");
    req.output_limit = 1000;
    let out = sandbox().exec(&req).await.unwrap();
    assert!(out.success(), "{}", out.stderr);
    assert!(out.truncated);
    assert!(
        out.stdout.contains("[… orch cut 999000 bytes of output …]"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn pytest_runs_inside() {
    let wt = tempfile::tempdir().unwrap();
    std::fs::write(
        wt.path().join("test_tiny.py"),
        "def add(a, b):\n    return a + b\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    )
    .unwrap();
    let out = sandbox()
        .exec(&request(
            wt.path(),
            "python3 -m pytest -q -p no:cacheprovider",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    assert!(out.stdout.contains("1 passed"), "{}", out.stdout);
    // PYTHONDONTWRITEBYTECODE keeps the worktree free of bytecode caches.
    assert!(!wt.path().join("__pycache__").exists());
}

/// Runs git on the host for test setup.
fn host_git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"))
}

#[tokio::test]
async fn git_reads_a_worktree_whose_git_dir_is_mounted_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let wt = tmp.path().join("wt");
    std::fs::create_dir(&repo).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["commit", "-q", "--allow-empty", "-m", "first"],
    ] {
        assert!(host_git(&repo, args).status.success());
    }
    let add = host_git(
        &repo,
        &["worktree", "add", "-q", "-b", "task", wt.to_str().unwrap()],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let mut req = request(
        &wt,
        "echo new > file.txt && git add file.txt; git status --porcelain; git log --format=%s",
    );
    req.extra_ro = vec![repo.join(".git")];
    let out = sandbox().exec(&req).await.unwrap();
    // The worktree's index lives in the read-only git dir: staging fails,
    // reading works.
    assert!(out.stdout.contains("?? file.txt"), "{}", out.combined());
    assert!(out.stdout.contains("first"), "{}", out.combined());
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(wt.join("file.txt")).unwrap(),
        "new\n"
    );
}

/// orch's secrets in the layout a user has, outside /tmp (a private /tmp
/// would hide them anyway): the config and `.env` beside the repository,
/// data_dir holding the database, the audit trail and the task worktrees.
#[tokio::test]
async fn the_config_env_and_data_dir_are_unreadable_but_the_worktree_inside_works() {
    let root = dir_outside_tmp().unwrap();
    let root = root.path().canonicalize().unwrap();
    let secret = "sk-hidden-from-the-sandbox-4242";
    std::fs::write(root.join("orch.toml"), "data_dir = \".orch\"\n").unwrap();
    std::fs::write(root.join(".env"), format!("KEY={secret}\n")).unwrap();
    // The config named through a symlink: the file it points to is hidden.
    std::os::unix::fs::symlink(root.join("orch.toml"), root.join("config-link.toml")).unwrap();
    let data = root.join(".orch");
    std::fs::create_dir_all(data.join("audit/calc")).unwrap();
    std::fs::write(data.join("orch.db"), format!("db {secret}")).unwrap();
    std::fs::write(data.join("audit/calc/plan.md"), "audit").unwrap();
    let repo = root.join("calc");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("calc.py"), "x = 1\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "calc.py"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
    ] {
        assert!(host_git(&repo, args).status.success(), "git {args:?}");
    }
    let wt = data.join("worktrees/calc/task1");
    let add = host_git(
        &repo,
        &["worktree", "add", "-q", "-b", "t", wt.to_str().unwrap()],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let sandbox = BwrapSandbox::new(SandboxOptions {
        hidden: vec![
            root.join("config-link.toml"),
            root.join(".env"),
            data.clone(),
            root.join("absent.env"),
        ],
        ..Default::default()
    });
    let cmd = format!(
        "cat {r}/orch.toml; echo rc=$?; base64 {r}/.env; echo rc=$?; cat {d}/orch.db; echo rc=$?; \
         head -c 100 {d}/audit/calc/plan.md; echo rc=$?; ls -A {d}; git log --format=%s; \
         cat calc.py; echo made > new.txt && echo wrote",
        r = root.display(),
        d = data.display()
    );
    let mut req = request(&wt, &cmd);
    req.extra_ro = vec![repo.join(".git")];
    let out = sandbox.exec(&req).await.unwrap();
    let all = out.combined();
    assert!(!all.contains(secret), "{all}");
    assert!(
        !all.contains("S0VZPXNr"),
        "base64 of the .env leaked: {all}"
    );
    assert!(!all.contains("data_dir"), "the config leaked: {all}");
    assert!(
        out.stderr
            .contains(&format!("{}/orch.toml: Permission denied", root.display())),
        "{all}"
    );
    assert!(out.stderr.contains(".env: Permission denied"), "{all}");
    assert!(out.stderr.contains("orch.db: No such file"), "{all}");
    assert!(
        out.stderr.contains("plan.md' for reading: No such file"),
        "{all}"
    );
    assert_eq!(out.stdout.matches("rc=1").count(), 4, "{all}");
    // data_dir shows only the way to the worktree; the worktree works,
    // its git dir is readable.
    assert!(out.stdout.contains("\nworktrees\n"), "{all}");
    assert!(!out.stdout.contains("audit"), "{all}");
    assert!(out.stdout.contains("initial\nx = 1\nwrote\n"), "{all}");
    assert_eq!(
        std::fs::read_to_string(wt.join("new.txt")).unwrap(),
        "made\n"
    );
    // The host files are untouched and nothing was left on the host.
    assert!(std::fs::read_to_string(root.join(".env"))
        .unwrap()
        .contains(secret));
    assert!(!root.join("absent.env").exists());
}

/// A sandbox with all three limits set.
fn limited() -> BwrapSandbox {
    BwrapSandbox::new(SandboxOptions {
        network: false,
        limits: Limits {
            memory_bytes: Some(256 << 20),
            pids: Some(64),
            cpus: Some(1.0),
        },
        hidden: Vec::new(),
    })
}

#[tokio::test]
async fn seccomp_filter_and_no_capabilities() {
    let wt = tempfile::tempdir().unwrap();
    let out = limited()
        .exec(&request(
            wt.path(),
            "grep -E '^(Seccomp|CapEff|CapBnd|NoNewPrivs):' /proc/self/status",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    for line in [
        "Seccomp:\t2",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(out.stdout.contains(line), "{line} missing: {}", out.stdout);
    }
}

/// Calls one syscall through ctypes and prints `errno` (0 on success).
fn syscall_probe(call: &str) -> String {
    format!(
        "python3 -c \"import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); \
         r = {call}; print('{call_name}', r, os.strerror(ctypes.get_errno()) if r != 0 else 'ok')\"",
        call_name = call.split('(').next().unwrap().trim_start_matches("libc.")
    )
}

#[tokio::test]
async fn blocked_syscalls_fail_with_eperm() {
    let wt = tempfile::tempdir().unwrap();
    let probes = [
        // PTRACE_TRACEME succeeds for any unfiltered process.
        "libc.ptrace(0, 0, 0, 0)",
        // CLONE_NEWUSER: an unprivileged nested user namespace.
        "libc.unshare(0x10000000)",
        "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
        // KEYCTL_GET_KEYRING_ID of the session keyring.
        "libc.syscall(250 if os.uname().machine == 'x86_64' else 219, 0, -3, 0)",
    ];
    let cmd = probes
        .iter()
        .map(|p| syscall_probe(p))
        .collect::<Vec<_>>()
        .join("; ");
    let out = limited().exec(&request(wt.path(), &cmd)).await.unwrap();
    assert!(out.success(), "{}", out.combined());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), probes.len(), "{}", out.combined());
    for line in lines {
        assert!(
            line.ends_with("-1 Operation not permitted"),
            "not refused: {line}"
        );
    }

    // The same nested namespace works without the filter, so the refusal
    // above is the filter's doing.
    let bare = orch_process::run(
        orch_process::ProcessSpec::new("bwrap")
            .args([
                "--unshare-all",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
            ])
            .args(["unshare", "-U", "true"]),
    )
    .await
    .unwrap();
    assert!(bare.success(), "{}", bare.combined());
}

#[tokio::test]
async fn threads_and_subprocesses_still_work_under_the_filter() {
    // clone3 answers ENOSYS; the C library must fall back to clone.
    let wt = tempfile::tempdir().unwrap();
    let cmd = "python3 -c \"import threading, subprocess; t = threading.Thread(target=print, args=('thread',)); \
               t.start(); t.join(); print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())\"";
    let out = limited().exec(&request(wt.path(), cmd)).await.unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "thread\nchild\n");
}

#[tokio::test]
async fn no_descriptor_leaks_inside() {
    // One of orch's own descriptors without close-on-exec, as a parent
    // process might hand it down: it must not reach the sandbox.
    let (read, write) = std::io::pipe().unwrap();
    let inherited = std::os::fd::AsRawFd::as_raw_fd(&write);
    // SAFETY: clears a flag on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(inherited, libc::F_SETFD, 0) }, 0);
    let wt = tempfile::tempdir().unwrap();
    // `ls` opens its own descriptor for the directory it lists.
    let out = limited()
        .exec(&request(
            wt.path(),
            "ls /proc/self/fd; ls -l /proc/self/fd >&2",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    let fds: Vec<u32> = out
        .stdout
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    // 0-2 and the one `ls` opens for /proc/self/fd: not the filter pipe,
    // not the inherited one.
    assert_eq!(fds.len(), 4, "descriptors inside: {fds:?}\n{}", out.stderr);
    assert!(!fds.contains(&(inherited as u32)), "{}", out.stderr);
    drop((read, write));
}

/// Directories named like this process's per-command cgroups.
fn my_cgroups() -> Vec<PathBuf> {
    let prefix = format!("orch-{}-", std::process::id());
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

/// A command's cgroup carries its limits; once the command is over and
/// nothing is left in it, the next command of the same sandbox reuses it,
/// and the sandbox's shutdown removes it.
#[tokio::test]
async fn limits_use_a_cgroup_that_is_reused_then_removed() {
    let sandbox = limited();
    let keeper = sandbox.clone();
    let how = sandbox.limits_enforcement();
    if !how.contains("memory: cgroup") || !how.contains("pids: cgroup") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs cgroups for sandbox limits, found: {how}"
        );
        eprintln!("skipped: no writable cgroups here ({how})");
        return;
    }
    let wt = tempfile::tempdir().unwrap();
    // The command waits for the test to have looked at its cgroup.
    let req = request(
        wt.path(),
        "while [ ! -e go ]; do sleep 0.02; done; echo done",
    );
    let running = tokio::spawn(async move { sandbox.exec(&req).await });
    // This command's cgroups: those holding a process that runs in `wt`
    // (other tests run their own commands in parallel).
    let wt_path = wt.path().to_path_buf();
    let ours = move || {
        my_cgroups()
            .into_iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .any(|pid| {
                        std::fs::read_link(format!("/proc/{pid}/cwd")).ok().as_ref()
                            == Some(&wt_path)
                    })
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dirs = ours();
    while dirs.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        dirs = ours();
    }
    let read = |name: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
            .map(|s| s.trim().to_string())
    };
    let pids_max = read("pids.max");
    let memory_max = read("memory.max").or_else(|| read("memory.limit_in_bytes"));
    let members = read("cgroup.procs").unwrap_or_default();
    std::fs::write(wt.path().join("go"), "").unwrap();
    let out = running.await.unwrap().unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "done\n");
    assert_eq!(pids_max.as_deref(), Some("64"), "{dirs:?}");
    assert_eq!(memory_max, Some((256u64 << 20).to_string()), "{dirs:?}");
    // bwrap, its init and the shell (at least) were inside.
    assert!(members.lines().count() >= 3, "members: {members:?}");

    assert!(!dirs.is_empty());
    // Idle and empty, kept for the next command, which runs in it. The
    // finished command's processes, killed with its PID namespace, may
    // take a moment to leave (the sandbox lets them settle before reuse).
    for d in &dirs {
        let settled = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(d.join("cgroup.procs")).unwrap() != "" {
            assert!(Instant::now() < settled, "{} stays populated", d.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let again = keeper
        .exec(&request(
            wt.path(),
            "cat /proc/self/cgroup >/dev/null; echo again",
        ))
        .await
        .unwrap();
    assert_eq!(again.stdout, "again\n", "{}", again.combined());
    assert_eq!(again.killed_by, None);
    assert!(
        dirs.iter().all(|d| d.exists()),
        "reused, not removed: {dirs:?}"
    );

    keeper.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

#[tokio::test]
async fn rlimit_fallback_limits_memory_and_core_dumps() {
    let wt = tempfile::tempdir().unwrap();
    let sandbox = limited().without_cgroups();
    assert!(sandbox.limits_enforcement().contains("RLIMIT_DATA"));
    let out = sandbox
        .exec(&request(
            wt.path(),
            "ulimit -c; python3 -c \"\ntry:\n    b = bytearray(1 << 30)\n    print('allocated')\nexcept MemoryError:\n    print('refused')\"",
        ))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.combined());
    assert_eq!(out.stdout, "0\nrefused\n");
    // Nothing reads a cgroup here, so nothing claims a limit fired.
    assert_eq!(out.killed_by, None);
}

/// Dropping an in-flight exec (a cancel) kills the whole tree inside the
/// sandbox and removes the command's cgroup.
#[tokio::test]
async fn a_dropped_exec_kills_its_tree_and_removes_its_cgroup() {
    let sandbox = limited();
    let cgroups = sandbox.limits_enforcement().contains("pids: cgroup");
    let wt = tempfile::tempdir().unwrap();
    let marker = format!("6{}", &unique_marker()[..12]);
    let cmd = format!("sleep {marker} & setsid sleep {marker} & sleep {marker}");
    let req = request(wt.path(), &cmd);
    let mut exec = Box::pin(sandbox.exec(&req));
    let wt_path = wt.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dirs = Vec::new();
    while processes_matching(&format!("sleep {marker}")).len() < 4 || (cgroups && dirs.is_empty()) {
        tokio::select! {
            out = &mut exec => panic!("the command ended early: {out:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        dirs = my_cgroups()
            .into_iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .any(|pid| {
                        std::fs::read_link(format!("/proc/{pid}/cwd")).ok().as_ref()
                            == Some(&wt_path)
                    })
            })
            .collect();
        assert!(Instant::now() < deadline, "the tree never started");
    }
    drop(exec);
    let dropped = Instant::now();
    loop {
        let left = processes_matching(&marker);
        let cgroups_left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
        if left.is_empty() && cgroups_left.is_empty() {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "5 s after the drop: processes {left:?}, cgroups {cgroups_left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
