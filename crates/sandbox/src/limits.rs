//! Resource limits for bubblewrap commands. Each command gets its own
//! cgroup when the machine allows it — memory (swap included), PIDs and CPU,
//! enforced by the kernel for everything the command starts, and read back
//! afterwards to tell an OOM kill or a fork refused at the PID limit apart
//! from an ordinary failure. cgroup v2 is preferred; on hosts whose
//! controllers still sit in v1 hierarchies, v1 works the same way. Where
//! neither is writable (no root, no delegation) limits fall back to rlimits
//! with a warning: RLIMIT_DATA for memory, RLIMIT_NPROC for processes (not
//! enforced for root, and counted per user), nothing for CPU. Core dumps
//! are always off.

use crate::{Limits, SandboxError};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Name of the directory orch creates (under a cgroup it may write to) to
/// hold per-command cgroups on cgroup v2.
const V2_PARENT: &str = "orch-sandbox";
/// CPU quota period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Version {
    V1,
    V2,
}

impl Version {
    /// The file a freshly forked (so single-threaded) child writes `0`
    /// into to join a cgroup. On v1 that is `tasks`: moving one thread that
    /// is the caller itself skips the kernel's global threadgroup lock,
    /// whose write side waits out an RCU grace period (about 10 ms, during
    /// which every fork on the machine waits too); `cgroup.procs` takes it.
    /// v2 only accepts threads in threaded subtrees, so there it is
    /// `cgroup.procs`.
    fn join_file(self) -> &'static str {
        match self {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        }
    }
}

/// Where one controller's per-command cgroups are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub version: Version,
    pub base: PathBuf,
}

/// Which controllers this machine lets orch use, and why others are not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Support {
    pub memory: Option<Hierarchy>,
    pub pids: Option<Hierarchy>,
    pub cpu: Option<Hierarchy>,
    pub notes: Vec<String>,
}

impl Support {
    fn get(&self, ctrl: Ctrl) -> Option<&Hierarchy> {
        match ctrl {
            Ctrl::Memory => self.memory.as_ref(),
            Ctrl::Pids => self.pids.as_ref(),
            Ctrl::Cpu => self.cpu.as_ref(),
        }
    }

    fn set(&mut self, ctrl: Ctrl, h: Hierarchy) {
        match ctrl {
            Ctrl::Memory => self.memory = Some(h),
            Ctrl::Pids => self.pids = Some(h),
            Ctrl::Cpu => self.cpu = Some(h),
        }
    }

    /// One line for humans: how each limit is enforced.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for ctrl in Ctrl::ALL {
            let how = match self.get(ctrl) {
                Some(h) => format!(
                    "cgroup {} under {}",
                    if h.version == Version::V2 { "v2" } else { "v1" },
                    h.base.display()
                ),
                None => ctrl.fallback().to_string(),
            };
            parts.push(format!("{}: {how}", ctrl.name()));
        }
        let mut s = parts.join("; ");
        if !self.notes.is_empty() {
            s.push_str(&format!(" ({})", self.notes.join("; ")));
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctrl {
    Memory,
    Pids,
    Cpu,
}

impl Ctrl {
    const ALL: [Ctrl; 3] = [Ctrl::Memory, Ctrl::Pids, Ctrl::Cpu];

    fn name(self) -> &'static str {
        match self {
            Ctrl::Memory => "memory",
            Ctrl::Pids => "pids",
            Ctrl::Cpu => "cpu",
        }
    }

    fn fallback(self) -> &'static str {
        match self {
            Ctrl::Memory => "RLIMIT_DATA (allocations fail; no OOM report)",
            Ctrl::Pids => "RLIMIT_NPROC (per user; not enforced for root)",
            Ctrl::Cpu => "not enforced",
        }
    }
}

/// An rlimit set in the child before bwrap starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rlimit {
    Core(u64),
    Data(u64),
    Nproc(u64),
}

