//! Which failing tests a task targets: its acceptance tests, or tests its
//! title or description names by id, file or function. A targeted test
//! that still fails means the task's goal is not reached, even when the
//! same test already failed on the base commit.

use orch_core::TestGoal;

/// Function names shorter than this are too generic to count as a mention
/// (`add` in "add a flag" is not `test_calc.py::add`).
const MIN_NAME_MENTION: usize = 5;

/// The parts of a test id as runners print them: pytest
/// `tests/test_calc.py::TestX::test_add[1]`, cargo `calc::tests::adds`, go
/// `TestAdd/sub`, jest `calc › adds`.
#[derive(Debug, PartialEq, Eq)]
struct TestId<'a> {
    full: &'a str,
    /// The file the test lives in, when the id names one.
    file: Option<&'a str>,
    /// The test function, without parameters or subtests.
    function: &'a str,
}

fn split(id: &str) -> TestId<'_> {
    let id = id.trim();
    let mut segments = id.split("::");
    let first = segments.next().unwrap_or(id);
    let file = looks_like_file(first).then_some(first);
    let last = id.rsplit("::").next().unwrap_or(id);
    let function = last
        .split('[')
        .next()
        .unwrap_or(last)
        .split('/')
        .next()
        .unwrap_or(last)
        .trim();
    TestId {
        full: id,
        file,
        function,
    }
}

/// A source file by its extension (a `/` alone is not enough: go subtests
/// are `TestAdd/negative`).
fn looks_like_file(s: &str) -> bool {
    [
        ".py", ".rs", ".js", ".ts", ".go", ".jsx", ".tsx", ".mjs", ".cjs",
    ]
    .iter()
    .any(|ext| s.ends_with(ext))
}

/// True when `needle` occurs in `text` with no word character on either side.
fn mentions(text: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// True when the acceptance entry (a test id, a prefix of one, a test file
/// or a function name) selects the test.
fn selects(entry: &str, test: &TestId<'_>) -> bool {
    let entry = entry.trim().trim_start_matches("./");
    if entry.is_empty() {
        return false;
    }
    if entry == test.full || entry == test.function {
        return true;
    }
    let prefix_of = |sep: &str| {
        test.full
            .strip_prefix(entry)
            .is_some_and(|rest| rest.starts_with(sep))
    };
    if prefix_of("::") || prefix_of("/") || prefix_of("[") {
        return true;
    }
    match test.file {
        Some(file) => same_file(entry, file),
        None => false,
    }
}

/// `tests/test_calc.py` and `test_calc.py` name the same file when one is a
/// path suffix of the other.
fn same_file(a: &str, b: &str) -> bool {
    let suffix = |long: &str, short: &str| {
        long == short
            || long
                .strip_suffix(short)
                .is_some_and(|head| head.ends_with('/'))
    };
    suffix(a, b) || suffix(b, a)
}

/// Whether the task targets the test `id`.
pub fn targets(goal: &TestGoal, id: &str) -> bool {
    let test = split(id);
    if goal.acceptance.iter().any(|e| selects(e, &test)) {
        return true;
    }
    let text = &goal.mentions;
    if mentions(text, test.full) {
        return true;
    }
    if let Some(file) = test.file {
        let base = file.rsplit('/').next().unwrap_or(file);
        if mentions(text, file) || mentions(text, base) {
            return true;
        }
    }
    test.function.chars().count() >= MIN_NAME_MENTION && mentions(text, test.function)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(acceptance: &[&str], mentions: &str) -> TestGoal {
        TestGoal {
            acceptance: acceptance.iter().map(|s| s.to_string()).collect(),
            mentions: mentions.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ids_split_into_file_and_function() {
        let t = split("tests/test_calc.py::TestCalc::test_add[2-3]");
        assert_eq!(t.file, Some("tests/test_calc.py"));
        assert_eq!(t.function, "test_add");
        let go = split("TestAdd/negative");
        assert_eq!((go.file, go.function), (None, "TestAdd"));
        let cargo = split("calc::tests::adds");
        assert_eq!((cargo.file, cargo.function), (None, "adds"));
    }

    #[test]
    fn acceptance_entries_select_by_id_prefix_file_or_name() {
        let id = "tests/test_calc.py::test_add";
        assert!(targets(&goal(&[id], ""), id));
        assert!(targets(&goal(&["tests/test_calc.py"], ""), id));
        assert!(targets(&goal(&["test_calc.py"], ""), id));
        assert!(targets(&goal(&["./tests/test_calc.py"], ""), id));
        assert!(targets(&goal(&["test_add"], ""), id));
        assert!(!targets(&goal(&["tests/test_other.py"], ""), id));
        assert!(!targets(&goal(&["test_ad"], ""), id));
        assert!(targets(&goal(&["TestAdd"], ""), "TestAdd/negative"));
    }

    #[test]
    fn the_title_or_description_can_name_the_test() {
        let id = "test_calc.py::test_add";
        assert!(targets(
            &goal(&[], "make add() return the sum; test_calc.py fails"),
            id
        ));
        assert!(targets(&goal(&[], "test_add is red"), id));
        assert!(targets(&goal(&[], "see test_calc.py::test_add"), id));
        assert!(!targets(&goal(&[], "fix the sub() helper"), id));
        // A word that merely contains the name is not a mention.
        assert!(!targets(&goal(&[], "my_test_add_helper"), id));
        // Short generic names need the file or the id.
        assert!(!targets(&goal(&[], "adds up"), "calc::tests::adds"));
    }
}
