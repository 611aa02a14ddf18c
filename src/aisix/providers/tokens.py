"""Minted upstream credentials (Azure Entra ID, Vertex service accounts): one cached token.

`TokenSource(fetch)` holds the token a provider's `authorize` step puts on a request. `get()`
answers from the cache; from 60 s before expiry (half the lifetime for short-lived tokens) a
refresh runs in the background while callers keep the still-valid token, so the request path
only waits when no valid token exists. Concurrent callers share one refresh (single flight);
a failed refresh keeps a still-valid token and is retried after an exponential backoff; with
no valid token the failure is raised as `TokenUnavailable` (an `UpstreamAuthError`: 502
`upstream_auth_error`), whose message never carries the credential or the endpoint's body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aisix.errors import GatewayError, UpstreamAuthError

__all__ = ["Token", "TokenSource", "TokenUnavailable"]

#: refresh this long before a token expires (contract §7.2)
REFRESH_EARLY_S = 60.0


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and when it stops being valid (wall-clock seconds, like `time.time()`)."""

    value: str = field(repr=False)
    expires_at: float


class TokenUnavailable(UpstreamAuthError):
    """No valid token could be obtained for an upstream."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        #: a transient cause (token endpoint unreachable, 5xx): another target may serve
        self.retryable = retryable


class TokenSource:
    """One credential's token, cached and refreshed off the request path (single flight)."""

    __slots__ = (
        "_backoff",
        "_backoff_initial",
        "_backoff_max",
        "_clock",
        "_early",
        "_failure",
        "_fetch",
        "_refresh_at",
        "_retry_at",
        "_task",
        "_token",
        "fetches",
    )

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Token]],
        *,
        refresh_early_s: float = REFRESH_EARLY_S,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._early = refresh_early_s
        self._backoff_initial = self._backoff = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._clock = clock
        self._token: Token | None = None
        self._refresh_at = 0.0
        #: after a failure, no new fetch starts before this time
        self._retry_at = 0.0
        self._failure: TokenUnavailable | None = None
        self._task: asyncio.Task[Token] | None = None
        #: fetches started (for tests and diagnostics)
        self.fetches = 0

    async def get(self) -> str:
        """A valid token; waits only when none is cached (then for the shared refresh)."""
        now = self._clock()
        token = self._token
        task = self._current_task()
        if token is not None and now < token.expires_at:
            if task is None and now >= self._refresh_at and now >= self._retry_at:
                self._start()  # in the background: this caller keeps the valid token
            return token.value
        if task is None:
            failure = self._failure
            if failure is not None and now < self._retry_at:
                raise TokenUnavailable(failure.message, retryable=failure.retryable)
            task = self._start()
        # shield: a caller that goes away must not cancel the refresh the others wait for
        fresh = await asyncio.shield(task)
        return fresh.value

    def _current_task(self) -> asyncio.Task[Token] | None:
        task = self._task
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            self._task = task = None  # left over from an event loop that is gone
        return task

    def _start(self) -> asyncio.Task[Token]:
        self.fetches += 1
        task = asyncio.get_running_loop().create_task(self._refresh())
        task.add_done_callback(_retrieve)
        self._task = task
        return task

    async def _refresh(self) -> Token:
        try:
            try:
                token = await self._fetch()
            except GatewayError as err:
                raise self._failed(_as_unavailable(err)) from None
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a fetch bug or library error: its text may hold secrets
                name = type(err).__name__
                failure = TokenUnavailable(f"could not obtain an access token ({name})")
                raise self._failed(failure) from None
            now = self._clock()
            if not token.value or token.expires_at <= now:
                unusable = TokenUnavailable("the token endpoint returned an unusable token")
                raise self._failed(unusable)
            self._token = token
            self._refresh_at = token.expires_at - min(self._early, (token.expires_at - now) / 2)
            self._failure = None
            self._retry_at = 0.0
            self._backoff = self._backoff_initial
            return token
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _failed(self, failure: TokenUnavailable) -> TokenUnavailable:
        self._failure = failure
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        return failure


def _as_unavailable(err: GatewayError) -> TokenUnavailable:
    if isinstance(err, TokenUnavailable):
        return err
    return TokenUnavailable(
        f"could not obtain an access token: {err.message}", retryable=err.retryable
    )


def _retrieve(task: asyncio.Task[Token]) -> None:
    """Mark a background refresh's failure as seen (it is kept in `_failure`)."""
    if not task.cancelled():
        task.exception()
