//! bubblewrap backend: the worktree read-write, the rest of the host
//! read-only, a private /tmp, fresh namespaces (no network unless allowed)
//! and an empty environment. bwrap runs in the process runner's own process
//! group; with `--unshare-pid` and `--die-with-parent`, killing that group on
//! timeout takes down everything inside the sandbox.

use crate::{find_executable, sandbox_path, ExecRequest, Sandbox, SandboxError, SandboxOptions};
use async_trait::async_trait;
use orch_process::{ProcessOutput, ProcessSpec};
use std::path::Path;
use std::time::Duration;

/// Runs commands under bubblewrap.
#[derive(Debug, Clone)]
pub struct BwrapSandbox {
    opts: SandboxOptions,
    /// The bwrap program (name looked up on PATH, or a path).
    binary: String,
}

impl BwrapSandbox {
    pub fn new(opts: SandboxOptions) -> Self {
        BwrapSandbox {
            opts,
            binary: "bwrap".to_string(),
        }
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
        push(&["--die-with-parent", "--new-session", "--unshare-all"]);
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
        // Bound after the /tmp tmpfs so paths under /tmp stay visible, and
        // shallowest first so a path nested in another bind (a worktree
        // inside the git dir, or a read-only dir inside the worktree) wins.
        let mut binds: Vec<(&Path, &str)> = request
            .extra_ro
            .iter()
            .map(|p| (p.as_path(), "--ro-bind"))
            .collect();
        binds.push((request.workdir.as_path(), "--bind"));
        binds.sort_by_key(|(p, _)| p.components().count());
        for (p, flag) in binds {
            let p = path_str(p);
            a.extend([flag.to_string(), p.clone(), p]);
        }
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
        a.extend([
            "--".to_string(),
            "sh".to_string(),
            "-c".to_string(),
            request.command.clone(),
        ]);
        a
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[async_trait]
impl Sandbox for BwrapSandbox {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn isolates(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), SandboxError> {
        let Some(binary) = find_executable(&self.binary) else {
            return Err(SandboxError::Unavailable(
                "bubblewrap (bwrap) is not installed: run `apt-get install bubblewrap`, or set \
                 sandbox = \"none\" for this project to run without isolation"
                    .to_string(),
            ));
        };
        let probe = ProcessSpec::new(path_str(&binary))
            .args(["--unshare-all", "--ro-bind", "/", "/", "true"])
            .timeout(Duration::from_secs(30))
            .output_limit(16 * 1024);
        let out = orch_process::run(probe).await?;
        if out.success() {
            return Ok(());
        }
        let detail = if out.timed_out {
            "timed out after 30 s".to_string()
        } else {
            out.combined().trim().to_string()
        };
        Err(SandboxError::Unavailable(format!(
            "bubblewrap is installed but cannot create namespaces here (`{} --unshare-all \
             --ro-bind / / true` failed: {detail}). Allow unprivileged user namespaces \
             (`sysctl -w kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04+ \
             `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`), run orch as root, \
             or inside a container start it with --privileged / a seccomp profile that \
             allows unshare; otherwise set sandbox = \"none\" to run without isolation",
            binary.display()
        )))
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError> {
        let spec = ProcessSpec::new(self.binary.clone())
            .args(self.args(request))
            .timeout(request.timeout)
            .output_limit(request.output_limit);
        Ok(orch_process::run(spec).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
        assert_eq!(&args[args.len() - 4..], ["--", "sh", "-c", "echo hi"]);
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
    fn network_is_opt_in() {
        let args = BwrapSandbox::new(SandboxOptions {
            network: true,
            ..Default::default()
        })
        .args(&request());
        assert!(args.contains(&"--share-net".to_string()));
    }
}
