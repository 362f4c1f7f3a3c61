"""The SQL files: migrations numbered alike in both dialects, recorded, and giving one schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fhirbridge.store import PostgresStore, SqliteStore
from fhirbridge.store._sql import migrations, queries


def test_dialects_have_the_same_migrations() -> None:
    """SQLite and PostgreSQL have the same numbered migrations, 1..n, with the same names."""
    sqlite_list = [(m.version, m.name) for m in migrations("sqlite")]
    postgres_list = [(m.version, m.name) for m in migrations("postgres")]

    assert sqlite_list == postgres_list
    assert [v for v, _ in sqlite_list] == list(range(1, len(sqlite_list) + 1))


def test_both_dialects_name_the_same_data_queries() -> None:
    """Each store's queries.sql defines the same queries, bar the dialect's own helpers."""
    only_postgres = {"migration_lock", "writer_lock", "writer_unlock", "insert_pending"}
    # one writer appends by rowid range; PostgreSQL, with several, reads RETURNING instead
    only_sqlite = {"last_seq", "pend_appended", "appended_keys"}

    assert set(queries("sqlite")) - only_sqlite == set(queries("postgres")) - only_postgres


def test_sqlite_records_each_migration_once(tmp_path: Path) -> None:
    """``schema_version`` lists every migration once, however often migrate runs."""
    path = tmp_path / "journal.db"
    store = SqliteStore(path)
    store.migrate()
    store.migrate()
    store.close()

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    conn.close()

    assert rows == [(m.version, m.name) for m in migrations("sqlite")]


def _sqlite_indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
    conn.close()
    return {name for (name,) in rows}


def _sqlite_columns(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        found = {t: [row[1] for row in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    conn.close()
    return found


@pytest.mark.postgres
def test_sqlite_and_postgres_schemas_agree(
    tmp_path: Path, postgres_url: str, postgres_schema: str
) -> None:
    """After migrating, both have the same tables, columns (in order) and declared indexes."""
    lite = SqliteStore(tmp_path / "journal.db")
    lite.migrate()
    lite.close()
    pg = PostgresStore(postgres_url, schema=postgres_schema)
    pg.migrate()
    pg.migrate()
    pg.close()

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (postgres_schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s"
            " AND indexname NOT LIKE '%%\\_pkey' AND indexname NOT LIKE '%%\\_key'",
            (postgres_schema,),
        ).fetchall()
        versions = conn.execute(
            sql.SQL("SELECT version, name FROM {}.schema_version ORDER BY version").format(
                sql.Identifier(postgres_schema)
            )
        ).fetchall()
    postgres_columns: dict[str, list[str]] = {}
    for table, column in rows:
        postgres_columns.setdefault(table, []).append(column)

    assert _sqlite_columns(tmp_path / "journal.db") == postgres_columns
    assert _sqlite_indexes(tmp_path / "journal.db") == {name for (name,) in indexes}
    assert versions == [(m.version, m.name) for m in migrations("postgres")]


def test_a_journal_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    """A journal written by the first schema migrates to the latest with its data: its pending
    versions stay pending (in lane 0) and are processed as usual."""
    path = tmp_path / "journal.db"
    first = migrations("sqlite")[0]
    with sqlite3.connect(path) as conn:
        conn.executescript(first.sql)
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO schema_version VALUES (1, ?, '2026-11-01T00:00:00+00:00')", (first.name,)
        )
        raw = b'{"resourceType":"Encounter","id":"e1","meta":{"versionId":"1"},"status":"planned"}'
        conn.execute(
            "INSERT INTO resource_version (server, resource_type, resource_id, version_id,"
            " last_updated, raw, received_at) VALUES ('ehr', 'Encounter', 'e1', '1', NULL, ?,"
            " '2026-11-01T00:00:00+00:00')",
            (raw,),
        )
        conn.execute("INSERT INTO pending_version (seq) VALUES (1)")
    conn.close()

    store = SqliteStore(path)
    try:
        assert store.schema_version() == 1
        store.migrate()
        assert store.schema_version() == len(migrations("sqlite"))
        (old,) = store.pending()
        assert old.reference == "Encounter/e1"
        assert store.pending_in_lanes([0], lane_count=64) == [old]
        store.complete(old)
        assert store.pending() == []
    finally:
        store.close()