impl Rlimit {
    /// Applies the limit to the calling process. Async-signal-safe: one
    /// syscall on stack data.
    pub fn apply(self) -> std::io::Result<()> {
        let (resource, value) = match self {
            Rlimit::Core(v) => (libc::RLIMIT_CORE, v),
            Rlimit::Data(v) => (libc::RLIMIT_DATA, v),
            Rlimit::Nproc(v) => (libc::RLIMIT_NPROC, v),
        };
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass; no other effects.
        if unsafe { libc::setrlimit(resource, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The same limit, lowered to the current hard limit (raising a hard
    /// limit needs privileges we may lack).
    fn clamped(self) -> Self {
        let (resource, value) = match self {
            Rlimit::Core(v) => (libc::RLIMIT_CORE, v),
            Rlimit::Data(v) => (libc::RLIMIT_DATA, v),
            Rlimit::Nproc(v) => (libc::RLIMIT_NPROC, v),
        };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let hard = if unsafe { libc::getrlimit(resource, &mut cur) } == 0 {
            // rlim_t is narrower than u64 on some targets.
            #[allow(clippy::unnecessary_cast)]
            let max = cur.rlim_max as u64;
            max
        } else {
            u64::MAX
        };
        let v = value.min(hard);
        match self {
            Rlimit::Core(_) => Rlimit::Core(v),
            Rlimit::Data(_) => Rlimit::Data(v),
            Rlimit::Nproc(_) => Rlimit::Nproc(v),
        }
    }
}

/// How one command's limits are enforced.
#[derive(Debug)]
pub(crate) struct Plan {
    pub cgroup: Option<ExecCgroup>,
    pub rlimits: Vec<Rlimit>,
}

/// What the cgroup saw while the command ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Processes the kernel killed for exceeding the memory limit.
    pub oom_kills: u64,
    /// Forks refused at the PID limit.
    pub pids_refused: u64,
}

/// The cgroup support of this machine, probed once per process.
pub(crate) fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(detect)
}

/// The limits for one command: a fresh cgroup where possible, rlimits for
/// the rest. `use_cgroups = false` forces the rlimit fallback.
pub(crate) fn plan(
    limits: &Limits,
    use_cgroups: bool,
    idle: &IdleCgroups,
) -> Result<Plan, SandboxError> {
    static NONE: OnceLock<Support> = OnceLock::new();
    let support = if use_cgroups {
        support()
    } else {
        NONE.get_or_init(Support::default)
    };
    let mut rlimits = vec![Rlimit::Core(0)];
    let mut wanted: Vec<(Ctrl, &Hierarchy)> = Vec::new();

    if let Some(bytes) = limits.memory_bytes {
        match support.get(Ctrl::Memory) {
            Some(h) => wanted.push((Ctrl::Memory, h)),
            None => {
                warn_fallback(&MEMORY_WARNED, support, use_cgroups, Ctrl::Memory);
                rlimits.push(Rlimit::Data(bytes).clamped());
            }
        }
    }
    if let Some(pids) = limits.pids {
        match support.get(Ctrl::Pids) {
            Some(h) => wanted.push((Ctrl::Pids, h)),
            None => {
                warn_fallback(&PIDS_WARNED, support, use_cgroups, Ctrl::Pids);
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                // RLIMIT_NPROC counts every task of the user, so the limit
                // is what the user runs now plus the allowance.
                if uid != 0 {
                    let running = user_tasks(uid);
                    rlimits.push(Rlimit::Nproc(running.saturating_add(pids)).clamped());
                }
            }
        }
    }
    if limits.cpus.is_some() {
        match support.get(Ctrl::Cpu) {
            Some(h) => wanted.push((Ctrl::Cpu, h)),
            None => warn_fallback(&CPU_WARNED, support, use_cgroups, Ctrl::Cpu),
        }
    }
    let cgroup = if wanted.is_empty() {
        None
    } else {
        let bases: Vec<PathBuf> = wanted.iter().map(|(_, h)| h.base.clone()).collect();
        match idle.take(limits, &bases) {
            Some(cg) => Some(cg),
            None => Some(ExecCgroup::create(
                &wanted,
                limits,
                bases,
                idle.cleanups.clone(),
            )?),
        }
    };
    Ok(Plan { cgroup, rlimits })
}

/// Most idle cgroups kept for reuse (about one per worker slot).
const IDLE_MAX: usize = 64;

/// Cgroups whose command ended and left nothing inside, kept by a sandbox
/// for its next command: creating and removing a cgroup (two directories
/// on cgroup v1) costs more than the rest of a short sandboxed command.
/// They stay registered with orch's guardian while idle, so a killed orch
/// still leaves none behind; dropping (or draining) the set removes them.
#[derive(Debug, Default)]
pub(crate) struct IdleCgroups {
    idle: Mutex<Vec<ExecCgroup>>,
    /// Times the set was drained: a cgroup still settling at a drain is
    /// removed, not kept.
    drains: AtomicU64,
    /// Cgroups whose processes are still leaving, waited out in the
    /// background (see `recycle`).
    settling: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Cleanups of this sandbox's busy cgroups under way.
    cleanups: Arc<Cleanups>,
}

impl IdleCgroups {
    /// An idle cgroup made for `limits` under the same hierarchies, if any.
    fn take(&self, limits: &Limits, bases: &[PathBuf]) -> Option<ExecCgroup> {
        let mut idle = self.idle.lock().ok()?;
        let i = idle
            .iter()
            .position(|c| c.limits == *limits && c.bases == bases)?;
        Some(idle.swap_remove(i))
    }

    /// Done with `plan`: its cgroup is kept for reuse once nothing is left
    /// in it (with its counters as the next command's zero), else emptied
    /// and removed as a dropped plan's is. Processes of a finished command
    /// (killed with its PID namespace) may take a moment to leave: they get
    /// up to `SETTLE`, waited out in the background so the command's caller
    /// does not wait for them.
    pub(crate) fn recycle(self: &std::sync::Arc<Self>, plan: Plan) {
        let Some(cg) = plan.cgroup else {
            return;
        };
        let drains = self.drains.load(Ordering::SeqCst);
        if cg.is_empty() {
            self.keep(cg, drains);
            return;
        }
        let idle = std::sync::Arc::clone(self);
        let settling = tokio::spawn(async move {
            const SETTLE: Duration = Duration::from_millis(200);
            let deadline = std::time::Instant::now() + SETTLE;
            while !cg.is_empty() {
                if std::time::Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            idle.keep(cg, drains);
        });
        if let Ok(mut s) = self.settling.lock() {
            s.retain(|h| !h.is_finished());
            s.push(settling);
        }
    }

    /// Keeps an empty cgroup for reuse, unless the set was drained since
    /// its command ended (`drains` then) or is full: then it is removed.
    fn keep(&self, mut cg: ExecCgroup, drains: u64) {
        cg.baseline = cg.counters();
        if let Ok(mut idle) = self.idle.lock() {
            if self.drains.load(Ordering::SeqCst) == drains && idle.len() < IDLE_MAX {
                idle.push(cg);
            }
        }
    }

    /// Removes every idle cgroup (the run is over), waiting for those
    /// still settling, which are removed instead of kept, and for busy ones
    /// being emptied (up to `CLEANUP_WAIT`).
    pub(crate) async fn drain(&self) {
        self.drains.fetch_add(1, Ordering::SeqCst);
        let settling = self
            .settling
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for handle in settling {
            let _ = handle.await;
        }
        let drained = self.idle.lock().map(|mut i| std::mem::take(&mut *i));
        drop(drained);
        let cleanups = self.cleanups.clone();
        let _ = tokio::task::spawn_blocking(move || cleanups.wait(CLEANUP_WAIT)).await;
    }
}

static MEMORY_WARNED: AtomicBool = AtomicBool::new(false);
static PIDS_WARNED: AtomicBool = AtomicBool::new(false);
static CPU_WARNED: AtomicBool = AtomicBool::new(false);

fn warn_fallback(flag: &AtomicBool, support: &Support, use_cgroups: bool, ctrl: Ctrl) {
    if flag.swap(true, Ordering::Relaxed) || !use_cgroups {
        return;
    }
    tracing::warn!(
        "bubblewrap sandbox: no writable cgroup {} controller ({}); the {} limit falls back \
         to {}. Run orch as root or in a cgroup with delegated controllers (e.g. \
         `systemd-run --user -p Delegate=yes …`) for exact limits",
        ctrl.name(),
        if support.notes.is_empty() {
            "none found".to_string()
        } else {
            support.notes.join("; ")
        },
        ctrl.name(),
        ctrl.fallback()
    );
}

/// Tasks (threads) owned by `uid`, which is what RLIMIT_NPROC counts.
fn user_tasks(uid: libc::uid_t) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            total += field("Threads:").unwrap_or(1);
        }
    }
    total
}

