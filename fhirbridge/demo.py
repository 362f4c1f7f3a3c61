"""``fhirbridge demo``: the whole loop on an embedded FHIR server, no set-up needed.

It starts a local ``sekmet`` FHIR R4 server (the ``demo`` extra), plays a few hospital
stays through its ADT workflows (discharges home, to a skilled nursing facility, against
advice, with an unknown disposition, an ED visit, a readmission; one patient with no
insurance on file, one screened positive for food insecurity), runs the engine, prints the
Tasks, referrals and CarePlans now on the server, then runs again to show that nothing is
written twice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.errors import ConfigError
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM

__all__ = ["run_demo"]

Echo = Callable[[str], None]


def _high_risk_story(server: Any, echo: Echo) -> None:
    """A frail patient: heart failure, COPD and dementia, two ED visits this autumn, eight
    days in hospital after arriving through the ED. LACE puts them at high risk."""
    patient = server.register_patient(mrn="DEMO0000", seed=99, birth_date="1938-04-02")
    for code in ("I50.9", "J44.9", "F03.90"):
        server.create(
            {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
                "subject": {"reference": f"Patient/{patient}"},
            }
        )
    now = datetime.now(UTC)
    for days_ago in (75, 30):
        visit = server.ed_visit(patient)
        server.discharge(visit, "home")
        _move(server, visit, now - timedelta(days=days_ago), hours=5)
    stay = server.admit(patient)
    _food_insecurity_screening(server, patient, now - timedelta(days=2))
    server.discharge(stay, "home")
    _move(server, stay, now - timedelta(days=8), hours=8 * 24)
    _coverage(server, patient)
    echo(f"  {'Frail, home after 8 days':<32} Patient/{patient}  Encounter/{stay}  (home)")
    echo(f"  {'  screened: food insecurity':<32} (Hunger Vital Sign, 'Often true')")


def _coverage(server: Any, patient: str) -> None:
    """An active Coverage for the patient, from a year ago to a year ahead."""
    today = datetime.now(UTC).date()
    server.create(
        {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": {"reference": f"Patient/{patient}"},
            "payor": [{"display": "Demo Health Plan"}],
            "period": {
                "start": (today - timedelta(days=365)).isoformat(),
                "end": (today + timedelta(days=365)).isoformat(),
            },
        }
    )


def _food_insecurity_screening(server: Any, patient: str, when: datetime) -> None:
    """A positive Hunger Vital Sign answer, shaped as the Gravity SDOH Clinical Care IG's
    SDOHCC-ObservationResponseHungerVitalSignQuestion1Example."""
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    sdoh = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    server.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {"coding": [{"system": category, "code": "social-history"}]},
                {"coding": [{"system": category, "code": "survey"}]},
                {"coding": [{"system": sdoh, "code": "food-insecurity"}]},
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": when.isoformat(),
            "valueCodeableConcept": {
                "coding": [
                    {"system": "http://loinc.org", "code": "LA28397-0", "display": "Often true"}
                ]
            },
        }
    )


def _move(server: Any, encounter_id: str, start: datetime, *, hours: int) -> None:
    """Set an encounter's period (the workflows stamp the current time)."""
    encounter = server.read("Encounter", encounter_id)
    end = start + timedelta(hours=hours)
    encounter["period"] = {"start": start.isoformat(), "end": end.isoformat()}
    server.update(encounter)


def _story(server: Any, echo: Echo) -> None:
    """Admit and discharge a handful of patients with different dispositions."""
    _high_risk_story(server, echo)
    stays = [
        ("Home after pneumonia", "home"),
        ("To a skilled nursing facility", "snf"),
        ("Left against medical advice", "aadvice"),
        ("Disposition not recorded", "oth"),
    ]
    for index, (label, disposition) in enumerate(stays, start=1):
        patient = server.register_patient(mrn=f"DEMO{index:04d}", seed=index)
        encounter = server.admit(patient)
        server.discharge(encounter, disposition)
        if index == 1:
            label = "Home, no insurance on file"
        else:
            _coverage(server, patient)
        echo(f"  {label:<32} Patient/{patient}  Encounter/{encounter}  ({disposition})")
    patient = server.register_patient(mrn="DEMO0005", seed=5)
    _coverage(server, patient)
    visit = server.ed_visit(patient)
    server.discharge(visit, "home")
    echo(f"  {'ED visit, sent home':<32} Patient/{patient}  Encounter/{visit}  (home)")
    patient = server.register_patient(mrn="DEMO0006", seed=6)
    _coverage(server, patient)
    first = server.admit(patient)
    server.discharge(first, "home")
    again = server.admit(patient, bed="bed-401-2")
    echo(f"  {'Readmitted after going home':<32} Patient/{patient}  Encounter/{again}")


