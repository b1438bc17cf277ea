//! Tool implementations. Each call is parsed against its schema, every path
//! goes through [`crate::paths`], and the outcome is a [`ToolResult`]: text
//! for the model plus what to record (ok, refusal reason) and whether the
//! loop ends.
//!
//! File tools are blocking filesystem work, so they run on the blocking pool
//! and are raced against the worker's remaining time like everything else.

use crate::paths::{self, AllowList, PathRefusal, Resolved};
use crate::specs::{self, *};
use orch_sandbox::{ExecRequest, Sandbox};
use regex::RegexBuilder;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use walkdir::WalkDir;

/// Most entries `list_files` prints.
const MAX_LIST_ENTRIES: usize = 500;
/// Most hits `search` prints.
const MAX_SEARCH_HITS: usize = 200;
/// Characters of a matching line `search` prints.
const MAX_HIT_LINE: usize = 300;
/// Files larger than this are skipped by `search`.
const MAX_SEARCH_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// `search` stops after reading this much in total.
const MAX_SEARCH_TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// Directory entries any walk visits before stopping.
const MAX_WALK_ENTRIES: usize = 200_000;
/// Files larger than this are not read by `read_file`.
const MAX_READ_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes inspected for NUL to call a file binary (what git does).
const BINARY_SNIFF: usize = 8000;

/// What the loop needs to know after a call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Control {
    Continue,
    Finish(String),
    AskHuman(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolResult {
    /// The tool message the model sees.
    pub content: String,
    pub ok: bool,
    /// Set when the call was refused for safety.
    pub refused: Option<String>,
    pub control: Control,
}

impl ToolResult {
    fn ok(content: impl Into<String>) -> Self {
        ToolResult {
            content: content.into(),
            ok: true,
            refused: None,
            control: Control::Continue,
        }
    }
    fn error(message: impl Into<String>) -> Self {
        ToolResult {
            content: format!("error: {}", message.into()),
            ok: false,
            refused: None,
            control: Control::Continue,
        }
    }
    fn refused(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ToolResult {
            content: format!("refused: {reason}"),
            ok: false,
            refused: Some(reason),
            control: Control::Continue,
        }
    }
}

/// A failed file operation: a plain error or a safety refusal.
#[derive(Debug)]
enum Failure {
    Error(String),
    Refused(String),
}

impl From<PathRefusal> for Failure {
    fn from(r: PathRefusal) -> Self {
        if r.is_safety() {
            Failure::Refused(r.to_string())
        } else {
            Failure::Error(r.to_string())
        }
    }
}

impl From<Failure> for ToolResult {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Error(m) => ToolResult::error(m),
            Failure::Refused(m) => ToolResult::refused(m),
        }
    }
}

type FsResult = Result<String, Failure>;

/// Everything the tools need, shared with the blocking pool.
pub(crate) struct ToolContext {
    pub worktree: PathBuf,
    pub allow: AllowList,
    pub output_limit: usize,
    pub max_file_bytes: usize,
    pub sandbox: Arc<dyn Sandbox>,
    pub extra_ro: Vec<PathBuf>,
    pub sandbox_env: Vec<(String, String)>,
    pub max_run_timeout: Duration,
}

/// Executes one tool call. `remaining` is the worker's time left.
pub(crate) async fn execute(
    ctx: &Arc<ToolContext>,
    name: &str,
    raw_args: &str,
    remaining: Duration,
) -> ToolResult {
    match name {
        READ_FILE => {
            let args: ReadFileArgs = match parse_args(name, raw_args) {
                Ok(a) => a,
                Err(e) => return ToolResult::error(e),
            };
            blocking(ctx, remaining, move |ctx| read_file(ctx, &args)).await
        }
        WRITE_FILE => {
            let args: WriteFileArgs = match parse_args(name, raw_args) {
                Ok(a) => a,
                Err(e) => return ToolResult::error(e),
            };
            blocking(ctx, remaining, move |ctx| write_file(ctx, &args)).await
        }
        EDIT_FILE => {
            let args: EditFileArgs = match parse_args(name, raw_args) {
                Ok(a) => a,
                Err(e) => return ToolResult::error(e),
            };
            blocking(ctx, remaining, move |ctx| edit_file(ctx, &args)).await
        }
        LIST_FILES => {
            let args: ListFilesArgs = match parse_args(name, raw_args) {
                Ok(a) => a,
                Err(e) => return ToolResult::error(e),
            };
            blocking(ctx, remaining, move |ctx| list_files(ctx, &args)).await
        }
        SEARCH => {
            let args: SearchArgs = match parse_args(name, raw_args) {
                Ok(a) => a,
                Err(e) => return ToolResult::error(e),
            };
            blocking(ctx, remaining, move |ctx| search(ctx, &args)).await
        }
        RUN => match parse_args::<RunArgs>(name, raw_args) {
            Ok(args) => run(ctx, &args, remaining).await,
            Err(e) => ToolResult::error(e),
        },
        ASK_HUMAN => match parse_args::<AskHumanArgs>(name, raw_args) {
            Ok(args) => ToolResult {
                content: "Question recorded; a person will answer it.".into(),
                ok: true,
                refused: None,
                control: Control::AskHuman(args.question),
            },
            Err(e) => ToolResult::error(e),
        },
        FINISH => match parse_args::<FinishArgs>(name, raw_args) {
            Ok(args) => ToolResult {
                content: "Finished.".into(),
                ok: true,
                refused: None,
                control: Control::Finish(args.summary),
            },
            Err(e) => ToolResult::error(e),
        },
        other => ToolResult::error(format!(
            "unknown tool `{}`; the available tools are: {}",
            prefix_at_boundary(other, 100),
            specs::TOOL_NAMES.join(", ")
        )),
    }
}

