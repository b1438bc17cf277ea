//! From a requirements file to a finished project (`orch new`, and `orch
//! serve`'s requirements folder), in steps that each leave something a
//! person can pick up:
//!
//! 1. [`check`]: the name, the requirements file and the place are checked;
//!    nothing is written.
//! 2. [`create`]: a git repository with the requirements committed as
//!    `REQUIREMENTS.md`, registered as a `[[projects]]` entry of the config
//!    file built from its `[new_projects]` template (edited with
//!    `toml_edit`, so the user's formatting and comments stay as they
//!    were). If either half fails, the other is undone.
//! 3. [`plan`]: the architect writes `PLAN.md` in the milestone format; a
//!    plan that does not parse is refused whole (kept under the audit
//!    trail, nothing committed or imported), a good one is committed and
//!    imported as ordered tasks, as `orch plan import` does.
//! 4. the engine runs until idle (the caller's: `orch run`'s path for the
//!    CLI, the service's for `orch serve`; [`build`] does all of it).
//! 5. [`archive`]: once every task merged (or was cancelled), `git archive`
//!    of main into `<data_dir>/archive/NAME_<UTC timestamp>.tar.gz`.
//!
//! The project is registered in the config file, not only in the store,
//! because every command (`orch run`, `orch serve`, the API) finds
//! projects there: a project made here is an ordinary project afterwards.

use crate::{Result, RuntimeError};
use orch_config::{Config, ConfigFormat, ProjectConfig};
use orch_core::{Task, TaskStatus};
use orch_engine::{DataPaths, Engine, RunOptions, Shutdown};
use orch_git::{ArchiveFormat, Git};
use orch_planner::plan_file::{self, PlanFile};
use orch_protocol::{self as protocol, Event, Stage};
use orch_state::StateStore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest requirements file read: about 16k tokens, which every model
/// orch talks to takes in one prompt with room for its answer.
pub const MAX_REQUIREMENTS_BYTES: u64 = 64 * 1024;
/// Largest PLAN.md accepted from the architect.
pub const MAX_PLAN_BYTES: usize = 128 * 1024;
/// Longest project name (it names a directory, a lock file and an archive).
pub const MAX_NAME_CHARS: usize = 64;
/// The requirements, as committed in the new repository.
pub const REQUIREMENTS_FILE: &str = "REQUIREMENTS.md";
/// The architect's plan, as committed in the new repository.
pub const PLAN_FILE: &str = "PLAN.md";

/// A checked request for a new project (nothing written yet).
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    /// The requirements file, absolute.
    pub requirements_path: PathBuf,
    /// Its text.
    pub requirements: String,
    /// Where the repository goes, absolute.
    pub dir: PathBuf,
    /// The branch work lands on (`main_branch` of the template, else main).
    pub main_branch: String,
    /// The config file the project is registered in.
    pub config_path: PathBuf,
    /// The config's data_dir (its lock for config edits lives there).
    pub data_dir: PathBuf,
}

/// SHA-256 of `text`, hex (what a requirements file's claim records).
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn usage(m: impl Into<String>) -> RuntimeError {
    RuntimeError::Usage(m.into())
}

fn failed(m: impl Into<String>) -> RuntimeError {
    RuntimeError::Failed(m.into())
}

/// What a person does to carry on with a registered project.
pub fn resume_hint(name: &str) -> String {
    format!(
        "carry on with `orch run --project {name} --until-idle`, then `orch archive --project {name}`"
    )
}

