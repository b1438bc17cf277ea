//! The no-isolation backend: runs the command directly on the host, in the
//! worktree, with a minimal environment. It protects nothing and says so
//! loudly the first time it is used.

use crate::{sandbox_path, ExecRequest, Sandbox, SandboxError};
use async_trait::async_trait;
use orch_process::{ProcessOutput, ProcessSpec};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs commands without any sandbox.
#[derive(Debug, Default)]
pub struct NoSandbox {
    warned: AtomicBool,
}

impl NoSandbox {
    pub fn new() -> Self {
        NoSandbox {
            warned: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Sandbox for NoSandbox {
    fn name(&self) -> &'static str {
        "none"
    }

    fn isolates(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "sandbox = \"none\": model-written commands run directly on this machine with \
                 your user's permissions and full network access; NOTHING is isolated. Use \
                 sandbox = \"bwrap\" unless you trust every command"
            );
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".to_string());
        let argv = crate::command_argv(&request.command, &request.env);
        let mut spec = ProcessSpec::new(&argv[0])
            .args(argv[1..].iter().cloned())
            .cwd(&request.workdir)
            .env("PATH", sandbox_path())
            .env("HOME", home)
            .env("LANG", "C.UTF-8")
            .timeout(request.timeout)
            .output_limit(request.output_limit);
        spec.env_clear = true;
        for (k, v) in &request.env {
            spec = spec.env(k.clone(), v.clone());
        }
        Ok(orch_process::run(spec).await?)
    }
}
