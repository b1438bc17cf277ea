//! `orch sandbox shell`: a shell (or one command) inside a project's
//! sandbox, through the Engine API's exec attach (no docker CLI). With a
//! terminal it allocates a TTY, puts the local terminal in raw mode and
//! follows window resizes.

use super::{
    access, admin, backend, connect, create_and_start, force_remove, nonce, resolve_user, sanitize,
    volume_name, ContainerPlan, DockerOptions, LABEL_INSTANCE, LABEL_PROJECT, LABEL_ROLE,
    ROLE_SHELL, ROLE_VOLUME, WORKSPACE,
};
use crate::{SandboxError, SandboxOptions};
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptions;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// What `open_shell` opens.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    pub docker: DockerOptions,
    pub sandbox: SandboxOptions,
    /// Mounted at /workspace when a new container is made.
    pub workdir: PathBuf,
    /// Mount `workdir` read-only (the default for a project's checkout).
    pub read_only: bool,
    /// Run this instead of an interactive shell.
    pub command: Option<String>,
    /// Make a new container even when a worker container is running.
    pub fresh: bool,
}

/// Puts the terminal on stdin in raw mode until dropped.
struct RawMode(libc::termios);

impl RawMode {
    fn enable() -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr get a valid
        // pointer to it and fd 0, and fail cleanly on a non-terminal.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let original = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode(original))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable` on fd 0.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// (rows, columns) of the terminal on stdout.
fn window_size() -> Option<(i32, i32)> {
    // SAFETY: winsize is plain data and TIOCGWINSZ fills it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) != 0 || ws.ws_row == 0 {
            return None;
        }
        Some((i32::from(ws.ws_row), i32::from(ws.ws_col)))
    }
}

async fn resize(docker: &Docker, exec: &str) {
    if let Some((h, w)) = window_size() {
        let _ = docker.resize_exec(exec, ResizeExecOptions { h, w }).await;
    }
}

/// A container made for the shell, removed (and the worktree's access
/// given back) when the shell ends.
struct Made {
    id: String,
    grant: Option<access::Grant>,
}

/// Opens a shell in the project's sandbox and returns its exit code. Joins
/// a running worker container of the project (unless `fresh`), else makes
/// a container like a worker's with `workdir` at /workspace.
pub async fn open_shell(opts: ShellOptions) -> Result<i32, SandboxError> {
    let docker = connect().await?;
    let user = resolve_user(opts.docker.user.as_deref())?;
    let running = if opts.fresh {
        Vec::new()
    } else {
        admin::running_workers(&docker, &opts.docker.project).await?
    };
    let (container, made) = match running.into_iter().next() {
        Some(id) => (id, None),
        None => {
            let made = make_container(&docker, &opts, user).await?;
            (made.id.clone(), Some(made))
        }
    };
    let result = attach(&docker, &container, &opts, user).await;
    if let Some(made) = made {
        let _ = force_remove(&docker, &made.id).await;
        if let Some(g) = made.grant {
            let _ = tokio::task::spawn_blocking(move || access::revoke(&g)).await;
        }
    }
    result
}

