"""The durable journal: resource versions, snapshots, transitions, outbox, dead letters, audit.

One port (:class:`Store`) and three stores that pass the same contract tests:

- :class:`SqliteStore`: one file, no server (``sqlite:///journal.db``), the default;
- :class:`PostgresStore`: for several workers (``postgresql://...``; needs
  ``pip install 'fhirbridge[postgres]'``);
- :class:`MemoryStore`: nothing durable, for tests (``memory://``).

:func:`open_store` picks one by the URL's scheme and brings its schema up to date.
"""

from __future__ import annotations

from fhirbridge.errors import ConfigError
from fhirbridge.store.base import DeadLetter, OutboxItem, Store, StoredTransition
from fhirbridge.store.memory import MemoryStore
from fhirbridge.store.postgres import PostgresStore
from fhirbridge.store.sqlite import SqliteStore

__all__ = [
    "DeadLetter",
    "MemoryStore",
    "OutboxItem",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoredTransition",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open the journal at ``url`` and migrate its schema.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``,
    ``postgresql://user@host/db`` (or ``postgres://``), ``memory://``. Raises
    :class:`~fhirbridge.errors.ConfigError` for another scheme (the URL is not repeated: it
    may hold a password) and :class:`~fhirbridge.errors.StoreError` when the database fails.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    store: Store
    if scheme == "sqlite":
        store = SqliteStore.from_url(url)
    elif scheme in ("postgresql", "postgres"):
        store = PostgresStore(url)
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
