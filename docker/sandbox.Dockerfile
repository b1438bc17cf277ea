# The Docker sandbox image for people who have a registry: Debian slim with
# python3, pytest, git, ruff and flake8, and the non-root user (uid/gid
# 10001) sandboxed commands run as. Without a registry, use
# scripts/build-sandbox-image.sh (debootstrap + import) instead.
#
#   orch sandbox build                      # builds this file as orch-sandbox:latest
#   docker build -f docker/sandbox.Dockerfile -t orch-sandbox:latest docker/
ARG BASE=debian:bookworm-slim
FROM ${BASE}

USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-pytest python3-pip git ca-certificates flake8 \
 && pip3 install --no-cache-dir --break-system-packages ruff \
 && rm -rf /var/lib/apt/lists/* /root/.cache

# The sandbox user, and the mount points orch uses (present even with a
# read-only root filesystem).
RUN (getent group 10001 >/dev/null || groupadd --gid 10001 orch) \
 && (getent passwd 10001 >/dev/null || useradd --uid 10001 --gid 10001 --create-home --shell /bin/sh orch) \
 && mkdir -p /workspace /env/logs /shared/data \
 && chown 10001:10001 /workspace /env/logs

ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1
LABEL orch.sandbox=1
USER 10001:10001
WORKDIR /workspace
CMD ["/bin/sh"]
