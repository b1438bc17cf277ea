//! bubblewrap backend: the worktree read-write, the rest of the host
//! read-only except orch's secrets (the config file, its `.env` and
//! data_dir are masked: see [`SandboxOptions::hidden`]), a private /tmp,
//! fresh namespaces (mount, PID, network unless allowed, IPC, UTS, user,
//! cgroup), no capabilities, a seccomp filter (`seccomp.rs`) and resource
//! limits (`limits.rs`: a cgroup per command where the machine allows,
//! rlimits otherwise), and an empty environment.
//! bwrap runs in the process runner's own process group; with
//! `--unshare-pid` and `--die-with-parent`, killing that group (on timeout,
//! or when the caller drops the `exec` future) takes down everything inside
//! the sandbox, and the command's cgroup is emptied and removed afterwards.
//! If orch itself is killed, the runner's parent-death signal kills bwrap
//! and orch's guardian process removes the cgroup (`orch_process::reaper`).

use crate::limits::{self, Rlimit};
use crate::{
    existing_hidden, find_executable, mask_file_or_null, sandbox_path, seccomp, ExecRequest,
    Hidden, Limit, Sandbox, SandboxError, SandboxOptions,
};
use async_trait::async_trait;
use orch_process::{PreExec, ProcessOutput, ProcessSpec};
use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Runs commands under bubblewrap.
#[derive(Debug, Clone)]
pub struct BwrapSandbox {
    opts: SandboxOptions,
    /// The bwrap program (name looked up on PATH, or a path).
    binary: String,
    /// Use cgroups for limits when the machine allows (else rlimits).
    cgroups: bool,
    /// Cgroups of finished commands, kept for the next ones.
    idle: Arc<limits::IdleCgroups>,
}

impl BwrapSandbox {
    pub fn new(opts: SandboxOptions) -> Self {
        BwrapSandbox {
            opts,
            binary: "bwrap".to_string(),
            cgroups: true,
            idle: Arc::default(),
        }
    }

    /// Enforces limits with rlimits only, even where cgroups would work
    /// (cruder: no OOM report, no CPU limit, no PID limit for root).
    pub fn without_cgroups(mut self) -> Self {
        self.cgroups = false;
        self
    }

    /// How each limit is enforced on this machine, for status output.
    pub fn limits_enforcement(&self) -> String {
        if self.cgroups {
            limits::support().describe()
        } else {
            "memory: RLIMIT_DATA; pids: RLIMIT_NPROC (not for root); cpu: not enforced \
             (cgroups turned off)"
                .to_string()
        }
    }

    /// Everything a check's outcome depends on besides the machine: the
    /// bwrap program, how limits are enforced and what the sandbox mounts.
    fn check_key(&self, binary: &Path) -> String {
        let o = &self.opts;
        format!(
            "{}|cgroups={}|{:?}|network={}|hidden={:?}",
            binary.display(),
            self.cgroups,
            o.limits,
            o.network,
            o.hidden
        )
    }

    /// The real setup (seccomp filter, limits, masks) running `true` on an
    /// empty scratch directory.
    async fn hardened_probe(&self) -> Result<ProcessOutput, SandboxError> {
        let scratch = scratch_dir()?;
        let result = self
            .exec(&ExecRequest {
                command: "true".to_string(),
                workdir: scratch.clone(),
                env: Vec::new(),
                extra_ro: Vec::new(),
                timeout: Duration::from_secs(30),
                output_limit: 16 * 1024,
            })
            .await;
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }

    /// Uses another bwrap binary (a path or a name on PATH).
    pub fn with_binary(mut self, binary: impl Into<String>) -> Self {
        self.binary = binary.into();
        self
    }

