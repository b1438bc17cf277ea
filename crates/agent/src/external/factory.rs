//! The worker a project's config asks for: `worker = "builtin"` (the
//! default) or an agent CLI with its `[projects.agents.<name>]` settings.
//! Checked when the engine is built, so a missing CLI is a configuration
//! error before any task is claimed, not a failed attempt. A task may name
//! its own worker; [`worker_for_task`] checks it the same way when the
//! task is added (and when it is worked, in case the config changed).

use super::ExternalWorker;
use crate::{BuiltinWorker, Worker};
use orch_config::{Config, SandboxKind, WorkerKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The worker for `project`. A dry run always uses the built-in worker
/// (the simulated model answers with orch's own tools).
pub fn worker_for(config: &Config, project: &str) -> Result<Arc<dyn Worker>, String> {
    let pc = config.project_or_hint(project)?;
    worker_of_kind(config, project, pc.worker)
}

/// The worker `kind` with `project`'s `[projects.agents.<name>]` settings
/// (a best-of-N candidate's `candidate_workers` entry), checked the same way.
pub fn worker_of_kind(
    config: &Config,
    project: &str,
    kind: WorkerKind,
) -> Result<Arc<dyn Worker>, String> {
    let pc = config.project_or_hint(project)?;
    let name = kind.as_str();
    let relay = std::env::current_exe().map_err(|e| {
        format!("worker = \"{name}\": cannot find orch's own binary for the sandbox relay: {e}")
    })?;
    let settings = pc.agents.for_kind(kind);
    let worker = match ExternalWorker::new(kind, settings, relay) {
        Some(w) if !config.dry_run => w,
        _ => return Ok(Arc::new(BuiltinWorker)),
    };
    let binary = worker.binary();
    let found = locate(&binary, &config.base_dir).ok_or_else(|| {
        format!(
            "worker = \"{name}\" in project `{project}` ({}): the {name} CLI `{binary}` is not \
             an executable file{}; install it with scripts/install-agents.sh, or set \
             [projects.agents.{name}] binary = \"/path/to/it\"",
            config.source.display(),
            if binary.contains('/') { "" } else { " on PATH" },
        )
    })?;
    let mut worker = worker;
    worker.settings.binary = Some(found.display().to_string());
    Ok(Arc::new(worker))
}

/// The worker a task names (`worker:` in a task file, `--worker`), with
/// `project`'s settings: refused under `sandbox = "docker"` as the
/// project's own `worker` would be, then built and checked by
/// [`worker_of_kind`] (a missing CLI says how to install it).
pub fn worker_for_task(
    config: &Config,
    project: &str,
    kind: WorkerKind,
) -> Result<Arc<dyn Worker>, String> {
    let pc = config.project_or_hint(project)?;
    if kind != WorkerKind::Builtin && pc.sandbox == SandboxKind::Docker && !config.dry_run {
        return Err(format!(
            "worker = \"{kind}\" cannot run in project `{project}`, which has sandbox = \"docker\" \
             ({}): agent CLIs run in the bwrap or none sandbox; give the task worker = \"builtin\", \
             or set the project's sandbox = \"bwrap\"",
            config.source.display()
        ));
    }
    worker_of_kind(config, project, kind)
}

/// `binary` as an absolute path: a path (relative ones against the config
/// file's directory) that is an executable file, or a name found on PATH.
pub fn locate(binary: &str, base_dir: &Path) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = Path::new(binary);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        };
        return orch_process::is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    orch_process::find_on_path(binary, std::env::split_paths(&path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A project `p` with `project_lines` added, in a fresh directory (kept
    /// alive with the config).
    fn load(project_lines: &str) -> (tempfile::TempDir, Result<Config, String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/.git")).unwrap();
        let text = format!(
            "[providers.r]\nkind = \"simulated\"\n\n[[projects]]\nname = \"p\"\npath = \"repo\"\n\
             worker_model = \"r:m\"\n{project_lines}"
        );
        let path = dir.path().join("orch.toml");
        let c = orch_config::load_str(&text, orch_config::ConfigFormat::Toml, &path)
            .map_err(|e| e.to_string());
        (dir, c)
    }

    #[test]
    fn builtin_is_the_default_and_agents_are_built_by_name() {
        let (_d, c) = load("");
        assert_eq!(worker_for(&c.unwrap(), "p").unwrap().name(), "builtin");
        let (_d, c) = load(
            "worker = \"aider\"\n[projects.agents.aider]\nbinary = \"/bin/sh\"\nargs = [\"--x\"]\n",
        );
        let c = c.unwrap();
        assert_eq!(c.projects[0].agents.aider.args, ["--x"]);
        assert_eq!(worker_for(&c, "p").unwrap().name(), "aider");
        let mut dry = c.clone();
        dry.dry_run = true;
        assert_eq!(worker_for(&dry, "p").unwrap().name(), "builtin");
        // A candidate's worker is built by kind with the same settings.
        let aider = worker_of_kind(&c, "p", WorkerKind::Aider).unwrap();
        assert_eq!(aider.name(), "aider");
        let builtin = worker_of_kind(&c, "p", WorkerKind::Builtin).unwrap();
        assert_eq!(builtin.name(), "builtin");
    }

    #[test]
    fn a_missing_cli_is_a_config_error_that_says_how_to_install_it() {
        let (_d, c) = load(
            "worker = \"claude-code\"\n[projects.agents.claude-code]\nbinary = \"no/such/claude\"\n",
        );
        let err = worker_for(&c.unwrap(), "p").err().unwrap();
        assert!(err.contains("claude-code"), "{err}");
        assert!(err.contains("scripts/install-agents.sh"), "{err}");
        assert!(
            err.contains("[projects.agents.claude-code] binary"),
            "{err}"
        );
    }

    #[test]
    fn unknown_workers_agents_and_docker_are_refused_by_name() {
        let (_d, c) = load("worker = \"cursor\"\n");
        let err = c.err().unwrap();
        assert!(
            err.contains("cursor") && err.contains("claude-code"),
            "{err}"
        );
        let (_d, c) = load("[projects.agents.cursor]\nbinary = \"x\"\n");
        assert!(c.err().unwrap().contains("cursor"));
        let (_d, c) = load("worker = \"codex\"\nsandbox = \"docker\"\n");
        let err = c.err().unwrap();
        assert!(err.contains("worker") && err.contains("bwrap"), "{err}");
    }

    #[test]
    fn a_task_s_worker_is_checked_like_the_project_s() {
        let (_d, c) = load(
            "[projects.agents.codex]\nbinary = \"/bin/sh\"\n\
             [projects.agents.aider]\nbinary = \"no/such/aider\"\n",
        );
        let c = c.unwrap();
        assert_eq!(
            worker_for_task(&c, "p", WorkerKind::Codex).unwrap().name(),
            "codex"
        );
        let err = worker_for_task(&c, "p", WorkerKind::Aider).err().unwrap();
        assert!(err.contains("worker = \"aider\""), "{err}");
        assert!(err.contains("scripts/install-agents.sh"), "{err}");
        let (_d, c) = load("sandbox = \"docker\"\n[projects.agents.codex]\nbinary = \"/bin/sh\"\n");
        let c = c.unwrap();
        let err = worker_for_task(&c, "p", WorkerKind::Codex).err().unwrap();
        assert!(
            err.contains("sandbox = \"docker\"") && err.contains("bwrap"),
            "{err}"
        );
        assert_eq!(
            worker_for_task(&c, "p", WorkerKind::Builtin)
                .unwrap()
                .name(),
            "builtin"
        );
    }

    #[test]
    fn names_are_found_on_path_and_relative_paths_against_the_config() {
        assert!(locate("sh", Path::new("/")).is_some());
        assert_eq!(
            locate("bin/sh", Path::new("/")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(locate("orch-no-such-agent", Path::new("/")).is_none());
        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain = plain.path().to_string_lossy().to_string();
        assert!(locate(&plain, Path::new("/")).is_none(), "not executable");
    }
}
