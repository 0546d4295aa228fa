"""A scripted stand-in for the user's browser: `BROWSER=<script>` makes the CLI run it."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

SCRIPT = """\
#!{python}
import sys
import urllib.request

url = sys.argv[-1]
with open({visits!r}, "a") as log:
    log.write(url + "\\n")
with urllib.request.urlopen(url, timeout=20) as page:  # follows the redirects to the CLI
    page.read()
"""


def write_browser(folder: Path) -> tuple[Path, Path]:
    """An executable browser script and the file where it logs each address it opened."""
    script, visits = folder / "browser.py", folder / "browser-visits.txt"
    script.write_text(SCRIPT.format(python=sys.executable, visits=str(visits)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, visits


def free_port() -> int:
    """A loopback port nobody listens on right now (bind, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
