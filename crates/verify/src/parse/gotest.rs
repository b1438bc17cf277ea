//! go test: `--- FAIL: TestX (0.00s)`, `--- PASS:` and `--- SKIP:` result
//! lines (subtests are indented), and per-package lines `ok  \tpkg\t0.01s`,
//! `FAIL\tpkg\t0.01s`, `FAIL\tpkg [build failed]`, `?   \tpkg\t[no test files]`.
//!
//! Counts come from top-level tests only (a failing subtest also fails its
//! parent, which would otherwise be counted twice); failing names include
//! subtests (`TestTable/negative`) so a baseline comparison is precise. A
//! package that fails without any `--- FAIL` line (build failure, panic in
//! `TestMain`) is reported by its package name so it still counts. Without
//! `-v`, go prints no `--- PASS` lines, so `passed` is then 0.

use super::{push_unique, re};
use orch_core::TestCounts;
use regex::Regex;
use std::sync::LazyLock;

static RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\s*)--- (FAIL|PASS|SKIP): (\S+) \([\d.]+s\)"));
static PKG_OK: LazyLock<Regex> = LazyLock::new(|| re(r"^ok\s+\S+\s+(?:[\d.]+s|\(cached\))"));
static PKG_FAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^FAIL\s+(\S+)(?:\s+(.*))?$"));
static PKG_NONE: LazyLock<Regex> = LazyLock::new(|| re(r"^\?\s+\S+\s+\[no test files\]"));
static BRACKET: LazyLock<Regex> = LazyLock::new(|| re(r"\[(build failed|setup failed)\]"));

pub fn parse(output: &str) -> Option<TestCounts> {
    let mut counts = TestCounts {
        runner: "go".into(),
        ..Default::default()
    };
    let mut seen = false;
    // Test failures since the last package line: go prints a package's
    // results before its `FAIL pkg` line.
    let mut failures_in_pkg = 0usize;
    for line in output.lines().map(str::trim_end) {
        if let Some(cap) = RESULT.captures(line) {
            seen = true;
            let top_level = cap[1].is_empty();
            match &cap[2] {
                "FAIL" => {
                    push_unique(&mut counts.failed_tests, &cap[3]);
                    failures_in_pkg += 1;
                    if top_level {
                        counts.failed += 1;
                    }
                }
                "PASS" if top_level => counts.passed += 1,
                "SKIP" if top_level => counts.skipped += 1,
                _ => {}
            }
        } else if let Some(cap) = PKG_FAIL.captures(line) {
            seen = true;
            if failures_in_pkg == 0 {
                let pkg = &cap[1];
                let rest = cap.get(2).map(|m| m.as_str()).unwrap_or_default();
                let name = match BRACKET.captures(rest) {
                    Some(b) => format!("{pkg} [{}]", &b[1]),
                    None => pkg.to_string(),
                };
                push_unique(&mut counts.failed_tests, &name);
                counts.failed += 1;
            }
            failures_in_pkg = 0;
        } else if PKG_OK.is_match(line) || PKG_NONE.is_match(line) {
            seen = true;
            failures_in_pkg = 0;
        }
    }
    seen.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `go test ./...` without -v: one failing package, one passing, one
    /// without tests.
    const PLAIN: &str = "--- FAIL: TestAdd (0.00s)
    math_test.go:9: Add(1, 2) = 3; want 4
FAIL
FAIL\texample.com/calc\t0.002s
ok  \texample.com/calc/strutil\t0.003s
?   \texample.com/calc/cmd/calc\t[no test files]
FAIL
";

    /// `go test -v` with a table test whose subtest fails, and a skip.
    const VERBOSE: &str = "=== RUN   TestAdd
--- PASS: TestAdd (0.00s)
=== RUN   TestTable
=== RUN   TestTable/zero
=== RUN   TestTable/negative
    math_test.go:25: got -2, want -1
--- FAIL: TestTable (0.00s)
    --- PASS: TestTable/zero (0.00s)
    --- FAIL: TestTable/negative (0.00s)
=== RUN   TestSkipped
    math_test.go:30: not on this platform
--- SKIP: TestSkipped (0.00s)
FAIL
FAIL\texample.com/calc\t0.004s
FAIL
";

    /// A package that does not compile.
    const BUILD_FAILED: &str = "# example.com/calc [example.com/calc.test]
./math_test.go:9:5: undefined: Mul
FAIL\texample.com/calc [build failed]
ok  \texample.com/calc/strutil\t(cached)
FAIL
";

    #[test]
    fn plain_output_names_the_failing_test() {
        let c = parse(PLAIN).unwrap();
        assert_eq!(c.runner, "go");
        assert_eq!((c.passed, c.failed, c.skipped), (0, 1, 0));
        assert_eq!(c.failed_tests, vec!["TestAdd"]);
    }

    #[test]
    fn verbose_counts_top_level_and_names_subtests() {
        let c = parse(VERBOSE).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (1, 1, 1));
        assert_eq!(c.failed_tests, vec!["TestTable", "TestTable/negative"]);
    }

    #[test]
    fn build_failure_counts_as_a_named_package_failure() {
        let c = parse(BUILD_FAILED).unwrap();
        assert_eq!(c.failed, 1);
        assert_eq!(c.failed_tests, vec!["example.com/calc [build failed]"]);
    }

    #[test]
    fn all_ok() {
        let c = parse("ok  \texample.com/calc\t0.002s\n").unwrap();
        assert_eq!((c.failed, c.failed_tests.len()), (0, 0));
    }

    #[test]
    fn other_output_is_not_go() {
        assert_eq!(parse("FAIL\n"), None);
        // jest's file lines start with a space and must not look like go.
        assert_eq!(
            parse(" FAIL  src/sum.test.js\nTests:       1 failed, 1 total\n"),
            None
        );
        assert_eq!(parse("everything is ok\n"), None);
    }
}
