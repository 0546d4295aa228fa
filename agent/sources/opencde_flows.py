"""OpenCDE browser flows: sign-in (authorization code) and document selection.

Both flows start a small loopback HTTP listener for the browser's redirect, print the URL
and open it in a browser, then wait (bounded) for the callback:

    login   -> oauth2_auth_url ... -> /callback/login?code=..&state=..  -> token exchange
    select  -> select_documents_url -> /callback/select?selected_documents_url=..
                                       (or the older `selected_url`, or
                                        `user_cancelled_selection=true`)

The listener binds the agent's `listen` address when it is free (a CDE may only accept
registered redirect URLs), else an ephemeral 127.0.0.1 port. It only ever binds loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from html import escape

from aiohttp import web
from yarl import URL

from agent.errors import AgentError, AuthenticationError, FatalSourceError
from agent.sources.base import SourceContext
from agent.sources.opencde_auth import (
    Endpoints,
    RefreshTokenAuth,
    discover,
    login_hint,
    mark_seed_spent,
    request_grant,
)
from agent.sources.opencde_model import (
    SelectedDocument,
    load_selection,
    parse_version,
    save_selection,
)
from agent.sources.vendor import failed_call, json_object

SELECT_CALLBACK_LIFETIME = 3600
Out = Callable[[str], None]
Page = tuple[str, str]  # title, message of the page the browser shows


class BrowserFlowError(AgentError):
    """A browser flow ended without a result: cancelled, timed out or answered wrongly."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class SelectionCancelled(BrowserFlowError):
    """The user pressed Cancel in the CDE's picker; nothing was changed."""


class BrowserTimeout(BrowserFlowError):
    """No callback arrived in time."""


# ---------------------------------------------------------------- callback listener


@dataclass
class _Expected:
    future: asyncio.Future[dict[str, str]]
    page: Callable[[Mapping[str, str]], Page]


class CallbackListener:
    """A loopback aiohttp server that hands each expected callback's query to a future."""

    def __init__(self, listen: str | None) -> None:
        self.listen = listen
        self.base_url = ""
        self.fell_back = False
        self._expected: dict[str, _Expected] = {}
        self._runner: web.AppRunner | None = None

    def expect(self, path: str, page: Callable[[Mapping[str, str]], Page]) -> str:
        """Register `path`; returns its absolute URL. `page` picks what the browser is shown."""
        future = asyncio.get_running_loop().create_future()
        self._expected[path] = _Expected(future, page)
        return f"{self.base_url}{path}"

    async def wait(self, path: str) -> dict[str, str]:
        """The query of the first request to `path` (bound the wait with asyncio.timeout)."""
        return await asyncio.shield(self._expected[path].future)

    async def __aenter__(self) -> CallbackListener:
        app = web.Application()
        app.router.add_get("/callback/{kind}", self._callback)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = loopback_address(self.listen)
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError:  # busy (the daemon's own web UI, say): any free port will do
            self.fell_back = True
            host = "127.0.0.1"
            await web.TCPSite(self._runner, host, 0).start()
        bound = self._runner.addresses[-1][1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{bound}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _callback(self, request: web.Request) -> web.Response:
        expected = self._expected.get(request.path)
        if expected is None:
            return _html(404, ("Not found", "This address is not expected."))
        if expected.future.done():
            return _html(410, ("Already done", "This request was already answered."))
        query = dict(request.query.items())
        response = _html(200, expected.page(query))
        await response.prepare(request)
        await response.write_eof()  # the page is on its way before the listener may close
        expected.future.set_result(query)
        return response


def loopback_address(listen: str | None) -> tuple[str, int]:
    """Host and port to bind: the `listen` port on loopback, or an ephemeral port."""
    if not listen:
        return "127.0.0.1", 0
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        host = host if loopback else "127.0.0.1"
    return host, int(port) if port.isdigit() else 0


def _html(status: int, page: Page) -> web.Response:
    title, message = (escape(part) for part in page)
    body = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n<body><h1>{title}</h1><p>{message}</p>"
        "<p>You can close this window.</p></body></html>\n"
    )
    return web.Response(status=status, text=body, content_type="text/html")


# ---------------------------------------------------------------- opening the browser


