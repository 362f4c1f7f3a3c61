"""The journal's port: what every store (SQLite, PostgreSQL, in-memory) provides.

The engine's flow through the store, and why it never loses or repeats work:

1. ``append`` journals resource versions as they arrive, deduplicated on
   ``(server, type, id, version_id)``; new ones are *pending*. Nothing is acknowledged to a
   sender before this returns.
2. ``pending`` hands pending versions back in arrival order (also after a crash).
3. ``complete`` records, in one transaction, the transitions found for a version, the
   outbox items they plan, the new snapshot, and marks the version processed. A crash
   before it leaves the version pending; after it, the outbox holds the work.
4. ``claim_outbox`` / ``finish_outbox`` / ``fail_outbox`` drain the writes. An item whose
   write is lost in a crash is claimed again; writes are idempotent on the server.

Who may write: ``acquire_writer`` gives one process the journal for one FHIR server (a second
``run``/``serve``/``hl7`` is refused with :class:`~fhirbridge.errors.JournalBusy`). Several
workers share a PostgreSQL journal through leases instead: ``lease_lanes`` shares the patient
lanes out among the live workers (``pending(lanes=...)`` then hands a worker its lanes'
versions only), ``claim_outbox(holder=...)`` leases items, ``take_lease`` elects one poller;
a worker that dies stops renewing and its leases are taken over when they expire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fhirbridge.values import ResourceVersion, Stay, Transition

if TYPE_CHECKING:
    from fhirbridge.store._writer import Holder

__all__ = [
    "LANES",
    "LEASE_SECONDS",
    "DeadLetter",
    "EventCount",
    "OutboxItem",
    "Stay",
    "Store",
    "StoredTransition",
]

#: How many lanes the patients are hashed to (``lane_key % LANES``).
LANES = 64
#: How long a lease runs unless renewed (``store.lease_seconds``).
LEASE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A write the engine owes the server.

    ``key`` is unique across the outbox: enqueueing the same key twice keeps the first.
    ``state`` is ``pending``, ``done`` or ``dead``.
    """

    key: str
    kind: str
    payload: Mapping[str, Any]
    id: int = 0
    state: str = "pending"
    attempts: int = 0
    last_error: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input or a write that failed for a reason a retry will not fix."""

    id: int
    source: str
    reference: str
    reason: str
    payload: bytes
    created_at: datetime
    replayed: bool = False

    #: The source of the letter ``Store.reject`` writes for a version it could not use.
    REJECTED = "process"

    @staticmethod
    def rejected_reference(version: ResourceVersion) -> str:
        """The reference of a rejected version's letter: ``server|Type/id/_history/vid``."""
        return f"{version.server}|{version.reference}/_history/{version.version_id}"

    def rejected_version(self) -> tuple[str, str, str, str] | None:
        """``(server, type, id, version id)`` of a rejected version's letter, else None."""
        if self.source != self.REJECTED:
            return None
        server, sep, ref = self.reference.partition("|")
        kind, slash, rest = ref.partition("/")
        rid, history, version = rest.partition("/_history/")
        if not (sep and slash and history and kind and rid and version):
            return None
        return server, kind, rid, version


@dataclass(frozen=True, slots=True)
class StoredTransition:
    """A transition as journalled, with the rule outcome noted at the time."""

    key: str
    transition: Transition
    detected_at: datetime
    note: str = ""


@dataclass(frozen=True, slots=True)
class EventCount:
    """A subscription's event numbers after a notification was recorded.

    Every number up to ``contiguous`` arrived; ``highest`` is the highest number received or
    claimed by the server (``events-since-subscription-start``); ``duplicates`` counts the
    numbers of this notification that had arrived before. ``highest > contiguous`` means
    events may be missing.
    """

    contiguous: int
    highest: int
    duplicates: int = 0

    @property
    def gap(self) -> bool:
        """Whether some event numbers up to ``highest`` have not arrived."""
        return self.highest > self.contiguous


