"""``PostgresStore``: the journal in PostgreSQL, for several workers sharing one database.

Needs the optional extra: ``pip install 'fhirbridge[postgres]'`` (psycopg 3). psycopg is
imported when a store is opened, not when this module is, so the rest of fhirbridge works
without it. The schema comes from the numbered migrations in ``sql/postgres/`` (applied under
an advisory lock, so workers starting together do not race); the queries from
``sql/postgres/queries.sql``. Every psycopg error leaves as a
:class:`~fhirbridge.errors.StoreError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from fhirbridge.errors import ConfigError, StoreError
from fhirbridge.store import _codec
from fhirbridge.store._sql import queries
from fhirbridge.store._sqlbase import _Deferred, translated
from fhirbridge.store._sqlwork import SqlWork
from fhirbridge.store.base import OutboxItem
from fhirbridge.values import ResourceVersion

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

log = structlog.get_logger(__name__)

_INSTALL = "PostgreSQL support is not installed: pip install 'fhirbridge[postgres]'"


def _import_psycopg() -> Any:
    try:
        import psycopg  # optional extra: imported on first use
    except ImportError as exc:
        raise ConfigError(_INSTALL) from exc
    return psycopg


class PostgresStore(SqlWork["psycopg.Cursor[tuple[Any, ...]]"]):
    """The :class:`~fhirbridge.store.base.Store` port on a PostgreSQL database.

    ``dsn`` is a libpq connection string or URL. ``schema`` puts every table in that schema
    (created by ``migrate``) instead of the connection's default; tests use a throwaway one.
    ``clock`` stamps arrivals, detections, dead letters and audit records.

    ``claim_outbox`` selects with ``FOR UPDATE SKIP LOCKED``: it skips rows that another
    transaction holds instead of waiting for them. The rows are locked only while the call
    runs, and a claimed item stays ``pending`` until it is finished or failed, so a worker
    that dies mid-write leaves it claimable, and a worker that claims later may get an item
    another is still writing: the writes are idempotent (conditional create, ``If-Match``).
    ``claim_outbox(holder=...)`` leases the items instead (``claimed_by``, ``lease_until``):
    nobody else gets them until they are finished, failed, or the lease runs out.

    ``create=False`` refuses a database (or schema) that holds no journal yet. The writer
    lock (:meth:`acquire_writer`) is a session advisory lock per schema and server, released
    when the connection closes (the process ended); lanes, polls and outbox items are leased
    with expiry, for several workers (:meth:`lease_lanes`).
    """

    supports_workers = True

    _dialect = "postgres"
    _queries = queries("postgres")
    _label = "PostgreSQL"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        create: bool = True,
        connect_timeout: int = 10,
        clock: _codec.Clock = _codec.system_clock,
    ) -> None:
        psycopg_module = _import_psycopg()
        self._sql = psycopg_module.sql
        self._driver_error = psycopg_module.Error
        self.schema = schema
        self._clock = clock
        self._in_batch = False
        self._dsn, self._connect_timeout = dsn, connect_timeout
        self._locked: set[str] = set()  # servers whose writer lock this session holds
        self._conn = self._connect()
        if not create and self.schema_version() == 0:
            self._conn.close()
            where = f"the schema {schema!r}" if schema else "this database"
            raise ConfigError(
                f"store.url: {where} holds no journal (a typo in the URL?); create a new one "
                "on purpose (fhirbridge --new-journal)"
            )

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        psycopg_module = _import_psycopg()
        try:
            conn: psycopg.Connection[tuple[Any, ...]] = psycopg_module.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg_module.Error as exc:
            # The message names host and port; the DSN itself (and its password) is not shown.
            raise StoreError(f"cannot connect to the PostgreSQL journal: {exc}") from exc
        if self.schema is not None:
            try:
                path = self._sql.SQL("SET search_path TO {}").format(
                    self._sql.Identifier(self.schema)
                )
                conn.execute(path)
            except psycopg_module.Error as exc:
                conn.close()
                raise StoreError(f"cannot use the schema {self.schema!r}: {exc}") from exc
        return conn

    def _live(self) -> None:
        """Connect again when the connection was lost (a database restart, a failover, a
        dropped network): the call that met the loss failed, the next one goes on. Leases
        and counters are rows and survive; a writer lock is the lost session's and does not,
        so a store that held one stays failed (its holder must start again)."""
        if not self._conn.broken or self._in_batch:
            return
        if self._locked:
            raise StoreError(
                "the connection to the PostgreSQL journal was lost, and with it the writer "
                f"lock for {', '.join(sorted(self._locked))}; start the command again"
            )
        self._conn.close()
        self._conn = self._connect()
        log.warning("journal_reconnected", schema=self.schema)

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """One transaction (committed when the block ends, rolled back if it raises).

        ``durable`` changes nothing here: with PostgreSQL's default ``synchronous_commit = on``
        every commit is flushed before it returns. Inside :meth:`batch` it is a savepoint of
        the batch's transaction.
        """
        self._live()
        if self._deferred:
            with self._conn.cursor() as cur:
                self._flush(cur)
        with self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside the block one transaction, committed when the block ends.

        An exception out of the block undoes it all; each store call inside it is a savepoint,
        so a call that fails undoes only its own writes. A nested ``batch`` joins the outer
        one. For the ``complete`` calls of one ``pending`` batch; don't claim or finish outbox
        items inside it.
        """
        if self._in_batch:
            yield
            return
        self._live()
        try:
            with self._conn.transaction():
                self._in_batch, self._deferred = True, _Deferred()
                try:
                    yield
                    with self._conn.cursor() as cur:
                        self._flush(cur)
                finally:
                    self._in_batch, self._deferred = False, None
        except self._driver_error as exc:
            raise self._failure(exc) from exc

    def _read(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        self._live()
        with self._conn.cursor() as cur:
            if self._deferred:
                self._flush(cur)
            cur.execute(self._queries[name], params)
            return cur.fetchall()

    @staticmethod
    def _stamp(moment: datetime) -> datetime:
        return _codec.utc(moment)

    @staticmethod
    def _inserted_id(cur: psycopg.Cursor[tuple[Any, ...]]) -> int:
        row = cur.fetchone()  # the statement ends in RETURNING id
        assert row is not None
        return int(row[0])

    def _prepare_migrations(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        """Wait for the advisory lock (workers migrate one at a time), create the schema."""
        cur.execute(self._queries["migration_lock"])
        if self.schema is not None:
            create = self._sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
            cur.execute(create.format(self._sql.Identifier(self.schema)))

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- resource versions -----------------------------------------------------------------
    @translated
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
                self._queries["insert_version"],
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
                cur.executemany(self._queries["insert_pending"], seqs)
        return new

    # -- the writer lock -------------------------------------------------------------------
    def _lock_writer(self, server: str) -> bool:
        self._live()
        with self._conn.cursor() as cur:
            cur.execute(self._queries["writer_lock"], {"server": server})
            row = cur.fetchone()
        locked = bool(row and row[0])
        if locked:
            self._locked.add(server)
        return locked

    def _unlock_writer(self, server: str) -> None:
        self._locked.discard(server)
        if not self._conn.closed and not self._conn.broken:
            with self._conn.cursor() as cur:
                cur.execute(self._queries["writer_unlock"], {"server": server})

    @staticmethod
    def _ints(values: Iterable[int]) -> list[int]:
        return list(values)

    # -- outbox ----------------------------------------------------------------------------
    def _claim_unleased(self, limit: int) -> list[OutboxItem]:
        """Pending items, oldest first, skipping rows another transaction holds locked."""
        with self._write() as cur:
            cur.execute(self._queries["claim_outbox"], {"limit": max(0, limit)})
            return [_codec.outbox_from_row(row) for row in cur.fetchall()]
