"""Keep SQLite's WAL checkpoints off the event loop.

In WAL mode a commit that finds the write-ahead log past 1,000 pages copies it into the
database and fsyncs both, inside that commit: 20 to 150 ms on the disks measured, during
which the receiver's event loop (where the journal and the worker commit) answers nobody.
A daemon thread with a connection of its own runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
``interval`` seconds, so the log stays short and the loop's commits never reach the
threshold. A passive checkpoint never blocks readers or writers; the thread's fsyncs run
without the GIL.
"""

from __future__ import annotations

import sqlite3
import threading

import structlog

from fhirbridge.store.base import Store
from fhirbridge.store.sqlite import SqliteStore

__all__ = ["WalCheckpointer"]

log = structlog.get_logger(__name__)


class WalCheckpointer:
    """A background checkpointer for one SQLite journal file (a no-op for other stores)."""

    def __init__(self, store: Store, *, interval: float = 0.1) -> None:
        path = store.path if isinstance(store, SqliteStore) else None
        self.path = path if path and path != ":memory:" else None
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (when the store is a SQLite file)."""
        if self.path is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="fhirbridge-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        assert self.path is not None
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("wal_checkpointer_unavailable", error=str(exc))
            return
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or locked now: the next round will do
                    log.debug("wal_checkpoint_skipped", error=str(exc))
        finally:
            conn.close()