@runtime_checkable
class Store(Protocol):
    """The durable journal. Implementations: ``SqliteStore``, ``PostgresStore``, ``MemoryStore``.

    Every method is synchronous and safe to call from one thread at a time; a method that
    changes several tables does so in one transaction.
    """

    #: Whether several worker processes may share this journal through leases (PostgreSQL);
    #: where False (SQLite, memory) one writer per server is all it takes, and ``--workers``
    #: is refused.
    supports_workers: bool

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    def close(self) -> None:
        """Release connections."""

    def schema_version(self) -> int:
        """The number of the latest migration applied (0 before ``migrate``)."""

    # -- one writer, and leases for several workers ---------------------------------------
    def acquire_writer(
        self, server: str, holder: Holder | None = None
    ) -> AbstractContextManager[Holder]:
        """Hold the journal's writer lock for ``server`` while the block runs.

        Raises :class:`~fhirbridge.errors.JournalBusy` (one line: who holds it, since when)
        when another process holds it. It is released when the block ends, and when the
        holding process dies however it dies; ``holder`` defaults to this process.
        """

    def writer(self, server: str) -> Holder | None:
        """Who holds (or last held) the writer lock for ``server``, as recorded."""

    def take_lease(self, name: str, holder: Holder, seconds: float = LEASE_SECONDS) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while another holds it.

        A lease that expired is taken over (and counted in ``takeovers``).
        """

    def release_lease(self, name: str, holder: Holder) -> None:
        """Give the lease up if ``holder`` has it."""

    def lease_lanes(
        self, holder: Holder, *, lanes: int = LANES, seconds: float = LEASE_SECONDS
    ) -> frozenset[int]:
        """Renew this worker's lanes and take its fair share of the free or expired ones.

        Marks the worker alive for ``seconds``; its share is ``ceil(lanes / live workers)``:
        lanes beyond it are given up for newcomers, free ones taken up to it. Call it more
        often than ``seconds``. Returns the lanes (``0 .. lanes - 1``) it holds now.
        """

    def renew_lanes(self, holder: Holder, seconds: float = LEASE_SECONDS) -> frozenset[int]:
        """Extend the worker's lane leases that still run (and mark it alive), taking none
        and giving none up: what a worker calls while it works, between the rebalancing
        :meth:`lease_lanes` calls it makes when nothing of it is in flight. Returns the lanes
        it still holds (a lease that ran out may have been taken over)."""

    def release_lanes(self, holder: Holder) -> None:
        """Give up the worker's lanes and outbox leases, and forget the worker (on exit)."""

    def takeovers(self, prefix: str = "lane:") -> int:
        """How often leases whose names start with ``prefix`` were taken over after expiry."""

    def pending_in_lanes(
        self, lanes: Iterable[int], *, lane_count: int = LANES, limit: int = 500
    ) -> list[ResourceVersion]:
        """Pending versions of the patients in ``lanes`` (``lane_key % lane_count``), oldest
        arrival first: what one worker processes, in each patient's order."""

    def renew_outbox(self, holder: Holder, seconds: float = LEASE_SECONDS) -> int:
        """Extend the leases of the outbox items ``holder`` has claimed; returns how many."""

    def release_outbox(self, holder: Holder) -> int:
        """Give up ``holder``'s outbox leases (items not finished return to the others)."""

    def leased_outbox(self) -> int:
        """How many pending outbox items are under a lease that still runs."""

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
        """Record event numbers received for a subscription, atomically across receivers.

        ``highest`` is what the server says it sent (``events-since-subscription-start``);
        ``through`` marks every number up to it as covered (a catch-up poll finished).
        """

    # -- resource versions -------------------------------------------------------------
    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions; return those that were new (duplicates are dropped)."""

    def pending(self, limit: int = 500) -> list[ResourceVersion]:
        """Versions journalled but not yet processed, oldest arrival first."""

    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """The latest processed version of a resource, if any."""

    def snapshots(
        self, server: str, resource_type: str, ids: Iterable[str]
    ) -> dict[str, ResourceVersion]:
        """:meth:`snapshot` of several resources of one type at once, by id (an id without
        a snapshot is absent): what a batch reads in one query instead of one a version."""

    def complete(
        self,
        version: ResourceVersion,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutboxItem] = (),
        notes: Mapping[str, str] | None = None,
        update_snapshot: bool = True,
    ) -> None:
        """Mark ``version`` processed, atomically with its transitions, outbox items and snapshot.

        ``notes`` maps a transition key to a short note (e.g. why no work was planned).
        Transitions already journalled (same key) are kept as they were.
        """

    def batch(self) -> AbstractContextManager[None]:
        """A block whose writes commit as one transaction (nested blocks join the outer).

        Use it around synchronous ``complete``/``reject`` calls only: nothing a sender waits
        for may be appended inside it.
        """

    def reject(self, version: ResourceVersion, reason: str) -> None:
        """Mark ``version`` processed without effect and put it in the dead letters."""

    def repend(self, server: str, resource_type: str, resource_id: str, version_id: str) -> bool:
        """Put a journalled version back on the pending list (to replay it after a fix);
        False when the journal does not hold it or it is pending already."""

    def stays(self, server: str, patient: str) -> list[Stay]:
        """Every encounter snapshot of the patient (any class or status), for look-backs."""

    def patient_stays(self, server: str, patients: Iterable[str]) -> dict[str, list[Stay]]:
        """:meth:`stays` of several patients at once, keyed by each patient as asked."""

    def transitions(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> list[StoredTransition]:
        """Journalled transitions, oldest first, filtered by kind and detection time."""

    # -- watermarks ----------------------------------------------------------------------
    def watermark(self, server: str, resource_type: str) -> str | None:
        """The instant the next poll of this type starts from, if set."""

    def set_watermark(self, server: str, resource_type: str, instant: str) -> None:
        """Move the watermark (only after what it covers is journalled)."""

    # -- outbox --------------------------------------------------------------------------
    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items outside a version's processing (sweeps); returns how many were new."""

    def claim_outbox(
        self,
        limit: int = 50,
        *,
        holder: Holder | None = None,
        seconds: float = LEASE_SECONDS,
        lanes: Iterable[int] | None = None,
        lane_count: int = LANES,
    ) -> list[OutboxItem]:
        """Pending items, oldest first (PostgreSQL claims them with SKIP LOCKED).

        With ``holder``, the items are leased to it for ``seconds`` (``claimed_by``,
        ``lease_until``, one more attempt) and nobody else gets them until the lease expires
        or the item is finished or failed; items under a lease that runs (its own included)
        are skipped. ``lanes`` (with ``holder``) keeps to the items of the patients in those
        lanes (the patient of an item's planning transition, ``lane_key % lane_count``).
        """

    def finish_outbox(self, item_id: int, result: Mapping[str, Any]) -> None:
        """Mark an item done, recording what the server answered (ids, status)."""

    def fail_outbox(self, item_id: int, error: str, *, dead: bool) -> None:
        """Count a failed attempt; ``dead`` moves it to the dead letters for good."""

    def outbox_depth(self) -> int:
        """How many items are pending."""

    def outbox_items(self, state: str | None = None) -> list[OutboxItem]:
        """Items, optionally of one state, oldest first."""

    # -- dead letters and audit ----------------------------------------------------------
    def dead_letter(self, source: str, reference: str, reason: str, payload: bytes) -> int:
        """Keep an input that could not be processed; returns its id."""

    def dead_letters(self, *, include_replayed: bool = False) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    def mark_replayed(self, dead_letter_id: int) -> None:
        """Note that a dead letter was replayed successfully."""

    def requeue_dead_outbox(self) -> int:
        """Put dead outbox items back to pending (for ``fhirbridge replay``); returns how many."""

    def audit(self, action: str, reference: str, detail: Mapping[str, Any]) -> None:
        """Record a write the engine made (or attempted) on a server."""

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit records, newest first."""