@contextlib.asynccontextmanager
async def browser_opened(
    url: str, open_url: Callable[[str], object], out: Out, what: str
) -> AsyncIterator[None]:
    """Print `url` and open it while the caller waits for the callback.

    A coroutine function runs as a task on the loop; a plain one (`webbrowser.open`) in a
    worker thread, because a text-mode BROWSER runs in the foreground until it exits.
    """
    out(f"Open this address in a browser to {what}:\n  {url}")
    opener: asyncio.Future[object]
    if inspect.iscoroutinefunction(open_url):
        opener = asyncio.ensure_future(open_url(url))
    else:
        opener = asyncio.ensure_future(asyncio.to_thread(open_url, url))

    def opened(done: asyncio.Future[object]) -> None:
        if done.cancelled():
            return
        if done.exception() is not None or done.result() is False:
            out("Could not start a browser: open the address above yourself.")

    opener.add_done_callback(opened)
    try:
        yield
    finally:
        if not opener.done():
            opener.cancel()  # a task stops; a thread is left to finish on its own


def _timed_out(ctx: SourceContext, seconds: float, what: str) -> BrowserTimeout:
    message = f"no answer from the browser within {seconds:g} seconds; {what} abandoned"
    return BrowserTimeout(ctx.config.name, message)


def _announce_listener(listener: CallbackListener, listen: str | None, out: Out) -> None:
    if listener.fell_back:
        out(f"{listen} is in use; waiting for the browser on {listener.base_url} instead.")


# ---------------------------------------------------------------- login


async def login(
    ctx: SourceContext,
    *,
    listen: str | None,
    open_url: Callable[[str], object],
    timeout: float = 300.0,  # noqa: ASYNC109 - the CLI's interface; bounds the browser wait
    out: Out = print,
) -> None:
    """Sign in through the browser and store the tokens (refresh token first)."""
    endpoints = await discover(ctx, fresh=True)
    state = secrets.token_urlsafe(24)
    async with CallbackListener(listen) as listener:
        redirect = listener.expect("/callback/login", lambda q: _login_page(q, state))
        _announce_listener(listener, listen, out)
        url = sign_in_url(endpoints.auth_url, ctx.config.client_id or "", state, redirect)
        try:
            async with browser_opened(url, open_url, out, "sign in"), asyncio.timeout(timeout):
                answer = await listener.wait("/callback/login")
        except TimeoutError as exc:
            raise _timed_out(ctx, timeout, "sign-in") from exc
    code = _code_from(ctx, answer, state)
    await _redeem(ctx, endpoints, code, redirect)
    out(f"Signed in to {ctx.config.name}.")