def _table(rows: list[list[str]], echo: Echo) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        echo("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            echo("  " + "  ".join("-" * w for w in widths))


async def run_demo(workdir: Path | None = None, *, echo: Echo = print) -> None:
    """Run the demo in ``workdir`` (default: a temporary folder, removed afterwards)."""
    try:
        from fhirbridge.testing.sekmet import SekmetServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the demo needs the embedded server: pip install 'fhirbridge[demo]'"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="fhirbridge-demo-") as tmp:
        folder = Path(workdir or tmp).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        echo(f"Starting the embedded FHIR server in {folder} ...")
        with SekmetServer.start(folder / "server") as server:
            echo(f"FHIR server ready at {server.base_url}\n\nHospital activity:")
            _story(server, echo)
            hospital = server.facility().get("org:hospital", {}).get("id")
            config = load_config(
                data={
                    "fhir": {"base_url": server.base_url, "name": "demo"},
                    "store": {"url": f"sqlite:///{folder / 'journal.db'}"},
                    "engine": {
                        "default_owner": f"Organization/{hospital}" if hospital else None,
                        "timezone": "UTC",
                    },
                }
            )
            async with Bridge.from_config(config) as bridge:
                since = bridge.clock.now() - timedelta(hours=1)  # what the story just did
                stats = await bridge.run_once(since=since)
                echo(f"\nEngine run: {stats.summary()}")
                # the referrals it wrote come back with the next poll: tracked like any
                follow = await bridge.run_once()
                echo(f"Follow-up pass (referrals placed, now tracked): {follow.summary()}\n")
                await _show(bridge, echo)
                again = await bridge.run_once()
                echo(f"\nSecond run (exactly once): {again.summary()}")
                page = (Path(workdir) if workdir else Path.cwd()) / "fhirbridge-report.html"
                await _write_report(bridge, page)
                echo(f"\nCoordination report (charts, CSV tables) written to {page}")


async def _write_report(bridge: Bridge, page: Path) -> None:
    from fhirbridge.report.fetch import default_period, read_report
    from fhirbridge.report.html import render_html

    assert bridge.client is not None
    as_of = bridge.calendar.local_date(bridge.clock.now())
    report = await read_report(
        bridge.client,
        period=default_period(as_of),
        as_of=as_of,
        calendar=bridge.calendar,
        codes=bridge.rules.codes,
    )
    page.write_text(render_html(report, generated=bridge.clock.now(), server="demo"), "utf-8")


async def _show(bridge: Bridge, echo: Echo) -> None:
    client = bridge.client
    assert client is not None
    tag = f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"
    tasks = await client.search_all("Task", {"_tag": tag, "_count": 200})
    rows = [["Task", "patient", "code", "due", "priority", "owner", "status"]]
    for task in sorted(
        tasks, key=lambda t: (t["for"]["reference"], t["code"]["coding"][0]["code"])
    ):
        rows.append(
            [
                f"Task/{task['id'][:8]}",
                task["for"]["reference"][:16],
                task["code"]["coding"][0]["code"],
                task.get("restriction", {}).get("period", {}).get("end", "-"),
                task.get("priority", "-"),
                (task.get("owner") or {}).get("reference", "-")[:24],
                task["status"],
            ]
        )
    echo(f"Tasks on the FHIR server ({len(tasks)}):")
    _table(rows, echo)
    careplans = await client.search_all("CarePlan", {"_tag": tag, "_count": 200})
    referrals = await client.search_all("ServiceRequest", {"_tag": tag, "_count": 200})
    echo(f"\nSocial-need referrals written ({len(referrals)} ServiceRequests):")
    for referral in referrals:
        echo(
            f"  ServiceRequest/{referral['id'][:8]}  {referral['subject']['reference'][:16]}  "
            f"{referral['code'].get('text', '-')}  due {referral.get('occurrenceDateTime', '-')}"
        )
    echo(f"\nTransitional-care CarePlans ({len(careplans)}):")
    plan_rows = [["CarePlan", "patient", "status", "activities"]]
    for careplan in careplans:
        plan_rows.append(
            [
                f"CarePlan/{careplan['id'][:8]}",
                careplan["subject"]["reference"][:16],
                careplan["status"],
                str(len(careplan.get("activity") or ())),
            ]
        )
    if len(plan_rows) > 1:
        _table(plan_rows, echo)
    assessments = await client.search_all("RiskAssessment", {"_tag": tag, "_count": 200})
    echo(f"\nReadmission risk written back ({len(assessments)} RiskAssessments):")
    risk_rows = [["patient", "score", "tier"]]
    for assessment in sorted(assessments, key=lambda a: a["subject"]["reference"]):
        prediction = (assessment.get("prediction") or [{}])[0]
        risk_rows.append(
            [
                assessment["subject"]["reference"][:16],
                assessment["method"]["coding"][0]["code"],
                (prediction.get("qualitativeRisk") or {}).get("text", "-"),
            ]
        )
    if len(risk_rows) > 1:
        _table(risk_rows, echo)
    report = (await bridge.report()).as_dict()
    echo("\nCoordination report (fhirbridge report):")
    for code, row in report["by_code"].items():
        echo(f"  {code:<22} {row['total']} written, {row['open']} open, {row['overdue']} overdue")
