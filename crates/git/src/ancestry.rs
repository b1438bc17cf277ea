//! Whether one commit is an ancestor of another, answered in-process with
//! the walk `git merge-base --is-ancestor` makes without a commit-graph
//! (git's `paint_down_to_common`: newest commit first, each marked with the
//! sides it is reachable from, until only commits reachable from both are
//! left), over commits kept in memory. Commits never change, so what one
//! walk read stays true for the next: the merge queue asks about the same,
//! growing history at every landing, and only commits new since the last
//! question are read from the object database.

use gix::ObjectId;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

/// Commits kept at most; past that the memory starts over (a walk never
/// needs more than the commits between the two it compares).
const MAX_KEPT: usize = 1 << 20;

/// Reachable from the commit asked about as the ancestor.
const ONE: u8 = 1;
/// Reachable from the descendant.
const TWO: u8 = 2;
/// Reachable from a commit both reach: nothing below it decides anything.
const STALE: u8 = 4;

/// What a walk needs of one commit.
#[derive(Debug, Clone)]
struct Node {
    /// Committer time, the walk's order.
    time: i64,
    parents: Arc<[ObjectId]>,
}

/// The commits of one repository that walks have read so far.
#[derive(Debug, Default)]
pub(crate) struct Commits(Mutex<HashMap<ObjectId, Node>>);

impl Commits {
    /// Whether `ancestor` is reachable from `descendant` (both commits).
    /// None when a commit cannot be read (not a commit, missing from a
    /// shallow history): the caller asks the CLI.
    pub(crate) fn is_ancestor(
        &self,
        repo: &gix::Repository,
        ancestor: ObjectId,
        descendant: ObjectId,
    ) -> Option<bool> {
        let mut kept = self.0.lock().ok()?;
        if kept.len() > MAX_KEPT {
            kept.clear();
        }
        let mut walk = Walk {
            repo,
            kept: &mut kept,
        };
        walk.node(ancestor)?;
        let d = walk.node(descendant)?;
        if ancestor == descendant || d.parents.contains(&ancestor) {
            return Some(true);
        }
        walk.reaches(ancestor, descendant)
    }
}

/// One walk over the kept commits, reading those not kept yet.
struct Walk<'a> {
    repo: &'a gix::Repository,
    kept: &'a mut HashMap<ObjectId, Node>,
}

