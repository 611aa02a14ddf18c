"""TokenSource: caching, early background refresh, single flight, failures and backoff.

Time is a settable clock, and each fetch is held on an `asyncio.Event` until the test releases
it, so "did the caller wait for the refresh?" is decided by ordering, never by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aisix.errors import UpstreamAuthError, UpstreamConnectionError
from aisix.providers.tokens import Token, TokenSource, TokenUnavailable

pytestmark = pytest.mark.anyio

SECRET = "client-secret-never-shown"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A scripted token endpoint: each fetch waits for `release()` and then succeeds with a
    new token valid `lifetime` seconds, or raises the next scripted error."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0, hold: bool = False) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.hold = hold
        self.calls = 0
        self.errors: list[BaseException] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self) -> Token:
        self.calls += 1
        self.entered.set()
        if self.hold:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return Token(f"token-{self.calls}", self.clock() + self.lifetime)

    def release(self) -> None:
        self.gate.set()


def source(issuer: Issuer, **kwargs: Any) -> TokenSource:
    return TokenSource(issuer, clock=issuer.clock, **kwargs)


async def settle() -> None:
    """Let background tasks run to their next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_token_is_fetched_once_and_cached_until_the_refresh_window() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer)
    assert await tokens.get() == "token-1"
    clock.now += 3600 - 61  # one second before the refresh window
    assert await tokens.get() == "token-1"
    await settle()
    assert issuer.calls == 1
    assert "token-1" not in repr(Token("token-1", 0.0))


async def test_inside_the_last_60s_callers_keep_the_token_while_it_refreshes_behind() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer)
    assert await tokens.get() == "token-1"
    issuer.hold = True
    clock.now += 3600 - 59
    # the refresh is held open, so a caller that waited for it would never return here
    assert await asyncio.wait_for(tokens.get(), 5) == "token-1"
    await issuer.entered.wait()
    assert await tokens.get() == "token-1"  # still the old one, no second refresh
    assert issuer.calls == 2
    issuer.release()
    await settle()
    assert await tokens.get() == "token-2"
    assert issuer.calls == 2


async def test_fifty_concurrent_callers_share_one_fetch() -> None:
    clock = Clock()
    issuer = Issuer(clock, hold=True)
    tokens = source(issuer)
    callers = [asyncio.create_task(tokens.get()) for _ in range(50)]
    await issuer.entered.wait()
    await settle()
    assert not any(task.done() for task in callers)
    issuer.release()
    assert await asyncio.gather(*callers) == ["token-1"] * 50
    assert issuer.calls == 1


async def test_fifty_callers_on_an_expired_token_share_one_refresh() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer)
    await tokens.get()
    clock.now += 3601
    issuer.hold = True
    callers = [asyncio.create_task(tokens.get()) for _ in range(50)]
    await issuer.entered.wait()
    await settle()
    issuer.release()
    assert set(await asyncio.gather(*callers)) == {"token-2"}
    assert issuer.calls == 2


async def test_a_failed_first_fetch_fails_every_waiter_then_backs_off() -> None:
    clock = Clock()
    issuer = Issuer(clock, hold=True)
    issuer.errors = [TokenUnavailable("upstream rejected the provider credentials (401)")]
    tokens = source(issuer, backoff_initial_s=2.0, backoff_max_s=5.0)
    callers = [asyncio.create_task(tokens.get()) for _ in range(10)]
    await issuer.entered.wait()
    issuer.release()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, TokenUnavailable) for r in results)
    assert issuer.calls == 1
    # within the backoff: fail fast, no new request to the identity provider
    clock.now += 1.9
    with pytest.raises(TokenUnavailable, match=r"credentials \(401\)"):
        await tokens.get()
    assert issuer.calls == 1
    clock.now += 0.2
    assert await tokens.get() == "token-2"
    assert issuer.calls == 2


async def test_backoff_doubles_up_to_its_cap_and_resets_after_success() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer, backoff_initial_s=1.0, backoff_max_s=3.0)
    issuer.errors = [TokenUnavailable("no") for _ in range(4)]
    with pytest.raises(TokenUnavailable):
        await tokens.get()
    waits = []
    for _ in range(3):
        start, calls = clock.now, issuer.calls
        while issuer.calls == calls:  # step the clock until a new fetch is allowed
            clock.now += 0.25
            with pytest.raises(TokenUnavailable):
                await tokens.get()
        waits.append(clock.now - start)
    assert waits == [1.0, 2.0, 3.0]
    assert issuer.calls == 4
    clock.now += 3.0
    assert await tokens.get() == "token-5"
    clock.now += 3601  # expired; the next failure backs off from the initial delay again
    issuer.errors = [TokenUnavailable("no")]
    with pytest.raises(TokenUnavailable):
        await tokens.get()
    clock.now += 1.0
    assert await tokens.get() == "token-7"


