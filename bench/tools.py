"""External tools the benchmark needs: find them, and install them from Debian when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# binary -> Debian package (nginx-light brings the echo module the slow API block uses)
TOOLS = {
    "nginx": "nginx-light",
    "rclone": "rclone",
    "aria2c": "aria2",
    "curl": "curl",
    "time": "time",
}
SBIN = ("/usr/sbin", "/sbin")
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")  # echo_sleep: a slow API


def which(name: str) -> str | None:
    """`shutil.which`, also looking in sbin (nginx lives there and PATH may omit it)."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing_tools() -> list[str]:
    missing = [name for name in TOOLS if which(name) is None]
    if "nginx" not in missing and not ECHO_MODULE.is_file():
        missing.append("nginx")  # without the echo module nginx-light brings
    return missing


def ensure_tools() -> None:
    """Install the packages of the missing tools with apt-get."""
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
