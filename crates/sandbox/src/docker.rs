//! Docker backend, through the Engine API (bollard; the docker CLI is never
//! run). Commands run by exec in a long-lived container per worktree in use
//! (a worker slot), with the design notes' mounts:
//!
//! | mount | on reset (`release`, then the next worktree) |
//! |---|---|
//! | `/workspace`: the worktree, bind-mounted | replaced by the next task's |
//! | named volumes `orch-<project>-<name>` | kept |
//! | logs volume (one per slot) | cleared |
//! | shared data directory, read-only | untouched |
//!
//! A bind mount cannot change on a live container, so a reset recreates the
//! slot's container: the old one has its processes killed and its logs
//! cleared by one exec, is removed in the background, and the next worktree
//! gets a fresh container on the same volumes (create + start, well under a
//! second). Every container runs with all capabilities dropped,
//! no-new-privileges, a read-only root with a tmpfs /tmp, no network unless
//! allowed, the CPU/memory/PID limits, and a non-root user: uid 10001 when
//! orch is root (the worktree is then opened to that uid with ACLs, see
//! `access`), else orch's own uid. Everything is labelled
//! `orch.project=<project>` so `status` and `prune` find it.
//!
//! orch's own secrets are never mounted: the config file, the `.env` beside
//! it and data_dir ([`SandboxOptions::hidden`]). A worker container mounts
//! only the worktree and the repository's git dir (a worktree lies inside
//! data_dir, but is mounted by itself), named volumes, and the shared data
//! directory; a mounted host directory that contains a hidden path (shared
//! data, or the checkout `orch sandbox shell` mounts) gets it masked inside
//! the container (an empty tmpfs over a directory, an unreadable empty file
//! over a file). The environment is the fixed base plus what the request
//! passes (`pass_env`). Containers are not orch's children: after a
//! `kill -9` of orch they are found stale by their labels and removed by
//! the next run.

mod access;
mod admin;
mod shell;

pub use admin::{
    build_image, image_exists, import_rootfs, list, ping, prune, reset_project, ContainerInfo,
    Inventory, PruneReport, ResetReport, VolumeInfo,
};
pub use shell::{open_shell, ShellOptions};

use crate::{ExecRequest, Limits, Sandbox, SandboxError, SandboxOptions};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, RestartContainerOptions,
    TopOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use orch_process::{CappedBuffer, Limit, ProcessOutput};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The image used when a project names none (what
/// `scripts/build-sandbox-image.sh` builds).
pub const DEFAULT_IMAGE: &str = "orch-sandbox:latest";
/// Where the worktree appears inside the container.
pub const WORKSPACE: &str = "/workspace";
/// uid and gid commands run as when orch itself runs as root.
pub const SANDBOX_UID: u32 = 10001;

pub(crate) const LABEL_PROJECT: &str = "orch.project";
pub(crate) const LABEL_ROLE: &str = "orch.role";
pub(crate) const LABEL_SLOT: &str = "orch.slot";
pub(crate) const LABEL_INSTANCE: &str = "orch.instance";
pub(crate) const LABEL_OWNER: &str = "orch.owner";
pub(crate) const LABEL_PID: &str = "orch.pid";

pub(crate) const ROLE_WORKER: &str = "worker";
pub(crate) const ROLE_SHELL: &str = "shell";
pub(crate) const ROLE_HELPER: &str = "helper";
pub(crate) const ROLE_VOLUME: &str = "volume";
pub(crate) const ROLE_LOGS: &str = "logs";

pub(crate) const CONTAINER_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// pid 1 of every sandbox container: sleeps and reaps orphans (dash's
/// `wait` collects any child, adopted ones included, so zombies never eat
/// the PID limit). `kill -9 -1` from an exec spares pid 1 and only costs it
/// a `sleep`, which the loop starts again.
pub(crate) const INIT_SCRIPT: &str =
    r#"trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done"#;

/// Runs the command (`$1`) in its own session and kills that session's
/// process group once it exits, so background leftovers die with it, as
/// they do under the host process runner.
const EXEC_WRAPPER: &str =
    r#"setsid sh -c "$1" & p=$!; wait $p; s=$?; kill -9 -$p 2>/dev/null; exit $s"#;

/// Kills every process of the sandbox user in the container except pid 1
/// and itself; repeats while anything was left (a fork bomb keeps forking).
const KILL_ALL: &str = "while kill -9 -1 2>/dev/null; do :; done";

/// Kills everything, then empties the logs directory given as `$1`.
const KILL_AND_CLEAR_LOGS: &str = r#"while kill -9 -1 2>/dev/null; do :; done
[ -d "$1" ] || exit 0
chmod -R u+rwX "$1" 2>/dev/null
find "$1" -mindepth 1 -delete"#;

/// The cgroup's OOM-kill counter (v2 `memory.events`, v1 `memory.oom_control`).
const READ_OOM_COUNTER: &str =
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null; true";

/// How long output is still read after a timed-out command was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Time allowed for orch's own short execs (kill, clear logs, counters).
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(30);

/// Docker-specific settings of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerOptions {
    /// Image to run; it must exist on the engine (see `check`).
    pub image: String,
    /// Project name: labels, container and volume names.
    pub project: String,
    /// Named volumes kept across resets: (name, mount path). The volume is
    /// `orch-<project>-<name>`, shared by the project's slots.
    pub volumes: Vec<(String, String)>,
    /// Mount path of the per-slot logs volume, cleared on reset; empty for
    /// none.
    pub logs_path: String,
    /// Host directory mounted read-only: (host path, mount path).
    pub shared_data: Option<(PathBuf, String)>,
    /// `uid[:gid]` commands run as; default 10001:10001 when orch is root,
    /// else orch's own uid and gid.
    pub user: Option<String>,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            image: DEFAULT_IMAGE.to_string(),
            project: "default".to_string(),
            volumes: Vec::new(),
            logs_path: "/env/logs".to_string(),
            shared_data: None,
            user: None,
        }
    }
}

