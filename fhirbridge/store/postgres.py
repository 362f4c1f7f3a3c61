"""``PostgresStore``: the journal in PostgreSQL, for several workers sharing one database.

Needs the optional extra: ``pip install 'fhirbridge[postgres]'`` (psycopg 3). psycopg is
imported when a store is opened, not when this module is, so the rest of fhirbridge works
without it. The schema comes from the numbered migrations in ``sql/postgres/`` (applied under
an advisory lock, so workers starting together do not race); the queries from
``sql/postgres/queries.sql``. Every psycopg error leaves as a
:class:`~fhirbridge.errors.StoreError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from fhirbridge.errors import ConfigError, StoreError
from fhirbridge.store import _codec
from fhirbridge.store._sql import migrations, queries
from fhirbridge.store.base import DeadLetter, OutboxItem, Stay, StoredTransition
from fhirbridge.values import ResourceVersion, Transition

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_Q = queries("postgres")
_INSTALL = "PostgreSQL support is not installed: pip install 'fhirbridge[postgres]'"


def _translated(
    method: Callable[Concatenate[PostgresStore, _P], _R],
) -> Callable[Concatenate[PostgresStore, _P], _R]:
    """Let no psycopg error out: each becomes a StoreError (the cause is kept)."""

    @functools.wraps(method)
    def wrapper(self: PostgresStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except self._driver_error as exc:
            raise StoreError(f"the PostgreSQL journal failed: {exc}") from exc

    return wrapper


def _import_psycopg() -> Any:
    try:
        import psycopg  # optional extra: imported on first use
    except ImportError as exc:
        raise ConfigError(_INSTALL) from exc
    return psycopg


class PostgresStore:
    """The :class:`~fhirbridge.store.base.Store` port on a PostgreSQL database.

    ``dsn`` is a libpq connection string or URL. ``schema`` puts every table in that schema
    (created by ``migrate``) instead of the connection's default; tests use a throwaway one.
    ``clock`` stamps arrivals, detections, dead letters and audit records.

    ``claim_outbox`` selects with ``FOR UPDATE SKIP LOCKED``: it skips rows that another
    transaction holds instead of waiting for them. The rows are locked only while the call
    runs, and a claimed item stays ``pending`` until it is finished or failed, so a worker
    that dies mid-write leaves it claimable, and a worker that claims later may get an item
    another is still writing: the writes are idempotent (conditional create, ``If-Match``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        connect_timeout: int = 10,
        clock: _codec.Clock = _codec.system_clock,
    ) -> None:
        psycopg_module = _import_psycopg()
        self._sql = psycopg_module.sql
        self._driver_error: type[Exception] = psycopg_module.Error
        self.schema = schema
        self._clock = clock
        self._in_batch = False
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = psycopg_module.connect(
                dsn, autocommit=True, connect_timeout=connect_timeout
            )
        except psycopg_module.Error as exc:
            # The message names host and port; the DSN itself (and its password) is not shown.
            raise StoreError(f"cannot connect to the PostgreSQL journal: {exc}") from exc
        self._conn = conn
        if schema is not None:
            try:
                path = self._sql.SQL("SET search_path TO {}").format(self._sql.Identifier(schema))
                conn.execute(path)
            except psycopg_module.Error as exc:
                conn.close()
                raise StoreError(f"cannot use the schema {schema!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    def _now(self) -> datetime:
        return _codec.utc(self._clock())

    @contextmanager
    def _write(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """One transaction (committed when the block ends, rolled back if it raises)."""
        with self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside the block one transaction, committed when the block ends.

        For the engine's loop: ``with store.batch():`` around the ``complete`` calls of one
        ``pending`` batch turns hundreds of commits into one. A crash inside the block leaves
        every version of it pending, to be processed again (transitions and outbox items are
        deduplicated by key, so nothing is doubled); an exception out of the block undoes it
        all, while a call that fails inside it undoes only its own writes (a savepoint). Don't
        claim or finish outbox items inside a batch. A nested ``batch`` joins the outer one.
        """
        if self._in_batch:
            yield
            return
        try:
            with self._conn.transaction():
                self._in_batch = True
                try:
                    yield
                finally:
                    self._in_batch = False
        except self._driver_error as exc:
            raise StoreError(f"the PostgreSQL journal failed: {exc}") from exc

    def _read(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(_Q[name], params)
            return cur.fetchall()

    # -- lifecycle -------------------------------------------------------------------------
    @_translated
    def migrate(self) -> None:
        """Create the schema if needed and apply the migrations it lacks (idempotent)."""
        with self._write() as cur:
            cur.execute(_Q["migration_lock"])
            if self.schema is not None:
                create = self._sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                cur.execute(create.format(self._sql.Identifier(self.schema)))
            cur.execute(_Q["create_schema_version"])
            cur.execute(_Q["schema_versions"])
            done = {row[0] for row in cur.fetchall()}
            for migration in migrations("postgres"):
                if migration.version in done:
                    continue
                cur.execute(migration.sql)
                cur.execute(
                    _Q["record_migration"],
                    {"version": migration.version, "name": migration.name, "now": self._now()},
                )

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- resource versions -----------------------------------------------------------------
    @_translated
    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions in one transaction; return those that were new."""
        batch = list(versions)
        if not batch:
            return []
        now = self._now()
        new: list[ResourceVersion] = []
        seqs: list[dict[str, int]] = []
        with self._write() as cur:
            cur.executemany(
                _Q["insert_version"],
                [_codec.version_params(v, now) for v in batch],
                returning=True,
            )
            for version in batch:
                row = cur.fetchone()
                if row is not None:
                    seqs.append({"seq": row[0]})
                    new.append(version)
                cur.nextset()
            if seqs:
                cur.executemany(_Q["insert_pending"], seqs)
        return new

    @_translated
    def pending(self, limit: int = 500) -> list[ResourceVersion]:
        """Versions journalled but not yet processed, oldest arrival first."""
        rows = self._read("pending", {"limit": max(0, limit)})
        return [_codec.version_from_row(row) for row in rows]

    @_translated
    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """The latest processed version of a resource, if any."""
        params = {"server": server, "resource_type": resource_type, "resource_id": resource_id}
        rows = self._read("snapshot", params)
        return _codec.version_from_row(rows[0]) if rows else None

    @staticmethod
    def _mark_processed(
        cur: psycopg.Cursor[tuple[Any, ...]], version: ResourceVersion, now: datetime
    ) -> None:
        params = _codec.version_params(version, now)
        cur.execute(_Q["mark_processed"], params)
        if cur.rowcount == 0:  # processed already, or never appended: journal it, not pending
            cur.execute(_Q["insert_version"], params)

    @_translated
    def complete(
        self,
        version: ResourceVersion,
        *,
        transitions: Sequence[Transition] = (),
        outbox: Sequence[OutboxItem] = (),
        notes: Mapping[str, str] | None = None,
        update_snapshot: bool = True,
    ) -> None:
        """Mark ``version`` processed, atomically with its transitions, outbox and snapshot."""
        now = self._now()
        notes = notes or {}
        with self._write() as cur:
            self._mark_processed(cur, version, now)
            if transitions:
                cur.executemany(
                    _Q["insert_transition"],
                    [
                        {
                            "key": t.key,
                            "kind": t.kind.value,
                            "detected_at": now,
                            "note": notes.get(t.key, ""),
                            "body": _codec.transition_body(t),
                        }
                        for t in transitions
                    ],
                )
            if outbox:
                self._insert_outbox(cur, outbox, now)
            if update_snapshot:
                self._update_snapshot(cur, version)

    @staticmethod
    def _update_snapshot(cur: psycopg.Cursor[tuple[Any, ...]], version: ResourceVersion) -> None:
        key = {
            "server": version.server,
            "resource_type": version.resource_type,
            "resource_id": version.id,
            "version_id": version.version_id,
        }
        cur.execute(_Q["upsert_snapshot"], key)
        if version.resource_type != "Encounter":
            return
        row = _codec.encounter_row(version)
        if row is None:
            params = {"server": version.server, "encounter": f"Encounter/{version.id}"}
            cur.execute(_Q["delete_encounter"], params)
        else:
            cur.execute(_Q["upsert_encounter"], row)

    @_translated
    def reject(self, version: ResourceVersion, reason: str) -> None:
        """Mark ``version`` processed without effect and put it in the dead letters.

        The dead letter's source is ``process``, its reference ``server|Type/id/_history/vid``
        and its payload the raw bytes.
        """
        now = self._now()
        with self._write() as cur:
            self._mark_processed(cur, version, now)
            letter = {
                "source": _codec.REJECTED_SOURCE,
                "reference": _codec.rejected_reference(version),
                "reason": reason,
                "payload": version.raw,
                "now": now,
            }
            cur.execute(_Q["insert_dead_letter"], letter)

    @_translated
    def stays(self, server: str, patient: str) -> list[Stay]:
        """Every encounter snapshot of the patient (any class or status), by start time."""
        params = {"server": server, "patient": _codec.relative_reference(patient)}
        return [_codec.stay_from_row(row) for row in self._read("stays", params)]

    @_translated
    def transitions(
        self, *, kind: str | None = None, since: datetime | None = None
    ) -> list[StoredTransition]:
        """Journalled transitions, oldest first, filtered by kind and detection time."""
        params = {"kind": kind, "since": _codec.utc(since) if since is not None else None}
        return [_codec.stored_transition_from_row(row) for row in self._read("transitions", params)]

    # -- watermarks ------------------------------------------------------------------------
    @_translated
    def watermark(self, server: str, resource_type: str) -> str | None:
        """The instant the next poll of this type starts from, if set."""
        rows = self._read("watermark", {"server": server, "resource_type": resource_type})
        return str(rows[0][0]) if rows else None

    @_translated
    def set_watermark(self, server: str, resource_type: str, instant: str) -> None:
        """Move the watermark (only after what it covers is journalled)."""
        params = {
            "server": server,
            "resource_type": resource_type,
            "instant": instant,
            "now": self._now(),
        }
        with self._write() as cur:
            cur.execute(_Q["set_watermark"], params)

    # -- outbox ----------------------------------------------------------------------------
    @staticmethod
    def _insert_outbox(
        cur: psycopg.Cursor[tuple[Any, ...]], items: Sequence[OutboxItem], now: datetime
    ) -> int:
        added = 0
        for item in items:
            params = {
                "key": item.key,
                "kind": item.kind,
                "payload": _codec.dumps(dict(item.payload)),
                "now": now,
            }
            cur.execute(_Q["insert_outbox"], params)
            added += cur.rowcount
        return added

    @_translated
    def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items outside a version's processing (sweeps); returns how many were new."""
        if not items:
            return 0
        now = self._now()
        with self._write() as cur:
            return self._insert_outbox(cur, items, now)

    @_translated
    def claim_outbox(self, limit: int = 50) -> list[OutboxItem]:
        """Pending items, oldest first, skipping rows another transaction holds locked."""
        with self._write() as cur:
            cur.execute(_Q["claim_outbox"], {"limit": max(0, limit)})
            return [_codec.outbox_from_row(row) for row in cur.fetchall()]

    @staticmethod
    def _outbox_item(cur: psycopg.Cursor[tuple[Any, ...]], item_id: int) -> OutboxItem:
        cur.execute(_Q["outbox_item"], {"id": item_id})
        row = cur.fetchone()
        if row is None:
            raise StoreError(f"no outbox item has id {item_id}")
        return _codec.outbox_from_row(row)

    @_translated
    def finish_outbox(self, item_id: int, result: Mapping[str, Any]) -> None:
        """Mark an item done, recording what the server answered (ids, status)."""
        params = {"id": item_id, "result": _codec.dumps(dict(result)), "now": self._now()}
        with self._write() as cur:
            self._outbox_item(cur, item_id)
            cur.execute(_Q["finish_outbox"], params)

    @_translated
    def fail_outbox(self, item_id: int, error: str, *, dead: bool) -> None:
        """Count a failed attempt; ``dead`` moves it to the dead letters for good."""
        now = self._now()
        with self._write() as cur:
            item = self._outbox_item(cur, item_id)
            state = "dead" if dead else item.state
            params = {"id": item_id, "state": state, "error": error, "now": now}
            cur.execute(_Q["fail_outbox"], params)
            if dead:
                letter = {
                    "source": "outbox",
                    "reference": item.key,
                    "reason": error,
                    "payload": _codec.outbox_letter_payload(item),
                    "now": now,
                }
                cur.execute(_Q["insert_dead_letter"], letter)

    @_translated
    def outbox_depth(self) -> int:
        """How many items are pending."""
        return int(self._read("outbox_depth", {})[0][0])

    @_translated
    def outbox_items(self, state: str | None = None) -> list[OutboxItem]:
        """Items, optionally of one state, oldest first."""
        return [_codec.outbox_from_row(row) for row in self._read("outbox_items", {"state": state})]

    # -- dead letters and audit ------------------------------------------------------------
    @_translated
    def dead_letter(self, source: str, reference: str, reason: str, payload: bytes) -> int:
        """Keep an input that could not be processed; returns its id."""
        params = {
            "source": source,
            "reference": reference,
            "reason": reason,
            "payload": bytes(payload),
            "now": self._now(),
        }
        with self._write() as cur:
            cur.execute(_Q["insert_dead_letter"], params)
            row = cur.fetchone()
        assert row is not None
        return int(row[0])

    @_translated
    def dead_letters(self, *, include_replayed: bool = False) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        rows = self._read("dead_letters", {"include_replayed": include_replayed})
        return [_codec.dead_letter_from_row(row) for row in rows]

    @_translated
    def mark_replayed(self, dead_letter_id: int) -> None:
        """Note that a dead letter was replayed successfully."""
        with self._write() as cur:
            cur.execute(_Q["mark_replayed"], {"id": dead_letter_id})
            if cur.rowcount == 0:
                raise StoreError(f"no dead letter has id {dead_letter_id}")

    @_translated
    def requeue_dead_outbox(self) -> int:
        """Put dead outbox items back to pending, with no attempts; returns how many.

        Their dead letters are marked replayed: if an item dies again, it gets a new one.
        """
        with self._write() as cur:
            cur.execute(_Q["release_outbox_dead_letters"])
            cur.execute(_Q["requeue_dead_outbox"], {"now": self._now()})
            return cur.rowcount

    @_translated
    def audit(self, action: str, reference: str, detail: Mapping[str, Any]) -> None:
        """Record a write the engine made (or attempted) on a server."""
        params = {
            "now": self._now(),
            "action": action,
            "reference": reference,
            "detail": _codec.dumps(dict(detail)),
        }
        with self._write() as cur:
            cur.execute(_Q["insert_audit"], params)

    @_translated
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit records, newest first."""
        rows = self._read("audit_log", {"limit": max(0, limit)})
        return [_codec.audit_from_row(row) for row in rows]
