"""What one worker holds of a shared journal: patient lanes, leadership, outbox items.

Several workers (processes, on one host or many) share a PostgreSQL journal through leases
that end unless renewed (``store.lease_seconds``); a worker that dies, however it dies, stops
renewing and what it held is taken over once its leases run out.

- **Lanes** (:mod:`fhirbridge.store.lanes`): at the start of each pass and before each batch
  it evaluates, when nothing of the lanes is in flight, :meth:`WorkerLeases.rebalance`
  renews its lanes and takes its fair share of the free or expired ones, giving up those
  beyond it for newcomers. The pipeline
  then evaluates only the pending versions of its lanes, and the writer claims only their
  outbox items: one patient's versions and writes are handled by one worker, in order.
- **Leadership**: one worker at a time holds ``poll:<server>:<type>`` for each watched type
  (it polls that type; the others only process) and ``timers:<server>`` (the overdue-Task
  sweep and the duplicate healing).
- **Outbox items** are leased when claimed (:meth:`WorkerLeases.claim`) and released when the
  drain ends.

:meth:`WorkerLeases.keep` renews everything every third of a lease period, for as long as the
worker runs (between passes too), without taking or giving up lanes: lanes move only between
batches, never while the write stage runs, so a lane never changes hands while its holder
still writes for it. A renewal that
finds a lane lost (the worker stalled past its lease, another took over) drops it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog

from fhirbridge.store._writer import Holder
from fhirbridge.store.base import LANES, LEASE_SECONDS, OutboxItem, Store
from fhirbridge.store.lanes import version_lane
from fhirbridge.values import ResourceVersion

__all__ = ["WorkerLeases", "poll_lease_name", "timers_lease_name"]

log = structlog.get_logger(__name__)


def poll_lease_name(server: str, resource_type: str) -> str:
    """The lease of the worker that polls ``resource_type`` on ``server``."""
    return f"poll:{server}:{resource_type}"


def timers_lease_name(server: str) -> str:
    """The lease of the worker that sweeps timers and heals duplicates on ``server``."""
    return f"timers:{server}"


class WorkerLeases:
    """The leases of one worker on ``store`` (see the module docstring).

    ``holder`` names the worker (default: this process, ``host:pid:random``); ``seconds`` is
    how long a lease runs unless renewed; ``lanes`` how many lanes the patients are hashed to
    (every worker of a journal must use the same number).
    """

    def __init__(
        self,
        store: Store,
        *,
        holder: Holder | None = None,
        seconds: float = LEASE_SECONDS,
        lanes: int = LANES,
    ) -> None:
        self.store = store
        self.holder = holder or Holder.here()
        self.seconds = seconds
        self.lanes = lanes
        #: the lanes held now
        self.held: frozenset[int] = frozenset()
        #: the leadership leases held now (``poll:...``, ``timers:...``)
        self.leading: set[str] = set()
        #: outbox items leased to this worker now
        self.items = 0
        #: leases this worker took over after their holder stopped renewing them
        self.takeovers = 0

    @property
    def worker(self) -> str:
        """This worker's id (what the lease rows and the metrics name)."""
        return self.holder.worker

    def holds(self, version: ResourceVersion) -> bool:
        """Whether ``version``'s patient is in one of the lanes held now."""
        return version_lane(version, self.lanes) in self.held

    def mine(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """The versions of the lanes held now, in their order (the others wait, pending, for
        the worker that holds their lane)."""
        return [v for v in versions if self.holds(v)]

    def pending(self, limit: int) -> list[ResourceVersion]:
        """Pending versions of the lanes held now, oldest arrival first."""
        return self.store.pending_in_lanes(self.held, lane_count=self.lanes, limit=limit)

    # -- taking ----------------------------------------------------------------------------
    def _counting(self, before: int) -> None:
        taken = self.store.takeovers("") - before
        if taken > 0:
            self.takeovers += taken
            log.info("leases_taken_over", worker=self.worker, count=taken)

    def rebalance(self) -> frozenset[int]:
        """Renew the lanes and take this worker's fair share (call it between passes, with
        nothing in flight); returns the lanes held."""
        before = self.store.takeovers("")
        previous, self.held = (
            self.held,
            self.store.lease_lanes(self.holder, lanes=self.lanes, seconds=self.seconds),
        )
        self._counting(before)
        if self.held != previous:
            log.info(
                "lanes_leased",
                worker=self.worker,
                lanes=len(self.held),
                gained=len(self.held - previous),
                gave_up=len(previous - self.held),
            )
        return self.held

    def lead(self, name: str) -> bool:
        """Take or renew the leadership lease ``name``; whether this worker holds it."""
        before = self.store.takeovers("")
        if self.store.take_lease(name, self.holder, self.seconds):
            self._counting(before)
            if name not in self.leading:
                log.info("leadership_taken", worker=self.worker, lease=name)
            self.leading.add(name)
            return True
        self.leading.discard(name)
        return False

    def claim(self, limit: int) -> list[OutboxItem]:
        """Lease up to ``limit`` pending outbox items of the lanes held now."""
        items = self.store.claim_outbox(
            limit, holder=self.holder, seconds=self.seconds, lanes=self.held, lane_count=self.lanes
        )
        self.items += len(items)
        return items

    def done_writing(self) -> None:
        """Give up the outbox leases (the drain ended: what it did not finish returns to
        the lane's holder, this worker included, at once)."""
        self.store.release_outbox(self.holder)
        self.items = 0

    # -- keeping ---------------------------------------------------------------------------
    def renew(self) -> None:
        """Extend every lease this worker holds; drop what was lost."""
        held = self.store.renew_lanes(self.holder, self.seconds)
        lost = self.held - held
        if lost:
            log.warning("lanes_lost", worker=self.worker, lanes=sorted(lost))
        self.held = self.held & held
        for name in sorted(self.leading):
            if not self.store.take_lease(name, self.holder, self.seconds):
                self.leading.discard(name)
                log.warning("leadership_lost", worker=self.worker, lease=name)
        self.items = self.store.renew_outbox(self.holder, self.seconds)

    async def keep(self, stop: asyncio.Event, *, every: float | None = None) -> None:
        """Renew every ``every`` seconds (a third of a lease period) until ``stop`` is set. A
        failed renewal (the journal unreachable) is logged and tried again."""
        period = every if every is not None else self.seconds / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            if stop.is_set():
                return
            try:
                self.renew()
            except Exception as exc:  # the next round tries again; passes fail meanwhile
                log.warning("lease_renewal_failed", worker=self.worker, error=type(exc).__name__)

    def release(self) -> None:
        """Give up everything (a clean stop): the others take it over at once."""
        for name in sorted(self.leading):
            self.store.release_lease(name, self.holder)
        self.leading.clear()
        self.store.release_lanes(self.holder)
        self.held = frozenset()
        self.items = 0
        log.info("leases_released", worker=self.worker)
