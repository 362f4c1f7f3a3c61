"""What only the PostgreSQL store promises: workers that claim at once get different items."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from fhirbridge.store import OutboxItem, PostgresStore

pytestmark = pytest.mark.postgres


def test_claim_skips_items_another_worker_holds(postgres_url: str, postgres_schema: str) -> None:
    """An item locked by another transaction is skipped, not waited for nor handed out twice."""
    store = PostgresStore(postgres_url, schema=postgres_schema)
    store.migrate()
    store.enqueue([OutboxItem(key=f"t{n}", kind="create-task", payload={"n": n}) for n in range(3)])
    try:
        with psycopg.connect(postgres_url) as other_worker:
            other_worker.execute(
                sql.SQL("SELECT id FROM {}.outbox WHERE key = %s FOR UPDATE").format(
                    sql.Identifier(postgres_schema)
                ),
                ("t0",),
            )
            assert [i.key for i in store.claim_outbox()] == ["t1", "t2"]
            other_worker.rollback()
        assert [i.key for i in store.claim_outbox()] == ["t0", "t1", "t2"]
    finally:
        store.close()


def test_workers_migrating_together_apply_each_migration_once(
    postgres_url: str, postgres_schema: str
) -> None:
    """Four workers migrating one new schema at once all succeed; the advisory lock serialises."""
    stores = [PostgresStore(postgres_url, schema=postgres_schema) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate(store: PostgresStore) -> None:
        start.wait()
        try:
            store.migrate()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        stores[1].enqueue([OutboxItem(key="t1", kind="create-task", payload={})])
        assert [i.key for i in stores[0].outbox_items()] == ["t1"]
    finally:
        for store in stores:
            store.close()
