"""Patient lanes: the outbox drained continuously, patients concurrently, each in order.

Pending items are claimed in batches and grouped into units (:mod:`.units`); each patient's
units wait in that patient's lane and are written one after the other, while up to
``concurrency`` lanes write at once. The outbox is topped up as lanes make progress, so one
slow patient never holds back a whole batch. Items already in a lane are not claimed twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from fhirbridge.store.base import OutboxItem
from fhirbridge.writeback.units import WriteUnit, write_units

__all__ = ["Claim", "Lanes"]

#: Takes up to ``n`` pending outbox items that are not being written.
Claim = Callable[[int], list[OutboxItem]]
#: Writes one unit.
Write = Callable[[WriteUnit], Awaitable[None]]


class Lanes:
    """Runs write units in per-patient lanes, ``concurrency`` lanes at a time."""

    def __init__(self, write: Write, *, concurrency: int, batch: int = 200) -> None:
        self._write = write
        self.concurrency = max(1, concurrency)
        self.batch = max(1, batch)
        self._queues: dict[str, deque[WriteUnit]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._inflight: set[int] = set()
        self._waiting = 0
        self._failures: list[BaseException] = []
        self._progress = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)

    async def run(self, claim: Claim) -> None:
        """Drain until nothing is pending; a failure stops new work, lets the lanes already
        writing finish their unit, and is raised (its items stay pending)."""
        try:
            while not self._failures:
                fresh: list[OutboxItem] = []
                if self._waiting < self.concurrency * 4:
                    limit = len(self._inflight) + self.batch
                    fresh = [i for i in claim(limit) if i.id not in self._inflight]
                if not fresh and not self._running:
                    break
                self._enqueue(fresh)
                self._progress.clear()
                await self._progress.wait()
        finally:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._failures:
            raise self._failures[0]

    def _enqueue(self, items: list[OutboxItem]) -> None:
        for unit in write_units(items):
            self._inflight.update(item.id for item in unit.items)
            key = unit.patient or f"unit:{unit.transition_key}"
            self._queues.setdefault(key, deque()).append(unit)
            self._waiting += 1
            if key not in self._running:
                self._running[key] = asyncio.create_task(self._lane(key))

    async def _lane(self, key: str) -> None:
        queue = self._queues[key]
        try:
            async with self._slots:
                while queue and not self._failures:
                    unit = queue[0]
                    try:
                        await self._write(unit)
                    except BaseException as exc:  # re-raised by run()
                        self._failures.append(exc)
                    finally:
                        queue.popleft()
                        self._waiting -= 1
                        self._inflight.difference_update(item.id for item in unit.items)
                        self._progress.set()
        finally:
            del self._running[key]
            del self._queues[key]
            self._progress.set()
