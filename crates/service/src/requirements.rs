//! `orch serve`'s requirements folder (`[server] requirements_dir`): each
//! new `*.md` or `*.txt` file there becomes a project, made as `orch new`
//! makes it (repository, PLAN.md by the architect, the run, the archive;
//! see `orch_runtime::new_project`). The project is named after the file
//! (`todo-app.md` → `todo-app`).
//!
//! Files are followed with the same debounced watch as the projects' file
//! triggers, and the folder is scanned at startup for files that arrived
//! while orch was not running. Each file is claimed in the store by its
//! path before its project is made, so a file is handled once, whatever
//! came of it, across restarts; a file that cannot be used yet (empty,
//! not text) is not claimed, and saving it again tries again. Projects are
//! made one at a time, in file-name order.

use crate::watch::{FileWatch, WatchSpec};
use crate::Log;
use orch_config::Config;
use orch_engine::Shutdown;
use orch_protocol::{Event, Stage};
use orch_runtime::new_project::{self, MAX_NAME_CHARS};
use orch_state::{RequirementsStatus, StateStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The files that are requirements.
pub const GLOBS: [&str; 2] = ["*.md", "*.txt"];

/// The project a requirements file makes: its file name without the
/// extension, with anything but letters, digits, `-`, `_` and `.` turned
/// into `-`. None when nothing usable is left.
pub fn project_name_for(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy();
    let name: String = stem
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                true => c,
                false => '-',
            },
        )
        .collect();
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let name: String = name.chars().take(MAX_NAME_CHARS).collect();
    new_project::check_name(&name).ok().map(|_| name)
}

/// Follows `dir` until `shutdown`, making a project of each new file. The
/// project being made when shutdown comes gets the same grace as any run.
pub async fn follow(
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    dir: PathBuf,
    shutdown: Shutdown,
    log: Log,
) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log(&format!(
            "requirements: cannot create {}: {e}; no projects are made from requirements files",
            dir.display()
        ));
        return;
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let started = WatchSpec::new(&dir, &GLOBS.map(String::from)).and_then(|spec| {
        let (tx, rx) = mpsc::unbounded_channel();
        FileWatch::start(spec, tx).map(|w| (w, rx))
    });
    let (mut watch, mut raw) = match started {
        Ok(w) => w,
        Err(e) => {
            log(&format!(
                "requirements: cannot watch {}: {e}",
                dir.display()
            ));
            return;
        }
    };
    log(&format!(
        "requirements: a new *.md or *.txt file in {} becomes a project",
        dir.display()
    ));
    for file in existing(&dir) {
        if shutdown.is_requested() {
            return;
        }
        handle(&config, &store, &file, &shutdown, &log).await;
    }
    loop {
        let batch = tokio::select! {
            _ = shutdown.requested() => return,
            b = raw.recv() => match b {
                Some(b) => b,
                None => return,
            },
        };
        let mut files = watch.filter(batch);
        files.sort();
        for file in files {
            if shutdown.is_requested() {
                return;
            }
            handle(&config, &store, &file, &shutdown, &log).await;
        }
    }
}

/// The requirements files in `dir` now, by name.
fn existing(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_requirements(p))
        .collect();
    files.sort();
    files
}

/// `*.md` / `*.txt`, not hidden (editors' swap and temporary files are).
fn is_requirements(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "md" | "txt")
}

