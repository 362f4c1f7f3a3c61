"""Opening a journal: ``open_store`` by URL, the public names, and errors at the boundary."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import fhirbridge.store
from fhirbridge.errors import ConfigError, StoreError
from fhirbridge.store import (
    MemoryStore,
    PostgresStore,
    SqliteStore,
    Store,
    latest_schema_version,
    open_store,
)
from fhirbridge.values import ResourceVersion


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted and names exactly the public objects the package defines."""
    names = fhirbridge.store.__all__
    defined = {
        name
        for name, value in vars(fhirbridge.store).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("fhirbridge.store")
    }
    assert names == sorted(names)
    assert set(names) == defined


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        # the in-memory journal, for tests
        ("memory://", MemoryStore),
        # SQLite kept in memory
        ("sqlite://:memory:", SqliteStore),
        # the same, spelled with three slashes
        ("sqlite:///:memory:", SqliteStore),
    ],
)
def test_open_store_by_scheme(url: str, kind: type[Store]) -> None:
    """The URL's scheme picks the store, which comes back migrated and usable."""
    store = open_store(url)
    try:
        assert isinstance(store, kind)
        assert store.pending() == []
        assert store.outbox_depth() == 0
    finally:
        store.close()


def test_open_store_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three slashes give a path relative to the working folder, four an absolute one."""
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///state/journal.db")
    relative.close()
    absolute = open_store(f"sqlite:///{tmp_path / 'abs' / 'journal.db'}")
    absolute.close()

    assert (tmp_path / "state" / "journal.db").is_file()
    assert (tmp_path / "abs" / "journal.db").is_file()


@pytest.mark.parametrize(
    "url",
    [
        # another database
        "mysql://fhir:secret-password@db.example/journal",
        # no scheme at all
        "journal.db",
        # a SQLite URL with no file
        "sqlite://",
        # a SQLite URL that names a host instead of a path
        "sqlite://journal.db",
    ],
)
def test_open_store_rejects_other_urls(url: str) -> None:
    """A URL that names no journal is a ConfigError on ``store.url``, with no password shown."""
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        open_store(url)

    assert "secret-password" not in str(caught.value)


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the postgres extra missing, opening PostgreSQL explains how to install it."""
    monkeypatch.setitem(sys.modules, "psycopg", None)

    with pytest.raises(ConfigError, match=r"pip install 'fhirbridge\[postgres\]'"):
        open_store("postgresql://postgres@127.0.0.1:5432/test")


def test_sqlite_journal_is_in_wal_mode(tmp_path: Path) -> None:
    """The SQLite file is switched to write-ahead logging (readers never block the writer)."""
    path = tmp_path / "journal.db"
    store = SqliteStore(path)
    store.migrate()
    store.close()

    with sqlite3.connect(path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()

    assert mode == "wal"


def test_sqlite_syncs_appends_but_not_completes(tmp_path: Path) -> None:
    """After a durable ``append`` the connection is back to ``synchronous = NORMAL`` (1)."""
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    raw = b'{"resourceType":"Encounter","id":"e1","meta":{"versionId":"1"},"status":"planned"}'
    try:
        store.append([ResourceVersion.from_json("ehr", raw)])
        (level,) = store._conn.execute("PRAGMA synchronous").fetchone()  # private: no API for it
    finally:
        store.close()

    assert level == 1


def test_sqlite_errors_become_store_errors(tmp_path: Path) -> None:
    """A file that is not a database, or a folder in the way, gives StoreError with a cause."""
    garbage = tmp_path / "journal.db"
    garbage.write_bytes(b"this is not a SQLite database, it is a text file" * 20)
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")

    with pytest.raises(StoreError) as not_a_database:
        SqliteStore(garbage)
    with pytest.raises(StoreError) as no_folder:
        SqliteStore(blocked / "journal.db")

    assert isinstance(not_a_database.value.__cause__, sqlite3.DatabaseError)
    assert isinstance(no_folder.value.__cause__, OSError)


@pytest.mark.postgres
def test_open_store_postgres_url(postgres_url: str, postgres_schema: str) -> None:
    """A ``postgresql://`` URL opens a PostgresStore and migrates where search_path points."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
    url = f"{postgres_url}?options=-csearch_path%3D{postgres_schema}"

    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.enqueue([]) == 0
        assert store.outbox_depth() == 0
    finally:
        store.close()
    with psycopg.connect(postgres_url) as admin:
        row = admin.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
            (postgres_schema,),
        ).fetchone()
    assert row is not None
    assert row[0] > 5


@pytest.mark.postgres
def test_postgres_connection_failure_is_a_store_error() -> None:
    """A server that does not answer gives StoreError, with psycopg's error as the cause."""
    with pytest.raises(StoreError, match="cannot connect") as caught:
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)

    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_open_store_without_create_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    """``create=False`` refuses a journal path that does not exist, creating nothing; an
    existing journal opens as usual."""
    missing = tmp_path / "jounral.db"
    with pytest.raises(ConfigError, match=r"store\.url: there is no journal at .*jounral\.db"):
        open_store(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    assert not missing.parent.joinpath("jounral.db-wal").exists()

    open_store(f"sqlite:///{tmp_path / 'journal.db'}").close()
    store = open_store(f"sqlite:///{tmp_path / 'journal.db'}", create=False)
    try:
        assert store.schema_version() == latest_schema_version()
    finally:
        store.close()


def test_schema_version_before_and_after_migrate(tmp_path: Path) -> None:
    """An empty SQLite file is at schema 0 until ``migrate``."""
    store = SqliteStore(tmp_path / "journal.db")
    try:
        assert store.schema_version() == 0
        store.migrate()
        assert store.schema_version() == latest_schema_version()
    finally:
        store.close()


@pytest.mark.postgres
def test_open_store_without_create_refuses_an_empty_postgres_schema(
    postgres_url: str, postgres_schema: str
) -> None:
    """On PostgreSQL ``create=False`` refuses a schema that holds no journal yet."""
    with pytest.raises(ConfigError, match=r"store\.url: the schema .* holds no journal"):
        PostgresStore(postgres_url, schema=postgres_schema, create=False)
    creator = PostgresStore(postgres_url, schema=postgres_schema)
    creator.migrate()
    creator.close()
    store = PostgresStore(postgres_url, schema=postgres_schema, create=False)
    try:
        assert store.schema_version() == latest_schema_version()
    finally:
        store.close()
