"""Write units against the real sekmet server: one transaction per transition, the
per-resource fallback leaving the same state, crash replay, and duplicate healing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.errors import MultipleMatches, VersionConflict
from fhirbridge.fhir.client import FhirClient
from fhirbridge.identity import DUPLICATE_SYSTEM, careplan_identifier, identifier_query
from fhirbridge.testing.builders import care_plan
from fhirbridge.testing.builders import task as build_task
from fhirbridge.testing.sekmet import SekmetServer
from fhirbridge.values import IDENTIFIER_SYSTEM
from tests.e2e._sekmet import TAG, condition, engine, fixed, recent

WRITTEN = ("Task", "CarePlan", "Observation", "RiskAssessment", "Provenance")


class Crash(Exception):
    """Stands for the process dying."""


def sick_discharge(server: SekmetServer) -> str:
    """A patient with heart failure and COPD, admitted and discharged home (risk scored)."""
    patient = server.register_patient(birth_date="1941-02-03")
    for code in ("I50.9", "J44.9"):
        condition(server, patient, code, recorded=None)
    stay = server.admit(patient)
    server.discharge(stay, "home")
    return patient


def engine_resources(server: SekmetServer, patient: str) -> dict[str, list[dict[str, Any]]]:
    """What the engine wrote for ``patient``, by type (Provenance: those naming them)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for kind in WRITTEN[:-1]:
        # sekmet has no subject search on RiskAssessment: filter here
        found[kind] = [
            r
            for r in server.search(kind, {"_tag": TAG})
            if (r.get("for") or r.get("subject") or {}).get("reference") == f"Patient/{patient}"
        ]
    provenance: dict[str, dict[str, Any]] = {}
    for kind in WRITTEN[:-1]:
        for resource in found[kind]:
            for p in server.search("Provenance", {"target": f"{kind}/{resource['id']}"}):
                provenance[p["id"]] = p
    found["Provenance"] = list(provenance.values())
    return found


def identifier(resource: dict[str, Any]) -> str:
    """The engine identifier value of a resource."""
    return next(i["value"] for i in resource["identifier"] if i["system"] == IDENTIFIER_SYSTEM)


def state(server: SekmetServer, patient: str) -> dict[str, Any]:
    """The server state a write path leaves, free of ids and stamps: Tasks (code, status),
    CarePlan activities (the Task code, the outcome), risk resources, Provenance targets."""
    found = engine_resources(server, patient)
    by_ref = {f"{k}/{r['id']}": r for k in WRITTEN[:-1] for r in found[k]}

    def named(ref: str) -> str:
        resource = by_ref[ref.split("/_history")[0]]
        code = (resource.get("code") or {}).get("coding", [{}])[0].get("code")
        return f"{resource['resourceType']}:{code or resource.get('title')}"

    (careplan,) = found["CarePlan"]
    return {
        "tasks": sorted((t["code"]["coding"][0]["code"], t["status"]) for t in found["Task"]),
        "activities": sorted(
            (
                named(a["reference"]["reference"]),
                [c.get("text") for c in a.get("outcomeCodeableConcept", [])],
            )
            for a in careplan["activity"]
        ),
        "risk": sorted(named(f"RiskAssessment/{r['id']}") for r in found["RiskAssessment"]),
        "provenance": sorted(
            (
                p["activity"]["coding"][0]["code"],
                sorted(named(t["reference"]) for t in p["target"]),
                [e["what"]["reference"].split("/")[0] for e in p.get("entity", [])],
            )
            for p in found["Provenance"]
        ),
    }


async def scenario(server: SekmetServer, folder: Path, *, transactions: bool) -> dict[str, Any]:
    """Discharge with risk, then the EHR completes the contact Task: returns the state."""
    patient = sick_discharge(server)
    clock = fixed("2026-11-18T09:00:00+00:00")
    bridge = engine(server, folder, transactions=transactions, clock=clock)
    try:
        first = await bridge.run_once(since=recent())
        assert first.created >= 2
        assert bridge.writer is not None and bridge.writer.path == (
            "transaction" if transactions else "per-resource"
        )
        (contact,) = [
            t
            for t in engine_resources(server, patient)["Task"]
            if t["code"]["coding"][0]["code"] == "tcm-contact"
        ]
        contact["status"] = "completed"
        server.update(contact)
        await bridge.run_once(since=recent())
        again = await bridge.run_once(since=recent())
        assert again.created == 0
    finally:
        await bridge.aclose()
    return state(server, patient)


