//! Engine-side housekeeping behind `orch sandbox`: images (import a root
//! filesystem, build a Dockerfile), the inventory of orch's containers and
//! volumes, reset and prune, and the volume-ownership helper.

use super::{
    backend, connect, create_named, force_remove, is_status, CONTAINER_PATH, LABEL_OWNER,
    LABEL_PROJECT, LABEL_ROLE, LABEL_SLOT, ROLE_HELPER, ROLE_LOGS, ROLE_WORKER, SANDBOX_UID,
};
use crate::SandboxError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    BuildImageOptions, CreateImageOptions, ListContainersOptions, ListVolumesOptions,
    RemoveVolumeOptions, WaitContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Image settings applied on import, so an imported root filesystem runs
/// like the Dockerfile-built image.
fn image_changes() -> Vec<String> {
    vec![
        format!("USER {SANDBOX_UID}:{SANDBOX_UID}"),
        "WORKDIR /workspace".to_string(),
        format!("ENV PATH={CONTAINER_PATH}"),
        "ENV LANG=C.UTF-8".to_string(),
        "LABEL orch.sandbox=1".to_string(),
        r#"CMD ["/bin/sh"]"#.to_string(),
    ]
}

/// Image builds and imports move hundreds of megabytes; the client's
/// default two-minute request timeout is too short for them.
const LONG_REQUEST: Duration = Duration::from_secs(3600);

/// Checks the engine answers.
pub async fn ping() -> Result<(), SandboxError> {
    let docker = connect().await?;
    docker
        .ping()
        .await
        .map(|_| ())
        .map_err(|e| backend("pinging the engine", e))
}

/// Whether the engine has an image called `tag`.
pub async fn image_exists(tag: &str) -> Result<bool, SandboxError> {
    let docker = connect().await?;
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, &[404]) => Ok(false),
        Err(e) => Err(backend("inspecting an image", e)),
    }
}

/// `name:tag` → (name, tag); a `:` inside a registry host:port is not a tag.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') && !name.is_empty() => (name, tag),
        _ => (image, "latest"),
    }
}

/// Sends a tar stream, made on a blocking thread, to the engine in chunks.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const TAR_CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the engine stopped reading the archive",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= TAR_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A tar stream of `dir` (symlinks kept as links, numeric owners and modes
/// kept), plus extra files (archive name, content). Made on a blocking
/// thread while the engine reads it.
fn tar_stream(
    dir: PathBuf,
    extra: Vec<(String, Vec<u8>)>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<()> {
            let mut builder = tar::Builder::new(ChannelWriter {
                tx,
                buf: Vec::with_capacity(TAR_CHUNK),
            });
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &dir)?;
            for (name, content) in extra {
                let mut header = tar::Header::new_gnu();
                header.set_size(content.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, content.as_slice())?;
            }
            let mut writer = builder.into_inner()?;
            writer.flush()
        })();
        if let Err(e) = result {
            let _ = err_tx.blocking_send(Err(std::io::Error::new(
                e.kind(),
                format!("archiving {}: {e}", dir.display()),
            )));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Imports a root filesystem directory (e.g. made by `debootstrap
/// --variant=minbase`) as image `tag`, with the sandbox's user, workdir and
/// PATH. Returns the image id.
pub async fn import_rootfs(dir: &Path, tag: &str) -> Result<String, SandboxError> {
    if !dir.join("bin/sh").exists() && !dir.join("usr/bin/sh").exists() {
        return Err(SandboxError::Backend(format!(
            "{} does not look like a root filesystem (no bin/sh); make one with `debootstrap \
             --variant=minbase --include=python3,python3-pytest,git bookworm DIR` or \
             scripts/build-sandbox-image.sh",
            dir.display()
        )));
    }
    let docker = connect().await?.with_timeout(LONG_REQUEST);
    let (repo, version) = split_tag(tag);
    let options = CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(repo.to_string()),
        tag: Some(version.to_string()),
        changes: image_changes(),
        ..Default::default()
    };
    let body = bollard::body_try_stream(tar_stream(dir.to_path_buf(), Vec::new()));
    let mut progress = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| backend(&format!("importing {} as {tag}", dir.display()), e))?;
    }
    let image = docker
        .inspect_image(tag)
        .await
        .map_err(|e| backend(&format!("inspecting the imported {tag}"), e))?;
    Ok(image.id.unwrap_or_default())
}