/// One command's cgroup (one directory per hierarchy in use). Dropping it
/// kills whatever is still inside and removes the directories.
#[derive(Debug)]
pub(crate) struct ExecCgroup {
    /// Directories created.
    dirs: Vec<CgroupDir>,
    /// What it was made for (see `reuse`).
    limits: Limits,
    bases: Vec<PathBuf>,
    /// The counters when its current command started: earlier commands'
    /// kills are not this one's.
    baseline: Outcome,
    memory: Option<(Version, PathBuf)>,
    pids: Option<(Version, PathBuf)>,
    /// The join file (see [`Version::join_file`]) of every directory,
    /// ready for the child to write.
    procs_files: Vec<CString>,
    /// Its sandbox's count of cleanups under way (see `Drop`).
    cleanups: Arc<Cleanups>,
}

impl ExecCgroup {
    fn create(
        wanted: &[(Ctrl, &Hierarchy)],
        limits: &Limits,
        bases: Vec<PathBuf>,
        cleanups: Arc<Cleanups>,
    ) -> Result<Self, SandboxError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "orch-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = ExecCgroup {
            dirs: Vec::new(),
            limits: limits.clone(),
            bases,
            baseline: Outcome::default(),
            memory: None,
            pids: None,
            procs_files: Vec::new(),
            cleanups,
        };
        for &(ctrl, h) in wanted {
            let dir = h.base.join(&name);
            if !cg.dirs.iter().any(|d| d.path == dir) {
                // Watched before it exists, so no moment leaves it unwatched.
                let watch = orch_process::watch_cgroup(&dir);
                std::fs::create_dir(&dir).map_err(|e| setup_error(&dir, &e))?;
                cg.dirs.push(CgroupDir {
                    version: h.version,
                    path: dir.clone(),
                    watch,
                });
                let procs = dir.join(h.version.join_file());
                let c = CString::new(procs.as_os_str().as_encoded_bytes()).map_err(|_| {
                    SandboxError::Backend(format!("cgroup path {} contains NUL", procs.display()))
                })?;
                cg.procs_files.push(c);
            }
            let files = limit_files(ctrl, h.version, limits, &dir);
            for (file, value, required) in files {
                match std::fs::write(&file, &value) {
                    Ok(()) => {}
                    // Swap accounting is optional in the kernel.
                    Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(setup_error(&file, &e)),
                }
            }
            match ctrl {
                Ctrl::Memory => cg.memory = Some((h.version, dir)),
                Ctrl::Pids => cg.pids = Some((h.version, dir)),
                Ctrl::Cpu => {}
            }
        }
        Ok(cg)
    }

    /// The files the child writes itself into.
    pub fn procs_files(&self) -> Vec<CString> {
        self.procs_files.clone()
    }

    /// The kills and refusals of the command that ran in it last.
    pub fn outcome(&self) -> Outcome {
        let now = self.counters();
        Outcome {
            oom_kills: now.oom_kills.saturating_sub(self.baseline.oom_kills),
            pids_refused: now.pids_refused.saturating_sub(self.baseline.pids_refused),
        }
    }

    /// True when no process is left in any of its directories.
    fn is_empty(&self) -> bool {
        self.dirs.iter().all(|d| {
            std::fs::read_to_string(d.path.join("cgroup.procs"))
                .map(|p| p.trim().is_empty())
                .unwrap_or(false)
        })
    }

    /// The kill and refusal counters since the cgroup was made.
    fn counters(&self) -> Outcome {
        let counter = |path: PathBuf, key: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| event_count(&s, key))
                .unwrap_or(0)
        };
        let oom_kills = match &self.memory {
            Some((Version::V2, d)) => counter(d.join("memory.events"), "oom_kill"),
            Some((Version::V1, d)) => counter(d.join("memory.oom_control"), "oom_kill"),
            None => 0,
        };
        let pids_refused = match &self.pids {
            Some((_, d)) => counter(d.join("pids.events"), "max"),
            None => 0,
        };
        Outcome {
            oom_kills,
            pids_refused,
        }
    }
}

