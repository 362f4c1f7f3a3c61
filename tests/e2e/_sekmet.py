"""What the end-to-end tests write to and read from a sekmet server, and the engines they
point at it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhirbridge.clock import Clock, FixedClock
from fhirbridge.config import Config, load_config
from fhirbridge.engine import Bridge
from fhirbridge.testing import builders
from fhirbridge.testing.builders import ICD10CM
from fhirbridge.testing.sekmet import SekmetServer
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
)
from fhirbridge.writeback.writer import Writer

TAG = f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"
DATA = Path(__file__).resolve().parents[1] / "data"
MRN_SYSTEM, VISIT_SYSTEM = "urn:oid:1.2.3.4.5.1", "urn:oid:1.2.3.4.5.2"
#: What case management adds to a qualifying discharge of a patient the server holds no
#: Coverage for: the coverage review, and the first periodic review of the new CarePlan.
CASE_WORK = {"coverage-review", "careplan-review"}
#: A discharge home of a patient with no Coverage on the server: the TCM contact and visit,
#: medication reconciliation, and the coverage review.
DISCHARGE_WORK = {"tcm-contact", "tcm-visit", "med-reconciliation", "coverage-review"}


def engine_config(server: SekmetServer, tmp_path: Path, **engine: Any) -> Config:
    """A configuration for ``server`` with a journal file in ``tmp_path``."""
    return load_config(
        data={
            "fhir": {"base_url": server.base_url, "name": "sekmet", "retry": {"attempts": 2}},
            "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            "engine": {"default_owner": "Organization/care-coordination", **engine},
        }
    )


def recent() -> datetime:
    """A poll start that covers what the test just did on the server."""
    return datetime.now(UTC) - timedelta(minutes=10)


def fixed(text: str) -> FixedClock:
    """A clock stopped at an ISO instant."""
    return FixedClock(datetime.fromisoformat(text))


def engine_tasks(server: SekmetServer, patient: str) -> list[dict[str, Any]]:
    """The engine's Tasks for a patient, as the server has them."""
    return server.search("Task", {"patient": f"Patient/{patient}", "_tag": TAG})


def by_code(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tasks keyed by their engine code."""
    return {t["code"]["coding"][0]["code"]: t for t in tasks}


def set_period(server: SekmetServer, encounter_id: str, start: str, end: str | None) -> None:
    """Move an encounter's period to fixed dates (the workflows stamp 'now')."""
    encounter = server.read("Encounter", encounter_id)
    encounter["period"] = {"start": start, **({"end": end} if end else {})}
    server.update(encounter)


def case_manager(server: SekmetServer, patient: str) -> str:
    """Give the patient an active CareTeam with a case manager; returns the practitioner."""
    practitioner = server.create(
        {"resourceType": "Practitioner", "name": [{"family": "Casey", "given": ["Manager"]}]}
    )
    server.create(
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{patient}"},
            "participant": [
                {
                    "role": [{"coding": [{"code": "case-manager"}]}],
                    "member": {"reference": f"Practitioner/{practitioner['id']}"},
                }
            ],
        }
    )
    return f"Practitioner/{practitioner['id']}"


def discharged(sekmet: SekmetServer) -> str:
    """A patient admitted and discharged home just now; returns the Patient id."""
    patient = sekmet.register_patient()
    sekmet.discharge(sekmet.admit(patient), "home")
    return patient


def screening(patient: str, name: str = "Question1") -> dict[str, Any]:
    """The Gravity SDOHCC Hunger Vital Sign screening response, answered by ``patient`` now."""
    path = (
        DATA / "sdohcc" / f"Observation-SDOHCC-ObservationResponseHungerVitalSign{name}Example.json"
    )
    data: dict[str, Any] = json.loads(path.read_text())
    for key in ("id", "meta", "derivedFrom", "performer"):
        data.pop(key, None)
    data["subject"] = {"reference": f"Patient/{patient}"}
    data["effectiveDateTime"] = data["issued"] = datetime.now(UTC).isoformat()
    return data


def discharged_home(server: SekmetServer, start: str, end: str) -> tuple[str, str]:
    """A patient with a case manager, admitted and discharged home on fixed dates."""
    patient = server.register_patient(birth_date="1950-03-04")
    case_manager(server, patient)
    stay = server.admit(patient)
    server.discharge(stay, "home")
    set_period(server, stay, start, end)
    return patient, stay


