# syntax=docker/dockerfile:1
# sync-agent in a container: a builder stage makes a venv from the wheel, the runtime stage
# copies only that venv onto python:3.11-slim and runs it as an unprivileged user.
#
#   docker build -t sync-agent .
#   docker run -d --name sync-agent \
#       -v sync-agent-data:/data \
#       -v /etc/sync-agent/config.toml:/config/config.toml:ro \
#       -v /etc/sync-agent/secrets:/run/secrets:ro \
#       -e SM_CLIENT_SECRET \
#       -p 127.0.0.1:8749:8749 sync-agent
#
# The mounted config for a container:
#   [agent]
#   mirror_dir = "/data/mirror"
#   # state_dir may stay unset: it defaults to $STATE_DIRECTORY (/data/state) set below.
#   # The daemon listens on 127.0.0.1:8749 by default, which nothing outside the container
#   # can reach; listen on every interface and require a token for POST /sync, which the
#   # agent refuses off loopback without one:
#   listen = "0.0.0.0:8749"
#   api_token_file = "/run/secrets/api_token"
# Secrets come from the environment (client_secret_env = "SM_CLIENT_SECRET", passed with
# docker run -e) or from mounted files (client_secret_file = "/run/secrets/client_secret",
# also what Docker/Compose secrets provide). Never bake them into the image.
# A bind mount on /data must be writable by uid 10001 (a named volume is set up for you).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
# Build the project's wheel, then install it with its dependencies into a self-contained venv.
RUN python -m venv /opt/sync-agent \
    && /opt/sync-agent/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/sync-agent/bin/pip install --no-cache-dir /wheels/*.whl

FROM ${PYTHON_IMAGE} AS runtime
# Same base image as the builder, so the venv's python symlink points at the same interpreter.
RUN groupadd --system --gid 10001 sync-agent \
    && useradd --system --uid 10001 --gid sync-agent --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin sync-agent \
    && install -d -o sync-agent -g sync-agent -m 0750 /data /data/mirror /data/state \
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
# Slim images have no curl: probe the liveness route with the interpreter already there.
# It assumes listen uses port 8749 (as above).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8749/healthz', timeout=4)"]
# Exec form, so sync-agent is PID 1 and receives SIGTERM itself for a clean shutdown.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sync-agent"]
CMD ["run"]
