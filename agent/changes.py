"""The `events` and `get` commands: read the change journal, fetch one document now.

`sync-agent events` reads the state database directly (no daemon needed) and follows it by
reading again every second. `sync-agent get` downloads through the running daemon when there
is one (it holds the state folder's lock; the request goes to its `listen` address with the
`api_token`), else opens the agent itself. The document lands in the mirror either way, as a
pass would put it and recorded in the journal; `--output` also writes a verified copy where
the user asked, and nowhere else.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp

from agent.agent import Agent
from agent.config import Config
from agent.engine.ondemand import FetchResult
from agent.errors import AgentError, AlreadyRunningError, ConfigError
from agent.events.shape import event_json, human_line
from agent.state.journal import Event
from agent.state.store import Store
from agent.transfer import digests
from agent.web import base_url, split_listen

FOLLOW_POLL = 1.0  # seconds between reads of the journal while following
FOLLOW_WAIT = 3600.0  # one read's longest wait (the loop goes on until interrupted)
PAGE = 500  # entries read at once
COPY_BUFFER = 1 << 20


async def print_events(
    config: Config, since: int, *, follow: bool, as_json: bool, out: TextIO = sys.stdout
) -> None:
    """Print journal entries after `since`; with `follow`, go on as new ones are committed."""
    async with Store.open(config.agent.state_url, config.agent.state_dir) as store:
        while True:
            if follow:
                found = await store.journal.wait(since, PAGE, FOLLOW_WAIT, poll=FOLLOW_POLL)
            else:
                found = await store.journal.read(since, PAGE)
            for event in found:
                out.write(_line(event, as_json) + "\n")
            out.flush()
            if not found and not follow:
                return
            since = found[-1].seq if found else since


def _line(event: Event, as_json: bool) -> str:
    return json.dumps(event_json(event)) if as_json else human_line(event)


class FetchError(AgentError):
    """The daemon refused or failed an on-demand fetch; its message says why."""


async def get_document(config: Config, source: str, remote_id: str, reason: str) -> FetchResult:
    """Fetch one document now: through the running daemon if there is one, else directly."""
    config.source(source)  # an unknown source is a configuration error (exit 78)
    try:
        async with Agent.open(config) as agent:
            try:
                return await agent.fetch_now(source, remote_id, reason)
            except KeyError:
                raise ConfigError("SOURCE", f"source {source!r} is not enabled") from None
    except AlreadyRunningError:
        return await _through_daemon(config, source, remote_id, reason)


async def _through_daemon(config: Config, source: str, remote_id: str, reason: str) -> FetchResult:
    host, port = split_listen(config.agent.listen)
    url = f"{base_url((host, port))}/documents/{quote(source)}/{quote(remote_id, safe='')}/fetch"
    headers = {}
    if config.agent.api_token is not None:
        headers["Authorization"] = f"Bearer {config.agent.api_token.reveal()}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"reason": reason}, headers=headers) as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError) as exc:
        raise FetchError(
            f"a daemon holds the state folder but its API at {config.agent.listen} did not "
            f"answer ({type(exc).__name__}): is agent.listen right?"
        ) from exc
    if response.status != 200:
        raise FetchError(f"the daemon said: {_said(body, response.status)}")
    return FetchResult(
        body["source"],
        body["document_id"],
        body["version"],
        body["path"],
        body["size"],
        body["digest"],
    )


def _said(body: Any, status: int) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return f"{body['error']} (HTTP {status})"
    return f"HTTP {status}"


def copy_out(mirror_dir: Path, fetched: FetchResult, output: Path) -> Path:
    """Copy the fetched file to `output` (a folder: under the file's own name), verified
    against the digest the agent recorded, written beside and renamed (runs in a thread)."""
    output = output.expanduser().absolute()
    source = mirror_dir / fetched.rel_path
    dest = output / source.name if output.is_dir() else output
    if not dest.parent.is_dir():
        raise ConfigError("--output", f"the folder {dest.parent} does not exist")
    fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = _copy(source, fd, digests.algorithm_of(fetched.digest))
        if digest == fetched.digest:
            os.replace(temp, dest)
            return dest
    except OSError as exc:
        raise FetchError(f"cannot copy {fetched.rel_path} to {dest}: {exc.strerror}") from exc
    finally:
        Path(temp).unlink(missing_ok=True)
    raise FetchError(f"{fetched.rel_path} changed in the mirror while it was copied")


def _copy(source: Path, fd: int, algorithm: digests.Algorithm) -> str:
    """Copy `source` into the open file `fd` (closed after, fsynced); the digest copied."""
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        hasher = digests.new(algorithm)
        while chunk := src.read(COPY_BUFFER):
            hasher.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digests.value(algorithm, hasher)
