"""Bearer tokens that renew themselves, and the rule that tells expiry from rejection.

One `TokenAuth` per source hands out its access token as `Lease`s, renews it ahead of
expiry, and renews it whenever the API refuses it:

- Renewal is single-flight: concurrent refusals of one token renew it once, so a rotating
  refresh token is never spent twice. Access tokens are kept in the state database, so a
  new process reuses a valid one.
- Each lease reports whether the server accepted it (`settle`). A token that worked for
  anyone and is then refused has expired: renew, as often as that happens.
- A token issued because the previous one was refused is on probation: one request proves
  it while the others wait (`ready`). Refused before any request with it succeeded, the
  credentials are rejected: `AuthenticationError` (exit 77), for that request and every
  waiter. So eight downloads in flight when a token dies renew it once and all carry on.
- A token endpoint that refuses the client's own credentials is rejection too (`obtain`).
- Renewal holds the source's renewal lock in the state (`SourceState.renewal`), which other
  processes sharing the state database respect: under it the stored token is read again,
  and a token another replica obtained meanwhile is taken as it is instead of renewing, so
  replicas never spend one refresh token twice.
"""

from __future__ import annotations

import asyncio
import base64
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.errors import AuthenticationError, TransientError
from agent.sources.http import ApiClient
from agent.sources.vendor import json_object, load_json, text
from agent.state.source_state import SourceState

ACCESS_KEYS = ("access_token", "auth_token")  # the documented names of the access token
REJECTED_HOLD = 60.0  # seconds rejected credentials are not tried again
REJECTED = "the API refused a freshly issued token before any request with it succeeded"


@dataclass(frozen=True, slots=True)
class Token:
    access: str
    expires_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Grant:
    """A token endpoint's answer, free of its field names."""

    access: str
    expires_in: float | None  # None: the answer did not say
    refresh: str | None = None


def parse_expires_in(value: object) -> float | None:
    """`expires_in` as a number or a numeric string (OpenCDE sends strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def read_grant(body: object, *, url: str) -> Grant:
    """A token response: the access token under any documented key, `expires_in` as a
    number or a numeric string, and an optional (rotated) refresh token."""
    data = json_object(body)
    access = next((t for t in (text(data.get(k)) for k in ACCESS_KEYS) if t), None)
    if access is None:
        raise TransientError("token response without an access token", url=url)
    return Grant(access, parse_expires_in(data.get("expires_in")), text(data.get("refresh_token")))


@dataclass(eq=False)
class _Issued:
    """One access token as handed out, and what its uses have shown."""

    token: Token
    header: str
    after_refusal: bool  # obtained because the token before it was refused
    proven: bool = False  # a request with it was accepted
    probing: bool = False  # one request with it is out to prove it
    rejected_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_probation(self) -> bool:
        return self.after_refusal and not self.proven and self.rejected_at is None

    def wake(self) -> None:
        """Let the requests waiting on this token look at it again."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class Lease:
    """One request's use of the current token (a `transfer.contract.Credential`)."""

    def __init__(self, auth: TokenAuth, issued: _Issued) -> None:
        self._auth = auth
        self._issued = issued
        self._probe = False
        self._open = True  # settle() counts

    @property
    def header(self) -> str:
        return self._issued.header

    async def ready(self) -> None:
        self._open = True
        self._probe = await self._auth.wait_until_usable(self._issued)

    def settle(self, accepted: bool | None) -> None:
        if self._open:
            self._open = False
            self._auth.settle(self._issued, accepted, probe=self._probe)
            self._probe = False


