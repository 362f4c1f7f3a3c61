"""What only the PostgreSQL store promises: workers that claim at once get different items,
receivers that count events at once lose none."""

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


def test_receivers_recording_at_once_count_every_event(
    postgres_url: str, postgres_schema: str
) -> None:
    """Four receivers (own connections) recording interleaved event numbers of one
    subscription at once end with every number counted, none twice, no gap left."""
    first = PostgresStore(postgres_url, schema=postgres_schema)
    first.migrate()
    stores = [first, *(PostgresStore(postgres_url, schema=postgres_schema) for _ in range(3))]
    start = threading.Barrier(len(stores))
    duplicates: list[int] = []
    errors: list[BaseException] = []

    def receive(index: int, store: PostgresStore) -> None:
        start.wait()
        try:
            for number in range(index + 1, 201, len(stores)):
                counted = store.record_events("ehr", "sub-1", [number, max(1, number - 1)])
                duplicates.append(counted.duplicates)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=receive, args=pair) for pair in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        final = first.record_events("ehr", "sub-1", [])
        assert (final.contiguous, final.highest, final.gap) == (200, 200, False)
        # every number below 200 comes again with its successor (and 1 also twice at first)
        assert sum(duplicates) == 200
    finally:
        for store in stores:
            store.close()


def _terminate(postgres_url: str, store: PostgresStore) -> None:
    """End the store's database session from outside (what a restart or failover does)."""
    pid = store._conn.info.backend_pid
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_connection_is_opened_again_on_the_next_call(
    postgres_url: str, postgres_schema: str
) -> None:
    """After the database ends the session, the call that meets the loss fails with a
    StoreError and the next one connects again, in the same schema: a worker's next pass goes
    on instead of failing forever."""
    from fhirbridge.errors import StoreError

    store = PostgresStore(postgres_url, schema=postgres_schema)
    store.migrate()
    store.enqueue([OutboxItem(key="t0", kind="create-task", payload={})])
    try:
        _terminate(postgres_url, store)
        with pytest.raises(StoreError):
            store.outbox_depth()
        assert store.outbox_depth() == 1  # connected again, still in its schema
        store.enqueue([OutboxItem(key="t1", kind="create-task", payload={})])
        assert [i.key for i in store.claim_outbox()] == ["t0", "t1"]
    finally:
        store.close()


def test_a_lost_writer_lock_is_said_not_reconnected_over(
    postgres_url: str, postgres_schema: str
) -> None:
    """A session that held the writer lock does not connect again silently while the lock
    is still thought held: the lock went with the session, so the store says so (releasing
    it, too) until the block that held it has ended."""
    from fhirbridge.errors import StoreError

    store = PostgresStore(postgres_url, schema=postgres_schema)
    store.migrate()
    try:
        held = store.acquire_writer("default")
        held.__enter__()
        _terminate(postgres_url, store)
        with pytest.raises(StoreError):
            store.outbox_depth()
        with pytest.raises(StoreError, match="writer lock"):
            store.outbox_depth()
        with pytest.raises(StoreError, match="writer lock"):
            held.__exit__(None, None, None)
        assert store.outbox_depth() == 0  # the lock is given up: connected again
    finally:
        store.close()
