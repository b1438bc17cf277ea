//! A running `orch serve` for the end-to-end tests, its stderr collected
//! line by line, and the child-process harness under it (the metrics test
//! runs Prometheus with the same one). Waits name what they waited for and
//! print the log when they give up; a child still running when its handle
//! is dropped is killed, so a failing test leaves no server behind.

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How long a server may take to answer its first request.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

/// A loopback port that was free a moment ago (bound and released: free
/// unless something takes it in the instant before the child does).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, stdout dropped, stderr collected; killed when dropped.
pub struct Logged {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Logged {
    pub fn spawn(mut cmd: Command) -> Logged {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Logged { child, log }
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log has `needle` `times` times; panics if the child
    /// exited first, or once `deadline` has passed.
    fn logged(&mut self, needle: &str, times: usize, within: Duration, deadline: Instant) -> bool {
        if self.log().matches(needle).count() >= times {
            return true;
        }
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the child exited ({status}) before logging {needle:?}:\n{}",
                self.log()
            );
        }
        let count = if times > 1 {
            format!(" (x{times})")
        } else {
            String::new()
        };
        assert!(
            Instant::now() < deadline,
            "no {needle:?}{count} within {within:?}:\n{}",
            self.log()
        );
        false
    }

    /// Waits until the log has `needle`.
    pub fn wait_log(&mut self, needle: &str, within: Duration) {
        self.wait_log_times(needle, 1, within);
    }

    /// Waits until the log has `needle` `times` times.
    pub fn wait_log_times(&mut self, needle: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logged(needle, times, within, deadline) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Logged::wait_log`] for async tests: sleeps without blocking the runtime.
    pub async fn until_logged(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logged(needle, 1, within, deadline) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `url` until it answers 200.
    pub async fn wait_http_ok(&self, url: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            if let Ok(r) = http.get(url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on the child this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the child to exit (after [`Logged::sigterm`]).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (within 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit(STOP_WITHIN)
    }

    /// [`Logged::terminate`], asserting a clean exit.
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "{status}\n{}", self.log());
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `orch serve`; the [`Logged`] methods apply to it.
pub struct Serve {
    proc: Logged,
    /// The port of `--listen 127.0.0.1:<port>`, when it was started so.
    port: Option<u16>,
}

impl Serve {
    /// `orch serve` with `args`.
    pub fn start(fx: &super::Fixture, args: &[&str]) -> Serve {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Serve::spawn(fx.orch_cmd(&all))
    }

    /// A prepared `orch serve` command (for tests that set its environment).
    pub fn spawn(cmd: Command) -> Serve {
        Serve {
            proc: Logged::spawn(cmd),
            port: None,
        }
    }

    /// `orch serve --listen 127.0.0.1:<a free port>` with `env` set.
    pub fn listening(fx: &super::Fixture, env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let mut cmd = fx.orch_cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
        cmd.envs(env.iter().copied());
        Serve {
            port: Some(port),
            ..Serve::spawn(cmd)
        }
    }

    /// [`Serve::listening`], then waits for /healthz and for the start-up
    /// run to end (90 s each), so what a test sees is what it asked for.
    pub async fn ready(fx: &super::Fixture, env: &[(&str, &str)]) -> Serve {
        let mut serve = Serve::listening(fx, env);
        serve.wait_healthy().await;
        serve
            .until_logged("calc: run finished", Duration::from_secs(90))
            .await;
        serve
    }

    pub fn port(&self) -> u16 {
        self.port
            .expect("orch serve was started without --listen: use Serve::listening")
    }

    /// `127.0.0.1:<port>`, as given to `--listen`.
    pub fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.listen())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Polls /healthz until it answers 200 (90 s).
    pub async fn wait_healthy(&self) {
        self.proc.wait_http_ok(&self.url("/healthz")).await;
    }
}

impl Deref for Serve {
    type Target = Logged;

    fn deref(&self) -> &Logged {
        &self.proc
    }
}

impl DerefMut for Serve {
    fn deref_mut(&mut self) -> &mut Logged {
        &mut self.proc
    }
}
