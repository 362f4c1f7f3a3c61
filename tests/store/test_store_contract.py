"""The journal's contract: every store (SQLite, memory, PostgreSQL) passes these same tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fhirbridge.errors import StoreError
from fhirbridge.store import OutboxItem, Store
from fhirbridge.values import ResourceVersion, Transition, TransitionKind

if TYPE_CHECKING:  # fixtures' types, for readers and type checkers only
    from conftest import Backend, TickingClock

DATA = Path(__file__).parent / "data"
SERVER = "ehr"


def encounter(
    name: str, version_id: str, *, server: str = SERVER, **changes: Any
) -> ResourceVersion:
    """A version of an official example Encounter; a change to None removes that element."""
    resource = json.loads((DATA / f"Encounter-{name}.json").read_text(encoding="utf-8"))
    resource["meta"] = {"versionId": version_id, "lastUpdated": f"2024-05-01T08:00:0{version_id}Z"}
    for key, value in changes.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return ResourceVersion.from_json(server, json.dumps(resource).encode())


def discharge(focus: str = "Encounter/f203", **changes: Any) -> Transition:
    """A discharge transition of Roel's inpatient stay (Encounter f203)."""
    values: dict[str, Any] = {
        "kind": TransitionKind.DISCHARGE,
        "patient": "Patient/f201",
        "focus": focus,
        "occurred_at": datetime(2013, 3, 20, 10, 30, tzinfo=timezone(timedelta(hours=1))),
        "encounter": focus,
        "focus_version": "2",
        "server": SERVER,
        "facts": {"encounter_class": "IMP", "disposition_code": "home", "length_of_stay": 9},
    }
    values.update(changes)
    return Transition(**values)


def task_item(key: str, **payload: Any) -> OutboxItem:
    """An outbox item that creates a follow-up Task."""
    return OutboxItem(
        key=key, kind="create-task", payload={"identifier": key, "due": "2013-03-22", **payload}
    )


# -- resource versions -----------------------------------------------------------------------


def test_store_satisfies_the_port(store: Store) -> None:
    """Every store is a ``Store`` as far as the runtime-checkable protocol can tell."""
    assert isinstance(store, Store)


def test_append_drops_duplicates(store: Store) -> None:
    """The same (server, type, id, versionId) is journalled once, in one batch or across two."""
    first = encounter("f203", "1")
    again = encounter("f203", "1")
    second = encounter("f203", "2", status="finished")
    other_server = encounter("f203", "1", server="other-ehr")

    assert store.append([first, again, second]) == [first, second]
    assert store.append([again, other_server]) == [other_server]
    assert store.append([]) == []
    assert [v.version_id for v in store.pending()] == ["1", "2", "1"]


def test_pending_is_in_arrival_order_and_rebuilds_the_version(store: Store) -> None:
    """Pending versions come back oldest first, with their bytes, fields and parsed JSON."""
    versions = [encounter("home", "1"), encounter("emerg", "1"), encounter("f203", "1")]
    store.append(versions[:2])
    store.append(versions[2:])

    pending = store.pending()
    assert pending == versions
    assert [v.raw for v in pending] == [v.raw for v in versions]
    assert pending[1].resource["classHistory"][0]["class"]["code"] == "EMER"
    assert pending[0].last_updated == "2024-05-01T08:00:01Z"
    assert store.pending(limit=2) == versions[:2]
    assert store.pending(limit=0) == []


def test_complete_and_reject_empty_pending(store: Store) -> None:
    """A completed or rejected version is pending no more, and appending it again is no news."""
    first, second, third = encounter("home", "1"), encounter("emerg", "1"), encounter("f203", "1")
    store.append([first, second, third])

    store.complete(second)
    assert store.pending() == [first, third]
    store.complete(first)
    store.reject(third, "no subject")
    assert store.pending() == []
    assert store.append([first, second, third]) == []


def test_complete_journals_a_version_it_never_saw(store: Store) -> None:
    """Completing a version that was never appended journals it as processed."""
    version = encounter("f203", "1")

    store.complete(version)

    assert store.pending() == []
    assert store.append([version]) == []
    assert store.snapshot(SERVER, "Encounter", "f203") == version


