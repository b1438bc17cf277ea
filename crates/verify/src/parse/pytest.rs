//! pytest: the final summary line (`1 failed, 3 passed, 1 skipped in 0.12s`,
//! `=== 2 passed in 0.01s ===`, `no tests ran in 0.00s`) gives the counts;
//! the `FAILED path::test - reason` / `ERROR path::test` lines of the short
//! test summary give the names, with the verbose progress lines
//! (`path::test FAILED   [ 50%]`) as a fallback when there is no summary.

use super::{num, push_unique, re};
use orch_core::TestCounts;
use regex::Regex;
use std::sync::LazyLock;

/// Summary line, with or without the `=` banner: counts, then the duration
/// (`in 0.12s`, `in 1.23s (0:00:01)`, older pytest: `in 0.12 seconds`).
static SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^=*\s*((?:\d+ [a-z]+(?:, )?)+|no tests ran)\s+in\s+[\d.]+\s*s(?:econds)?\b(?:\s*\([^)]*\))?\s*=*\s*$",
    )
});
static ITEM: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+) ([a-z]+)"));
static SHORT_SUMMARY_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:FAILED|ERROR) (\S.*)$"));
static VERBOSE_LINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\S+::\S+(?:\[[^\]]*\])?) (?:FAILED|ERROR)\b"));

pub fn parse(output: &str) -> Option<TestCounts> {
    let lines: Vec<&str> = output.lines().collect();
    let summary = lines
        .iter()
        .rev()
        .find_map(|l| SUMMARY.captures(l.trim()))?;
    let mut counts = TestCounts {
        runner: "pytest".into(),
        ..Default::default()
    };
    let items = summary.get(1).map(|m| m.as_str()).unwrap_or_default();
    let mut known = items == "no tests ran";
    for cap in ITEM.captures_iter(items) {
        let n = num(&cap[1]);
        match &cap[2] {
            "passed" | "xpassed" => counts.passed += n,
            "failed" | "error" | "errors" => counts.failed += n,
            "skipped" | "xfailed" => counts.skipped += n,
            "warning" | "warnings" | "deselected" | "rerun" | "reruns" => {}
            _ => continue,
        }
        known = true;
    }
    if !known {
        return None;
    }
    counts.failed_tests = failed_names(&lines);
    Some(counts)
}

fn failed_names(lines: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    // Only trust FAILED/ERROR lines after the short-summary banner when there
    // is one: captured logs above it can start with "ERROR" too.
    let from = lines
        .iter()
        .rposition(|l| l.contains("short test summary info"))
        .map(|i| i + 1);
    if let Some(from) = from {
        for line in &lines[from..] {
            if let Some(cap) = SHORT_SUMMARY_LINE.captures(line) {
                let rest = &cap[1];
                let name = rest.split_once(" - ").map(|(n, _)| n).unwrap_or(rest);
                push_unique(&mut names, name);
            }
        }
    }
    if names.is_empty() {
        for line in lines {
            if let Some(cap) = VERBOSE_LINE.captures(line) {
                push_unique(&mut names, &cap[1]);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_mode_with_failures_errors_and_skips() {
        let c = parse(include_str!("fixtures/pytest_q.txt")).unwrap();
        assert_eq!(c.runner, "pytest");
        assert_eq!((c.passed, c.failed, c.skipped), (3, 3, 1));
        assert_eq!(
            c.failed_tests,
            vec![
                "tests/test_x.py::test_add",
                "tests/test_x.py::TestC::test_p[2]",
                "tests/test_x.py::test_err"
            ]
        );
    }

    #[test]
    fn verbose_mode_with_banner_summary() {
        let c = parse(include_str!("fixtures/pytest_verbose.txt")).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (3, 3, 1));
        assert_eq!(c.failed_tests.len(), 3);
        assert_eq!(c.failed_tests[1], "tests/test_x.py::TestC::test_p[2]");
    }

    #[test]
    fn banner_only_summary() {
        let out =
            "============================== 2 passed in 0.01s ===============================\n";
        let c = parse(out).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (2, 0, 0));
        assert!(c.failed_tests.is_empty());
    }

    #[test]
    fn no_tests_ran_is_recognised_with_zero_counts() {
        let c = parse(include_str!("fixtures/pytest_no_tests.txt")).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (0, 0, 0));
    }

    #[test]
    fn collection_error_names_the_file() {
        let c = parse(include_str!("fixtures/pytest_collection_error.txt")).unwrap();
        assert_eq!(c.failed, 1);
        assert_eq!(c.failed_tests, vec!["tests/test_bad.py"]);
    }

    #[test]
    fn warnings_xfail_and_xpass() {
        let c = parse(include_str!("fixtures/pytest_warnings_xfail.txt")).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (2, 0, 1));
    }

    #[test]
    fn verbose_lines_are_the_fallback_without_a_short_summary() {
        let out = "tests/test_a.py::test_one PASSED                                       [ 50%]\n\
                   tests/test_a.py::test_two FAILED                                       [100%]\n\
                   ========================= 1 failed, 1 passed in 0.02s ==========================\n";
        let c = parse(out).unwrap();
        assert_eq!(c.failed_tests, vec!["tests/test_a.py::test_two"]);
    }

    #[test]
    fn older_seconds_format_and_captured_log_lines() {
        let out = "------------------------------ Captured log call -------------------------------\n\
                   ERROR    root:test_a.py:5 something broke\n\
                   =========================== short test summary info ============================\n\
                   FAILED test_a.py::test_log\n\
                   ===================== 1 failed, 4 passed in 1.52 seconds ======================\n";
        let c = parse(out).unwrap();
        assert_eq!((c.passed, c.failed), (4, 1));
        assert_eq!(c.failed_tests, vec!["test_a.py::test_log"]);
    }

    #[test]
    fn other_output_is_not_pytest() {
        assert_eq!(parse("Tests:       1 failed, 2 passed, 3 total\n"), None);
        assert_eq!(parse(include_str!("fixtures/cargo_multi.txt")), None);
        assert_eq!(parse("built 3 targets in 2s\n"), None);
    }
}