/// Step 1: checks everything `create` needs, writing nothing. `dir`
/// defaults to `<data_dir>/projects/NAME`.
pub fn check(
    config: &Config,
    store: &dyn StateStore,
    name: &str,
    requirements: &Path,
    dir: Option<&Path>,
) -> Result<NewProject> {
    if config.dry_run {
        return Err(usage(
            "orch new makes a real repository and registers it in the config; it does not do dry runs. Run it without --dry-run (then try the project with `orch --dry-run run --project NAME`)",
        ));
    }
    check_name(name)?;
    let config_path = std::path::absolute(&config.source).unwrap_or_else(|_| config.source.clone());
    if ConfigFormat::from_path(&config_path).ok() != Some(ConfigFormat::Toml) {
        return Err(usage(format!(
            "{} is not a TOML file; orch new registers the project by editing the config, which it does for TOML configs only. Use an orch.toml, or add the project by hand",
            config_path.display()
        )));
    }
    if let Some(existing) = config.project(name) {
        return Err(usage(format!(
            "project `{name}` already exists in {} (repository {}); orch new only makes new projects: {}",
            config_path.display(),
            config.project_path(existing).display(),
            resume_hint(name)
        )));
    }
    if store.project(name).is_ok() {
        return Err(usage(format!(
            "the state in {} already has a project named `{name}` (from a project since removed from the config); pick another name",
            config.data_dir_abs().display()
        )));
    }
    let (requirements_path, text) = read_requirements(requirements)?;
    let dir = match dir {
        Some(d) => {
            std::path::absolute(d).map_err(|e| usage(format!("--dir {}: {e}", d.display())))?
        }
        None => config.data_dir_abs().join("projects").join(name),
    };
    check_dir(&dir)?;
    let project = config.project_from_template(name, &dir).map_err(usage)?;
    let main_branch = match project.main_branch.as_str() {
        "" => "main".to_string(),
        b => b.to_string(),
    };
    Ok(NewProject {
        name: name.to_string(),
        requirements_path,
        requirements: text,
        dir,
        main_branch,
        config_path,
        data_dir: config.data_dir_abs(),
    })
}

/// A project name: it names the repository's directory, its lock file
/// and its archive, so only plain characters, starting with one that is
/// not a dot or a dash.
pub fn check_name(name: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(plain)
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(usage(format!(
        "project name `{name}` is not usable: use 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` and `.`, starting with a letter or digit (e.g. `todo-app`)"
    )))
}

/// The requirements file's absolute path and text, or why it cannot be
/// used.
pub fn read_requirements(path: &Path) -> Result<(PathBuf, String)> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => usage(format!(
            "requirements file {shown} does not exist; give the path of a markdown or text file that describes the project"
        )),
        _ => usage(format!("cannot read requirements file {shown}: {e}")),
    })?;
    if !meta.is_file() {
        return Err(usage(format!(
            "requirements file {shown} is not a regular file; give the path of a markdown or text file"
        )));
    }
    if meta.len() > MAX_REQUIREMENTS_BYTES {
        return Err(usage(format!(
            "requirements file {shown} has {} bytes; at most {} KiB are read: shorten it, or split the work into several projects",
            meta.len(),
            MAX_REQUIREMENTS_BYTES / 1024
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| usage(format!("cannot read requirements file {shown}: {e}")))?;
    if bytes.contains(&0) {
        return Err(usage(format!(
            "requirements file {shown} is not text (it has NUL bytes); give a markdown or text file"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "requirements file {shown} is not UTF-8 text; save it as UTF-8"
        ))
    })?;
    if text.trim().is_empty() {
        return Err(usage(format!(
            "requirements file {shown} is empty; describe the project in it first"
        )));
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Ok((abs, text))
}

/// The repository's place must be new or an empty directory.
fn check_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if dir.exists() && !dir.is_dir() => {
            return Err(usage(format!(
                "{} exists and is not a directory ({e}); pass --dir with a new or empty directory",
                dir.display()
            )))
        }
        Err(e) => return Err(usage(format!("cannot use {}: {e}", dir.display()))),
        Ok(entries) => entries,
    };
    if entries.count() > 0 {
        return Err(usage(format!(
            "{} already exists and is not empty; pass --dir with a new or empty directory",
            dir.display()
        )));
    }
    Ok(())
}

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The config, loaded again with the new project in it.
    pub config: Config,
    /// The first commit (REQUIREMENTS.md).
    pub commit: String,
}