/// Builds `dockerfile` with `context` as build context into image `tag`
/// (the classic builder, through the API). Each line of build output goes
/// to `on_line`.
pub async fn build_image(
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    let content = std::fs::read(dockerfile).map_err(|e| {
        SandboxError::Backend(format!(
            "cannot read Dockerfile {}: {e}; pass an existing file (the default is \
             docker/sandbox.Dockerfile in the orch repository)",
            dockerfile.display()
        ))
    })?;
    if !context.is_dir() {
        return Err(SandboxError::Backend(format!(
            "build context {} is not a directory",
            context.display()
        )));
    }
    // A Dockerfile inside the context is named by its path there; one
    // outside is sent along under a name of its own.
    let (name, extra) = match dockerfile
        .canonicalize()
        .ok()
        .zip(context.canonicalize().ok())
        .and_then(|(f, c)| f.strip_prefix(&c).ok().map(Path::to_path_buf))
    {
        Some(rel) => (rel.to_string_lossy().into_owned(), Vec::new()),
        None => {
            let name = ".orch-sandbox.Dockerfile".to_string();
            (name.clone(), vec![(name, content)])
        }
    };
    let docker = connect().await?.with_timeout(LONG_REQUEST);
    let options = BuildImageOptions {
        dockerfile: name,
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let body = bollard::body_try_stream(tar_stream(context.to_path_buf(), extra));
    let mut progress = docker.build_image(options, None, Some(body));
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| backend(&format!("building {tag}"), e))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(SandboxError::Backend(format!(
                "docker: building {tag}: {detail}"
            )));
        }
        if let Some(text) = info.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                on_line(line);
            }
        }
    }
    Ok(())
}

/// One container orch made.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub project: String,
    /// `worker`, `shell` or `helper`.
    pub role: String,
    pub slot: Option<String>,
    /// `running`, `exited`, …
    pub state: String,
    /// The engine's human status, e.g. "Up 3 minutes".
    pub status: String,
    pub image: String,
}

/// One volume orch made.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub name: String,
    pub project: String,
    /// `volume` (named, kept) or `logs` (cleared on reset).
    pub role: String,
}

/// Everything labelled `orch.project` on the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub containers: Vec<ContainerInfo>,
    pub volumes: Vec<VolumeInfo>,
}

async fn inventory(docker: &Docker) -> Result<Inventory, SandboxError> {
    let filters = HashMap::from([("label".to_string(), vec![LABEL_PROJECT.to_string()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| backend("listing containers", e))?;
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| backend("listing volumes", e))?;
    let mut inv = Inventory::default();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        inv.containers.push(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            project: labels.get(LABEL_PROJECT).cloned().unwrap_or_default(),
            role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            slot: labels.get(LABEL_SLOT).cloned(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            image: c.image.unwrap_or_default(),
        });
    }
    for v in volumes.volumes.unwrap_or_default() {
        inv.volumes.push(VolumeInfo {
            project: v.labels.get(LABEL_PROJECT).cloned().unwrap_or_default(),
            role: v.labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            name: v.name,
        });
    }
    inv.containers
        .sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
    inv.volumes
        .sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
    Ok(inv)
}

/// orch's containers and volumes, with their project and state.
pub async fn list() -> Result<Inventory, SandboxError> {
    inventory(&connect().await?).await
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
}

async fn remove_volume(docker: &Docker, name: &str) -> Result<(), SandboxError> {
    match docker
        .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, &[404]) => Ok(()),
        Err(e) => Err(backend(&format!("removing volume {name}"), e)),
    }
}

