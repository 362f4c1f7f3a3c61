"""Fixtures for the store contract: one ``store`` per backend (SQLite, memory, PostgreSQL).

PostgreSQL is the server on 127.0.0.1:5432 (database ``test``, trust auth, user ``postgres``
or ``root``; ``FHIRBRIDGE_TEST_POSTGRES`` overrides the URL). Each test gets its own schema,
dropped afterwards. When no server answers, only the PostgreSQL cases are skipped.

``data/Encounter-*.json`` are copied unchanged from the official FHIR R4 examples (npm package
``hl7.fhir.r4.examples`` 4.0.1, CC0-1.0).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fhirbridge.store import MemoryStore, PostgresStore, SqliteStore, Store

POSTGRES_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


class TickingClock:
    """A clock that starts at a fixed instant and moves one second each time it is read."""

    def __init__(self, start: datetime = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


@dataclass
class Backend:
    """One kind of store, and how to open (or reopen) the same database."""

    name: str
    factory: Callable[[], Store]
    durable: bool
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        """Open a store on this backend's database and migrate it."""
        store = self.factory()
        self.opened.append(store)
        store.migrate()
        return store


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable PostgreSQL server, or skip the test."""
    candidates = (
        [os.environ["FHIRBRIDGE_TEST_POSTGRES"]] if "FHIRBRIDGE_TEST_POSTGRES" in os.environ else []
    )
    problems: list[str] = []
    for url in [*candidates, *POSTGRES_URLS]:
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error as exc:
            problems.append(str(exc).strip().splitlines()[0])
    pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {'; '.join(problems)}")


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema name; the schema (whoever created it) is dropped after the test."""
    name = f"fhirbridge_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def clock() -> TickingClock:
    """The clock every store of a test shares."""
    return TickingClock()


@pytest.fixture(
    params=[
        "sqlite",
        "memory",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: TickingClock
) -> Iterator[Backend]:
    """Each backend in turn; every store it opened is closed afterwards."""
    if request.param == "sqlite":
        path = tmp_path / "journal.db"
        backend = Backend("sqlite", lambda: SqliteStore(path, clock=clock), durable=True)
    elif request.param == "memory":
        backend = Backend("memory", lambda: MemoryStore(clock=clock), durable=False)
    else:
        url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("postgres_schema")
        backend = Backend(
            "postgres", lambda: PostgresStore(url, schema=schema, clock=clock), durable=True
        )
    yield backend
    for store in backend.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    """A migrated, empty store of the backend under test."""
    return backend.open()
