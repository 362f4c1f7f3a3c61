"""Discharge to follow-up, end to end, on a real sekmet server: what the engine writes into the
EHR for each transition, on which business day, owned by whom, and exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from fhirbridge.values import (
    IDENTIFIER_SYSTEM,
    CreateTask,
    RecordRisk,
)
from tests.e2e._sekmet import (
    CASE_WORK,
    TAG,
    by_code,
    case_manager,
    engine_tasks,
    fixed,
    recent,
    set_period,
)

pytestmark = pytest.mark.e2e


async def test_discharge_home_writes_the_two_tcm_tasks_once(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Admit then discharge home on Thursday 24 Dec 2026 (25 Dec a holiday, then a weekend):
    the TCM contact is due Tuesday 29 Dec (2 business days), the visit 7 Jan (14 days); both
    are owned by the case manager, focus and encounter the stay, basedOn the CarePlan, carry a
    deterministic identifier and a Provenance; a second run writes nothing new."""
    patient = sekmet.register_patient(birth_date="1950-03-04")
    owner = case_manager(sekmet, patient)
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, "home")
    set_period(sekmet, encounter, "2026-12-20T09:00:00-05:00", "2026-12-24T15:00:00-05:00")

    bridge = make_bridge(
        clock=fixed("2026-12-26T12:00:00+00:00"),
        timezone="America/New_York",
        holidays=["2026-12-25", "2027-01-01"],
    )
    stats = await bridge.run_once(since=recent())
    assert stats.created == 5

    tasks = by_code(engine_tasks(sekmet, patient))
    assert set(tasks) == {"tcm-contact", "tcm-visit", "med-reconciliation"} | CASE_WORK
    contact, visit = tasks["tcm-contact"], tasks["tcm-visit"]
    assert contact["restriction"]["period"]["end"] == "2026-12-29"
    assert visit["restriction"]["period"]["end"] == "2027-01-07"
    careplans = sekmet.search("CarePlan", {"patient": f"Patient/{patient}", "_tag": TAG})
    assert len(careplans) == 1
    careplan = careplans[0]
    for task in (contact, visit):
        assert task["status"] == "requested" and task["intent"] == "order"
        assert task["owner"]["reference"] == owner
        assert task["focus"]["reference"] == f"Encounter/{encounter}"
        assert task["encounter"]["reference"] == f"Encounter/{encounter}"
        assert task["for"]["reference"] == f"Patient/{patient}"
        assert task["basedOn"] == [{"reference": f"CarePlan/{careplan['id']}"}]
        assert task["identifier"][0]["system"] == IDENTIFIER_SYSTEM
        provenance = sekmet.search("Provenance", {"target": f"Task/{task['id']}/_history/1"})
        assert len(provenance) == 1
        assert provenance[0]["entity"][0]["what"]["reference"].startswith(
            f"Encounter/{encounter}/_history/"
        )
    activities = {a["reference"]["reference"] for a in careplan["activity"]}
    assert activities == {f"Task/{t['id']}" for t in tasks.values()}
    assert {c["coding"][0]["code"] for c in careplan["category"]} >= {"assess-plan"}

    again = await bridge.run_once(since=recent())
    assert again.created == 0 and again.planned == 0
    restarted = make_bridge(clock=fixed("2026-12-26T12:00:00+00:00"))
    await restarted.run_once(since=recent())
    assert len(engine_tasks(sekmet, patient)) == 5
    await bridge.aclose()
    await restarted.aclose()


@pytest.mark.parametrize(
    ("disposition", "codes", "priority"),
    [
        ("snf", {"care-handoff"}, "routine"),  # post-acute facility: handoff within 1 day
        ("hosp", {"care-handoff"}, "routine"),  # hospice, not a hospital transfer
        ("aadvice", {"ama-outreach"}, "urgent"),  # against advice: urgent outreach
        (
            "oth",
            {"confirm-disposition", "tcm-contact", "tcm-visit", "med-reconciliation"},
            "routine",
        ),  # unknown
    ],
)
async def test_discharge_disposition_decides_the_work(
    sekmet: SekmetServer,
    bridge: Bridge,
    disposition: str,
    codes: set[str],
    priority: str,
) -> None:
    """Each disposition group gives its own Tasks."""
    patient = sekmet.register_patient()
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, disposition)
    await bridge.run_once(since=recent())
    tasks = by_code(engine_tasks(sekmet, patient))
    assert set(tasks) == codes | CASE_WORK
    first = sorted(codes)[0]
    assert tasks[first]["priority"] == priority