/// Waits until no container mentions any of `volumes` any more (removals
/// of retired containers may still be finishing), for up to 30 s.
async fn wait_volumes_free(docker: &Docker, volumes: &[String]) {
    for _ in 0..300 {
        let mut busy = false;
        for v in volumes {
            let filters = HashMap::from([("volume".to_string(), vec![v.clone()])]);
            let users = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            busy |= !users.is_empty();
        }
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes orch's containers and volumes whose project is not in `live`.
/// `scope`, when given, limits it to projects whose name starts with it.
pub async fn prune(live: &[String], scope: Option<&str>) -> Result<PruneReport, SandboxError> {
    let docker = connect().await?;
    let inv = inventory(&docker).await?;
    let orphan = |project: &str| {
        !live.iter().any(|l| l == project) && scope.is_none_or(|s| project.starts_with(s))
    };
    let mut report = PruneReport::default();
    for c in inv.containers.iter().filter(|c| orphan(&c.project)) {
        force_remove(&docker, &c.id).await?;
        report.containers.push(c.name.clone());
    }
    let volumes: Vec<String> = inv
        .volumes
        .iter()
        .filter(|v| orphan(&v.project))
        .map(|v| v.name.clone())
        .collect();
    wait_volumes_free(&docker, &volumes).await;
    for v in &volumes {
        remove_volume(&docker, v).await?;
        report.volumes.push(v.clone());
    }
    Ok(report)
}

/// What `reset_project` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResetReport {
    /// Worker and shell containers removed (their processes killed).
    pub containers: Vec<String>,
    /// Logs volumes cleared (removed; they come back empty on next use).
    pub logs_cleared: Vec<String>,
    /// Named volumes, kept.
    pub kept: Vec<String>,
}

/// Resets a project's sandbox: removes its containers (a running orch
/// makes fresh ones on its next command) and clears its logs volumes;
/// named volumes are kept.
pub async fn reset_project(project: &str) -> Result<ResetReport, SandboxError> {
    let docker = connect().await?;
    let inv = inventory(&docker).await?;
    let mut report = ResetReport::default();
    for c in inv.containers.iter().filter(|c| c.project == project) {
        force_remove(&docker, &c.id).await?;
        report.containers.push(c.name.clone());
    }
    let (logs, kept): (Vec<&super::VolumeInfo>, Vec<&super::VolumeInfo>) = inv
        .volumes
        .iter()
        .filter(|v| v.project == project)
        .partition(|v| v.role == ROLE_LOGS);
    let logs: Vec<String> = logs.into_iter().map(|v| v.name.clone()).collect();
    wait_volumes_free(&docker, &logs).await;
    for v in logs {
        remove_volume(&docker, &v).await?;
        report.logs_cleared.push(v);
    }
    report.kept = kept.into_iter().map(|v| v.name.clone()).collect();
    Ok(report)
}

/// The project's running worker containers (for `orch sandbox shell`).
pub(crate) async fn running_workers(
    docker: &Docker,
    project: &str,
) -> Result<Vec<String>, SandboxError> {
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![
                format!("{LABEL_PROJECT}={project}"),
                format!("{LABEL_ROLE}={ROLE_WORKER}"),
            ],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let found = docker
        .list_containers(Some(ListContainersOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| backend("listing containers", e))?;
    Ok(found.into_iter().filter_map(|c| c.id).collect())
}

/// Creates `volume` when missing and makes its root belong to `owner`
/// (`uid:gid`), using a one-shot helper container of `image` that runs as
/// root with only the capabilities chown needs.
pub(crate) async fn ensure_volume(
    docker: &Docker,
    image: &str,
    volume: &str,
    labels: HashMap<String, String>,
    owner: &str,
) -> Result<(), SandboxError> {
    match docker.inspect_volume(volume).await {
        Ok(v) if v.labels.get(LABEL_OWNER).map(String::as_str) == Some(owner) => return Ok(()),
        Ok(_) => {}
        Err(e) if is_status(&e, &[404]) => {
            docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.to_string()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(|e| backend(&format!("creating volume {volume}"), e))?;
        }
        Err(e) => return Err(backend(&format!("inspecting volume {volume}"), e)),
    }
    let mut helper_labels = labels;
    helper_labels.insert(LABEL_ROLE.to_string(), ROLE_HELPER.to_string());
    helper_labels.remove(LABEL_OWNER);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some("0:0".to_string()),
        cmd: Some(vec![
            "chown".to_string(),
            "-R".to_string(),
            owner.to_string(),
            "/volume".to_string(),
        ]),
        labels: Some(helper_labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(volume.to_string()),
                target: Some("/volume".to_string()),
                ..Default::default()
            }]),
            network_mode: Some("none".to_string()),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: Some(vec![
                "CHOWN".to_string(),
                "DAC_OVERRIDE".to_string(),
                "DAC_READ_SEARCH".to_string(),
                "FOWNER".to_string(),
            ]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            readonly_rootfs: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("orch-volume-helper-{}", super::nonce());
    let id = create_named(docker, name, body, image, "volume helper").await?;
    let outcome = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| backend("starting the volume helper container", e))?;
        let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) if r.status_code == 0 => Ok(()),
            Some(Ok(r)) => Err(format!("exit {}", r.status_code)),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { error, code })) => {
                Err(format!("exit {code} {error}"))
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no exit status".to_string()),
        }
        .map_err(|e| {
            SandboxError::Backend(format!(
                "docker: cannot give volume {volume} to the sandbox user ({owner}): {e}; remove it \
                 with `docker volume rm {volume}` and try again"
            ))
        })
    }
    .await;
    force_remove(docker, &id).await?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("orch-sandbox:latest"), ("orch-sandbox", "latest"));
        assert_eq!(split_tag("orch-sandbox"), ("orch-sandbox", "latest"));
        assert_eq!(split_tag("reg:5000/img"), ("reg:5000/img", "latest"));
        assert_eq!(split_tag("reg:5000/img:v2"), ("reg:5000/img", "v2"));
    }

    #[test]
    fn imported_images_run_as_the_sandbox_user() {
        let changes = image_changes();
        assert!(changes.contains(&"USER 10001:10001".to_string()));
        assert!(changes
            .iter()
            .any(|c| c.starts_with("ENV PATH=/usr/local/sbin")));
    }

    #[tokio::test]
    async fn tar_stream_keeps_symlinks_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("bin/tool", dir.path().join("link")).unwrap();
        let mut stream = Box::pin(tar_stream(
            dir.path().to_path_buf(),
            vec![("extra.txt".to_string(), b"hi".to_vec())],
        ));
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = HashMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.insert(
                path.trim_start_matches("./").to_string(),
                (entry.header().entry_type(), link),
            );
        }
        assert_eq!(seen["bin/tool"].0, tar::EntryType::Regular);
        assert_eq!(
            seen["link"],
            (tar::EntryType::Symlink, Some("bin/tool".to_string()))
        );
        assert!(seen.contains_key("extra.txt"));
    }
}
