"""Support matched to risk, referrals tracked to closure, and overdue work escalated once,
end to end on a real sekmet server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import (
    TAG,
    by_code,
    condition,
    engine_tasks,
    fixed,
    past_ed_visit,
    recent,
    risk_assessments,
    set_period,
)

pytestmark = pytest.mark.e2e


def tracking_tasks(server: SekmetServer, patient: str) -> list[dict[str, Any]]:
    """The patient's referral-tracking Tasks (the CarePlan they open also has its review)."""
    tasks = engine_tasks(server, patient)
    return [t for t in tasks if t["code"]["coding"][0]["code"] == "referral-tracking"]


async def test_high_risk_discharge_gets_the_7_day_visit_and_med_reconciliation(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Admitted through the ED (admitSource emd), 7 days in hospital, CHF + COPD + dementia,
    two ED visits in the previous 6 months: LACE = L5 + A3 + C5 + E2 = 15, high. The
    RiskAssessment says so, with its score Observation, and the pack plans the 7-day visit
    and medication reconciliation."""
    patient = sekmet.register_patient(birth_date="1941-02-03")
    for code in ("I50.9", "J44.9", "F03.90"):  # CHF 2, COPD 2, dementia 3 -> 7 -> C 5
        condition(sekmet, patient, code)
    past_ed_visit(sekmet, patient, "2026-08-02")
    past_ed_visit(sekmet, patient, "2026-10-01")
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "home")
    set_period(sekmet, stay, "2026-11-10T08:00:00Z", "2026-11-17T15:00:00Z")

    bridge = make_bridge(clock=fixed("2026-11-18T09:00:00+00:00"))
    await bridge.run_once(since=recent())

    assessments = risk_assessments(sekmet, patient)
    lace = assessments["lace"]
    assert lace["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"
    observation_ref = lace["basis"][0]["reference"]
    observation = sekmet.read("Observation", observation_ref.split("/")[1])
    assert observation["valueInteger"] == 15
    components = {
        c["code"]["coding"][0]["code"]: c["valueInteger"] for c in observation["component"]
    }
    assert components == {"lace-L": 5, "lace-A": 3, "lace-C": 5, "lace-E": 2}
    assert "hospital" in assessments
    provenance = sekmet.search("Provenance", {"target": observation_ref + "/_history/1"})
    assert len(provenance) == 1

    tasks = by_code(engine_tasks(sekmet, patient))
    assert set(tasks) >= {"tcm-contact", "tcm-visit", "med-reconciliation"}
    assert tasks["tcm-visit"]["restriction"]["period"]["end"] == "2026-11-24"


async def test_low_risk_discharge_gets_the_14_day_visit(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """One night in hospital, no comorbidity, no ED history: LACE low, the 14-day visit."""
    patient = sekmet.register_patient(birth_date="1980-05-06")
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "home")
    set_period(sekmet, stay, "2026-11-16T08:00:00Z", "2026-11-17T15:00:00Z")
    bridge = make_bridge(clock=fixed("2026-11-18T09:00:00+00:00"))
    await bridge.run_once(since=recent())
    lace = risk_assessments(sekmet, patient)["lace"]
    assert lace["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "low"
    tasks = by_code(engine_tasks(sekmet, patient))
    # with medication reconciliation (every discharge), the coverage review (no Coverage)
    # and the new CarePlan's first review
    assert set(tasks) == {
        "tcm-contact",
        "tcm-visit",
        "med-reconciliation",
        "coverage-review",
        "careplan-review",
    }
    assert tasks["tcm-visit"]["restriction"]["period"]["end"] == "2026-12-01"


async def test_a_referral_is_tracked_and_closed_when_completed(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """A referral placed in the EHR gets a tracking Task (focus the ServiceRequest, task-code
    fulfill); completing the referral there completes the tracking Task."""
    patient = sekmet.register_patient()
    referral = sekmet.referral(patient)
    await bridge.run_once(since=recent())
    (tracking,) = tracking_tasks(sekmet, patient)
    assert tracking["focus"]["reference"] == f"ServiceRequest/{referral}"
    codes = {c["code"] for c in tracking["code"]["coding"]}
    assert codes == {"referral-tracking", "fulfill"}

    service_request = sekmet.read("ServiceRequest", referral)
    service_request["status"] = "completed"
    sekmet.update(service_request)
    await bridge.run_once(since=recent())
    (tracking,) = tracking_tasks(sekmet, patient)
    assert tracking["status"] == "completed"


async def test_a_referral_fulfilled_by_a_task_closes_the_tracking(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """The receiving side completes its fulfilment Task: the tracking Task completes too."""
    patient = sekmet.register_patient()
    referral = sekmet.referral(patient, with_task=True)
    await bridge.run_once(since=recent())
    fulfilment = next(
        t
        for t in sekmet.search("Task", {"focus": f"ServiceRequest/{referral}"})
        if t["code"]["coding"][0]["code"] == "fulfill" and len(t["code"]["coding"]) == 1
    )
    fulfilment["status"] = "completed"
    sekmet.update(fulfilment)
    await bridge.run_once(since=recent())
    (tracking,) = tracking_tasks(sekmet, patient)
    assert tracking["status"] == "completed"


async def test_overdue_referral_and_tcm_task_are_escalated_exactly_once(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """A referral left open past its due date and a TCM contact left open past its due date
    are escalated on the next sweep, once, however often and however late it sweeps."""
    patient = sekmet.register_patient()
    sekmet.referral(patient)
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "home")
    today = make_bridge()
    await today.run_once(since=recent())
    before = by_code(engine_tasks(sekmet, patient))
    assert {"referral-tracking", "tcm-contact", "tcm-visit"} <= set(before)

    late = make_bridge(clock=fixed("2027-02-01T12:00:00+00:00"))
    await late.run_once()
    later = make_bridge(clock=fixed("2027-03-01T12:00:00+00:00"))
    await later.sweep()
    await later.drain()

    tasks = engine_tasks(sekmet, patient)
    escalations = [t for t in tasks if t["code"]["coding"][0]["code"].endswith("escalation")]
    kinds = sorted(t["code"]["coding"][0]["code"] for t in escalations)
    # the referral, the contact, the visit, medication reconciliation, the coverage review
    # and the CarePlan's first review were overdue: one escalation each
    assert kinds == ["referral-escalation"] + ["task-escalation"] * 5
    assert {t["priority"] for t in escalations} == {"urgent"}
    referral_escalation = next(
        t for t in escalations if t["code"]["coding"][0]["code"] == "referral-escalation"
    )
    assert referral_escalation["focus"]["reference"].startswith("ServiceRequest/")


async def test_a_task_completed_in_the_ehr_closes_its_careplan_activity(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """Staff complete the TCM contact in the EHR: its CarePlan activity records the outcome,
    and a completed Task is never escalated."""
    patient = sekmet.register_patient()
    sekmet.discharge(sekmet.admit(patient), "home")
    await bridge.run_once(since=recent())
    contact = by_code(engine_tasks(sekmet, patient))["tcm-contact"]
    contact["status"] = "completed"
    sekmet.update(contact)
    await bridge.run_once(since=recent())
    careplan = sekmet.search("CarePlan", {"patient": f"Patient/{patient}", "_tag": TAG})[0]
    activity = {a["reference"]["reference"]: a for a in careplan["activity"]}
    done = activity[f"Task/{contact['id']}"]
    assert done["outcomeCodeableConcept"] == [{"text": "completed"}]
    others = [a for ref, a in activity.items() if ref != f"Task/{contact['id']}"]
    assert all("outcomeCodeableConcept" not in a for a in others)


async def test_plan_now_shows_timer_escalations_without_writing(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """`plan --now T` evaluates timers as of T: the overdue contact's escalation is listed,
    and nothing is written."""
    patient = sekmet.register_patient()
    sekmet.discharge(sekmet.admit(patient), "home")
    await make_bridge().run_once(since=recent())
    later = make_bridge(clock=fixed("2027-02-01T12:00:00+00:00"))
    plans = await later.plan(since=recent())
    overdue = [p for p in plans if p.transition.kind.value == "task-overdue"]
    assert {p.transition.facts["code"] for p in overdue} >= {"tcm-contact", "tcm-visit"}
    assert all(p.actions for p in overdue)
    assert len(engine_tasks(sekmet, patient)) == 5  # what the first run wrote, no more