async def test_a_failed_background_refresh_keeps_the_valid_token_and_retries() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer, backoff_initial_s=10.0)
    assert await tokens.get() == "token-1"
    clock.now += 3600 - 30
    issuer.errors = [UpstreamConnectionError("could not connect to the upstream")]
    assert await tokens.get() == "token-1"
    await settle()
    assert issuer.calls == 2
    clock.now += 5  # within the backoff: no new refresh, the old token serves
    assert await tokens.get() == "token-1"
    await settle()
    assert issuer.calls == 2
    clock.now += 6
    assert await tokens.get() == "token-1"  # this call starts the retry in the background
    await settle()
    assert issuer.calls == 3
    assert await tokens.get() == "token-3"


async def test_without_a_valid_token_the_last_failure_is_raised() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=100)
    tokens = source(issuer, backoff_initial_s=1000.0)
    await tokens.get()
    clock.now += 70
    issuer.errors = [UpstreamConnectionError("connect to 127.0.0.1:1 failed")]
    await tokens.get()
    await settle()
    clock.now += 31  # expired, and the retry is still backing off
    with pytest.raises(TokenUnavailable) as caught:
        await tokens.get()
    err = caught.value
    assert isinstance(err, UpstreamAuthError)
    assert err.status == 502 and err.type == "upstream_auth_error"
    assert err.retryable is True  # a transport fault: another target may serve
    assert err.message == "could not obtain an access token: connect to 127.0.0.1:1 failed"


async def test_unexpected_fetch_errors_are_wrapped_without_their_text() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    issuer.errors = [ValueError(f"bad response containing {SECRET}")]
    tokens = source(issuer)
    with pytest.raises(TokenUnavailable) as caught:
        await tokens.get()
    assert SECRET not in str(caught.value)
    assert caught.value.message == "could not obtain an access token (ValueError)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(("value", "lifetime"), [("", 3600.0), ("tok", 0.0), ("tok", -5.0)])
async def test_unusable_tokens_are_failures(value: str, lifetime: float) -> None:
    clock = Clock()

    async def fetch() -> Token:
        return Token(value, clock() + lifetime)

    tokens = TokenSource(fetch, clock=clock)
    with pytest.raises(TokenUnavailable, match="unusable token"):
        await tokens.get()


async def test_short_lived_tokens_refresh_at_half_their_lifetime() -> None:
    clock = Clock()
    issuer = Issuer(clock, lifetime=20)
    tokens = source(issuer)
    await tokens.get()
    clock.now += 9.9
    await tokens.get()
    await settle()
    assert issuer.calls == 1
    clock.now += 0.2
    assert await tokens.get() == "token-1"
    await settle()
    assert issuer.calls == 2
    assert await tokens.get() == "token-2"


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh() -> None:
    clock = Clock()
    issuer = Issuer(clock, hold=True)
    tokens = source(issuer)
    first = asyncio.create_task(tokens.get())
    second = asyncio.create_task(tokens.get())
    await issuer.entered.wait()
    first.cancel()
    await settle()
    issuer.release()
    assert await second == "token-1"
    assert first.cancelled()
    assert issuer.calls == 1


def test_a_source_survives_its_event_loop() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    tokens = source(issuer)

    async def run(step: Callable[[], Awaitable[str]]) -> str:
        issuer.gate = asyncio.Event()
        issuer.entered = asyncio.Event()
        return await step()

    assert asyncio.run(run(tokens.get)) == "token-1"
    clock.now += 3600 - 10
    issuer.hold = True

    async def start_refresh_and_leave() -> str:
        value = await tokens.get()  # starts a background refresh that never finishes here
        await issuer.entered.wait()
        return value

    assert asyncio.run(run(start_refresh_and_leave)) == "token-1"
    issuer.hold = False
    assert asyncio.run(run(tokens.get)) == "token-1"  # old loop's task dropped, a new refresh
    assert issuer.calls == 3