/// Connects to the engine named by `DOCKER_HOST` (default: the local
/// socket) and settles on an API version both sides speak.
pub async fn connect() -> Result<Docker, SandboxError> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(&e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))
}

fn unreachable(e: &DockerError) -> SandboxError {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    SandboxError::Unavailable(format!(
        "cannot reach the Docker engine at {host}: {e}. Start it (`systemctl start docker`), \
         make sure this user may use its socket (root or the `docker` group) and DOCKER_HOST \
         is right, or set sandbox = \"bwrap\" for this project"
    ))
}

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Backend(format!("docker: {what}: {e}"))
}

pub(crate) fn is_status(e: &DockerError, codes: &[u16]) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

/// What to tell someone whose image is missing.
pub(crate) fn missing_image_hint(image: &str) -> String {
    format!(
        "the sandbox image `{image}` is not on the Docker engine: build it without a registry \
         with `scripts/build-sandbox-image.sh` (debootstrap + import) or `orch sandbox build \
         --rootfs DIR --tag {image}`, or from a Dockerfile with `orch sandbox build`"
    )
}

/// Creates the container `name` from `body` and returns its id. `role`
/// names it in errors ("creating the {role} container"); a missing `image`
/// is reported as such, with how to build it.
pub(crate) async fn create_named(
    docker: &Docker,
    name: String,
    body: ContainerCreateBody,
    image: &str,
    role: &str,
) -> Result<String, SandboxError> {
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| {
            if is_status(&e, &[404]) {
                SandboxError::Unavailable(missing_image_hint(image))
            } else {
                backend(&format!("creating the {role} container"), e)
            }
        })?;
    Ok(created.id)
}

/// [`create_named`], then starts the container; one that will not start
/// is removed again so no stopped container is left behind.
pub(crate) async fn create_and_start(
    docker: &Docker,
    name: String,
    body: ContainerCreateBody,
    image: &str,
    role: &str,
) -> Result<String, SandboxError> {
    let id = create_named(docker, name, body, image, role).await?;
    if let Err(e) = docker.start_container(&id, None).await {
        let _ = force_remove(docker, &id).await;
        return Err(backend(&format!("starting the {role} container"), e));
    }
    Ok(id)
}

/// Removes container `id`, killing what runs in it. One already gone
/// (404) or already being removed (409: a background removal) counts as
/// removed.
pub(crate) async fn force_remove(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, &[404, 409]) => Ok(()),
        Err(e) => Err(backend(&format!("removing container {id}"), e)),
    }
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; everything else
/// becomes `-`.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "x".to_string()
    } else {
        s
    }
}

/// The Docker volume behind a project's named volume.
pub fn volume_name(project: &str, name: &str) -> String {
    format!("orch-{}-{}", sanitize(project), sanitize(name))
}

/// The logs volume of one slot (a `.` keeps it apart from named volumes,
/// whose sanitized names have none).
pub fn logs_volume_name(project: &str, slot: usize) -> String {
    format!("orch-{}.logs.{slot}", sanitize(project))
}

/// A short unique suffix for container names.
pub(crate) fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}",
        (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_add(n) & 0xffff_ffff_ffff
    )
}

/// uid and gid commands run as.
pub(crate) fn resolve_user(user: Option<&str>) -> Result<(u32, u32), SandboxError> {
    let Some(spec) = user.map(str::trim).filter(|s| !s.is_empty()) else {
        // SAFETY: these getters have no preconditions.
        let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
        return Ok(if euid == 0 {
            (SANDBOX_UID, SANDBOX_UID)
        } else {
            (uid, gid)
        });
    };
    let bad = || {
        SandboxError::Unavailable(format!(
            "docker user `{spec}` must be numeric `uid` or `uid:gid` (names need the image's \
             /etc/passwd, which orch does not read); for example user = \"10001:10001\""
        ))
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, spec),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = g.parse().map_err(|_| bad())?;
    if uid == 0 {
        return Err(SandboxError::Unavailable(
            "docker user 0 (root) is refused: model-written code must run as a non-root user; \
             remove `user` to use 10001:10001"
                .to_string(),
        ));
    }
    Ok((uid, gid))
}

/// Everything a sandbox container is created from.
#[derive(Debug, Clone)]
pub(crate) struct ContainerPlan {
    pub image: String,
    pub user: (u32, u32),
    pub labels: HashMap<String, String>,
    /// Host directory mounted at /workspace.
    pub workdir: PathBuf,
    pub workdir_read_only: bool,
    /// Host paths mounted read-only (at the same path, or under /workspace
    /// when they lie inside the worktree).
    pub extra_ro: Vec<PathBuf>,
    /// (volume, mount path)
    pub volumes: Vec<(String, String)>,
    /// Mount path of a tmpfs (instead of a volume) for logs, if any.
    pub tmpfs_logs: Option<String>,
    pub shared_data: Option<(PathBuf, String)>,
    pub network: bool,
    pub limits: Limits,
    /// Host paths that must stay unreadable ([`SandboxOptions::hidden`]).
    pub hidden: Vec<PathBuf>,
}

