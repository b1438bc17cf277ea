//! Looking for processes from tests: what is still running after a kill,
//! a cancel or a timeout, found by a marker in its command line.

/// Live (non-zombie) processes, other than this one, whose command line
/// (arguments joined by spaces) contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline: Vec<u8> = cmdline
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// False for zombies and processes already gone.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_running_child_by_its_marker_and_not_after_it_is_reaped() {
        let marker = format!("orch-testkit-marker-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("sleep 30 # {marker}")])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(processes_matching(&marker), [child.id() as i32]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(processes_matching(&marker).is_empty());
    }
}
