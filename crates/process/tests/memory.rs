//! Huge output must not be buffered: the runner streams into a capped
//! buffer. Its own test binary so no other test's allocations blur the
//! measurement.

use orch_process::{run, ProcessSpec};

/// Peak resident set size of this process, in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test]
async fn one_gigabyte_of_output_uses_bounded_memory() {
    let before = peak_rss_kb().unwrap();
    let spec = ProcessSpec::new("sh")
        .arg("-c")
        .arg("head -c 1000000000 /dev/zero | tr '\\0' 'z'")
        .output_limit(64 * 1024);
    let out = run(spec).await.unwrap();
    let after = peak_rss_kb().unwrap();
    assert!(out.success());
    assert!(out.truncated);
    assert!(
        out.stdout.contains("orch cut 999934464 bytes"),
        "{}",
        &out.stdout[..200]
    );
    // 1 GB went through; the peak grew by far less than that.
    let grown_mb = (after.saturating_sub(before)) / 1024;
    assert!(grown_mb < 64, "peak RSS grew by {grown_mb} MB");
}
