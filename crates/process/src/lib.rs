//! The one process runner. Everything orch executes (git, sandboxed commands,
//! verification steps) goes through `run`: it puts the child in its own
//! process group, enforces the timeout by killing the whole group, caps the
//! output it keeps (with a visible marker), and kills the group if the caller
//! stops waiting (its future dropped). Children never outlive orch either,
//! even a `kill -9` of it: see [`reaper`] (a parent-death signal on every
//! child, and a guardian process that kills what is left).

pub mod reaper;

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

pub use reaper::{watch_cgroup, Watch};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Start from an empty environment (then add `env`).
    pub env_clear: bool,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Kill the whole process group after this long.
    pub timeout: Option<Duration>,
    /// Bytes of stdout and of stderr kept (each). Output beyond it is cut
    /// from the middle and replaced by a marker naming how much was cut.
    pub output_limit: usize,
    /// Runs in the child between fork and exec (after it joined its new
    /// process group): for sandboxes that move it into a cgroup, set
    /// rlimits or hand it a file descriptor.
    pub pre_exec: Option<PreExec>,
    /// Let the command run to its end if orch dies, instead of killing it
    /// with orch. For short commands that must not be cut off half-way:
    /// a git ref update killed mid-write leaves a `.lock` file that blocks
    /// every later git command on that ref, the user's own included.
    pub finish_if_orch_dies: bool,
}

/// Code run in the forked child right before exec. Built only through the
/// unsafe [`PreExec::new`], whose contract the closure must keep.
#[derive(Clone)]
pub struct PreExec(Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl PreExec {
    /// Wraps `hook` to run in the child before exec; an error fails the
    /// spawn with that error.
    ///
    /// # Safety
    /// The hook runs in the child of a fork of a multi-threaded process: it
    /// may only make async-signal-safe calls (raw syscalls on data prepared
    /// beforehand; no allocation, no locks), exactly as for
    /// [`std::os::unix::process::CommandExt::pre_exec`].
    pub unsafe fn new(hook: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) -> Self {
        PreExec(Arc::new(hook))
    }
}

impl std::fmt::Debug for PreExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreExec(..)")
    }
}

impl ProcessSpec {
    pub fn new(program: impl Into<String>) -> Self {
        ProcessSpec {
            program: program.into(),
            output_limit: 1024 * 1024,
            ..Default::default()
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }
    pub fn pre_exec(mut self, hook: PreExec) -> Self {
        self.pre_exec = Some(hook);
        self
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOutput {
    /// Exit code; None when killed by a signal.
    pub exit_code: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// True when either stream was cut.
    pub truncated: bool,
    pub duration: Duration,
    /// Which hard limit stopped the process, when one did. Set by the
    /// runner for timeouts and by sandboxes for their resource limits.
    pub killed_by: Option<Limit>,
}

/// A hard limit that can stop a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Timeout,
    Memory,
    Pids,
    Cpu,
    FileSize,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Timeout => "timeout",
            Limit::Memory => "memory limit",
            Limit::Pids => "process limit",
            Limit::Cpu => "cpu time limit",
            Limit::FileSize => "file size limit",
        }
    }
}

