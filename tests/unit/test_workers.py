"""Workers sharing one journal: each processes and writes only the patient lanes it leases,
one polls, and a worker that stops renewing has its lanes and its poll taken over.

Two engines over one in-memory journal and one in-memory FHIR server (the PostgreSQL runs are
in ``tests/store/test_chaos_workers.py``); the journal's clock is moved by hand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.pipeline import WorkerLeases, poll_lease_name
from fhirbridge.service import PollingService
from fhirbridge.store import Holder, MemoryStore
from fhirbridge.store.lanes import item_lane, version_lane
from fhirbridge.testing import builders
from fhirbridge.testing.fhirfake import FakeFhirServer
from fhirbridge.values import ResourceVersion

DATA = Path(__file__).parent.parent / "data"
PATIENTS = 12
LANES = 4
SINCE = datetime.now(UTC) - timedelta(days=1)


class Clock:
    """The journal's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


#: The official example's discharge disposition, made "home" (what the default rules act on).
HOME = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition"}]}
HOME["coding"][0]["code"] = "home"


def discharged(fake: FakeFhirServer, n: int) -> None:
    """Patient ``p<n>`` with a stay (the official Encounter example) that ended two hours ago."""
    ended = datetime.now(UTC) - timedelta(hours=2)
    patient = json.loads((DATA / "Patient-example.json").read_text())
    fake.put({**patient, "id": f"p{n}"})
    stay = json.loads((DATA / "Encounter-example.json").read_text())
    stay.update(id=f"e{n}", subject={"reference": f"Patient/p{n}"}, status="finished")
    stay["period"] = {"start": (ended - timedelta(days=3)).isoformat(), "end": ended.isoformat()}
    stay["hospitalization"] = {"dischargeDisposition": HOME}
    fake.put(stay)


def worker(name: str, fake: FakeFhirServer, store: MemoryStore) -> Bridge:
    """An engine called ``name`` sharing ``store`` with the others, on ``LANES`` lanes."""
    config = load_config(
        data={
            "fhir": {"base_url": fake.base_url, "retry": {"attempts": 1}},
            "store": {"url": "memory://"},
            "engine": {"risk": False, "watch": ["Patient", "Encounter"]},
        }
    )
    holder = Holder(worker=name, host="test", pid=1, command=name, since=datetime.now(UTC))
    leases = WorkerLeases(store, holder=holder, seconds=30, lanes=LANES)
    return Bridge(config, client=fake.client(), store=store, leases=leases)


@pytest.fixture
def clock() -> Clock:
    """The journal's clock."""
    return Clock()


@pytest.fixture
async def pair(clock: Clock) -> AsyncIterator[tuple[FakeFhirServer, MemoryStore, Bridge, Bridge]]:
    """A server with ``PATIENTS`` discharges, a journal, and workers a and b on it."""
    fake, store = FakeFhirServer(), MemoryStore(clock=clock)
    for n in range(PATIENTS):
        discharged(fake, n)
    a, b = worker("a", fake, store), worker("b", fake, store)
    yield fake, store, a, b
    await a.aclose()
    await b.aclose()


def lane_of_task(task: dict[str, object]) -> int:
    """The lane of a Task's patient."""
    patient = task["for"]["reference"]  # type: ignore[index]
    return version_lane(
        ResourceVersion.from_json("x", {"resourceType": "Patient", "id": patient.split("/")[1]}),
        LANES,
    )


def polls(fake: FakeFhirServer) -> int:
    """How many watermark searches (polls) the server was sent."""
    return sum(1 for r in fake.requests if "_lastUpdated" in str(r.url))


async def test_each_worker_processes_and_writes_only_its_lanes(
    pair: tuple[FakeFhirServer, MemoryStore, Bridge, Bridge],
) -> None:
    """a and b split the lanes; a polls and handles its lanes' patients only, leaving the
    others pending; b, not polling, handles the rest. Every Task is written once, by the
    worker of its patient's lane, and nothing stays pending or leased."""
    fake, store, a, b = pair
    assert a.leases is not None and b.leases is not None
    a.leases.rebalance()
    b.leases.rebalance()
    a.leases.rebalance()  # a gives b its share
    b.leases.rebalance()
    mine, theirs = a.leases.held, b.leases.held
    assert len(mine) == len(theirs) == LANES // 2 and not mine & theirs

    await a.run_once(since=SINCE)
    assert poll_lease_name(a.server, "Encounter") in a.leases.leading
    after_a = fake.resources("Task")
    assert after_a and {lane_of_task(t) for t in after_a} <= mine
    left = store.pending(1000)
    assert left and {version_lane(v, LANES) for v in left} <= theirs
    assert {item_lane(i, LANES) for i in store.outbox_items("pending")} <= theirs

    searched = polls(fake)
    await b.run_once(since=SINCE)
    assert polls(fake) == searched  # a holds the polls: b only processed and wrote
    assert not b.leases.leading & {poll_lease_name(b.server, "Encounter")}
    tasks = fake.resources("Task")
    identifiers = [t["identifier"][0]["value"] for t in tasks]
    assert len(identifiers) == len(set(identifiers))
    assert {lane_of_task(t) for t in tasks} == mine | theirs
    assert store.pending(1000) == [] and store.outbox_depth() == 0
    assert store.leased_outbox() == 0


