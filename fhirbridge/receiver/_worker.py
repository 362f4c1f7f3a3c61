"""The receiver's background worker: process what was journalled, write it back, catch up.

Requests only journal and wake the worker (``kick``); the worker runs passes one at a time
under a lock, so a burst of notifications coalesces into few passes. A pass is: catch up
first when asked (poll the server since the watermark, for an empty notification, a gap in
event numbers, a missed heartbeat, a subscription in error, or the periodic poll; then the
overdue-Task sweep when it is due), process every pending version, then drain the outbox:
the engine's one pass loop (``Bridge.run_pass``), in batches of ``batch`` versions with a
yield between, and ``defer_delay`` seconds between while ``defer()`` says requests are
waiting, so acknowledgements keep flowing while a long pass runs. A version that cannot be
processed is dead-lettered and the pass goes on; a pass that fails (the server or the
journal) is retried after ``retry_delay``; pending versions and outbox items stay durable
in the journal meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from fhirbridge.engine import Bridge
from fhirbridge.pipeline import RunStats, Sink

__all__ = ["Worker"]

log = structlog.get_logger(__name__)


class Worker:
    """Runs processing and catch-up passes for one bridge, one at a time."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        batch: int = 100,
        retry_delay: float = 5.0,
        on_pass: Callable[[float, RunStats], None] | None = None,
        defer: Callable[[], bool] | None = None,
        defer_delay: float = 0.002,
    ) -> None:
        self.bridge = bridge
        self.defer = defer
        self.defer_delay = defer_delay
        self.batch = batch
        self.retry_delay = retry_delay
        self.on_pass = on_pass
        self.lock = asyncio.Lock()
        self.passes = 0
        self._wake = asyncio.Event()
        self._catch_up: list[str] = []
        self._after_catch_up: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def kick(self) -> None:
        """Ask for a pass (coalesced with any pass already asked for)."""
        self._wake.set()

    def request_catch_up(self, reason: str, then: Callable[[], None] | None = None) -> None:
        """Ask for a poll since the watermark before the next processing pass; ``then`` is
        called once that poll has journalled what it read."""
        self._catch_up.append(reason)
        if then is not None:
            self._after_catch_up.append(then)
        self.kick()

    @property
    def busy(self) -> bool:
        """Whether a pass is running or asked for."""
        return self._wake.is_set() or self.lock.locked()

    def start(self) -> None:
        """Start the loop (and a first pass for what an earlier run left pending)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="fhirbridge-receiver-worker")
            self.kick()

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Finish the pass in progress and one more for what is pending, then stop."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        self.kick()
        try:
            await asyncio.wait_for(asyncio.shield(task), drain_seconds)
        except TimeoutError:
            log.warning("receiver_stop_timeout", seconds=drain_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.run_pass()
            except Exception as exc:  # the journal keeps the work; try again later
                log.warning("receiver_pass_failed", error=type(exc).__name__, detail=str(exc))
                if self._stopping:
                    return
                await asyncio.sleep(self.retry_delay)
                self.kick()
                continue
            if self._stopping and not self._wake.is_set():
                return

    async def run_pass(self) -> RunStats:
        """One pass: catch up if asked, process every pending version, drain the outbox."""
        async with self.lock:
            started = time.perf_counter()
            bridge = self.bridge
            reasons, self._catch_up = self._catch_up, []
            callbacks, self._after_catch_up = self._after_catch_up, []
            feed = None
            if reasons and bridge.client is not None:

                async def catch_up(sink: Sink, stats: RunStats) -> None:
                    try:
                        polled = await bridge.poller(sink=sink).poll(bridge.default_since())
                    except BaseException:
                        self._catch_up[:0], self._after_catch_up[:0] = reasons, callbacks
                        raise
                    stats.read, stats.new = polled.read, polled.new
                    log.info("receiver_caught_up", reasons=sorted(set(reasons)), new=polled.new)
                    for callback in callbacks:
                        callback()

                feed = catch_up
            elif reasons:
                log.warning("receiver_cannot_catch_up", reasons=sorted(set(reasons)))

            async def pause() -> None:
                # acknowledgements first: while requests wait, leave them the loop
                deferring = self.defer is not None and self.defer()
                await asyncio.sleep(self.defer_delay if deferring else 0)

            # timers (overdue Tasks) ride on the catch-up polls
            sweep = feed is not None and bridge.sweep_due()
            stats = await bridge.run_pass(feed=feed, sweep=sweep, pause=pause, batch=self.batch)
            self.passes += 1
            if self.on_pass is not None:
                self.on_pass(time.perf_counter() - started, stats)
            return stats