def test_snapshot_follows_the_completed_versions(store: Store) -> None:
    """The snapshot is the last version completed, not the last one appended."""
    first = encounter("f203", "1", status="in-progress", period={"start": "2013-03-11"})
    second = encounter("f203", "2")
    store.append([first, second])
    assert store.snapshot(SERVER, "Encounter", "f203") is None

    store.complete(first)
    snap = store.snapshot(SERVER, "Encounter", "f203")
    assert snap == first
    assert snap is not None
    assert snap.raw == first.raw
    assert snap.resource["status"] == "in-progress"

    store.complete(second)
    assert store.snapshot(SERVER, "Encounter", "f203") == second
    assert store.snapshot("other-ehr", "Encounter", "f203") is None
    assert store.snapshot(SERVER, "Patient", "f203") is None


def test_snapshots_read_several_resources_at_once(store: Store) -> None:
    """``snapshots`` gives, by id, what ``snapshot`` gives for each; ids without one are
    left out, as are other servers and types; inside a batch it sees the batch's writes."""
    roel = encounter("f203", "2")
    home = encounter("home", "1")
    store.complete(encounter("f203", "1"))
    store.complete(roel)
    store.complete(encounter("home", "1", server="other-ehr"))
    assert store.snapshots(SERVER, "Encounter", ["f203", "home", "f203"]) == {"f203": roel}
    assert store.snapshots(SERVER, "Patient", ["f203"]) == {}
    assert store.snapshots(SERVER, "Encounter", []) == {}
    with store.batch():
        store.complete(home)
        found = store.snapshots(SERVER, "Encounter", ["home", "f203", "nobody"])
    assert found == {"home": home, "f203": roel}
    assert found["f203"].raw == roel.raw
    assert found["home"].resource["id"] == "home"


def test_patient_stays_read_several_patients_at_once(store: Store) -> None:
    """``patient_stays`` gives, for each patient as asked, what ``stays`` gives."""
    absolute = {"reference": "https://ehr.example/fhir/Patient/example/_history/3"}
    for version in (encounter("home", "1", subject=absolute), encounter("emerg", "1")):
        store.complete(version)
    store.complete(encounter("f203", "1"))
    store.complete(encounter("f203", "1", id="a-planned", status="planned", period=None))
    asked = ["Patient/example", "https://ehr.example/fhir/Patient/f201", "Patient/nobody"]
    found = store.patient_stays(SERVER, asked)
    assert found == {patient: store.stays(SERVER, patient) for patient in asked}
    assert [s.encounter for s in found["Patient/example"]] == ["Encounter/home", "Encounter/emerg"]
    assert [s.encounter for s in found["https://ehr.example/fhir/Patient/f201"]] == [
        "Encounter/f203",
        "Encounter/a-planned",
    ]
    assert found["Patient/nobody"] == []
    assert store.patient_stays("other-ehr", ["Patient/example"]) == {"Patient/example": []}
    assert store.patient_stays(SERVER, []) == {}


def test_complete_without_snapshot_update_keeps_the_previous(store: Store) -> None:
    """``update_snapshot=False`` (a stale version) marks it processed but keeps the snapshot."""
    newer, stale = encounter("f203", "2"), encounter("f203", "1", status="in-progress")
    store.append([newer, stale])
    store.complete(newer)

    store.complete(stale, update_snapshot=False)

    assert store.pending() == []
    assert store.snapshot(SERVER, "Encounter", "f203") == newer
    assert [s.status for s in store.stays(SERVER, "Patient/f201")] == ["finished"]


# -- transitions -----------------------------------------------------------------------------


def test_transitions_are_kept_once_per_key(store: Store, clock: TickingClock) -> None:
    """A transition seen twice keeps its first journal entry, facts and note included."""
    version = encounter("f203", "2")
    store.append([version])
    found = discharge()
    store.complete(version, transitions=[found], notes={found.key: "no rule matched"})

    replay = encounter("f203", "3")
    store.complete(
        replay,
        transitions=[discharge(facts={"encounter_class": "AMB"}), found],
        notes={found.key: "second note"},
    )

    stored = store.transitions()
    assert [s.key for s in stored] == ["discharge|Encounter/f203"]
    assert stored[0].transition == found
    assert stored[0].transition.facts == found.facts
    assert stored[0].transition.occurred_at.utcoffset() == timedelta(hours=1)
    assert stored[0].note == "no rule matched"
    assert stored[0].detected_at.tzinfo is not None
    assert stored[0].detected_at < clock.now