async def test_both_write_paths_leave_the_same_server_state(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """The same discharge (Tasks, CarePlan, risk) and follow-up (a completed Task closes its
    activity) on the transaction path and on the per-resource path: the same Tasks, CarePlan
    activities, risk resources and Provenance targets."""
    by_transaction = await scenario(sekmet, tmp_path / "tx", transactions=True)
    per_resource = await scenario(sekmet, tmp_path / "each", transactions=False)
    assert by_transaction == per_resource
    assert ("Task:tcm-contact", ["completed"]) in by_transaction["activities"]
    # one Provenance for the discharge's whole unit, naming every resource it wrote
    # (the sweep's first CarePlan review is a unit of its own, derived from the CarePlan)
    creates = [
        p for p in by_transaction["provenance"] if p[0] == "CREATE" and p[2] == ["Encounter"]
    ]
    assert len(creates) == 1
    assert {t.split(":")[0] for t in creates[0][1]} == {
        "CarePlan",
        "Observation",
        "RiskAssessment",
        "Task",
    }


@pytest.mark.parametrize("transactions", [True, False], ids=["transaction", "per-resource"])
async def test_a_unit_replayed_after_a_crash_creates_nothing(
    sekmet: SekmetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transactions: bool
) -> None:
    """The unit reached the server, then the process died before the outbox noted it: the
    restart writes the unit again and the server holds exactly what it held (no Task,
    CarePlan, risk resource or Provenance twice)."""
    patient = sick_discharge(sekmet)
    clock = fixed("2026-11-18T09:00:00+00:00")
    first = engine(sekmet, tmp_path, transactions=transactions, clock=clock)

    def die(item_id: int, result: object) -> None:
        raise Crash

    monkeypatch.setattr(first.store, "finish_outbox", die)
    with pytest.raises(Crash):
        await first.run_once(since=recent())
    await first.aclose()
    before = {k: sorted(r["id"] for r in v) for k, v in engine_resources(sekmet, patient).items()}
    assert before["Task"] and before["RiskAssessment"] and len(before["Provenance"]) == 1

    second = engine(sekmet, tmp_path, transactions=transactions, clock=clock)
    try:
        stats = await second.run_once(since=recent())
        # the unit's Tasks found again; the restart's sweep plans the new CarePlan's first
        # review (a unit of its own: one Task, one Provenance)
        assert stats.created == 1 and stats.existing == len(before["Task"])
        assert second.store.outbox_depth() == 0
    finally:
        await second.aclose()
    resources = engine_resources(sekmet, patient)
    reviews = [t for t in resources["Task"] if t["code"]["coding"][0]["code"] == "careplan-review"]
    (review,) = reviews
    targets = {f"Task/{review['id']}"}
    after = {
        k: sorted(
            r["id"]
            for r in v
            if r["id"] != review["id"]
            and not targets & {t["reference"].split("/_history")[0] for t in r.get("target", [])}
        )
        for k, v in resources.items()
    }
    assert after == before


def task_body(patient: str, value: str) -> dict[str, Any]:
    """A minimal engine Task with identifier ``value``."""
    return build_task(
        None,
        patient=patient,
        engine=True,
        authored="2026-11-18T09:00:00+00:00",
        identifier=[{"system": IDENTIFIER_SYSTEM, "value": value}],
    )


async def race(server: SekmetServer, patient: str) -> str:
    """Two writers conditional-create one identifier at once, round after round, until the
    server (which does not serialise If-None-Exist) keeps it twice; returns that identifier."""
    async with FhirClient(server.base_url) as one, FhirClient(server.base_url) as two:
        for round_ in range(60):
            value = f"race-{round_}"
            body = task_body(patient, value)
            query = identifier_query(value)
            results = await asyncio.gather(
                *(c.create(body, if_none_exist=query) for c in (one, two) for _ in range(3)),
                return_exceptions=True,
            )
            created = [r for r in results if not isinstance(r, BaseException) and r.created]
            if len(created) > 1:
                return value
    pytest.fail("the race never produced a duplicate in 60 rounds")


async def test_racing_writers_duplicates_are_healed_by_the_sweep(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """Two writers racing on one identifier leave it twice on the server; the sweep keeps
    the oldest, marks the others entered-in-error with a Provenance saying why, repoints the
    CarePlan activities, and a conditional create finds one match again."""
    patient = sekmet.register_patient()
    value = await race(sekmet, patient)
    twins = sekmet.search("Task", {"identifier": f"{IDENTIFIER_SYSTEM}|{value}"})
    assert len(twins) > 1
    careplan = sekmet.create(
        care_plan(
            None,
            patient=patient,
            created=None,
            activities=[f"Task/{t['id']}" for t in twins],
            engine=True,
            identifier=[
                {"system": IDENTIFIER_SYSTEM, "value": careplan_identifier(f"Patient/{patient}")},
            ],
        )
    )
    bridge = engine(sekmet, tmp_path, transactions=True, clock=fixed("2026-11-18T10:00:00Z"))
    try:
        assert bridge.writer is not None
        retired = await bridge.writer.heal_duplicates()
    finally:
        await bridge.aclose()
    tasks = sekmet.search("Task", {"patient": f"Patient/{patient}", "_tag": TAG})
    active = [t for t in tasks if t["status"] != "entered-in-error"]
    by_value: dict[str, int] = {}
    for task in active:
        by_value[identifier(task)] = by_value.get(identifier(task), 0) + 1
    assert all(count == 1 for count in by_value.values())  # 0 active duplicates
    assert len(retired) == len(twins) - 1
    (kept,) = [t for t in active if identifier(t) == value]
    assert kept["id"] == sorted(twins, key=lambda t: (t["meta"]["lastUpdated"], t["id"]))[0]["id"]
    for ref in retired:
        gone = sekmet.read("Task", ref.split("/")[1])
        assert gone["identifier"][0]["system"] == DUPLICATE_SYSTEM
        (why,) = sekmet.search("Provenance", {"target": ref})
        assert "entered-in-error" in why["reason"][0]["text"]
    healed = sekmet.read("CarePlan", careplan["id"])
    assert [a["reference"]["reference"] for a in healed["activity"]] == [f"Task/{kept['id']}"]
    async with FhirClient(sekmet.base_url) as client:
        again = await client.create(
            task_body(patient, value), if_none_exist=identifier_query(value)
        )
    assert not again.created and again.id == kept["id"]


CLOCK = "2026-11-18T09:00:00+00:00"


async def twinned_contact(server: SekmetServer, folder: Path) -> tuple[str, dict[str, Any]]:
    """A discharge written by one engine, then its contact Task copied as a racing writer
    would leave it (same engine identifier): returns the patient and the original Task."""
    patient = sick_discharge(server)
    first = engine(server, folder, transactions=True, clock=fixed(CLOCK))
    try:
        await first.run_once(since=recent())
    finally:
        await first.aclose()
    (contact,) = [
        t
        for t in engine_resources(server, patient)["Task"]
        if t["code"]["coding"][0]["code"] == "tcm-contact"
    ]
    twin = {k: v for k, v in contact.items() if k not in ("id", "meta")}
    server.create({**twin, "meta": {"tag": contact["meta"]["tag"]}})
    return patient, contact


async def test_a_second_journal_heals_instead_of_dead_lettering(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """A Task already on the server twice (another engine, another journal): writing the same
    unit meets MultipleMatches, heals, and writes on; no dead letter, one active Task each."""
    patient, contact = await twinned_contact(sekmet, tmp_path / "one")
    async with FhirClient(sekmet.base_url) as client:
        with pytest.raises(MultipleMatches):
            await client.create(contact, if_none_exist=identifier_query(identifier(contact)))

    second = engine(sekmet, tmp_path / "two", transactions=True, clock=fixed(CLOCK))
    try:
        stats = await second.run_once(since=recent())
        assert stats.dead == 0 and second.store.outbox_items("dead") == []
    finally:
        await second.aclose()
    tasks = [
        t for t in engine_resources(sekmet, patient)["Task"] if t["status"] != "entered-in-error"
    ]
    assert len({identifier(t) for t in tasks}) == len(tasks)


async def test_replay_heals_a_multiple_matches_dead_letter(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """A create-task dead-lettered with MultipleMatches (as an earlier release left it, with a
    twin on the server): ``replay`` puts it back, the write heals the twin and succeeds, and no
    dead letter is left."""
    patient, contact = await twinned_contact(sekmet, tmp_path / "one")
    second = engine(sekmet, tmp_path / "two", transactions=True, clock=fixed(CLOCK))
    try:
        await second.poller().poll(recent())
        await second.process()
        (item,) = [
            i
            for i in second.store.outbox_items("pending")
            if i.payload["action"].get("identifier") == identifier(contact)
        ]
        second.store.fail_outbox(item.id, "MultipleMatches (HTTP 412 on POST Task)", dead=True)
        await second.drain()
        assert [i.key for i in second.store.outbox_items("dead")] == [item.key]
        assert second.replay() >= 1
        stats = await second.drain()
        assert stats.dead == 0 and second.store.outbox_items("dead") == []
    finally:
        await second.aclose()
    active = [
        t for t in engine_resources(sekmet, patient)["Task"] if t["status"] != "entered-in-error"
    ]
    assert [t["id"] for t in active if identifier(t) == identifier(contact)] == [contact["id"]]


async def test_two_careplans_of_one_patient_are_merged_before_writing(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """Two engine CarePlans for one patient (racing writers): the next unit for that patient
    keeps the oldest, moves the other's activities to it, retires the other, and writes its
    own activities to the survivor."""
    patient = sick_discharge(sekmet)
    value = careplan_identifier(f"Patient/{patient}")

    def careplan(created: str, task: str) -> dict[str, Any]:
        return sekmet.create(
            care_plan(
                None,
                patient=patient,
                created=created,
                activities=[task],
                engine=True,
                identifier=[{"system": IDENTIFIER_SYSTEM, "value": value}],
            )
        )

    older = careplan("2026-11-01T00:00:00Z", "Task/earlier-one")
    newer = careplan("2026-11-02T00:00:00Z", "Task/earlier-two")
    bridge = engine(sekmet, tmp_path, transactions=True, clock=fixed(CLOCK))
    try:
        stats = await bridge.run_once(since=recent())
        assert stats.dead == 0 and stats.created >= 2
    finally:
        await bridge.aclose()
    assert sekmet.read("CarePlan", newer["id"])["status"] == "entered-in-error"
    kept = sekmet.read("CarePlan", older["id"])
    refs = [a["reference"]["reference"] for a in kept["activity"]]
    assert refs[:2] == ["Task/earlier-one", "Task/earlier-two"]
    tasks = engine_resources(sekmet, patient)["Task"]
    assert {f"Task/{t['id']}" for t in tasks} <= set(refs)
    assert all(t["basedOn"] == [{"reference": f"CarePlan/{older['id']}"}] for t in tasks)


def test_check_names_the_write_path(sekmet: SekmetServer, tmp_path: Path) -> None:
    """`fhirbridge check` says which write path the server gets (sekmet: transactions)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    env["FHIRBRIDGE_FHIR__BASE_URL"] = sekmet.base_url
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhirbridge",
            "--config",
            str(root / "examples/sekmet.yaml"),
            "check",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "writes: transaction" in result.stdout


async def test_a_stale_careplan_is_reread_and_the_unit_rebuilt(
    sekmet: SekmetServer, tmp_path: Path
) -> None:
    """The EHR changed the CarePlan after the engine last saw it: the next unit's
    transaction is refused on ``ifMatch`` (412), the engine re-reads the CarePlan, rebuilds
    the unit and writes it; the EHR's change is kept and nothing is dead-lettered."""
    patient = sick_discharge(sekmet)
    bridge = engine(sekmet, tmp_path, transactions=True, clock=fixed(CLOCK))
    try:
        await bridge.run_once(since=recent())
        (careplan,) = engine_resources(sekmet, patient)["CarePlan"]
        careplan["note"] = [{"text": "reviewed by the case manager"}]
        sekmet.update(careplan)  # a new version the engine has not seen
        second = sekmet.admit(patient)
        sekmet.discharge(second, "home")
        assert bridge.writer is not None
        client = bridge.writer.client
        send = client.transaction
        answers: list[str] = []

        async def transaction(bundle: Any) -> dict[str, Any]:
            try:
                response = await send(bundle)
            except VersionConflict:
                answers.append("412")
                raise
            answers.append("200")
            return response

        client.transaction = transaction  # type: ignore[method-assign]
        stats = await bridge.run_once(since=recent())
        assert stats.dead == 0 and stats.created >= 2
    finally:
        await bridge.aclose()
    # units that do not touch the CarePlan may go first; the one that does is refused once,
    # then rebuilt on the version just read and accepted
    refused = answers.index("412")
    assert answers[refused + 1] == "200"
    assert answers.count("412") == 1
    (current,) = engine_resources(sekmet, patient)["CarePlan"]
    assert current["note"] == [{"text": "reviewed by the case manager"}]
    tasks = engine_resources(sekmet, patient)["Task"]
    refs = {a["reference"]["reference"] for a in current["activity"]}
    assert {f"Task/{t['id']}" for t in tasks} == refs