/// Step 2: the repository and its registration. All or nothing: when the
/// config cannot be written, the repository is removed again.
pub async fn create(store: &dyn StateStore, np: &NewProject) -> Result<Created> {
    let existed = np.dir.exists();
    let undo = || {
        let _ = std::fs::remove_dir_all(&np.dir);
        if existed {
            let _ = std::fs::create_dir_all(&np.dir);
        }
    };
    let commit = match init_repository(np).await {
        Ok(c) => c,
        Err(e) => {
            undo();
            return Err(e);
        }
    };
    if let Err(e) = register(np) {
        undo();
        return Err(e);
    }
    let config = orch_config::load(&np.config_path).map_err(|e| {
        failed(format!(
            "project `{}` was registered but the config no longer loads: {e}",
            np.name
        ))
    })?;
    let path = np.dir.display().to_string();
    store.ensure_project(&np.name, &path)?;
    store.record(&Event::new(
        &np.name,
        protocol::ProjectCreated {
            path: path.clone(),
            requirements: np.requirements_path.display().to_string(),
            commit: commit.clone(),
        },
        format!(
            "created project {} at {path} from {}",
            np.name,
            np.requirements_path.display()
        ),
    ))?;
    Ok(Created { config, commit })
}

async fn init_repository(np: &NewProject) -> Result<String> {
    std::fs::create_dir_all(&np.dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", np.dir.display())))?;
    std::fs::write(np.dir.join(REQUIREMENTS_FILE), &np.requirements).map_err(|e| {
        failed(format!(
            "cannot write {}: {e}",
            np.dir.join(REQUIREMENTS_FILE).display()
        ))
    })?;
    let message = format!("Requirements for {}", np.name);
    let git = Git::init_with_commit(&np.dir, &np.main_branch, &message)
        .await
        .map_err(|e| failed(format!("cannot create the repository: {e}")))?;
    git.rev_parse(&np.main_branch)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Appends the project to the config file: a `[[projects]]` entry with
/// its name and path and a copy of `[new_projects]` as written (comments,
/// `${VAR}` references and sub-tables such as `[new_projects.refine]`
/// included). The rest of the file is left byte for byte; the result is
/// loaded and validated before it replaces the file.
fn register(np: &NewProject) -> Result<()> {
    // One writer of the config at a time (another `orch new`, or serve).
    // Not `locks/<name>.lock`: that is a project's.
    let lock_path = np.data_dir.join("locks").join("config").join("edit.lock");
    let _lock = lock_file(&lock_path)?;
    // The file itself, when the config is a symlink to it.
    let target = np
        .config_path
        .canonicalize()
        .unwrap_or_else(|_| np.config_path.clone());
    let text = std::fs::read_to_string(&target)
        .map_err(|e| failed(format!("cannot read {}: {e}", target.display())))?;
    let new_text = with_project(&text, &np.name, &np.dir, &np.requirements_path)?;
    orch_config::load_str(&new_text, ConfigFormat::Toml, &np.config_path).map_err(|e| {
        usage(format!(
            "the new project's entry would make the config invalid, so it was not written: {e}"
        ))
    })?;
    write_replacing(&target, &new_text)
}

fn lock_file(path: &Path) -> Result<std::fs::File> {
    let io = |e: std::io::Error| failed(format!("cannot lock {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Replaces `path` with `text` through a temporary file beside it, keeping
/// the file's permissions.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| failed(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = std::fs::write(&tmp, text)
        .and_then(|_| match std::fs::metadata(path) {
            Ok(m) => std::fs::set_permissions(&tmp, m.permissions()),
            Err(_) => Ok(()),
        })
        .and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// `text` (a TOML config) with a `[[projects]]` entry for `name` at `dir`
/// made from its `[new_projects]` table.
pub fn with_project(text: &str, name: &str, dir: &Path, requirements: &Path) -> Result<String> {
    use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| usage(format!("the config is not valid TOML: {e}")))?;
    let mut entry = Table::new();
    let from = requirements
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
        })
        .unwrap_or_default();
    entry
        .decor_mut()
        .set_prefix(format!("\n# Made by `orch new` from {from}.\n"));
    entry.insert("name", toml_edit::value(name));
    // Written so the loader reads it back verbatim (`${` is interpolation).
    entry.insert(
        "path",
        toml_edit::value(dir.display().to_string().replace("${", "$${")),
    );
    match doc.get("new_projects") {
        Some(Item::Table(t)) => {
            for (key, item) in t.iter() {
                if let Some((k, _)) = t.get_key_value(key) {
                    entry.insert_formatted(k, detached(item));
                }
            }
        }
        Some(Item::Value(toml_edit::Value::InlineTable(t))) => {
            for (key, value) in t.iter() {
                let mut value = value.clone();
                value.decor_mut().clear();
                entry.insert(key, Item::Value(value));
            }
        }
        _ => {
            return Err(usage(
                "the config has no [new_projects] table: add one with the settings new projects start from, at least `worker_model = \"provider:model\"` (see the README's configuration reference)",
            ))
        }
    }
    for key in orch_config::PER_PROJECT_KEYS {
        if doc.get("new_projects").and_then(|t| t.get(key)).is_some() {
            return Err(usage(format!(
                "new_projects.{key}: remove it; each new project gets its own {key}"
            )));
        }
    }
    match doc.get_mut("projects") {
        None => {
            let mut list = ArrayOfTables::new();
            list.push(entry);
            doc.insert("projects", Item::ArrayOfTables(list));
        }
        Some(Item::ArrayOfTables(list)) => list.push(entry),
        Some(Item::Value(toml_edit::Value::Array(a))) if a.is_empty() => {
            let mut list = ArrayOfTables::new();
            list.push(entry);
            doc.insert("projects", Item::ArrayOfTables(list));
        }
        Some(_) => {
            return Err(usage(
                "the config's `projects` is not written as [[projects]] tables, so orch new cannot add to it; write each project as a [[projects]] table",
            ))
        }
    }
    Ok(doc.to_string())
}

/// A copy of `item` placed nowhere yet: the template's sub-tables keep
/// their contents and comments but not their place in the file, so they
/// are written under the new `[[projects]]` entry.
fn detached(item: &toml_edit::Item) -> toml_edit::Item {
    use toml_edit::{ArrayOfTables, Item};
    match item {
        Item::Table(t) => Item::Table(detached_table(t)),
        Item::ArrayOfTables(list) => {
            let mut out = ArrayOfTables::new();
            for t in list.iter() {
                out.push(detached_table(t));
            }
            Item::ArrayOfTables(out)
        }
        other => other.clone(),
    }
}

fn detached_table(t: &toml_edit::Table) -> toml_edit::Table {
    let mut out = toml_edit::Table::new();
    out.set_implicit(t.is_implicit());
    out.set_dotted(t.is_dotted());
    *out.decor_mut() = t.decor().clone();
    for (key, item) in t.iter() {
        if let Some((k, _)) = t.get_key_value(key) {
            out.insert_formatted(k, detached(item));
        }
    }
    out
}

/// What [`plan`] did.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The commit that added PLAN.md.
    pub commit: String,
    /// The imported tasks, in plan order.
    pub tasks: Vec<Task>,
    pub milestone: Option<String>,
}

/// Step 3: the architect's PLAN.md, checked, committed and imported. A
/// refused plan writes nothing to the repository or the queue; the
/// answer is kept under the project's audit trail for a person to read.
pub async fn plan(
    config: &Config,
    engine: &Engine,
    store: &dyn StateStore,
    requirements: &str,
) -> Result<Planned> {
    let pc = engine.project().clone();
    let name = &pc.name;
    let answer = engine.architect_project_plan(requirements).await.map_err(|e| {
        failed(format!(
            "the architect wrote no plan: {e}; nothing was committed or imported. Project `{name}` is registered with its requirements; write a PLAN.md (`## Task N.M: Title` sections) and `orch plan import PLAN.md --project {name}`, then {}",
            resume_hint(name)
        ))
    })?;
    let (text, parsed) = match check_plan(&answer) {
        Ok(ok) => ok,
        Err(why) => return Err(refuse_plan(config, &pc, store, &answer, &why)),
    };
    let repo = config.project_path(&pc);
    let plan_path = repo.join(PLAN_FILE);
    orch_engine::write_atomic(&plan_path, &text)
        .map_err(|e| failed(format!("cannot write {}: {e}", plan_path.display())))?;
    let git = Git::open(&repo).await.map_err(|e| failed(e.to_string()))?;
    let commit = match git
        .commit_all(&repo, &format!("Plan for {name}, by the architect"))
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => git.head(&repo).await.map_err(|e| failed(e.to_string()))?,
        Err(e) => {
            let _ = std::fs::remove_file(&plan_path);
            return Err(failed(format!(
                "cannot commit {PLAN_FILE}: {e}; nothing was imported. {}",
                resume_hint(name)
            )));
        }
    };
    let imported = store
        .import_plan(name, &parsed.new_tasks(name, PLAN_FILE))
        .map_err(|e| {
            failed(format!(
                "{PLAN_FILE} is committed but could not be imported: {e}; import it with `orch plan import {} --project {name}`, then {}",
                plan_path.display(),
                resume_hint(name)
            ))
        })?;
    Ok(Planned {
        commit,
        tasks: imported.created,
        milestone: parsed.milestone,
    })
}

