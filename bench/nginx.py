"""The one server of a benchmark: an nginx child serving the files and the API on loopback.

One server block serves the data folder (autoindex, for rclone) and a Standard-Metrics-shaped
API without any Python: the token endpoint is a fixed `return 200`, the listing is the static
pages of `bench.listing` (nginx fills in their `next` origin), and a download is a `return
302` to the storage path on the same server. A second block, on its own port, answers the
same requests 50 ms late (the echo module's `echo_sleep`, then a proxy to the first), for the
measures that want a distant API; its downloads still redirect to the fast block.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.listing import ORIGIN
from bench.tools import ECHO_MODULE, which

TOKEN = '{"access_token":"bench-token","token_type":"Bearer","expires_in":36000,"scope":"read"}'
TINY_BODY = b"listing-only document body\n"  # what every download of the `tiny` folder gets
API_LATENCY = 0.05  # seconds the slow block waits before answering

CONF = """\
load_module {echo};
{user}worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$request_uri $status $body_bytes_sent';
    access_log {tmp}/access.log bench;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/pdf pdf; application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    map $arg_page $bench_page {{ "" 1; ~^[1-9][0-9]*$ $arg_page; default 0; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
        location = /o/token/ {{ default_type application/json; return 200 '{token}'; }}
        location ~ ^/api/(?<set>[a-z0-9-]+)/v1/documents/$ {{
            sub_filter '{origin}' 'http://$http_host';
            sub_filter_once off;
            sub_filter_types application/json;
            try_files /api/$set/page-$bench_page.json =404;
        }}
        location ~ ^/api/[a-z0-9-]+/v1/documents/(?<folder>[a-z0-9-]+)\\.(?<n>[0-9]+)/download/$ {{
            return 302 http://127.0.0.1:$server_port/$folder/report-$n.pdf;
        }}
        location /resume {{ limit_rate {resume_rate}; }}
        location /tiny/ {{ default_type application/pdf; return 200 '{tiny}'; }}
    }}
{slow}}}
"""

SLOW = """\
    upstream bench_fast {{ server 127.0.0.1:{port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{slow_port};
        location / {{ echo_sleep {latency}; echo_exec @fast; }}
        location @fast {{
            proxy_pass http://bench_fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_redirect off;
        }}
    }}
"""


def free_port() -> int:
    """A port the kernel just handed out on loopback (nginx cannot bind port 0 itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Nginx:
    """A running nginx child: its URLs and its access log (`uri status bytes` lines)."""

    base_url: str
    slow_url: str  # the same API, answered API_LATENCY late
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


def config(tmp: Path, root: Path, port: int, slow_port: int, resume_rate: str) -> str:
    """The whole nginx.conf."""
    return CONF.format(
        echo=ECHO_MODULE,
        user="user root root;\n" if os.geteuid() == 0 else "",
        tmp=tmp,
        port=port,
        root=root.absolute(),
        token=TOKEN,
        origin=ORIGIN,
        resume_rate=resume_rate,
        tiny=TINY_BODY.decode().replace("\n", "\\n"),
        slow=SLOW.format(port=port, slow_port=slow_port, latency=API_LATENCY),
    )


@contextmanager
def serve(root: Path, *, resume_rate: str = "0") -> Iterator[Nginx]:
    """Serve `root` on 127.0.0.1 from a non-daemon nginx child with its config in a temp dir."""
    binary = which("nginx")
    assert binary is not None, "nginx is not installed"
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        os.chmod(tmp, 0o755)
        port = free_port()
        slow_port = free_port()
        conf = Path(tmp, "nginx.conf")
        conf.write_text(config(Path(tmp), root, port, slow_port, resume_rate))
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"])
        try:
            for listening in (port, slow_port):
                _wait_listening(listening, proc)
            yield Nginx(
                f"http://127.0.0.1:{port}", f"http://127.0.0.1:{slow_port}", Path(tmp, "access.log")
            )
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
