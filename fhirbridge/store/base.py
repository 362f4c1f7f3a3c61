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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from fhirbridge.values import ResourceVersion, Stay, Transition

__all__ = ["DeadLetter", "OutboxItem", "Stay", "Store", "StoredTransition", "is_shared"]


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


@runtime_checkable
class Store(Protocol):
    """The durable journal. Implementations: ``SqliteStore``, ``PostgresStore``, ``MemoryStore``.

    Every method is synchronous and safe to call from one thread at a time; a method that
    changes several tables does so in one transaction.
    """

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    def close(self) -> None:
        """Release connections."""

    # -- resource versions -------------------------------------------------------------
    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions; return those that were new (duplicates are dropped)."""

    def pending(self, limit: int = 500) -> list[ResourceVersion]:
        """Versions journalled but not yet processed, oldest arrival first."""

    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """The latest processed version of a resource, if any."""

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

    def claim_outbox(self, limit: int = 50) -> list[OutboxItem]:
        """Pending items, oldest first (PostgreSQL claims them with SKIP LOCKED)."""

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


def is_shared(store: Store) -> bool:
    """The store's capability flag ``shared``: other workers may change the journal under
    this one (PostgreSQL), so cached snapshots cannot be trusted between passes."""
    return bool(getattr(store, "shared", False))
