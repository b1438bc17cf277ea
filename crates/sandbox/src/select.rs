//! `sandbox = "auto"`: Docker when an engine answers (and its backend
//! works), else bubblewrap when it works here, and otherwise a refusal —
//! orch does not run model-written code without isolation unless the
//! project says `sandbox = "none"` outright. [`select`] makes the choice up
//! front (for the CLI, which can print why); [`AutoSandbox`], what
//! `from_kind("auto", …)` returns, makes it on first use.

use crate::docker::{DockerOptions, DockerSandbox};
use crate::{from_kind, BwrapSandbox, ExecRequest, Sandbox, SandboxError, SandboxOptions};
use async_trait::async_trait;
use orch_process::ProcessOutput;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long the Docker engine gets to answer `GET /_ping`.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The sandbox a project will use, and what was learned choosing it
/// (fallbacks taken, the lack of isolation) for the user to see.
pub struct Selection {
    pub sandbox: Arc<dyn Sandbox>,
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selection")
            .field("sandbox", &self.sandbox.name())
            .field("notes", &self.notes)
            .finish()
    }
}

/// Builds the backend `kind` names (`auto`, `docker`, `bwrap`, `none`) and
/// makes sure it works here, with an actionable error if not. `docker`
/// holds the project's Docker settings, used when Docker is chosen.
pub async fn select(
    kind: &str,
    opts: SandboxOptions,
    docker: DockerOptions,
) -> Result<Selection, SandboxError> {
    let sandbox: Arc<dyn Sandbox> = match kind {
        "auto" => return choose(opts, docker, docker_endpoint(), BwrapSandbox::new).await,
        "docker" => Arc::new(DockerSandbox::new(docker, opts)),
        other => from_kind(other, opts)?,
    };
    sandbox.check().await?;
    let mut notes = Vec::new();
    if !sandbox.isolates() {
        notes.push(
            "sandbox = \"none\": model-written code runs on this machine without any isolation"
                .to_string(),
        );
    }
    Ok(Selection { sandbox, notes })
}

/// The choice behind `auto`, with the Docker endpoint and the bwrap
/// constructor as parameters so tests can make either fail.
async fn choose(
    opts: SandboxOptions,
    docker_opts: DockerOptions,
    docker: Endpoint,
    bwrap: impl FnOnce(SandboxOptions) -> BwrapSandbox,
) -> Result<Selection, SandboxError> {
    let mut notes = Vec::new();
    // A quick ping first: the engine client would wait far longer on a
    // socket that accepts but never answers.
    match ping(&docker).await {
        Ok(()) => {
            let sandbox = DockerSandbox::new(docker_opts, opts.clone());
            match sandbox.check().await {
                Ok(()) => {
                    notes.push(format!("using Docker at {docker}"));
                    return Ok(Selection {
                        sandbox: Arc::new(sandbox),
                        notes,
                    });
                }
                Err(e) => notes.push(format!(
                    "a Docker engine answers at {docker} but the docker sandbox does not work: {e}"
                )),
            }
        }
        Err(why) => notes.push(format!("no Docker engine answered at {docker}: {why}")),
    }
    let sandbox = bwrap(opts);
    match sandbox.check().await {
        Ok(()) => {
            notes.push("using bubblewrap".to_string());
            Ok(Selection {
                sandbox: Arc::new(sandbox),
                notes,
            })
        }
        Err(e) => Err(SandboxError::Unavailable(format!(
            "sandbox = \"auto\" found no working sandbox, and orch refuses to run \
             model-written code without one. Docker: {} Bubblewrap: {e}. Fix one of them, \
             choose it with sandbox = \"docker\" or \"bwrap\", or set sandbox = \"none\" to \
             run without isolation on purpose",
            notes.join("; ")
        ))),
    }
}

/// Where the Docker engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
    /// DOCKER_HOST names something this probe does not speak.
    Unsupported(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Unsupported(s) => write!(f, "{s}"),
        }
    }
}

/// `DOCKER_HOST` when set, else the standard socket.
pub(crate) fn docker_endpoint() -> Endpoint {
    endpoint_from(std::env::var("DOCKER_HOST").ok().as_deref())
}

fn endpoint_from(docker_host: Option<&str>) -> Endpoint {
    match docker_host.map(str::trim).filter(|s| !s.is_empty()) {
        None => Endpoint::Unix(PathBuf::from("/var/run/docker.sock")),
        Some(h) => {
            if let Some(p) = h.strip_prefix("unix://") {
                Endpoint::Unix(PathBuf::from(p))
            } else if let Some(a) = h.strip_prefix("tcp://") {
                Endpoint::Tcp(a.trim_end_matches('/').to_string())
            } else {
                Endpoint::Unsupported(h.to_string())
            }
        }
    }
}

/// True when a Docker engine answers `GET /_ping` at the usual place.
pub async fn docker_available() -> bool {
    ping(&docker_endpoint()).await.is_ok()
}

/// Asks the engine at `endpoint` for `/_ping`; the error says what failed.
pub(crate) async fn ping(endpoint: &Endpoint) -> Result<(), String> {
    let attempt = async {
        match endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| e.to_string())?;
                ping_over(stream).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                ping_over(stream).await
            }
            Endpoint::Unsupported(h) => {
                Err(format!("DOCKER_HOST={h} is neither unix:// nor tcp://"))
            }
        }
    };
    tokio::time::timeout(PING_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {} s", PING_TIMEOUT.as_secs()))?
}

