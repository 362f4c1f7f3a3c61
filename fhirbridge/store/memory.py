"""``MemoryStore``: the journal in dicts, for fast unit tests and for users' own tests.

It passes the same contract tests as the SQLite and PostgreSQL stores, and goes through the
same codec, so what comes back (facts, payloads, timestamps in UTC) looks the same. It keeps
nothing after ``close``; using it afterwards raises :class:`~fhirbridge.errors.StoreError`
as a closed database would.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from fhirbridge.errors import StoreError
from fhirbridge.store import _codec
from fhirbridge.store._sql import migrations
from fhirbridge.store._writer import Holder, busy, writer_lease_name
from fhirbridge.store.base import (
    LANES,
    LEASE_SECONDS,
    DeadLetter,
    EventCount,
    OutboxItem,
    Stay,
    StoredTransition,
)
from fhirbridge.values import ResourceVersion, Transition

__all__ = ["MemoryStore"]

_VersionKey = tuple[str, str, str, str]
_EARLIEST = datetime.min.replace(tzinfo=UTC)
#: The attributes that hold the journal (what a failed batch puts back).
_STATE = (
    "_versions",
    "_pending",
    "_snapshots",
    "_encounters",
    "_transitions",
    "_watermarks",
    "_outbox",
    "_outbox_keys",
    "_dead",
    "_audit",
    "_leases",
    "_workers",
    "_counters",
)


@dataclass(slots=True)
class _Lease:
    """A ``lease`` row: who holds it (None: released), until when (None: held by a lock),
    how often it was taken over after its holder stopped renewing it."""

    holder: Holder | None
    expires: datetime | None
    takeovers: int = 0


@dataclass(slots=True)
class _Counter:
    """A ``subscription_counter`` row and the numbers received above ``contiguous``."""

    contiguous: int = 0
    highest: int = 0
    above: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Outbox:
    """An outbox row: the same columns as the SQL tables (payload and result as JSON text)."""

    id: int
    key: str
    kind: str
    payload: str
    state: str = "pending"
    attempts: int = 0
    last_error: str = ""
    result: str = "{}"
    claimed_by: str | None = None
    lease_until: datetime | None = None
    lane_key: int = 0

    def item(self) -> OutboxItem:
        return _codec.outbox_from_row(
            (
                self.id,
                self.key,
                self.kind,
                self.payload,
                self.state,
                self.attempts,
                self.last_error,
                self.result,
            )
        )


class MemoryStore:
    """The :class:`~fhirbridge.store.base.Store` port held in memory (nothing is durable)."""

    supports_workers = False

    def __init__(self, *, clock: _codec.Clock = _codec.system_clock) -> None:
        self._clock = clock
        self._closed = False
        self._in_batch = False
        self._writers: set[str] = set()  # servers whose writer lock is held
        self._clear()

    def _clear(self) -> None:
        self._versions: dict[_VersionKey, ResourceVersion] = {}
        self._pending: dict[_VersionKey, ResourceVersion] = {}  # insertion order = arrival
        self._snapshots: dict[tuple[str, str, str], ResourceVersion] = {}
        self._encounters: dict[tuple[str, str], dict[str, Any]] = {}
        self._transitions: dict[str, dict[str, Any]] = {}  # key -> transition row
        self._watermarks: dict[tuple[str, str], str] = {}
        self._outbox: dict[int, _Outbox] = {}
        self._outbox_keys: dict[str, int] = {}
        self._dead: dict[int, DeadLetter] = {}
        self._audit: list[tuple[int, datetime, str, str, str]] = []
        self._leases: dict[str, _Lease] = {}
        self._workers: dict[str, datetime] = {}  # worker id -> seen until
        self._counters: dict[tuple[str, str], _Counter] = {}

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the calls inside the block all-or-nothing, as the SQL stores' transaction does.

        An exception out of the block restores the store as it was when the block began; a
        nested ``batch`` joins the outer one.
        """
        if self._in_batch:
            yield
            return
        saved = self._save()
        self._in_batch = True
        try:
            yield
        except BaseException:
            self._restore(saved)
            raise
        finally:
            self._in_batch = False

    def _save(self) -> dict[str, Any]:
        state = {name: copy.copy(getattr(self, name)) for name in _STATE}
        state["_outbox"] = {i: replace(row) for i, row in self._outbox.items()}
        state["_leases"] = {n: replace(lease) for n, lease in self._leases.items()}
        state["_counters"] = {k: replace(c, above=set(c.above)) for k, c in self._counters.items()}
        return state

    def _restore(self, saved: dict[str, Any]) -> None:
        for name, value in saved.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"MemoryStore(versions={len(self._versions)}, pending={len(self._pending)})"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the journal is closed")

    def _now(self) -> datetime:
        self._check_open()
        return _codec.utc(self._clock())

    # -- lifecycle -------------------------------------------------------------------------
    def migrate(self) -> None:
        """Nothing to create; only checks that the store is open."""
        self._check_open()

    def close(self) -> None:
        """Forget everything; later calls raise StoreError."""
        self._closed = True
        self._writers.clear()
        self._clear()

    def schema_version(self) -> int:
        """The SQL stores' latest migration: this store always has every table."""
        self._check_open()
        return len(migrations("sqlite"))

    # -- one writer, and leases ------------------------------------------------------------
    @contextmanager
    def acquire_writer(self, server: str, holder: Holder | None = None) -> Iterator[Holder]:
        """Hold the writer lock for ``server`` while the block runs (this store's alone)."""
        self._check_open()
        if server in self._writers:
            raise busy(server, self.writer(server))
        holder = holder or Holder.here(clock=self._clock)
        self._writers.add(server)
        name = writer_lease_name(server)
        before = self._leases.get(name)
        died = before is not None and before.holder is not None
        takeovers = (before.takeovers if before is not None else 0) + died
        self._leases[name] = _Lease(holder, None, takeovers)
        try:
            yield holder
        finally:
            self._writers.discard(server)
            self.release_lease(name, holder)

    def writer(self, server: str) -> Holder | None:
        """Who holds (or last held) the writer lock for ``server``."""
        self._check_open()
        lease = self._leases.get(writer_lease_name(server))
        return lease.holder if lease is not None else None

    def _take(self, name: str, holder: Holder, now: datetime, until: datetime) -> bool:
        lease = self._leases.get(name)
        if lease is None or lease.holder is None:
            takeovers = lease.takeovers if lease is not None else 0
            self._leases[name] = _Lease(replace(holder, since=now), until, takeovers)
            return True
        if lease.holder.worker == holder.worker:
            lease.expires = until
            return True
        if lease.expires is not None and lease.expires < now:
            self._leases[name] = _Lease(replace(holder, since=now), until, lease.takeovers + 1)
            return True
        return False

    def take_lease(self, name: str, holder: Holder, seconds: float = LEASE_SECONDS) -> bool:
        """Take or renew the lease ``name``; False while another holder's lease runs."""
        now = self._now()
        return self._take(name, holder, now, now + timedelta(seconds=seconds))

    def release_lease(self, name: str, holder: Holder) -> None:
        """Give the lease up if ``holder`` has it."""
        self._check_open()
        lease = self._leases.get(name)
        if lease is not None and lease.holder is not None and lease.holder.worker == holder.worker:
            lease.holder = lease.expires = None

    def _lanes_of(self, worker: str | None, now: datetime, *, mine: bool) -> list[int]:
        found = []
        for name, lease in self._leases.items():
            if not name.startswith("lane:") or lease.expires is None or lease.expires < now:
                continue
            if lease.holder is not None and (lease.holder.worker == worker) == mine:
                found.append(int(name[5:]))
        return sorted(found)

    def lease_lanes(
        self, holder: Holder, *, lanes: int = LANES, seconds: float = LEASE_SECONDS
    ) -> frozenset[int]:
        """Renew this worker's lanes and take its fair share of the free or expired ones."""
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        now = self._now()
        until = now + timedelta(seconds=seconds)
        self._workers[holder.worker] = until
        live = sum(1 for seen in self._workers.values() if seen >= now)
        share = math.ceil(lanes / max(1, live))
        mine = [lane for lane in self._lanes_of(holder.worker, now, mine=True) if lane < lanes]
        for lane in mine[share:]:
            self.release_lease(f"lane:{lane:04d}", holder)
        held = set(mine[:share])
        taken = set(self._lanes_of(holder.worker, now, mine=False))
        wanted = sorted(held) + [n for n in range(lanes) if n not in held and n not in taken]
        held = set()
        for lane in wanted:
            if len(held) >= share:
                break
            if self._take(f"lane:{lane:04d}", holder, now, until):
                held.add(lane)
        return frozenset(held)

    def renew_lanes(self, holder: Holder, seconds: float = LEASE_SECONDS) -> frozenset[int]:
        """Extend the worker's lane leases that still run, taking none and giving none up."""
        now = self._now()
        until = now + timedelta(seconds=seconds)
        self._workers[holder.worker] = until
        held = self._lanes_of(holder.worker, now, mine=True)
        for lane in held:
            self._leases[f"lane:{lane:04d}"].expires = until
        return frozenset(held)

    def release_lanes(self, holder: Holder) -> None:
        """Give up the worker's lanes and outbox leases, and forget the worker."""
        now = self._now()
        for name in [n for n in self._leases if n.startswith("lane:")]:
            self.release_lease(name, holder)
        self.release_outbox(holder)
        self._workers = {
            w: seen for w, seen in self._workers.items() if w != holder.worker and seen >= now
        }

    def takeovers(self, prefix: str = "lane:") -> int:
        """How often leases whose names start with ``prefix`` were taken over after expiry."""
        self._check_open()
        return sum(lease.takeovers for n, lease in self._leases.items() if n.startswith(prefix))

    def pending_in_lanes(
        self, lanes: Iterable[int], *, lane_count: int = LANES, limit: int = 500
    ) -> list[ResourceVersion]:
        """Pending versions of the patients in ``lanes``, oldest arrival first."""
        self._check_open()
        chosen = set(lanes)
        mine = (v for v in self._pending.values() if _codec.lane_key(v) % lane_count in chosen)
        return list(islice(mine, max(0, limit)))

    def renew_outbox(self, holder: Holder, seconds: float = LEASE_SECONDS) -> int:
        """Extend the leases of the outbox items ``holder`` has claimed; returns how many."""
        now = self._now()
        renewed = 0
        for row in self._outbox.values():
            if (
                row.state == "pending"
                and row.claimed_by == holder.worker
                and row.lease_until is not None
                and row.lease_until >= now
            ):
                row.lease_until = now + timedelta(seconds=seconds)
                renewed += 1
        return renewed

    def release_outbox(self, holder: Holder) -> int:
        """Give up ``holder``'s outbox leases; returns how many."""
        self._check_open()
        released = 0
        for row in self._outbox.values():
            if row.state == "pending" and row.claimed_by == holder.worker:
                row.claimed_by = row.lease_until = None
                released += 1
        return released

    def leased_outbox(self) -> int:
        """How many pending outbox items are under a lease that still runs."""
        now = self._now()
        return sum(
            1
            for row in self._outbox.values()
            if row.state == "pending" and row.lease_until is not None and row.lease_until >= now
        )

    # -- subscription event numbers --------------------------------------------------------
    def record_events(
        self,
        server: str,
        subscription: str,
        numbers: Iterable[int],
        *,
        highest: int | None = None,
        through: int | None = None,
    ) -> EventCount:
        """Record event numbers received for a subscription."""
        self._check_open()
        counter = self._counters.setdefault((server, subscription), _Counter())
        duplicates = 0
        for number in numbers:
            counter.highest = max(counter.highest, number)
            if number <= counter.contiguous or number in counter.above:
                duplicates += 1
            else:
                counter.above.add(number)
        if highest is not None:
            counter.highest = max(counter.highest, highest)
        if through is not None and through > counter.contiguous:
            counter.contiguous = through
        while counter.contiguous + 1 in counter.above:
            counter.contiguous += 1
        counter.above = {n for n in counter.above if n > counter.contiguous}
        counter.highest = max(counter.highest, counter.contiguous)
        return EventCount(counter.contiguous, counter.highest, duplicates)

    # -- resource versions -----------------------------------------------------------------
    @staticmethod
    def _key(version: ResourceVersion) -> _VersionKey:
        return (version.server, version.resource_type, version.id, version.version_id)

    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions; return those that were new (duplicates are dropped)."""
        self._check_open()
        new: list[ResourceVersion] = []
        for version in versions:
            key = self._key(version)
            if key not in self._versions:
                self._versions[key] = self._pending[key] = version
                new.append(version)
        return new

    def pending(self, limit: int = 500) -> list[ResourceVersion]:
        """Versions journalled but not yet processed, oldest arrival first."""
        self._check_open()
        return list(islice(self._pending.values(), max(0, limit)))

    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """The latest processed version of a resource, if any."""
        self._check_open()
        return self._snapshots.get((server, resource_type, resource_id))

    def snapshots(
        self, server: str, resource_type: str, ids: Iterable[str]
    ) -> dict[str, ResourceVersion]:
        """The latest processed versions of several resources of one type, by id."""
        self._check_open()
        found = {rid: self._snapshots.get((server, resource_type, rid)) for rid in ids}
        return {rid: version for rid, version in found.items() if version is not None}

    def _processed(self, version: ResourceVersion) -> None:
        key = self._key(version)
        self._versions.setdefault(key, version)
        self._pending.pop(key, None)

    def complete(
        self,
        version: ResourceVersion,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutboxItem] = (),
        notes: Mapping[str, str] | None = None,
        update_snapshot: bool = True,
    ) -> None:
        """Mark ``version`` processed, with its transitions, outbox items and snapshot."""
        rows = _codec.transition_rows(transitions, notes, self._now())
        self._processed(version)
        for row in rows:
            self._transitions.setdefault(row["key"], row)
        self._add_outbox(outbox)
        if update_snapshot:
            stored = self._versions[self._key(version)]
            self._snapshots[(version.server, version.resource_type, version.id)] = stored
            if version.resource_type == "Encounter":
                self._index_encounter(stored)

    def _index_encounter(self, version: ResourceVersion) -> None:
        row = _codec.encounter_row(version)
        key = (version.server, f"Encounter/{version.id}")
        if row is None:
            self._encounters.pop(key, None)
        else:
            self._encounters[key] = row

    def reject(self, version: ResourceVersion, reason: str) -> None:
        """Mark ``version`` processed without effect and put it in the dead letters.

        The dead letter's source is ``process``, its reference ``server|Type/id/_history/vid``
        and its payload the raw bytes.
        """
        self._check_open()
        self._processed(version)
        self.dead_letter(**_codec.rejected_letter(version, reason))

    def patient_stays(self, server: str, patients: Iterable[str]) -> dict[str, list[Stay]]:
        """:meth:`stays` of several patients, keyed as they were asked."""
        return {patient: self.stays(server, patient) for patient in patients}

    def stays(self, server: str, patient: str) -> list[Stay]:
        """Every encounter snapshot of the patient (any class or status), for look-backs."""
        self._check_open()
        wanted = _codec.relative_reference(patient)
        rows = [
            row
            for row in self._encounters.values()
            if row["server"] == server and row["patient"] == wanted
        ]
        rows.sort(key=lambda r: (r["start_at"] is None, r["start_at"] or _EARLIEST, r["encounter"]))
        return [
            _codec.stay_from_row(
                (
                    r["server"],
                    r["encounter"],
                    r["patient"],
                    r["encounter_class"],
                    r["status"],
                    r["start_at"],
                    r["end_at"],
                )
            )
            for r in rows
        ]

    def transitions(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> list[StoredTransition]:
        """Journalled transitions, oldest first, filtered by kind and detection time."""
        self._check_open()
        floor = _codec.utc(since) if since is not None else None
        out: list[StoredTransition] = []
        for row in self._transitions.values():
            if kind is not None and row["kind"] != kind:
                continue
            stored = _codec.stored_transition_from_row(
                (row["key"], row["detected_at"], row["note"], row["body"])
            )
            if floor is not None and stored.detected_at < floor:
                continue
            out.append(stored)
        return out

    # -- watermarks ------------------------------------------------------------------------
    def watermark(self, server: str, resource_type: str) -> str | None:
        """The instant the next poll of this type starts from, if set."""
        self._check_open()
        return self._watermarks.get((server, resource_type))

    def set_watermark(self, server: str, resource_type: str, instant: str) -> None:
        """Move the watermark (only after what it covers is journalled)."""
        self._check_open()
        self._watermarks[(server, resource_type)] = instant

    # -- outbox ----------------------------------------------------------------------------
    def _add_outbox(self, items: Sequence[OutboxItem]) -> int:
        added = 0
        for item in items:
            if item.key in self._outbox_keys:
                continue
            item_id = len(self._outbox) + 1
            self._outbox[item_id] = _Outbox(
                item_id,
                item.key,
                item.kind,
                _codec.dumps(dict(item.payload)),
                lane_key=_codec.outbox_lane_key(item),
            )
            self._outbox_keys[item.key] = item_id
            added += 1
        return added

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items outside a version's processing (sweeps); returns how many were new."""
        self._check_open()
        return self._add_outbox(items)

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
        now = self._now()
        if holder is None:
            pending = (row for row in self._outbox.values() if row.state == "pending")
            return [row.item() for row in islice(pending, max(0, limit))]
        chosen = None if lanes is None else set(lanes)
        free = (
            row
            for row in self._outbox.values()
            if row.state == "pending"
            and (row.lease_until is None or row.lease_until < now)
            and (chosen is None or row.lane_key % lane_count in chosen)
        )
        claimed = list(islice(free, max(0, limit)))
        for row in claimed:
            row.claimed_by, row.lease_until = holder.worker, now + timedelta(seconds=seconds)
            row.attempts += 1
        return [row.item() for row in claimed]

    def _row(self, item_id: int) -> _Outbox:
        row = self._outbox.get(item_id)
        if row is None:
            raise StoreError(f"no outbox item has id {item_id}")
        return row

    def finish_outbox(self, item_id: int, result: Mapping[str, Any]) -> None:
        """Mark an item done, recording what the server answered (ids, status)."""
        self._check_open()
        row = self._row(item_id)
        row.attempts += row.claimed_by is None  # a leased item counted it when claimed
        row.state, row.result = "done", _codec.dumps(dict(result))
        row.claimed_by = row.lease_until = None

    def fail_outbox(self, item_id: int, error: str, *, dead: bool) -> None:
        """Count a failed attempt; ``dead`` moves it to the dead letters for good."""
        self._check_open()
        row = self._row(item_id)
        row.attempts += row.claimed_by is None  # a leased item counted it when claimed
        row.last_error = error
        row.claimed_by = row.lease_until = None
        if dead:
            row.state = "dead"
            self.dead_letter(**_codec.outbox_letter(row.item(), error))

    def outbox_depth(self) -> int:
        """How many items are pending."""
        self._check_open()
        return sum(1 for row in self._outbox.values() if row.state == "pending")

    def outbox_items(self, state: str | None = None) -> list[OutboxItem]:
        """Items, optionally of one state, oldest first."""
        self._check_open()
        return [r.item() for r in self._outbox.values() if state is None or r.state == state]

    # -- dead letters and audit ------------------------------------------------------------
    def dead_letter(self, source: str, reference: str, reason: str, payload: bytes) -> int:
        """Keep an input that could not be processed; returns its id."""
        now = self._now()
        letter_id = len(self._dead) + 1
        self._dead[letter_id] = DeadLetter(
            letter_id, source, reference, reason, bytes(payload), now, False
        )
        return letter_id

    def dead_letters(self, *, include_replayed: bool = False) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        self._check_open()
        return [d for d in self._dead.values() if include_replayed or not d.replayed]

    def repend(self, server: str, resource_type: str, resource_id: str, version_id: str) -> bool:
        """Put a journalled version back on the pending list; False when the journal does not
        hold it or it is pending already."""
        self._check_open()
        key = (server, resource_type, resource_id, version_id)
        version = self._versions.get(key)
        if version is None or key in self._pending:
            return False
        self._pending[key] = version
        return True

    def mark_replayed(self, dead_letter_id: int) -> None:
        """Note that a dead letter was replayed successfully."""
        self._check_open()
        letter = self._dead.get(dead_letter_id)
        if letter is None:
            raise StoreError(f"no dead letter has id {dead_letter_id}")
        self._dead[dead_letter_id] = replace(letter, replayed=True)

    def requeue_dead_outbox(self) -> int:
        """Put dead outbox items back to pending, with no attempts; returns how many.

        Their dead letters are marked replayed: if an item dies again, it gets a new one.
        """
        self._check_open()
        dead = {row.key: row for row in self._outbox.values() if row.state == "dead"}
        for letter in list(self._dead.values()):
            if (
                letter.source == _codec.OUTBOX_SOURCE
                and not letter.replayed
                and letter.reference in dead
            ):
                self._dead[letter.id] = replace(letter, replayed=True)
        for row in dead.values():
            row.state, row.attempts = "pending", 0
            row.claimed_by = row.lease_until = None
        return len(dead)

    def audit(self, action: str, reference: str, detail: Mapping[str, Any]) -> None:
        """Record a write the engine made (or attempted) on a server."""
        now = self._now()
        record = (len(self._audit) + 1, now, action, reference, _codec.dumps(dict(detail)))
        self._audit.append(record)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit records, newest first."""
        self._check_open()
        latest = self._audit[-limit:] if limit > 0 else []
        return [_codec.audit_from_row(row) for row in reversed(latest)]
