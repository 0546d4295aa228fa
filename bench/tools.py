"""External tools the benchmark needs: install them from Debian when missing, and run nginx."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOOLS = {"nginx": "nginx-light", "rclone": "rclone", "aria2c": "aria2"}
SBIN = ("/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    """`shutil.which`, also looking in sbin (nginx lives there and PATH may omit it)."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing_tools() -> list[str]:
    return [name for name in TOOLS if which(name) is None]


def ensure_tools() -> None:
    """Install nginx-light, rclone and aria2 with apt-get when any of them is missing."""
    missing = missing_tools()
    if not missing:
        return
    packages = [TOOLS[name] for name in missing]
    print(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    still = missing_tools()
    if still:
        raise SystemExit(f"could not install: {', '.join(still)}")


def free_port() -> int:
    """A port the kernel just handed out on loopback (nginx cannot bind port 0 itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Nginx:
    """A running nginx child: its base URL and its access log (`uri status bytes` lines)."""

    base_url: str
    access_log: Path

    def bytes_sent(self, uri_prefix: str) -> int:
        """Sum of `$body_bytes_sent` over logged requests whose URI starts with the prefix."""
        total = 0
        for line in self.access_log.read_text().splitlines():
            uri, _, sent = line.split(" ")
            if uri.startswith(uri_prefix):
                total += int(sent)
        return total

    def requests(self, uri_prefix: str) -> int:
        lines = self.access_log.read_text().splitlines()
        return sum(1 for line in lines if line.startswith(uri_prefix))


NGINX_CONF = """\
{user}worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bench '$request_uri $status $body_bytes_sent';
    access_log {tmp}/access.log bench;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/pdf pdf; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
        location /resume {{ limit_rate {resume_rate}; }}
        location /tiny/ {{ return 200 "listing-only document body\\n"; }}
    }}
}}
"""


@contextmanager
def nginx(root: Path, *, resume_rate: str = "0") -> Iterator[Nginx]:
    """Serve `root` on 127.0.0.1 from a non-daemon nginx child with its config in a temp dir."""
    binary = which("nginx")
    assert binary is not None, "nginx is not installed"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = Path(tmp, "nginx.conf")
        conf.write_text(
            NGINX_CONF.format(
                user=user, tmp=tmp, port=port, root=root.absolute(), resume_rate=resume_rate
            )
        )
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"])
        try:
            _wait_listening(port, proc)
            yield Nginx(f"http://127.0.0.1:{port}", Path(tmp, "access.log"))
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nginx did not start listening")