/// Runs a file tool on the blocking pool, giving up at the deadline.
async fn blocking<F>(ctx: &Arc<ToolContext>, remaining: Duration, op: F) -> ToolResult
where
    F: FnOnce(&ToolContext) -> FsResult + Send + 'static,
{
    let ctx = Arc::clone(ctx);
    let task = tokio::task::spawn_blocking(move || op(&ctx));
    match tokio::time::timeout(remaining, task).await {
        Ok(Ok(Ok(text))) => ToolResult::ok(text),
        Ok(Ok(Err(failure))) => failure.into(),
        Ok(Err(join)) => ToolResult::error(format!("the tool crashed: {join}")),
        Err(_) => ToolResult::error("the worker ran out of time while this tool was running"),
    }
}

fn read_file(ctx: &ToolContext, args: &ReadFileArgs) -> FsResult {
    let r = paths::check(&ctx.worktree, &args.path)?;
    let shown = display(&r);
    let meta = fs::metadata(&r.abs).map_err(|e| io_error("read", &shown, &e))?;
    if meta.is_dir() {
        return Err(Failure::Error(format!(
            "`{shown}` is a directory; use list_files{{path}} to see its files"
        )));
    }
    if !meta.is_file() {
        return Err(Failure::Error(format!("`{shown}` is not a regular file")));
    }
    if meta.len() > MAX_READ_FILE_BYTES {
        return Err(Failure::Error(format!(
            "`{shown}` is {} bytes, too large to read; use search, or run a command such as `sed -n 100,200p {shown}`",
            meta.len()
        )));
    }
    let bytes = fs::read(&r.abs).map_err(|e| io_error("read", &shown, &e))?;
    if is_binary(&bytes) {
        return Ok(format!(
            "`{shown}` is a binary file ({} bytes); not shown",
            bytes.len()
        ));
    }
    if args.limit == Some(0) {
        return Err(Failure::Error("limit must be at least 1".into()));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    if total == 0 {
        return Ok(format!("`{shown}` is empty"));
    }
    let start = usize::try_from(args.offset.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
    if start > total {
        return Err(Failure::Error(format!(
            "offset {start} is past the end of `{shown}`, which has {total} lines"
        )));
    }
    let wanted = args
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let end = start.saturating_add(wanted).saturating_sub(1).min(total);

    let mut out = String::new();
    let mut last = start - 1;
    for (i, line) in lines[start - 1..end].iter().enumerate() {
        let n = start + i;
        let piece = format!("{n:>6}\t{line}\n");
        if out.len() + piece.len() > ctx.output_limit {
            if out.is_empty() {
                // One line longer than the whole budget: show it cut.
                out.push_str(&orch_process::cap_output(&piece, ctx.output_limit).0);
                last = n;
            }
            let next = last + 1;
            if next <= end {
                let _ = writeln!(
                    out,
                    "[... output cut after line {last} to stay under {} bytes; call read_file with offset={next} to read on]",
                    ctx.output_limit
                );
            }
            return Ok(out);
        }
        out.push_str(&piece);
        last = n;
    }
    if start > 1 || end < total {
        let _ = writeln!(out, "[lines {start}-{end} of {total}]");
    }
    Ok(out)
}

fn write_file(ctx: &ToolContext, args: &WriteFileArgs) -> FsResult {
    if args.content.len() > ctx.max_file_bytes {
        return Err(Failure::Refused(format!(
            "content for `{}` is {} bytes, over the limit of {} bytes per file; write smaller files",
            args.path,
            args.content.len(),
            ctx.max_file_bytes
        )));
    }
    let r = paths::check(&ctx.worktree, &args.path)?;
    check_allowed(ctx, &r, &args.path)?;
    let shown = display(&r);
    if r.rel.as_os_str().is_empty() || r.abs.is_dir() {
        return Err(Failure::Error(format!(
            "`{shown}` is a directory; give a file path"
        )));
    }
    let existed = r.abs.exists();
    if let Some(parent) = r.abs.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("create the directory for", &shown, &e))?;
    }
    fs::write(&r.abs, &args.content).map_err(|e| io_error("write", &shown, &e))?;
    let verb = if existed { "overwrote" } else { "created" };
    Ok(format!("{verb} `{shown}` ({} bytes)", args.content.len()))
}

