"""The durable journal: resource versions, snapshots, transitions, outbox, dead letters, audit.

One port (:class:`Store`) and three stores that pass the same contract tests:

- :class:`SqliteStore`: one file, no server (``sqlite:///journal.db``), the default;
- :class:`PostgresStore`: for several workers (``postgresql://...``; needs
  ``pip install 'fhirbridge[postgres]'``);
- :class:`MemoryStore`: nothing durable, for tests (``memory://``).

:func:`open_store` picks one by the URL's scheme and brings its schema up to date.

One writer per journal and server: ``with store.acquire_writer(server):`` around a
``run``/``serve``/``hl7`` refuses a second one with :class:`~fhirbridge.errors.JournalBusy`
naming the :class:`Holder`. On PostgreSQL, workers share a journal through leases
(``lease_lanes``, ``claim_outbox(holder=...)``, ``take_lease``).
"""

from __future__ import annotations

from fhirbridge.errors import ConfigError
from fhirbridge.store._sql import migrations as _migrations
from fhirbridge.store._writer import Holder
from fhirbridge.store.base import (
    DeadLetter,
    EventCount,
    OutboxItem,
    Stay,
    Store,
    StoredTransition,
)
from fhirbridge.store.memory import MemoryStore
from fhirbridge.store.postgres import PostgresStore
from fhirbridge.store.sqlite import SqliteStore

__all__ = [
    "DeadLetter",
    "EventCount",
    "Holder",
    "MemoryStore",
    "OutboxItem",
    "PostgresStore",
    "SqliteStore",
    "Stay",
    "Store",
    "StoredTransition",
    "latest_schema_version",
    "open_store",
]


def latest_schema_version() -> int:
    """The schema version this fhirbridge migrates journals to (``check`` compares a
    journal's :meth:`Store.schema_version` with it)."""
    return len(_migrations("sqlite"))


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the journal at ``url`` and migrate its schema.

    ``create=False`` refuses, with a :class:`~fhirbridge.errors.ConfigError` on ``store.url``,
    a SQLite file that does not exist or a PostgreSQL database (schema) that holds no journal
    yet: a typo in the path must not start an empty journal and reprocess everything.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``,
    ``postgresql://user@host/db`` (or ``postgres://``), ``memory://``. Raises
    :class:`~fhirbridge.errors.ConfigError` for another scheme (the URL is not repeated: it
    may hold a password) and :class:`~fhirbridge.errors.StoreError` when the database fails.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    store: Store
    if scheme == "sqlite":
        store = SqliteStore.from_url(url, create=create)
    elif scheme in ("postgresql", "postgres"):
        store = PostgresStore(url, create=create)
    elif scheme == "memory":
        store = MemoryStore()
    else:
        shown = f"scheme {scheme!r}" if scheme else "a URL without a scheme"
        raise ConfigError(
            f"store.url: {shown} is not a journal; use sqlite:///path.db, "
            "postgresql://user@host/db or memory://"
        )
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