async def test_ed_visit_sent_home_gets_a_follow_up_call(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """An EMER encounter that ends with the patient home gives the ED follow-up call Task
    (and the CarePlan it opens its first review; an ED visit is no coverage-review discharge)."""
    patient = sekmet.register_patient()
    visit = sekmet.ed_visit(patient)
    sekmet.discharge(visit, "home")
    await bridge.run_once(since=recent())
    assert set(by_code(engine_tasks(sekmet, patient))) == {"ed-follow-up", "careplan-review"}


async def test_readmission_within_30_days_escalates(sekmet: SekmetServer, bridge: Bridge) -> None:
    """A second admission after a discharge home gives an urgent readmission review Task."""
    patient = sekmet.register_patient()
    first = sekmet.admit(patient)
    sekmet.discharge(first, "home")
    await bridge.run_once(since=recent())
    sekmet.admit(patient, bed="bed-401-2")
    await bridge.run_once(since=recent())
    tasks = by_code(engine_tasks(sekmet, patient))
    assert tasks["readmission-review"]["priority"] == "urgent"


async def test_death_cancels_open_tasks(sekmet: SekmetServer, bridge: Bridge) -> None:
    """When the Patient becomes deceased, every open engine Task of theirs is cancelled."""
    patient = sekmet.register_patient()
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, "home")
    await bridge.run_once(since=recent())
    assert {t["status"] for t in engine_tasks(sekmet, patient)} == {"requested"}
    sekmet.death(patient)
    await bridge.run_once(since=recent())
    tasks = engine_tasks(sekmet, patient)
    assert len(tasks) == 5
    assert {t["status"] for t in tasks} == {"cancelled"}
    assert all("deceased" in t["statusReason"]["text"] for t in tasks)


async def test_cancelled_encounter_cancels_its_tasks(sekmet: SekmetServer, bridge: Bridge) -> None:
    """An encounter cancelled after the engine acted on it gets its Tasks cancelled (the
    CarePlan's review, of no encounter, waits for the sweep that finds the plan done)."""
    patient = sekmet.register_patient()
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, "home")
    await bridge.run_once(since=recent())
    sekmet.cancel(encounter)
    await bridge.run_once(since=recent())
    tasks = engine_tasks(sekmet, patient)
    assert {t["status"] for t in tasks if t.get("encounter")} == {"cancelled"}
    assert len([t for t in tasks if t.get("encounter")]) == 4


async def test_plan_shows_the_writes_without_making_them(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """A dry run lists the discharge and its four Tasks and writes nothing, then a run writes
    exactly the Tasks the plan named (same identifiers), and the new CarePlan's review."""
    patient = sekmet.register_patient()
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, "home")
    plans = await bridge.plan(since=recent())
    discharge = [p for p in plans if p.transition.kind.value == "discharge"]
    assert len(discharge) == 1
    planned = {a.identifier for a in discharge[0].actions if isinstance(a, CreateTask)}
    assert len(planned) == 4
    scores = {a.score for a in discharge[0].actions if isinstance(a, RecordRisk)}
    assert scores == {"lace", "hospital"}
    assert engine_tasks(sekmet, patient) == []
    assert bridge.store.outbox_depth() == 0
    await bridge.run_once(since=recent())
    written = {
        t["identifier"][0]["value"]
        for t in engine_tasks(sekmet, patient)
        if t["code"]["coding"][0]["code"] != "careplan-review"
    }
    assert written == planned


def test_cli_plan_json_and_run_once(sekmet: SekmetServer, tmp_path: Path) -> None:
    """The command line: `plan --json` prints one object per transition with its writes,
    `run --once` writes them and exits 0."""
    patient = sekmet.register_patient()
    encounter = sekmet.admit(patient)
    sekmet.discharge(encounter, "home")
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fhir": {"base_url": sekmet.base_url},
                "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRBRIDGE_")}
    command = [sys.executable, "-m", "fhirbridge", "--config", str(config)]
    planned = subprocess.run(
        [*command, "plan", "--json"], capture_output=True, text=True, env=env, check=True
    )
    rows = [json.loads(line) for line in planned.stdout.splitlines()]
    discharge = next(r for r in rows if r["kind"] == "discharge")
    assert discharge["encounter"] == f"Encounter/{encounter}"
    assert discharge["facts"]["disposition_group"] == "community"
    tasks = [w for w in discharge["writes"] if w["action"] == "create-task"]
    assert {w["code"] for w in tasks} == {
        "tcm-contact",
        "tcm-visit",
        "med-reconciliation",
        "coverage-review",
    }
    ran = subprocess.run(
        [*command, "run", "--once", "--new-journal"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "tasks created 5" in ran.stdout  # and the new CarePlan's first review
    assert len(engine_tasks(sekmet, patient)) == 5
