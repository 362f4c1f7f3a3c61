"""A worker starting on a PostgreSQL journal of an older schema upgrades it in place: the
outbox items it held keep working, in lane 0, for whichever worker holds that lane."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from fhirbridge.store import Holder, latest_schema_version, open_store
from fhirbridge.store._sql import migrations

pytestmark = pytest.mark.postgres


def test_a_journal_of_schema_2_is_upgraded_when_a_worker_opens_it(
    postgres_url: str, postgres_schema: str
) -> None:
    """A journal migrated to 0002 with an outbox item: ``open_store`` (what ``run`` does
    first) brings it to the latest schema; the old item is in lane 0 and leased by lane."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(postgres_schema)))
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL)"
        )
        for migration in migrations("postgres")[:2]:
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s, now())",
                (migration.version, migration.name),
            )
        conn.execute(
            "INSERT INTO outbox (key, kind, payload, created_at, updated_at) VALUES"
            " ('task:old', 'create-task', '{}'::jsonb, now(), now())"
        )

    store = open_store(f"{postgres_url}?options=-csearch_path%3D{postgres_schema}")
    try:
        assert store.schema_version() == latest_schema_version() >= 3
        me = Holder.here("test")
        assert store.claim_outbox(10, holder=me, lanes=[1], lane_count=2) == []
        (old,) = store.claim_outbox(10, holder=me, lanes=[0], lane_count=2)
        assert old.key == "task:old"
    finally:
        store.close()