def test_transitions_filter_by_kind_and_detection_time(store: Store) -> None:
    """``kind`` and ``since`` narrow the list; the order stays oldest first."""
    first, second = encounter("f203", "1"), encounter("emerg", "1")
    store.complete(first, transitions=[discharge()])
    store.complete(
        second,
        transitions=[
            discharge(kind=TransitionKind.ADMISSION, focus="Encounter/emerg"),
            discharge(focus="Encounter/emerg", discriminator="2017-02-01"),
        ],
    )
    everything = store.transitions()
    assert [s.key for s in everything] == [
        "discharge|Encounter/f203",
        "admission|Encounter/emerg",
        "discharge|Encounter/emerg|2017-02-01",
    ]
    later = everything[1].detected_at

    assert [s.key for s in store.transitions(kind="admission")] == ["admission|Encounter/emerg"]
    assert [s.key for s in store.transitions(since=later)] == [s.key for s in everything[1:]]
    in_sydney = later.astimezone(timezone(timedelta(hours=10)))
    assert [s.key for s in store.transitions(kind="discharge", since=in_sydney)] == [
        "discharge|Encounter/emerg|2017-02-01"
    ]
    assert store.transitions(since=later + timedelta(days=1)) == []


# -- outbox ----------------------------------------------------------------------------------


def test_outbox_keeps_the_first_item_of_a_key(store: Store) -> None:
    """Enqueueing, or completing with, a key already in the outbox changes nothing."""
    assert store.enqueue([task_item("t1"), task_item("t2"), task_item("t1", due="later")]) == 2
    assert store.enqueue([task_item("t2", due="later")]) == 0
    assert store.enqueue([]) == 0
    store.complete(encounter("f203", "1"), outbox=[task_item("t1", due="later"), task_item("t3")])

    items = store.outbox_items()
    assert [(i.key, i.payload["due"]) for i in items] == [
        ("t1", "2013-03-22"),
        ("t2", "2013-03-22"),
        ("t3", "2013-03-22"),
    ]
    assert all(i.state == "pending" and i.attempts == 0 for i in items)
    assert len({i.id for i in items}) == 3
    assert store.outbox_depth() == 3


def test_claim_and_finish(store: Store) -> None:
    """Claims hand out pending items oldest first; a finished item is done with its result."""
    store.enqueue([task_item(f"t{n}", nested={"n": n, "tags": ["a", "b"]}) for n in range(4)])

    claimed = store.claim_outbox(limit=3)
    assert [i.key for i in claimed] == ["t0", "t1", "t2"]
    assert claimed[1].payload["nested"] == {"n": 1, "tags": ["a", "b"]}

    store.finish_outbox(claimed[0].id, {"id": "Task/99", "status": 201})

    (done,) = store.outbox_items("done")
    assert (done.key, done.state, done.attempts) == ("t0", "done", 1)
    assert done.result == {"id": "Task/99", "status": 201}
    assert [i.key for i in store.claim_outbox()] == ["t1", "t2", "t3"]
    assert store.outbox_depth() == 3
    assert store.claim_outbox(limit=0) == []


def test_failed_item_stays_pending_with_its_error(store: Store) -> None:
    """A failure that is not final counts the attempt and keeps the item claimable."""
    store.enqueue([task_item("t1")])
    (item,) = store.claim_outbox()

    store.fail_outbox(item.id, "HTTP 503", dead=False)
    store.fail_outbox(item.id, "timed out", dead=False)

    (again,) = store.claim_outbox()
    assert (again.id, again.state, again.attempts, again.last_error) == (
        item.id,
        "pending",
        2,
        "timed out",
    )
    assert store.dead_letters() == []


