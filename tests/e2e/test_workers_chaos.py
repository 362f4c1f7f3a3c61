"""Chaos: three ``fhirbridge run`` workers over one PostgreSQL journal, one of them killed with
SIGKILL at seeded random moments and started again, while discharges keep arriving.

Afterwards every Task the journal planned exists exactly once on the server (none retired as
a duplicate), no outbox item is left leased, each patient's transitions were journalled in
the order their versions arrived, and nothing was dead-lettered. Runs against the machine's
PostgreSQL (``FHIRBRIDGE_TEST_POSTGRES`` overrides the URL); skipped only when none answers.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.workers import POSTGRES, WorkerPool, journal_schema, postgres_url
from benchmarks.writeback import Proxy, cohort, load
from fhirbridge.testing.sekmet import SekmetServer

SEED = 20261202
KILLS = 20
PATIENTS = 24
STAYS = 2
CHUNKS = 8  # the cohort arrives in this many parts while the kills go on


@pytest.fixture
def database() -> str:
    """The machine's PostgreSQL, or a skip that says so."""
    url = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES} (FHIRBRIDGE_TEST_POSTGRES)")
    return url


@pytest.fixture
def pool(tmp_path: Path, database: str) -> Iterator[tuple[WorkerPool, SekmetServer]]:
    """A sekmet server behind a 10 ms proxy and three workers' configuration on a journal."""
    with SekmetServer.start(tmp_path / "sekmet") as server, journal_schema(database) as schema:
        proxy = Proxy(server.base_url, 0.01)
        try:
            workers = WorkerPool(
                tmp_path,
                base_url=proxy.base_url,
                url=database,
                schema=schema,
                lease_seconds=2.0,
                poll_interval=0.3,
            )
            yield workers, server
        finally:
            proxy.stop()


def patient_chunks() -> list[list[dict[str, Any]]]:
    """The cohort's transaction entries, split into parts of whole patients."""
    entries = cohort(PATIENTS, STAYS, SEED)
    starts = [i for i, e in enumerate(entries) if e["resource"]["resourceType"] == "Patient"]
    ends = [*starts[1:], len(entries)]
    size = -(-len(starts) // CHUNKS)  # patients per part, rounded up
    return [
        entries[starts[i] : ends[min(i + size, len(starts)) - 1]]
        for i in range(0, len(starts), size)
    ]


def test_killed_workers_lose_nothing_and_duplicate_nothing(
    pool: tuple[WorkerPool, SekmetServer],
) -> None:
    """20 SIGKILLs of random workers at random moments among three, each restarted: every
    planned Task once on the server, no lease left, per-patient order kept, no dead letter."""
    workers, server = pool
    rng = random.Random(SEED)
    chunks = patient_chunks()
    for index in range(3):
        workers.start(index)
    deadline = time.monotonic() + 90
    for kill in range(KILLS):
        if kill % (KILLS // len(chunks) or 1) == 0 and chunks:
            load(server, chunks.pop(0))
        time.sleep(rng.uniform(0.2, 1.2))
        victim = rng.randrange(3)
        workers.kill(victim)
        workers.start(victim)
        assert time.monotonic() < deadline, "the kills took too long"
    for chunk in chunks:
        load(server, chunk)

    workers.wait_done(PATIENTS * STAYS, within=60, settle=3.0)
    ready = time.monotonic() + 30
    while not workers.running():  # the last one started is past its start-up
        assert time.monotonic() < ready, "a restarted worker did not start"
        time.sleep(0.1)
    assert workers.stop() == [0, 0, 0]  # a clean stop after the chaos

    store = workers.store()
    try:
        assert store.dead_letters() == []
        assert store.leased_outbox() == 0
        assert store.outbox_items("pending") == [] and store.outbox_items("dead") == []
        planned = {
            item.key.removeprefix("task:")
            for item in store.outbox_items("done")
            if item.kind == "create-task"
        }
        transitions = store.transitions()
        import psycopg

        with psycopg.connect(workers.store_url) as conn:
            rows = conn.execute(
                "SELECT seq, resource_type, resource_id, version_id FROM resource_version"
            ).fetchall()
            leased = conn.execute("SELECT count(*) FROM outbox WHERE claimed_by IS NOT NULL")
            assert leased.fetchone() == (0,)
    finally:
        store.close()

    tasks = httpx.get(f"{server.base_url}/Task", params={"_count": 1000}, timeout=60).json()
    resources = [e["resource"] for e in tasks.get("entry", [])]
    assert len(resources) == tasks["total"]
    engine = [
        ident["value"]
        for task in resources
        for ident in task.get("identifier", [])
        if "fhirbridge" in ident.get("system", "")
    ]
    counts = Counter(engine)
    assert planned and set(counts) == planned  # every planned Task is there ...
    assert max(counts.values()) == 1  # ... once
    assert all(task["status"] != "entered-in-error" for task in resources)
    assert len([t for t in transitions if t.transition.kind.value == "discharge"]) == (
        PATIENTS * STAYS
    )

    arrival = {(f"{t}/{i}", v): seq for seq, t, i, v in rows}
    by_patient: dict[str, list[int]] = defaultdict(list)
    for stored in transitions:  # journal order
        t = stored.transition
        seq = arrival.get((t.focus.split("/_history")[0], t.focus_version))
        if seq is not None:
            by_patient[t.patient].append(seq)
    assert by_patient
    for patient, seqs in by_patient.items():
        assert seqs == sorted(seqs), f"{patient}: transitions out of version order"
    assert workers.started >= 3 + KILLS