async def scenario(sekmet: SekmetServer, make_bridge: Callable[..., Bridge]) -> dict[str, str]:
    """Two discharges home on Thursday 5 Nov 2026; the engine writes their TCM Tasks; the
    first patient's contact is completed on Friday, the second is readmitted on 20 Nov."""
    first, _ = discharged_home(sekmet, "2026-11-02T08:00:00Z", "2026-11-05T15:00:00Z")
    second, _ = discharged_home(sekmet, "2026-11-02T09:00:00Z", "2026-11-05T16:00:00Z")
    bridge = make_bridge(clock=fixed("2026-11-06T09:00:00+00:00"))
    stats = await bridge.run_once(since=recent())
    # per discharge: TCM contact and visit, medication reconciliation, coverage review (no
    # Coverage), and the sweep's first review of the new CarePlan
    assert stats.created == 10
    contact = by_code(engine_tasks(sekmet, first))["tcm-contact"]
    complete(sekmet, contact["id"], "2026-11-06T11:30:00Z")
    again = sekmet.admit(second)
    set_period(sekmet, again, "2026-11-20T10:00:00Z", None)
    return {"first": first, "second": second, "contact": contact["id"]}


def condition(
    server: SekmetServer,
    patient: str,
    code: str,
    *,
    system: str = ICD10CM,
    display: str | None = None,
    recorded: str | None = "2026-06-01",
) -> None:
    """An active Condition of the patient with one coding (ICD-10-CM unless told), recorded
    on ``recorded`` (no date when None)."""
    resource = builders.condition(
        code, system, rid=None, patient=patient, display=display, recorded=recorded
    )
    server.create(resource)


def past_ed_visit(server: SekmetServer, patient: str, day: str) -> None:
    """An ED visit on an earlier day, sent home the same day."""
    visit = server.ed_visit(patient)
    server.discharge(visit, "home")
    set_period(server, visit, f"{day}T10:00:00Z", f"{day}T16:00:00Z")


def risk_assessments(server: SekmetServer, patient: str) -> dict[str, dict[str, Any]]:
    """The engine's RiskAssessments of a patient by score code (sekmet has no RiskAssessment
    search parameters but the common ones, so the subject is filtered here)."""
    found = server.search("RiskAssessment", {"_tag": TAG})
    mine = [r for r in found if r["subject"]["reference"] == f"Patient/{patient}"]
    return {r["method"]["coding"][0]["code"]: r for r in mine}


def identifier(resource: dict[str, Any], system: str) -> str:
    """The value of the resource's identifier in ``system``."""
    return next(i["value"] for i in resource["identifier"] if i.get("system") == system)


def dtm(moment: datetime) -> str:
    """An HL7 v2 DTM with seconds and offset."""
    return moment.strftime("%Y%m%d%H%M%S%z")


def discharge_home(mrn: str, visit: str, control_id: str = "E2E0001") -> str:
    """An ADT^A03 discharging the visit home (PV1-36 01) a minute from now."""
    now = datetime.now(UTC).replace(microsecond=0)
    fields = [""] * 46
    fields[2], fields[3], fields[19], fields[36] = "I", "WARD4A^401^1^SEKMET", visit, "01"
    fields[44], fields[45] = dtm(now - timedelta(days=3)), dtm(now)
    segments = [
        f"MSH|^~\\&|ADT|SEKMET|FHIRBRIDGE|SEKMET|{dtm(now + timedelta(minutes=1))}||"
        f"ADT^A03^ADT_A03|{control_id}|P|2.5",
        f"EVN|A03|{dtm(now)}",
        f"PID|1||{mrn}^^^SEKMET^MR||DOE^JANE||19500304|F",
        "PV1|" + "|".join(fields[1:]),
    ]
    return "\r".join(segments) + "\r"


def engine(
    server: SekmetServer,
    folder: Path,
    *,
    transactions: bool,
    clock: Clock | None,
    **options: Any,
) -> Bridge:
    """An engine with its own journal in ``folder``, on the given write path (``options``:
    ``engine`` settings)."""
    bridge = Bridge.from_config(engine_config(server, folder, **options), clock=clock)
    assert bridge.client is not None
    bridge.writer = Writer(
        bridge.client,
        bridge.store,
        clock=bridge.clock,
        agent=bridge.config.engine.requester,
        codes=bridge.rules.codes,
        transactions=transactions,
    )
    return bridge


def complete(server: SekmetServer, task_id: str, when: str) -> None:
    """Staff complete a Task in the EHR at ``when``."""
    task = server.read("Task", task_id)
    task["status"] = "completed"
    task["executionPeriod"] = {"end": when}
    task["lastModified"] = when
    server.update(task)