    /// The full bwrap argument list for `request` (without the program).
    pub fn args(&self, request: &ExecRequest) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // No capabilities even inside the sandbox's own user namespace: as
        // root, bwrap would otherwise keep them all.
        push(&[
            "--die-with-parent",
            "--new-session",
            "--unshare-all",
            "--cap-drop",
            "ALL",
        ]);
        if self.opts.network {
            push(&["--share-net"]);
        }
        push(&[
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]);
        a.extend(layered_mounts(
            request,
            &existing_hidden(&self.opts.hidden),
            mask_file_or_null,
        ));
        let workdir = path_str(&request.workdir);
        a.extend(["--chdir".to_string(), workdir]);
        a.push("--clearenv".to_string());
        let base_env = [
            ("PATH", sandbox_path()),
            ("HOME", "/tmp".to_string()),
            ("LANG", "C.UTF-8".to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
        ];
        for (k, v) in base_env {
            a.extend(["--setenv".to_string(), k.to_string(), v]);
        }
        for (k, v) in &request.env {
            a.extend(["--setenv".to_string(), k.clone(), v.clone()]);
        }
        a.push("--".to_string());
        a.extend(crate::command_argv(&request.command, &request.env));
        a
    }
}

/// The worktree, the read-only paths and the masks over hidden paths, as
/// bwrap arguments. All come after the root, /dev, /proc and the /tmp
/// tmpfs (so paths under /tmp stay visible), ordered shallowest first by
/// where they really are (symlinks resolved), masks before binds at equal
/// depth: the deepest one wins. So a worktree inside the hidden data_dir
/// is bound on top of its mask and stays visible read-write, a read-only
/// git dir inside a hidden directory stays readable, and a hidden path
/// inside a bound directory is masked in it. A hidden path that is already
/// invisible (under the private /tmp and outside every bind) gets no mask.
/// `mask` gives the file bound over hidden files (asked only if needed).
fn layered_mounts(
    request: &ExecRequest,
    hidden: &[Hidden],
    mask: impl FnOnce() -> PathBuf,
) -> Vec<String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let depth = |p: &Path| p.components().count();
    let mut binds: Vec<(PathBuf, &Path, &str)> = request
        .extra_ro
        .iter()
        .map(|p| (real(p), p.as_path(), "--ro-bind"))
        .collect();
    binds.push((real(&request.workdir), request.workdir.as_path(), "--bind"));
    // (depth, masks first, arguments)
    let mut layers: Vec<(usize, u8, Vec<String>)> = binds
        .iter()
        .map(|(r, p, flag)| {
            let p = path_str(p);
            (depth(r), 1, vec![flag.to_string(), p.clone(), p])
        })
        .collect();
    let mut mask = Some(mask);
    let mut mask_path: Option<String> = None;
    for h in hidden {
        let shown_by_bind = binds
            .iter()
            .filter(|(r, _, _)| h.path.starts_with(r))
            .map(|(r, _, _)| depth(r))
            .max();
        let private = ["/tmp", "/dev", "/proc"]
            .iter()
            .map(Path::new)
            .filter(|s| h.path.starts_with(s))
            .map(depth)
            .max();
        if let Some(private) = private {
            if shown_by_bind.is_none_or(|b| b < private) {
                continue;
            }
        }
        let target = path_str(&h.path);
        let args = if h.is_dir {
            vec!["--tmpfs".to_string(), target]
        } else {
            let source = mask_path
                .get_or_insert_with(|| path_str(&mask.take().map(|f| f()).unwrap_or_default()))
                .clone();
            vec!["--ro-bind".to_string(), source, target]
        };
        layers.push((depth(&h.path), 0, args));
    }
    layers.sort_by_key(|(d, rank, _)| (*d, *rank));
    layers.into_iter().flat_map(|(_, _, args)| args).collect()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[async_trait]
impl Sandbox for BwrapSandbox {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    /// The run is over: the cgroups kept for reuse go.
    async fn shutdown(&self) -> Result<(), SandboxError> {
        self.idle.drain().await;
        Ok(())
    }

    fn isolates(&self) -> bool {
        true
    }