/// Keeps the refused answer, records why, and says what to do.
fn refuse_plan(
    config: &Config,
    pc: &ProjectConfig,
    store: &dyn StateStore,
    answer: &str,
    why: &str,
) -> RuntimeError {
    let name = &pc.name;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let kept = DataPaths::new(config.data_dir_abs())
        .plans(name)
        .join(format!("{PLAN_FILE}.refused-{stamp}.md"));
    let kept_note = match orch_engine::write_atomic(&kept, answer) {
        Ok(()) => format!("the architect's answer is kept at {}", kept.display()),
        Err(e) => format!("the architect's answer could not be kept ({e})"),
    };
    let message = format!(
        "the architect's {PLAN_FILE} was refused: {why}; nothing was committed or imported"
    );
    let ev = Event::new(
        name,
        protocol::Warning {
            stage: Some(Stage::Architect),
            file: Some(kept.display().to_string()),
            commit: None,
        },
        message.clone(),
    );
    let _ = store.record(&ev);
    failed(format!(
        "{message}. Project `{name}` is registered with its requirements at {}; {kept_note}. Write a {PLAN_FILE} yourself (`## Task N.M: Title` sections) and `orch plan import {PLAN_FILE} --project {name}`, then {}",
        config.project_path(pc).display(),
        resume_hint(name)
    ))
}

