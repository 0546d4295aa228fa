"""Helpers to drive the real CLI as a subprocess while sandboxes serve from the test's loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> CliResult:
    """Run `python -m agent ARGS`; the event loop keeps serving the sandboxes meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, agent: dict[str, Any], sources: list[dict[str, Any]]) -> Path:
    """Write a TOML config (flat tables, plus one level of sub-tables for sources)."""
    lines = ["[agent]", *(f"{k} = {toml_value(v)}" for k, v in agent.items())]
    for source in sources:
        lines.append("\n[[sources]]")
        tables = {k: v for k, v in source.items() if isinstance(v, dict)}
        lines += [f"{k} = {toml_value(v)}" for k, v in source.items() if not isinstance(v, dict)]
        for name, table in tables.items():
            lines.append(f"[sources.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
