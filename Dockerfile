# syntax=docker/dockerfile:1
# sync-agent in a container: a builder stage makes a venv from the project, the runtime stage
# copies only that venv onto the same Debian python3 and runs it as an unprivileged user.
#
#   docker build -t sync-agent .            (or podman build --format docker: keeps HEALTHCHECK)
#   docker run -d --name sync-agent --read-only \
#       -v sync-agent-data:/data \
#       -v /etc/sync-agent:/config:ro \
#       -e SM_CLIENT_SECRET \
#       -p 127.0.0.1:8749:8749 sync-agent
#
# BASE_IMAGE is any Debian bookworm image (python3 comes from Debian's packages);
# deploy/test-image.sh builds one with debootstrap and runs this image for real.
#
# The mounted config for a container (/config/config.toml):
#   [agent]
#   mirror_dir = "/data/mirror"
#   # state_dir may stay unset: it defaults to $STATE_DIRECTORY (/data/state) set below.
#   # The daemon listens on 127.0.0.1:8749 by default, which nothing outside the container
#   # can reach; listen on every interface and require a token for /status, /events and
#   # POST /sync, which the agent refuses off loopback without one:
#   listen = "0.0.0.0:8749"
#   api_token_file = "/run/secrets/api_token"
# Mount the folder, not the file, so an edited file (replaced by rename) reaches the
# container; then `docker kill --signal HUP sync-agent` reloads it.
# Secrets come from the environment (client_secret_env = "SM_CLIENT_SECRET", passed with
# docker run -e) or from mounted files (client_secret_file = "/run/secrets/client_secret",
# also what Docker/Compose secrets provide). Never bake them into the image.
# A bind mount on /data must be writable by uid 10001 (a named volume is set up for you);
# mirrored files are world-readable (0644), the state folder is private (0700).

ARG BASE_IMAGE=debian:bookworm-slim

# Debian's python3 for both stages below, installed once; python3-venv (a few MB) lets the
# builder make the venv. Debian stable's versions are fixed per release; pinning them would
# only block security fixes.
FROM ${BASE_IMAGE} AS python
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS builder
# pip trusts the system's CA store (which also holds any CA the base added).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
# The postgres extra (asyncpg) lets the same image run as replicas on one PostgreSQL.
RUN python3 -m venv /opt/sync-agent \
    && /opt/sync-agent/bin/pip install --no-cache-dir ".[postgres]"

# The same interpreter as the builder's, so the venv's link to it holds.
FROM python AS runtime
RUN groupadd --system --gid 10001 sync-agent \
    && useradd --system --uid 10001 --gid sync-agent --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin sync-agent \
    && install -d -o sync-agent -g sync-agent -m 0755 /data /data/mirror \
    && install -d -o sync-agent -g sync-agent -m 0700 /data/state \
    && install -d -m 0755 /config
COPY --from=builder /opt/sync-agent /opt/sync-agent
ENV PATH=/opt/sync-agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SYNC_AGENT_CONFIG=/config/config.toml \
    STATE_DIRECTORY=/data/state
VOLUME ["/data"]
WORKDIR /data
# Numeric, so Kubernetes runAsNonRoot and the host can check it without /etc/passwd.
USER 10001:10001
EXPOSE 8749
# No curl in the image: probe the liveness route with the venv's interpreter.
# It assumes listen uses port 8749 (as above).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8749/healthz', timeout=4)"]
# Exec form, so sync-agent is PID 1 and receives SIGTERM itself for a clean shutdown.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sync-agent"]
CMD ["run"]
