//! Dry runs (`--dry-run`, `ORCH_DRY_RUN=true`, `dry_run = true`): the
//! whole cycle — plan, work, verify, judge, merge — on the simulated
//! provider, against copies, so nothing real changes.
//!
//! - State: a fresh copy of the real database in `<data_dir>/dry-run`
//!   (same tasks, same history) at the start of every dry run.
//! - Repository: a fresh scratch clone of the project's repository in
//!   `<data_dir>/dry-run/repos/<project>`, and the in-memory config's
//!   project `path` pointed at it. Its main branch is the user's main as it
//!   is now (committed work only, as in a real run).
//!
//! How the clone is made, and why: `git init`, then `git fetch` of every
//! branch, tag and `refs/orch/*` ref from the user's repository, then
//! `git reset --hard` to check main out. A fetch from a local path runs
//! `git upload-pack` there, which only reads; objects arrive as a pack, so
//! the clone shares no file with the user's repository. `git clone`
//! (`--local`, the default for a path) would hardlink the object files, and
//! git "freshens" an object it is about to write again by touching the
//! existing file's mtime — with a hardlink that file is the user's. The
//! clone also has no remote, so nothing run in it can push back. Only
//! read-only commands (`rev-parse`, `symbolic-ref`) run in the user's
//! repository itself.

use crate::CliError;
use orch_config::Config;
use orch_engine::{CycleSummary, DataPaths, ProjectLock};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a dry run works, and what it started from.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// The user's repository, never written to.
    pub repository: PathBuf,
    /// The scratch clone the dry run works on.
    pub clone: PathBuf,
    pub main_branch: String,
    /// The commit main pointed at in both when the dry run started.
    pub base: String,
}

/// What a dry run did to its clone, for the closing lines and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    pub repository: String,
    pub clone: String,
    pub main_branch: String,
    pub main_before: String,
    pub main_after: String,
    /// Commits that reached the clone's main, newest first (`sha subject`).
    pub merged_commits: Vec<String>,
    /// Whether the user's main still points where it did.
    pub repository_unchanged: bool,
}

/// Prepares a dry run of `project`: a fresh copy of the real state and a
/// fresh scratch clone, with `config`'s project pointed at the clone. Both
/// are made under the dry-run project lock, so a dry run already running
/// for the project is refused instead of having its clone pulled away.
pub async fn prepare(config: &mut Config, project: &str) -> Result<Scratch, CliError> {
    let dry_dir = config.data_dir_abs();
    let paths = DataPaths::new(&dry_dir);
    let _lock = ProjectLock::acquire(&paths.lock(project), project)
        .map_err(|e| CliError::failed(e.to_string()))?;
    refresh_state(&dry_dir)?;

    let pc = super::require_project(config, project)?;
    let repository = config.project_path(pc);
    let user = orch_git::Git::open(&repository)
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let main_branch = if pc.main_branch.is_empty() {
        user.default_branch()
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
    } else {
        pc.main_branch.clone()
    };
    let base = user
        .rev_parse(&format!("refs/heads/{main_branch}"))
        .await
        .map_err(|e| {
            CliError::failed(format!(
                "the dry run starts from branch `{main_branch}` of {}, which cannot be read: {e}",
                repository.display()
            ))
        })?;
    let repository = user.path().to_path_buf();

    let clone = dry_dir.join("repos").join(project);
    make_clone(&repository, &clone, &main_branch).await?;
    let head = git_out(&clone, &["rev-parse", "HEAD"]).await?;
    if head != base {
        return Err(CliError::failed(format!(
            "the scratch clone at {} has main at {head}, not {base} like {}: was the repository \
             changed while the dry run started? Run it again",
            clone.display(),
            repository.display()
        )));
    }
    for p in &mut config.projects {
        if p.name == project {
            p.path = clone.clone();
            p.main_branch = main_branch.clone();
        }
    }
    Ok(Scratch {
        repository,
        clone,
        main_branch,
        base,
    })
}

/// A dry run works on a fresh copy of the real state (same tasks, same
/// history), so it shows what a real run would do without changing it.
fn refresh_state(dry_dir: &Path) -> Result<(), CliError> {
    let Some(real_dir) = dry_dir.parent() else {
        return Ok(());
    };
    let real_db = DataPaths::new(real_dir).db();
    let dry_db = DataPaths::new(dry_dir).db();
    let fail = |e: std::io::Error| {
        CliError::failed(format!(
            "cannot prepare the dry-run state in {}: {e}",
            dry_dir.display()
        ))
    };
    std::fs::create_dir_all(dry_dir).map_err(fail)?;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", dry_db.display()));
        if p.exists() {
            std::fs::remove_file(&p).map_err(fail)?;
        }
    }
    if real_db.exists() {
        orch_state::Store::open(&real_db)?.snapshot_to(&dry_db)?;
    }
    Ok(())
}