class TokenAuth(ABC):
    """Supplies `Authorization`, renews it ahead of expiry or when refused (see the module).

    Subclasses implement `obtain`; `renew_statuses` are the HTTP statuses with which the
    API refuses a token (401, and 403 where the API uses it for that).
    """

    renew_statuses: frozenset[int] = frozenset({401})

    def __init__(
        self,
        state: SourceState,
        *,
        source: str,
        scheme: str = "Bearer",
        early: float = 60.0,
        lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.source = source
        self.scheme = scheme
        self.early = early  # renew this long before expiry
        self.lifetime = lifetime  # when a token response does not say
        self.clock = clock
        self._issued: _Issued | None = None
        self._loaded = False
        self._lock = asyncio.Lock()

    async def lease(self) -> Lease:
        """The current token for one request (renewed first when it is about to expire)."""
        return Lease(self, await self._current())

    async def authorization(self) -> str:
        """The current `Authorization` value, for a request that is not tracked."""
        return (await self._current()).header

    async def renew(self, refused: str) -> None:
        """The API refused `refused`: renew it, unless another task already did.

        Raises AuthenticationError when `refused` is a token on probation: the credentials
        themselves are rejected, not a token expired.
        """
        async with self._lock:
            issued = self._issued
            if not refused or issued is None or issued.header != refused:
                return  # not ours, or renewed already: the next request takes the new one
            if issued.rejected_at is not None or issued.on_probation():
                self._reject(issued)
                raise self.rejected()
            await self._renew(after_refusal=True)

    async def keep(self, grant: Grant) -> None:
        """Adopt and persist an access token obtained elsewhere (a sign-in's code exchange)."""
        async with self._lock:
            await self._adopt(grant, after_refusal=False)

    async def wait_until_usable(self, issued: _Issued) -> bool:
        """Wait while another request proves a token on probation; True: this one proves it."""
        while True:
            if issued.rejected_at is not None:
                raise self.rejected()
            if issued is not self._issued or not issued.on_probation():
                return False
            if not issued.probing:
                issued.probing = True
                return True
            await issued.changed.wait()

    def settle(self, issued: _Issued, accepted: bool | None, *, probe: bool) -> None:
        """Record how the server took a request that carried `issued`."""
        if accepted:
            issued.proven = True
        elif accepted is False and issued.on_probation():
            self._reject(issued)
        if probe:
            issued.probing = False
        issued.wake()

    def rejected(self) -> AuthenticationError:
        """The error for credentials the API rejects; a subclass may add what to check."""
        hint = self.rejected_hint()
        return AuthenticationError(self.source, REJECTED + (f"; {hint}" if hint else ""))

    def rejected_hint(self) -> str:
        return ""

    def lifetime_of(self, grant: Grant) -> float:
        return grant.expires_in if grant.expires_in is not None else self.lifetime

    @abstractmethod
    async def obtain(self) -> Grant:
        """Ask the authorisation server for a new access token (called under the lock)."""

    def _reject(self, issued: _Issued) -> None:
        if issued.rejected_at is None:
            issued.rejected_at = self.clock()
            issued.wake()

    def _held(self, issued: _Issued) -> bool:
        """Rejected credentials are not tried again for REJECTED_HOLD seconds."""
        rejected = issued.rejected_at
        return rejected is not None and self.clock() < rejected + REJECTED_HOLD

    def _fresh(self, issued: _Issued | None) -> bool:
        if issued is None or issued.rejected_at is not None:
            return False
        return issued.token.expires_at - self.early > self.clock()

    async def _current(self) -> _Issued:
        issued = self._issued
        if issued is not None and self._held(issued):
            raise self.rejected()
        if not self._fresh(issued):
            async with self._lock:
                await self._load_saved()
                if not self._fresh(self._issued):
                    await self._renew(after_refusal=False)
        assert self._issued is not None
        return self._issued

    async def _load_saved(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = await self.state.load_token("access")
        if saved is not None and saved.expires_at is not None:
            self._issued = self._record(Token(saved.value, saved.expires_at.timestamp()), False)

    async def _renew(self, *, after_refusal: bool) -> None:
        known = self._issued
        async with self.state.renewal():
            token = await self._renewed_elsewhere(known)
            if token is not None:  # not on probation: its refusal says nothing of ours
                self._replace(self._record(token, after_refusal=False))
                return
            await self._adopt(await self.obtain(), after_refusal=after_refusal)

    async def _renewed_elsewhere(self, known: _Issued | None) -> Token | None:
        """A fresh stored token other than `known`: another replica renewed meanwhile."""
        saved = await self.state.load_token("access")
        if saved is None or saved.expires_at is None:
            return None
        if known is not None and saved.value == known.token.access:
            return None
        token = Token(saved.value, saved.expires_at.timestamp())
        return token if token.expires_at - self.early > self.clock() else None

    async def _adopt(self, grant: Grant, *, after_refusal: bool) -> None:
        token = Token(grant.access, self.clock() + self.lifetime_of(grant))
        self._replace(self._record(token, after_refusal))
        expires = datetime.fromtimestamp(token.expires_at, UTC)
        await self.state.save_token("access", token.access, expires)

    def _replace(self, issued: _Issued) -> None:
        previous, self._issued = self._issued, issued
        self._loaded = True
        if previous is not None:
            previous.wake()  # its waiters move on to the new token

    def _record(self, token: Token, after_refusal: bool) -> _Issued:
        return _Issued(token, f"{self.scheme} {token.access}", after_refusal)


Refusal = Callable[[int, str | None], str]  # (status, OAuth error code) -> what to tell


async def post_grant(
    client: ApiClient,
    url: str,
    form: Mapping[str, str],
    *,
    source: str,
    refused: Refusal,
    client_auth: tuple[str, str] | None = None,
    once: bool = False,
) -> Grant:
    """POST a grant to an OAuth token endpoint and read the token response.

    `client_auth` (id, secret) authenticates the client with HTTP Basic. A 400, 401 or 403
    is the endpoint refusing the grant or the client: AuthenticationError with what
    `refused` says. `once` sends a single request (codes and rotating refresh tokens are
    single-use, so a lost answer may have spent them already).
    """
    headers = {"Accept": "application/json", "Cache-Control": "no-cache"}
    if client_auth is not None:
        pair = ":".join(client_auth).encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    response = await client.request(
        "POST", url, headers=headers, data=form, max_attempts=1 if once else None
    )
    if response.status in (400, 401, 403):
        code = oauth_error(load_json(response.body))
        raise AuthenticationError(source, refused(response.status, code))
    if response.status not in (200, 201):
        raise TransientError("token request failed", url=url, status=response.status)
    return read_grant(response.json(), url=url)


def oauth_error(body: object) -> str | None:
    """The OAuth `error` code of a token endpoint's refusal, when it is a short word."""
    code = json_object(body).get("error")
    return code if isinstance(code, str) and code.isprintable() and 0 < len(code) < 64 else None
