//! `orch sandbox build | shell | reset | status | prune`: the Docker
//! sandbox's image and containers, all through the Engine API.

use super::{load_config, print_json, require_project};
use crate::{CliError, CliResult};
use clap::{Args, Subcommand};
use orch_config::{Config, ProjectConfig};
use orch_sandbox::docker::{self, DockerOptions, ShellOptions, DEFAULT_IMAGE};
use orch_sandbox::SandboxError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Make the sandbox image: import a root filesystem (--rootfs, no
    /// registry needed) or build a Dockerfile.
    Build(BuildArgs),
    /// Open a shell (or run one command) in a project's sandbox container.
    Shell(ShellArgs),
    /// Kill and remove a project's containers and clear its logs volumes;
    /// named volumes are kept.
    Reset(ResetArgs),
    /// List orch's containers and volumes with their project and state.
    Status(SandboxStatusArgs),
    /// Remove containers and volumes of projects that are not in the config.
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Root filesystem directory to import (e.g. made by `debootstrap
    /// --variant=minbase`); without it a Dockerfile is built.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Image tag. Default: the project's `docker.image`, else orch-sandbox:latest.
    #[arg(long)]
    pub tag: Option<String>,
    /// Dockerfile to build. Default: the project's `docker.dockerfile`, else
    /// docker/sandbox.Dockerfile.
    #[arg(long, conflicts_with = "rootfs")]
    pub dockerfile: Option<PathBuf>,
    /// Build context. Default: the Dockerfile's directory.
    #[arg(long, conflicts_with = "rootfs")]
    pub context: Option<PathBuf>,
    /// Take the image and Dockerfile settings from this project.
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[arg(long)]
    pub project: String,
    /// Directory mounted at /workspace when a new container is made.
    /// Default: the project's repository.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Mount the workdir read-write (the default is read-only, so a look
    /// around cannot change your checkout).
    #[arg(long)]
    pub writable: bool,
    /// Make a new container even when a worker container is running.
    #[arg(long)]
    pub fresh: bool,
    /// Run this command instead of an interactive shell.
    #[arg(long, short = 'c')]
    pub command: Option<String>,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[arg(long)]
    pub project: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SandboxStatusArgs {
    /// Only say whether this image exists (exit 0 if it does, 1 if not).
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

fn failed(e: SandboxError) -> CliError {
    CliError::failed(e.to_string())
}

/// The config if there is one; `None` only when no config file exists (a
/// broken one is still an error).
fn optional_config(flag: Option<&Path>) -> Result<Option<Config>, CliError> {
    let path = orch_config::resolve_config_path(flag);
    if flag.is_none() && !path.exists() {
        return Ok(None);
    }
    load_config(flag).map(Some)
}

/// The image a project runs (see [`orch_runtime::project_image`]).
pub fn project_image(pc: &ProjectConfig) -> String {
    orch_runtime::project_image(pc)
}

/// The Docker sandbox settings of a project (see [`orch_runtime::docker_options`]).
pub fn docker_options(config: &Config, pc: &ProjectConfig) -> DockerOptions {
    orch_runtime::docker_options(config, pc)
}

pub async fn run(config_flag: Option<&Path>, a: SandboxArgs) -> CliResult {
    match a.command {
        SandboxCommand::Build(b) => build(config_flag, b).await,
        SandboxCommand::Shell(s) => shell(config_flag, s).await,
        SandboxCommand::Reset(r) => reset(config_flag, r).await,
        SandboxCommand::Status(s) => status(config_flag, s).await,
        SandboxCommand::Prune(p) => prune(config_flag, p).await,
    }
}

async fn build(config_flag: Option<&Path>, b: BuildArgs) -> CliResult {
    let config = match &b.project {
        Some(_) => Some(load_config(config_flag)?),
        None => optional_config(config_flag)?,
    };
    let project = match (&config, &b.project) {
        (Some(c), Some(name)) => Some(require_project(c, name)?),
        _ => None,
    };
    let tag = b
        .tag
        .clone()
        .or_else(|| project.map(project_image))
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    if let Some(dir) = &b.rootfs {
        let started = std::time::Instant::now();
        eprintln!("importing {} as {tag}…", dir.display());
        let id = docker::import_rootfs(dir, &tag).await.map_err(failed)?;
        println!(
            "imported {tag} ({id}) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dockerfile = match (
        &b.dockerfile,
        project.and_then(|p| p.docker.dockerfile.as_ref()),
    ) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) => config
            .as_ref()
            .map(|c| c.resolve_path(f))
            .unwrap_or_else(|| f.clone()),
        (None, None) => default_dockerfile(config.as_ref())?,
    };
    let context = match &b.context {
        Some(c) => c.clone(),
        None => dockerfile
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    eprintln!(
        "building {tag} from {} (context {})…",
        dockerfile.display(),
        context.display()
    );
    docker::build_image(&dockerfile, &context, &tag, &mut |line| {
        eprintln!("  {line}")
    })
    .await
    .map_err(failed)?;
    println!("built {tag}");
    Ok(ExitCode::SUCCESS)
}

/// docker/sandbox.Dockerfile, looked for in the current directory and then
/// next to the config file.
fn default_dockerfile(config: Option<&Config>) -> Result<PathBuf, CliError> {
    let rel = Path::new("docker/sandbox.Dockerfile");
    let candidates = std::iter::once(rel.to_path_buf()).chain(config.map(|c| c.resolve_path(rel)));
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(CliError::usage(
        "no Dockerfile given and docker/sandbox.Dockerfile is not here: pass --dockerfile FILE, \
         set docker.dockerfile for the project, or import a root filesystem with --rootfs DIR \
         (scripts/build-sandbox-image.sh does that without a registry)",
    ))
}

async fn shell(config_flag: Option<&Path>, s: ShellArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let pc = require_project(&config, &s.project)?;
    let workdir = s.workdir.clone().unwrap_or_else(|| config.project_path(pc));
    let code = docker::open_shell(ShellOptions {
        docker: docker_options(&config, pc),
        sandbox: super::run::sandbox_options(&config, pc),
        workdir,
        read_only: !s.writable,
        command: s.command,
        fresh: s.fresh,
    })
    .await
    .map_err(failed)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

async fn reset(config_flag: Option<&Path>, r: ResetArgs) -> CliResult {
    let config = load_config(config_flag)?;
    require_project(&config, &r.project)?;
    let report = docker::reset_project(&r.project).await.map_err(failed)?;
    if r.json {
        print_json(&serde_json::json!({
            "project": r.project,
            "containers_removed": report.containers,
            "logs_cleared": report.logs_cleared,
            "volumes_kept": report.kept,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: removed {} container(s), cleared {} logs volume(s), kept {} named volume(s){}",
        r.project,
        report.containers.len(),
        report.logs_cleared.len(),
        report.kept.len(),
        if report.kept.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.kept.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(config_flag: Option<&Path>, s: SandboxStatusArgs) -> CliResult {
    if let Some(tag) = &s.image {
        let present = docker::image_exists(tag).await.map_err(failed)?;
        if s.json {
            print_json(&serde_json::json!({ "image": tag, "present": present }))?;
        } else {
            println!("{tag}: {}", if present { "present" } else { "missing" });
        }
        return Ok(if present {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let config = optional_config(config_flag)?;
    let live = |project: &str| config.as_ref().map(|c| c.project(project).is_some());
    let inv = docker::list().await.map_err(failed)?;
    if s.json {
        let containers: Vec<_> = inv
            .containers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "name": c.name, "project": c.project, "role": c.role,
                    "slot": c.slot, "state": c.state, "status": c.status, "image": c.image,
                    "live_project": live(&c.project),
                })
            })
            .collect();
        let volumes: Vec<_> = inv
            .volumes
            .iter()
            .map(|v| {
                serde_json::json!({
                    "name": v.name, "project": v.project, "role": v.role,
                    "live_project": live(&v.project),
                })
            })
            .collect();
        print_json(&serde_json::json!({ "containers": containers, "volumes": volumes }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mark = |project: &str| match live(project) {
        Some(false) => " (not in the config: `orch sandbox prune` removes it)",
        _ => "",
    };
    if inv.containers.is_empty() && inv.volumes.is_empty() {
        println!("no orch containers or volumes on this engine");
    }
    if !inv.containers.is_empty() {
        println!("containers:");
        for c in &inv.containers {
            println!(
                "  {}  project {}{}  {}{}  {} ({})",
                c.name,
                c.project,
                mark(&c.project),
                c.role,
                c.slot
                    .as_ref()
                    .map(|s| format!(" slot {s}"))
                    .unwrap_or_default(),
                c.state,
                c.status
            );
        }
    }
    if !inv.volumes.is_empty() {
        println!("volumes:");
        for v in &inv.volumes {
            let kind = if v.role == "logs" {
                "logs (cleared on reset)"
            } else {
                "named (kept)"
            };
            println!(
                "  {}  project {}{}  {kind}",
                v.name,
                v.project,
                mark(&v.project)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune(config_flag: Option<&Path>, p: PruneArgs) -> CliResult {
    let config = load_config(config_flag)?;
    let live: Vec<String> = config.projects.iter().map(|p| p.name.clone()).collect();
    let report = if p.dry_run {
        let inv = docker::list().await.map_err(failed)?;
        let orphan = |project: &String| !live.contains(project);
        docker::PruneReport {
            containers: inv
                .containers
                .into_iter()
                .filter(|c| orphan(&c.project))
                .map(|c| c.name)
                .collect(),
            volumes: inv
                .volumes
                .into_iter()
                .filter(|v| orphan(&v.project))
                .map(|v| v.name)
                .collect(),
        }
    } else {
        docker::prune(&live, None).await.map_err(failed)?
    };
    if p.json {
        print_json(&serde_json::json!({
            "dry_run": p.dry_run,
            "containers": report.containers,
            "volumes": report.volumes,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if p.dry_run { "would remove" } else { "removed" };
    if report.containers.is_empty() && report.volumes.is_empty() {
        println!(
            "nothing to prune: every orch container and volume belongs to a configured project"
        );
    }
    for c in &report.containers {
        println!("{verb} container {c}");
    }
    for v in &report.volumes {
        println!("{verb} volume {v}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(image: Option<&str>, dockerfile: Option<&str>) -> ProjectConfig {
        let mut pc = ProjectConfig::new(
            "MyApp",
            "/src/app",
            orch_config::ModelRef::new("local", "m"),
        );
        pc.docker.image = image.map(String::from);
        pc.docker.dockerfile = dockerfile.map(PathBuf::from);
        pc
    }

    #[test]
    fn images_come_from_the_project() {
        assert_eq!(project_image(&project(Some("x:1"), None)), "x:1");
        assert_eq!(
            project_image(&project(None, Some("Dockerfile"))),
            "orch-sandbox-myapp:latest"
        );
        assert_eq!(project_image(&project(None, None)), DEFAULT_IMAGE);
    }
}
