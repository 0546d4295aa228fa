"""TokenAuth's bookkeeping: single-flight renewal, expiry versus rejection, the probation gate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from agent.errors import AuthenticationError
from agent.sources.auth import REJECTED_HOLD, Grant, Lease, TokenAuth, read_grant
from agent.state.source_state import MemorySourceState


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingAuth(TokenAuth):
    """Issues t1, t2, ... and yields to the loop while "asking", as a real endpoint would."""

    def __init__(self, state: MemorySourceState | None = None) -> None:
        self.clock_ = Clock()
        super().__init__(state or MemorySourceState(), source="s", clock=self.clock_)
        self.issued = 0

    async def obtain(self) -> Grant:
        self.issued += 1
        await asyncio.sleep(0)
        return Grant(f"t{self.issued}", 3600.0)


async def used(auth: TokenAuth, accepted: bool | None) -> Lease:
    """One request: lease, wait until it may be sent, and settle how the server took it."""
    lease = await auth.lease()
    await lease.ready()
    lease.settle(accepted)
    return lease


async def settled_soon(task: asyncio.Task[None]) -> bool:
    """Whether `task` finishes within a few turns of the loop (it is waiting otherwise)."""
    for _ in range(5):
        await asyncio.sleep(0)
    return task.done()


async def refused_then_renewed(auth: TokenAuth) -> None:
    """A token that worked is refused: after this, a fresh token is on probation."""
    lease = await used(auth, True)
    await auth.renew(lease.header)


async def test_concurrent_refusals_of_a_working_token_renew_it_once() -> None:
    auth = CountingAuth()
    lease = await used(auth, True)
    await asyncio.gather(*(auth.renew(lease.header) for _ in range(8)))
    assert auth.issued == 2
    assert (await auth.lease()).header == "Bearer t2"


async def test_a_token_that_worked_and_is_refused_is_renewed_every_time() -> None:
    """Expiry is not rejection, however often it happens."""
    auth = CountingAuth()
    for _ in range(6):
        await refused_then_renewed(auth)
    assert auth.issued == 7


async def test_a_first_token_refused_at_once_gets_one_renewal() -> None:
    """A token from the state or the first issue may be stale: it is renewed, not judged."""
    state = MemorySourceState()
    await state.save_token("access", "old", datetime.fromtimestamp(2_000_000_000.0, UTC))
    auth = CountingAuth(state)
    lease = await used(auth, False)
    assert lease.header == "Bearer old"
    await auth.renew(lease.header)
    assert (await auth.lease()).header == "Bearer t1"


async def test_a_fresh_token_refused_before_any_success_rejects_the_credentials() -> None:
    auth = CountingAuth()
    first = await used(auth, False)
    await auth.renew(first.header)  # renewed because refused: t2 is on probation
    fresh = await used(auth, False)
    with pytest.raises(AuthenticationError, match="freshly issued"):
        await auth.renew(fresh.header)
    with pytest.raises(AuthenticationError):
        await auth.lease()  # held: rejected credentials are not tried again at once
    auth.clock_.now += REJECTED_HOLD + 1
    assert (await auth.lease()).header == "Bearer t3"


async def test_one_request_proves_a_new_token_while_the_others_wait() -> None:
    auth = CountingAuth()
    await refused_then_renewed(auth)
    prober = await auth.lease()
    await prober.ready()
    others = [await auth.lease() for _ in range(3)]
    waiting = [asyncio.create_task(lease.ready()) for lease in others]
    assert not any([await settled_soon(task) for task in waiting])
    prober.settle(True)
    await asyncio.gather(*waiting)
    for lease in others:  # none of them is a probe: their refusals would be expiry
        lease.settle(False)
    await auth.renew(others[0].header)
    assert auth.issued == 3


async def test_waiters_share_the_rejection_of_the_token_they_waited_for() -> None:
    auth = CountingAuth()
    await refused_then_renewed(auth)
    prober = await auth.lease()
    await prober.ready()
    waiter = await auth.lease()
    waiting = asyncio.create_task(waiter.ready())
    assert not await settled_soon(waiting)
    prober.settle(False)
    with pytest.raises(AuthenticationError, match="freshly issued"):
        await waiting
    assert auth.issued == 2  # no token was asked for on behalf of rejected credentials


async def test_a_probe_without_an_answer_hands_the_proof_to_the_next_request() -> None:
    auth = CountingAuth()
    await refused_then_renewed(auth)
    prober, second, third = [await auth.lease() for _ in range(3)]
    await prober.ready()
    second_ready = asyncio.create_task(second.ready())
    third_ready = asyncio.create_task(third.ready())
    prober.settle(None)  # connection lost, or a 5xx: says nothing about the token
    prober.settle(False)  # a second verdict on the same send is ignored
    assert await settled_soon(second_ready) != await settled_soon(third_ready)
    (proving,) = [
        lease for lease, task in ((second, second_ready), (third, third_ready)) if task.done()
    ]
    proving.settle(True)
    await asyncio.gather(second_ready, third_ready)


async def test_a_refusal_of_an_old_token_does_not_renew_the_new_one() -> None:
    auth = CountingAuth()
    old = await used(auth, True)
    await auth.renew(old.header)
    await used(auth, True)
    await auth.renew(old.header)  # a late answer to a request sent with t1
    assert auth.issued == 2


@pytest.mark.parametrize(
    ("body", "access", "expires_in", "refresh"),
    [
        ({"access_token": "a", "expires_in": 60}, "a", 60.0, None),
        ({"auth_token": "a"}, "a", None, None),
        ({"access_token": "a", "expires_in": "3600", "refresh_token": "r"}, "a", 3600.0, "r"),
        ({"access_token": "a", "expires_in": "soon", "refresh_token": ""}, "a", None, None),
        ({"access_token": "a", "expires_in": True}, "a", None, None),
    ],
)
def test_token_responses_are_read_in_every_documented_shape(
    body: object, access: str, expires_in: float | None, refresh: str | None
) -> None:
    """Either access-token key, `expires_in` as a number or a string, refresh optional."""
    assert read_grant(body, url="http://127.0.0.1/t") == Grant(access, expires_in, refresh)
