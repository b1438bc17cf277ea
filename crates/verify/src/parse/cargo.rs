//! cargo test (libtest): one `test result: ok|FAILED. N passed; N failed;
//! N ignored; …` line per test binary (unit tests, each integration test,
//! doc-tests), summed. Failing names come from `test NAME ... FAILED`,
//! `---- NAME stdout ----` and the indented list under the second
//! `failures:` heading.

use super::{num, push_unique, re};
use orch_core::TestCounts;
use regex::Regex;
use std::sync::LazyLock;

static RESULT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;")
});
static TEST_FAILED: LazyLock<Regex> = LazyLock::new(|| re(r"^test (.+?) \.\.\. FAILED$"));
static STDOUT_HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"^---- (.+?) stdout ----$"));
static LIST_ENTRY: LazyLock<Regex> = LazyLock::new(|| re(r"^    (\S.*)$"));

pub fn parse(output: &str) -> Option<TestCounts> {
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    let mut counts = TestCounts {
        runner: "cargo".into(),
        ..Default::default()
    };
    let mut seen = false;
    for line in &lines {
        if let Some(cap) = RESULT.captures(line) {
            seen = true;
            counts.passed += num(&cap[1]);
            counts.failed += num(&cap[2]);
            counts.skipped += num(&cap[3]);
        }
    }
    if !seen {
        return None;
    }
    let mut names = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(cap) = TEST_FAILED
            .captures(line)
            .or_else(|| STDOUT_HEADER.captures(line))
        {
            push_unique(&mut names, &cap[1]);
        } else if line == "failures:" {
            // The list form: blank line(s), then names indented by 4 spaces.
            // The first `failures:` heading is followed by `---- …` blocks
            // instead, which stops this loop immediately.
            i += 1;
            while i < lines.len() && lines[i].is_empty() {
                i += 1;
            }
            while i < lines.len() {
                match LIST_ENTRY.captures(lines[i]) {
                    Some(cap) => push_unique(&mut names, &cap[1]),
                    None => break,
                }
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    counts.failed_tests = names;
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_unit_integration_and_doc_test_binaries() {
        let c = parse(include_str!("fixtures/cargo_multi.txt")).unwrap();
        assert_eq!(c.runner, "cargo");
        assert_eq!((c.passed, c.failed, c.skipped), (2, 3, 1));
        assert_eq!(
            c.failed_tests,
            vec!["tests::bad", "it_bad", "src/lib.rs - add (line 1)"]
        );
    }

    #[test]
    fn all_green() {
        let c = parse(include_str!("fixtures/cargo_ok.txt")).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (5, 0, 1));
        assert!(c.failed_tests.is_empty());
    }

    #[test]
    fn failures_list_alone_gives_names() {
        // --quiet style output: no `test … FAILED` lines, only the lists.
        let out = "running 2 tests\n.F\nfailures:\n\nfailures:\n    math::overflow\n    math::underflow\n\n\
                   test result: FAILED. 0 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n";
        let c = parse(out).unwrap();
        assert_eq!(c.failed_tests, vec!["math::overflow", "math::underflow"]);
    }

    #[test]
    fn compile_error_is_not_recognised() {
        assert_eq!(
            parse(include_str!("fixtures/cargo_compile_error.txt")),
            None
        );
    }
}