    /// Runs the real setup (seccomp filter, limits, masks) once; only when
    /// that fails does the bare namespace probe run, to say which part does
    /// not work here. A pass is remembered for the process (see
    /// [`BwrapSandbox::check_key`]): `orch run` checks when the project's
    /// sandbox is chosen and again before its first cycle.
    async fn check(&self) -> Result<(), SandboxError> {
        let Some(binary) = find_executable(&self.binary) else {
            return Err(SandboxError::Unavailable(
                "bubblewrap (bwrap) is not installed: run `apt-get install bubblewrap`, or set \
                 sandbox = \"none\" for this project to run without isolation"
                    .to_string(),
            ));
        };
        seccomp::program()?;
        let key = self.check_key(&binary);
        if passed_checks().lock().is_ok_and(|k| k.contains(&key)) {
            return Ok(());
        }
        let hardened = self.hardened_probe().await;
        if hardened.as_ref().is_ok_and(ProcessOutput::success) {
            if let Ok(mut passed) = passed_checks().lock() {
                passed.insert(key);
            }
            return Ok(());
        }
        namespace_probe(&binary).await?;
        let out = hardened?;
        Err(SandboxError::Unavailable(format!(
            "bubblewrap creates namespaces but the hardened sandbox does not start ({}); \
             bubblewrap 0.4 or newer is needed for --seccomp and --cap-drop (`apt-get install \
             bubblewrap`), and limits need a writable cgroup or none configured. Limits here: \
             {}",
            failure_detail(&out),
            self.limits_enforcement()
        )))
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError> {
        let filter = seccomp::filter_pipe()?;
        let plan = limits::plan(&self.opts.limits, self.cgroups, &self.idle)?;
        let procs = plan
            .cgroup
            .as_ref()
            .map(|c| c.procs_files())
            .unwrap_or_default();
        let mut args = vec!["--seccomp".to_string(), filter.as_raw_fd().to_string()];
        args.extend(self.args(request));
        let spec = ProcessSpec::new(self.binary.clone())
            .args(args)
            .timeout(request.timeout)
            .output_limit(request.output_limit)
            .pre_exec(child_setup(procs, plan.rlimits.clone(), filter));
        let mut out = orch_process::run(spec).await?;
        if let Some(cgroup) = &plan.cgroup {
            out.killed_by = limit_hit(&out, cgroup.outcome());
        }
        // An empty cgroup is kept for the next command; one with processes
        // left is emptied and removed.
        self.idle.recycle(plan);
        Ok(out)
    }
}

/// The sandbox setups whose check passed in this process. A check's outcome
/// depends only on the machine and on what `check_key` names, none of which
/// changes while orch runs, so a setup is checked once; a failed check is not
/// remembered, and the next one looks again.
fn passed_checks() -> &'static Mutex<HashSet<String>> {
    static PASSED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    PASSED.get_or_init(Mutex::default)
}

/// `bwrap --unshare-all --ro-bind / / true`: whether bubblewrap can create
/// namespaces here at all, with the fix when it cannot.
async fn namespace_probe(binary: &Path) -> Result<(), SandboxError> {
    let probe = ProcessSpec::new(path_str(binary))
        .args(["--unshare-all", "--ro-bind", "/", "/", "true"])
        .timeout(Duration::from_secs(30))
        .output_limit(16 * 1024);
    let out = orch_process::run(probe).await?;
    if out.success() {
        return Ok(());
    }
    Err(SandboxError::Unavailable(format!(
        "bubblewrap is installed but cannot create namespaces here (`{} --unshare-all \
         --ro-bind / / true` failed: {}). {}; otherwise set sandbox = \"none\" to run \
         without isolation",
        binary.display(),
        failure_detail(&out),
        userns_fix()
    )))
}

/// What runs in the forked child before it becomes bwrap: join the
/// command's cgroup, lower the rlimits, close every descriptor orch itself
/// inherited (a sandbox must not write into its parent's pipes) and let
/// only the seccomp pipe survive exec. Everything it touches is prepared
/// here, in the parent.
fn child_setup(procs: Vec<CString>, rlimits: Vec<Rlimit>, filter: OwnedFd) -> PreExec {
    let fd = filter.as_raw_fd();
    let max_fd = open_files_limit();
    let hook = move || {
        // Owning the pipe keeps it open until the runner drops the hook.
        let _ = &filter;
        for p in &procs {
            limits::join_cgroup(p)?;
        }
        for r in &rlimits {
            r.apply()?;
        }
        cloexec_from(3, max_fd);
        set_cloexec(fd, false)
    };
    // SAFETY: the hook only makes raw syscalls (open, write, close,
    // setrlimit, close_range, fcntl) on data prepared before the fork.
    unsafe { PreExec::new(hook) }
}

