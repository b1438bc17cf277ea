//! jest: the `Tests:       1 failed, 1 skipped, 3 passed, 5 total` summary
//! gives the counts; `● Suite › test name` headers give the failing names.
//! A file that cannot even load prints `● Test suite failed to run` and is
//! missing from the `Tests:` line, so it is counted as one failure named
//! after the file (taken from the preceding ` FAIL  path` line).

use super::{num, push_unique, re};
use orch_core::TestCounts;
use regex::Regex;
use std::sync::LazyLock;

static TESTS: LazyLock<Regex> = LazyLock::new(|| re(r"^Tests:\s+(.*\d+ total)\s*$"));
static ITEM: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+) ([a-z]+)"));
static FILE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*FAIL\s+(\S.*?)(?:\s+\([\d.]+ m?s\))?$"));
static HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*● (.+?)\s*$"));

const SUITE_FAILED: &str = "Test suite failed to run";

pub fn parse(output: &str) -> Option<TestCounts> {
    let lines: Vec<&str> = output.lines().collect();
    let summary = lines
        .iter()
        .rev()
        .find_map(|l| TESTS.captures(l.trim_end()))?;
    let mut counts = TestCounts {
        runner: "jest".into(),
        ..Default::default()
    };
    for cap in ITEM.captures_iter(&summary[1]) {
        let n = num(&cap[1]);
        match &cap[2] {
            "passed" => counts.passed += n,
            "failed" => counts.failed += n,
            "skipped" | "todo" => counts.skipped += n,
            _ => {}
        }
    }
    let mut current_file: Option<String> = None;
    let mut broken_suites = Vec::new();
    for line in &lines {
        if let Some(cap) = FILE.captures(line) {
            current_file = Some(cap[1].to_string());
        } else if let Some(cap) = HEADER.captures(line) {
            let title = &cap[1];
            if title == "Console" {
                // console.log output from a test, not a failure.
                continue;
            }
            if title == SUITE_FAILED {
                let file = current_file.as_deref().unwrap_or("unknown file");
                push_unique(
                    &mut broken_suites,
                    &format!("{file} (test suite failed to run)"),
                );
            } else {
                push_unique(&mut counts.failed_tests, title);
            }
        }
    }
    counts.failed += u32::try_from(broken_suites.len()).unwrap_or(u32::MAX);
    counts.failed_tests.extend(broken_suites);
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jest 29, one file with a failing test inside a describe block (the
    /// test file's own listing is shown because it ran alone), one passing.
    const FAILING: &str = " FAIL  src/sum.test.js
  math
    ✓ subtracts (2 ms)
    ✕ adds numbers (3 ms)
    ○ skipped later

  ● math › adds numbers

    expect(received).toBe(expected) // Object.is equality

    Expected: 4
    Received: 3

      3 | describe('math', () => {
      4 |   test('adds numbers', () => {
    > 5 |     expect(sum(1, 2)).toBe(4);
        |                       ^
      6 |   });

      at Object.toBe (src/sum.test.js:5:23)

 PASS  src/other.test.js
  ● Console

    console.log
      hello from a test

      at Object.log (src/other.test.js:2:11)

Test Suites: 1 failed, 1 passed, 2 total
Tests:       1 failed, 1 skipped, 3 passed, 5 total
Snapshots:   0 total
Time:        0.842 s
Ran all test suites.
";

    /// A suite that fails to load, plus the end-of-run repeat of failures.
    const BROKEN_SUITE: &str = " FAIL  src/broken.test.js
  ● Test suite failed to run

    Cannot find module './missing' from 'src/broken.test.js'

      at Resolver._throwModNotFoundError (node_modules/jest-resolve/build/resolver.js:427:11)

 FAIL  src/sum.test.js (5.123 s)
  ● adds numbers

    expect(received).toBe(expected) // Object.is equality

Summary of all failing tests
 FAIL  src/sum.test.js (5.123 s)
  ● adds numbers

    expect(received).toBe(expected) // Object.is equality

Test Suites: 2 failed, 2 total
Tests:       1 failed, 2 passed, 3 total
Snapshots:   0 total
Time:        6.01 s
Ran all test suites.
";

    #[test]
    fn counts_and_describe_qualified_names() {
        let c = parse(FAILING).unwrap();
        assert_eq!(c.runner, "jest");
        assert_eq!((c.passed, c.failed, c.skipped), (3, 1, 1));
        assert_eq!(c.failed_tests, vec!["math › adds numbers"]);
    }

    #[test]
    fn broken_suite_counts_as_a_failure_named_after_its_file() {
        let c = parse(BROKEN_SUITE).unwrap();
        assert_eq!((c.passed, c.failed), (2, 2));
        assert_eq!(
            c.failed_tests,
            vec![
                "adds numbers",
                "src/broken.test.js (test suite failed to run)"
            ]
        );
    }

    #[test]
    fn all_passing() {
        let c = parse("Tests:       4 passed, 4 total\n").unwrap();
        assert_eq!((c.passed, c.failed), (4, 0));
    }

    #[test]
    fn other_output_is_not_jest() {
        assert_eq!(parse("1 failed, 2 passed in 0.1s\n"), None);
    }
}
