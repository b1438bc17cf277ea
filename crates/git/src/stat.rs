//! `git diff --stat` without a process: the changed files between two
//! commits with their added and removed line counts (gix's tree and blob
//! diffs), laid out as git lays them out. Binary files show as `Bin`.

use std::fmt::Write as _;

/// One changed file: its path and line counts (None for binary content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub path: String,
    pub lines: Option<(u32, u32)>,
}

/// Widest `+`/`-` graph, as git's default for an 80-column terminal leaves.
const GRAPH_WIDTH: usize = 50;

/// The `--stat` text for `files`: one line per file, then the summary
/// line (`N files changed, X insertions(+), Y deletions(-)`). Empty when
/// nothing changed.
pub(crate) fn render(files: &[FileStat]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let name_width = files
        .iter()
        .map(|f| f.path.chars().count())
        .max()
        .unwrap_or(0);
    let changes = |f: &FileStat| f.lines.map_or(0, |(a, d)| (a + d) as usize);
    let most = files.iter().map(changes).max().unwrap_or(0);
    let count_width = most.to_string().len();
    let mut out = String::new();
    let (mut added, mut removed) = (0u64, 0u64);
    for f in files {
        let pad = name_width - f.path.chars().count();
        let _ = write!(out, " {}{} | ", f.path, " ".repeat(pad));
        match f.lines {
            None => out.push_str("Bin"),
            Some((a, d)) => {
                added += u64::from(a);
                removed += u64::from(d);
                let (plus, minus) = scaled(a as usize, d as usize, most);
                let _ = write!(
                    out,
                    "{:>count_width$}{}{}{}",
                    a + d,
                    if a + d > 0 { " " } else { "" },
                    "+".repeat(plus),
                    "-".repeat(minus)
                );
            }
        }
        out.push('\n');
    }
    out.push_str(&summary(files.len(), added, removed));
    out.push('\n');
    out
}

/// The `+` and `-` counts of one file's graph, scaled so the largest
/// change fits `GRAPH_WIDTH`; any change shows at least one mark.
fn scaled(added: usize, removed: usize, most: usize) -> (usize, usize) {
    if most <= GRAPH_WIDTH {
        return (added, removed);
    }
    let scale = |n: usize| {
        if n == 0 {
            0
        } else {
            (n * GRAPH_WIDTH / most).max(1)
        }
    };
    (scale(added), scale(removed))
}

/// git's summary line, with its singulars and plurals.
fn summary(files: usize, added: u64, removed: u64) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = format!(" {}", plural(files as u64, "file changed", "files changed"));
    if added > 0 || removed == 0 {
        s.push_str(&format!(
            ", {}",
            plural(added, "insertion(+)", "insertions(+)")
        ));
    }
    if removed > 0 || added == 0 {
        s.push_str(&format!(
            ", {}",
            plural(removed, "deletion(-)", "deletions(-)")
        ));
    }
    s
}

/// The changed files between the trees of `base` and `head`, in path
/// order, without rename detection (as `orch`'s `git diff --stat` ran).
pub(crate) fn files(repo: &gix::Repository, base: &str, head: &str) -> Option<Vec<FileStat>> {
    let tree = |rev: &str| -> Option<gix::Tree<'_>> {
        let id = repo
            .rev_parse_single(format!("{rev}^{{tree}}").as_str())
            .ok()?;
        repo.find_tree(id.detach()).ok()
    };
    let (old, new) = (tree(base)?, tree(head)?);
    let mut cache = repo.diff_resource_cache_for_tree_diff().ok()?;
    let mut out = Vec::new();
    let mut failed = false;
    old.changes()
        .ok()?
        .options(|o| {
            o.track_path().track_rewrites(None);
        })
        .for_each_to_obtain_tree(&new, |change| {
            if !change.entry_mode().is_tree() {
                let path = change.location().to_string();
                match change.diff(&mut cache) {
                    Ok(mut platform) => match platform.line_counts() {
                        Ok(counts) => out.push(FileStat {
                            path,
                            lines: counts.map(|c| (c.insertions, c.removals)),
                        }),
                        Err(_) => failed = true,
                    },
                    Err(_) => failed = true,
                }
            }
            cache.clear_resource_cache_keep_allocation();
            Ok(if failed {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            })
        })
        .ok()?;
    if failed {
        return None;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, a: u32, d: u32) -> FileStat {
        FileStat {
            path: path.into(),
            lines: Some((a, d)),
        }
    }

    #[test]
    fn renders_as_git_does() {
        let text = render(&[stat("a.txt", 1, 1), stat("src/mod.py", 10, 0)]);
        assert_eq!(
            text,
            " a.txt      |  2 +-\n src/mod.py | 10 ++++++++++\n 2 files changed, 11 insertions(+), 1 deletion(-)\n"
        );
        assert_eq!(render(&[]), "");
        let bin = render(&[FileStat {
            path: "logo.png".into(),
            lines: None,
        }]);
        assert!(bin.starts_with(" logo.png | Bin\n"), "{bin}");
        assert!(
            bin.ends_with(" 1 file changed, 0 insertions(+), 0 deletions(-)\n"),
            "{bin}"
        );
    }

    #[test]
    fn large_changes_are_scaled_to_the_graph_width() {
        let text = render(&[stat("big", 1000, 0), stat("small", 1, 0)]);
        let big = text.lines().next().unwrap_or_default();
        assert_eq!(big.matches('+').count(), GRAPH_WIDTH, "{big}");
        assert!(text.lines().nth(1).unwrap_or_default().ends_with(" +"));
    }
}
