//! Nothing outlives orch. Two mechanisms, so that a `kill -9` of orch (which
//! runs no cleanup code) still leaves nothing running:
//!
//! 1. **A parent-death signal.** Every child is spawned with
//!    `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it the moment orch
//!    dies. The kernel sends that signal when the *thread* that forked the
//!    child exits, not the process, so every spawn happens on one of a few
//!    dedicated threads that live as long as the process (a tokio worker or
//!    blocking thread may exit while its children still run). For bwrap the direct
//!    child is bwrap itself; its `--die-with-parent` and PID namespace take
//!    everything inside with it.
//! 2. **A guardian process.** The signal reaches only the direct child;
//!    its background children (`sleep 300 &` under the `none` sandbox, a
//!    git hook's helpers) and the per-command cgroups need someone alive to
//!    clean them up. orch starts one small `sh` guardian, in its own process
//!    group and deaf to terminal signals, and tells it over a socket which
//!    process groups and cgroup directories are live. The guardian does
//!    nothing until the socket closes, which the kernel does when orch exits
//!    however it exits; then it kills every group still listed, kills what
//!    is left in every listed cgroup, removes those cgroups, and exits.
//!    Entries are withdrawn as soon as orch cleaned up after them itself.
//!
//! Docker containers are not orch's children and are not covered: a
//! container left by a killed orch is found stale by its labels and removed
//! by the next run (see the docker backend).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// The guardian. `$1` is a label (`orch-reaper`), `$2` orch's pid, both only
/// so the process is recognisable in `ps`. Input lines: `+ID g PGID` (a
/// process group), `+ID c DIR` (a cgroup directory), `-ID` (withdrawn).
/// On end of input: kill the groups, then empty and remove the cgroups,
/// retrying for up to 5 s while killed processes exit.
const GUARDIAN_SCRIPT: &str = r#"set -f
trap '' INT HUP TERM QUIT PIPE USR1 USR2
nl='
'
live=''
while IFS= read -r line; do
  case $line in
    +*) live="$live${line#+}$nl" ;;
    -*)
      id=${line#-}
      rest=''
      IFS=$nl
      for e in $live; do
        [ "${e%% *}" = "$id" ] || rest="$rest$e$nl"
      done
      unset IFS
      live=$rest
      ;;
  esac
done
IFS=$nl
cgroups=''
for e in $live; do
  r=${e#* }
  v=${r#* }
  case $r in
    g\ *) kill -9 "-$v" 2>/dev/null ;;
    c\ *) cgroups="$cgroups$v$nl" ;;
  esac
done
n=0
while [ -n "$cgroups" ] && [ $n -lt 100 ]; do
  left=''
  for d in $cgroups; do
    [ -d "$d" ] || continue
    {
      if [ -e "$d/cgroup.kill" ]; then
        echo 1 > "$d/cgroup.kill"
      else
        while read -r p; do kill -9 "$p"; done < "$d/cgroup.procs"
      fi
    } 2>/dev/null
    rmdir "$d" 2>/dev/null || left="$left$d$nl"
  done
  cgroups=$left
  [ -n "$cgroups" ] && sleep 0.05
  n=$((n + 1))
done
exit 0
"#;

/// A registration with the guardian: while it lives, the guardian cleans
/// up after its process group or cgroup if orch dies. Dropping it
/// withdraws the registration (do that once orch cleaned up itself).
#[derive(Debug)]
#[must_use = "dropping a Watch withdraws it at once"]
pub struct Watch {
    /// 0 for a watch that was never registered (or was kept).
    id: u64,
}

impl Watch {
    /// Leaves the registration in place for the rest of orch's life: the
    /// guardian cleans up at orch's exit (for a cgroup orch failed to
    /// remove itself).
    pub fn keep(mut self) {
        self.id = 0;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.id != 0 {
            let mut g = lock();
            if g.live.remove(&self.id).is_some() {
                g.send(&format!("-{}\n", self.id));
            }
        }
    }
}

/// Asks the guardian to kill process group `pgid` if orch dies first.
pub fn watch_group(pgid: libc::pid_t) -> Watch {
    if pgid <= 1 {
        return Watch { id: 0 };
    }
    register('g', &pgid.to_string())
}

/// Asks the guardian to kill what is left in the cgroup directory `dir`
/// and remove it if orch dies before it removed it itself.
pub fn watch_cgroup(dir: &Path) -> Watch {
    match dir.to_str() {
        // A path the line protocol cannot carry is not watched; orch still
        // removes it itself, and the next start removes stale ones.
        Some(s) if dir.is_absolute() && !s.contains('\n') => register('c', s),
        _ => Watch { id: 0 },
    }
}

fn register(kind: char, value: &str) -> Watch {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let entry = format!("{id} {kind} {value}");
    let mut g = lock();
    g.live.insert(id, entry.clone());
    g.send(&format!("+{entry}\n"));
    Watch { id }
}

/// The guardian's pid, when one runs (for tests and diagnostics).
pub fn guardian_pid() -> Option<u32> {
    lock().child.as_ref().map(|c| c.id())
}

#[derive(Default)]
struct Guardian {
    /// orch's end of the socket; the guardian reads the other end.
    sock: Option<OwnedFd>,
    child: Option<std::process::Child>,
    /// Registrations in force, by id, as sent (`ID KIND VALUE`).
    live: BTreeMap<u64, String>,
    /// The guardian could not be started; warned once.
    broken: bool,
}

fn lock() -> std::sync::MutexGuard<'static, Guardian> {
    static GUARDIAN: OnceLock<Mutex<Guardian>> = OnceLock::new();
    // Each critical section is a map operation and a short write: a panic
    // inside cannot leave the map half-changed.
    GUARDIAN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Guardian {
    /// Sends one message; a guardian that is not running (yet, or any more)
    /// is started and given every live registration instead.
    fn send(&mut self, msg: &str) {
        if let Some(sock) = &self.sock {
            if send_all(sock, msg.as_bytes()).is_ok() {
                return;
            }
        }
        self.restart();
    }

    fn restart(&mut self) {
        self.sock = None;
        if let Some(mut old) = self.child.take() {
            // Gone already, or killed now: either way reaped, not a zombie.
            let _ = old.kill();
            let _ = old.wait();
        }
        if self.broken {
            return;
        }
        match spawn_guardian() {
            Ok((sock, child)) => {
                let replay: String = self.live.values().map(|e| format!("+{e}\n")).collect();
                if send_all(&sock, replay.as_bytes()).is_ok() {
                    self.sock = Some(sock);
                    self.child = Some(child);
                    return;
                }
                self.child = Some(child);
                tracing::warn!("the orch guardian process exited at once; background processes of sandboxed commands may outlive a killed orch");
                self.broken = true;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot start the orch guardian process (`sh`): {e}; background processes \
                     of commands may outlive a killed orch. Make `sh` available on PATH"
                );
                self.broken = true;
            }
        }
    }
}