impl Drop for ExecCgroup {
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        if dirs.is_empty() {
            return;
        }
        let left = remove_cgroups(dirs);
        if left.is_empty() {
            return;
        }
        // Killed processes take a moment to leave; retry off the caller's
        // thread rather than block an async runtime.
        let cleanup = self.cleanups.start();
        let spawned = std::thread::Builder::new()
            .name("orch-cgroup-cleanup".into())
            .spawn(move || {
                let _cleanup = cleanup;
                let mut left = left;
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(20));
                    left = remove_cgroups(left);
                    if left.is_empty() {
                        return;
                    }
                }
                for d in left {
                    tracing::warn!(
                        "could not remove cgroup {} (still busy); orch's guardian removes it \
                         when orch exits",
                        d.path.display()
                    );
                    d.watch.keep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start the cgroup cleanup thread: {e}");
        }
    }
}

/// Cleanups of busy cgroups still under way (see `ExecCgroup`'s drop), for
/// one sandbox: a run's end waits for its own killed processes, not for
/// another project's under `orch serve`.
#[derive(Debug, Default)]
pub(crate) struct Cleanups {
    under_way: Mutex<usize>,
    /// Signalled whenever one of them ends.
    ended: Condvar,
}

/// How long a drain waits for busy cgroups to empty: a little longer than
/// a cleanup tries before it leaves the cgroup to the guardian.
const CLEANUP_WAIT: Duration = Duration::from_secs(3);