def test_dead_item_becomes_a_dead_letter(store: Store) -> None:
    """A final failure marks the item dead and keeps its payload in the dead letters."""
    store.enqueue([task_item("t1"), task_item("t2")])
    first, _ = store.claim_outbox()

    store.fail_outbox(first.id, "HTTP 422: Task.owner is not a Practitioner", dead=True)

    assert [i.key for i in store.claim_outbox()] == ["t2"]
    assert store.outbox_depth() == 1
    (dead,) = store.outbox_items("dead")
    assert (dead.key, dead.attempts) == ("t1", 1)
    (letter,) = store.dead_letters()
    assert (letter.source, letter.reference) == ("outbox", "t1")
    assert letter.reason == "HTTP 422: Task.owner is not a Practitioner"
    assert json.loads(letter.payload) == {"identifier": "t1", "due": "2013-03-22"}
    assert letter.replayed is False


def test_requeue_dead_outbox(store: Store) -> None:
    """Replaying puts dead items back to pending, fresh, and closes their dead letters."""
    store.enqueue([task_item("t1"), task_item("t2"), task_item("t3")])
    one, two, three = store.claim_outbox()
    store.fail_outbox(one.id, "HTTP 422", dead=True)
    store.fail_outbox(three.id, "HTTP 422", dead=True)
    store.finish_outbox(two.id, {"id": "Task/2"})
    other = store.dead_letter("subscription", "Encounter/9", "unknown server", b"{}")

    assert store.requeue_dead_outbox() == 2
    assert store.requeue_dead_outbox() == 0

    assert [(i.key, i.attempts) for i in store.claim_outbox()] == [("t1", 0), ("t3", 0)]
    assert [d.id for d in store.dead_letters()] == [other]
    assert [d.replayed for d in store.dead_letters(include_replayed=True)] == [True, True, False]

    store.fail_outbox(one.id, "HTTP 422 again", dead=True)
    assert [d.reason for d in store.dead_letters()] == ["unknown server", "HTTP 422 again"]


def test_unknown_ids_are_store_errors(store: Store) -> None:
    """Finishing, failing or replaying what does not exist is an error, not a silent no-op."""
    with pytest.raises(StoreError, match="outbox item"):
        store.finish_outbox(404, {})
    with pytest.raises(StoreError, match="outbox item"):
        store.fail_outbox(404, "boom", dead=True)
    with pytest.raises(StoreError, match="dead letter"):
        store.mark_replayed(404)
    assert store.dead_letters() == []


# -- watermarks ------------------------------------------------------------------------------


def test_watermarks_per_server_and_type(store: Store) -> None:
    """A watermark is unset until set, then moves; servers and types do not share one."""
    assert store.watermark(SERVER, "Encounter") is None

    store.set_watermark(SERVER, "Encounter", "2024-05-01T08:00:00Z")
    store.set_watermark(SERVER, "Encounter", "2024-05-01T09:00:00Z")
    store.set_watermark(SERVER, "Task", "2024-05-01T07:00:00Z")

    assert store.watermark(SERVER, "Encounter") == "2024-05-01T09:00:00Z"
    assert store.watermark(SERVER, "Task") == "2024-05-01T07:00:00Z"
    assert store.watermark("other-ehr", "Encounter") is None


# -- stays -----------------------------------------------------------------------------------


def test_stays_follow_the_encounter_snapshots(store: Store) -> None:
    """A patient's stays are their Encounter snapshots, by start time, as completed."""
    absolute = {"reference": "https://ehr.example/fhir/Patient/example/_history/3"}
    home = encounter("home", "1", subject=absolute)
    emerg = encounter("emerg", "1")
    roel = encounter("f203", "1")
    for version in (home, emerg, roel):
        store.complete(version)

    stays = store.stays(SERVER, "Patient/example")
    assert [s.encounter for s in stays] == ["Encounter/home", "Encounter/emerg"]
    first, second = stays
    assert (first.server, first.patient, first.encounter_class, first.status) == (
        SERVER,
        "Patient/example",
        "HH",
        "finished",
    )
    assert first.start == datetime(2015, 1, 17, 6, 0, tzinfo=UTC)
    assert first.end == datetime(2015, 1, 17, 6, 30, tzinfo=UTC)
    assert (second.encounter_class, second.status, second.end) == ("IMP", "in-progress", None)
    assert second.start == datetime(2017, 2, 1, 7, 15, tzinfo=timezone(timedelta(hours=10)))

    discharged = encounter(
        "emerg",
        "2",
        status="finished",
        period={"start": "2017-02-01T07:15:00+10:00", "end": "2017-02-06T10:00:00+10:00"},
    )
    store.complete(discharged)
    latest = store.stays(SERVER, "https://ehr.example/fhir/Patient/example")[1]
    assert (latest.status, latest.end) == ("finished", datetime(2017, 2, 6, 0, 0, tzinfo=UTC))

    (stay,) = store.stays(SERVER, "Patient/f201")
    assert (stay.start, stay.end) == (
        datetime(2013, 3, 11, 12, tzinfo=UTC),
        datetime(2013, 3, 20, 12, tzinfo=UTC),
    )
    assert store.stays("other-ehr", "Patient/example") == []
    assert store.stays(SERVER, "Patient/nobody") == []


