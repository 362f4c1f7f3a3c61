"""The pipeline's stages without a server: patient lanes (order kept per patient, patients
concurrent), commits that survive a version the journal refuses, the policy steps beside
the rules, one calendar and one disposition table from the pack, dead-letter references."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.detect.projection import EncounterView
from fhirbridge.engine import Bridge
from fhirbridge.pipeline import (
    CloseCompletedActivity,
    Lookups,
    Planning,
    RiskScores,
    lanes,
    run_lanes,
)
from fhirbridge.rules.dispositions import DispositionTable
from fhirbridge.store import MemoryStore, SqliteStore
from fhirbridge.store.base import DeadLetter
from fhirbridge.testing.builders import encounter
from fhirbridge.values import CloseActivity, ResourceVersion, Stay, Transition, TransitionKind

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def stay(rid: str, patient: str, version: int, status: str) -> dict[str, Any]:
    """An inpatient Encounter of ``patient`` at ``version`` (finished: discharged home)."""
    return encounter(
        rid,
        patient=patient,
        status=status,
        start="2026-11-15T10:00:00Z",
        end="2026-11-20T10:00:00Z" if status == "finished" else None,
        meta={"versionId": str(version), "lastUpdated": f"2026-11-20T10:0{version}:00Z"},
    )


def version(resource: dict[str, Any]) -> ResourceVersion:
    """The resource as journalled from the default server."""
    return ResourceVersion.from_json("default", json.dumps(resource).encode())


def offline(**engine: Any) -> Bridge:
    """An engine without a server over an in-memory journal, clock at NOW."""
    config = load_config(data={"fhir": {"base_url": "https://ehr.example/fhir"}, "engine": engine})
    return Bridge(config, client=None, store=MemoryStore(), clock=FixedClock(NOW))


class SlowLookups(Lookups):
    """Lookups whose look-back for the first version of Patient/a takes a while, noting
    when each evaluation asks and gets its answer."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(None, MemoryStore(), server="default")
        self.log = log

    async def stays(self, view: EncounterView) -> list[Stay]:
        """Wait (only Patient/a's first version), then find nothing on the server."""
        tag = f"{view.patient}@{view.version_id}"
        self.log.append(f"ask {tag}")
        await asyncio.sleep(0.05 if tag == "Patient/a@1" else 0)
        self.log.append(f"got {tag}")
        return []


def test_lanes_join_versions_that_share_a_resource_or_a_patient() -> None:
    """A Task first without ``for``, then with it, joins its patient's lane; a patient's
    own resource is in its lane; other patients are lanes of their own, in arrival order."""
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "meta": {"versionId": "1"}}
    versions = [
        version(stay("a1", "a", 1, "in-progress")),
        version(task),
        version(stay("b1", "b", 1, "in-progress")),
        version({**task, "meta": {"versionId": "2"}, "for": {"reference": "Patient/a"}}),
        version({"resourceType": "Patient", "id": "a", "meta": {"versionId": "1"}}),
        version(stay("c1", "c", 1, "in-progress")),
    ]
    assert lanes(versions) == [[0, 1, 3, 4], [2], [5]]


async def test_run_lanes_keeps_each_lane_in_order_and_bounds_concurrency() -> None:
    """Steps of one lane never overlap and run in order; at most ``concurrency`` lanes at
    once."""
    running: set[int] = set()
    peak = 0
    order: list[int] = []

    async def step(index: int) -> int:
        nonlocal peak
        lane = index % 3
        assert lane not in running
        running.add(lane)
        peak = max(peak, len(running))
        await asyncio.sleep(0.001 * (3 - lane))
        running.discard(lane)
        order.append(index)
        return index * 10

    groups = [[i for i in range(9) if i % 3 == lane] for lane in range(3)]
    results = await run_lanes(groups, step, concurrency=2)
    assert results == {i: i * 10 for i in range(9)}
    assert peak == 2
    for group in groups:
        assert [i for i in order if i in group] == group


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_two_patients_interleave_but_each_keeps_its_order(concurrency: int) -> None:
    """Admit and discharge of Patient/a and Patient/b, interleaved, with a's first
    look-back slow: b proceeds meanwhile (unless concurrency is 1), yet each patient's
    versions are evaluated in order, so each gets its admission and then its discharge."""
    bridge = offline(concurrency=concurrency)
    log: list[str] = []
    bridge.pipeline.evaluator.lookups = SlowLookups(log)
    arrivals = [
        stay("ea", "a", 1, "in-progress"),
        stay("eb", "b", 1, "in-progress"),
        stay("ea", "a", 2, "finished"),
        stay("eb", "b", 2, "finished"),
    ]
    bridge.ingest([json.dumps(r).encode() for r in arrivals])
    stats = await bridge.process()
    assert (stats.processed, stats.dead) == (4, 0)
    for patient in ("a", "b"):
        mine = [entry for entry in log if f"Patient/{patient}@" in entry]
        assert mine == [f"{w} Patient/{patient}@{n}" for n in (1, 2) for w in ("ask", "got")]
    interleaved = log.index("got Patient/b@2") < log.index("got Patient/a@1")
    assert interleaved is (concurrency > 1)
    found = [(t.transition.kind.value, t.transition.focus) for t in bridge.store.transitions()]
    assert sorted(found) == [
        ("admission", "Encounter/ea"),
        ("admission", "Encounter/eb"),
        ("discharge", "Encounter/ea"),
        ("discharge", "Encounter/eb"),
    ]