/// The architect's answer as a plan file, or why it is refused: too big,
/// not text, not parseable, or without a single task section. An answer
/// wrapped whole in one code fence is unwrapped first (models do that).
pub fn check_plan(answer: &str) -> std::result::Result<(String, PlanFile), String> {
    if answer.len() > MAX_PLAN_BYTES {
        return Err(format!(
            "it has {} bytes, more than the {} KiB a plan may have",
            answer.len(),
            MAX_PLAN_BYTES / 1024
        ));
    }
    if answer
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("it has control characters; a plan is plain markdown".into());
    }
    let text = unfenced(answer).trim().to_string() + "\n";
    let parsed = plan_file::parse(&text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    if parsed.tasks.is_empty() {
        return Err("it has no `## Task N.M: Title` sections, so there is nothing to build".into());
    }
    Ok((text, parsed))
}

/// The inside of an answer that is one code fence (```markdown … ```).
fn unfenced(answer: &str) -> &str {
    let t = answer.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some((_, body)) = rest.split_once('\n') else {
        return t;
    };
    match body.trim_end().strip_suffix("```") {
        Some(inner) if !inner.contains("\n```") => inner,
        _ => t,
    }
}

/// The tasks of `project` that are neither merged nor cancelled.
pub fn unfinished(store: &dyn StateStore, project: &str) -> Result<Vec<Task>> {
    Ok(store
        .tasks(Some(project), None)?
        .into_iter()
        .filter(|t| !matches!(t.status, TaskStatus::Merged | TaskStatus::Cancelled))
        .collect())
}

