"""Group commit: journal the versions of concurrent notifications in one transaction.

A notification is acknowledged only once its versions are durable in the journal. One SQLite
transaction per request costs more than the request itself under load, so requests that
reach the journal within ``window`` seconds of each other (at most ``limit`` versions) are
appended together with one ``Store.append``, then every one of them is answered. This is
``Bridge.ingest`` in two halves: each request builds its ``ResourceVersion`` values (parsing
its body once), the commit appends them all. The store is called on the event loop's
thread only, like every other store call of the receiver and its worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from fhirbridge.errors import StoreError
from fhirbridge.values import ResourceVersion

__all__ = ["GroupCommit"]


class GroupCommit:
    """Batches appends; :meth:`append` returns once its versions are journalled.

    ``on_commit(new_versions, seconds)`` is told about every batch (metrics, waking the
    worker). An error of the journal fails every request of the batch alike, as a
    :class:`~fhirbridge.errors.StoreError` (the sender is told to retry) whatever the store
    raised.
    """

    def __init__(
        self,
        store_append: Callable[[Sequence[ResourceVersion]], list[ResourceVersion]],
        *,
        window: float = 0.002,
        limit: int = 500,
        on_commit: Callable[[list[ResourceVersion], float], None] | None = None,
    ) -> None:
        self.store_append = store_append
        self.window = window
        self.limit = limit
        self.on_commit = on_commit
        self._queue: list[tuple[Sequence[ResourceVersion], asyncio.Future[int]]] = []
        self._queued = 0
        self._timer: asyncio.Handle | None = None

    @property
    def waiting(self) -> int:
        """How many resources wait for the next commit."""
        return self._queued

    async def append(self, versions: Sequence[ResourceVersion]) -> int:
        """Journal ``versions`` (with whatever else is waiting); returns how many versions
        of the whole batch were new."""
        if not versions:
            return 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.append((versions, future))
        self._queued += len(versions)
        if self._queued >= self.limit:
            self.flush()
        elif self._timer is None:
            self._timer = (
                loop.call_later(self.window, self.flush)
                if self.window > 0
                else loop.call_soon(self.flush)
            )
        return await future

    def flush(self) -> None:
        """Append everything waiting now, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue, self._queued = self._queue, [], 0
        if not batch:
            return
        started = time.perf_counter()
        try:
            new = self.store_append([v for versions, _ in batch for v in versions])
        except Exception as exc:  # every waiter gets the journal's error
            if not isinstance(exc, StoreError):
                exc = StoreError(f"the journal append failed: {type(exc).__name__}: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if self.on_commit is not None:
            self.on_commit(new, time.perf_counter() - started)
        for _, future in batch:
            if not future.done():
                future.set_result(len(new))