fn edit_file(ctx: &ToolContext, args: &EditFileArgs) -> FsResult {
    let r = paths::check(&ctx.worktree, &args.path)?;
    check_allowed(ctx, &r, &args.path)?;
    let shown = display(&r);
    if args.old.is_empty() {
        return Err(Failure::Error(
            "`old` must not be empty; to create or replace a whole file use write_file".into(),
        ));
    }
    if r.abs.is_dir() {
        return Err(Failure::Error(format!(
            "`{shown}` is a directory; give a file path"
        )));
    }
    let bytes = fs::read(&r.abs).map_err(|e| io_error("read", &shown, &e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::Error(format!(
            "`{shown}` is not UTF-8 text; use write_file to replace it"
        ))
    })?;
    let positions = occurrences(&text, &args.old);
    let at = match positions.as_slice() {
        [] => {
            return Err(Failure::Error(format!(
                "`old` was not found in `{shown}`; read the file and copy the exact text, including whitespace and indentation"
            )))
        }
        [at] => *at,
        many => {
            return Err(Failure::Error(format!(
                "`old` occurs {} times in `{shown}`; it must occur exactly once. Include more surrounding lines to make it unique",
                many.len()
            )))
        }
    };
    let mut updated = String::with_capacity(text.len() + args.new.len());
    updated.push_str(&text[..at]);
    updated.push_str(&args.new);
    updated.push_str(&text[at + args.old.len()..]);
    if updated.len() > ctx.max_file_bytes {
        return Err(Failure::Refused(format!(
            "the edited `{shown}` would be {} bytes, over the limit of {} bytes per file",
            updated.len(),
            ctx.max_file_bytes
        )));
    }
    fs::write(&r.abs, &updated).map_err(|e| io_error("write", &shown, &e))?;
    let line = text[..at].matches('\n').count() + 1;
    Ok(format!(
        "edited `{shown}`: replaced 1 occurrence at line {line}"
    ))
}

/// Start offsets of every (possibly overlapping) occurrence of `needle`.
fn occurrences(haystack: &str, needle: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = haystack[from..].find(needle) {
        let at = from + i;
        found.push(at);
        // Step one character so overlapping matches count as ambiguous too.
        let step = haystack[at..].chars().next().map_or(1, char::len_utf8);
        from = at + step;
        if from > haystack.len() {
            break;
        }
    }
    found
}

fn list_files(ctx: &ToolContext, args: &ListFilesArgs) -> FsResult {
    let r = paths::check(&ctx.worktree, args.path.as_deref().unwrap_or("."))?;
    let shown = display(&r);
    let matcher = match args
        .pattern
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        Some(p) => Some(
            globset::Glob::new(p.trim_start_matches("./"))
                .map_err(|e| Failure::Error(format!("pattern `{p}` is not a valid glob: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    if !r.abs.exists() {
        return Err(Failure::Error(format!("`{shown}` does not exist")));
    }
    let mut listed = Vec::new();
    let mut more = 0usize;
    let walk = walk(&r.abs);
    for (rel, _) in walk.files(&r.root) {
        let name_matches = |m: &globset::GlobMatcher| {
            m.is_match(&rel) || rel.file_name().is_some_and(|n| m.is_match(n))
        };
        if matcher.as_ref().is_some_and(|m| !name_matches(m)) {
            continue;
        }
        if listed.len() < MAX_LIST_ENTRIES {
            listed.push(rel.to_string_lossy().into_owned());
        } else {
            more += 1;
        }
    }
    let mut out = listed.join("\n");
    if listed.is_empty() {
        out = match &args.pattern {
            Some(p) => format!("no files under `{shown}` match `{p}`"),
            None => format!("no files under `{shown}`"),
        };
    }
    if more > 0 {
        let _ = write!(
            out,
            "\n[... {more} more files not shown; narrow with path or pattern]"
        );
    }
    if walk.stopped() {
        let _ = write!(
            out,
            "\n[... stopped after {MAX_WALK_ENTRIES} entries; narrow with path]"
        );
    }
    Ok(orch_process::cap_output(&out, ctx.output_limit).0)
}

fn search(ctx: &ToolContext, args: &SearchArgs) -> FsResult {
    let re = RegexBuilder::new(&args.pattern)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| Failure::Error(format!("pattern is not a valid regular expression: {e}")))?;
    let r = paths::check(&ctx.worktree, args.path.as_deref().unwrap_or("."))?;
    let shown = display(&r);
    if !r.abs.exists() {
        return Err(Failure::Error(format!("`{shown}` does not exist")));
    }
    let mut hits = Vec::new();
    let mut more = 0usize;
    let mut read_total = 0u64;
    let mut budget_hit = false;
    let walk = walk(&r.abs);
    for (rel, abs) in walk.files(&r.root) {
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            continue;
        };
        // Symlinks are not followed: they could point outside the worktree.
        if !meta.is_file() || meta.len() > MAX_SEARCH_FILE_BYTES {
            continue;
        }
        if read_total > MAX_SEARCH_TOTAL_BYTES {
            budget_hit = true;
            break;
        }
        read_total += meta.len();
        let Ok(bytes) = fs::read(&abs) else { continue };
        if is_binary(&bytes) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let rel = rel.to_string_lossy();
        for (i, line) in text.lines().enumerate() {
            if !re.is_match(line) {
                continue;
            }
            if hits.len() < MAX_SEARCH_HITS {
                let line = line.trim_end();
                let cut = prefix_at_boundary(line, MAX_HIT_LINE);
                let ellipsis = if cut.len() < line.len() { " [...]" } else { "" };
                hits.push(format!("{rel}:{}: {cut}{ellipsis}", i + 1));
            } else {
                more += 1;
            }
        }
    }
    let mut out = if hits.is_empty() {
        format!("no matches for `{}` under `{shown}`", args.pattern)
    } else {
        hits.join("\n")
    };
    if more > 0 {
        let _ = write!(
            out,
            "\n[... {more} more matches not shown; narrow the pattern or path]"
        );
    }
    if budget_hit || walk.stopped() {
        let _ = write!(
            out,
            "\n[... search stopped early: too much to scan; narrow the path]"
        );
    }
    Ok(orch_process::cap_output(&out, ctx.output_limit).0)
}

async fn run(ctx: &ToolContext, args: &RunArgs, remaining: Duration) -> ToolResult {
    if args.command.trim().is_empty() {
        return ToolResult::error(
            "command is empty; give a shell command line such as `cargo test`",
        );
    }
    let mut timeout = ctx.max_run_timeout;
    if let Some(t) = args.timeout_s {
        if !t.is_finite() || t <= 0.0 {
            return ToolResult::error(format!(
                "timeout_s must be a positive number of seconds, got {t}"
            ));
        }
        timeout = timeout.min(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX));
    }
    let timeout = timeout.min(remaining);
    if timeout.is_zero() {
        return ToolResult::error("no time left to run commands");
    }
    // The sandbox gets the real worktree path: bind mounts want a path
    // without symlinks in it.
    let workdir = fs::canonicalize(&ctx.worktree).unwrap_or_else(|_| ctx.worktree.clone());
    let request = ExecRequest {
        command: args.command.clone(),
        workdir,
        env: ctx.sandbox_env.clone(),
        extra_ro: ctx.extra_ro.clone(),
        timeout,
        output_limit: ctx.output_limit,
    };
    // A little grace over the command timeout so the sandbox reports the
    // timeout itself; dropping the future kills the process group anyway.
    let grace = timeout.saturating_add(Duration::from_secs(5));
    let output = match tokio::time::timeout(grace, ctx.sandbox.exec(&request)).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return ToolResult::error(format!("could not run the command: {e}")),
        Err(_) => {
            return ToolResult::error(format!(
                "the command did not finish within {}s and was killed",
                grace.as_secs()
            ))
        }
    };
    let status = if output.timed_out {
        format!(
            "timed out after {:.0}s and was killed",
            timeout.as_secs_f64()
        )
    } else {
        match (output.exit_code, output.signal) {
            (Some(code), _) => format!("exit code: {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "exit status unknown".to_string(),
        }
    };
    let combined = output.combined();
    let body = orch_process::cap_output(&combined, ctx.output_limit).0;
    let content = if body.trim().is_empty() {
        format!("{status}\n(no output)")
    } else {
        format!("{status}\n{body}")
    };
    ToolResult {
        content,
        ok: output.success(),
        refused: None,
        control: Control::Continue,
    }
}

