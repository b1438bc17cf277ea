//! The one process runner. Everything orch executes (git, sandboxed commands,
//! verification steps) goes through `run`: it puts the child in its own
//! process group, enforces the timeout by killing the whole group, caps the
//! output it keeps (with a visible marker), and kills the group if the caller
//! stops waiting.

use std::path::PathBuf;
use std::time::Duration;

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
}

impl ProcessSpec {
    pub fn new(program: impl Into<String>) -> Self {
        ProcessSpec { program: program.into(), output_limit: 1024 * 1024, ..Default::default() }
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
}

impl ProcessOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
    /// stdout followed by stderr, for humans and models.
    pub fn combined(&self) -> String {
        todo!()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("io error while running `{program}`: {source}")]
    Io { program: String, source: std::io::Error },
}

/// Runs a process to completion (or timeout). See the module docs.
pub async fn run(spec: ProcessSpec) -> Result<ProcessOutput, ProcessError> {
    let _ = spec;
    todo!()
}

/// Keeps the first and last `limit/2` bytes of `s`, with a marker between.
pub fn cap_output(s: &str, limit: usize) -> (String, bool) {
    let _ = (s, limit);
    todo!()
}