impl ProcessOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
    /// stdout followed by stderr, for humans and models.
    pub fn combined(&self) -> String {
        if self.stderr.is_empty() {
            return self.stdout.clone();
        }
        if self.stdout.is_empty() {
            return self.stderr.clone();
        }
        let mut s = String::with_capacity(self.stdout.len() + self.stderr.len() + 16);
        s.push_str(&self.stdout);
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("--- stderr ---\n");
        s.push_str(&self.stderr);
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("io error while running `{program}`: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// How long pipes are still read after the child exited and its group was
/// killed. Only a process that escaped the group (setsid) can hold them open
/// longer, and we do not wait for it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Read size for the output pipes.
const CHUNK: usize = 64 * 1024;

/// Kills the child's process group when dropped while armed, so a cancelled
/// `run` (its future dropped) leaves nothing running.
struct GroupGuard {
    pgid: Option<libc::pid_t>,
    armed: bool,
    /// The guardian kills the group if orch dies while it runs; withdrawn
    /// (dropped) only after `drop` killed the group.
    _watch: Option<Watch>,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative
            // pid addresses the process group we created with process_group(0).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// Keeps at most `limit` bytes of a stream (bytes pushed in chunks as they
/// arrive): the first half as it comes and a rolling window of the last
/// half, counting everything in between. [`run`] uses one per output pipe;
/// sandboxes that stream output another way (Docker exec) use it too, so
/// every captured output is cut the same way, with the same marker.
///
/// Memory stays at `limit` bytes however much is pushed.
#[derive(Debug)]
pub struct CappedBuffer {
    head: Vec<u8>,
    head_cap: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    total: u64,
}

impl CappedBuffer {
    /// A buffer keeping `limit` bytes: `limit / 2` from the start and the
    /// rest from the end.
    pub fn new(limit: usize) -> Self {
        let head_cap = limit / 2;
        let tail_cap = limit - head_cap;
        CappedBuffer {
            // Grow as needed: most commands print far less than the limit.
            head: Vec::new(),
            head_cap,
            tail: VecDeque::new(),
            tail_cap,
            total: 0,
        }
    }

    /// Appends the next bytes of the stream. Chunks may split UTF-8
    /// characters anywhere; [`CappedBuffer::finish`] repairs the edges.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.is_empty() || self.tail_cap == 0 {
            return;
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// The kept text (lossy UTF-8) and whether anything was cut. When cut,
    /// the head and tail are joined by
    /// `\n[… orch cut N bytes of output …]\n`, with both edges moved to
    /// character boundaries (the bytes dropped doing so count in N).
    pub fn finish(mut self) -> (String, bool) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let mut cut = self.total - kept;
        let tail = self.tail.make_contiguous();
        if cut == 0 {
            let mut all = self.head;
            all.extend_from_slice(tail);
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
        // Cut on character boundaries so the edges do not turn into U+FFFD.
        let head_trim = incomplete_utf8_suffix(&self.head);
        let head = &self.head[..self.head.len() - head_trim];
        let tail_trim = tail
            .iter()
            .take(3)
            .take_while(|b| is_continuation(**b))
            .count();
        let tail = &tail[tail_trim..];
        cut += (head_trim + tail_trim) as u64;
        let mut s = String::from_utf8_lossy(head).into_owned();
        s.push_str(&cut_marker(cut));
        s.push_str(&String::from_utf8_lossy(tail));
        (s, true)
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Number of trailing bytes of `b` that start a UTF-8 character without
/// finishing it.
fn incomplete_utf8_suffix(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(4) {
        let byte = b[n - back];
        if is_continuation(byte) {
            continue;
        }
        let need = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

fn cut_marker(cut: u64) -> String {
    format!("\n[… orch cut {cut} bytes of output …]\n")
}

async fn pump<R: AsyncRead + Unpin>(mut reader: R, buf: &mut CappedBuffer) -> std::io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(n) => buf.push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The absolute path of `program` on the PATH the child will see, or
/// `program` itself when it is a path already or is not found (the spawn
/// then fails with its usual error). Looking it up here rather than in the
/// child lets the standard library start children with `posix_spawn`
/// (a vfork, cheap however large orch is) instead of `fork`, which it does
/// only when the child's PATH cannot differ from the one it would search.
fn resolve_program(program: &str, env: &[(String, String)], env_clear: bool) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    let own = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let path = match own {
        Some(p) => p,
        None if env_clear => return program.to_string(),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    find_on_path(program, std::env::split_paths(&path))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string())
}

/// The first executable file named `name` in `dirs` (relative directories
/// skipped), as a shell's PATH lookup finds it.
pub fn find_on_path(
    name: &str,
    dirs: impl IntoIterator<Item = std::path::PathBuf>,
) -> Option<std::path::PathBuf> {
    dirs.into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Whether `p` is a regular file someone may execute.
pub fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a process to completion (or timeout). See the module docs.
pub async fn run(spec: ProcessSpec) -> Result<ProcessOutput, ProcessError> {
    let ProcessSpec {
        program,
        args,
        cwd,
        env_clear,
        env,
        stdin,
        timeout,
        output_limit,
        pre_exec,
        finish_if_orch_dies,
    } = spec;
    let io_err = |source| ProcessError::Io {
        program: program.clone(),
        source,
    };

    let mut cmd = tokio::process::Command::new(resolve_program(&program, &env, env_clear));
    cmd.args(&args);
    if let Some(dir) = &cwd {
        cmd.current_dir(dir);
    }
    if env_clear {
        cmd.env_clear();
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    if let Some(PreExec(hook)) = pre_exec {
        // SAFETY: `PreExec::new`'s contract makes the hook fork-safe.
        unsafe {
            cmd.pre_exec(move || hook());
        }
    }

    let started = Instant::now();
    // From a long-lived spawner thread, with a parent-death signal.
    let mut child = reaper::spawn(cmd, !finish_if_orch_dies)
        .await
        .map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pgid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    let mut guard = GroupGuard {
        pgid,
        armed: true,
        _watch: pgid
            .filter(|_| !finish_if_orch_dies)
            .map(reaper::watch_group),
    };

    let child_stdin = child.stdin.take();
    let child_stdout = child.stdout.take();
    let child_stderr = child.stderr.take();
    let mut out_buf = CappedBuffer::new(output_limit);
    let mut err_buf = CappedBuffer::new(output_limit);
    let mut timed_out = false;
    let mut io_result: Option<std::io::Result<()>> = None;

    let status = {
        let io = async {
            let feed = async {
                if let (Some(mut w), Some(data)) = (child_stdin, stdin) {
                    // A child that exits without reading its stdin gives
                    // EPIPE; that is its business, not an error of ours.
                    let _ = w.write_all(&data).await;
                    let _ = w.shutdown().await;
                }
            };
            let out = async {
                match child_stdout {
                    Some(r) => pump(r, &mut out_buf).await,
                    None => Ok(()),
                }
            };
            let err = async {
                match child_stderr {
                    Some(r) => pump(r, &mut err_buf).await,
                    None => Ok(()),
                }
            };
            let ((), o, e) = tokio::join!(feed, out, err);
            o.and(e)
        };
        tokio::pin!(io);
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);

        let status = loop {
            tokio::select! {
                r = &mut io, if io_result.is_none() => io_result = Some(r),
                s = child.wait() => break s.map_err(io_err)?,
                () = &mut sleep, if !timed_out => {
                    timed_out = true;
                    guard.kill();
                }
            }
        };
        // The child is gone; take its background children with it so
        // nothing outlives the run.
        guard.kill();
        guard.armed = false;
        if io_result.is_none() {
            match tokio::time::timeout(DRAIN_GRACE, &mut io).await {
                Ok(r) => io_result = Some(r),
                Err(_) => tracing::debug!(
                    program = %program,
                    "output pipes still held open by a process outside the group; stopped reading"
                ),
            }
        }
        status
    };
    if let Some(Err(e)) = io_result {
        return Err(io_err(e));
    }

    let (stdout, cut_out) = out_buf.finish();
    let (stderr, cut_err) = err_buf.finish();
    // Registered secrets never leave the runner in captured output.
    let stdout = orch_core::redact::redact(&stdout).into_owned();
    let stderr = orch_core::redact::redact(&stderr).into_owned();
    Ok(ProcessOutput {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout,
        stderr,
        truncated: cut_out || cut_err,
        duration: started.elapsed(),
        killed_by: timed_out.then_some(Limit::Timeout),
    })
}

/// Keeps the first `limit/2` and last `limit - limit/2` bytes of `s`, with
/// a marker between: what a [`CappedBuffer`] makes of `s` in one push.
pub fn cap_output(s: &str, limit: usize) -> (String, bool) {
    let mut buf = CappedBuffer::new(limit);
    buf.push(s.as_bytes());
    buf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_childs_path() {
        let no_env: Vec<(String, String)> = vec![];
        assert!(resolve_program("sh", &no_env, false).ends_with("/sh"));
        assert_eq!(resolve_program("./x", &no_env, false), "./x");
        assert_eq!(
            resolve_program("orch-no-such-program", &no_env, false),
            "orch-no-such-program"
        );
        // The child's own PATH decides, not orch's.
        let own = vec![("PATH".to_string(), "/nonexistent".to_string())];
        assert_eq!(resolve_program("sh", &own, false), "sh");
        let bin = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        assert!(
            resolve_program("sh", &bin, true).starts_with("/usr/bin/")
                || resolve_program("sh", &bin, true).starts_with("/bin/")
        );
        // A cleared environment without PATH: left to the spawn.
        assert_eq!(resolve_program("sh", &no_env, true), "sh");
    }

    #[test]
    fn cap_output_keeps_short_strings() {
        assert_eq!(cap_output("hello", 5), ("hello".to_string(), false));
        assert_eq!(cap_output("", 0), (String::new(), false));
    }

    #[test]
    fn cap_output_keeps_head_and_tail() {
        let s = format!("{}{}{}", "a".repeat(10), "b".repeat(100), "c".repeat(10));
        let (out, cut) = cap_output(&s, 20);
        assert!(cut);
        assert_eq!(
            out,
            format!(
                "{}\n[… orch cut 100 bytes of output …]\n{}",
                "a".repeat(10),
                "c".repeat(10)
            )
        );
    }

    #[test]
    fn cap_output_respects_char_boundaries() {
        // 'é' is two bytes: every cut point must land between characters.
        let s = "é".repeat(50);
        for limit in 0..40 {
            let (out, cut) = cap_output(&s, limit);
            assert!(cut);
            assert!(!out.contains('\u{FFFD}'));
            let kept: usize = out
                .split('\n')
                .filter(|p| !p.contains("orch cut"))
                .map(str::len)
                .sum();
            assert!(kept <= limit, "limit {limit}: kept {kept}");
        }
    }

    #[test]
    fn capped_buf_without_overflow_is_exact() {
        let mut b = CappedBuffer::new(10);
        b.push(b"hello");
        b.push(b"world");
        assert_eq!(b.finish(), ("helloworld".to_string(), false));
    }

    #[test]
    fn capped_buf_rolls_the_tail() {
        let mut b = CappedBuffer::new(6);
        for chunk in [&b"abc"[..], b"defgh", b"ij", b"k", b"lmnopqrstuvwxyz"] {
            b.push(chunk);
        }
        let (s, cut) = b.finish();
        assert!(cut);
        assert_eq!(s, "abc\n[… orch cut 20 bytes of output …]\nxyz");
    }

    #[test]
    fn capped_buf_trims_split_characters() {
        let mut b = CappedBuffer::new(5);
        // "€" is three bytes: the head keeps 2 bytes (half of one €) and the
        // tail 3 bytes starting mid-character.
        b.push("x€€€€y".as_bytes());
        let (s, cut) = b.finish();
        assert!(cut);
        assert!(!s.contains('\u{FFFD}'), "{s:?}");
        assert!(s.starts_with('x') && s.ends_with('y'), "{s:?}");
    }

    #[test]
    fn capped_buffer_fed_in_chunks_cuts_like_cap_output() {
        let mut cap = CappedBuffer::new(20);
        let data = format!("{}{}{}", "a".repeat(10), "b".repeat(100), "c".repeat(10));
        for chunk in data.as_bytes().chunks(7) {
            cap.push(chunk);
        }
        let (text, cut) = cap.finish();
        assert!(cut);
        let (expected, _) = cap_output(&data, 20);
        assert_eq!(text, expected);
    }

    #[test]
    fn capped_buffer_keeps_short_multibyte_output_whole() {
        let mut cap = CappedBuffer::new(100);
        cap.push(b"hello ");
        cap.push("wörld".as_bytes());
        assert_eq!(cap.finish(), ("hello wörld".to_string(), false));
    }

    #[test]
    fn capped_buffer_does_not_split_two_byte_characters() {
        let mut cap = CappedBuffer::new(9);
        cap.push("ééééééééééé".as_bytes());
        let (text, cut) = cap.finish();
        assert!(cut);
        assert!(!text.contains('\u{FFFD}'), "{text}");
        assert!(text.contains("[… orch cut"), "{text}");
    }

    #[tokio::test]
    async fn pre_exec_runs_in_the_child_and_its_error_fails_the_spawn() {
        // SAFETY: allocation-free: one raw syscall.
        let lower_nofile = unsafe {
            PreExec::new(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        let spec = ProcessSpec::new("sh")
            .args(["-c", "ulimit -n"])
            .pre_exec(lower_nofile);
        let out = run(spec.clone()).await.unwrap();
        assert_eq!(out.stdout, "64\n", "{}", out.stderr);
        assert_eq!(format!("{:?}", spec.pre_exec), "Some(PreExec(..))");

        // SAFETY: no calls at all.
        let refuse =
            unsafe { PreExec::new(|| Err(std::io::Error::from_raw_os_error(libc::EACCES))) };
        let err = run(ProcessSpec::new("true").pre_exec(refuse))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProcessError::Spawn { source, .. } if source.raw_os_error() == Some(libc::EACCES)),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_slow_to_exec_does_not_hold_up_other_spawns() {
        // SAFETY: one raw syscall (nanosleep) on a value on the stack.
        let slow = unsafe {
            PreExec::new(|| {
                let pause = libc::timespec {
                    tv_sec: 2,
                    tv_nsec: 0,
                };
                libc::nanosleep(&pause, std::ptr::null_mut());
                Ok(())
            })
        };
        let slow_run = tokio::spawn(run(ProcessSpec::new("true").pre_exec(slow)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The other spawns go through other spawner threads meanwhile.
        let started = Instant::now();
        for _ in 0..3 {
            run(ProcessSpec::new("true")).await.unwrap();
        }
        let quick = started.elapsed();
        assert!(!slow_run.is_finished(), "the slow child exec'd too early");
        slow_run.await.unwrap().unwrap();
        assert!(quick < Duration::from_millis(1500), "{quick:?}");
    }

    #[test]
    fn combined_separates_only_when_both_present() {
        let mut o = ProcessOutput {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            stdout: "out".into(),
            stderr: String::new(),
            truncated: false,
            duration: Duration::ZERO,
            killed_by: None,
        };
        assert_eq!(o.combined(), "out");
        o.stderr = "err".into();
        assert_eq!(o.combined(), "out\n--- stderr ---\nerr");
        o.stdout.clear();
        assert_eq!(o.combined(), "err");
    }
}