/// One cleanup under way, counted by its sandbox's [`Cleanups`] while it
/// lives.
struct Cleanup(Arc<Cleanups>);

impl Cleanups {
    fn start(self: &Arc<Self>) -> Cleanup {
        if let Ok(mut n) = self.under_way.lock() {
            *n += 1;
        }
        Cleanup(self.clone())
    }

    /// Waits up to `max` until no cleanup is under way: a run that ends
    /// reports its end only once the processes it killed are gone, not
    /// while they are still on their way out. True when none is left.
    fn wait(&self, max: Duration) -> bool {
        let Ok(n) = self.under_way.lock() else {
            return false;
        };
        self.ended
            .wait_timeout_while(n, max, |n| *n > 0)
            .map(|(n, _)| *n == 0)
            .unwrap_or(false)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.under_way.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.ended.notify_all();
    }
}

/// One directory of a command's cgroup, registered with orch's guardian
/// (`orch_process::reaper`) from creation until it is removed: if orch is
/// killed before it removes the directory itself, the guardian kills what
/// is inside and removes it. Cgroups left anyway (the guardian was killed
/// too) are removed by the next orch start (`remove_stale`).
#[derive(Debug)]
struct CgroupDir {
    version: Version,
    path: PathBuf,
    watch: orch_process::Watch,
}

/// Kills what is left in each cgroup and removes it; returns the ones that
/// are still busy. The removed ones are withdrawn from the guardian.
fn remove_cgroups(dirs: Vec<CgroupDir>) -> Vec<CgroupDir> {
    let mut left = Vec::new();
    for d in dirs {
        kill_all(d.version, &d.path);
        match std::fs::remove_dir(&d.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => left.push(d),
        }
    }
    left
}

fn kill_all(version: Version, dir: &Path) {
    if version == Version::V2 && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs
        .lines()
        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn setup_error(path: &Path, e: &std::io::Error) -> SandboxError {
    SandboxError::Backend(format!(
        "cannot set up the sandbox cgroup ({}: {e}); check that /sys/fs/cgroup is writable \
         and not full, or give the project no memory/pids/cpu limits",
        path.display()
    ))
}

/// `(file, value, required)` writes that apply `ctrl`'s limit in `dir`.
fn limit_files(
    ctrl: Ctrl,
    version: Version,
    limits: &Limits,
    dir: &Path,
) -> Vec<(PathBuf, String, bool)> {
    let f = |name: &str| dir.join(name);
    match (ctrl, version) {
        (Ctrl::Memory, v) => {
            let Some(bytes) = limits.memory_bytes else {
                return Vec::new();
            };
            if v == Version::V2 {
                vec![
                    (f("memory.max"), bytes.to_string(), true),
                    (f("memory.swap.max"), "0".into(), false),
                ]
            } else {
                // memsw (memory + swap) must not be below the memory limit:
                // set memory first.
                vec![
                    (f("memory.limit_in_bytes"), bytes.to_string(), true),
                    (f("memory.memsw.limit_in_bytes"), bytes.to_string(), false),
                ]
            }
        }
        (Ctrl::Pids, _) => limits
            .pids
            .map(|n| vec![(f("pids.max"), n.to_string(), true)])
            .unwrap_or_default(),
        (Ctrl::Cpu, v) => {
            let Some(cpus) = limits.cpus else {
                return Vec::new();
            };
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            if v == Version::V2 {
                vec![(f("cpu.max"), format!("{quota} {CPU_PERIOD_US}"), true)]
            } else {
                vec![
                    (f("cpu.cfs_period_us"), CPU_PERIOD_US.to_string(), true),
                    (f("cpu.cfs_quota_us"), quota.to_string(), true),
                ]
            }
        }
    }
}

/// `key N` in a flat-keyed cgroup file (memory.events, pids.events,
/// memory.oom_control).
fn event_count(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next())
            .flatten()
            .and_then(|v| v.parse().ok())
    })
}

