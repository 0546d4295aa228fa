"""The agent's small HTTP API: liveness, readiness, metrics, status and sync triggers.

    GET  /healthz          200 "ok" while the process serves HTTP at all (liveness)
    GET  /readyz           200 when controller.ready(), else 503 (readiness)
    GET  /metrics          Prometheus text exposition of controller.metrics
    GET  /status           JSON from `await controller.status()`
    POST /sync             trigger every source       -> 202 {"accepted": [...]}
    POST /sync/{source}    trigger one source         -> 202, or 404 for an unknown source

A trigger is recorded in the state database, so with several replicas the pass runs on
whichever replica takes the source's next pass (503 while the state database is down).

Mutating routes (POST) are guarded by `mutation_access()`: with an api_token configured they
always need `Authorization: Bearer <token>`; without one they are open only on a loopback
listen address (and then refuse requests that a browser on another site could have sent),
and refused with 403 on any other address.
"""

from __future__ import annotations

import enum
import functools
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from agent.config import Secret
from agent.errors import StateError
from agent.metrics import CONTENT_TYPE, Metrics
from agent.models import DocState, JobState
from agent.state.jobs import JobView
from agent.state.replicas import ReplicaView
from agent.state.status import SourceStatus
from agent.state.store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT = 5.0


class Controller(Protocol):
    """What the web app needs from the daemon."""

    @property
    def metrics(self) -> Metrics: ...

    def ready(self) -> bool: ...

    async def status(self) -> dict[str, Any]: ...

    async def trigger(self, source: str | None) -> list[str]:
        """Ask for a pass now; return the sources accepted. KeyError for an unknown source."""
        ...


class Access(enum.Enum):
    OPEN = "open"  # loopback listen address, no token configured
    BEARER = "bearer"  # a bearer token is required
    REFUSED = "refused"  # reachable from the network but no token configured


# ---------------------------------------------------------------- pure decisions


def split_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:8749" -> ("127.0.0.1", 8749); "[::1]:0" -> ("::1", 0)."""
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also written as an IPv4-mapped address)."""
    host = host.removeprefix("[").removesuffix("]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def mutation_access(listen: str, api_token: str | None) -> Access:
    if api_token:
        return Access.BEARER
    return Access.OPEN if is_loopback(split_listen(listen)[0]) else Access.REFUSED


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _host_of(value: str) -> str:
    return urlsplit(f"//{value}").hostname or ""


def cross_site_reason(host: str | None, origin: str | None) -> str | None:
    """Why an unauthenticated loopback request may come from a web page, or None."""
    if host is not None and not is_loopback(_host_of(host)):
        return f"Host {host!r} is not a loopback name (DNS rebinding?)"
    if origin is not None and not is_loopback(urlsplit(origin).hostname or ""):
        return f"cross-site request from Origin {origin!r}"
    return None


# ---------------------------------------------------------------- the status document

JOB_STATE_WORDS: dict[str, str] = {
    JobState.ACTIVE: "in-progress",
    JobState.QUEUED: "in-progress",
    JobState.RETRY: "waiting-to-retry",
    JobState.FAILED: "permanently-failed",
}


async def status_report(store: Store, configured: Sequence[str]) -> dict[str, Any]:
    """`status --json` and GET /status: the replicas, and the configured sources."""
    sources = await store.status.sources(configured)
    return {
        "replicas": replicas_json(await store.replicas.views()),
        "sources": status_json(sources),
    }


def status_json(sources: Sequence[SourceStatus]) -> list[dict[str, Any]]:
    """The state's status read model in the words of `status --json` and GET /status."""
    return [_source_json(s) for s in sources]


def replicas_json(replicas: Sequence[ReplicaView]) -> list[dict[str, Any]]:
    """The registered replicas (one, or none when no daemon runs, on SQLite)."""
    return [
        {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "started": _iso(r.started_at),
            "last_heartbeat": _iso(r.heartbeat_at),
            "state": "stale" if r.stale else "live",
        }
        for r in replicas
    ]


