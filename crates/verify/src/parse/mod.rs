//! Test-runner output parsers. Each runner has its own module that returns
//! `None` when the output is not recognisably its own; [`parse_test_output`]
//! tries them in turn. Colour codes are stripped first because some runners
//! colour their output even when it is not a terminal.

pub mod cargo;
pub mod gotest;
pub mod jest;
pub mod pytest;

use orch_core::TestCounts;
use regex::Regex;
use std::sync::LazyLock;

/// Parses test counts and failing test names from a test command's combined
/// output. Tries pytest, cargo test, go test and jest; `None` when none of
/// them recognises the output (for example a compile error before any test
/// ran).
pub fn parse_test_output(output: &str) -> Option<TestCounts> {
    let clean = strip_ansi(output);
    pytest::parse(&clean)
        .or_else(|| cargo::parse(&clean))
        .or_else(|| gotest::parse(&clean))
        .or_else(|| jest::parse(&clean))
}

/// Compiles a pattern written as a literal in this crate. Every pattern is
/// exercised by the parser tests, so a typo fails them, not production.
#[allow(clippy::expect_used)]
pub(crate) fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex in orch-verify is valid")
}

static ANSI: LazyLock<Regex> = LazyLock::new(|| re(r"\x1b\[[0-9;?]*[ -/]*[@-~]"));

/// Removes terminal colour/escape sequences and carriage returns.
pub fn strip_ansi(s: &str) -> String {
    ANSI.replace_all(s, "").replace('\r', "")
}

/// Appends `name` unless it is already present (runners often print the same
/// failure in more than one place).
pub(crate) fn push_unique(names: &mut Vec<String>, name: &str) {
    let name = name.trim();
    if !name.is_empty() && !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// Parses a decimal count; runner output never holds numbers near u32::MAX,
/// so an overflow is treated as "not a count".
pub(crate) fn num(s: &str) -> u32 {
    s.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_to_the_right_runner() {
        let py = include_str!("fixtures/pytest_q.txt");
        assert_eq!(
            parse_test_output(py).map(|c| c.runner),
            Some("pytest".to_string())
        );
        let rs = include_str!("fixtures/cargo_multi.txt");
        assert_eq!(
            parse_test_output(rs).map(|c| c.runner),
            Some("cargo".to_string())
        );
        let go = "--- FAIL: TestAdd (0.00s)\nFAIL\nFAIL\texample.com/calc\t0.002s\nFAIL\n";
        assert_eq!(
            parse_test_output(go).map(|c| c.runner),
            Some("go".to_string())
        );
        let js = "Tests:       1 failed, 2 passed, 3 total\n";
        assert_eq!(
            parse_test_output(js).map(|c| c.runner),
            Some("jest".to_string())
        );
    }

    #[test]
    fn unrecognised_output_gives_none() {
        assert_eq!(
            parse_test_output(include_str!("fixtures/cargo_compile_error.txt")),
            None
        );
        assert_eq!(
            parse_test_output("make: *** [Makefile:3: test] Error 2\n"),
            None
        );
        assert_eq!(parse_test_output(""), None);
    }

    #[test]
    fn colour_codes_do_not_hide_the_summary() {
        let coloured =
            "\x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m2 passed\x1b[0m\x1b[31m in 0.05s\x1b[0m\r\n";
        let counts = parse_test_output(coloured).unwrap();
        assert_eq!((counts.failed, counts.passed), (1, 2));
    }
}