def test_stays_without_a_start_come_last_and_lost_subjects_leave(store: Store) -> None:
    """Encounters with no period sort after dated ones; one that loses its subject is dropped."""
    store.complete(encounter("f203", "1", id="a-planned", status="planned", period=None))
    store.complete(encounter("f203", "1"))
    assert [s.encounter for s in store.stays(SERVER, "Patient/f201")] == [
        "Encounter/f203",
        "Encounter/a-planned",
    ]
    assert store.stays(SERVER, "Patient/f201")[1].start is None

    store.complete(encounter("f203", "2", id="a-planned", subject=None))
    assert [s.encounter for s in store.stays(SERVER, "Patient/f201")] == ["Encounter/f203"]


@pytest.mark.parametrize(
    ("reference", "patient"),
    [
        # relative, as most servers write it
        ("Patient/f201", "Patient/f201"),
        # absolute, from a server that writes full URLs
        ("http://hapi.example/fhir/Patient/f201", "Patient/f201"),
        # versioned
        ("Patient/f201/_history/4", "Patient/f201"),
        # absolute and versioned, with a trailing slash
        ("https://ehr.example/r4/Patient/f201/_history/4/", "Patient/f201"),
        # a bundle-local reference cannot be resolved: it is kept as it is
        (
            "urn:uuid:5b0b2b8e-7a1c-4c55-9f53-0e1f3c1a2b3c",
            "urn:uuid:5b0b2b8e-7a1c-4c55-9f53-0e1f3c1a2b3c",
        ),
    ],
)
def test_stays_normalise_the_subject_reference(store: Store, reference: str, patient: str) -> None:
    """The subject reference is indexed as ``Patient/id`` whatever form the server used."""
    store.complete(encounter("f203", "1", subject={"reference": reference, "display": "Roel"}))

    (stay,) = store.stays(SERVER, patient)

    assert stay.patient == patient


# -- dead letters and audit ------------------------------------------------------------------


def test_reject_keeps_the_version_as_a_dead_letter(store: Store) -> None:
    """A rejected version is processed without a snapshot, its bytes kept with the reason."""
    version = encounter("f203", "1", subject=None)
    store.append([version])

    store.reject(version, "Encounter has no subject")

    assert store.pending() == []
    assert store.snapshot(SERVER, "Encounter", "f203") is None
    (letter,) = store.dead_letters()
    assert (letter.source, letter.reference, letter.reason) == (
        "process",
        "ehr|Encounter/f203/_history/1",
        "Encounter has no subject",
    )
    assert letter.payload == version.raw
    assert ResourceVersion.from_json(SERVER, letter.payload) == version


def test_a_rejected_version_can_be_put_back_on_the_pending_list(store: Store) -> None:
    """`repend` returns a processed (rejected) version to pending, once; unknown ones are not."""
    version = encounter("f203", "1", subject=None)
    store.append([version])
    store.reject(version, "Encounter has no subject")

    assert store.repend(SERVER, "Encounter", "f203", "1") is True
    assert store.pending() == [version]
    assert store.repend(SERVER, "Encounter", "f203", "1") is False  # pending already
    assert store.repend(SERVER, "Encounter", "nope", "1") is False
    store.complete(version)
    assert store.pending() == []


