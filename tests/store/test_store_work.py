"""The contract of who may write: writer lock, leases, lanes, outbox leases, event counters.

Every store (SQLite, memory, PostgreSQL) passes these. "Another process" is a second store on
the same database (for the memory store, which is one process's alone, the same store).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from fhirbridge.errors import JournalBusy, StoreError
from fhirbridge.store import Holder, OutboxItem, Store, latest_schema_version
from fhirbridge.store._codec import lane_key, patient_key
from fhirbridge.values import ResourceVersion

if TYPE_CHECKING:
    from conftest import Backend, TickingClock

SERVER = "ehr"


def holder(name: str, clock: TickingClock) -> Holder:
    """A worker called ``name`` (its worker id is the name, so tests can read it)."""
    return Holder(worker=name, host=f"host-{name}", pid=100, command=f"run {name}", since=clock.now)


def other_store(backend: Backend, store: Store) -> Store:
    """A second connection to the same journal (the memory store is its own only one)."""
    return store if backend.name == "memory" else backend.open()


def version(resource: dict[str, object], server: str = SERVER) -> ResourceVersion:
    """A version of ``resource`` (versionId 1 unless it says otherwise)."""
    resource.setdefault("meta", {"versionId": "1"})
    return ResourceVersion.from_json(server, json.dumps(resource).encode())


# -- the schema ------------------------------------------------------------------------------


def test_schema_version_is_the_latest_migration(store: Store) -> None:
    """A migrated journal reports the schema version this fhirbridge migrates to."""
    assert store.schema_version() == latest_schema_version() >= 2


# -- one writer ------------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_first(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """While one process writes for a server, another is refused with one line naming it."""
    second = other_store(backend, store)
    first = holder("a", clock)
    with store.acquire_writer(SERVER, first) as held:
        assert held.worker == "a"
        with pytest.raises(JournalBusy) as refused, second.acquire_writer(SERVER):
            pytest.fail("a second writer got the lock")
        recorded = second.writer(SERVER)

    message = str(refused.value)
    assert "\n" not in message
    assert f"'run a' (pid 100 on host-a) since {first.since:%Y-%m-%d %H:%M:%S} UTC" in message
    assert repr(SERVER) in message
    assert isinstance(refused.value, StoreError)
    assert recorded is not None and (recorded.worker, recorded.host) == ("a", "host-a")


def test_writer_lock_is_released_when_the_block_ends(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """After the holder's block ends (even by an error) the next writer gets the lock."""
    second = other_store(backend, store)
    with pytest.raises(RuntimeError), store.acquire_writer(SERVER, holder("a", clock)):
        raise RuntimeError("the run failed")

    with second.acquire_writer(SERVER, holder("b", clock)):
        current = store.writer(SERVER)
        assert current is not None and current.worker == "b"
    assert store.writer(SERVER) is None


def test_writer_lock_is_per_server(backend: Backend, store: Store, clock: TickingClock) -> None:
    """Writers for two different FHIR servers share one journal without refusing each other."""
    second = other_store(backend, store)
    with (
        store.acquire_writer("ehr", holder("a", clock)),
        second.acquire_writer("lab", holder("b", clock)),
    ):
        a, b = store.writer("ehr"), store.writer("lab")
    assert a is not None and b is not None and (a.worker, b.worker) == ("a", "b")


def test_writer_defaults_to_this_process(store: Store) -> None:
    """Without a holder, the lock is recorded for this process: its pid and host."""
    with store.acquire_writer(SERVER) as held:
        assert (held.pid, held.host) == (os.getpid(), socket.gethostname())
        assert held.command


# -- leases ----------------------------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """A lease is refused to others while it runs, renewed by its holder, taken over after."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)

    assert store.take_lease("poll:ehr:Encounter", a, seconds=30)
    assert not second.take_lease("poll:ehr:Encounter", b, seconds=30)
    assert store.take_lease("poll:ehr:Encounter", a, seconds=30)  # renewed
    clock.now += timedelta(seconds=20)
    assert not second.take_lease("poll:ehr:Encounter", b, seconds=30)  # the renewal counts
    clock.now += timedelta(seconds=15)
    assert second.take_lease("poll:ehr:Encounter", b, seconds=30)  # a stopped renewing
    assert not store.take_lease("poll:ehr:Encounter", a, seconds=30)
    assert store.takeovers("poll:") == 1

    second.release_lease("poll:ehr:Encounter", b)
    assert store.take_lease("poll:ehr:Encounter", a, seconds=30)
    assert store.takeovers("poll:") == 1  # a released lease is taken, not taken over