/// One line of /proc/self/mountinfo, as far as cgroups care.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let _source = right.next();
            let super_opts = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                fstype,
                super_opts,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(hierarchy id, controllers, path)` from /proc/self/cgroup.
fn parse_proc_cgroup(text: &str) -> Vec<(String, Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.to_string();
            let ctrls = it
                .next()?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            Some((id, ctrls, it.next()?.to_string()))
        })
        .collect()
}

/// The host directory of cgroup `path` in a hierarchy mounted as `m`.
fn host_dir(m: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if m.root == "/" {
        path.strip_prefix('/')?
    } else {
        let rest = path.strip_prefix(m.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if rel.is_empty() {
        m.mount_point.clone()
    } else {
        m.mount_point.join(rel)
    })
}

/// orch's own cgroup v2 directory.
fn v2_own_dir(mounts: &[Mount], own: &[(String, Vec<String>, String)]) -> Option<PathBuf> {
    let path = own
        .iter()
        .find(|(id, ctrls, _)| id == "0" && ctrls.is_empty())
        .map(|(_, _, p)| p)?;
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| host_dir(m, path))
}

/// orch's own cgroup v1 directory for `ctrl`.
fn v1_own_dir(
    mounts: &[Mount],
    own: &[(String, Vec<String>, String)],
    ctrl: &str,
) -> Option<PathBuf> {
    let path = own
        .iter()
        .find(|(_, ctrls, _)| ctrls.iter().any(|c| c == ctrl))
        .map(|(_, _, p)| p)?;
    mounts
        .iter()
        .filter(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == ctrl))
        .find_map(|m| host_dir(m, path))
}

fn detect() -> Support {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    let own = parse_proc_cgroup(&own);
    let mut s = Support::default();

    if let Some(own_dir) = v2_own_dir(&mounts, &own) {
        let root = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .find(|m| own_dir.starts_with(&m.mount_point))
            .map(|m| m.mount_point.clone());
        match root.and_then(|root| v2_base(&own_dir, &root, &mut s.notes)) {
            Some((base, ctrls)) => {
                for ctrl in Ctrl::ALL {
                    if ctrls.contains(&ctrl) {
                        s.set(
                            ctrl,
                            Hierarchy {
                                version: Version::V2,
                                base: base.clone(),
                            },
                        );
                    }
                }
            }
            None => s.notes.push(format!(
                "cgroup v2 at {}: no writable cgroup with memory/pids controllers",
                own_dir.display()
            )),
        }
    }
    for ctrl in Ctrl::ALL {
        if s.get(ctrl).is_some() {
            continue;
        }
        let Some(dir) = v1_own_dir(&mounts, &own, ctrl.name()) else {
            continue;
        };
        match probe(&dir, Version::V1) {
            Ok(()) => s.set(
                ctrl,
                Hierarchy {
                    version: Version::V1,
                    base: dir,
                },
            ),
            Err(e) => s.notes.push(format!("cgroup v1 {}: {e}", ctrl.name())),
        }
    }
    let mut bases: Vec<(Version, PathBuf)> = Vec::new();
    for h in [&s.memory, &s.pids, &s.cpu].into_iter().flatten() {
        if !bases.iter().any(|(_, b)| b == &h.base) {
            bases.push((h.version, h.base.clone()));
        }
    }
    for (version, base) in bases {
        remove_stale(version, &base);
    }
    tracing::debug!("sandbox limits: {}", s.describe());
    s
}

/// Finds where per-command v2 cgroups can live: an `orch-sandbox` child of
/// orch's own cgroup or of the nearest ancestor that can hold one with the
/// memory and pids controllers enabled (a cgroup with processes of its own
/// cannot hand controllers to children). Returns it and its controllers.
fn v2_base(own: &Path, root: &Path, notes: &mut Vec<String>) -> Option<(PathBuf, Vec<Ctrl>)> {
    let mut at = Some(own);
    while let Some(dir) = at {
        if !dir.starts_with(root) {
            break;
        }
        match try_v2_base(dir) {
            Ok(found) => return Some(found),
            Err(e) => notes.push(format!("cgroup v2 {}: {e}", dir.display())),
        }
        at = dir.parent();
    }
    None
}

fn try_v2_base(parent: &Path) -> Result<(PathBuf, Vec<Ctrl>), String> {
    let base = parent.join(V2_PARENT);
    let existed = base.is_dir();
    if !existed {
        std::fs::create_dir(&base).map_err(|e| format!("cannot create {V2_PARENT}: {e}"))?;
    }
    let result = (|| {
        let mut available = read_words(&base.join("cgroup.controllers"));
        // Hand the controllers down from the parent when it has not yet.
        let missing: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| !available.iter().any(|a| a == c))
            .collect();
        if !missing.is_empty() {
            let parent_has = read_words(&parent.join("cgroup.controllers"));
            let enable: Vec<String> = missing
                .iter()
                .filter(|c| parent_has.iter().any(|a| a == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                // Fails with EBUSY when the parent holds processes.
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), enable.join(" "));
            }
            available = read_words(&base.join("cgroup.controllers"));
        }
        let ctrls: Vec<Ctrl> = Ctrl::ALL
            .into_iter()
            .filter(|c| available.iter().any(|a| a == c.name()))
            .collect();
        if !ctrls.contains(&Ctrl::Memory) || !ctrls.contains(&Ctrl::Pids) {
            return Err("memory and pids controllers are not delegated here".to_string());
        }
        let enable: Vec<String> = ctrls.iter().map(|c| format!("+{}", c.name())).collect();
        std::fs::write(base.join("cgroup.subtree_control"), enable.join(" "))
            .map_err(|e| format!("cannot enable controllers in {V2_PARENT}: {e}"))?;
        probe(&base, Version::V2)?;
        Ok((base.clone(), ctrls))
    })();
    if result.is_err() && !existed {
        let _ = std::fs::remove_dir(&base);
    }
    result
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Creates a child cgroup under `base`, moves a short-lived process into it
/// the way commands will be moved, and removes it again.
fn probe(base: &Path, version: Version) -> Result<(), String> {
    let dir = base.join(format!("orch-probe-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create a cgroup: {e}"))?;
    let result = CString::new(dir.join(version.join_file()).as_os_str().as_encoded_bytes())
        .map_err(|_| "cgroup path contains NUL".to_string())
        .and_then(|procs| join_in_child(&procs));
    for _ in 0..50 {
        kill_all(version, &dir);
        if std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

/// Forks a child that joins the cgroup of `procs` (the very write a
/// command's child makes before it becomes bwrap) and exits, and waits for
/// it. No program is started: the join is all the probe needs to see.
fn join_in_child(procs: &CString) -> Result<(), String> {
    // SAFETY: the child only makes async-signal-safe calls (join_cgroup's
    // open, write and close on data prepared before the fork, then _exit),
    // as a pre-exec hook would.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot start a process to move into a cgroup: {e}"));
    }
    if pid == 0 {
        let code = match join_cgroup(procs) {
            Ok(()) => 0,
            // The exit status carries the reason (errno values fit a byte).
            Err(e) => e
                .raw_os_error()
                .filter(|n| (1..=255).contains(n))
                .unwrap_or(255),
        };
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waits for the child forked above, writing its status.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("cannot wait for the cgroup probe process: {e}"));
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, code) => Err(format!(
            "cannot move a process into a cgroup: {}",
            std::io::Error::from_raw_os_error(code)
        )),
        _ => Err(format!("probe process failed: wait status {status}")),
    }
}

/// Moves the calling process (single-threaded: a forked child) into the
/// cgroup whose join file is `procs`. Async-signal-safe: open, write,
/// close on prepared data.
pub(crate) fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path and a static buffer; the descriptor is
    // closed before returning.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Removes per-command cgroups left by orch processes that no longer run
/// (killed before they could clean up).
fn remove_stale(version: Version, base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("orch-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        kill_all(version, &dir);
        if std::fs::remove_dir(&dir).is_ok() {
            tracing::debug!("removed stale sandbox cgroup {}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_drain_waits_for_cleanups_under_way_and_no_longer() {
        let cleanups = Arc::new(Cleanups::default());
        let held = cleanups.start();
        assert!(
            !cleanups.wait(Duration::from_millis(50)),
            "one is under way"
        );
        let ending = cleanups.start();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(ending);
        });
        drop(held);
        let started = std::time::Instant::now();
        assert!(cleanups.wait(Duration::from_secs(5)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        t.join().unwrap();
    }

    #[test]
    fn a_sandbox_waits_only_for_its_own_cleanups() {
        let (mine, other) = (Arc::new(Cleanups::default()), Arc::new(Cleanups::default()));
        let _busy = other.start();
        let started = std::time::Instant::now();
        assert!(mine.wait(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!other.wait(Duration::from_millis(10)));
    }

    use super::*;

    const MOUNTINFO_HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:32 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
";
    const CGROUP_HYBRID: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu,cpuacct:/
0::/
";

    #[test]
    fn finds_v1_directories_per_controller() {
        let m = parse_mountinfo(MOUNTINFO_HYBRID);
        let own = parse_proc_cgroup(CGROUP_HYBRID);
        assert_eq!(
            v1_own_dir(&m, &own, "memory").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(
            v1_own_dir(&m, &own, "pids").unwrap(),
            PathBuf::from("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            v1_own_dir(&m, &own, "cpu").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(v1_own_dir(&m, &own, "blkio").is_none());
        assert_eq!(
            v2_own_dir(&m, &own).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn finds_the_v2_directory_under_a_mount_root() {
        // A container without a cgroup namespace sees its own subtree
        // mounted, with the mount root naming the subtree.
        let m = parse_mountinfo(
            "40 30 0:29 /docker/ab12 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw,nsdelegate\n",
        );
        let own = parse_proc_cgroup("0::/docker/ab12/init.scope\n");
        assert_eq!(
            v2_own_dir(&m, &own).unwrap(),
            PathBuf::from("/sys/fs/cgroup/init.scope")
        );
        let elsewhere = parse_proc_cgroup("0::/docker/ab123\n");
        assert!(v2_own_dir(&m, &elsewhere).is_none());
        assert!(v1_own_dir(&m, &own, "memory").is_none());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        let m = parse_mountinfo("1 2 0:1 / /mnt/with\\040space rw - cgroup2 none rw\n");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn reads_event_counters() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(event_count(v2, "oom_kill"), Some(2));
        assert_eq!(event_count(v2, "max"), Some(12));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(event_count(v1, "oom_kill"), Some(1));
        assert_eq!(event_count("max 0\n", "max"), Some(0));
        assert_eq!(event_count("", "max"), None);
    }

    #[test]
    fn limit_files_per_version() {
        let limits = Limits {
            memory_bytes: Some(1 << 20),
            pids: Some(64),
            cpus: Some(1.5),
        };
        let d = Path::new("/cg");
        let names = |ctrl, v| {
            limit_files(ctrl, v, &limits, d)
                .into_iter()
                .map(|(f, val, _)| format!("{}={val}", f.file_name().unwrap().to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Ctrl::Memory, Version::V2),
            ["memory.max=1048576", "memory.swap.max=0"]
        );
        assert_eq!(
            names(Ctrl::Memory, Version::V1),
            [
                "memory.limit_in_bytes=1048576",
                "memory.memsw.limit_in_bytes=1048576"
            ]
        );
        assert_eq!(names(Ctrl::Pids, Version::V1), ["pids.max=64"]);
        assert_eq!(names(Ctrl::Cpu, Version::V2), ["cpu.max=150000 100000"]);
        assert_eq!(
            names(Ctrl::Cpu, Version::V1),
            ["cpu.cfs_period_us=100000", "cpu.cfs_quota_us=150000"]
        );
        assert!(limit_files(Ctrl::Pids, Version::V2, &Limits::default(), d).is_empty());
    }

    #[test]
    fn no_limits_means_no_cgroup_and_no_core_dumps() {
        let plan = plan(&Limits::default(), true, &IdleCgroups::default()).unwrap();
        assert!(plan.cgroup.is_none());
        assert_eq!(plan.rlimits, [Rlimit::Core(0)]);
    }

    #[test]
    fn rlimit_fallback_without_cgroups() {
        let limits = Limits {
            memory_bytes: Some(256 << 20),
            pids: Some(64),
            cpus: Some(1.0),
        };
        let plan = plan(&limits, false, &IdleCgroups::default()).unwrap();
        assert!(plan.cgroup.is_none());
        assert!(plan.rlimits.contains(&Rlimit::Data(256 << 20)));
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        let nproc = plan
            .rlimits
            .iter()
            .any(|r| matches!(r, Rlimit::Nproc(n) if *n >= 64));
        assert_eq!(nproc, !root, "{:?}", plan.rlimits);
    }

    #[test]
    fn the_probe_joins_a_cgroup_without_starting_a_program() {
        let err = join_in_child(&CString::new("/nonexistent/cgroup.procs").unwrap()).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        let support = support();
        let Some(h) = support.memory.as_ref().or(support.pids.as_ref()) else {
            return; // no writable cgroup here
        };
        probe(&h.base, h.version).unwrap();
        let probe_dir = h.base.join(format!("orch-probe-{}", std::process::id()));
        assert!(!probe_dir.exists());
    }

    #[test]
    fn counts_this_users_tasks() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        // At least this test process and its threads.
        assert!(user_tasks(uid) >= 1);
    }

    #[test]
    fn describe_names_every_limit() {
        let s = Support {
            memory: Some(Hierarchy {
                version: Version::V1,
                base: PathBuf::from("/sys/fs/cgroup/memory"),
            }),
            notes: vec!["cgroup v2: nope".into()],
            ..Default::default()
        };
        let d = s.describe();
        assert!(
            d.contains("memory: cgroup v1 under /sys/fs/cgroup/memory"),
            "{d}"
        );
        assert!(d.contains("pids: RLIMIT_NPROC"), "{d}");
        assert!(d.contains("cpu: not enforced"), "{d}");
        assert!(d.contains("nope"), "{d}");
    }
}