fn check_allowed(ctx: &ToolContext, r: &Resolved, requested: &str) -> Result<(), Failure> {
    if ctx.allow.permits(&r.rel) {
        return Ok(());
    }
    Err(Failure::Refused(format!(
        "`{requested}` is outside the files this task may change ({}); write only those (reading any file is fine)",
        ctx.allow.patterns().join(", ")
    )))
}

/// How a path is shown back to the model: relative to the worktree root.
fn display(r: &Resolved) -> String {
    if r.rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        r.rel.to_string_lossy().into_owned()
    }
}

fn io_error(action: &str, shown: &str, e: &std::io::Error) -> Failure {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => " (it does not exist; use list_files to see what does)",
        _ => "",
    };
    Failure::Error(format!("cannot {action} `{shown}`: {e}{hint}"))
}

fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0)
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
pub(crate) fn prefix_at_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A bounded, sorted walk that skips `.git` and does not follow symlinks.
struct Walk {
    root: PathBuf,
    stopped: std::cell::Cell<bool>,
}

fn walk(root: &Path) -> Walk {
    Walk {
        root: root.to_path_buf(),
        stopped: std::cell::Cell::new(false),
    }
}

impl Walk {
    /// Non-directory entries as (path relative to `base`, absolute path).
    fn files<'a>(&'a self, base: &'a Path) -> impl Iterator<Item = (PathBuf, PathBuf)> + 'a {
        let mut visited = 0usize;
        WalkDir::new(&self.root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !paths::touches_git(Path::new(e.file_name())))
            .filter_map(Result::ok)
            .take_while(move |_| {
                visited += 1;
                if visited > MAX_WALK_ENTRIES {
                    self.stopped.set(true);
                    return false;
                }
                true
            })
            .filter(|e| !e.file_type().is_dir())
            .filter_map(move |e| {
                let rel = e.path().strip_prefix(base).ok()?.to_path_buf();
                Some((rel, e.into_path()))
            })
    }

