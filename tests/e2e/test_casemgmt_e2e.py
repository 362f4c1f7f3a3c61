"""Case management end to end on a real sekmet server, one closed loop per test: a coverage
gap closed by a Coverage becoming active; a food-insecurity screening referred and tracked to
completion; repeated no-shows escalated once; a periodic CarePlan review due at the interval
and never doubled by a restart; the CarePlan completed once its work is done.

sekmet holds Coverage, Appointment, Observation and CarePlan by REST (it has no workflow for
them): the tests create and change them as an EHR would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from fhirbridge.engine import Bridge
from fhirbridge.testing.builders import appointment, revise
from fhirbridge.testing.builders import coverage as build_coverage
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import TAG, by_code, discharged, engine_tasks, fixed, recent, screening

pytestmark = pytest.mark.e2e

OPEN = {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}


def codes(tasks: list[dict[str, Any]]) -> list[str]:
    """The engine codes of Tasks, sorted (repeats kept)."""
    return sorted(t["code"]["coding"][0]["code"] for t in tasks)


def coverage(patient: str, status: str, start: date, end: date) -> dict[str, Any]:
    """A Coverage of ``patient`` with its status and period, for the server to give an id."""
    return build_coverage(None, patient=patient, status=status, start=start, end=end)


def missed(sekmet: SekmetServer, patient: str, start: datetime) -> dict[str, Any]:
    """An Appointment booked for ``patient`` at ``start`` for 30 minutes, then a no-show."""
    booked = sekmet.create(
        appointment(None, patient=patient, start=start, end=start + timedelta(minutes=30))
    )
    return sekmet.update(revise(booked, status="noshow"))


async def test_coverage_gap_review_is_completed_when_coverage_becomes_active(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """Discharged without Coverage: a coverage-review Task (due in 1 business day, focus the
    Patient, the default owner). A Coverage then set active completes that Task and only it.
    Beside it, Coverage ending in 10 days (within the pack's 30) gets a review too, Coverage
    lasting a year none."""
    patient = discharged(sekmet)
    today = datetime.now(UTC).date()
    ending, lasting = sekmet.register_patient(), sekmet.register_patient()
    sekmet.create(
        coverage(ending, "active", today - timedelta(days=300), today + timedelta(days=10))
    )
    sekmet.create(
        coverage(lasting, "active", today - timedelta(days=10), today + timedelta(days=365))
    )
    for other in (ending, lasting):
        sekmet.discharge(sekmet.admit(other), "home")
    await bridge.run_once(since=recent())
    assert "coverage-review" in by_code(engine_tasks(sekmet, ending))
    assert "coverage-review" not in by_code(engine_tasks(sekmet, lasting))
    tasks = by_code(engine_tasks(sekmet, patient))
    review = tasks["coverage-review"]
    assert review["focus"]["reference"] == f"Patient/{patient}"
    assert review["owner"]["reference"] == "Organization/care-coordination"
    today = bridge.calendar.local_date(datetime.now(UTC))
    assert review["restriction"]["period"]["end"] == (
        bridge.calendar.add_business_days(today, 1).isoformat()
    )

    draft = sekmet.create(coverage(patient, "draft", today, today + timedelta(days=365)))
    await bridge.run_once(since=recent())
    assert by_code(engine_tasks(sekmet, patient))["coverage-review"]["status"] == "requested"
    draft["status"] = "active"
    sekmet.update(draft)
    await bridge.run_once(since=recent())
    after = by_code(engine_tasks(sekmet, patient))
    assert after["coverage-review"]["status"] == "completed"
    assert after["tcm-contact"]["status"] == "requested"  # the stay's other work is untouched


async def test_food_insecurity_is_referred_tracked_and_closed_once(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """A patient in transitional care screens positive for food insecurity (HVS questions 1
    and 3): one referral ServiceRequest (food-insecurity category), its tracking Task once the
    engine sees it placed; the referral completed, the tracking Task is completed. A patient
    with no transitional-care CarePlan screening positive gets no referral."""
    patient = discharged(sekmet)
    outsider = sekmet.register_patient()
    await bridge.run_once(since=recent())
    sekmet.create(screening(patient, "Question1"))
    sekmet.create(screening(patient, "Question3"))
    sekmet.create(screening(outsider, "Question1"))
    await bridge.run_once(since=recent())  # the referral is written
    assert sekmet.search("ServiceRequest", {"patient": f"Patient/{outsider}", "_tag": TAG}) == []
    requests = sekmet.search("ServiceRequest", {"patient": f"Patient/{patient}", "_tag": TAG})
    (referral,) = requests
    categories = {c["code"] for cat in referral["category"] for c in cat["coding"]}
    assert categories == {"food-insecurity", "3457005"}
    assert referral["status"] == "active"
    assert referral["reasonReference"][0]["reference"].startswith("Observation/")

    await bridge.run_once(since=recent())  # the engine sees it placed: tracking Task
    tracking = [
        t
        for t in engine_tasks(sekmet, patient)
        if t["code"]["coding"][0]["code"] == "referral-tracking"
    ]
    (task,) = tracking
    assert task["focus"]["reference"] == f"ServiceRequest/{referral['id']}"
    assert task["restriction"]["period"]["end"] == referral["occurrenceDateTime"]

    sekmet.create(screening(patient, "Question1"))  # screened again: already referred
    referral["status"] = "completed"
    sekmet.update(referral)
    await bridge.run_once(since=recent())
    done = sekmet.read("Task", task["id"])
    assert done["status"] == "completed"
    again = sekmet.search("ServiceRequest", {"patient": f"Patient/{patient}", "_tag": TAG})
    assert len(again) == 1


async def test_repeated_noshows_get_outreach_each_and_one_escalation(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """Three no-shows within 90 days of a patient in transitional care: an outreach Task for
    each (next business day), and one engagement escalation for the window."""
    patient = discharged(sekmet)
    await bridge.run_once(since=recent())
    now = datetime.now(UTC)
    missed(sekmet, patient, now - timedelta(days=10))
    await bridge.run_once(since=recent())
    assert codes(engine_tasks(sekmet, patient)).count("outreach") == 1
    assert "engagement-escalation" not in codes(engine_tasks(sekmet, patient))
    missed(sekmet, patient, now - timedelta(days=2))
    await bridge.run_once(since=recent())
    missed(sekmet, patient, now - timedelta(hours=3))
    await bridge.run_once(since=recent())
    found = codes(engine_tasks(sekmet, patient))
    assert found.count("outreach") == 3
    assert found.count("engagement-escalation") == 1
    escalation = by_code(engine_tasks(sekmet, patient))["engagement-escalation"]
    assert escalation["priority"] == "urgent"
    assert escalation["businessStatus"]["text"] == "escalation"


async def test_periodic_review_is_due_at_the_interval_and_not_doubled_by_restarts(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """With --now 2026-12-01 (no risk score: tier unknown, 30 days), the sweep plans one
    careplan-review due 2026-12-31; a restarted engine sweeping again, and a sweep a week
    later in the same interval, plan nothing new; the next interval's review follows once
    the first is done."""
    patient = discharged(sekmet)
    clock = fixed("2026-12-01T12:00:00+00:00")
    first = make_bridge(clock=clock, risk=False, max_event_age="P3650D")
    await first.run_once(since=recent())
    reviews = [
        t
        for t in engine_tasks(sekmet, patient)
        if t["code"]["coding"][0]["code"] == "careplan-review"
    ]
    (review,) = reviews
    assert review["restriction"]["period"]["end"] == "2026-12-31"
    careplan = sekmet.search("CarePlan", {"patient": f"Patient/{patient}", "_tag": TAG})[0]
    assert review["focus"]["reference"] == f"CarePlan/{careplan['id']}"

    restarted = make_bridge(clock=clock, risk=False)
    await restarted.sweep()
    await restarted.drain()
    week_later = make_bridge(clock=fixed("2026-12-08T12:00:00+00:00"), risk=False)
    await week_later.sweep()
    await week_later.drain()
    assert codes(engine_tasks(sekmet, patient)).count("careplan-review") == 1

    review = sekmet.read("Task", review["id"])
    review["status"] = "completed"
    sekmet.update(review)
    next_period = make_bridge(clock=fixed("2027-01-02T12:00:00+00:00"), risk=False)
    await next_period.sweep()
    await next_period.drain()
    dues = sorted(
        t["restriction"]["period"]["end"]
        for t in engine_tasks(sekmet, patient)
        if t["code"]["coding"][0]["code"] == "careplan-review"
    )
    assert dues == ["2026-12-31", "2027-01-30"]


async def test_careplan_is_completed_when_its_activities_are_done(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """Staff complete or cancel every coordination Task of the plan: the next sweep sets the
    CarePlan completed and withdraws the open review; reviews then stop."""
    patient = discharged(sekmet)
    bridge = make_bridge(
        clock=fixed("2026-12-01T12:00:00+00:00"), risk=False, max_event_age="P3650D"
    )
    await bridge.run_once(since=recent())
    tasks = engine_tasks(sekmet, patient)
    assert "careplan-review" in codes(tasks)
    for number, task in enumerate(
        t for t in tasks if t["code"]["coding"][0]["code"] != "careplan-review"
    ):
        changed = copy.deepcopy(task)
        changed["status"] = "completed" if number % 2 == 0 else "cancelled"
        sekmet.update(changed)
    await bridge.run_once(since=recent())  # the completions are seen (activities closed)
    await bridge.sweep()
    await bridge.drain()
    careplan = sekmet.search("CarePlan", {"patient": f"Patient/{patient}", "_tag": TAG})[0]
    assert careplan["status"] == "completed"
    statuses = {t["status"] for t in engine_tasks(sekmet, patient)}
    assert statuses.isdisjoint(OPEN)

    later = make_bridge(clock=fixed("2027-02-01T12:00:00+00:00"), risk=False)
    await later.sweep()
    await later.drain()
    assert codes(engine_tasks(sekmet, patient)).count("careplan-review") == 1