impl ContainerPlan {
    /// The create request for this plan.
    pub fn body(&self) -> ContainerCreateBody {
        let mut mounts = vec![bind(&self.workdir, WORKSPACE, self.workdir_read_only)];
        for p in &self.extra_ro {
            let target = match p.strip_prefix(&self.workdir) {
                Ok(rel) if rel.as_os_str().is_empty() => continue,
                Ok(rel) => Path::new(WORKSPACE).join(rel),
                Err(_) => p.clone(),
            };
            mounts.push(bind(p, &target.to_string_lossy(), true));
        }
        for (volume, path) in &self.volumes {
            mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.clone()),
                target: Some(path.clone()),
                read_only: Some(false),
                ..Default::default()
            });
        }
        if let Some((host, path)) = &self.shared_data {
            mounts.push(bind(host, path, true));
        }
        let mut tmpfs = HashMap::from([(
            "/tmp".to_string(),
            "rw,exec,nosuid,nodev,mode=1777".to_string(),
        )]);
        self.mask_hidden(&mut mounts, &mut tmpfs);
        if let Some(path) = &self.tmpfs_logs {
            tmpfs.insert(
                path.clone(),
                format!(
                    "rw,nosuid,nodev,mode=0755,uid={},gid={}",
                    self.user.0, self.user.1
                ),
            );
        }
        let memory = self
            .limits
            .memory_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let host_config = HostConfig {
            mounts: Some(mounts),
            tmpfs: Some(tmpfs),
            network_mode: Some(if self.network { "bridge" } else { "none" }.to_string()),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            readonly_rootfs: Some(true),
            memory,
            // Equal to memory: no swap, so a hog is killed instead of
            // thrashing.
            memory_swap: memory,
            nano_cpus: self.limits.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: self
                .limits
                .pids
                .map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
            init: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            user: Some(format!("{}:{}", self.user.0, self.user.1)),
            cmd: Some(vec!["sh".into(), "-c".into(), INIT_SCRIPT.into()]),
            working_dir: Some(WORKSPACE.to_string()),
            env: Some(base_env()),
            labels: Some(self.labels.clone()),
            network_disabled: Some(!self.network),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

impl ContainerPlan {
    /// Masks every hidden path that a host bind would show: a directory
    /// gets an empty tmpfs only root may enter (the sandbox user is never
    /// root), a file the unreadable mask file, at
    /// its place inside the container (Docker mounts the deeper target
    /// last). Only the worktree itself is never masked; a worktree or git
    /// dir that lies inside a hidden directory is mounted on its own and
    /// does not show the rest of it.
    fn mask_hidden(&self, mounts: &mut Vec<Mount>, tmpfs: &mut HashMap<String, String>) {
        let hidden = crate::existing_hidden(&self.hidden);
        if hidden.is_empty() {
            return;
        }
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let binds: Vec<(PathBuf, String, bool)> = mounts
            .iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .filter_map(|m| {
                let source = PathBuf::from(m.source.as_deref()?);
                let target = m.target.clone()?;
                let is_workspace = target == WORKSPACE;
                Some((real(&source), target, is_workspace))
            })
            .collect();
        let mut mask_file: Option<String> = None;
        for h in &hidden {
            for (source, target, is_workspace) in &binds {
                let Ok(rel) = h.path.strip_prefix(source) else {
                    continue;
                };
                if rel.as_os_str().is_empty() && *is_workspace {
                    continue;
                }
                let inside = Path::new(target).join(rel).to_string_lossy().into_owned();
                if h.is_dir {
                    tmpfs.insert(
                        inside,
                        "rw,nosuid,nodev,noexec,size=4k,mode=0700".to_string(),
                    );
                } else {
                    let file = mask_file.get_or_insert_with(|| {
                        crate::mask_file_or_null().to_string_lossy().into_owned()
                    });
                    mounts.push(bind(Path::new(file.as_str()), &inside, true));
                }
            }
        }
    }
}

fn bind(host: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(host.to_string_lossy().into_owned()),
        target: Some(target.to_string()),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The fixed environment of every sandbox container. Nothing from orch's
/// own environment leaks in; per-command variables come with each exec.
pub(crate) fn base_env() -> Vec<String> {
    vec![
        format!("PATH={CONTAINER_PATH}"),
        "HOME=/tmp".to_string(),
        "LANG=C.UTF-8".to_string(),
        "PYTHONDONTWRITEBYTECODE=1".to_string(),
        // The worktree and its git dir belong to another uid; without this
        // git inside refuses them as "dubious ownership".
        "GIT_CONFIG_COUNT=1".to_string(),
        "GIT_CONFIG_KEY_0=safe.directory".to_string(),
        "GIT_CONFIG_VALUE_0=*".to_string(),
    ]
}

/// Slot numbers in use per project in this process, so two sandboxes of one
/// project (say, workers and the merge queue) never share a slot's
/// container name or logs volume.
static SLOTS_IN_USE: Mutex<BTreeMap<String, BTreeSet<usize>>> = Mutex::new(BTreeMap::new());
/// Instances alive in this process: their containers are not stale.
static LIVE_INSTANCES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few map operations: a panic inside one
    // cannot leave the data half-changed, so keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lowest slot number of `project` no sandbox in this process uses.
fn claim_slot(project: &str) -> usize {
    let mut slots = lock(&SLOTS_IN_USE);
    let used = slots.entry(project.to_string()).or_default();
    let index = (0..).find(|i| !used.contains(i)).unwrap_or(usize::MAX);
    used.insert(index);
    index
}

fn free_slot(project: &str, index: usize) {
    if let Some(used) = lock(&SLOTS_IN_USE).get_mut(project) {
        used.remove(&index);
    }
}

/// Whether process `pid` exists on this machine.
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// True for a container made by a sandbox that no longer exists: another
/// process that is gone, or an instance of this process that was dropped.
fn is_stale(labels: &HashMap<String, String>) -> bool {
    let pid = labels.get(LABEL_PID).and_then(|p| p.parse::<i32>().ok());
    let instance = labels.get(LABEL_INSTANCE);
    match pid {
        Some(pid) if pid == std::process::id() as i32 => {
            !instance.is_some_and(|i| lock(&LIVE_INSTANCES).contains(i))
        }
        Some(pid) => !pid_alive(pid),
        None => true,
    }
}

/// A worker slot: one container at a time, bound to one worktree.
#[derive(Debug)]
struct Slot {
    index: usize,
    /// OOM kills already accounted for in the current container's cgroup.
    oom_seen: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The running container, if any.
    container: Option<Live>,
    /// The worktree this slot serves.
    workdir: Option<PathBuf>,
    /// Access granted on that worktree (root hosts).
    grant: Option<access::Grant>,
    /// The logs volume could not be emptied in place: recreate it.
    logs_dirty: bool,
    /// Leftover containers of this slot from an earlier run were removed.
    stale_checked: bool,
}

#[derive(Debug, Clone)]
struct Live {
    id: String,
    /// Host paths mounted read-only in it.
    mounted_ro: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Pool {
    bound: HashMap<PathBuf, Arc<Slot>>,
    idle: Vec<Arc<Slot>>,
}

/// Runs commands in Docker containers; see the module docs.
pub struct DockerSandbox {
    docker_opts: DockerOptions,
    opts: SandboxOptions,
    /// Tells this instance's containers from an earlier run's.
    instance: String,
    client: tokio::sync::OnceCell<Docker>,
    pool: Mutex<Pool>,
    /// Background removals of retired containers.
    removals: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for DockerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSandbox")
            .field("docker_opts", &self.docker_opts)
            .field("opts", &self.opts)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for DockerSandbox {
    /// Best effort for a sandbox dropped without `shutdown`: remove its
    /// containers in the background and give worktrees back.
    fn drop(&mut self) {
        lock(&LIVE_INSTANCES).remove(&self.instance);
        let pool = std::mem::take(&mut *lock(&self.pool));
        let mut ids = Vec::new();
        for slot in pool.bound.values().chain(pool.idle.iter()) {
            free_slot(&self.docker_opts.project, slot.index);
            if let Ok(mut st) = slot.state.try_lock() {
                ids.extend(st.container.take().map(|l| l.id));
                if let Some(g) = st.grant.take() {
                    let _ = access::revoke(&g);
                }
            }
        }
        let (Some(docker), Ok(handle)) = (
            self.client.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        if !ids.is_empty() {
            handle.spawn(async move {
                for id in ids {
                    let _ = force_remove(&docker, &id).await;
                }
            });
        }
    }
}

/// The CPU limit, at most the CPUs this machine has (the engine refuses
/// more).
pub(crate) fn clamp_cpus(mut limits: Limits) -> Limits {
    let host = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    limits.cpus = limits.cpus.map(|c| c.min(host));
    limits
}

/// Why one exec attempt failed.
enum RunError {
    /// The container is gone or stopped (removed by `orch sandbox reset`,
    /// the engine restarted): make a new one and try once more.
    ContainerGone,
    Other(SandboxError),
}

impl From<SandboxError> for RunError {
    fn from(e: SandboxError) -> Self {
        RunError::Other(e)
    }
}

fn classify(what: &str, e: DockerError) -> RunError {
    if is_status(&e, &[404, 409]) {
        RunError::ContainerGone
    } else {
        RunError::Other(backend(what, e))
    }
}

/// Result of one of orch's own short execs.
pub(crate) struct Quick {
    pub exit_code: Option<i64>,
    pub stdout: String,
}

/// Runs `cmd` in `container` as `user` and collects its output (orch's
/// housekeeping: kills, log clearing, counters).
pub(crate) async fn quick_exec(
    docker: &Docker,
    container: &str,
    user: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<Quick, DockerError> {
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd),
                user: Some(user.to_string()),
                working_dir: Some("/".to_string()),
                ..Default::default()
            },
        )
        .await?;
    let run = async {
        let mut stdout = CappedBuffer::new(64 * 1024);
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await?
        {
            while let Some(item) = output.next().await {
                if let LogOutput::StdOut { message } | LogOutput::Console { message } = item? {
                    stdout.push(&message);
                }
            }
        }
        let mut exit_code = None;
        for _ in 0..200 {
            let info = docker.inspect_exec(&exec.id).await?;
            if info.running != Some(true) {
                exit_code = info.exit_code;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Quick {
            exit_code,
            stdout: stdout.finish().0,
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(DockerError::RequestTimeoutError),
    }
}

/// Kills every process of `user` in `container` (except pid 1). When even
/// that exec cannot start or finish (a fork bomb holds every PID), the
/// container is restarted instead, which kills everything and keeps its
/// mounts. Returns true when it restarted.
async fn kill_all(docker: &Docker, container: &str, user: &str) -> bool {
    let cmd = vec!["sh".to_string(), "-c".to_string(), KILL_ALL.to_string()];
    match quick_exec(docker, container, user, cmd, Duration::from_secs(10)).await {
        // The loop exits 0 once nothing is left to kill; any other code
        // means the shell never ran it (no PID for it, 126/127/255).
        Ok(q) if q.exit_code == Some(0) => false,
        other => {
            if let Err(e) = &other {
                tracing::debug!(container, error = %e, "kill exec failed; restarting the container");
            }
            let restart = docker
                .restart_container(
                    container,
                    Some(RestartContainerOptions {
                        t: Some(0),
                        signal: Some("SIGKILL".to_string()),
                    }),
                )
                .await;
            if let Err(e) = restart {
                tracing::warn!(container, error = %e, "cannot restart a sandbox container to kill its processes");
            }
            true
        }
    }
}

/// Kills what an exec started if the caller stops waiting for it (its
/// future dropped), so nothing keeps running unobserved.
struct KillGuard {
    docker: Docker,
    container: String,
    user: String,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (docker, container, user) = (
                self.docker.clone(),
                self.container.clone(),
                self.user.clone(),
            );
            handle.spawn(async move {
                kill_all(&docker, &container, &user).await;
            });
        }
    }
}

/// The highest `oom_kill` count in cgroup memory stats text.
fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

impl DockerSandbox {
    pub fn new(docker: DockerOptions, opts: SandboxOptions) -> Self {
        let instance = nonce();
        lock(&LIVE_INSTANCES).insert(instance.clone());
        DockerSandbox {
            docker_opts: docker,
            opts,
            instance,
            client: tokio::sync::OnceCell::new(),
            pool: Mutex::new(Pool::default()),
            removals: Mutex::new(Vec::new()),
        }
    }

    pub fn docker_options(&self) -> &DockerOptions {
        &self.docker_opts
    }

    /// uid and gid commands run as.
    pub fn user(&self) -> Result<(u32, u32), SandboxError> {
        resolve_user(self.docker_opts.user.as_deref())
    }

    fn user_spec(&self) -> Result<String, SandboxError> {
        let (u, g) = self.user()?;
        Ok(format!("{u}:{g}"))
    }

    async fn client(&self) -> Result<&Docker, SandboxError> {
        self.client.get_or_try_init(connect).await
    }

    /// The container currently serving `workdir`, if any (for tests and
    /// tools that want to look inside, e.g. `docker top`).
    pub async fn container_for(&self, workdir: &Path) -> Option<String> {
        let slot = self.lock_pool().bound.get(workdir).cloned()?;
        let st = slot.state.lock().await;
        st.container.as_ref().map(|l| l.id.clone())
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        lock(&self.pool)
    }

    fn labels(&self, role: &str, slot: Option<usize>) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (LABEL_PROJECT.to_string(), self.docker_opts.project.clone()),
            (LABEL_ROLE.to_string(), role.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_PID.to_string(), std::process::id().to_string()),
        ]);
        if let Some(s) = slot {
            l.insert(LABEL_SLOT.to_string(), s.to_string());
        }
        l
    }

    /// The slot serving `workdir`: its own, else an idle one, else a new one.
    fn slot_for(&self, workdir: &Path) -> Arc<Slot> {
        let mut pool = self.lock_pool();
        if let Some(s) = pool.bound.get(workdir) {
            return s.clone();
        }
        let slot = match pool.idle.pop() {
            Some(s) => s,
            None => {
                let index = claim_slot(&self.docker_opts.project);
                Arc::new(Slot {
                    index,
                    oom_seen: AtomicU64::new(0),
                    state: tokio::sync::Mutex::new(SlotState::default()),
                })
            }
        };
        pool.bound.insert(workdir.to_path_buf(), slot.clone());
        slot
    }

    /// The container for `req`'s worktree, created if needed.
    async fn acquire(
        &self,
        docker: &Docker,
        req: &ExecRequest,
    ) -> Result<(Arc<Slot>, String), SandboxError> {
        let slot = self.slot_for(&req.workdir);
        let mut st = slot.state.lock().await;
        if let Some(live) = &st.container {
            let mounts_cover = req.extra_ro.iter().all(|p| live.mounted_ro.contains(p));
            if st.workdir.as_deref() == Some(req.workdir.as_path()) && mounts_cover {
                return Ok((slot.clone(), live.id.clone()));
            }
            // A new read-only path is needed: mounts are fixed at creation.
            tracing::debug!(workdir = %req.workdir.display(), "recreating the container for new read-only mounts");
            let id = live.id.clone();
            st.container = None;
            self.retire(docker, &slot, &mut st, &id, false).await;
        }
        if st.workdir.as_deref() != Some(req.workdir.as_path()) {
            if let Some(g) = st.grant.take() {
                revoke(g).await?;
            }
            st.workdir = Some(req.workdir.clone());
        }
        let id = self.create_container(docker, &slot, &mut st, req).await?;
        Ok((slot.clone(), id))
    }

    /// Makes, starts and records the slot's container for `req`.
    async fn create_container(
        &self,
        docker: &Docker,
        slot: &Slot,
        st: &mut SlotState,
        req: &ExecRequest,
    ) -> Result<String, SandboxError> {
        let user = self.user()?;
        let meta = std::fs::metadata(&req.workdir).map_err(|e| {
            SandboxError::Backend(format!(
                "docker: worktree {} is not usable: {e}; it must be an existing directory on the \
                 engine's host",
                req.workdir.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(SandboxError::Backend(format!(
                "docker: worktree {} is not a directory",
                req.workdir.display()
            )));
        }
        if !st.stale_checked {
            self.remove_stale(docker, slot.index).await?;
            st.stale_checked = true;
        }
        let mut volumes = Vec::new();
        for (name, path) in &self.docker_opts.volumes {
            let volume = volume_name(&self.docker_opts.project, name);
            self.ensure_volume(docker, &volume, ROLE_VOLUME, user, false)
                .await?;
            volumes.push((volume, path.clone()));
        }
        if !self.docker_opts.logs_path.is_empty() {
            let volume = logs_volume_name(&self.docker_opts.project, slot.index);
            let recreate = std::mem::take(&mut st.logs_dirty);
            self.ensure_volume(docker, &volume, ROLE_LOGS, user, recreate)
                .await?;
            volumes.push((volume, self.docker_opts.logs_path.clone()));
        }
        if st.grant.is_none() && meta.uid() != user.0 {
            let root = req.workdir.clone();
            let grant = tokio::task::spawn_blocking(move || access::grant(&root, user.0))
                .await
                .map_err(|e| backend("granting worktree access", e))?
                .map_err(|e| {
                    SandboxError::Backend(format!(
                        "docker: cannot let the sandbox user (uid {}) write {}: {e}",
                        user.0,
                        req.workdir.display()
                    ))
                })?;
            st.grant = Some(grant);
        }
        let plan = ContainerPlan {
            image: self.docker_opts.image.clone(),
            user,
            labels: self.labels(ROLE_WORKER, Some(slot.index)),
            workdir: req.workdir.clone(),
            workdir_read_only: false,
            extra_ro: req.extra_ro.clone(),
            volumes,
            tmpfs_logs: None,
            shared_data: self.docker_opts.shared_data.clone(),
            network: self.opts.network,
            limits: clamp_cpus(self.opts.limits.clone()),
            hidden: self.opts.hidden.clone(),
        };
        let name = format!(
            "orch-{}-{}-{}",
            sanitize(&self.docker_opts.project),
            slot.index,
            nonce()
        );
        let id = create_and_start(
            docker,
            name,
            plan.body(),
            &self.docker_opts.image,
            "sandbox",
        )
        .await?;
        slot.oom_seen.store(0, Ordering::Relaxed);
        st.container = Some(Live {
            id: id.clone(),
            mounted_ro: req.extra_ro.clone(),
        });
        Ok(id)
    }

    /// Removes containers of this project's slot `index` left by a sandbox
    /// that is gone (a crashed run, a kill -9): the slot's names and logs
    /// are ours now. Containers of live sandboxes are never touched.
    async fn remove_stale(&self, docker: &Docker, index: usize) -> Result<(), SandboxError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_PROJECT}={}", self.docker_opts.project),
                format!("{LABEL_ROLE}={ROLE_WORKER}"),
                format!("{LABEL_SLOT}={index}"),
            ],
        )]);
        let stale = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| backend("listing containers", e))?;
        for c in stale {
            let labels = c.labels.unwrap_or_default();
            if let (true, Some(id)) = (is_stale(&labels), c.id) {
                let _ = force_remove(docker, &id).await;
            }
        }
        Ok(())
    }

    /// Makes sure `volume` exists and its root belongs to `user`. A fresh
    /// volume's root is owned by root, so a short helper container (root,
    /// only CAP_CHOWN and friends, no network) hands it over; that happens
    /// once per volume. Checked on every container creation (one cheap
    /// inspect), so a volume removed behind orch's back (`orch sandbox
    /// reset`) comes back labelled and owned. `recreate` empties it by
    /// making it anew.
    async fn ensure_volume(
        &self,
        docker: &Docker,
        volume: &str,
        role: &str,
        user: (u32, u32),
        recreate: bool,
    ) -> Result<(), SandboxError> {
        if recreate {
            if let Err(e) = docker
                .remove_volume(
                    volume,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
            {
                if !is_status(&e, &[404]) {
                    return Err(backend(&format!("removing volume {volume} to clear it"), e));
                }
            }
        }
        let owner = format!("{}:{}", user.0, user.1);
        let mut labels = self.labels(role, None);
        labels.remove(LABEL_INSTANCE);
        labels.remove(LABEL_PID);
        labels.insert(LABEL_OWNER.to_string(), owner.clone());
        admin::ensure_volume(docker, &self.docker_opts.image, volume, labels, &owner).await
    }

    /// Takes a container out of service: kills its processes (and clears
    /// the logs when asked) with one exec, then removes it — in the
    /// background when that exec worked, right away otherwise (it is then
    /// the only way to be sure nothing runs, and the logs volume must be
    /// free to be recreated).
    async fn retire(
        &self,
        docker: &Docker,
        slot: &Slot,
        st: &mut SlotState,
        id: &str,
        clear_logs: bool,
    ) {
        let user = self
            .user_spec()
            .unwrap_or_else(|_| format!("{SANDBOX_UID}:{SANDBOX_UID}"));
        let cmd = if clear_logs && !self.docker_opts.logs_path.is_empty() {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                KILL_AND_CLEAR_LOGS.to_string(),
                "orch-reset".to_string(),
                self.docker_opts.logs_path.clone(),
            ]
        } else {
            vec!["sh".to_string(), "-c".to_string(), KILL_ALL.to_string()]
        };
        let done = matches!(
            quick_exec(docker, id, &user, cmd, HOUSEKEEPING_TIMEOUT).await,
            Ok(Quick {
                exit_code: Some(0),
                ..
            })
        );
        let remove = {
            let docker = docker.clone();
            let id = id.to_string();
            async move {
                if let Err(e) = force_remove(&docker, &id).await {
                    tracing::warn!(container = %id, error = %e, "cannot remove a retired sandbox container");
                }
            }
        };
        if done {
            let handle = tokio::spawn(remove);
            let mut removals = lock(&self.removals);
            removals.retain(|h| !h.is_finished());
            removals.push(handle);
        } else {
            remove.await;
            if clear_logs {
                st.logs_dirty = true;
            }
        }
        slot.oom_seen.store(0, Ordering::Relaxed);
    }

    /// Stops every container of this sandbox and gives worktrees back;
    /// call it when the run ends (containers otherwise go when their slot
    /// is next used, or with `orch sandbox reset`).
    pub async fn shutdown(&self) -> Result<(), SandboxError> {
        let workdirs: Vec<PathBuf> = self.lock_pool().bound.keys().cloned().collect();
        let mut first_err = None;
        for w in workdirs {
            if let Err(e) = self.release(&w).await {
                first_err.get_or_insert(e);
            }
        }
        let handles: Vec<_> = std::mem::take(&mut *lock(&self.removals));
        for h in handles {
            let _ = h.await;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One command in the slot's container.
    async fn run(
        &self,
        docker: &Docker,
        slot: &Slot,
        container: &str,
        req: &ExecRequest,
    ) -> Result<ProcessOutput, RunError> {
        let user = self.user_spec()?;
        let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let exec = docker
            .create_exec(
                container,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        EXEC_WRAPPER.to_string(),
                        "orch-exec".to_string(),
                        req.command.clone(),
                    ]),
                    env: Some(env),
                    user: Some(user.clone()),
                    working_dir: Some(WORKSPACE.to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| classify("creating an exec", e))?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut guard = KillGuard {
            docker: docker.clone(),
            container: container.to_string(),
            user: user.clone(),
            armed: true,
        };
        let mut output = match docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| classify("starting an exec", e))?
        {
            StartExecResults::Attached { output, .. } => output,
            StartExecResults::Detached => {
                return Err(RunError::Other(backend(
                    "starting an exec",
                    "the engine detached it",
                )))
            }
        };
        let mut out = CappedBuffer::new(req.output_limit);
        let mut err = CappedBuffer::new(req.output_limit);
        let mut timed_out = false;
        let mut restarted = false;
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut drain_until = far;

        // Stream until the output ends, the timeout strikes, or (after a
        // timeout) the drain grace runs out.
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => out.push(&message),
                    Some(Ok(LogOutput::StdErr { message })) => err.push(&message),
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => {
                        if timed_out {
                            break;
                        }
                        return Err(RunError::Other(backend("reading command output", e)));
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    restarted |= kill_all(docker, container, &user).await;
                    drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
                }
                () = tokio::time::sleep_until(drain_until), if timed_out => break,
            }
        }
        drop(output);

        // The exit code; a command that closed its output early is still
        // held to the timeout here.
        let mut poll = Duration::from_millis(2);
        let exit_code = loop {
            let info = match docker.inspect_exec(&exec.id).await {
                Ok(i) => i,
                Err(e) if timed_out => {
                    tracing::debug!(error = %e, "inspecting a killed exec");
                    break None;
                }
                Err(e) => return Err(classify("inspecting an exec", e)),
            };
            if info.running != Some(true) {
                break info.exit_code;
            }
            let now = tokio::time::Instant::now();
            if !timed_out && now >= deadline {
                timed_out = true;
                restarted |= kill_all(docker, container, &user).await;
                drain_until = now + DRAIN_GRACE;
            } else if timed_out && now >= drain_until {
                break None;
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(100));
        };
        guard.armed = false;
        let duration = started.elapsed();
        if restarted {
            slot.oom_seen.store(0, Ordering::Relaxed);
        }

        let exit_code = exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MAX));
        let mut result_code = exit_code;
        let mut signal = None;
        let mut killed_by = None;
        if timed_out {
            result_code = None;
            signal = Some(libc::SIGKILL);
            killed_by = Some(Limit::Timeout);
        } else if exit_code != Some(0)
            && self
                .oom_killed_since_last_look(docker, slot, container, &user)
                .await
        {
            killed_by = Some(Limit::Memory);
            if exit_code == Some(128 + libc::SIGKILL) {
                result_code = None;
                signal = Some(libc::SIGKILL);
            }
        }
        let (stdout, cut_out) = out.finish();
        let (stderr, cut_err) = err.finish();
        // Same rule as the process runner: registered secrets never leave
        // the sandbox in captured output.
        let stdout = orch_core::redact::redact(&stdout).into_owned();
        let stderr = orch_core::redact::redact(&stderr).into_owned();
        Ok(ProcessOutput {
            exit_code: result_code,
            signal,
            timed_out,
            stdout,
            stderr,
            truncated: cut_out || cut_err,
            duration,
            killed_by,
        })
    }

    /// True when the container's cgroup counted an OOM kill since the last
    /// look (one extra exec, only after a failed command).
    async fn oom_killed_since_last_look(
        &self,
        docker: &Docker,
        slot: &Slot,
        container: &str,
        user: &str,
    ) -> bool {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            READ_OOM_COUNTER.to_string(),
        ];
        let Ok(q) = quick_exec(docker, container, user, cmd, HOUSEKEEPING_TIMEOUT).await else {
            return false;
        };
        let Some(kills) = parse_oom_kills(&q.stdout) else {
            return false;
        };
        slot.oom_seen.fetch_max(kills, Ordering::Relaxed) < kills
    }

    /// Forgets a container that vanished, so the next acquire makes one.
    async fn forget(&self, slot: &Slot, id: &str) {
        let mut st = slot.state.lock().await;
        if st.container.as_ref().is_some_and(|l| l.id == id) {
            st.container = None;
        }
    }
}

