"""The agent's small HTTP API: probes, metrics, status, the change journal and triggers.

    GET  /healthz          200 "ok" while the process serves HTTP at all (liveness)
    GET  /readyz           200 when controller.ready(), else 503 (readiness)
    GET  /metrics          Prometheus text exposition of controller.metrics
    GET  /status           JSON from `await controller.status()`
    GET  /events?since=SEQ&limit=N&timeout=S
                           {"events": [...], "last_seq": N}: journal entries after SEQ in
                           order, waiting up to S seconds (long poll) while there is none
    POST /sync             trigger every source       -> 202 {"accepted": [...]}
    POST /sync/{source}    trigger one source         -> 202, or 404 for an unknown source
    POST /documents/{source}/{id}/fetch  {"reason": ...} (optional)
                           download one document now  -> 200 where it is in the mirror

Only the probes and /metrics are open to anyone. Status, events (document names and paths
are information) and every POST are guarded by `mutation_access()`: with an api_token
configured they always need `Authorization: Bearer <token>`; without one they are open only
on a loopback listen address (and then refuse requests that a browser on another site could
have sent), and refused with 403 on any other address.

A trigger is recorded in the state database, so with several replicas the pass runs on
whichever replica takes the source's next pass (503 while the state database is down).
"""

from __future__ import annotations

import enum
import functools
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from agent.config import Secret
from agent.config.values import parse_download_reason
from agent.engine.ondemand import FetchResult, FilteredOutError, NotListedError
from agent.errors import (
    ConfigError,
    DocumentError,
    FatalSourceError,
    MirrorError,
    StateError,
    describe_error,
)
from agent.events.shape import event_json
from agent.metrics import CONTENT_TYPE, Metrics
from agent.models import DocState, JobState
from agent.state.jobs import JobView
from agent.state.journal import Event
from agent.state.replicas import ReplicaView
from agent.state.status import SourceStatus
from agent.state.store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Number = TypeVar("Number", int, float)
SHUTDOWN_TIMEOUT = 5.0
EVENTS_LIMIT = (100, 1000)  # default and largest `limit` of GET /events
EVENTS_WAIT = 300.0  # the longest `timeout` of GET /events
DEFAULT_FETCH_REASON = "open-file-other-app"


class Controller(Protocol):
    """What the web app needs from the daemon."""

    @property
    def metrics(self) -> Metrics: ...

    def ready(self) -> bool: ...

    async def status(self) -> dict[str, Any]: ...

    async def trigger(self, source: str | None) -> list[str]:
        """Ask for a pass now; return the sources accepted. KeyError for an unknown source."""
        ...

    async def events(self, since: int, limit: int, wait: float) -> list[Event]:
        """Journal entries after `since`, waiting up to `wait` seconds for one."""
        ...

    async def fetch(self, source: str, remote_id: str, reason: str) -> FetchResult:
        """Download one document now. KeyError for an unknown source."""
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


def events_query(query: Mapping[str, str]) -> tuple[int, int, float]:
    """(since, limit, timeout) of GET /events; ValueError names the parameter at fault."""
    since = _number(query, "since", 0, int)
    limit = _number(query, "limit", EVENTS_LIMIT[0], int)
    wait = _number(query, "timeout", 0.0, float)
    if since < 0:
        raise ValueError("since: expected a sequence number, 0 or more")
    if not 1 <= limit <= EVENTS_LIMIT[1]:
        raise ValueError(f"limit: expected 1 to {EVENTS_LIMIT[1]}")
    if not 0 <= wait <= EVENTS_WAIT:
        raise ValueError(f"timeout: expected 0 to {EVENTS_WAIT:g} seconds")
    return since, limit, wait


def _number(
    query: Mapping[str, str], name: str, default: Number, kind: Callable[[str], Number]
) -> Number:
    if name not in query:
        return default
    try:
        return kind(query[name])
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {query[name]!r}") from None


def fetch_reason(body: Mapping[str, Any]) -> str:
    """The `x-download-reason` a fetch asks for; ValueError for one Huddle does not know."""
    reason = body.get("reason", DEFAULT_FETCH_REASON)
    try:
        return parse_download_reason(reason, "reason")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


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
    """The registered replicas and what each holds: the sources whose pass it lists, and
    how many download jobs it works (one replica, or none when no agent runs, on SQLite)."""
    return [
        {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "started": _iso(r.started_at),
            "last_heartbeat": _iso(r.heartbeat_at),
            "state": "stale" if r.stale else "live",
            "passes": list(r.passes),
            "jobs": r.jobs,
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
        "deleted_locally": s.count(DocState.DELETED_LOCALLY),
        "last_pass_started": _iso(s.last_pass_started),
        "last_pass_finished": _iso(s.last_pass_finished),
        "last_pass_ok": s.last_pass_ok,
        "last_error": s.last_error,
        "last_warning": s.last_warning,
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
    app.router.add_get("/events", events)
    app.router.add_post("/sync", sync)
    app.router.add_post("/sync/{source}", sync)
    app.router.add_post("/documents/{source}/{remote_id:.+}/fetch", fetch)
    return app


def _error(
    cls: type[web.HTTPError], message: str, headers: dict[str, str] | None = None
) -> web.HTTPError:
    body = json.dumps({"error": message})
    return cls(text=body, content_type="application/json", headers=headers)


def _authorize(request: web.Request) -> None:
    """Raise the HTTP error that refuses this request for information or action, if any."""
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
    _authorize(request)
    report = await request.app[CONTROLLER].status()
    return web.json_response(report, dumps=functools.partial(json.dumps, default=str))


async def events(request: web.Request) -> web.Response:
    _authorize(request)
    try:
        since, limit, wait = events_query(request.query)
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    found = await request.app[CONTROLLER].events(since, limit, wait)
    last = found[-1].seq if found else since
    return web.json_response({"events": [event_json(e) for e in found], "last_seq": last})


async def fetch(request: web.Request) -> web.Response:
    _authorize(request)
    source, remote_id = request.match_info["source"], request.match_info["remote_id"]
    try:
        reason = fetch_reason(await _json_body(request))
        done = await request.app[CONTROLLER].fetch(source, remote_id, reason)
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    except KeyError:
        raise _error(web.HTTPNotFound, f"unknown source {source!r}") from None
    except FilteredOutError as exc:  # listed, but the source's filters leave it out
        raise _error(web.HTTPConflict, str(exc)) from None
    except NotListedError as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None
    except DocumentError as exc:
        raise _error(web.HTTPBadGateway, f"{source}: {describe_error(exc)}") from None
    except FatalSourceError as exc:
        raise _error(web.HTTPBadGateway, str(exc)) from None
    except (StateError, MirrorError) as exc:  # downloaded, not put in place: see the message
        raise _error(web.HTTPServiceUnavailable, str(exc)) from None
    return web.json_response(
        {
            "source": done.source,
            "document_id": done.remote_id,
            "version": done.version,
            "path": done.rel_path,
            "size": done.size,
            "digest": done.digest,
        }
    )


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    """The request's JSON object; none at all is an empty one."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError(  # noqa: TRY004 - a bad request, answered 400 by the caller
            'expected a JSON object such as {"reason": "open-file-other-app"}'
        )
    return body


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