/// Replaces `clone` with a fresh clone of `repository` (see the module doc
/// for why it is made this way).
async fn make_clone(repository: &Path, clone: &Path, main_branch: &str) -> Result<(), CliError> {
    if clone.exists() {
        std::fs::remove_dir_all(clone).map_err(|e| {
            CliError::failed(format!(
                "cannot remove the previous dry run's clone {}: {e}; delete it and try again",
                clone.display()
            ))
        })?;
    }
    std::fs::create_dir_all(clone)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", clone.display())))?;
    let source = repository.display().to_string();
    git_out(clone, &["init", "--quiet", "--initial-branch", main_branch]).await?;
    git_out(
        clone,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            // HEAD names main, which this fetch creates.
            "--update-head-ok",
            &source,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
            "+refs/orch/*:refs/orch/*",
        ],
    )
    .await?;
    git_out(clone, &["reset", "--quiet", "--hard", "HEAD"]).await?;
    Ok(())
}

/// Runs git in `dir` and returns its trimmed stdout, or an error naming the
/// command and what git said.
async fn git_out(dir: &Path, args: &[&str]) -> Result<String, CliError> {
    let mut spec = orch_process::ProcessSpec::new("git")
        // Never a prompt (credentials, editors) in a scratch clone.
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(args.iter().copied())
        .cwd(dir);
    if let Some(parent) = dir.parent() {
        // git never looks above `dir` for a repository: should the clone
        // be incomplete, a command meant for it fails instead of finding
        // the user's repository (data_dir may lie inside it).
        spec = spec.env("GIT_CEILING_DIRECTORIES", parent.display().to_string());
    }
    let out = orch_process::run(spec)
        .await
        .map_err(|e| CliError::failed(format!("cannot run git for the dry run: {e}")))?;
    if !out.success() {
        return Err(CliError::failed(format!(
            "dry run: `git {1}` in {0} failed: {2}",
            dir.display(),
            args.join(" "),
            out.stderr.trim()
        )));
    }
    Ok(out.stdout.trim().to_string())
}

/// What reached the clone's main, and whether the user's main is where it
/// was.
pub async fn report(s: &Scratch) -> Result<DryRunReport, CliError> {
    let main_ref = format!("refs/heads/{}", s.main_branch);
    let main_after = git_out(&s.clone, &["rev-parse", &main_ref]).await?;
    let log = git_out(
        &s.clone,
        &[
            "log",
            "--first-parent",
            "--format=%h %s",
            &format!("{}..{main_after}", s.base),
        ],
    )
    .await?;
    let user_main = git_out(
        &s.repository,
        &["rev-parse", "--verify", "--quiet", &main_ref],
    )
    .await
    .unwrap_or_default();
    Ok(DryRunReport {
        repository: s.repository.display().to_string(),
        clone: s.clone.display().to_string(),
        main_branch: s.main_branch.clone(),
        main_before: s.base.clone(),
        main_after,
        merged_commits: log.lines().map(str::to_string).collect(),
        repository_unchanged: user_main == s.base,
    })
}

/// The closing lines of a dry run: where it worked and what landed there.
pub fn print_report(r: &DryRunReport, project: &str, summary: &CycleSummary) {
    let width = crate::table::terminal_width();
    println!();
    println!(
        "dry run: everything above happened in a scratch clone; {} was not touched{}",
        r.repository,
        if r.repository_unchanged {
            ""
        } else {
            " by orch (its main moved meanwhile: someone else committed)"
        }
    );
    println!("  scratch clone: {}", r.clone);
    if r.merged_commits.is_empty() {
        println!(
            "  nothing merged there: {} is still at {}",
            r.main_branch,
            short(&r.main_before)
        );
    } else {
        println!(
            "  merged there: {} commit(s), {} {}..{}",
            r.merged_commits.len(),
            r.main_branch,
            short(&r.main_before),
            short(&r.main_after)
        );
        for c in &r.merged_commits {
            println!(
                "    {}",
                crate::table::ellipsize(c, width.saturating_sub(4))
            );
        }
        println!("  look: git -C {} log --stat {}", r.clone, r.main_branch);
    }
    let example = summary
        .tasks
        .first()
        .map(|t| t.id.as_str())
        .unwrap_or("TASK");
    println!("  details: orch --dry-run tasks --project {project}; orch --dry-run show {example}");
    println!("  the clone and the dry-run state are replaced by the next dry run");
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
