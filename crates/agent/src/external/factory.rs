//! The worker a project's config asks for: `worker = "builtin"` (the
//! default) or an agent CLI with its `[projects.agents.<name>]` settings.
//! Checked when the engine is built, so a missing CLI is a configuration
//! error before any task is claimed, not a failed attempt.

use super::ExternalWorker;
use crate::{BuiltinWorker, Worker};
use orch_config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The worker for `project`. A dry run always uses the built-in worker
/// (the simulated model answers with orch's own tools).
pub fn worker_for(config: &Config, project: &str) -> Result<Arc<dyn Worker>, String> {
    let pc = config.project_or_hint(project)?;
    let name = pc.worker.as_str();
    let relay = std::env::current_exe().map_err(|e| {
        format!("worker = \"{name}\": cannot find orch's own binary for the sandbox relay: {e}")
    })?;
    let settings = pc.agents.for_kind(pc.worker);
    let worker = match ExternalWorker::new(pc.worker, settings, relay) {
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

/// `binary` as an absolute path: a path (relative ones against the config
/// file's directory) that is an executable file, or a name found on PATH.
pub fn locate(binary: &str, base_dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.contains('/') {
        let p = Path::new(binary);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        };
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(binary))
        .find(|p| p.is_absolute() && executable(p))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn config(worker: &str, agents: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        let text = format!(
            "[providers.r]\nkind = \"simulated\"\n\n[[projects]]\nname = \"p\"\npath = \"repo\"\n\
             worker_model = \"r:m\"\nworker = \"{worker}\"\n{agents}"
        );
        let path = dir.path().join("orch.toml");
        let c = orch_config::load_str(&text, orch_config::ConfigFormat::Toml, &path)
            .unwrap_or_else(|e| panic!("{e}"));
        // The repository must outlive the config that names it.
        std::mem::forget(dir);
        c
    }

    #[test]
    fn builtin_is_the_default_and_agents_are_built_by_name() {
        let w = worker_for(&config("builtin", ""), "p").unwrap();
        assert_eq!(w.name(), "builtin");
        let w = worker_for(
            &config("aider", "[projects.agents.aider]\nbinary = \"/bin/sh\"\nargs = [\"--x\"]\n"),
            "p",
        )
        .unwrap();
        assert_eq!(w.name(), "aider");
    }

    #[test]
    fn a_missing_cli_is_a_config_error_that_says_how_to_install_it() {
        let err = worker_for(
            &config(
                "claude-code",
                "[projects.agents.claude-code]\nbinary = \"no/such/claude\"\n",
            ),
            "p",
        )
        .err()
        .unwrap();
        assert!(err.contains("claude-code"), "{err}");
        assert!(err.contains("scripts/install-agents.sh"), "{err}");
        assert!(err.contains("[projects.agents.claude-code] binary"), "{err}");
    }

    #[test]
    fn names_are_found_on_path_and_relative_paths_against_the_config() {
        assert!(locate("sh", Path::new("/")).is_some());
        assert_eq!(locate("bin/sh", Path::new("/")), Some(PathBuf::from("/bin/sh")));
        assert!(locate("orch-no-such-agent", Path::new("/")).is_none());
    }
}