/// What [`archive`] wrote.
#[derive(Debug, Clone)]
pub struct Archived {
    pub path: PathBuf,
    pub bytes: u64,
    /// The commit of main archived.
    pub commit: String,
}

/// Step 5: the finished main tree, archived under `<data_dir>/archive/`.
/// Refused while a task is unfinished: the archive is of a finished
/// project, and the message says what is left and how to finish it.
pub async fn archive(
    config: &Config,
    store: &dyn StateStore,
    project: &str,
    format: ArchiveFormat,
) -> Result<Archived> {
    let pc = crate::project(config, project)?;
    let left = unfinished(store, project)?;
    if !left.is_empty() {
        let list: Vec<String> = left
            .iter()
            .map(|t| format!("{} {} ({})", t.id, t.title, t.status))
            .collect();
        return Err(failed(format!(
            "not archived: {} task(s) of {project} are not merged: {}. Finish them (`orch tasks --project {project}`; answer questions with `orch answer`, give up on one with `orch cancel`), run `orch run --project {project} --until-idle`, then `orch archive --project {project}`",
            left.len(),
            list.join("; ")
        )));
    }
    let repo = config.project_path(pc);
    let git = Git::open(&repo).await.map_err(|e| failed(e.to_string()))?;
    let branch = main_branch(&git, pc).await?;
    let commit = git
        .rev_parse(&branch)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let dir = config.data_dir_abs().join("archive");
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let dest = archive_path(&dir, project, format);
    let bytes = git
        .archive(&branch, format, &dest)
        .await
        .map_err(|e| failed(format!("cannot archive {project}: {e}")))?;
    store.record(&Event::new(
        project,
        protocol::ProjectArchived {
            path: dest.display().to_string(),
            bytes,
            commit: commit.clone(),
        },
        format!(
            "archived {project}'s {branch} ({}) at {} ({bytes} bytes)",
            commit.get(..12).unwrap_or(&commit),
            dest.display()
        ),
    ))?;
    Ok(Archived {
        path: dest,
        bytes,
        commit,
    })
}

async fn main_branch(git: &Git, pc: &ProjectConfig) -> Result<String> {
    if !pc.main_branch.is_empty() {
        return Ok(pc.main_branch.clone());
    }
    git.default_branch()
        .await
        .map_err(|e| failed(e.to_string()))
}

/// `NAME_<UTC timestamp>.<ext>`, with a counter when that name is taken
/// (two archives within a second).
fn archive_path(dir: &Path, project: &str, format: ArchiveFormat) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let ext = format.as_str();
    let mut path = dir.join(format!("{project}_{stamp}.{ext}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{project}_{stamp}-{n}.{ext}"));
        n += 1;
    }
    path
}

/// What [`build`] did, start to end.
#[derive(Debug)]
pub struct Built {
    pub repo: PathBuf,
    pub planned: Planned,
    pub archived: Archived,
}