    fn stopped(&self) -> bool {
        self.stopped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_sandbox::none::NoSandbox;
    use serde_json::json;
    use std::os::unix::fs::symlink;

    struct Fixture {
        dir: tempfile::TempDir,
        ctx: Arc<ToolContext>,
    }

    impl Fixture {
        fn wt(&self) -> PathBuf {
            self.dir.path().join("wt")
        }
        fn outside(&self) -> PathBuf {
            self.dir.path().join("outside")
        }
        async fn call(&self, tool: &str, args: serde_json::Value) -> ToolResult {
            execute(&self.ctx, tool, &args.to_string(), Duration::from_secs(60)).await
        }
        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.wt().join(rel)).unwrap()
        }
    }

    fn fixture_with(allowed: &[&str], output_limit: usize, max_file_bytes: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        fs::create_dir_all(wt.join("src/nested")).unwrap();
        fs::create_dir_all(wt.join(".git")).unwrap();
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        fs::write(
            wt.join("src/lib.rs"),
            "pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n",
        )
        .unwrap();
        fs::write(
            wt.join("src/nested/util.rs"),
            "pub fn helper() {}\n// TODO: more\n",
        )
        .unwrap();
        fs::write(wt.join("README.md"), "# demo\nTODO: write docs\n").unwrap();
        fs::write(wt.join(".git/config"), "[core]\n").unwrap();
        fs::write(dir.path().join("outside/secret.txt"), "secret\n").unwrap();
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let ctx = Arc::new(ToolContext {
            worktree: wt,
            allow: AllowList::new(&allowed),
            output_limit,
            max_file_bytes,
            sandbox: Arc::new(NoSandbox::new()),
            extra_ro: Vec::new(),
            sandbox_env: vec![("ORCH_TEST_VAR".into(), "from-env".into())],
            max_run_timeout: Duration::from_secs(30),
        });
        Fixture { dir, ctx }
    }

    fn fixture() -> Fixture {
        fixture_with(&[], 16 * 1024, 1024 * 1024)
    }

    /// Every file below `dir` with its content, to prove nothing changed.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all: Vec<_> = WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn read_file_numbers_lines_and_pages() {
        let f = fixture();
        let r = f.call(READ_FILE, json!({"path": "src/lib.rs"})).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.content,
            "     1\tpub fn add(a: i32, b: i32) -> i32 {\n     2\t    a - b\n     3\t}\n"
        );

        let r = f
            .call(
                READ_FILE,
                json!({"path": "src/lib.rs", "offset": 2, "limit": 1}),
            )
            .await;
        assert!(r.ok);
        assert_eq!(r.content, "     2\t    a - b\n[lines 2-2 of 3]\n");

        let r = f
            .call(READ_FILE, json!({"path": "src/lib.rs", "offset": 9}))
            .await;
        assert!(!r.ok);
        assert!(
            r.content.contains("past the end") && r.content.contains("3 lines"),
            "{}",
            r.content
        );

        let r = f.call(READ_FILE, json!({"path": "src"})).await;
        assert!(
            !r.ok && r.content.contains("is a directory"),
            "{}",
            r.content
        );

        let r = f.call(READ_FILE, json!({"path": "missing.rs"})).await;
        assert!(
            !r.ok && r.content.contains("does not exist"),
            "{}",
            r.content
        );
        assert!(
            r.refused.is_none(),
            "a missing file is an error, not a refusal"
        );

        fs::write(f.wt().join("blob.bin"), [0u8, 1, 2, 3]).unwrap();
        let r = f.call(READ_FILE, json!({"path": "blob.bin"})).await;
        assert!(r.ok && r.content.contains("binary file"), "{}", r.content);
    }

    #[tokio::test]
    async fn read_file_cuts_long_output_with_a_continue_marker() {
        let f = fixture_with(&[], 200, 1024 * 1024);
        let body: String = (1..=100).map(|i| format!("line number {i}\n")).collect();
        fs::write(f.wt().join("long.txt"), body).unwrap();
        let r = f.call(READ_FILE, json!({"path": "long.txt"})).await;
        assert!(r.ok);
        assert!(
            r.content.starts_with("     1\tline number 1\n"),
            "{}",
            r.content
        );
        assert!(r.content.contains("output cut after line"), "{}", r.content);
        assert!(
            r.content.contains("call read_file with offset="),
            "{}",
            r.content
        );
        assert!(!r.content.contains("line number 100"));

        // A single line longer than the budget is cut in the middle with a marker.
        fs::write(f.wt().join("wide.txt"), "x".repeat(5000)).unwrap();
        let r = f.call(READ_FILE, json!({"path": "wide.txt"})).await;
        assert!(r.ok);
        assert!(r.content.contains("orch cut"), "{}", r.content);
        assert!(r.content.len() < 600, "{}", r.content.len());
    }

    #[tokio::test]
    async fn write_file_creates_parents_and_overwrites() {
        let f = fixture();
        let r = f
            .call(
                WRITE_FILE,
                json!({"path": "new/deep/dir/file.txt", "content": "hello\n"}),
            )
            .await;
        assert!(r.ok, "{r:?}");
        assert!(r.content.contains("created"), "{}", r.content);
        assert_eq!(f.read("new/deep/dir/file.txt"), "hello\n");

        let r = f
            .call(
                WRITE_FILE,
                json!({"path": "README.md", "content": "replaced"}),
            )
            .await;
        assert!(r.ok && r.content.contains("overwrote"), "{}", r.content);
        assert_eq!(f.read("README.md"), "replaced");

        let r = f
            .call(WRITE_FILE, json!({"path": "src", "content": "x"}))
            .await;
        assert!(
            !r.ok && r.content.contains("is a directory"),
            "{}",
            r.content
        );
    }

    #[tokio::test]
    async fn write_file_over_max_file_bytes_is_refused() {
        let f = fixture_with(&[], 16 * 1024, 10);
        let r = f
            .call(
                WRITE_FILE,
                json!({"path": "big.txt", "content": "01234567890"}),
            )
            .await;
        assert!(!r.ok);
        assert!(
            r.refused
                .as_deref()
                .unwrap()
                .contains("over the limit of 10 bytes"),
            "{r:?}"
        );
        assert!(!f.wt().join("big.txt").exists());
        let r = f
            .call(
                WRITE_FILE,
                json!({"path": "ok.txt", "content": "0123456789"}),
            )
            .await;
        assert!(r.ok, "{r:?}");
        // An edit that grows a file past the limit is refused too.
        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "ok.txt", "old": "0", "new": "00"}),
            )
            .await;
        assert!(r.refused.is_some(), "{r:?}");
        assert_eq!(f.read("ok.txt"), "0123456789");
    }

    #[tokio::test]
    async fn edit_file_replaces_exactly_one_occurrence() {
        let f = fixture();
        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "src/lib.rs", "old": "a - b", "new": "a + b"}),
            )
            .await;
        assert!(r.ok, "{r:?}");
        assert!(r.content.contains("line 2"), "{}", r.content);
        assert_eq!(
            f.read("src/lib.rs"),
            "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
        );
    }

    #[tokio::test]
    async fn edit_file_reports_not_unique_and_not_found() {
        let f = fixture();
        fs::write(f.wt().join("dup.txt"), "foo\nbar\nfoo\nfoo\n").unwrap();
        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "dup.txt", "old": "foo", "new": "baz"}),
            )
            .await;
        assert!(!r.ok);
        assert!(r.content.contains("occurs 3 times"), "{}", r.content);
        assert_eq!(f.read("dup.txt"), "foo\nbar\nfoo\nfoo\n");

        // Overlapping occurrences are ambiguous as well.
        fs::write(f.wt().join("aaa.txt"), "aaa").unwrap();
        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "aaa.txt", "old": "aa", "new": "b"}),
            )
            .await;
        assert!(r.content.contains("occurs 2 times"), "{}", r.content);

        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "dup.txt", "old": "qux", "new": "baz"}),
            )
            .await;
        assert!(!r.ok);
        assert!(r.content.contains("not found"), "{}", r.content);

        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "dup.txt", "old": "", "new": "baz"}),
            )
            .await;
        assert!(
            !r.ok && r.content.contains("must not be empty"),
            "{}",
            r.content
        );

        let r = f
            .call(
                EDIT_FILE,
                json!({"path": "nope.txt", "old": "a", "new": "b"}),
            )
            .await;
        assert!(
            !r.ok && r.content.contains("does not exist"),
            "{}",
            r.content
        );
    }

    #[tokio::test]
    async fn list_files_is_recursive_sorted_and_skips_git() {
        let f = fixture();
        let r = f.call(LIST_FILES, json!({})).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.content, "README.md\nsrc/lib.rs\nsrc/nested/util.rs");

        let r = f.call(LIST_FILES, json!({"path": "src/nested"})).await;
        assert_eq!(r.content, "src/nested/util.rs");

        let r = f.call(LIST_FILES, json!({"pattern": "*.rs"})).await;
        assert_eq!(r.content, "src/lib.rs\nsrc/nested/util.rs");
        let r = f.call(LIST_FILES, json!({"pattern": "util.rs"})).await;
        assert_eq!(r.content, "src/nested/util.rs");
        let r = f.call(LIST_FILES, json!({"pattern": "*.py"})).await;
        assert!(r.content.contains("no files"), "{}", r.content);
        let r = f.call(LIST_FILES, json!({"pattern": "[oops"})).await;
        assert!(
            !r.ok && r.content.contains("not a valid glob"),
            "{}",
            r.content
        );
    }

    #[tokio::test]
    async fn list_files_caps_the_count_with_a_marker() {
        let f = fixture_with(&[], 1024 * 1024, 1024 * 1024);
        fs::create_dir_all(f.wt().join("many")).unwrap();
        for i in 0..(MAX_LIST_ENTRIES + 20) {
            fs::write(f.wt().join(format!("many/f{i:04}.txt")), "").unwrap();
        }
        let r = f.call(LIST_FILES, json!({"path": "many"})).await;
        assert!(r.ok);
        assert_eq!(
            r.content.lines().filter(|l| l.starts_with("many/")).count(),
            MAX_LIST_ENTRIES
        );
        assert!(
            r.content.contains("20 more files not shown"),
            "{}",
            &r.content[r.content.len() - 100..]
        );
    }

    #[tokio::test]
    async fn search_prints_file_line_text_and_caps_hits() {
        let f = fixture();
        let r = f.call(SEARCH, json!({"pattern": "TODO"})).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.content,
            "README.md:2: TODO: write docs\nsrc/nested/util.rs:2: // TODO: more"
        );

        let r = f
            .call(SEARCH, json!({"pattern": "TODO", "path": "src"}))
            .await;
        assert_eq!(r.content, "src/nested/util.rs:2: // TODO: more");
        let r = f
            .call(
                SEARCH,
                json!({"pattern": r"fn\s+add", "path": "src/lib.rs"}),
            )
            .await;
        assert_eq!(
            r.content,
            "src/lib.rs:1: pub fn add(a: i32, b: i32) -> i32 {"
        );
        let r = f
            .call(SEARCH, json!({"pattern": "nothing-matches-this"}))
            .await;
        assert!(r.ok && r.content.contains("no matches"), "{}", r.content);
        let r = f.call(SEARCH, json!({"pattern": "(unclosed"})).await;
        assert!(
            !r.ok && r.content.contains("not a valid regular expression"),
            "{}",
            r.content
        );
        // .git is never searched.
        let r = f.call(SEARCH, json!({"pattern": "core"})).await;
        assert!(r.content.contains("no matches"), "{}", r.content);

        let many: String = (0..(MAX_SEARCH_HITS + 7))
            .map(|i| format!("hit {i}\n"))
            .collect();
        fs::write(f.wt().join("hits.txt"), many).unwrap();
        let r = f
            .call(SEARCH, json!({"pattern": "^hit", "path": "hits.txt"}))
            .await;
        assert_eq!(
            r.content
                .lines()
                .filter(|l| l.starts_with("hits.txt:"))
                .count(),
            MAX_SEARCH_HITS
        );
        assert!(
            r.content.contains("7 more matches not shown"),
            "{}",
            r.content
        );
    }

    #[tokio::test]
    async fn search_does_not_follow_symlinks_out() {
        let f = fixture();
        symlink(f.outside(), f.wt().join("escape")).unwrap();
        symlink(
            f.outside().join("secret.txt"),
            f.wt().join("secret-link.txt"),
        )
        .unwrap();
        let r = f.call(SEARCH, json!({"pattern": "secret"})).await;
        assert!(r.content.contains("no matches"), "{}", r.content);
        let r = f
            .call(SEARCH, json!({"pattern": "secret", "path": "escape"}))
            .await;
        assert!(r.refused.is_some(), "{r:?}");
    }

    #[tokio::test]
    async fn path_safety_matrix_refuses_and_writes_nothing_outside() {
        let f = fixture_with(&["src/**", "docs/*.md"], 16 * 1024, 1024 * 1024);
        symlink(f.outside(), f.wt().join("escape")).unwrap();
        symlink(
            f.outside().join("secret.txt"),
            f.wt().join("src/secret-link.txt"),
        )
        .unwrap();
        symlink(
            f.outside().join("planted.txt"),
            f.wt().join("src/dangling.txt"),
        )
        .unwrap();
        let before_outside = snapshot(&f.outside());
        let before_git = snapshot(&f.wt().join(".git"));
        let abs = f.outside().join("abs.txt").to_string_lossy().into_owned();

        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                WRITE_FILE,
                json!({"path": "../outside/x.txt", "content": "x"}),
                "leaves the worktree",
            ),
            (
                WRITE_FILE,
                json!({"path": "src/../../outside/x.txt", "content": "x"}),
                "leaves the worktree",
            ),
            (
                WRITE_FILE,
                json!({"path": "a/../../x", "content": "x"}),
                "leaves the worktree",
            ),
            (
                WRITE_FILE,
                json!({"path": abs, "content": "x"}),
                "absolute path",
            ),
            (
                WRITE_FILE,
                json!({"path": "escape/x.txt", "content": "x"}),
                "symlink",
            ),
            (
                WRITE_FILE,
                json!({"path": "src/secret-link.txt", "content": "x"}),
                "symlink",
            ),
            (
                WRITE_FILE,
                json!({"path": "src/dangling.txt", "content": "x"}),
                "symlink",
            ),
            (
                EDIT_FILE,
                json!({"path": "src/secret-link.txt", "old": "secret", "new": "x"}),
                "symlink",
            ),
            (
                WRITE_FILE,
                json!({"path": ".git/config", "content": "x"}),
                ".git",
            ),
            (
                EDIT_FILE,
                json!({"path": ".git/config", "old": "core", "new": "x"}),
                ".git",
            ),
            (
                WRITE_FILE,
                json!({"path": ".git/hooks/pre-commit", "content": "x"}),
                ".git",
            ),
            (
                READ_FILE,
                json!({"path": "../outside/secret.txt"}),
                "leaves the worktree",
            ),
            (READ_FILE, json!({"path": "escape/secret.txt"}), "symlink"),
            (READ_FILE, json!({"path": "src/secret-link.txt"}), "symlink"),
            (READ_FILE, json!({"path": "/etc/passwd"}), "absolute path"),
            (READ_FILE, json!({"path": ".git/config"}), ".git"),
            (LIST_FILES, json!({"path": "escape"}), "symlink"),
            (LIST_FILES, json!({"path": ".git"}), ".git"),
            (
                SEARCH,
                json!({"pattern": "x", "path": ".."}),
                "leaves the worktree",
            ),
            (
                WRITE_FILE,
                json!({"path": "Cargo.toml", "content": "x"}),
                "outside the files this task may change",
            ),
            (
                WRITE_FILE,
                json!({"path": "docs/deep/a.md", "content": "x"}),
                "outside the files this task may change",
            ),
            (
                EDIT_FILE,
                json!({"path": "README.md", "old": "demo", "new": "x"}),
                "outside the files this task may change",
            ),
        ];
        for (tool, args, why) in cases {
            let r = f.call(tool, args.clone()).await;
            assert!(!r.ok, "{tool} {args} should fail: {r:?}");
            let reason = r
                .refused
                .as_deref()
                .unwrap_or_else(|| panic!("{tool} {args} not recorded as refused: {r:?}"));
            assert!(
                reason.contains(why),
                "{tool} {args}: `{reason}` should mention `{why}`"
            );
            assert!(r.content.starts_with("refused: "), "{}", r.content);
        }
        assert_eq!(
            snapshot(&f.outside()),
            before_outside,
            "nothing may be written outside the worktree"
        );
        assert_eq!(
            snapshot(&f.wt().join(".git")),
            before_git,
            ".git must be untouched"
        );
        assert!(!f.dir.path().join("x").exists());
        assert_eq!(f.read("README.md"), "# demo\nTODO: write docs\n");
        assert!(!f.wt().join("Cargo.toml").exists());

        // Allowed writes still work, and reading outside allowed_files is fine.
        assert!(
            f.call(
                WRITE_FILE,
                json!({"path": "src/new/mod.rs", "content": "x"})
            )
            .await
            .ok
        );
        assert!(
            f.call(WRITE_FILE, json!({"path": "docs/guide.md", "content": "x"}))
                .await
                .ok
        );
        assert!(f.call(READ_FILE, json!({"path": "README.md"})).await.ok);
    }

    #[tokio::test]
    async fn malformed_arguments_and_unknown_tools_are_errors() {
        let f = fixture();
        let r = execute(
            &f.ctx,
            WRITE_FILE,
            r#"{"path": "a.txt""#,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            !r.ok && r.content.contains("not valid JSON"),
            "{}",
            r.content
        );
        let r = f.call(WRITE_FILE, json!({"path": "a.txt"})).await;
        assert!(
            r.content.contains("missing field `content`"),
            "{}",
            r.content
        );
        assert!(
            r.content.contains(r#""required":["path","content"]"#),
            "{}",
            r.content
        );
        let r = f.call(READ_FILE, json!({"path": 7})).await;
        assert!(r.content.contains("invalid type"), "{}", r.content);
        let r = f
            .call(RUN, json!({"command": "true", "timeout_s": -1}))
            .await;
        assert!(
            r.content.contains("timeout_s must be a positive"),
            "{}",
            r.content
        );
        let r = f.call(FINISH, json!({})).await;
        assert_eq!(r.control, Control::Continue);
        assert!(
            r.content.contains("missing field `summary`"),
            "{}",
            r.content
        );
        assert!(!f.wt().join("a.txt").exists());

        let r = f.call("delete_everything", json!({})).await;
        assert!(!r.ok);
        assert!(
            r.content.contains("unknown tool `delete_everything`"),
            "{}",
            r.content
        );
        for name in TOOL_NAMES {
            assert!(r.content.contains(name), "{}", r.content);
        }
        assert!(r.refused.is_none());
    }

    #[tokio::test]
    async fn finish_and_ask_human_carry_their_text() {
        let f = fixture();
        let r = f.call(FINISH, json!({"summary": "fixed add"})).await;
        assert_eq!(r.control, Control::Finish("fixed add".into()));
        let r = f.call(ASK_HUMAN, json!({"question": "which API?"})).await;
        assert_eq!(r.control, Control::AskHuman("which API?".into()));
    }

    #[tokio::test]
    async fn run_executes_in_the_worktree_with_env() {
        let f = fixture();
        let r = f.call(RUN, json!({"command": "pwd; cat README.md; echo $ORCH_TEST_VAR; echo oops >&2; touch made-by-run"})).await;
        assert!(r.ok, "{r:?}");
        let root = fs::canonicalize(f.wt()).unwrap();
        assert!(r.content.starts_with("exit code: 0\n"), "{}", r.content);
        assert!(
            r.content.contains(&root.to_string_lossy().into_owned()),
            "{}",
            r.content
        );
        assert!(
            r.content.contains("# demo")
                && r.content.contains("from-env")
                && r.content.contains("oops"),
            "{}",
            r.content
        );
        assert!(f.wt().join("made-by-run").exists());

        let r = f
            .call(RUN, json!({"command": "echo failing; exit 3"}))
            .await;
        assert!(!r.ok);
        assert!(
            r.content.starts_with("exit code: 3\nfailing"),
            "{}",
            r.content
        );

        let r = f.call(RUN, json!({"command": "true"})).await;
        assert_eq!(r.content, "exit code: 0\n(no output)");
    }

    #[tokio::test]
    async fn run_timeout_is_capped_and_output_is_cut() {
        let f = fixture_with(&[], 300, 1024 * 1024);
        let started = std::time::Instant::now();
        // Asks for an hour; the remaining worker time (1s) wins.
        let r = execute(
            &f.ctx,
            RUN,
            &json!({"command": "sleep 20", "timeout_s": 3600}).to_string(),
            Duration::from_secs(1),
        )
        .await;
        assert!(!r.ok);
        assert!(r.content.contains("timed out"), "{}", r.content);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );

        let r = f
            .call(RUN, json!({"command": "yes abcdefghij | head -c 100000"}))
            .await;
        assert!(r.ok, "{r:?}");
        assert!(r.content.contains("orch cut"), "{}", r.content);
        assert!(r.content.len() < 1000, "{}", r.content.len());
    }
}
