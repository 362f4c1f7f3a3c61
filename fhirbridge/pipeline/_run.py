"""One pass loop that every driver feeds: evaluate -> commit -> (sweep) -> write.

:meth:`Pipeline.run_pass` is the only pass there is. The poller and ``backfill`` feed it
pages, the notification receiver and the HL7 v2 paths the versions they journalled, and
``plan`` runs it with writes off on a journal of its own. A pass:

1. processes what the caller just journalled (``fresh``), then whatever else is pending
   (work an interrupted run left), in batches;
2. runs the ``feed`` (a poll or an export), processing each page it journals while the
   feed reads the next one;
3. when asked, writes what is planned, then sweeps for overdue Tasks;
4. writes what is planned (unless writes are off).

With :class:`~fhirbridge.pipeline.WorkerLeases` (a worker among several on one journal),
"pending" means pending in the patient lanes the worker leases, fresh versions of other
lanes are left to their holders, and the write stage writes only its lanes' outbox items.
The worker takes its fair share of the lanes again before each batch (a newcomer gets lanes
while a long pass runs); never during the write stage, so a lane's writes never change hands
while they are being made.

Every batch is split into patient lanes, evaluated (lookups prefetched for the whole
batch), and committed in one transaction; a version that raises is dead-lettered and the
pass goes on (:mod:`._evaluate`, :mod:`._commit`). Each pass binds a ``run_id`` to its log
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from fhirbridge.pipeline._commit import Committer
from fhirbridge.pipeline._evaluate import Evaluator
from fhirbridge.pipeline._lanes import lanes
from fhirbridge.pipeline._leases import WorkerLeases
from fhirbridge.pipeline._lookups import Lookups
from fhirbridge.pipeline._stats import RunStats
from fhirbridge.pipeline._sweep import Sweeper
from fhirbridge.pipeline._write import WriteStage
from fhirbridge.store.base import Store
from fhirbridge.values import ResourceVersion

__all__ = ["Feed", "Pipeline", "Sink"]

log = structlog.get_logger(__name__)

#: Where a feed hands each page of versions it journalled.
Sink = Callable[[list[ResourceVersion]], Awaitable[None]]
#: A source run inside a pass (a poll, an export): journals versions, hands them to the sink.
Feed = Callable[[Sink, RunStats], Awaitable[None]]


class Pipeline:
    """The stages of one engine, wired; :meth:`run_pass` runs them."""

    def __init__(
        self,
        *,
        store: Store,
        lookups: Lookups,
        evaluator: Evaluator,
        committer: Committer,
        sweeper: Sweeper,
        write: WriteStage,
        batch: int = 500,
        progress: Callable[[str, RunStats], None] | None = None,
        leases: WorkerLeases | None = None,
    ) -> None:
        self.store = store
        self.lookups = lookups
        self.evaluator = evaluator
        self.committer = committer
        self.sweeper = sweeper
        self.write = write
        self.batch = batch
        self.progress = progress
        self.leases = leases

    async def run_pass(
        self,
        *,
        fresh: Sequence[ResourceVersion] = (),
        feed: Feed | None = None,
        sweep: bool = False,
        write: bool = True,
        stats: RunStats | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
        batch: int | None = None,
    ) -> RunStats:
        """One pass (see the module docstring); returns what it did. ``batch`` overrides
        how many versions are evaluated and committed together."""
        stats = stats if stats is not None else RunStats()
        write = write and self.write.enabled
        with structlog.contextvars.bound_contextvars(run_id=uuid.uuid4().hex[:12]):
            self.lookups.forget()
            requests = self.lookups.requests
            await self.process(fresh, stats, pause=pause, batch=batch)

            if feed is not None:
                await self._fed(feed, stats, pause, batch)
            await self.process(stats=stats, pause=pause, batch=batch)
            if sweep:
                if write:
                    await self.write.write(stats)
                await self.sweeper.sweep(stats)
            if write:
                await self.write.write(stats)
            stats.lookups += self.lookups.requests - requests
            log.info("pass_done", **stats.counts())
        return stats

    async def _fed(
        self,
        feed: Feed,
        stats: RunStats,
        pause: Callable[[], Awaitable[None]] | None,
        batch: int | None,
    ) -> None:
        """Run ``feed``, processing each page while the feed reads the next one (pages are
        processed one at a time, in the order they were journalled). A worker among several
        never holds the feed back: the pages are pending for every lane's holder, and it
        takes up its own lanes' pending versions beside the feed (a poll held back by the
        poller's share of the processing would hold back every worker)."""
        if self.leases is not None:
            await self._fed_beside(feed, stats, pause, batch)
            return
        running: asyncio.Task[RunStats] | None = None

        async def sink(page: list[ResourceVersion]) -> None:
            nonlocal running
            if running is not None:
                await running  # the page before is processed (its failure stops the feed)
            running = asyncio.ensure_future(self.process(page, stats, pause=pause, batch=batch))

        await _feed_then_settle(feed, sink, stats, lambda: running)

    async def _fed_beside(
        self,
        feed: Feed,
        stats: RunStats,
        pause: Callable[[], Awaitable[None]] | None,
        batch: int | None,
    ) -> None:
        """Run ``feed`` while one task processes the worker's pending versions, started
        again whenever a page arrived after it last looked."""
        worker: asyncio.Task[None] | None = None
        again = False

        async def catch_up() -> None:
            nonlocal again
            while True:
                again = False
                await self.process(stats=stats, pause=pause, batch=batch)
                if not again:
                    return

        async def sink(page: list[ResourceVersion]) -> None:
            nonlocal worker, again
            if worker is not None and worker.done():
                worker.result()  # its failure stops the feed
                worker = None
            if worker is None:
                worker = asyncio.ensure_future(catch_up())
            else:
                again = True

        await _feed_then_settle(feed, sink, stats, lambda: worker)

    async def process(
        self,
        versions: Sequence[ResourceVersion] | None = None,
        stats: RunStats | None = None,
        *,
        pause: Callable[[], Awaitable[None]] | None = None,
        batch: int | None = None,
    ) -> RunStats:
        """Evaluate and commit ``versions`` (None: every pending version), ``batch`` at a
        time (default: the pipeline's).

        A worker among several evaluates its lanes' pending versions instead, in arrival
        order: ``versions`` just journalled are among them, after the older versions of the
        same patients that another worker journalled (a poll, a notification) and nobody has
        evaluated yet; the others' lanes wait, pending, for their holders."""
        stats = stats if stats is not None else RunStats()
        size = batch or self.batch
        leases = self.leases
        if versions is not None and (leases is not None and not versions):
            return stats
        if versions is not None and leases is None:
            for start in range(0, len(versions), size):
                await self._batch(versions[start : start + size], stats)
            return stats
        while pending := (self.store.pending(size) if leases is None else self._leased(size)):
            await self._batch(pending, stats)
            if self.progress is not None:
                self.progress("process", stats)
            if pause is not None:
                await pause()
        return stats

    def _leased(self, size: int) -> list[ResourceVersion]:
        """The next batch of a worker: its share of the lanes taken again first (between
        batches nothing of a lane is in flight, so lanes may change hands), then their
        pending versions."""
        assert self.leases is not None
        self.leases.rebalance()
        return self.leases.pending(size)

    async def _batch(self, versions: Sequence[ResourceVersion], stats: RunStats) -> None:
        """One batch: lanes, evaluation, one commit; the careful path after a refusal."""
        if not versions:
            return
        groups = lanes(versions)
        outcomes = await self.evaluator.evaluate(versions, groups)
        lane_of = {index: number for number, group in enumerate(groups) for index in group}
        # a lane whose version raised: its later versions were evaluated as if that one had
        # been recorded; evaluate them again once it is dead-lettered
        again: set[int] = set()
        for group in groups:
            failed = [i for i in group if outcomes[i].error is not None]
            if failed:
                again.update(i for i in group if i > failed[0])
        first = [i for i in range(len(versions)) if i not in again]
        skipped = self.committer.commit(
            [outcomes[i] for i in first], stats, lanes=[lane_of[i] for i in first]
        )
        again.update(first[position] for position in skipped)
        for index in sorted(again):
            outcome = await self.evaluator.evaluate_one(versions[index])
            self.committer.commit([outcome], stats)


async def _feed_then_settle(
    feed: Feed,
    sink: Sink,
    stats: RunStats,
    in_flight: Callable[[], asyncio.Future[Any] | None],
) -> None:
    """Run ``feed`` into ``sink``, then wait for the processing ``in_flight`` (at that
    moment); if the feed fails, cancel that processing instead (what it leaves unprocessed
    stays pending) and raise."""
    try:
        await feed(sink, stats)
    except BaseException:
        running = in_flight()
        if running is not None:
            running.cancel()
            with contextlib.suppress(BaseException):
                await running
        raise
    running = in_flight()
    if running is not None:
        await running
