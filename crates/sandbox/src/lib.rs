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
    /// Host paths sandboxed commands must not read: orch's config file, the
    /// `.env` beside it and its data_dir (database, audit trail, locks).
    /// bwrap masks each one that would be visible (a directory becomes an
    /// empty tmpfs, a file an empty file nobody may read), except the
    /// worktree and the read-only paths of a request, which are bound on
    /// top and stay visible even when they lie inside a hidden directory
    /// (worktrees live under data_dir). Docker never mounts them: a host
    /// directory it mounts that contains one gets it masked the same way.
    /// Paths that do not exist are skipped; symlinks are resolved.
    pub hidden: Vec<PathBuf>,
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

/// A path of [`SandboxOptions::hidden`] as it is on the host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hidden {
    /// Canonical (symlinks resolved).
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The hidden paths that exist, canonical, without the ones inside another
/// hidden directory (masking that one hides them already). `/` is never
/// hidden: that would hide the whole system.
pub(crate) fn existing_hidden(paths: &[PathBuf]) -> Vec<Hidden> {
    let mut found: Vec<Hidden> = Vec::new();
    for p in paths {
        let Ok(path) = std::fs::canonicalize(p) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if path.parent().is_none() || found.iter().any(|h| h.path == path) {
            continue;
        }
        found.push(Hidden {
            path,
            is_dir: meta.is_dir(),
        });
    }
    let dirs: Vec<PathBuf> = found
        .iter()
        .filter(|h| h.is_dir)
        .map(|h| h.path.clone())
        .collect();
    found.retain(|h| !dirs.iter().any(|d| d != &h.path && h.path.starts_with(d)));
    found
}

/// An empty host file with no permissions at all, bound over hidden files:
/// reading it fails (sandboxed commands hold no capability that would
/// bypass file modes) and the bind is read-only, so it cannot be changed.
/// Kept in a private directory `orch-mask-<uid>` of the temp dir (a fresh
/// one if that name is taken by something else), and made again if a
/// temp cleaner removed it. None when no such file can be made; callers
/// then use /dev/null (reads give nothing).
pub(crate) fn mask_file() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    static CACHE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let is_mask = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            m.file_type().is_file() && m.len() == 0 && m.uid() == uid && m.mode() & 0o777 == 0
        })
    };
    let private_dir = |d: &Path| {
        std::fs::symlink_metadata(d)
            .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
    };
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cache.as_ref() {
        if is_mask(p) {
            return Some(p.clone());
        }
    }
    let tmp = std::env::temp_dir();
    let shared = tmp.join(format!("orch-mask-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&shared);
    let dir = if private_dir(&shared) {
        shared
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let own = tmp.join(format!("orch-mask-{uid}-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&own).ok()?;
        own
    };
    let file = dir.join("unreadable");
    if !is_mask(&file) {
        let _ = std::fs::remove_file(&file);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&file)
            .ok()?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).ok()?;
    }
    if !is_mask(&file) {
        return None;
    }
    *cache = Some(file.clone());
    Some(file)
}

/// [`mask_file`], or /dev/null (with a warning, once) where none can be made.
pub(crate) fn mask_file_or_null() -> PathBuf {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    mask_file().unwrap_or_else(|| {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "cannot make an unreadable mask file in {}; hidden files (the config, .env) \
                 read as empty inside the sandbox instead. Make the temp directory writable",
                std::env::temp_dir().display()
            );
        }
        PathBuf::from("/dev/null")
    })
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

/// Shell builtins that also exist as programs but must run in the shell
/// to mean what people mean by them.
const SHELL_ONLY: [&str; 6] = ["cd", "exec", "exit", "export", "set", "ulimit"];

/// The program and arguments that run `command` in the sandbox. A command
/// that is plain words (no quotes, variables, globs, redirections,
/// operators or assignments) naming a program on the PATH is started
/// directly: one process fewer per run, and `sh -c` would do exactly the
/// same. Anything else goes to `sh -c`. `env` is the request's own
/// environment: a PATH of its own changes where the program is found, so
/// then the shell looks it up.
pub(crate) fn command_argv(command: &str, env: &[(String, String)]) -> Vec<String> {
    let shell = || vec!["sh".to_string(), "-c".to_string(), command.to_string()];
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,+@%= ".contains(c);
    if !command.chars().all(plain) || env.iter().any(|(k, _)| k == "PATH") {
        return shell();
    }
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    let Some(program) = words.first() else {
        return shell();
    };
    if program.contains('=') || SHELL_ONLY.contains(program) {
        return shell();
    }
    // Absolute paths and PATH names only: a relative path is relative to
    // the sandbox's working directory, which this process cannot check.
    if program.contains('/') && !program.starts_with('/') {
        return shell();
    }
    match find_executable(program) {
        Some(path) => std::iter::once(path.to_string_lossy().into_owned())
            .chain(words[1..].iter().map(|w| w.to_string()))
            .collect(),
        None => shell(),
    }
}

/// Finds an executable by name on the host PATH (or checks an explicit path).
pub(crate) fn find_executable(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return orch_process::is_executable(&p).then_some(p);
    }
    let host = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&host).chain(STANDARD_PATH.iter().map(PathBuf::from));
    orch_process::find_on_path(name, dirs)
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
    fn plain_commands_run_without_a_shell() {
        let env: Vec<(String, String)> = vec![];
        let argv = command_argv("true", &env);
        assert!(argv[0].ends_with("/true") && argv.len() == 1, "{argv:?}");
        let argv = command_argv("  python3 -m pytest -q tests/  ", &env);
        assert!(argv[0].ends_with("/python3"), "{argv:?}");
        assert_eq!(argv[1..], ["-m", "pytest", "-q", "tests/"]);
        for shell in [
            "pytest -q && echo ok",
            "echo $HOME",
            "ls *.py",
            "FOO=1 make",
            "cd src",
            "exit 3",
            "./run_tests.sh",
            "echo 'quoted'",
            "make 2>&1",
            "orch-definitely-not-a-program --x",
            "",
            "true\nfalse",
        ] {
            assert_eq!(command_argv(shell, &env)[..2], ["sh", "-c"], "{shell}");
        }
        let own_path = vec![("PATH".to_string(), "/opt/venv/bin".to_string())];
        assert_eq!(command_argv("true", &own_path)[..2], ["sh", "-c"]);
    }

    #[test]
    fn find_executable_finds_sh() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("orch-definitely-not-a-program").is_none());
        assert!(find_executable("/nonexistent/bwrap").is_none());
    }
}
