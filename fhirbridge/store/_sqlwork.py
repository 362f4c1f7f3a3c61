"""Who may write, on SQL stores: the writer lock, leases, lanes, outbox leases, event counters.

:class:`SqlWork` adds to :class:`~fhirbridge.store._sqlbase.SqlStore` what lets one process
(SQLite) or several workers (PostgreSQL) share a journal safely. A connector supplies the
writer lock itself (:meth:`SqlWork._lock_writer`, :meth:`SqlWork._unlock_writer`: something
that ends with its process) and how a list of integers is bound (:meth:`SqlWork._ints`);
everything else is the named queries of ``sql/<dialect>/queries.sql``.

Lease times come from the store's clock: the hosts of several workers need synchronised
clocks (NTP), as any lease does.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from fhirbridge.store import _codec
from fhirbridge.store._sqlbase import Cursor, SqlStore, translated
from fhirbridge.store._writer import Holder, busy, writer_lease_name
from fhirbridge.store.base import LANES, LEASE_SECONDS, EventCount, OutboxItem
from fhirbridge.values import ResourceVersion

__all__ = ["SqlWork", "lane_name"]

_C = TypeVar("_C", bound=Cursor)

log = structlog.get_logger(__name__)

_LANE = "lane:"


def lane_name(lane: int) -> str:
    """The ``lease`` row of a lane (``lane:0007``: names sort as the numbers do)."""
    return f"{_LANE}{lane:04d}"


class SqlWork(SqlStore[_C]):
    """The writer lock and the leases of the store port, on SQL."""

    # -- what each connector supplies ------------------------------------------------------
    @abstractmethod
    def _lock_writer(self, server: str) -> bool:
        """Take the writer lock for ``server`` without waiting; False when another holds it."""

    @abstractmethod
    def _unlock_writer(self, server: str) -> None:
        """Release the writer lock for ``server``."""

    @staticmethod
    @abstractmethod
    def _ints(values: Iterable[int]) -> Any:
        """A list of integers as the dialect binds it."""

    # -- helpers ---------------------------------------------------------------------------
    def _holder_params(self, name: str, holder: Holder) -> dict[str, Any]:
        return {
            "name": name,
            "holder": holder.worker,
            "host": holder.host,
            "pid": holder.pid,
            "command": holder.command,
        }

    def _later(self, seconds: float) -> tuple[datetime | str, datetime | str]:
        """Now and now + ``seconds``, as the dialect binds them."""
        now = _codec.utc(self._clock())
        return self._stamp(now), self._stamp(now + timedelta(seconds=seconds))

    # -- the schema ------------------------------------------------------------------------
    @translated
    def schema_version(self) -> int:
        """The number of the latest migration applied (0 before ``migrate``)."""
        if not int(self._read("has_schema_version", {})[0][0]):
            return 0
        return int(self._read("schema_version", {})[0][0])

    # -- one writer ------------------------------------------------------------------------
    @contextmanager
    def acquire_writer(self, server: str, holder: Holder | None = None) -> Iterator[Holder]:
        """Hold the writer lock for ``server`` while the block runs (see the Store port)."""
        holder = holder or Holder.here(clock=self._clock)
        if not self._translated_lock(server):
            raise busy(server, self.writer(server))
        try:
            previous = self.writer(server)
            if previous is not None:  # its process ended without releasing: it died
                log.warning(
                    "journal_writer_taken_over",
                    server=server,
                    previous_host=previous.host,
                    previous_pid=previous.pid,
                    previous_since=previous.since.isoformat(),
                )
            self._record_writer(server, holder)
        except BaseException:
            self._translated_unlock(server)
            raise
        try:
            yield holder
        finally:
            try:
                self.release_lease(writer_lease_name(server), holder)
            finally:
                self._translated_unlock(server)

    @translated
    def _translated_lock(self, server: str) -> bool:
        return self._lock_writer(server)

    @translated
    def _translated_unlock(self, server: str) -> None:
        self._unlock_writer(server)

    @translated
    def _record_writer(self, server: str, holder: Holder) -> None:
        params = {**self._holder_params(writer_lease_name(server), holder)}
        params["now"] = self._stamp(holder.since)
        with self._write(durable=True) as cur:
            cur.execute(self._queries["hold_lease"], params)

    @translated
    def writer(self, server: str) -> Holder | None:
        """Who holds (or last held) the writer lock for ``server``, as recorded."""
        rows = self._read("lease", {"name": writer_lease_name(server)})
        if not rows or not rows[0][0]:  # never held, or released (holder '')
            return None
        worker, host, pid, command, acquired_at, _expires, _takeovers = rows[0]
        since = _codec.from_iso(acquired_at) if isinstance(acquired_at, str) else acquired_at
        return Holder(worker=worker, host=host, pid=int(pid), command=command, since=since)

    # -- leases ----------------------------------------------------------------------------
    @translated
    def take_lease(self, name: str, holder: Holder, seconds: float = LEASE_SECONDS) -> bool:
        """Take or renew the lease ``name``; False while another holder's lease runs."""
        now, until = self._later(seconds)
        params = {**self._holder_params(name, holder), "now": now, "until": until}
        with self._write() as cur:
            cur.execute(self._queries["take_lease"], params)
            return cur.rowcount == 1

    @translated
    def release_lease(self, name: str, holder: Holder) -> None:
        """Give the lease up if ``holder`` has it."""
        with self._write() as cur:
            cur.execute(self._queries["release_lease"], {"name": name, "holder": holder.worker})

    @translated
    def lease_lanes(
        self, holder: Holder, *, lanes: int = LANES, seconds: float = LEASE_SECONDS
    ) -> frozenset[int]:
        """Renew this worker's lanes and take its fair share of the free or expired ones."""
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        now, until = self._later(seconds)
        who = self._holder_params("", holder)
        with self._write() as cur:
            cur.execute(self._queries["see_worker"], {**who, "now": now, "until": until})
            cur.execute(self._queries["live_workers"], {"now": now})
            share = math.ceil(lanes / max(1, int(cur.fetchone()[0])))
            prefix = {"holder": holder.worker, "prefix": _LANE, "now": now}
            cur.execute(self._queries["leases_held"], prefix)
            mine = [int(name[len(_LANE) :]) for (name,) in cur.fetchall()]
            mine = [lane for lane in mine if lane < lanes]
            for lane in mine[share:]:  # more than a fair share: leave them to newcomers
                cur.execute(
                    self._queries["release_lease"],
                    {"name": lane_name(lane), "holder": holder.worker},
                )
            held = set(mine[:share])
            cur.execute(self._queries["leases_of_others"], prefix)
            taken = {int(name[len(_LANE) :]) for (name,) in cur.fetchall()}
            wanted = sorted(held) + [n for n in range(lanes) if n not in held and n not in taken]
            held = set()
            for lane in wanted:
                if len(held) >= share:
                    break
                params = {**who, "name": lane_name(lane), "now": now, "until": until}
                cur.execute(self._queries["take_lease"], params)
                if cur.rowcount == 1:
                    held.add(lane)
            return frozenset(held)

    @translated
    def renew_lanes(self, holder: Holder, seconds: float = LEASE_SECONDS) -> frozenset[int]:
        """Extend the worker's lane leases that still run, taking none and giving none up."""
        now, until = self._later(seconds)
        who = self._holder_params("", holder)
        params = {"holder": holder.worker, "prefix": _LANE, "now": now, "until": until}
        with self._write() as cur:
            cur.execute(self._queries["see_worker"], {**who, "now": now, "until": until})
            cur.execute(self._queries["renew_leases"], params)
            return frozenset(int(name[len(_LANE) :]) for (name,) in cur.fetchall())

    @translated
    def release_lanes(self, holder: Holder) -> None:
        """Give up the worker's lanes and outbox leases, and forget the worker."""
        now = self._now()
        with self._write() as cur:
            cur.execute(self._queries["release_leases"], {"holder": holder.worker, "prefix": _LANE})
            cur.execute(self._queries["release_outbox"], {"holder": holder.worker})
            cur.execute(self._queries["retire_worker"], {"holder": holder.worker, "now": now})

    @translated
    def takeovers(self, prefix: str = _LANE) -> int:
        """How often leases whose names start with ``prefix`` were taken over after expiry."""
        return int(self._read("lease_takeovers", {"prefix": prefix})[0][0])

    @translated
    def pending_in_lanes(
        self, lanes: Iterable[int], *, lane_count: int = LANES, limit: int = 500
    ) -> list[ResourceVersion]:
        """Pending versions of the patients in ``lanes``, oldest arrival first."""
        chosen = sorted(set(lanes))
        if not chosen:
            return []
        params = {"lanes": self._ints(chosen), "lane_count": lane_count, "limit": max(0, limit)}
        return [_codec.version_from_row(row) for row in self._read("pending_in_lanes", params)]

    # -- outbox leases ---------------------------------------------------------------------
    def _lease_outbox(
        self, limit: int, holder: Holder, seconds: float, lanes: Iterable[int] | None, count: int
    ) -> list[OutboxItem]:
        now, until = self._later(seconds)
        chosen = None if lanes is None else sorted(set(lanes))
        if chosen == []:
            return []
        params = {
            "holder": holder.worker,
            "now": now,
            "until": until,
            "limit": max(0, limit),
            "lanes": None if chosen is None else self._ints(chosen),
            "lane_count": count,
        }
        with self._write() as cur:
            cur.execute(self._queries["lease_outbox"], params)
            items = [_codec.outbox_from_row(row) for row in cur.fetchall()]
        return sorted(items, key=lambda item: item.id)

    @translated
    def claim_outbox(
        self,
        limit: int = 50,
        *,
        holder: Holder | None = None,
        seconds: float = LEASE_SECONDS,
        lanes: Iterable[int] | None = None,
        lane_count: int = LANES,
    ) -> list[OutboxItem]:
        """Pending items, oldest first; leased to ``holder`` for ``seconds`` when given (of
        the patients in ``lanes`` only, when given)."""
        if holder is not None:
            return self._lease_outbox(limit, holder, seconds, lanes, lane_count)
        return self._claim_unleased(limit)

    def _claim_unleased(self, limit: int) -> list[OutboxItem]:
        rows = self._read("claim_outbox", {"limit": max(0, limit)})
        return [_codec.outbox_from_row(row) for row in rows]

    @translated
    def renew_outbox(self, holder: Holder, seconds: float = LEASE_SECONDS) -> int:
        """Extend the leases of the outbox items ``holder`` has claimed; returns how many."""
        now, until = self._later(seconds)
        with self._write() as cur:
            params = {"holder": holder.worker, "now": now, "until": until}
            cur.execute(self._queries["renew_outbox"], params)
            return cur.rowcount

    @translated
    def release_outbox(self, holder: Holder) -> int:
        """Give up ``holder``'s outbox leases; returns how many."""
        with self._write() as cur:
            cur.execute(self._queries["release_outbox"], {"holder": holder.worker})
            return cur.rowcount

    @translated
    def leased_outbox(self) -> int:
        """How many pending outbox items are under a lease that still runs."""
        return int(self._read("leased_outbox", {"now": self._now()})[0][0])

    # -- subscription event numbers --------------------------------------------------------
    @translated
    def record_events(
        self,
        server: str,
        subscription: str,
        numbers: Iterable[int],
        *,
        highest: int | None = None,
        through: int | None = None,
    ) -> EventCount:
        """Record event numbers received for a subscription, atomically across receivers."""
        key = {"server": server, "subscription": subscription}
        now = self._now()
        q = self._queries
        with self._write(durable=True) as cur:
            cur.execute(q["open_counter"], {**key, "now": now})
            cur.execute(q["counter"], key)  # PostgreSQL locks the row here
            contiguous, top = (int(n) for n in cur.fetchone())
            duplicates = 0
            for number in numbers:
                top = max(top, number)
                if number <= contiguous:
                    duplicates += 1
                    continue
                cur.execute(q["insert_event"], {**key, "number": number})
                duplicates += 1 - cur.rowcount
            if highest is not None:
                top = max(top, highest)
            if through is not None and through > contiguous:
                contiguous = through
            cur.execute(q["events_above"], {**key, "contiguous": contiguous})
            for (number,) in cur.fetchall():
                if int(number) != contiguous + 1:
                    break
                contiguous += 1
            top = max(top, contiguous)
            cur.execute(q["drop_events"], {**key, "contiguous": contiguous})
            params = {**key, "contiguous": contiguous, "highest": top, "now": now}
            cur.execute(q["set_counter"], params)
        return EventCount(contiguous=contiguous, highest=top, duplicates=duplicates)
