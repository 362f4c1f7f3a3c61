"""Workers over one PostgreSQL journal, as real processes: lanes shared out, every version
processed exactly once and each patient's in order, and a killed worker's lanes taken over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from contextlib import ExitStack

import pytest

from fhirbridge.store import Holder, PostgresStore
from fhirbridge.values import ResourceVersion

pytestmark = pytest.mark.postgres

#: A worker: waits for a line on stdin, then leases lanes, processes their pending versions
#: (audit + complete in one transaction), renews, and stops once nothing is pending for a
#: while. ``delay`` slows it down per version.
WORKER = textwrap.dedent(
    """
    import sys, time
    from fhirbridge.store import Holder, PostgresStore
    url, schema, name, delay, lease = sys.argv[1:6]
    store = PostgresStore(url, schema=schema)
    me = Holder.here(f"worker {name}")
    print("started", flush=True)
    sys.stdin.readline()  # the start line: workers begin together
    idle_since = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lanes = store.lease_lanes(me, lanes=8, seconds=float(lease))
        batch = store.pending_in_lanes(lanes, lane_count=8, limit=5)
        if not batch:
            if store.pending(1):
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.0:
                break
            time.sleep(0.05)
            continue
        for version in batch:
            with store.batch():
                store.audit("processed", f"{version.reference}/{version.version_id}",
                            {"worker": name, "lanes": sorted(lanes)})
                store.complete(version)
            time.sleep(float(delay))
    store.release_lanes(me)
    store.close()
    """
)

PATIENTS = 16
VERSIONS = 5  # per patient: one Encounter with five versions


def journal(url: str, schema: str) -> PostgresStore:
    """The shared journal, migrated, with every patient's versions pending."""
    store = PostgresStore(url, schema=schema)
    store.migrate()
    versions = [
        ResourceVersion.from_json(
            "ehr",
            json.dumps(
                {
                    "resourceType": "Encounter",
                    "id": f"e{p}",
                    "meta": {"versionId": str(v)},
                    "status": "in-progress" if v < VERSIONS else "finished",
                    "subject": {"reference": f"Patient/p{p}"},
                }
            ).encode(),
        )
        for v in range(1, VERSIONS + 1)
        for p in range(PATIENTS)
    ]
    store.append(versions)
    return store


def worker(
    stack: ExitStack, url: str, schema: str, name: str, *, delay: float, lease: float
) -> subprocess.Popen[str]:
    """Start a worker process (stopped at the end of the test if still running)."""
    child = stack.enter_context(
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, schema, name, str(delay), str(lease)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    stack.callback(lambda: child.poll() is None and child.kill())
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    return child


def go(*children: subprocess.Popen[str]) -> None:
    """Let the workers start."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()


def processed(store: PostgresStore) -> list[tuple[str, str]]:
    """``(Encounter/e<n>/<version>, worker)`` in the order the versions were processed."""
    log = sorted(store.audit_log(limit=10_000), key=lambda record: record["id"])
    return [(r["reference"], r["detail"]["worker"]) for r in log if r["action"] == "processed"]


def check_exactly_once_in_order(done: list[tuple[str, str]]) -> None:
    """Every version processed once, each patient's versions in version order."""
    counts = Counter(reference for reference, _ in done)
    assert len(counts) == PATIENTS * VERSIONS
    assert set(counts.values()) == {1}
    order: dict[str, list[int]] = defaultdict(list)
    for reference, _ in done:
        encounter, _, version_id = reference.rpartition("/")
        order[encounter].append(int(version_id))
    assert all(seen == list(range(1, VERSIONS + 1)) for seen in order.values())


def test_two_workers_share_the_lanes(postgres_url: str, postgres_schema: str) -> None:
    """Two workers started together each process some lanes; nothing twice, nothing out of
    order, nothing left pending or leased."""
    store = journal(postgres_url, postgres_schema)
    try:
        with ExitStack() as stack:
            workers = [
                worker(stack, postgres_url, postgres_schema, name, delay=0.02, lease=5)
                for name in ("a", "b")
            ]
            go(*workers)
            for child in workers:
                assert child.wait(timeout=90) == 0
        done = processed(store)
        check_exactly_once_in_order(done)
        assert {name for _, name in done} == {"a", "b"}
        assert store.pending(10) == []
        assert store.leased_outbox() == 0
        probe = Holder.here("probe")  # neither worker: every lane was released
        assert store.lease_lanes(probe, lanes=8, seconds=1) == frozenset(range(8))
    finally:
        store.close()


def test_a_killed_workers_lanes_are_taken_over(postgres_url: str, postgres_schema: str) -> None:
    """A worker killed with SIGKILL mid-run stops renewing; after its leases expire the other
    takes its lanes over and finishes the work, still exactly once and in order."""
    store = journal(postgres_url, postgres_schema)
    try:
        with ExitStack() as stack:
            victim = worker(stack, postgres_url, postgres_schema, "a", delay=0.05, lease=2)
            go(victim)
            deadline = time.monotonic() + 30
            while not processed(store) and time.monotonic() < deadline:
                time.sleep(0.05)
            survivor = worker(stack, postgres_url, postgres_schema, "b", delay=0.0, lease=2)
            go(survivor)
            time.sleep(0.3)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            assert survivor.wait(timeout=90) == 0
        done = processed(store)
        check_exactly_once_in_order(done)
        assert {name for _, name in done} == {"a", "b"}
        assert store.takeovers() > 0
        assert store.pending(10) == []
    finally:
        store.close()