/// Highest descriptor number worth visiting when close_range is missing.
fn open_files_limit() -> RawFd {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    RawFd::try_from(cur.min(65_536)).unwrap_or(65_536)
}

/// Marks descriptors `from..` close-on-exec. Async-signal-safe.
fn cloexec_from(from: RawFd, max_fd: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !done {
        // Kernels before 5.11: one fcntl per possible descriptor.
        for fd in from..max_fd {
            let _ = set_cloexec(fd, true);
        }
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl(F_SETFD) only changes a descriptor flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Which limit stopped a failed command, from its cgroup's counters. The
/// runner's own verdict (timeout) wins; a command that succeeded was not
/// stopped by anything.
fn limit_hit(out: &ProcessOutput, seen: limits::Outcome) -> Option<Limit> {
    if out.killed_by.is_some() || out.success() {
        return out.killed_by;
    }
    if seen.oom_kills > 0 {
        Some(Limit::Memory)
    } else if seen.pids_refused > 0 {
        Some(Limit::Pids)
    } else {
        None
    }
}

fn failure_detail(out: &ProcessOutput) -> String {
    if out.timed_out {
        "timed out after 30 s".to_string()
    } else {
        let text = out.combined();
        let text = text.trim();
        if text.is_empty() {
            format!("exit code {:?}, signal {:?}", out.exit_code, out.signal)
        } else {
            text.to_string()
        }
    }
}

/// The fix for missing user namespaces, naming the knob that is off here.
fn userns_fix() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut fixes = Vec::new();
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        fixes.push("`sysctl -w user.max_user_namespaces=15000` (it is 0 here)");
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        fixes.push("`sysctl -w kernel.unprivileged_userns_clone=1` (it is 0 here)");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        fixes.push(
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile \
             for bwrap (AppArmor restricts user namespaces here)",
        );
    }
    if fixes.is_empty() {
        fixes.push(
            "`sysctl -w kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04+ \
             `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`",
        );
    }
    format!(
        "Allow unprivileged user namespaces ({}), run orch as root, or inside a container \
         start it with --privileged / a seccomp profile that allows unshare",
        fixes.join("; ")
    )
}

