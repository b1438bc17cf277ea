//! Where model-written code runs. One trait, one module per backend:
//! `bwrap` (bubblewrap: the worktree read-write, the rest read-only, private
//! /tmp, no network unless allowed, seccomp, cgroup limits, the process tree
//! killed on timeout), `docker` (a long-lived container per worker slot
//! through the Engine API, reset between attempts) and `none` (no
//! isolation, and it says so). `select` picks one, including `auto`.

pub mod bwrap;
pub mod docker;
mod limits;
pub mod none;
pub mod seccomp;
pub mod select;

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use bwrap::BwrapSandbox;
pub use none::NoSandbox;
pub use select::{docker_available, select, AutoSandbox, Selection};

pub use orch_process::{Limit, ProcessOutput};

/// A command to run inside the sandbox.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Shell command line, run with `sh -c`.
    pub command: String,
    /// Host path of the worktree; the command's working directory and the
    /// only writable place (besides a private /tmp).
    pub workdir: PathBuf,
    /// Environment given to the command (on top of a minimal PATH/HOME/LANG).
    pub env: Vec<(String, String)>,
    /// Extra host paths made visible read-only at the same location (for
    /// example the repository's git directory, which a worktree points to).
    pub extra_ro: Vec<PathBuf>,
    pub timeout: Duration,
    pub output_limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The backend cannot run here; the message says how to fix it.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Process(#[from] orch_process::ProcessError),
    /// The backend's own machinery failed (engine API, image build, …).
    #[error("{0}")]
    Backend(String),
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    /// `bwrap`, `none`, …
    fn name(&self) -> &'static str;
    /// False for backends that protect nothing.
    fn isolates(&self) -> bool;
    /// Checks the backend works on this machine (binary present, user
    /// namespaces allowed) with an actionable error if not.
    async fn check(&self) -> Result<(), SandboxError>;
    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError>;
    /// The worktree at `workdir` is done with (its attempt ended). Backends
    /// that keep state per workspace (a container) reset or free it here.
    async fn release(&self, workdir: &std::path::Path) -> Result<(), SandboxError> {
        let _ = workdir;
        Ok(())
    }
    /// The run is over: free everything the backend keeps (containers).
    async fn shutdown(&self) -> Result<(), SandboxError> {
        Ok(())
    }
}

/// Options shared by backends.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    pub network: bool,
    pub limits: Limits,
}

/// Resource limits for everything a sandboxed command starts. `None`
/// leaves a limit unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
}

/// Builds the backend named in a project's configuration: `"bwrap"`,
/// `"auto"` (see [`select`]) or `"none"`. No check is made here: call
/// `check`, or use [`select`], which builds and checks.
pub fn from_kind(kind: &str, opts: SandboxOptions) -> Result<Arc<dyn Sandbox>, SandboxError> {
    match kind {
        "bwrap" => Ok(Arc::new(BwrapSandbox::new(opts))),
        "none" => Ok(Arc::new(NoSandbox::new())),
        // Project settings (image, volumes) come with `DockerSandbox::new`;
        // this builds the defaults (image orch-sandbox:latest).
        "docker" => Ok(Arc::new(docker::DockerSandbox::new(
            docker::DockerOptions::default(),
            opts,
        ))),
        // Chooses on first use; `select` chooses up front.
        "auto" => Ok(Arc::new(AutoSandbox::new(opts))),
        other => Err(SandboxError::Unavailable(format!(
            "unknown sandbox `{other}`: set sandbox = \"bwrap\" (isolated, needs bubblewrap) \
             or sandbox = \"none\" (no isolation)"
        ))),
    }
}

/// Directories always on the sandboxed PATH.
const STANDARD_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The PATH given to sandboxed commands: the host's absolute, existing PATH
/// directories (so pyenv shims, cargo, node version managers keep working)
/// followed by the standard system directories.
pub(crate) fn sandbox_path() -> String {
    let host = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let candidates = std::env::split_paths(&host).chain(STANDARD_PATH.iter().map(PathBuf::from));
    for dir in candidates {
        if dir.is_absolute() && dir.is_dir() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    // Keep the standard directories even if absent: harmless, and PATH must
    // never come out empty.
    if dirs.is_empty() {
        return STANDARD_PATH.join(":");
    }
    dirs.iter()
        .map(|d| d.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":")
}

/// Finds an executable by name on the host PATH (or checks an explicit path).
pub(crate) fn find_executable(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let host = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&host)
        .chain(STANDARD_PATH.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_path_keeps_standard_dirs() {
        let path = sandbox_path();
        assert!(path.split(':').any(|d| d == "/usr/bin"), "{path}");
        assert!(path.split(':').all(|d| d.starts_with('/')), "{path}");
    }

    #[test]
    fn from_kind_knows_the_backends() {
        let bwrap = from_kind("bwrap", SandboxOptions::default()).unwrap();
        assert_eq!(bwrap.name(), "bwrap");
        assert!(bwrap.isolates());
        let none = from_kind("none", SandboxOptions::default()).unwrap();
        assert_eq!(none.name(), "none");
        assert!(!none.isolates());
        let docker = from_kind("docker", SandboxOptions::default()).unwrap();
        assert_eq!(docker.name(), "docker");
        assert!(docker.isolates());
        let err = from_kind("podman", SandboxOptions::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown sandbox `podman`"),
            "{err}"
        );
    }

    #[test]
    fn find_executable_finds_sh() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("orch-definitely-not-a-program").is_none());
        assert!(find_executable("/nonexistent/bwrap").is_none());
    }
}
