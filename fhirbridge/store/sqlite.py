"""``SqliteStore``: the journal in one SQLite file (the default; no server to run).

One connection in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the
process (a power cut may lose the last commits, never the file), and readers never block the
writer. The schema comes from the numbered migrations in ``sql/sqlite/``, the queries from
``sql/sqlite/queries.sql``. Every ``sqlite3`` error leaves as a
:class:`~fhirbridge.errors.StoreError`.

Speed comes from doing little per call: ``append`` journals a whole batch in one transaction;
``pending`` walks a narrow table of the unprocessed versions; ``complete`` is one short
transaction that never rewrites a version's bytes; :meth:`SqliteStore.batch` lets the engine
commit a whole batch of ``complete`` calls at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from fhirbridge.errors import ConfigError, StoreError
from fhirbridge.store import _codec
from fhirbridge.store._sql import queries
from fhirbridge.store._sqlbase import _Deferred, translated
from fhirbridge.store._sqlwork import SqlWork
from fhirbridge.values import ResourceVersion

__all__ = ["SqliteStore"]


class SqliteStore(SqlWork[sqlite3.Cursor]):
    """The :class:`~fhirbridge.store.base.Store` port on one SQLite file.

    ``path`` is a file (its folder is created) or ``":memory:"``. ``create=False`` refuses a
    file that does not exist yet (a typo in the path would otherwise start an empty journal).
    ``busy_timeout`` is how many seconds a call waits for another process's write lock before
    it fails. ``clock`` stamps arrivals, detections, dead letters and audit records (UTC).

    The writer lock (:meth:`acquire_writer`) is an ``flock`` on ``<path>.writer-<hash>.lock``
    beside the file, one per FHIR server: the kernel releases it when the process ends, so a
    holder that crashed never leaves a stale lock behind. SQLite keeps one writer per server:
    the lane and outbox leases work here too, but several workers belong on PostgreSQL.
    """

    supports_workers = False

    _dialect = "sqlite"
    _queries = queries("sqlite")
    _label = "SQLite"
    _driver_error = sqlite3.Error

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout: float = 5.0,
        clock: _codec.Clock = _codec.system_clock,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._in_batch = False
        self._locks: dict[str, int] = {}  # server -> the lock file's descriptor
        if not create and self.path != ":memory:" and not Path(self.path).is_file():
            raise ConfigError(
                f"store.url: there is no journal at {Path(self.path).resolve()} (a typo in the "
                "path?); create a new one on purpose (fhirbridge --new-journal)"
            )
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite journal {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint every ~40 MB of WAL rather than every 4 MB: each checkpoint syncs the
            # disk twice, and one complete() dirties ~4-9 pages. Measured: ~1.5x the rate of
            # per-version complete() calls. The WAL file is cut back to 64 MB afterwards.
            self._conn.execute("PRAGMA wal_autocheckpoint = 10000")
            self._conn.execute("PRAGMA journal_size_limit = 67108864")
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open the SQLite journal {self.path}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqliteStore:
        """Open ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``."""
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not sep:
            raise ConfigError("store.url: a SQLite URL starts with sqlite:// (sqlite:///path.db)")
        if rest in (":memory:", "/:memory:"):
            return cls(":memory:", **options)
        path = rest[1:] if rest.startswith("/") else ""
        if not path or path.endswith("/"):
            raise ConfigError(
                "store.url: give a database file, as in sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE`` takes the write lock up front).

        ``durable`` commits with ``synchronous = FULL``: the WAL reaches the disk before the
        call returns, so what the engine acknowledges to a sender (``append``, ``dead_letter``)
        survives a power cut. Other commits stay ``NORMAL``: a power cut may undo the last of
        them, and the versions they processed are pending again, to be processed once more.

        Inside :meth:`batch` it is a savepoint of the batch's transaction instead: a call that
        fails undoes its own writes only.
        """
        cursor = self._conn.cursor()
        if self._in_batch:
            self._flush(cursor)
            cursor.execute("SAVEPOINT store_call")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK TO store_call")
                cursor.execute("RELEASE store_call")
                raise
            cursor.execute("RELEASE store_call")
            return
        if durable:  # the level can only change outside a transaction
            cursor.execute("PRAGMA synchronous = FULL")
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                self._conn.rollback()
                raise
            cursor.execute("COMMIT")
        finally:
            if durable:
                cursor.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside the block one ``BEGIN IMMEDIATE`` transaction.

        It commits when the block ends and is undone if the block raises; a call that fails
        inside it undoes only its own writes, and a nested ``batch`` joins it. For the
        ``complete`` calls of one ``pending`` batch; don't claim or finish outbox items inside
        it, nor ``append`` what a sender waits for (it commits with ``synchronous = NORMAL``).
        """
        if self._in_batch:
            yield
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        self._in_batch = True
        self._deferred = _Deferred()
        try:
            yield
        except BaseException:
            self._in_batch, self._deferred = False, None
            with suppress(sqlite3.Error):  # the error that got us here matters more
                self._conn.rollback()
            raise
        try:
            self._flush(self._conn.cursor())
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                self._conn.rollback()
            raise self._failure(exc) from exc
        finally:
            self._in_batch, self._deferred = False, None

    def _read(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        if self._deferred:
            self._flush(self._conn.cursor())
        return self._conn.execute(self._queries[name], params).fetchall()

    # -- the writer lock -------------------------------------------------------------------
    def _lock_path(self, server: str) -> str:
        digest = hashlib.sha256(server.encode()).hexdigest()[:12]
        return f"{self.path}.writer-{digest}.lock"

    def _lock_writer(self, server: str) -> bool:
        """``flock`` the server's lock file (a ``:memory:`` journal is this store's alone)."""
        if server in self._locks:
            return False
        if self.path == ":memory:":
            self._locks[server] = -1
            return True
        try:
            fd = os.open(self._lock_path(server), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the journal's lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock the journal's lock file: {exc}") from exc
        self._locks[server] = fd
        return True

    def _unlock_writer(self, server: str) -> None:
        fd = self._locks.pop(server, -1)
        if fd >= 0:
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _ints(values: Iterable[int]) -> str:
        return json.dumps(list(values))

    @staticmethod
    def _list(values: Sequence[str]) -> str:
        return json.dumps(list(values))

    @staticmethod
    def _stamp(moment: datetime) -> str:
        return _codec.iso(moment)

    @staticmethod
    def _inserted_id(cur: sqlite3.Cursor) -> int:
        letter_id = cur.lastrowid
        assert letter_id is not None
        return letter_id

    @staticmethod
    def _statements(script: str) -> Iterator[str]:
        """Split a migration into statements (``executescript`` would commit on its own)."""
        buffer = ""
        for line in script.splitlines(keepends=True):
            buffer += line
            if sqlite3.complete_statement(buffer):
                yield buffer.strip()
                buffer = ""
        rest = "\n".join(ln for ln in buffer.splitlines() if not ln.strip().startswith("--"))
        if rest.strip():
            raise StoreError(
                f"the migration ends with an unfinished statement: {rest.strip()[:60]}"
            )

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (a WAL checkpoint runs if this is the last one).

        ``PRAGMA optimize`` runs first, as SQLite advises, to keep the planner's statistics
        fresh; closing an already closed store does nothing.
        """
        with suppress(sqlite3.Error):
            self._conn.execute("PRAGMA optimize")
        self._conn.close()
        for server in list(self._locks):
            self._unlock_writer(server)

    # -- resource versions -----------------------------------------------------------------
    @translated
    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Journal versions in one durable transaction; return those that were new.

        One statement per page, whatever its size: the versions are inserted with one
        ``executemany`` (duplicates ignored), then the rows it added (those past the highest
        ``seq`` before it: the transaction holds the write lock) go on the pending list with
        one ``INSERT ... SELECT``, and their keys are read back to tell which were new.
        """
        now = self._now()
        batch = list(versions)
        if not batch:
            return []
        q = self._queries
        with self._write(durable=True) as cur:
            cur.execute(q["last_seq"])
            (before,) = cur.fetchone()
            cur.executemany(q["insert_version"], [_codec.version_params(v, now) for v in batch])
            cur.execute(q["pend_appended"], {"after": before})
            if cur.rowcount == 0:
                return []
            cur.execute(q["appended_keys"], {"after": before})
            added = set(cur.fetchall())
        new: list[ResourceVersion] = []
        for version in batch:
            key = (version.server, version.resource_type, version.id, version.version_id)
            if key in added:
                added.discard(key)  # a duplicate within the page is not new twice
                new.append(version)
        return new