async def test_a_version_the_journal_refuses_leaves_its_lane_evaluated_without_it(
    tmp_path: Path,
) -> None:
    """Admit, a discharge SQLite cannot store (a lone surrogate), a valid discharge of the
    same stay: the refused one is dead-lettered; the last one is evaluated again against the
    journal without it, so the discharge is still found; nothing stays pending."""
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    config = load_config(data={"fhir": {"base_url": "https://ehr.example/fhir"}})
    bridge = Bridge(config, client=None, store=store, clock=FixedClock(NOW))
    refused = {**stay("e1", "a", 2, "finished"), "status": "finished\ud800"}
    arrivals = [stay("e1", "a", 1, "in-progress"), refused, stay("e1", "a", 3, "finished")]
    bridge.ingest([json.dumps(r).encode() for r in arrivals])
    stats = await bridge.process()
    assert (stats.processed, stats.rejected) == (3, 1)
    kinds = [t.transition.kind.value for t in store.transitions()]
    assert sorted(kinds) == ["admission", "discharge"]
    (letter,) = store.dead_letters()
    assert letter.rejected_version() == ("default", "Encounter", "e1", "2")
    assert "surrogates not allowed" in letter.reason and store.pending() == []


def test_dead_letter_references_round_trip() -> None:
    """The reference a rejected version's letter carries parses back to its key; other
    letters have none."""
    rejected = version(stay("e/1", "a", 7, "finished"))
    reference = DeadLetter.rejected_reference(rejected)
    letter = DeadLetter(1, DeadLetter.REJECTED, reference, "why", b"", NOW)
    assert letter.rejected_version() == ("default", "Encounter", "e/1", "7")
    other = DeadLetter(2, "notification", reference, "why", b"", NOW)
    assert other.rejected_version() is None
    broken = DeadLetter(3, DeadLetter.REJECTED, "default|Encounter", "why", b"", NOW)
    assert broken.rejected_version() is None


def transition(kind: TransitionKind, occurred: datetime) -> Transition:
    """A transition of Patient/a focused on Encounter/e1 (or Task/t1 for Task kinds)."""
    focus = "Task/t1" if kind.value.startswith("task") else "Encounter/e1"
    return Transition(kind=kind, patient="Patient/a", focus=focus, occurred_at=occurred)


def test_policy_steps_are_visible_values() -> None:
    """A completed Task closes its activity; risk scores want the inputs only for a recent
    discharge with its Encounter, and give nothing without them."""
    done = Planning(transition(TransitionKind.TASK_COMPLETED, NOW), None, NOW)
    (close,) = CloseCompletedActivity().apply(done).actions
    assert isinstance(close, CloseActivity) and close.task == "Task/t1"
    other = Planning(transition(TransitionKind.DISCHARGE, NOW), None, NOW)
    assert CloseCompletedActivity().apply(other).actions == ()
    risk = RiskScores(tz="UTC", max_event_age=timedelta(days=14))
    resource = stay("e1", "a", 1, "finished")
    discharge = transition(TransitionKind.DISCHARGE, NOW - timedelta(days=1))
    assert risk.wants_risk(Planning(discharge, resource, NOW))
    assert not risk.wants_risk(Planning(discharge, None, NOW))
    old = transition(TransitionKind.DISCHARGE, NOW - timedelta(days=30))
    assert not risk.wants_risk(Planning(old, resource, NOW))
    assert not risk.wants_risk(Planning(transition(TransitionKind.ADMISSION, NOW), resource, NOW))
    assert risk.apply(Planning(discharge, resource, NOW)).actions == ()


def test_the_pack_is_the_one_source_of_calendar_and_dispositions(tmp_path: Path) -> None:
    """The calendar is the pack's defaults with the engine's keys laid over them; the table
    given to the engine is the one the rules use too."""
    bridge = offline(timezone="Europe/Paris", weekend=["fri", "sat"], holidays=["2026-12-25"])
    assert bridge.calendar.tz == "Europe/Paris"
    assert bridge.calendar.weekend == frozenset({4, 5})
    assert bridge.calendar.holidays == frozenset({date(2026, 12, 25)})
    plain = offline()
    assert plain.calendar == plain.rules.calendar()
    table = DispositionTable.load()
    config = load_config(data={"fhir": {"base_url": "https://ehr.example/fhir"}})
    given = Bridge(config, client=None, store=MemoryStore(), dispositions=table)
    assert given.rules.dispositions is table and given.dispositions is table