async fn ping_over<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<(), String> {
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // HTTP/1.0: the engine closes the connection after the answer; the
    // answer is tiny, so stop reading early if it is not.
    let mut chunk = [0u8; 1024];
    while answer.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("").trim();
    let code = status.split_whitespace().nth(1);
    if status.starts_with("HTTP/1.") && code == Some("200") {
        Ok(())
    } else if status.is_empty() {
        Err("the socket closed without an answer".to_string())
    } else {
        Err(format!("answered `{status}`"))
    }
}

/// What `from_kind("auto", …)` returns: picks Docker or bubblewrap (see
/// [`select`]) on its first `check` or `exec`, then delegates to it.
pub struct AutoSandbox {
    opts: SandboxOptions,
    docker: DockerOptions,
    chosen: tokio::sync::OnceCell<Arc<dyn Sandbox>>,
    notes: Mutex<Vec<String>>,
}

impl AutoSandbox {
    /// With the default Docker settings (image `orch-sandbox:latest`).
    pub fn new(opts: SandboxOptions) -> Self {
        Self::with_docker(opts, DockerOptions::default())
    }

    /// With a project's Docker settings, used if Docker is chosen.
    pub fn with_docker(opts: SandboxOptions, docker: DockerOptions) -> Self {
        AutoSandbox {
            opts,
            docker,
            chosen: tokio::sync::OnceCell::new(),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The backend chosen, choosing it now if needed. A failed choice is
    /// not remembered: the next call looks again.
    pub async fn resolve(&self) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let chosen = self
            .chosen
            .get_or_try_init(|| async {
                let selection = select("auto", self.opts.clone(), self.docker.clone()).await?;
                for note in &selection.notes {
                    tracing::info!("sandbox auto: {note}");
                }
                if let Ok(mut notes) = self.notes.lock() {
                    *notes = selection.notes;
                }
                Ok::<_, SandboxError>(selection.sandbox)
            })
            .await?;
        Ok(chosen.clone())
    }

    /// Why the current backend was chosen (empty before the choice).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Sandbox for AutoSandbox {
    fn name(&self) -> &'static str {
        self.chosen.get().map(|s| s.name()).unwrap_or("auto")
    }

    /// Never resolves to the unisolated backend.
    fn isolates(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), SandboxError> {
        self.resolve().await.map(|_| ())
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError> {
        self.resolve().await?.exec(request).await
    }

    async fn release(&self, workdir: &Path) -> Result<(), SandboxError> {
        match self.chosen.get() {
            Some(s) => s.release(workdir).await,
            None => Ok(()),
        }
    }

    async fn shutdown(&self) -> Result<(), SandboxError> {
        match self.chosen.get() {
            Some(s) => s.shutdown().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A socket that answers every connection with `reply` (or nothing).
    fn fake_engine(dir: &Path, reply: Option<&'static str>) -> PathBuf {
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    match reply {
                        Some(r) => {
                            let _ = s.write_all(r.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        path
    }

    #[test]
    fn docker_host_picks_the_endpoint() {
        assert_eq!(
            endpoint_from(None),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            endpoint_from(Some("unix:///run/user/1000/docker.sock")),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            endpoint_from(Some("tcp://127.0.0.1:2375/")),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert!(matches!(
            endpoint_from(Some("ssh://me@host")),
            Endpoint::Unsupported(_)
        ));
    }

    #[tokio::test]
    async fn ping_accepts_only_a_200() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Endpoint::Unix(fake_engine(
            dir.path(),
            Some("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
        ));
        ping(&ok).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let broken = Endpoint::Unix(fake_engine(
            dir.path(),
            Some("HTTP/1.0 500 Internal Server Error\r\n\r\n"),
        ));
        let err = ping(&broken).await.unwrap_err();
        assert!(err.contains("500"), "{err}");

        let missing = Endpoint::Unix(dir.path().join("nothing.sock"));
        assert!(ping(&missing).await.is_err());
    }

    #[tokio::test]
    async fn ping_gives_up_on_a_silent_engine() {
        let dir = tempfile::tempdir().unwrap();
        let silent = Endpoint::Unix(fake_engine(dir.path(), None));
        let started = std::time::Instant::now();
        let err = ping(&silent).await.unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn auto_refuses_when_nothing_isolates() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = Endpoint::Unix(dir.path().join("no-docker.sock"));
        let err = choose(
            SandboxOptions::default(),
            DockerOptions::default(),
            nowhere,
            |o| BwrapSandbox::new(o).with_binary("/nonexistent/bwrap"),
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("refuses to run model-written code"), "{msg}");
        assert!(msg.contains("no Docker engine answered"), "{msg}");
        assert!(msg.contains("apt-get install bubblewrap"), "{msg}");
        assert!(msg.contains("sandbox = \"none\""), "{msg}");
    }

    #[tokio::test]
    async fn auto_never_picks_none() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = Endpoint::Unix(dir.path().join("no-docker.sock"));
        match choose(
            SandboxOptions::default(),
            DockerOptions::default(),
            nowhere,
            BwrapSandbox::new,
        )
        .await
        {
            Ok(sel) => {
                assert_eq!(sel.sandbox.name(), "bwrap");
                assert!(sel.sandbox.isolates());
                assert!(sel.notes.iter().any(|n| n.contains("no Docker engine")));
            }
            // Without bubblewrap here the only acceptable outcome is the
            // refusal.
            Err(e) => assert!(e.to_string().contains("refuses"), "{e}"),
        }
    }
}
