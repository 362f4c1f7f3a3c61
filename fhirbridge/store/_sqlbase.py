"""What the SQLite and PostgreSQL stores share: every method whose logic is the same SQL.

:class:`SqlStore` runs the named queries of its dialect (``sql/<dialect>/queries.sql``); each
connector subclass supplies what differs between the databases:

- the class attributes ``_dialect``, ``_queries``, ``_label`` (for error messages) and
  ``_driver_error`` (the driver's root exception, translated to
  :class:`~fhirbridge.errors.StoreError` by :func:`translated`);
- :meth:`SqlStore._write` and :meth:`SqlStore._read`: transactions and plain reads on its
  connection; :meth:`SqlStore.batch`, ``close`` and ``append``, which differ in more than
  syntax (SQLite counts rows inserted one by one, PostgreSQL reads ``RETURNING``);
- :meth:`SqlStore._stamp`, how an instant is bound (ISO text in SQLite, ``timestamptz`` in
  PostgreSQL), and :meth:`SqlStore._inserted_id`, the id of the row just inserted;
- optionally :meth:`SqlStore._prepare_migrations` and :meth:`SqlStore._statements` (how a
  migration script is run).

The writer lock, leases and event counters are in :mod:`fhirbridge.store._sqlwork`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from fhirbridge.errors import StoreError
from fhirbridge.store import _codec
from fhirbridge.store._sql import Dialect, migrations
from fhirbridge.store.base import DeadLetter, OutboxItem, Stay, StoredTransition
from fhirbridge.values import ResourceVersion, Transition

__all__ = ["Cursor", "SqlStore", "translated"]


class Cursor(Protocol):
    """What the shared code needs of a DB-API cursor (``sqlite3`` and psycopg both have it)."""

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""

    def execute(self, query: str, params: Mapping[str, Any] = ..., /) -> object:
        """Run one statement with named parameters."""

    def executemany(self, query: str, params_seq: Iterable[Mapping[str, Any]], /) -> object:
        """Run one statement once per set of parameters."""

    def fetchone(self) -> Any:
        """The next row of the result, or None."""

    def fetchall(self) -> list[Any]:
        """The remaining rows of the result."""


_C = TypeVar("_C", bound=Cursor)
_S = TypeVar("_S", bound="SqlStore[Any]")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def translated(
    method: Callable[Concatenate[_S, _P], _R],
) -> Callable[Concatenate[_S, _P], _R]:
    """Let no driver error out: each becomes a StoreError (the cause is kept)."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except self._driver_error as exc:
            raise self._failure(exc) from exc

    return wrapper


#: A snapshot row, and the encounter_index row to upsert or the key of the one to delete.
_SnapshotRows = tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]


@dataclass(slots=True)
class _Deferred:
    """The rows the ``complete`` and ``reject`` calls of an open batch have gathered."""

    processed: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    letters: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[tuple[str, str, str], _SnapshotRows] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.processed)


