"""``MemoryStore``: the journal in dicts, for fast unit tests and for users' own tests.

It passes the same contract tests as the SQLite and PostgreSQL stores, and goes through the
same codec, so what comes back (facts, payloads, timestamps in UTC) looks the same. It keeps
nothing after ``close``; using it afterwards raises :class:`~fhirbridge.errors.StoreError`
as a closed database would.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from fhirbridge.errors import StoreError
from fhirbridge.store import _codec
from fhirbridge.store.base import DeadLetter, OutboxItem, Stay, StoredTransition
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
)


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

    def __init__(self, *, clock: _codec.Clock = _codec.system_clock) -> None:
        self._clock = clock
        self._closed = False
        self._in_batch = False
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
        self._clear()

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
                item_id, item.key, item.kind, _codec.dumps(dict(item.payload))
            )
            self._outbox_keys[item.key] = item_id
            added += 1
        return added

    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items outside a version's processing (sweeps); returns how many were new."""
        self._check_open()
        return self._add_outbox(items)

    def claim_outbox(self, limit: int = 50) -> list[OutboxItem]:
        """Pending items, oldest first."""
        self._check_open()
        pending = (row for row in self._outbox.values() if row.state == "pending")
        return [row.item() for row in islice(pending, max(0, limit))]

    def _row(self, item_id: int) -> _Outbox:
        row = self._outbox.get(item_id)
        if row is None:
            raise StoreError(f"no outbox item has id {item_id}")
        return row

    def finish_outbox(self, item_id: int, result: Mapping[str, Any]) -> None:
        """Mark an item done, recording what the server answered (ids, status)."""
        self._check_open()
        row = self._row(item_id)
        row.state, row.attempts, row.result = "done", row.attempts + 1, _codec.dumps(dict(result))

    def fail_outbox(self, item_id: int, error: str, *, dead: bool) -> None:
        """Count a failed attempt; ``dead`` moves it to the dead letters for good."""
        self._check_open()
        row = self._row(item_id)
        row.attempts += 1
        row.last_error = error
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
