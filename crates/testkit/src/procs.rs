//! Looking for processes from tests: what is still running after a kill,
//! a cancel or a timeout, found by a marker in its command line.

/// Live (non-zombie) processes, other than this one, whose command line
/// (arguments joined by spaces) contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<i32> {
    processes_where(|cmdline| cmdline.contains(needle))
}

/// Live processes whose command line (arguments joined by spaces, the
/// program by its file name: `/usr/bin/sleep 5` is `sleep 5`) is exactly
/// `command`: the program itself, not a wrapper such as bwrap or `sh -c`
/// whose arguments merely name it.
pub fn processes_running(command: &str) -> Vec<i32> {
    processes_where(|cmdline| {
        let cmdline = cmdline.trim_end();
        let program_end = cmdline.find(' ').unwrap_or(cmdline.len());
        let name_start = cmdline[..program_end].rfind('/').map_or(0, |i| i + 1);
        &cmdline[name_start..] == command
    })
}

fn processes_where(wanted: impl Fn(&str) -> bool) -> Vec<i32> {
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
        if wanted(&String::from_utf8_lossy(&cmdline)) {
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

    #[test]
    fn a_running_program_is_told_from_the_shell_that_names_it() {
        let command = format!("sleep {}", 40_000_000 + std::process::id());
        // `; true` keeps the shell from exec'ing sleep in its place.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", &format!("{command}; true")])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while processes_running(&command).is_empty() {
            assert!(std::time::Instant::now() < deadline, "sleep never ran");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(processes_matching(&command).len(), 2, "the shell and sleep");
        let sleep = processes_running(&command);
        assert_eq!(sleep.len(), 1);
        assert_ne!(sleep[0], shell.id() as i32);
        shell.kill().unwrap();
        shell.wait().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-9", &sleep[0].to_string()])
            .status();
    }
}