async fn make_container(
    docker: &Docker,
    opts: &ShellOptions,
    user: (u32, u32),
) -> Result<Made, SandboxError> {
    let meta = std::fs::metadata(&opts.workdir).map_err(|e| {
        SandboxError::Backend(format!(
            "cannot mount {} at {WORKSPACE}: {e}",
            opts.workdir.display()
        ))
    })?;
    let owner = format!("{}:{}", user.0, user.1);
    let mut volumes = Vec::new();
    for (name, path) in &opts.docker.volumes {
        let volume = volume_name(&opts.docker.project, name);
        let labels = HashMap::from([
            (LABEL_PROJECT.to_string(), opts.docker.project.clone()),
            (LABEL_ROLE.to_string(), ROLE_VOLUME.to_string()),
            (super::LABEL_OWNER.to_string(), owner.clone()),
        ]);
        admin::ensure_volume(docker, &opts.docker.image, &volume, labels, &owner).await?;
        volumes.push((volume, path.clone()));
    }
    let grant = if !opts.read_only && meta.uid() != user.0 {
        let root = opts.workdir.clone();
        let g = tokio::task::spawn_blocking(move || access::grant(&root, user.0))
            .await
            .map_err(|e| backend("granting access", e))?
            .map_err(|e| backend(&format!("granting access to {}", opts.workdir.display()), e))?;
        Some(g)
    } else {
        None
    };
    let plan = ContainerPlan {
        image: opts.docker.image.clone(),
        user,
        labels: HashMap::from([
            (LABEL_PROJECT.to_string(), opts.docker.project.clone()),
            (LABEL_ROLE.to_string(), ROLE_SHELL.to_string()),
            (LABEL_INSTANCE.to_string(), nonce()),
        ]),
        workdir: opts.workdir.clone(),
        workdir_read_only: opts.read_only,
        extra_ro: Vec::new(),
        volumes,
        tmpfs_logs: (!opts.docker.logs_path.is_empty()).then(|| opts.docker.logs_path.clone()),
        shared_data: opts.docker.shared_data.clone(),
        network: opts.sandbox.network,
        limits: super::clamp_cpus(opts.sandbox.limits.clone()),
        hidden: opts.sandbox.hidden.clone(),
    };
    let name = format!("orch-{}-shell-{}", sanitize(&opts.docker.project), nonce());
    match create_and_start(docker, name, plan.body(), &opts.docker.image, "shell").await {
        Ok(id) => Ok(Made { id, grant }),
        Err(e) => {
            // No container to hold the worktree: give its access back.
            if let Some(g) = grant {
                let _ = tokio::task::spawn_blocking(move || access::revoke(&g)).await;
            }
            Err(e)
        }
    }
}

async fn attach(
    docker: &Docker,
    container: &str,
    opts: &ShellOptions,
    user: (u32, u32),
) -> Result<i32, SandboxError> {
    let tty = opts.command.is_none() && is_tty(0) && is_tty(1);
    let script = opts
        .command
        .clone()
        .unwrap_or_else(|| "command -v bash >/dev/null && exec bash || exec sh".to_string());
    let mut env = Vec::new();
    if tty {
        env.push(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into())
        ));
    }
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty),
                cmd: Some(vec!["sh".to_string(), "-c".to_string(), script]),
                env: Some(env),
                user: Some(format!("{}:{}", user.0, user.1)),
                working_dir: Some(WORKSPACE.to_string()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| backend("creating the shell exec", e))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                tty,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| backend("starting the shell", e))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(backend("starting the shell", "the engine detached it"));
    };
    let _raw = if tty { RawMode::enable() } else { None };
    if tty {
        resize(docker, &exec.id).await;
    }
    let winch = tty.then(|| {
        let docker = docker.clone();
        let id = exec.id.clone();
        tokio::spawn(async move {
            let Ok(mut sig) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while sig.recv().await.is_some() {
                resize(&docker, &id).await;
            }
        })
    });

    // stdin is read on a plain thread: a blocked read must not keep the
    // runtime from shutting down when the shell ends.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let feed = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if input.write_all(&chunk).await.is_err() {
                return;
            }
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    });

    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                let _ = stdout.write_all(&message);
                let _ = stdout.flush();
            }
            Ok(LogOutput::StdErr { message }) => {
                let _ = stderr.write_all(&message);
                let _ = stderr.flush();
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "shell output ended with an error");
                break;
            }
        }
    }
    feed.abort();
    if let Some(w) = winch {
        w.abort();
    }
    let mut code = None;
    for _ in 0..100 {
        let info = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| backend("inspecting the shell", e))?;
        if info.running != Some(true) {
            code = info.exit_code;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(code.map_or(1, |c| i32::try_from(c).unwrap_or(1)))
}