/// The whole flow for one requirements file with the engine run in
/// process (what `orch serve` does; the CLI runs the same steps with its
/// live progress): check, create, plan, run until idle, archive.
/// `progress` hears of each step.
pub async fn build(
    config: &Config,
    store: Arc<dyn StateStore>,
    name: &str,
    requirements: &Path,
    shutdown: &Shutdown,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Built> {
    let np = check(config, store.as_ref(), name, requirements, None)?;
    let created = create(store.as_ref(), &np).await?;
    progress(&format!(
        "created {} with {REQUIREMENTS_FILE} ({})",
        np.dir.display(),
        short(&created.commit)
    ));
    let built = crate::engine(&created.config, store.clone(), name).await?;
    let planned = plan(
        &created.config,
        &built.engine,
        store.as_ref(),
        &np.requirements,
    )
    .await?;
    progress(&format!(
        "{PLAN_FILE} committed ({}): {} task(s)",
        short(&planned.commit),
        planned.tasks.len()
    ));
    let opts = RunOptions {
        cycles: RUN_CYCLES,
        until_idle: true,
    };
    let summary = built
        .engine
        .run_until(opts, shutdown)
        .await
        .map_err(|e| failed(format!("the run stopped: {e}; {}", resume_hint(name))))?;
    if let Some(stopped) = summary.stopped {
        return Err(failed(format!(
            "{stopped} before the project was finished; {}",
            resume_hint(name)
        )));
    }
    let archived = archive(&created.config, store.as_ref(), name, ArchiveFormat::TarGz).await?;
    Ok(Built {
        repo: np.dir,
        planned,
        archived,
    })
}

/// Cycles [`build`]'s run may take (it ends once nothing is pending or
/// waiting to merge); as a triggered run under `orch serve`.
pub const RUN_CYCLES: u32 = 10;

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const CONFIG: &str = r#"# my portfolio
data_dir = ".orch"   # state lives here

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8080/v1"

[[projects]]
name = "old"   # kept as written
path = "old"
worker_model = "local:w"

# What orch new gives each project.
[new_projects]
worker_model = "local:w"   # the cheap one
test_command = "python3 -m pytest -q"
api = "${NOT_SET_ANYWHERE}"

[new_projects.refine]
threshold = 8

[server]
shutdown_grace_seconds = 5
"#;

    fn parse(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_new_entry_copies_the_template_and_leaves_the_rest_as_written() {
        let out = with_project(
            CONFIG,
            "todo",
            Path::new("/data/projects/todo"),
            Path::new("/in/todo.md"),
        )
        .unwrap();
        // Everything that was there is still there, byte for byte, in order.
        let mut rest = out.as_str();
        for line in CONFIG.lines() {
            let at = rest
                .find(line)
                .unwrap_or_else(|| panic!("lost {line:?}:\n{out}"));
            rest = &rest[at + line.len()..];
        }
        let doc = parse(&out);
        let projects = doc["projects"].as_array().unwrap();
        assert_eq!(projects.len(), 2);
        let new = projects[1].as_table().unwrap();
        assert_eq!(new["name"].as_str(), Some("todo"));
        assert_eq!(new["path"].as_str(), Some("/data/projects/todo"));
        assert_eq!(new["worker_model"].as_str(), Some("local:w"));
        assert_eq!(new["refine"]["threshold"].as_integer(), Some(8));
        // Interpolation is left for the loader, as the template wrote it.
        assert_eq!(new["api"].as_str(), Some("${NOT_SET_ANYWHERE}"));
        assert!(out.contains("worker_model = \"local:w\"   # the cheap one\n"));
        // The new entry sits after the last project, before [new_projects].
        let entry = out.find("name = \"todo\"").unwrap();
        assert!(entry > out.find("name = \"old\"").unwrap());
        assert!(entry < out.find("[new_projects]").unwrap(), "{out}");
        assert!(out.contains("[projects.refine]\nthreshold = 8\n"), "{out}");
        assert!(out.contains("# Made by `orch new` from todo.md."));
    }

    #[test]
    fn a_config_without_projects_or_with_an_inline_template_gets_its_first_entry() {
        let text =
            "data_dir = \".orch\"\nnew_projects = { worker_model = \"p:w\", max_workers = 1 }\n";
        let out = with_project(text, "a", Path::new("/x/${HOME}/a"), Path::new("a.md")).unwrap();
        assert!(out.starts_with(text), "{out}");
        let doc = parse(&out);
        let new = doc["projects"].as_array().unwrap()[0].as_table().unwrap();
        assert_eq!(new["max_workers"].as_integer(), Some(1));
        assert_eq!(new["path"].as_str(), Some("/x/$${HOME}/a"));
    }

    #[test]
    fn no_template_or_a_template_with_a_name_is_refused() {
        let err = with_project(
            "data_dir = \".orch\"\n",
            "a",
            Path::new("/a"),
            Path::new("a.md"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("[new_projects]"), "{err}");
        let err = with_project(
            "[new_projects]\nname = \"x\"\nworker_model = \"p:w\"\n",
            "a",
            Path::new("/a"),
            Path::new("a.md"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("new_projects.name"), "{err}");
        let err = with_project(
            "projects = [{ name = \"x\" }]\n[new_projects]\nworker_model = \"p:w\"\n",
            "a",
            Path::new("/a"),
            Path::new("a.md"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("[[projects]]"), "{err}");
    }

    #[test]
    fn names_are_plain_and_bounded() {
        for ok in ["todo", "todo-app", "a.b_c", "X1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a/b", "../up", "a b", &"x".repeat(65)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.to_string().contains("letters, digits"), "{bad}: {err}");
        }
    }

    #[test]
    fn requirements_must_be_a_small_non_empty_text_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let err = |path: &Path| read_requirements(path).unwrap_err().to_string();
        assert!(err(&p("missing.md")).contains("does not exist"));
        assert!(err(dir.path()).contains("not a regular file"));
        std::fs::write(p("empty.md"), " \n\n").unwrap();
        assert!(err(&p("empty.md")).contains("is empty"));
        std::fs::write(p("bin.md"), b"a\0b").unwrap();
        assert!(err(&p("bin.md")).contains("not text"));
        std::fs::write(p("latin1.md"), b"caf\xe9\n").unwrap();
        assert!(err(&p("latin1.md")).contains("UTF-8"));
        std::fs::write(p("big.md"), "x".repeat(MAX_REQUIREMENTS_BYTES as usize + 1)).unwrap();
        assert!(err(&p("big.md")).contains("KiB"));
        std::fs::write(p("ok.md"), "# A todo app\n").unwrap();
        let (abs, text) = read_requirements(&p("ok.md")).unwrap();
        assert!(abs.is_absolute());
        assert_eq!(text, "# A todo app\n");
    }

    #[test]
    fn a_plan_needs_task_sections_and_hostile_plans_are_refused_whole() {
        let good = "# Milestone 1: Todo\n\n## Task 1.1: Store\n**Files:** `todo.py`\n\nAdd it.\n\n## Task 1.2: CLI\nAdd a CLI.\n";
        let (text, plan) = check_plan(good).unwrap();
        assert_eq!(plan.tasks.len(), 2);
        assert_eq!(plan.tasks[0].allowed_files, vec!["todo.py"]);
        assert!(text.ends_with('\n'));
        // Wrapped in a fence, as models like to.
        let fenced = format!("```markdown\n{good}```\n");
        assert_eq!(check_plan(&fenced).unwrap().1, plan);

        let cases = [
            (
                "Sure! Here is a plan: build a todo app.",
                "no task sections",
            ),
            ("## Task 1.1: A\n**Files:** `../../etc/passwd`\n", "line 2"),
            ("## Task 1.1: A\n**Files:** `/etc/passwd`\n", "line 2"),
            ("## Task 1.1: A\nx\n## Task 1.1: B\ny\n", "already defined"),
            (
                "## Task 1.1: A\x1b[2J\nclear the screen\n",
                "control characters",
            ),
        ];
        for (answer, why) in cases {
            let err = check_plan(answer).unwrap_err();
            assert!(err.contains(why), "{answer:?}: {err}");
        }
        let huge = format!("## Task 1.1: A\n{}\n", "x".repeat(MAX_PLAN_BYTES));
        assert!(check_plan(&huge).unwrap_err().contains("KiB"));
    }

    #[test]
    fn the_repository_goes_in_a_new_or_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        check_dir(&dir.path().join("new")).unwrap();
        check_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        assert!(check_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not empty"));
        assert!(check_dir(&dir.path().join("f"))
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
    }

    #[test]
    fn archive_names_carry_the_project_and_a_utc_time_and_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive_path(dir.path(), "todo", ArchiveFormat::TarGz);
        let name = a.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("todo_") && name.ends_with("Z.tar.gz"),
            "{name}"
        );
        std::fs::write(&a, "x").unwrap();
        let b = archive_path(dir.path(), "todo", ArchiveFormat::TarGz);
        assert_ne!(a, b);
        assert!(archive_path(dir.path(), "t", ArchiveFormat::Zip)
            .to_string_lossy()
            .ends_with(".zip"));
    }
}