impl Walk<'_> {
    fn node(&mut self, id: ObjectId) -> Option<Node> {
        if let Some(n) = self.kept.get(&id) {
            return Some(n.clone());
        }
        let commit = self.repo.find_commit(id).ok()?;
        let node = Node {
            time: commit.time().ok()?.seconds,
            parents: commit.parent_ids().map(|p| p.detach()).collect(),
        };
        self.kept.insert(id, node.clone());
        Some(node)
    }

    /// git's `paint_down_to_common(ancestor, [descendant])`: `ancestor` is
    /// reachable from `descendant` exactly when the walk marks it with
    /// [`TWO`]. Exact whatever the commit times: a commit between the two
    /// is never marked stale (that would make it an ancestor of
    /// `ancestor` too), so the walk cannot stop before getting there; the
    /// times only decide how soon it stops otherwise.
    fn reaches(&mut self, ancestor: ObjectId, descendant: ObjectId) -> Option<bool> {
        let mut flags: HashMap<ObjectId, u8> = HashMap::new();
        let mut queue: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
        for (id, side) in [(ancestor, ONE), (descendant, TWO)] {
            flags.insert(id, side);
            queue.push((self.node(id)?.time, id));
        }
        let flag = |flags: &HashMap<ObjectId, u8>, id: &ObjectId| flags.get(id).copied();
        while queue
            .iter()
            .any(|(_, id)| flag(&flags, id).unwrap_or(0) & STALE == 0)
        {
            let Some((_, id)) = queue.pop() else {
                break;
            };
            let mut marks = flag(&flags, &id).unwrap_or(0);
            if marks & (ONE | TWO) == ONE | TWO {
                marks |= STALE;
            }
            for &parent in self.node(id)?.parents.iter() {
                let has = flags.entry(parent).or_insert(0);
                if *has & marks == marks {
                    continue;
                }
                *has |= marks;
                if parent == ancestor && *has & TWO != 0 {
                    return Some(true);
                }
                queue.push((self.node(parent)?.time, parent));
            }
        }
        Some(flag(&flags, &ancestor).unwrap_or(0) & TWO != 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str], date: &str) -> std::process::Output {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_COMMITTER_DATE", date)
            .env("GIT_AUTHOR_DATE", date)
            .output()
            .unwrap()
    }

    fn ok(dir: &Path, args: &[&str], date: &str) -> String {
        let out = git(dir, args, date);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A commit on the current branch dated `date` (skewed clocks included).
    fn commit(dir: &Path, name: &str, date: &str) -> String {
        std::fs::write(dir.join(name), name).unwrap();
        ok(dir, &["add", name], date);
        ok(dir, &["commit", "-q", "-m", name], date);
        ok(dir, &["rev-parse", "HEAD"], date)
    }

    #[test]
    fn answers_as_merge_base_does_even_with_skewed_clocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ok(dir, &["init", "-q", "-b", "main"], "1700000100 +0000");
        let base = commit(dir, "base", "1700001000 +0000");
        let m1 = commit(dir, "m1", "1700002000 +0000");
        // Committed "before" its parent: a skewed clock.
        let m2 = commit(dir, "m2", "1700000500 +0000");
        let m3 = commit(dir, "m3", "1700003000 +0000");
        ok(
            dir,
            &["checkout", "-q", "-b", "side", &base],
            "1700000000 +0000",
        );
        let s1 = commit(dir, "s1", "1700004000 +0000");
        let s2 = commit(dir, "s2", "1700000010 +0000");
        ok(dir, &["merge", "-q", "--no-edit", &m2], "1700005000 +0000");
        let merge = ok(dir, &["rev-parse", "HEAD"], "1700000000 +0000");
        ok(dir, &["checkout", "-q", "main"], "1700000000 +0000");
        ok(
            dir,
            &["merge", "-q", "--no-ff", "--no-edit", "side"],
            "1700006000 +0000",
        );
        let top = ok(dir, &["rev-parse", "HEAD"], "1700000000 +0000");
        ok(
            dir,
            &["checkout", "-q", "--orphan", "alone"],
            "1700000000 +0000",
        );
        let alone = commit(dir, "alone", "1700007000 +0000");

        let repo = gix::open(dir).unwrap();
        let commits = Commits::default();
        let all = [&base, &m1, &m2, &m3, &s1, &s2, &merge, &top, &alone];
        for a in all {
            for d in all {
                let cli = git(
                    dir,
                    &["merge-base", "--is-ancestor", a, d],
                    "1700000000 +0000",
                );
                let expected = cli.status.code() == Some(0);
                let id = |s: &str| ObjectId::from_hex(s.as_bytes()).unwrap();
                let got = commits.is_ancestor(&repo, id(a), id(d));
                assert_eq!(got, Some(expected), "{a} {d}");
            }
        }
        // Kept from the walks above: every commit, read once.
        assert_eq!(commits.0.lock().unwrap().len(), all.len());
        // Not a commit: the CLI answers.
        let tree = ObjectId::from_hex(
            ok(dir, &["rev-parse", "HEAD^{tree}"], "1700000000 +0000").as_bytes(),
        );
        let tree = tree.unwrap();
        assert_eq!(commits.is_ancestor(&repo, tree, tree), None);
    }

    #[test]
    fn answers_as_merge_base_does_on_a_tangled_history() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ok(dir, &["init", "-q"], "1700000000 +0000");
        let tree = ok(dir, &["mktree"], "1700000000 +0000");
        // A fixed pseudo-random history: merges of up to two earlier
        // commits, with dates that jump back and forth, and two roots.
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut all: Vec<String> = Vec::new();
        for i in 0..24 {
            let date = format!("{} +0000", 1700000000 + next(100_000));
            let mut args = vec!["commit-tree".to_string(), tree.clone()];
            if i != 0 && i != 5 {
                let first = next(all.len());
                args.extend(["-p".to_string(), all[first].clone()]);
                let second = next(all.len());
                if second != first && next(3) == 0 {
                    args.extend(["-p".to_string(), all[second].clone()]);
                }
            }
            args.extend(["-m".to_string(), format!("c{i}")]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            all.push(ok(dir, &args, &date));
        }
        let repo = gix::open(dir).unwrap();
        let commits = Commits::default();
        let id = |s: &str| ObjectId::from_hex(s.as_bytes()).unwrap();
        let mut related = 0;
        for a in &all {
            for d in &all {
                let cli = git(
                    dir,
                    &["merge-base", "--is-ancestor", a, d],
                    "1700000000 +0000",
                );
                let expected = cli.status.code() == Some(0);
                assert_eq!(
                    commits.is_ancestor(&repo, id(a), id(d)),
                    Some(expected),
                    "{a} {d}"
                );
                related += usize::from(expected && a != d);
            }
        }
        // Both answers occur often.
        assert!(related > 50 && related < 24 * 23 - 50, "{related}");
    }
}