def test_dead_letters_and_replay_marks(store: Store, clock: TickingClock) -> None:
    """Dead letters get increasing ids and a time; replayed ones are hidden unless asked for."""
    first = store.dead_letter("subscription", "Encounter/1", "unknown topic", b'{"a":1}')
    second = store.dead_letter("hl7v2", "MSH-10 42", "bad segment", b"MSH|^~\\&|\x00")
    assert second > first

    store.mark_replayed(first)
    store.mark_replayed(first)

    (open_letter,) = store.dead_letters()
    assert (open_letter.id, open_letter.payload) == (second, b"MSH|^~\\&|\x00")
    assert open_letter.created_at < clock.now
    assert open_letter.created_at.utcoffset() == timedelta(0)
    everything = store.dead_letters(include_replayed=True)
    assert [(d.id, d.replayed) for d in everything] == [(first, True), (second, False)]


def test_audit_log_is_newest_first(store: Store) -> None:
    """Audit records come back newest first, with their detail, up to the limit."""
    store.audit("create", "Task/1", {"status": 201, "identifier": "abc"})
    store.audit("update", "CarePlan/7", {"status": 200, "if_match": 'W/"3"'})
    store.audit("create", "Task/2", {"status": 412})

    log = store.audit_log()
    assert [(r["action"], r["reference"]) for r in log] == [
        ("create", "Task/2"),
        ("update", "CarePlan/7"),
        ("create", "Task/1"),
    ]
    assert log[1]["detail"] == {"status": 200, "if_match": 'W/"3"'}
    assert log[0]["at"] > log[1]["at"]
    assert [r["reference"] for r in store.audit_log(limit=1)] == ["Task/2"]
    assert store.audit_log(limit=0) == []


# -- batches ---------------------------------------------------------------------------------


def test_a_batch_commits_its_completes_together(backend: Backend) -> None:
    """Inside ``batch`` the store sees its own writes; other connections see them at the end."""
    store = backend.open()
    versions = [encounter("home", "1"), encounter("emerg", "1"), encounter("f203", "1")]
    store.append(versions)
    onlooker = backend.open() if backend.durable else None

    with store.batch():
        for version in versions:
            store.complete(version, outbox=[task_item(f"task-{version.id}")])
        with store.batch():  # a nested batch joins the outer one
            store.complete(versions[0])
        assert store.pending() == []
        if onlooker is not None:
            assert onlooker.pending() == versions
            assert onlooker.outbox_depth() == 0

    assert store.pending() == []
    assert [i.key for i in store.claim_outbox()] == ["task-home", "task-emerg", "task-f203"]
    if onlooker is not None:
        assert onlooker.pending() == []
        assert onlooker.snapshot(SERVER, "Encounter", "f203") == versions[2]


def test_an_exception_out_of_a_batch_undoes_all_of_it(store: Store) -> None:
    """When the block raises, every write in it is undone: the versions are pending again."""
    first, second = encounter("f203", "1"), encounter("emerg", "1")
    store.append([first, second])

    def crash_midway() -> None:
        with store.batch():
            store.complete(first, transitions=[discharge()], outbox=[task_item("t1")])
            store.set_watermark(SERVER, "Encounter", "2024-05-01T08:00:00Z")
            raise RuntimeError("detector crashed")

    with pytest.raises(RuntimeError, match="detector crashed"):
        crash_midway()

    assert store.pending() == [first, second]
    assert store.snapshot(SERVER, "Encounter", "f203") is None
    assert store.stays(SERVER, "Patient/f201") == []
    assert store.transitions() == []
    assert store.outbox_items() == []
    assert store.watermark(SERVER, "Encounter") is None
    store.complete(first)
    assert store.pending() == [second]


def test_a_call_failing_inside_a_batch_undoes_only_itself(store: Store) -> None:
    """A store call that raises inside a batch leaves the batch's other writes to commit."""
    first, second = encounter("f203", "1"), encounter("emerg", "1")
    store.append([first, second])

    with store.batch():
        store.complete(first)
        with pytest.raises(StoreError):
            store.finish_outbox(404, {})
        store.complete(second)

    assert store.pending() == []
    assert store.snapshot(SERVER, "Encounter", "emerg") == second


# -- durability and schema -------------------------------------------------------------------