/// Writes all of `data` to the socket without ever raising SIGPIPE.
fn send_all(sock: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: a valid descriptor and a live buffer of `data.len()` bytes.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n.unsigned_abs()..];
    }
    Ok(())
}

fn spawn_guardian() -> io::Result<(OwnedFd, std::process::Child)> {
    use std::os::unix::process::CommandExt;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child = std::process::Command::new("sh")
        .args(["-c", GUARDIAN_SCRIPT, "orch-reaper"])
        .arg(std::process::id().to_string())
        .current_dir("/")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own group: a Ctrl-C or a kill of orch's group spares it.
        .process_group(0)
        .spawn()?;
    Ok((ours, child))
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads children are forked from. A spawn holds its thread until the
/// child has exec'd, and a sandboxed child joins its cgroups first, which
/// waits on the kernel (milliseconds on cgroup v1); with one thread, 64
/// workers starting at once queued behind each other for most of a model
/// answer.
const SPAWNER_THREADS: usize = 4;

/// The threads every child is forked from (see the module docs). None when
/// none could be started; children are then forked where they are asked
/// for, without a parent-death signal.
fn spawner() -> Option<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = std::sync::Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..SPAWNER_THREADS {
                let rx = rx.clone();
                match std::thread::Builder::new()
                    .name(format!("orch-spawner-{i}"))
                    .spawn(move || serve_spawns(&rx))
                {
                    Ok(_) => started += 1,
                    Err(e) => tracing::warn!("cannot start a spawner thread: {e}"),
                }
            }
            if started == 0 {
                tracing::warn!("no spawner thread could start; children of a killed orch are then cleaned up by the guardian only");
                return None;
            }
            Some(tx)
        })
        .as_ref()
}

/// A spawner thread's loop: one job at a time, for the life of the process.
fn serve_spawns(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only to take a job, never while running one.
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking spawn fails that request (its reply is dropped),
        // never the thread spawns need.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Sets the parent-death signal in a forked child. Async-signal-safe: two
/// raw syscalls.
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // orch died between the fork and the prctl: the signal will never come.
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Spawns `cmd` from a spawner thread, with a parent-death signal when
/// `dies_with_orch`. If the caller stops waiting before the child exists,
/// the child's group is killed at once.
pub(crate) async fn spawn(
    mut cmd: tokio::process::Command,
    dies_with_orch: bool,
) -> io::Result<tokio::process::Child> {
    let (Some(spawner), Ok(handle)) = (spawner(), tokio::runtime::Handle::try_current()) else {
        return cmd.spawn();
    };
    let parent = std::process::id();
    if dies_with_orch {
        // SAFETY: die_with_parent makes only raw syscalls.
        unsafe {
            cmd.pre_exec(move || die_with_parent(parent));
        }
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The child is registered with the caller's runtime (its reaper).
        let _rt = handle.enter();
        if let Err(Ok(mut child)) = reply.send(cmd.spawn()) {
            if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: kill(2) on the group the child leads.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.start_kill();
        }
    });
    spawner
        .send(job)
        .map_err(|_| io::Error::other("orch's spawner threads are gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("orch's spawner thread dropped a spawn request"))?
}