class SqlStore(ABC, Generic[_C]):
    """The :class:`~fhirbridge.store.base.Store` port on a SQL database reached through ``_C``
    cursors; a subclass per dialect supplies connection, transactions and bindings."""

    _dialect: ClassVar[Dialect]
    _queries: ClassVar[Mapping[str, str]]
    _label: ClassVar[str]
    _driver_error: type[Exception]
    _clock: _codec.Clock
    #: Inside a batch, what its ``complete``/``reject`` calls gathered (None outside one).
    _deferred: _Deferred | None = None

    # -- what each connector supplies ------------------------------------------------------
    @abstractmethod
    def _write(self, *, durable: bool = False) -> AbstractContextManager[_C]:
        """One write transaction, committed when the block ends, undone if it raises.

        ``durable`` asks that the commit reach the disk before the call returns (for what the
        engine acknowledges to a sender); a database whose every commit does ignores it.
        """

    @abstractmethod
    def batch(self) -> AbstractContextManager[None]:
        """Make the writes inside the block one transaction, committed when the block ends.

        For the engine's loop: ``with store.batch():`` around the ``complete`` calls of one
        ``pending`` batch turns hundreds of commits into one. A crash inside the block leaves
        every version of it pending, to be processed again (transitions and outbox items are
        deduplicated by key, so nothing is doubled); an exception out of the block undoes it
        all, while a call that fails inside it undoes only its own writes (a savepoint). Don't
        claim or finish outbox items inside a batch. A nested ``batch`` joins the outer one.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions in one transaction; return those that were new."""

    @abstractmethod
    def _read(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        """The rows of the named query."""

    @staticmethod
    @abstractmethod
    def _stamp(moment: datetime) -> datetime | str:
        """An instant as the dialect binds it (always in UTC)."""

    @staticmethod
    @abstractmethod
    def _inserted_id(cur: _C) -> int:
        """The id of the row the cursor's last statement inserted."""

    @staticmethod
    def _list(values: Sequence[str]) -> Any:
        """A list of texts as the dialect binds it (a JSON array in SQLite, where the query
        reads it with ``json_each``; an array in PostgreSQL)."""
        return list(values)

    def _prepare_migrations(self, cur: _C) -> None:
        """Run first in the migration transaction (nothing by default)."""

    @staticmethod
    def _statements(script: str) -> Iterable[str]:
        """The statements of a migration script to execute one by one (the whole by default)."""
        return (script,)

    # -- shared helpers --------------------------------------------------------------------
    def _failure(self, exc: Exception) -> StoreError:
        return StoreError(f"the {self._label} journal failed: {exc}")

    def _now(self) -> datetime | str:
        return self._stamp(self._clock())

    # -- lifecycle -------------------------------------------------------------------------
    @translated
    def migrate(self) -> None:
        """Apply the migrations the database lacks, all in one transaction (idempotent)."""
        with self._write() as cur:
            self._prepare_migrations(cur)
            cur.execute(self._queries["create_schema_version"])
            cur.execute(self._queries["schema_versions"])
            done = {row[0] for row in cur.fetchall()}
            for migration in migrations(self._dialect):
                if migration.version in done:
                    continue
                for statement in self._statements(migration.sql):
                    cur.execute(statement)
                cur.execute(
                    self._queries["record_migration"],
                    {"version": migration.version, "name": migration.name, "now": self._now()},
                )

    # -- resource versions -----------------------------------------------------------------
    @translated
    def pending(self, limit: int = 500) -> list[ResourceVersion]:
        """Versions journalled but not yet processed, oldest arrival first."""
        rows = self._read("pending", {"limit": max(0, limit)})
        return [_codec.version_from_row(row) for row in rows]

    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """The latest processed version of a resource, if any."""
        return self.snapshots(server, resource_type, [resource_id]).get(resource_id)

    @translated
    def snapshots(
        self, server: str, resource_type: str, ids: Iterable[str]
    ) -> dict[str, ResourceVersion]:
        """The latest processed versions of several resources of one type, by id (one query;
        an id without a snapshot is absent)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        params = {"server": server, "resource_type": resource_type, "ids": self._list(wanted)}
        versions = [_codec.version_from_row(row) for row in self._read("snapshots", params)]
        return {version.id: version for version in versions}

    @translated
    def complete(
        self,
        version: ResourceVersion,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutboxItem] = (),
        notes: Mapping[str, str] | None = None,
        update_snapshot: bool = True,
    ) -> None:
        """Mark ``version`` processed, atomically with its transitions, outbox and snapshot.

        Inside :meth:`batch` the rows are gathered and written when the batch ends (or before
        anything else reads or writes the store), one statement per table for the whole
        batch; outside, they are written at once in one transaction.
        """
        now = self._now()
        # everything that can fail in Python is done before the first row is gathered
        processed = _codec.version_params(version, now)
        found = _codec.transition_rows(transitions, notes, now) if transitions else []
        items = [self._outbox_params(item, now) for item in outbox]
        snapshot = self._snapshot_rows(version) if update_snapshot else None
        rows = self._deferred if self._deferred is not None else _Deferred()
        rows.processed.append(processed)
        rows.transitions.extend(found)
        rows.outbox.extend(items)
        if snapshot is not None:
            rows.snapshots[snapshot[0]["key"]] = snapshot
        if rows is not self._deferred:
            with self._write() as cur:
                self._write_rows(cur, rows)

    def _snapshot_rows(self, version: ResourceVersion) -> _SnapshotRows:
        """The snapshot row, and the encounter_index row to upsert or the one to delete."""
        snapshot = {
            "server": version.server,
            "resource_type": version.resource_type,
            "resource_id": version.id,
            "version_id": version.version_id,
            "key": (version.server, version.resource_type, version.id),
        }
        if version.resource_type != "Encounter":
            return snapshot, None, None
        row = _codec.encounter_row(version)
        if row is None:
            encounter = f"Encounter/{version.id}"
            return snapshot, None, {"server": version.server, "encounter": encounter}
        for column in ("start_at", "end_at"):
            if row[column] is not None:
                row[column] = self._stamp(row[column])
        return snapshot, row, None

    def _write_rows(self, cur: _C, rows: _Deferred) -> None:
        """Write gathered rows: one ``executemany`` per statement, in an order that gives what
        the calls one by one would have given (the last snapshot of a resource wins)."""
        q = self._queries
        if rows.processed:
            # a version processed without being appended is journalled (not pending); one
            # that was appended is taken off the pending list
            cur.executemany(q["insert_version"], rows.processed)
            cur.executemany(q["mark_processed"], rows.processed)
        if rows.transitions:
            cur.executemany(q["insert_transition"], rows.transitions)
        if rows.outbox:
            cur.executemany(q["insert_outbox"], rows.outbox)
        if rows.letters:
            cur.executemany(q["insert_dead_letter"], rows.letters)
        if rows.snapshots:
            snapshots = list(rows.snapshots.values())
            cur.executemany(q["upsert_snapshot"], [s for s, _, _ in snapshots])
            upserts = [row for _, row, _ in snapshots if row is not None]
            deletes = [gone for _, _, gone in snapshots if gone is not None]
            if upserts:
                cur.executemany(q["upsert_encounter"], upserts)
            if deletes:
                cur.executemany(q["delete_encounter"], deletes)

    def _flush(self, cur: _C) -> None:
        """Write what the open batch gathered so far (before any other statement in it)."""
        rows = self._deferred
        if rows:
            self._deferred = _Deferred()
            self._write_rows(cur, rows)

    @translated
    def reject(self, version: ResourceVersion, reason: str) -> None:
        """Mark ``version`` processed without effect and put it in the dead letters.

        The dead letter's source is ``process``, its reference ``server|Type/id/_history/vid``
        and its payload the raw bytes. Inside :meth:`batch` it is gathered as ``complete`` is.
        """
        now = self._now()
        rows = self._deferred if self._deferred is not None else _Deferred()
        rows.processed.append(_codec.version_params(version, now))
        rows.letters.append({**_codec.rejected_letter(version, reason), "now": now})
        if rows is not self._deferred:
            with self._write() as cur:
                self._write_rows(cur, rows)

    @translated
    def repend(self, server: str, resource_type: str, resource_id: str, version_id: str) -> bool:
        """Put a journalled version back on the pending list; False when the journal does not
        hold it or it is pending already."""
        params = {
            "server": server,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "version_id": version_id,
        }
        with self._write() as cur:
            cur.execute(self._queries["repend_version"], params)
            return bool(cur.rowcount)

    def stays(self, server: str, patient: str) -> list[Stay]:
        """Every encounter snapshot of the patient (any class or status), by start time."""
        return self.patient_stays(server, [patient])[patient]

    @translated
    def patient_stays(self, server: str, patients: Iterable[str]) -> dict[str, list[Stay]]:
        """:meth:`stays` of several patients in one query, keyed as they were asked."""
        asked = {patient: _codec.relative_reference(patient) for patient in patients}
        if not asked:
            return {}
        params = {"server": server, "patients": self._list(sorted(set(asked.values())))}
        found: dict[str, list[Stay]] = {}
        for row in self._read("patient_stays", params):
            stay = _codec.stay_from_row(row)
            found.setdefault(stay.patient, []).append(stay)
        return {patient: found.get(wanted, []) for patient, wanted in asked.items()}

    @translated
    def transitions(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> list[StoredTransition]:
        """Journalled transitions, oldest first, filtered by kind and detection time."""
        params = {"kind": kind, "since": self._stamp(since) if since is not None else None}
        return [_codec.stored_transition_from_row(row) for row in self._read("transitions", params)]

    # -- watermarks ------------------------------------------------------------------------
    @translated
    def watermark(self, server: str, resource_type: str) -> str | None:
        """The instant the next poll of this type starts from, if set."""
        rows = self._read("watermark", {"server": server, "resource_type": resource_type})
        return str(rows[0][0]) if rows else None

    @translated
    def set_watermark(self, server: str, resource_type: str, instant: str) -> None:
        """Move the watermark (only after what it covers is journalled)."""
        params = {
            "server": server,
            "resource_type": resource_type,
            "instant": instant,
            "now": self._now(),
        }
        with self._write() as cur:
            cur.execute(self._queries["set_watermark"], params)

    # -- outbox ----------------------------------------------------------------------------
    @staticmethod
    def _outbox_params(item: OutboxItem, now: datetime | str) -> dict[str, Any]:
        return {
            "key": item.key,
            "kind": item.kind,
            "payload": _codec.dumps(dict(item.payload)),
            "now": now,
            "lane_key": _codec.outbox_lane_key(item),
        }

    def _insert_outbox(self, cur: _C, items: Sequence[OutboxItem], now: datetime | str) -> int:
        added = 0
        for item in items:
            cur.execute(self._queries["insert_outbox"], self._outbox_params(item, now))
            added += cur.rowcount
        return added

    @translated
    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items outside a version's processing (sweeps); returns how many were new."""
        if not items:
            return 0
        now = self._now()
        with self._write() as cur:
            return self._insert_outbox(cur, items, now)

    def _outbox_item(self, cur: _C, item_id: int) -> OutboxItem:
        cur.execute(self._queries["outbox_item"], {"id": item_id})
        row = cur.fetchone()
        if row is None:
            raise StoreError(f"no outbox item has id {item_id}")
        return _codec.outbox_from_row(row)

    @translated
    def finish_outbox(self, item_id: int, result: Mapping[str, Any]) -> None:
        """Mark an item done, recording what the server answered (ids, status)."""
        params = {"id": item_id, "result": _codec.dumps(dict(result)), "now": self._now()}
        with self._write() as cur:
            self._outbox_item(cur, item_id)
            cur.execute(self._queries["finish_outbox"], params)

    @translated
    def fail_outbox(self, item_id: int, error: str, *, dead: bool) -> None:
        """Count a failed attempt; ``dead`` moves it to the dead letters for good."""
        now = self._now()
        with self._write() as cur:
            item = self._outbox_item(cur, item_id)
            state = "dead" if dead else item.state
            params = {"id": item_id, "state": state, "error": error, "now": now}
            cur.execute(self._queries["fail_outbox"], params)
            if dead:
                letter = {**_codec.outbox_letter(item, error), "now": now}
                cur.execute(self._queries["insert_dead_letter"], letter)

    @translated
    def outbox_depth(self) -> int:
        """How many items are pending."""
        return int(self._read("outbox_depth", {})[0][0])

    @translated
    def outbox_items(self, state: str | None = None) -> list[OutboxItem]:
        """Items, optionally of one state, oldest first."""
        return [_codec.outbox_from_row(row) for row in self._read("outbox_items", {"state": state})]

    # -- dead letters and audit ------------------------------------------------------------
    @translated
    def dead_letter(self, source: str, reference: str, reason: str, payload: bytes) -> int:
        """Keep an input that could not be processed; returns its id."""
        params = {
            "source": source,
            "reference": reference,
            "reason": reason,
            "payload": bytes(payload),
            "now": self._now(),
        }
        with self._write(durable=True) as cur:
            cur.execute(self._queries["insert_dead_letter"], params)
            return self._inserted_id(cur)

    @translated
    def dead_letters(self, *, include_replayed: bool = False) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        rows = self._read("dead_letters", {"include_replayed": include_replayed})
        return [_codec.dead_letter_from_row(row) for row in rows]

    @translated
    def mark_replayed(self, dead_letter_id: int) -> None:
        """Note that a dead letter was replayed successfully."""
        with self._write() as cur:
            cur.execute(self._queries["mark_replayed"], {"id": dead_letter_id})
            if cur.rowcount == 0:
                raise StoreError(f"no dead letter has id {dead_letter_id}")

    @translated
    def requeue_dead_outbox(self) -> int:
        """Put dead outbox items back to pending, with no attempts; returns how many.

        Their dead letters are marked replayed: if an item dies again, it gets a new one.
        """
        with self._write() as cur:
            cur.execute(self._queries["release_outbox_dead_letters"])
            cur.execute(self._queries["requeue_dead_outbox"], {"now": self._now()})
            return cur.rowcount

    @translated
    def audit(self, action: str, reference: str, detail: Mapping[str, Any]) -> None:
        """Record a write the engine made (or attempted) on a server."""
        params = {
            "now": self._now(),
            "action": action,
            "reference": reference,
            "detail": _codec.dumps(dict(detail)),
        }
        with self._write() as cur:
            cur.execute(self._queries["insert_audit"], params)

    @translated
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit records, newest first."""
        rows = self._read("audit_log", {"limit": max(0, limit)})
        return [_codec.audit_from_row(row) for row in rows]
