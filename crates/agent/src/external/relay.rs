//! The TCP → unix-socket relay that runs inside the sandbox, in front of
//! the agent: `orch __relay --listen 127.0.0.1:PORT --unix SOCKET -- PROGRAM
//! ARGS…`.
//!
//! bwrap gives the sandbox its own network namespace (`--unshare-net`), so
//! nothing in it can reach the host's loopback, where a TCP proxy would
//! listen. The proxy listens on a unix socket instead, in a directory the
//! sandbox sees (read-only binds still allow `connect`), and this relay —
//! the `orch` binary itself, shown read-only in the sandbox — listens on
//! the sandbox's own loopback and pipes every connection to that socket.
//! It binds first, then starts PROGRAM (the agent), and exits with its exit
//! code, so there is no race between the two and one process tree to kill.
//! The agent can reach this endpoint and nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

/// The hidden subcommand that runs the relay.
pub const SUBCOMMAND: &str = "__relay";

/// What the relay was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayArgs {
    pub listen: String,
    pub unix: PathBuf,
    pub program: Vec<String>,
}

/// Reads `--listen ADDR --unix PATH -- PROGRAM ARGS…`.
pub fn parse(args: &[String]) -> Result<RelayArgs, String> {
    let usage = "usage: orch __relay --listen 127.0.0.1:PORT --unix SOCKET -- PROGRAM [ARGS…]";
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or(format!("no `--` before the program; {usage}"))?;
    let (own, program) = (&args[..split], &args[split + 1..]);
    let value = |flag: &str| {
        own.iter()
            .position(|a| a == flag)
            .and_then(|i| own.get(i + 1))
            .cloned()
            .ok_or(format!("`{flag}` is missing; {usage}"))
    };
    if program.is_empty() {
        return Err(format!("no program after `--`; {usage}"));
    }
    Ok(RelayArgs {
        listen: value("--listen")?,
        unix: PathBuf::from(value("--unix")?),
        program: program.to_vec(),
    })
}

/// Runs the relay and the program; the program's exit code is returned
/// (128 + the signal when it was killed).
pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("orch relay: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orch relay: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(parsed)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("orch relay: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RelayArgs) -> Result<u8, String> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut child = tokio::process::Command::new(&args.program[0])
        .args(&args.program[1..])
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.program[0]))?;
    let unix = args.unix.clone();
    let accept = async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(pipe(tcp, unix.clone()));
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| format!("waiting for the program: {e}"))?,
        () = accept => return Err("the relay stopped accepting connections".into()),
    };
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Copies one connection both ways until either side closes.
pub async fn pipe(mut tcp: tokio::net::TcpStream, unix: PathBuf) {
    match tokio::net::UnixStream::connect(&unix).await {
        Ok(mut sock) => {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut sock).await;
        }
        Err(e) => eprintln!("orch relay: cannot reach {}: {e}", unix.display()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_read_and_mistakes_named() {
        let a = parse(&strings(&[
            "--listen",
            "127.0.0.1:4100",
            "--unix",
            "/r/s.sock",
            "--",
            "sh",
            "-c",
            "x",
        ]))
        .unwrap();
        assert_eq!(a.listen, "127.0.0.1:4100");
        assert_eq!(a.unix, PathBuf::from("/r/s.sock"));
        assert_eq!(a.program, strings(&["sh", "-c", "x"]));
        let e = parse(&strings(&["--listen", "x", "--", "sh"])).unwrap_err();
        assert!(e.contains("`--unix` is missing"), "{e}");
        let e = parse(&strings(&["--listen", "x", "--unix", "y"])).unwrap_err();
        assert!(e.contains("no `--`"), "{e}");
    }

    #[tokio::test]
    async fn bytes_go_both_ways_between_tcp_and_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .unwrap();
        });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            let (conn, _) = tcp.accept().await.unwrap();
            pipe(conn, path).await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"PING");
    }
}