def test_reopening_keeps_everything(backend: Backend) -> None:
    """After a restart (close, open again) the journal holds exactly what it held."""
    if not backend.durable:
        pytest.skip("the memory store keeps nothing across a restart, by design")
    store = backend.open()
    done, waiting = encounter("f203", "1"), encounter("emerg", "1")
    store.append([done, waiting])
    store.complete(done, transitions=[discharge()], outbox=[task_item("t1")])
    store.set_watermark(SERVER, "Encounter", "2024-05-01T08:00:00Z")
    store.reject(encounter("home", "1"), "unreadable")
    store.audit("create", "Task/1", {"status": 201})
    store.close()

    reopened = backend.open()

    assert reopened.pending() == [waiting]
    assert reopened.snapshot(SERVER, "Encounter", "f203") == done
    assert [s.encounter for s in reopened.stays(SERVER, "Patient/f201")] == ["Encounter/f203"]
    assert [s.transition for s in reopened.transitions()] == [discharge()]
    assert [i.key for i in reopened.claim_outbox()] == ["t1"]
    assert reopened.watermark(SERVER, "Encounter") == "2024-05-01T08:00:00Z"
    assert [d.reason for d in reopened.dead_letters()] == ["unreadable"]
    assert [r["reference"] for r in reopened.audit_log()] == ["Task/1"]
    assert reopened.append([done, waiting]) == []


def test_migrate_is_idempotent(store: Store) -> None:
    """Migrating an up-to-date journal again changes nothing and loses nothing."""
    version = encounter("f203", "1")
    store.append([version])

    store.migrate()
    store.migrate()

    assert store.pending() == [version]


def test_a_closed_store_raises_store_error(store: Store) -> None:
    """Using a store after ``close`` raises StoreError, never the driver's own exception."""
    store.close()

    with pytest.raises(StoreError):
        store.pending()
    with pytest.raises(StoreError):
        store.append([encounter("f203", "1")])


@pytest.mark.parametrize(
    "call",
    [
        # lifecycle
        pytest.param(lambda s: s.migrate(), id="migrate"),
        # resource versions
        pytest.param(lambda s: s.pending(), id="pending"),
        pytest.param(lambda s: s.snapshot(SERVER, "Encounter", "f203"), id="snapshot"),
        pytest.param(lambda s: s.complete(encounter("f203", "1")), id="complete"),
        pytest.param(lambda s: s.reject(encounter("f203", "1"), "bad"), id="reject"),
        pytest.param(lambda s: s.stays(SERVER, "Patient/f201"), id="stays"),
        pytest.param(lambda s: s.transitions(), id="transitions"),
        # watermarks
        pytest.param(lambda s: s.watermark(SERVER, "Encounter"), id="watermark"),
        pytest.param(lambda s: s.set_watermark(SERVER, "Encounter", "2024"), id="set_watermark"),
        # outbox
        pytest.param(lambda s: s.enqueue([task_item("t1")]), id="enqueue"),
        pytest.param(lambda s: s.claim_outbox(), id="claim_outbox"),
        pytest.param(lambda s: s.finish_outbox(1, {}), id="finish_outbox"),
        pytest.param(lambda s: s.fail_outbox(1, "boom", dead=True), id="fail_outbox"),
        pytest.param(lambda s: s.outbox_depth(), id="outbox_depth"),
        pytest.param(lambda s: s.outbox_items(), id="outbox_items"),
        # dead letters and audit
        pytest.param(lambda s: s.dead_letter("poll", "x", "bad", b""), id="dead_letter"),
        pytest.param(lambda s: s.dead_letters(), id="dead_letters"),
        pytest.param(lambda s: s.mark_replayed(1), id="mark_replayed"),
        pytest.param(lambda s: s.requeue_dead_outbox(), id="requeue_dead_outbox"),
        pytest.param(lambda s: s.audit("create", "Task/1", {}), id="audit"),
        pytest.param(lambda s: s.audit_log(), id="audit_log"),
    ],
)
def test_every_call_on_a_closed_store_raises_store_error(
    store: Store, call: Callable[[Store], object]
) -> None:
    """No port method lets the driver's exception out: each one's error is a StoreError."""
    store.close()

    with pytest.raises(StoreError):
        call(store)
