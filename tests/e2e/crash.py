"""Kill the real CLI at an awkward moment: SIGKILL the moment a named method is called.

`kill_at(folder, "agent.state.documents:Documents.record_moves")` returns the environment
for `run_cli` under which the process kills itself (SIGKILL: no `finally`, no cleanup) when
that method is called, so a test can check what a crash at exactly that step leaves behind.
It works through a `sitecustomize` module written to `folder` and put first on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILLED = -signal.SIGKILL  # the return code of a process that received SIGKILL
TARGET_ENV = "SYNC_AGENT_TEST_KILL_AT"
SITECUSTOMIZE = """\
import importlib, os, signal

_module, _, _path = os.environ["{env}"].partition(":")
_owner_name, _, _method = _path.rpartition(".")
_owner = importlib.import_module(_module)
for _part in filter(None, _owner_name.split(".")):
    _owner = getattr(_owner, _part)


def _killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


setattr(_owner, _method, _killed)
"""


def kill_at(folder: Path, target: str) -> dict[str, str]:
    """The environment under which `python -m agent` dies by SIGKILL when `target`
    ("package.module:Class.method" or "package.module:function") is called."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(env=TARGET_ENV))
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, TARGET_ENV: target}