def sign_in_url(auth_url: str, client_id: str, state: str, redirect: str) -> str:
    """The authorization request; `redirect_url` per OpenCDE and `redirect_uri` per RFC 6749."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "state": state,
        "redirect_url": redirect,
        "redirect_uri": redirect,
    }
    return str(URL(auth_url).update_query(query))


def _login_page(query: Mapping[str, str], state: str) -> Page:
    if query.get("state") != state:
        return "Sign-in failed", "The answer does not belong to this sign-in."
    if "code" not in query:
        return "Sign-in failed", query.get("error_description") or query.get("error") or ""
    return "Signed in", "sync-agent received your sign-in."


def _code_from(ctx: SourceContext, answer: Mapping[str, str], state: str) -> str:
    name = ctx.config.name
    if not secrets.compare_digest(answer.get("state", ""), state):
        raise AuthenticationError(name, "the sign-in answer does not match this request (state)")
    code = answer.get("code")
    if not code:
        error = answer.get("error_description") or answer.get("error") or "no code"
        raise AuthenticationError(name, f"sign-in failed: {error}")
    return code


async def _redeem(ctx: SourceContext, endpoints: Endpoints, code: str, redirect: str) -> None:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_url": redirect,
        "redirect_uri": redirect,
    }
    grant = await request_grant(ctx, endpoints.token_url, form, what="the sign-in code")
    if grant.refresh is None:
        raise AuthenticationError(ctx.config.name, "the CDE issued no refresh token")
    await ctx.state.save_token("refresh", grant.refresh)
    await mark_seed_spent(ctx)
    await RefreshTokenAuth(ctx, endpoints.token_url).keep(grant)


# ---------------------------------------------------------------- select


async def select(
    ctx: SourceContext,
    *,
    listen: str | None,
    open_url: Callable[[str], object],
    timeout: float = 300.0,  # noqa: ASYNC109 - the CLI's interface; bounds the browser wait
    out: Out = print,
) -> list[str]:
    """Let the user pick documents in the CDE; add them to the selection; return new ids."""
    name = ctx.config.name
    endpoints = await discover(ctx)
    auth = RefreshTokenAuth(ctx, endpoints.token_url)
    await auth.authorization()  # not signed in: say so before opening anything
    current = await load_selection(ctx.state, name)
    async with CallbackListener(listen) as listener:
        callback = listener.expect("/callback/select", _select_page)
        _announce_listener(listener, listen, out)
        url = await _start_selection(ctx, endpoints, auth, callback, current.server_context)
        try:
            async with (
                browser_opened(url, open_url, out, "choose documents"),
                asyncio.timeout(timeout),
            ):
                answer = await listener.wait("/callback/select")
        except TimeoutError as exc:
            raise _timed_out(ctx, timeout, "selection") from exc
    picked, context = await _fetch_selected(ctx, endpoints, auth, answer)
    updated, added = current.merged(picked, context)
    await save_selection(ctx.state, updated)
    out(
        f"Added {len(added)} document(s); {len(updated.documents)} selected in total "
        f"(`sync-agent select {name} --list`)."
    )
    return added


async def _start_selection(
    ctx: SourceContext,
    endpoints: Endpoints,
    auth: RefreshTokenAuth,
    callback: str,
    server_context: str | None,
) -> str:
    body = {
        "callback": {"url": callback, "expires_in": SELECT_CALLBACK_LIFETIME},
        "server_context": server_context,
    }
    response = await ctx.client.request(
        "POST", f"{endpoints.api}/select-documents", auth=auth, json_body=body
    )
    if response.status not in (200, 201):
        raise _failed(ctx, "starting a selection", response.status)
    url = json_object(response.json()).get("select_documents_url")
    if not isinstance(url, str) or not url:
        raise FatalSourceError(ctx.config.name, "the CDE gave no select_documents_url")
    return url


def _select_page(query: Mapping[str, str]) -> Page:
    if _cancelled(query):
        return "Selection cancelled", "Nothing was changed."
    return "Selection received", "sync-agent will mirror the documents you chose."


def _cancelled(query: Mapping[str, str]) -> bool:
    return query.get("user_cancelled_selection", "").lower() == "true"


async def _fetch_selected(
    ctx: SourceContext, endpoints: Endpoints, auth: RefreshTokenAuth, answer: Mapping[str, str]
) -> tuple[list[SelectedDocument], str | None]:
    name = ctx.config.name
    if _cancelled(answer):
        raise SelectionCancelled(name, "selection cancelled in the browser; nothing changed")
    url = answer.get("selected_documents_url") or answer.get("selected_url")
    if not url:
        raise BrowserFlowError(name, "the CDE's answer named no selected documents")
    if not _same_origin(url, endpoints):
        # The URL came through the browser: never send our token anywhere but the CDE.
        raise BrowserFlowError(name, f"the selection is on a foreign host: {URL(url).host}")
    response = await ctx.client.request(
        "GET", url, auth=auth, headers={"Accept": "application/json"}
    )
    if response.status != 200:
        raise _failed(ctx, "reading the selection", response.status)
    body = json_object(response.json())
    parsed = (parse_version(item) for item in body.get("documents") or ())
    picked = [SelectedDocument(v.document_id, v.title, v.name) for v in parsed if v is not None]
    context = body.get("server_context")
    return picked, context if isinstance(context, str) else None


def _failed(ctx: SourceContext, what: str, status: int) -> Exception:
    name = ctx.config.name
    return failed_call(name, what, status, hint=login_hint(name))


def _same_origin(url: str, endpoints: Endpoints) -> bool:
    origin = URL(url).origin() if URL(url).absolute else None
    return origin in (URL(endpoints.api).origin(), URL(endpoints.base_url).origin())


# ---------------------------------------------------------------- managing the selection


async def list_selection(ctx: SourceContext) -> list[SelectedDocument]:
    """The selected documents, in the order they were first picked."""
    return list((await load_selection(ctx.state, ctx.config.name)).documents)


async def remove_selection(ctx: SourceContext, document_id: str) -> bool:
    """Drop one document from the selection; False when it was not selected."""
    current = await load_selection(ctx.state, ctx.config.name)
    if document_id not in current.ids():
        return False
    await save_selection(ctx.state, current.without(document_id))
    return True