def _source_json(s: SourceStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "type": s.type,
        "documents": s.documents,
        "mirrored": s.count(DocState.MIRRORED),
        "pending": s.count(DocState.PENDING),
        "failed": s.count(DocState.FAILED),
        "skipped": s.count(DocState.SKIPPED),
        "removed": s.count(DocState.REMOVED),
        "last_pass_started": _iso(s.last_pass_started),
        "last_pass_finished": _iso(s.last_pass_finished),
        "last_pass_ok": s.last_pass_ok,
        "last_error": s.last_error,
        "jobs": [_job_json(j) for j in s.jobs],
        "skipped_documents": [
            {"remote_id": d.remote_id, "name": d.name, "reason": d.reason, "url": d.url}
            for d in s.skipped
        ],
    }


def _job_json(job: JobView) -> dict[str, Any]:
    return {
        "remote_id": job.remote_id,
        "path": job.rel_path,
        "state": JOB_STATE_WORDS.get(job.state, job.state),
        "bytes_done": job.bytes_done,
        "expected_size": job.expected_size,
        "attempts": job.attempts,
        "error_kind": job.error_kind,
        "last_error": job.last_error,
        "next_retry_at": _iso(job.next_retry_at),
    }


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the application

CONTROLLER = web.AppKey("controller", Controller)
ACCESS = web.AppKey("access", Access)
TOKEN = web.AppKey("token", str)


def build_app(
    controller: Controller, *, listen: str, api_token: str | Secret | None
) -> web.Application:
    """The aiohttp application; `listen` decides the access policy, not where it binds."""
    token = api_token.reveal() if isinstance(api_token, Secret) else api_token
    app = web.Application()
    app[CONTROLLER] = controller
    app[ACCESS] = mutation_access(listen, token)
    app[TOKEN] = token or ""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/sync", sync)
    app.router.add_post("/sync/{source}", sync)
    return app


def _error(
    cls: type[web.HTTPError], message: str, headers: dict[str, str] | None = None
) -> web.HTTPError:
    body = json.dumps({"error": message})
    return cls(text=body, content_type="application/json", headers=headers)


def _authorize(request: web.Request) -> None:
    """Raise the HTTP error that refuses this mutating request, if any."""
    access = request.app[ACCESS]
    if access is Access.REFUSED:
        raise _error(
            web.HTTPForbidden,
            "the agent listens on a non-loopback address and no api_token is configured; "
            "set agent.api_token (or api_token_file / api_token_env) to allow this",
        )
    if access is Access.BEARER:
        if not bearer_matches(request.headers.get("Authorization"), request.app[TOKEN]):
            challenge = {"WWW-Authenticate": 'Bearer realm="sync-agent"'}
            raise _error(web.HTTPUnauthorized, "missing or wrong bearer token", challenge)
        return
    reason = cross_site_reason(request.headers.get("Host"), request.headers.get("Origin"))
    if reason is not None:
        raise _error(web.HTTPForbidden, f"{reason}; configure agent.api_token to allow it")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    if request.app[CONTROLLER].ready():
        return web.Response(text="ready")
    return web.Response(status=503, text="not ready")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[CONTROLLER].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def status(request: web.Request) -> web.Response:
    report = await request.app[CONTROLLER].status()
    return web.json_response(report, dumps=functools.partial(json.dumps, default=str))


async def sync(request: web.Request) -> web.Response:
    _authorize(request)
    source = request.match_info.get("source")
    try:
        accepted = await request.app[CONTROLLER].trigger(source)
    except KeyError:
        raise _error(web.HTTPNotFound, f"unknown source {source!r}") from None
    except StateError as exc:
        raise _error(web.HTTPServiceUnavailable, str(exc)) from exc
    return web.json_response({"accepted": list(accepted)}, status=202)


# ---------------------------------------------------------------- serving


@asynccontextmanager
async def serve_app(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Run `app` on host:port (0 = any free port); yield its base URL."""
    # Requests are logged by the daemon's own events, not aiohttp's access log.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield base_url(runner.addresses[0])
    finally:
        await runner.cleanup()


def base_url(sockname: Any) -> str:
    """A URL for a bound socket address; wildcard addresses become loopback ones."""
    host, port = str(sockname[0]), int(sockname[1])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a comparison
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def serve_web(
    controller: Controller, listen: str, api_token: str | Secret | None
) -> AsyncIterator[str]:
    """Serve the agent's API on `listen` ("host:port"); yield the bound base URL."""
    app = build_app(controller, listen=listen, api_token=api_token)
    host, port = split_listen(listen)
    async with serve_app(app, host, port) as url:
        yield url
