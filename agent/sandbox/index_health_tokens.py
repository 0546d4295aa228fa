"""Index Health sandbox tokens: JWT-like bearer tokens that die after some calls or seconds.

The documentation never states how long a token lives ("expect 403 UNAUTHORIZED when it
expires"), so a token here dies at whichever comes first: `lifetime` seconds on the
injected clock, or `uses` accepted calls. The `TokenLedger` remembers, per task (the
document or collection a call is about), every accepted and refused call and which token it
carried, so a test can prove that a client never presents the same dead token twice in a
row for the same task (it renews, or takes the token someone else renewed, in between).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise


class Outcome(Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


@dataclass
class _Token:
    serial: int  # the order of issue, from 1
    expires_at: float
    uses_left: int | None  # None: no limit on calls


@dataclass
class TokenLedger:
    """Calls per task, in order, each with the serial of the token it carried (0: unknown)."""

    calls: dict[str, list[tuple[Outcome, int]]] = field(default_factory=dict)
    issued: int = 0
    refusals: int = 0

    def note_issue(self) -> None:
        self.issued += 1

    def note_call(self, task: str, outcome: Outcome, serial: int) -> None:
        self.calls.setdefault(task, []).append((outcome, serial))
        if outcome is Outcome.REFUSED:
            self.refusals += 1

    def refused_twice_without_renewal(self) -> list[str]:
        """Tasks refused on two calls in a row that carried the same token."""
        return [
            task
            for task, calls in self.calls.items()
            if any(a == b and a[0] is Outcome.REFUSED for a, b in pairwise(calls))
        ]


@dataclass
class TokenIssuer:
    """Issues signed tokens and decides, call by call, whether one still works."""

    lifetime: float
    uses: int | None
    clock: Callable[[], float]
    ledger: TokenLedger = field(default_factory=TokenLedger)
    key: bytes = field(default_factory=lambda: os.urandom(32))
    _tokens: dict[str, _Token] = field(default_factory=dict)

    @property
    def issued(self) -> int:
        return self.ledger.issued

    def issue(self, client_id: str, fingerprint: str) -> str:
        now = self.clock()
        self.ledger.note_issue()
        claims = {
            "sub": client_id,
            "fingerprint": fingerprint,
            "iat": int(now),
            "exp": int(now + self.lifetime),
            "jti": self.ledger.issued,
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256)
        token = f"{header}.{payload}.{_b64url(signature.digest())}"
        self._tokens[token] = _Token(self.ledger.issued, now + self.lifetime, self.uses)
        return token

    def spend(self, token: str, task: str) -> bool:
        """Whether `token` may make this call (which then counts as one of its uses)."""
        held = self._tokens.get(token)
        alive = held is not None and self.clock() < held.expires_at and held.uses_left != 0
        if alive and held is not None and held.uses_left is not None:
            held.uses_left -= 1
        serial = held.serial if held is not None else 0
        self.ledger.note_call(task, Outcome.ACCEPTED if alive else Outcome.REFUSED, serial)
        return alive

    def expire_all(self) -> None:
        for held in self._tokens.values():
            held.expires_at = float("-inf")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