/// One file: claimed once, then made into a project start to end.
async fn handle(
    config: &Config,
    store: &Arc<dyn StateStore>,
    file: &Path,
    shutdown: &Shutdown,
    log: &Log,
) {
    if !file.is_file() || !is_requirements(file) {
        return; // Deleted, or not a requirements file.
    }
    let key = file.display().to_string();
    match store.requirements_file(&key) {
        Ok(Some(_)) => return, // Handled before (by this process or an earlier one).
        Ok(None) => {}
        Err(e) => {
            log(&format!("requirements: {key}: cannot read the state: {e}"));
            return;
        }
    }
    let Some(name) = project_name_for(file) else {
        log(&format!(
            "requirements: {key}: its file name makes no project name; rename it to letters, digits, `-`, `_` and `.` (e.g. todo-app.md)"
        ));
        return;
    };
    // Not claimed while it cannot be used: saving it again tries again.
    let text = match new_project::read_requirements(file) {
        Ok((_, text)) => text,
        Err(e) => {
            log(&format!("requirements: {key}: not used yet: {e}"));
            return;
        }
    };
    let sha = new_project::sha256_hex(&text);
    match store.claim_requirements_file(&key, &sha, &name) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            log(&format!("requirements: {key}: cannot claim it: {e}"));
            return;
        }
    }
    // The config as it is now: another `orch new` may have added projects.
    let config = match orch_config::load(&config.source) {
        Ok(c) => c,
        Err(e) => {
            finish(
                store,
                &key,
                &name,
                Err(format!("the config does not load: {e}")),
                log,
            );
            return;
        }
    };
    log(&format!("{name}: making a project from {key}"));
    let progress = |line: &str| log(&format!("{name}: {line}"));
    let result = new_project::build(&config, store.clone(), &name, file, shutdown, &progress).await;
    let outcome = match result {
        Ok(built) => Ok(format!(
            "{} task(s) merged; archived at {} ({} bytes)",
            built.planned.tasks.len(),
            built.archived.path.display(),
            built.archived.bytes
        )),
        Err(e) => Err(e.to_string()),
    };
    finish(store, &key, &name, outcome, log);
    if let Ok(doc) = orch_server::views::cost(store.as_ref(), Some(&name), None) {
        let roles: Vec<String> = doc
            .by_role
            .iter()
            .map(|(role, t)| format!("{role} {} call(s) ${:.4}", t.calls, t.cost_usd))
            .collect();
        if !roles.is_empty() {
            log(&format!("{name}: usage: {}", roles.join(", ")));
        }
    }
}

/// Records how it went: in the claim, the log and (when it failed) a
/// warning event under the project.
fn finish(
    store: &Arc<dyn StateStore>,
    key: &str,
    name: &str,
    outcome: Result<String, String>,
    log: &Log,
) {
    let (status, detail) = match &outcome {
        Ok(d) => (RequirementsStatus::Done, d.clone()),
        Err(e) => (RequirementsStatus::Failed, e.clone()),
    };
    if let Err(e) = store.finish_requirements_file(key, status, Some(&detail)) {
        log(&format!(
            "requirements: {key}: cannot record the outcome: {e}"
        ));
    }
    match outcome {
        Ok(d) => log(&format!("{name}: made from {key}: {d}")),
        Err(e) => {
            log(&format!("{name}: not made from {key}: {e}"));
            let ev = Event::new(
                name,
                orch_protocol::Warning {
                    stage: Some(Stage::Architect),
                    file: Some(key.to_string()),
                    commit: None,
                },
                format!("project not made from {key}: {e}"),
            );
            if let Err(e) = store.record(&ev) {
                tracing::warn!("cannot record event: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_name_becomes_a_plain_project_name() {
        let name = |p: &str| project_name_for(Path::new(p));
        assert_eq!(name("/r/todo-app.md").as_deref(), Some("todo-app"));
        assert_eq!(name("/r/My Shop v2.txt").as_deref(), Some("My-Shop-v2"));
        assert_eq!(name("/r/__x.md").as_deref(), Some("x"));
        assert_eq!(name("/r/---.md"), None);
        assert_eq!(
            name(&format!("/r/{}.md", "a".repeat(100))).unwrap().len(),
            MAX_NAME_CHARS
        );
    }

    #[test]
    fn only_visible_md_and_txt_files_are_requirements() {
        assert!(is_requirements(Path::new("/r/a.md")));
        assert!(is_requirements(Path::new("/r/a.txt")));
        assert!(!is_requirements(Path::new("/r/.a.md")));
        assert!(!is_requirements(Path::new("/r/a.md.swp")));
        assert!(!is_requirements(Path::new("/r/a.pdf")));
    }
}