/// An empty directory for the check's probe command.
fn scratch_dir() -> Result<PathBuf, SandboxError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "orch-bwrap-check-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| {
        SandboxError::Backend(format!(
            "cannot create {} for the sandbox check: {e}; make the temp directory writable \
             (or point TMPDIR elsewhere)",
            dir.display()
        ))
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExecRequest {
        ExecRequest {
            command: "echo hi".into(),
            workdir: PathBuf::from("/tmp/wt"),
            env: vec![("K".into(), "V".into())],
            extra_ro: vec![PathBuf::from("/tmp/repo/.git")],
            timeout: Duration::from_secs(5),
            output_limit: 1000,
        }
    }

    fn position(args: &[String], needle: &[&str]) -> Option<usize> {
        args.windows(needle.len())
            .position(|w| w.iter().zip(needle).all(|(a, b)| a == b))
    }

    #[test]
    fn binds_after_tmpfs_and_ends_with_the_command() {
        let args = BwrapSandbox::new(SandboxOptions::default()).args(&request());
        let tmpfs = position(&args, &["--tmpfs", "/tmp"]).unwrap();
        let ro = position(&args, &["--ro-bind", "/tmp/repo/.git", "/tmp/repo/.git"]).unwrap();
        let rw = position(&args, &["--bind", "/tmp/wt", "/tmp/wt"]).unwrap();
        assert!(tmpfs < ro && tmpfs < rw);
        assert!(position(&args, &["--chdir", "/tmp/wt"]).is_some());
        assert!(position(&args, &["--setenv", "K", "V"]).is_some());
        assert!(position(&args, &["--setenv", "HOME", "/tmp"]).is_some());
        assert!(!args.contains(&"--share-net".to_string()));
        // Plain words run without a shell.
        let [dashes, program, arg] = &args[args.len() - 3..] else {
            panic!("{args:?}")
        };
        assert_eq!((dashes.as_str(), arg.as_str()), ("--", "hi"));
        assert!(program.ends_with("/echo"), "{program}");
    }

    #[test]
    fn nested_binds_come_after_their_parents() {
        let mut req = request();
        req.workdir = PathBuf::from("/srv/repo/.git/orch/wt");
        req.extra_ro = vec![
            PathBuf::from("/srv/repo/.git"),
            PathBuf::from("/tmp/wt/vendor/x/y/z"),
        ];
        let args = BwrapSandbox::new(SandboxOptions::default()).args(&req);
        let git = position(&args, &["--ro-bind", "/srv/repo/.git"]).unwrap();
        let wt = position(&args, &["--bind", "/srv/repo/.git/orch/wt"]).unwrap();
        let deep = position(&args, &["--ro-bind", "/tmp/wt/vendor/x/y/z"]).unwrap();
        assert!(git < wt && wt < deep);
    }

    #[test]
    fn masks_come_before_the_binds_inside_them() {
        let mut req = request();
        req.workdir = PathBuf::from("/srv/orch-data/worktrees/p/t");
        req.extra_ro = vec![PathBuf::from("/srv/repo/.git")];
        let hidden = [
            Hidden {
                path: PathBuf::from("/srv/orch-data"),
                is_dir: true,
            },
            Hidden {
                path: PathBuf::from("/srv/orch.toml"),
                is_dir: false,
            },
            // Inside a read-only bind: masked in it, after it.
            Hidden {
                path: PathBuf::from("/srv/repo/.git/secret"),
                is_dir: false,
            },
            // Under the private /tmp and outside every bind: invisible
            // already, no mask.
            Hidden {
                path: PathBuf::from("/tmp/cfg/.env"),
                is_dir: false,
            },
        ];
        let args = layered_mounts(&req, &hidden, || PathBuf::from("/mask"));
        let data = position(&args, &["--tmpfs", "/srv/orch-data"]).unwrap();
        let wt = position(&args, &["--bind", "/srv/orch-data/worktrees/p/t"]).unwrap();
        let git = position(&args, &["--ro-bind", "/srv/repo/.git", "/srv/repo/.git"]).unwrap();
        let secret = position(&args, &["--ro-bind", "/mask", "/srv/repo/.git/secret"]).unwrap();
        assert!(data < wt, "{args:?}");
        assert!(git < secret, "{args:?}");
        assert!(position(&args, &["--ro-bind", "/mask", "/srv/orch.toml"]).is_some());
        assert!(!args.iter().any(|a| a.contains("/tmp/cfg")), "{args:?}");
        // No hidden file, no mask file asked for.
        let plain = layered_mounts(&req, &hidden[..1], || panic!("not needed"));
        assert_eq!(plain.len(), 2 + 3 + 3);
    }

    #[test]
    fn a_hidden_path_shown_by_a_bind_under_tmp_is_masked() {
        let mut req = request();
        req.workdir = PathBuf::from("/tmp/t/wt");
        let hidden = [Hidden {
            path: PathBuf::from("/tmp/t/wt/.env"),
            is_dir: false,
        }];
        let args = layered_mounts(&req, &hidden, || PathBuf::from("/mask"));
        let wt = position(&args, &["--bind", "/tmp/t/wt"]).unwrap();
        let env = position(&args, &["--ro-bind", "/mask", "/tmp/t/wt/.env"]).unwrap();
        assert!(wt < env, "{args:?}");
    }

    #[test]
    fn drops_capabilities() {
        let args = BwrapSandbox::new(SandboxOptions::default()).args(&request());
        assert!(position(&args, &["--cap-drop", "ALL"]).is_some());
        assert!(position(&args, &["--unshare-all"]).is_some());
        assert!(position(&args, &["--die-with-parent"]).is_some());
    }

    fn output(exit_code: Option<i32>, killed_by: Option<Limit>) -> ProcessOutput {
        ProcessOutput {
            exit_code,
            signal: None,
            timed_out: killed_by == Some(Limit::Timeout),
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration: Duration::ZERO,
            killed_by,
        }
    }

    #[test]
    fn limit_hit_reads_the_counters_of_failed_commands() {
        let oom = limits::Outcome {
            oom_kills: 1,
            pids_refused: 3,
        };
        let pids = limits::Outcome {
            oom_kills: 0,
            pids_refused: 3,
        };
        let quiet = limits::Outcome::default();
        assert_eq!(
            limit_hit(&output(Some(137), None), oom),
            Some(Limit::Memory)
        );
        assert_eq!(limit_hit(&output(Some(2), None), pids), Some(Limit::Pids));
        assert_eq!(limit_hit(&output(Some(1), None), quiet), None);
        // Success means nothing stopped it; a timeout stays a timeout.
        assert_eq!(limit_hit(&output(Some(0), None), oom), None);
        assert_eq!(
            limit_hit(&output(None, Some(Limit::Timeout)), oom),
            Some(Limit::Timeout)
        );
    }

    /// A bwrap that logs each run to `log` and then behaves as `body` says
    /// (`$@` is its arguments).
    fn fake_bwrap(dir: &Path, body: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let log = dir.join("runs.log");
        let bin = dir.join("bwrap");
        let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\n{body}\n", log.display());
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        (bin, log)
    }

    fn runs(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn a_passed_check_runs_bwrap_once_per_process() {
        let Some(real) = find_executable("bwrap") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (bin, log) = fake_bwrap(dir.path(), &format!("exec '{}' \"$@\"", real.display()));
        let sandbox = BwrapSandbox::new(SandboxOptions::default()).with_binary(path_str(&bin));
        if sandbox.check().await.is_err() {
            return; // no working bubblewrap here; covered by tests/bwrap.rs
        }
        sandbox.check().await.unwrap();
        sandbox.clone().check().await.unwrap();
        // Only the hardened run: the namespace probe is for failures.
        let seen = runs(&log);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("--seccomp"), "{seen:?}");
        // Other options are another setup, checked again.
        let networked = BwrapSandbox::new(SandboxOptions {
            network: true,
            ..Default::default()
        })
        .with_binary(path_str(&bin));
        networked.check().await.unwrap();
        assert_eq!(runs(&log).len(), 2);
    }

    #[tokio::test]
    async fn a_failed_check_says_which_part_fails_and_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        // Namespaces work, the hardened setup does not.
        let (bin, log) = fake_bwrap(
            dir.path(),
            "case \"$1\" in --seccomp) echo 'no seccomp' >&2; exit 1;; esac; exit 0",
        );
        let sandbox = BwrapSandbox::new(SandboxOptions::default()).with_binary(path_str(&bin));
        let msg = sandbox.check().await.unwrap_err().to_string();
        assert!(msg.contains("hardened sandbox does not start"), "{msg}");
        assert!(msg.contains("no seccomp"), "{msg}");
        let seen = runs(&log);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[1].starts_with("--unshare-all --ro-bind / / true"),
            "{seen:?}"
        );
        sandbox.check().await.unwrap_err();
        assert_eq!(runs(&log).len(), 4);

        // Nothing works: the namespace fix is what the message gives.
        let dir = tempfile::tempdir().unwrap();
        let (bin, _) = fake_bwrap(dir.path(), "echo 'no userns' >&2; exit 1");
        let msg = BwrapSandbox::new(SandboxOptions::default())
            .with_binary(path_str(&bin))
            .check()
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot create namespaces"), "{msg}");
        assert!(msg.contains("no userns"), "{msg}");
    }

    #[test]
    fn network_is_opt_in() {
        let args = BwrapSandbox::new(SandboxOptions {
            network: true,
            ..Default::default()
        })
        .args(&request());
        assert!(args.contains(&"--share-net".to_string()));
    }
}