def test_lanes_are_shared_out_and_taken_over(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """One worker holds every lane; a second gets half once the first gives them up; when
    the first stops renewing, the second takes its lanes over."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)

    assert store.lease_lanes(a, lanes=8) == frozenset(range(8))
    assert second.lease_lanes(b, lanes=8) == frozenset()  # all taken: a must give some up
    kept = store.lease_lanes(a, lanes=8)
    got = second.lease_lanes(b, lanes=8)
    assert len(kept) == len(got) == 4
    assert kept | got == frozenset(range(8)) and not kept & got
    assert store.lease_lanes(a, lanes=8) == kept  # stable while both renew

    clock.now += timedelta(seconds=31)  # a died: no renewal
    assert second.lease_lanes(b, lanes=8) == frozenset(range(8))
    assert store.takeovers() == 4

    second.release_lanes(b)
    assert store.lease_lanes(a, lanes=8) == frozenset(range(8))


def test_pending_in_lanes_keeps_a_patient_in_one_lane(store: Store) -> None:
    """Each pending version is in exactly one lane, with every other version of its patient."""
    versions = [version({"resourceType": "Patient", "id": f"p{n}"}) for n in range(6)] + [
        version(
            {
                "resourceType": "Encounter",
                "id": f"e{n}",
                "meta": {"versionId": str(v)},
                "status": "in-progress",
                "subject": {"reference": f"Patient/p{n % 6}"},
            }
        )
        for n in range(12)
        for v in (1, 2)
    ]
    store.append(versions)

    lanes = {lane: store.pending_in_lanes([lane], lane_count=4) for lane in range(4)}

    found = [v for lane in lanes.values() for v in lane]
    assert sorted(found, key=lambda v: (v.reference, v.version_id)) == sorted(
        versions, key=lambda v: (v.reference, v.version_id)
    )
    for lane, held in lanes.items():
        assert all(lane_key(v) % 4 == lane for v in held)
        order = [v for v in store.pending(1000) if v in held]
        assert held == order  # arrival order within the lane
    both = store.pending_in_lanes([0, 1, 2, 3], lane_count=4)
    assert both == store.pending(1000)
    assert store.pending_in_lanes([], lane_count=4) == []


def test_patient_key_reads_the_resource() -> None:
    """A Patient is its own key; others name theirs by subject, patient or for; else self."""
    assert patient_key(version({"resourceType": "Patient", "id": "p1"})) == "Patient/p1"
    subject = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}
    task = {"resourceType": "Task", "id": "t1", "for": {"reference": "http://x/fhir/Patient/p1"}}
    care_team = {"resourceType": "CareTeam", "id": "c1", "subject": {"display": "no reference"}}
    assert patient_key(version(subject)) == "Patient/p1"
    assert patient_key(version(task)) == "Patient/p1"
    assert patient_key(version(care_team)) == "CareTeam/c1"


# -- outbox leases ---------------------------------------------------------------------------


def items(*keys: str) -> list[OutboxItem]:
    """Create-task items with these keys."""
    return [OutboxItem(key=k, kind="create-task", payload={"identifier": k}) for k in keys]


def test_leased_outbox_items_go_to_one_worker(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """Items leased to one worker are not handed to another until the lease runs out."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)
    store.enqueue(items("t1", "t2", "t3"))

    first = store.claim_outbox(2, holder=a, seconds=30)
    rest = second.claim_outbox(10, holder=b, seconds=30)

    assert [i.key for i in first] == ["t1", "t2"]
    assert [i.key for i in rest] == ["t3"]
    assert [i.attempts for i in first] == [1, 1]  # the claim counts the attempt
    assert store.leased_outbox() == 3
    assert second.claim_outbox(10, holder=b) == []

    store.finish_outbox(first[0].id, {"id": "Task/1"})
    clock.now += timedelta(seconds=31)  # a died holding t2
    taken = second.claim_outbox(10, holder=b, seconds=30)
    assert [(i.key, i.attempts) for i in taken] == [("t2", 2), ("t3", 2)]
    done = {i.key: i for i in store.outbox_items()}
    assert (done["t1"].state, done["t1"].attempts) == ("done", 1)


def test_outbox_leases_renew_and_release(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """Renewing keeps the items; releasing, or failing one, hands them back at once."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)
    store.enqueue(items("t1", "t2"))
    claimed = store.claim_outbox(10, holder=a, seconds=30)

    clock.now += timedelta(seconds=20)
    assert store.renew_outbox(a, seconds=30) == 2
    clock.now += timedelta(seconds=20)  # past the first lease, within the renewed one
    assert second.claim_outbox(10, holder=b) == []

    store.fail_outbox(claimed[0].id, "503", dead=False)
    assert [i.key for i in second.claim_outbox(10, holder=b)] == ["t1"]
    assert store.release_outbox(a) == 1
    again = second.claim_outbox(10, holder=b)
    assert [(i.key, i.attempts) for i in again] == [("t2", 2)]
    assert second.claim_outbox(10) != []  # the unleased claim still sees pending items


def test_renewing_lanes_takes_none_and_gives_none_up(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """``renew_lanes`` extends the lanes a worker holds and nothing else: a newcomer does not
    make it shed lanes mid-work, and a lane lost after a stall is not renewed."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)
    assert store.lease_lanes(a, lanes=4) == frozenset(range(4))
    assert second.lease_lanes(b, lanes=4) == frozenset()  # b is alive, a holds everything

    assert store.renew_lanes(a) == frozenset(range(4))  # no shedding while renewing
    clock.now += timedelta(seconds=25)
    assert store.renew_lanes(a) == frozenset(range(4))
    clock.now += timedelta(seconds=25)  # within the renewed lease
    assert second.lease_lanes(b, lanes=4) == frozenset()

    clock.now += timedelta(seconds=40)  # a stalled past its lease: b takes its share over
    taken = second.lease_lanes(b, lanes=4)
    assert taken == frozenset(range(4))
    assert store.renew_lanes(a) == frozenset()  # what b took is not a's to renew


def patient_items(*pairs: tuple[str, str]) -> list[OutboxItem]:
    """Create-task items ``(key, patient)`` planned by a transition about that patient."""
    return [
        OutboxItem(
            key=key,
            kind="create-task",
            payload={"transition": {"key": f"discharge|{key}", "patient": patient}},
        )
        for key, patient in pairs
    ]


def test_outbox_items_are_claimed_by_the_lanes_of_their_patient(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """With ``lanes``, a worker leases only the items of its lanes' patients, oldest first;
    each item is in the lane of its transition's patient, as that patient's versions are."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)
    patients = [f"Patient/p{n}" for n in range(8)]
    pairs = [(f"t{n}-{k}", p) for k in range(2) for n, p in enumerate(patients)]
    store.enqueue(patient_items(*pairs))
    lane_of = {p: lane_key(version({"resourceType": "Patient", "id": p[8:]})) % 2 for p in patients}

    mine = store.claim_outbox(100, holder=a, lanes=[0], lane_count=2)
    theirs = second.claim_outbox(100, holder=b, lanes=[1], lane_count=2)

    def lanes_of(claimed: list[OutboxItem]) -> set[int]:
        return {lane_of[str(i.payload["transition"]["patient"])] for i in claimed}

    assert lanes_of(mine) <= {0} and lanes_of(theirs) <= {1}
    assert len(mine) + len(theirs) == 16
    assert [i.id for i in mine] == sorted(i.id for i in mine)
    assert store.claim_outbox(100, holder=a, lanes=[], lane_count=2) == []
    assert store.claim_outbox(100, holder=a, lanes=[0, 1], lane_count=2) == []  # all leased


def test_finishing_or_failing_an_item_ends_its_lease(
    backend: Backend, store: Store, clock: TickingClock
) -> None:
    """A finished item leaves the leased count; a failed one is at once claimable by the next
    worker, with its attempts counted once per claim."""
    a, b = holder("a", clock), holder("b", clock)
    second = other_store(backend, store)
    store.enqueue(items("t1", "t2"))
    first, other = store.claim_outbox(10, holder=a)

    store.finish_outbox(first.id, {"id": "Task/1"})
    assert store.leased_outbox() == 1
    assert store.renew_outbox(a) == 1
    store.fail_outbox(other.id, "timeout", dead=False)
    assert store.leased_outbox() == 0
    assert store.renew_outbox(a) == 0
    (again,) = second.claim_outbox(10, holder=b)
    assert (again.key, again.attempts) == ("t2", 2)
    store.finish_outbox(again.id, {"id": "Task/2"})
    assert store.leased_outbox() == 0 and store.outbox_depth() == 0


# -- subscription event numbers --------------------------------------------------------------


def test_event_numbers_are_counted_across_receivers(backend: Backend, store: Store) -> None:
    """Two receivers' notifications add up: holes, duplicates, the server's count, catch-up."""
    second = other_store(backend, store)

    one = store.record_events(SERVER, "sub-1", [1, 2])
    two = second.record_events(SERVER, "sub-1", [4])
    three = store.record_events(SERVER, "sub-1", [2, 3])
    four = second.record_events(SERVER, "sub-1", [], highest=7)
    five = store.record_events(SERVER, "sub-1", [6], through=5)
    other = store.record_events(SERVER, "sub-2", [1])

    assert (one.contiguous, one.highest, one.gap) == (2, 2, False)
    assert (two.contiguous, two.highest, two.gap) == (2, 4, True)
    assert (three.contiguous, three.highest, three.duplicates) == (4, 4, 1)
    assert (four.contiguous, four.highest, four.gap) == (4, 7, True)
    assert (five.contiguous, five.highest) == (6, 7)
    assert (other.contiguous, other.highest) == (1, 1)


# -- batched completes -----------------------------------------------------------------------


def stay(encounter_id: str, version_id: str, **fields: object) -> ResourceVersion:
    """A version of an inpatient Encounter of patient p1."""
    resource: dict[str, object] = {
        "resourceType": "Encounter",
        "id": encounter_id,
        "meta": {"versionId": version_id},
        "status": "in-progress",
        "class": {"code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-05-01T08:00:00Z"},
    }
    resource.update(fields)
    return version(resource)


def test_a_batch_of_completes_ends_as_the_calls_one_by_one(store: Store) -> None:
    """Completes gathered in one batch give the same journal as the calls one at a time: the
    last snapshot of a resource wins, an Encounter that lost its subject leaves the index,
    rejects are dead-lettered, and a read inside the batch sees the writes before it."""
    first, second = stay("e1", "1"), stay("e1", "2", status="finished")
    other, orphan = stay("e2", "1"), stay("e2", "2", subject=None)
    bad = stay("e3", "1")
    never_appended = stay("e4", "1")
    store.append([first, second, other, orphan, bad])

    with store.batch():
        store.complete(first, outbox=items("t1"))
        store.complete(other)
        assert [s.encounter for s in store.stays(SERVER, "Patient/p1")] == [
            "Encounter/e1",
            "Encounter/e2",
        ]
        store.complete(second, outbox=items("t1", "t2"))
        store.complete(orphan)
        store.reject(bad, "unreadable")
        store.complete(never_appended, update_snapshot=False)

    assert store.pending() == []
    snap = store.snapshot(SERVER, "Encounter", "e1")
    assert snap is not None and snap.version_id == "2"
    assert [(s.encounter, s.status) for s in store.stays(SERVER, "Patient/p1")] == [
        ("Encounter/e1", "finished")
    ]
    assert [i.key for i in store.outbox_items()] == ["t1", "t2"]
    assert [d.reason for d in store.dead_letters()] == ["unreadable"]
    assert store.snapshot(SERVER, "Encounter", "e4") is None
    assert store.repend(SERVER, "Encounter", "e4", "1")  # journalled, not pending
    assert store.pending() == [never_appended]


def test_only_postgres_says_it_shares_work(backend: Backend, store: Store) -> None:
    """PostgreSQL journals take several workers; SQLite and memory keep one writer."""
    assert store.supports_workers is (backend.name == "postgres")