async fn revoke(grant: access::Grant) -> Result<(), SandboxError> {
    let root = grant.root.clone();
    tokio::task::spawn_blocking(move || access::revoke(&grant))
        .await
        .map_err(|e| backend("restoring worktree permissions", e))?
        .map_err(|e| {
            SandboxError::Backend(format!(
                "docker: cannot restore the permissions of {}: {e}; fix by hand with `setfacl -Rb {}`",
                root.display(),
                root.display()
            ))
        })
}

/// The processes running in a container, as `docker top` shows them (each
/// row is the `ps` columns joined by spaces).
pub async fn container_processes(container: &str) -> Result<Vec<String>, SandboxError> {
    let docker = connect().await?;
    let top = docker
        .top_processes(container, None::<TopOptions>)
        .await
        .map_err(|e| backend("listing container processes", e))?;
    Ok(top
        .processes
        .unwrap_or_default()
        .into_iter()
        .map(|row| row.join(" "))
        .collect())
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn isolates(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), SandboxError> {
        self.user()?;
        for (name, path) in &self.docker_opts.volumes {
            if !path.starts_with('/') {
                return Err(SandboxError::Unavailable(format!(
                    "docker volume `{name}` has mount path `{path}`; it must be absolute, e.g. \"/cache\""
                )));
            }
        }
        let docker = self.client().await?;
        docker.ping().await.map_err(|e| unreachable(&e))?;
        match docker.inspect_image(&self.docker_opts.image).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, &[404]) => Err(SandboxError::Unavailable(missing_image_hint(
                &self.docker_opts.image,
            ))),
            Err(e) => Err(backend("inspecting the sandbox image", e)),
        }
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ProcessOutput, SandboxError> {
        // Bind mounts need absolute host paths.
        let absolute;
        let request = if request.workdir.is_absolute() {
            request
        } else {
            let mut r = request.clone();
            r.workdir = std::path::absolute(&r.workdir)
                .map_err(|e| backend("resolving the worktree path", e))?;
            absolute = r;
            &absolute
        };
        let docker = self.client().await?.clone();
        let mut retried = false;
        loop {
            let (slot, container) = self.acquire(&docker, request).await?;
            match self.run(&docker, &slot, &container, request).await {
                Ok(out) => return Ok(out),
                Err(RunError::ContainerGone) if !retried => {
                    retried = true;
                    tracing::info!(container, "sandbox container vanished; making a new one");
                    self.forget(&slot, &container).await;
                }
                Err(RunError::ContainerGone) => {
                    return Err(SandboxError::Backend(format!(
                        "docker: the sandbox container for {} stopped twice in a row; check \
                         `docker logs` and the engine's health",
                        request.workdir.display()
                    )))
                }
                Err(RunError::Other(e)) => return Err(e),
            }
        }
    }

    async fn shutdown(&self) -> Result<(), SandboxError> {
        DockerSandbox::shutdown(self).await
    }

    async fn release(&self, workdir: &Path) -> Result<(), SandboxError> {
        let workdir = std::path::absolute(workdir).unwrap_or_else(|_| workdir.to_path_buf());
        let Some(slot) = self.lock_pool().bound.remove(&workdir) else {
            return Ok(());
        };
        let mut st = slot.state.lock().await;
        if let Some(live) = st.container.take() {
            match self.client().await {
                Ok(docker) => {
                    let docker = docker.clone();
                    self.retire(&docker, &slot, &mut st, &live.id, true).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the engine to retire a container")
                }
            }
        }
        st.workdir = None;
        let result = match st.grant.take() {
            Some(g) => revoke(g).await,
            None => Ok(()),
        };
        drop(st);
        self.lock_pool().idle.push(slot);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_parses_v1_and_v2() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n";
        assert_eq!(parse_oom_kills(v2), Some(1));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), Some(3));
        assert_eq!(parse_oom_kills(""), None);
    }

    #[test]
    fn only_containers_of_gone_sandboxes_are_stale() {
        let live = DockerSandbox::new(DockerOptions::default(), SandboxOptions::default());
        let labels = live.labels(ROLE_WORKER, Some(0));
        assert!(!is_stale(&labels));
        let mut dropped = labels.clone();
        dropped.insert(LABEL_INSTANCE.to_string(), "gone".to_string());
        assert!(is_stale(&dropped));
        let mut other_process = labels.clone();
        other_process.insert(LABEL_PID.to_string(), "1".to_string());
        assert!(!is_stale(&other_process), "pid 1 is alive");
        other_process.insert(LABEL_PID.to_string(), i32::MAX.to_string());
        assert!(is_stale(&other_process));
        assert!(is_stale(&HashMap::new()));
    }

    #[test]
    fn slots_are_unique_per_project_in_a_process() {
        let a = claim_slot("slot-test");
        let b = claim_slot("slot-test");
        assert_ne!(a, b);
        free_slot("slot-test", a);
        assert_eq!(claim_slot("slot-test"), a);
        assert_eq!(claim_slot("slot-test-other"), 0);
    }

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(sanitize("my app/α"), "my-app--");
        assert_eq!(volume_name("p", "pip cache"), "orch-p-pip-cache");
        assert_eq!(logs_volume_name("p", 2), "orch-p.logs.2");
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn users_are_numeric_and_never_root() {
        assert_eq!(resolve_user(Some("1234:99")).unwrap(), (1234, 99));
        assert_eq!(resolve_user(Some("1234")).unwrap(), (1234, 1234));
        assert!(resolve_user(Some("orch"))
            .unwrap_err()
            .to_string()
            .contains("numeric"));
        assert!(resolve_user(Some("0:0"))
            .unwrap_err()
            .to_string()
            .contains("non-root"));
        let (uid, _) = resolve_user(None).unwrap();
        assert_ne!(uid, 0);
    }

    #[test]
    fn hidden_paths_inside_mounted_directories_are_masked_and_the_worktree_is_not() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let shared = root.join("shared");
        std::fs::create_dir_all(shared.join("state/worktrees/wt")).unwrap();
        std::fs::write(shared.join("orch.toml"), "x").unwrap();
        std::fs::write(shared.join(".env"), "K=v").unwrap();
        let workdir = shared.join("state/worktrees/wt");
        let plan = ContainerPlan {
            image: "img".into(),
            user: (10001, 10001),
            labels: HashMap::new(),
            workdir: workdir.clone(),
            workdir_read_only: false,
            extra_ro: Vec::new(),
            volumes: Vec::new(),
            tmpfs_logs: None,
            shared_data: Some((shared.clone(), "/data".into())),
            network: false,
            limits: Limits::default(),
            hidden: vec![
                shared.join("orch.toml"),
                shared.join(".env"),
                shared.join("state"),
                root.join("absent"),
            ],
        };
        let hc = plan.body().host_config.unwrap();
        let mounts = hc.mounts.unwrap();
        let tmpfs = hc.tmpfs.unwrap();
        let mask = crate::mask_file_or_null().to_string_lossy().into_owned();
        for file in ["/data/orch.toml", "/data/.env"] {
            let m = mounts
                .iter()
                .find(|m| m.target.as_deref() == Some(file))
                .unwrap_or_else(|| panic!("{file} not masked: {mounts:?}"));
            assert_eq!(m.source.as_deref(), Some(mask.as_str()));
            assert_eq!(m.read_only, Some(true));
        }
        assert!(tmpfs.contains_key("/data/state"), "{tmpfs:?}");
        // The worktree inside the hidden directory is mounted by itself.
        let ws = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some(WORKSPACE))
            .unwrap();
        assert_eq!(ws.source.as_deref(), workdir.to_str());
        assert!(!tmpfs.keys().any(|k| k.starts_with(WORKSPACE)), "{tmpfs:?}");
        assert_eq!(mounts.len(), 4, "{mounts:?}");
    }

    #[test]
    fn the_plan_hardens_and_mounts_as_designed() {
        let plan = ContainerPlan {
            image: "img".into(),
            user: (10001, 10001),
            labels: HashMap::from([(LABEL_PROJECT.to_string(), "p".to_string())]),
            workdir: PathBuf::from("/data/wt/1"),
            workdir_read_only: false,
            extra_ro: vec![
                PathBuf::from("/data/repo/.git"),
                PathBuf::from("/data/wt/1/vendor"),
            ],
            volumes: vec![("orch-p-cache".into(), "/cache".into())],
            tmpfs_logs: None,
            shared_data: Some((PathBuf::from("/srv/data"), "/shared/data".into())),
            network: false,
            limits: Limits {
                memory_bytes: Some(256 << 20),
                pids: Some(64),
                cpus: Some(1.5),
            },
            hidden: Vec::new(),
        };
        let body = plan.body();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, Some(256 << 20));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
        assert_eq!(body.user.as_deref(), Some("10001:10001"));
        let mounts = hc.mounts.unwrap();
        let find = |t: &str| {
            mounts
                .iter()
                .find(|m| m.target.as_deref() == Some(t))
                .unwrap()
                .clone()
        };
        assert_eq!(find(WORKSPACE).source.as_deref(), Some("/data/wt/1"));
        assert_eq!(find(WORKSPACE).read_only, Some(false));
        assert_eq!(find("/data/repo/.git").read_only, Some(true));
        assert_eq!(
            find("/workspace/vendor").source.as_deref(),
            Some("/data/wt/1/vendor")
        );
        assert_eq!(find("/cache").typ, Some(MountType::VOLUME));
        assert_eq!(find("/shared/data").read_only, Some(true));
        let env = body.env.unwrap();
        assert!(env.iter().any(|e| e == "HOME=/tmp"));
        assert!(!env.iter().any(|e| e.starts_with("ORCH_")));
    }
}