async def test_a_worker_that_stops_renewing_is_taken_over(
    pair: tuple[FakeFhirServer, MemoryStore, Bridge, Bridge], clock: Clock
) -> None:
    """a leads and holds half the lanes, then dies (no release, no renewal): once its leases
    run out, b's next pass takes every lane and the polls over and finishes the work; the
    takeovers are counted for b."""
    fake, store, a, b = pair
    assert a.leases is not None and b.leases is not None
    a.leases.rebalance()
    b.leases.rebalance()
    a.leases.rebalance()
    await a.run_once(since=SINCE)
    a.leases = None  # dead: its keeper and release never run
    a.pipeline.leases = None

    await b.run_once(since=SINCE)
    assert b.leases.held != frozenset(range(LANES))  # a's leases still run
    clock.now += timedelta(seconds=31)
    fake.put({**fake.resources("Patient")[0], "gender": "female"})  # something new to poll
    await b.run_once()

    assert b.leases.held == frozenset(range(LANES))
    assert poll_lease_name(b.server, "Encounter") in b.leases.leading
    assert b.leases.takeovers >= LANES // 2 + 2  # a's lanes, both polls
    assert store.pending(1000) == [] and store.outbox_depth() == 0
    assert len(fake.resources("Task")) == len(
        {t["identifier"][0]["value"] for t in fake.resources("Task")}
    )


async def test_a_clean_stop_gives_everything_up(
    pair: tuple[FakeFhirServer, MemoryStore, Bridge, Bridge],
) -> None:
    """A worker that stops cleanly (what closing its bridge does) gives its lanes and
    leadership up at once: the other takes them on its next pass without waiting for a lease
    to run out, and counts no takeover."""
    _fake, _store, a, b = pair
    assert a.leases is not None and b.leases is not None
    await a.run_once(since=SINCE)
    assert a.leases.held == frozenset(range(LANES))
    a.leases.release()
    assert a.leases.held == frozenset() and not a.leases.leading

    await b.run_once(since=SINCE)
    assert b.leases.held == frozenset(range(LANES))
    assert poll_lease_name(b.server, "Patient") in b.leases.leading
    assert b.leases.takeovers == 0


async def test_the_metrics_name_the_worker(
    pair: tuple[FakeFhirServer, MemoryStore, Bridge, Bridge],
) -> None:
    """/metrics of a worker shows its lanes, leased items, takeovers and leadership leases,
    labelled with its worker id."""
    _fake, _store, a, _b = pair
    await a.run_once(since=SINCE)
    text = PollingService(a).metrics.render().decode()

    assert f'fhirbridge_worker_lanes{{worker="a"}} {float(LANES)}' in text
    assert 'fhirbridge_worker_outbox_leased{worker="a"} 0.0' in text
    assert 'fhirbridge_worker_lease_takeovers{worker="a"} 0.0' in text
    assert 'fhirbridge_worker_leadership{lease="poll:default:Encounter",worker="a"} 1.0' in text


async def test_a_drain_by_one_worker_leaves_the_items_another_is_writing(
    pair: tuple[FakeFhirServer, MemoryStore, Bridge, Bridge],
) -> None:
    """``replay``'s drain (``Bridge.drain``) on a worker writes only its lanes' items and
    never one another worker has leased and is writing: no item is written twice at once."""
    fake, store, a, b = pair
    assert a.leases is not None and b.leases is not None
    for _ in range(2):
        a.leases.rebalance()
        b.leases.rebalance()
    mine, theirs = a.leases.held, b.leases.held
    await a.run_pass(feed=a.poll_feed(since=SINCE), write=False)
    await b.process()
    leased = a.leases.claim(1000)  # a is writing these now
    assert leased and {item_lane(i, LANES) for i in leased} <= mine

    await b.drain()
    assert {lane_of_task(t) for t in fake.resources("Task")} <= theirs
    assert store.leased_outbox() == len(leased)  # a's leases stand

    a.leases.done_writing()
    await a.drain()
    tasks = fake.resources("Task")
    assert {lane_of_task(t) for t in tasks} == mine | theirs
    assert len(tasks) == len({t["identifier"][0]["value"] for t in tasks})
    assert store.outbox_depth() == 0 and store.leased_outbox() == 0


async def test_a_worker_evaluates_its_lanes_in_arrival_order_not_what_it_journalled_first() -> None:
    """A stay's admission journalled (by another worker's poll) and not yet evaluated, then
    its discharge journalled by this worker (an HL7 v2 file, a notification): the worker
    evaluates both in arrival order, so the admission is seen, not skipped as a late version."""
    fake, store = FakeFhirServer(), MemoryStore()
    w = worker("a", fake, store)
    assert w.leases is not None
    w.leases.rebalance()
    now = datetime.now(UTC)
    start = (now - timedelta(days=3)).isoformat()
    admitted = builders.encounter(status="in-progress", period={"start": start})
    admitted["meta"] = {"versionId": "1", "lastUpdated": start}
    ended = (now - timedelta(hours=2)).isoformat()
    discharged_v2 = builders.revise(
        admitted,
        version="2",
        updated=ended,
        status="finished",
        period={"start": start, "end": ended},
    )
    w.ingest([json.dumps(admitted).encode()])  # pending, journalled by another worker
    fresh = w.ingest([json.dumps(discharged_v2).encode()])
    try:
        await w.process(fresh=fresh)
        assert [t.transition.kind.value for t in store.transitions()] == ["admission", "discharge"]
    finally:
        await w.aclose()
