"""When and how long the FHIR client waits before trying a request again.

The policy only *decides* (with tenacity); the client performs the request. Retried: 429,
502, 503, 504, connection errors and timeouts, for requests that are safe to repeat (GET,
HEAD, PUT, DELETE, conditional create, transaction and batch). A plain POST create is
retried only when the connection was never made, since repeating it could create a
duplicate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import tenacity

__all__ = [
    "PAUSE_STATUSES",
    "RETRY_STATUSES",
    "RequestLimiter",
    "RetryPolicy",
    "RetrySignal",
    "parse_retry_after",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Answers whose ``Retry-After`` pauses every request to the server, not only the one refused.
PAUSE_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class RetrySignal(Exception):
    """Raised inside an attempt to ask for another one; carries the failure to re-raise."""

    def __init__(self, error: Exception, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and backoff for retries.

    ``attempts`` counts the first try; ``max_elapsed`` bounds the total time from the first
    try, counting the next wait; waits grow exponentially from ``initial`` up to
    ``max_backoff`` with random jitter, and a server's ``Retry-After`` wins when present
    (capped by ``max_retry_after``).
    """

    attempts: int = 5
    initial: float = 0.5
    max_backoff: float = 30.0
    max_elapsed: float = 120.0
    max_retry_after: float = 120.0
    jitter: float = 1.0

    def _backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based) when the server gave no
        ``Retry-After``: ``initial * 2**(attempt-1)`` plus up to ``jitter``, capped."""
        # computed here, not with tenacity.wait_exponential_jitter: its ``initial`` is
        # deprecated (a DeprecationWarning, jd/tenacity#629) and the ``multiplier`` that
        # replaces it is missing from the older tenacity 9 releases we also accept
        exponent = min(max(attempt - 1, 0), 64)
        grown = self.initial * 2.0**exponent + random.uniform(0, self.jitter)
        return max(0.0, min(grown, self.max_backoff))

    def _wait(self) -> Callable[[tenacity.RetryCallState], float]:
        def wait(state: tenacity.RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            if isinstance(error, RetrySignal) and error.retry_after is not None:
                return min(error.retry_after, self.max_retry_after)
            return self._backoff(state.attempt_number)

        return wait

    def controller(self, sleep: Callable[[float], Awaitable[None]]) -> tenacity.AsyncRetrying:
        """A tenacity loop for one request, sleeping through ``sleep`` (injected in tests)."""
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(max(1, self.attempts))
            | tenacity.stop_before_delay(self.max_elapsed),
            wait=self._wait(),
            retry=tenacity.retry_if_exception_type(RetrySignal),
            sleep=sleep,
            reraise=True,
        )


class RequestLimiter:
    """One pace for every request a client sends, shared by all concurrent lanes.

    A 429 or 503 with ``Retry-After`` pauses *every* request until the server's wait is
    over (:meth:`pause`), not only the one refused; ``rate`` (requests per second, ``None``
    for unlimited) spaces requests evenly for servers with a quota. ``clock`` (monotonic
    seconds) and ``sleep`` are injected so tests record the waits instead of waiting.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for unlimited)")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self._next_slot = 0.0
        self.waits: int = 0

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (the longest pause wins)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def acquire(self, *, honour_pause: bool = True) -> None:
        """Wait for this request's turn. ``honour_pause`` is False for the request that
        caused the pause: its retry already waited for it."""
        now = self._clock()
        wait = self._paused_until - now if honour_pause else 0.0
        if self.rate is not None:
            slot = max(self._next_slot, now + max(0.0, wait))
            self._next_slot = slot + 1.0 / self.rate
            wait = max(wait, slot - now)
        if wait > 0:
            self.waits += 1
            await self._sleep(wait)
