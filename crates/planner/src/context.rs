//! What the planner model is shown about a repository: a sorted list of its
//! files (build output, dependencies and VCS internals left out) and the
//! documents that usually say what the project wants.

use std::path::Path;
use walkdir::WalkDir;

/// Directories never listed: VCS internals, orch's own state, build output,
/// dependency caches.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".orch",
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "dist",
    "build",
];

/// Documents read from the repository root, after the README.
const DOCS: &[&str] = &["CLAUDE.md", "AGENTS.md", "BACKLOG.md"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanContext {
    /// One relative path per line, sorted, possibly ending in "… N more files".
    pub file_tree: String,
    /// (file name, contents), each capped.
    pub docs: Vec<(String, String)>,
}

/// Walks `repo` and reads its docs. Lists at most `max_files` files and
/// keeps at most `max_doc_bytes` of each document. Unreadable entries are
/// skipped: a partial overview is more useful to the planner than none.
pub fn gather_context(repo: &Path, max_files: usize, max_doc_bytes: usize) -> PlanContext {
    PlanContext {
        file_tree: file_tree(repo, max_files),
        docs: docs(repo, max_doc_bytes),
    }
}

fn file_tree(repo: &Path, max_files: usize) -> String {
    let walker = WalkDir::new(repo)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            // `.git` is a file in linked worktrees, so skip it whatever it is.
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(name == ".git"
                    || (e.file_type().is_dir() && SKIP_DIRS.contains(&name.as_ref())))
        });
    let mut files: Vec<String> = walker
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(repo).ok()?;
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            Some(parts.join("/"))
        })
        .collect();
    files.sort();
    let total = files.len();
    let mut out: Vec<String> = files.into_iter().take(max_files).collect();
    if total > max_files {
        out.push(format!("… {} more files", total - max_files));
    }
    out.join("\n")
}

fn docs(repo: &Path, max_bytes: usize) -> Vec<(String, String)> {
    let mut names = Vec::new();
    if let Some(readme) = readme_name(repo) {
        names.push(readme);
    }
    names.extend(DOCS.iter().map(|s| s.to_string()));
    names
        .into_iter()
        .filter_map(|name| {
            let path = repo.join(&name);
            if !path.is_file() {
                return None;
            }
            let bytes = std::fs::read(&path).ok()?;
            Some((name, cap_doc(&String::from_utf8_lossy(&bytes), max_bytes)))
        })
        .collect()
}

/// `README.md`, or else the first other root file whose name starts with
/// "README" (any case), such as `README.rst` or `readme.txt`.
fn readme_name(repo: &Path) -> Option<String> {
    if repo.join("README.md").is_file() {
        return Some("README.md".to_string());
    }
    let mut candidates: Vec<String> = std::fs::read_dir(repo)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_uppercase().starts_with("README"))
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

fn cap_doc(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… (truncated: {} more bytes)",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn lists_sorted_files_and_skips_noise() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in [
            "src/main.rs",
            "src/lib.rs",
            "Cargo.toml",
            "tests/it.rs",
            "a.txt",
        ] {
            touch(r, f, "x");
        }
        for f in [
            ".git/HEAD",
            ".orch/state.db",
            "target/debug/x",
            "web/node_modules/react/index.js",
            "pkg/__pycache__/m.pyc",
            ".venv/bin/python",
            "dist/app.js",
            "build/out.o",
        ] {
            touch(r, f, "x");
        }
        let ctx = gather_context(r, 100, 1000);
        assert_eq!(
            ctx.file_tree,
            "Cargo.toml\na.txt\nsrc/lib.rs\nsrc/main.rs\ntests/it.rs"
        );
    }

    #[test]
    fn a_git_file_in_a_linked_worktree_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".git", "gitdir: /elsewhere");
        touch(dir.path(), "main.py", "");
        assert_eq!(gather_context(dir.path(), 10, 10).file_tree, "main.py");
    }

    #[test]
    fn caps_the_file_list() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..12 {
            touch(dir.path(), &format!("f{i:02}.py"), "");
        }
        let ctx = gather_context(dir.path(), 10, 100);
        let lines: Vec<_> = ctx.file_tree.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "f00.py");
        assert_eq!(lines[9], "f09.py");
        assert_eq!(lines[10], "… 2 more files");
    }

    #[test]
    fn reads_docs_in_order_and_caps_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(r, "README.md", "# Demo\nA demo project.");
        touch(r, "BACKLOG.md", &"- item\n".repeat(100));
        touch(r, "AGENTS.md", "Run pytest.");
        touch(r, "docs/CLAUDE.md", "not at the root, ignored");
        let ctx = gather_context(r, 100, 50);
        let names: Vec<_> = ctx.docs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["README.md", "AGENTS.md", "BACKLOG.md"]);
        assert_eq!(ctx.docs[0].1, "# Demo\nA demo project.");
        assert!(ctx.docs[2].1.starts_with("- item\n"));
        assert!(
            ctx.docs[2].1.ends_with("… (truncated: 650 more bytes)"),
            "{}",
            ctx.docs[2].1
        );
    }

    #[test]
    fn other_readme_names_are_found() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "README.rst", "Title\n=====");
        touch(dir.path(), "readme.txt", "lower");
        let ctx = gather_context(dir.path(), 100, 1000);
        assert_eq!(
            ctx.docs,
            vec![("README.rst".to_string(), "Title\n=====".to_string())]
        );
    }

    #[test]
    fn missing_repo_gives_empty_context() {
        let ctx = gather_context(Path::new("/nonexistent/orch/repo"), 10, 10);
        assert_eq!(ctx, PlanContext::default());
    }
}
