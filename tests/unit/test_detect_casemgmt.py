"""Case-management detection (fhirbridge.detect.coverage, social, noshow, review), pure, over
real examples: FHIR R4 Coverage-9876B1, Coverage-SP1234 and Appointment-example (npm
hl7.fhir.r4.examples 4.0.1), and the Gravity SDOH Clinical Care IG's food-insecurity and
housing examples (tests/data/sdohcc, see tests/data/SOURCES.md).

Codes pinned here, with their sources:
- Coverage.status active | cancelled | draft | entered-in-error (R4 fm-status, [VS]).
- Appointment.status ``noshow``: "Some or all of the participant(s) have not/did not appear
  for the appointment (usually the patient)" (R4 CodeSystem-appointmentstatus.json).
- Gravity SDOH categories ``food-insecurity``, ``homelessness``, ... in
  ``http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes``
  (HL7/fhir-sdoh-clinicalcare input/fsh/codesystems/SDOHCCCodeSystemTemporaryCodes.fsh).
- Hunger Vital Sign LOINC 88122-7 answered LA28397-0 "Often true"; 88124-3 "Food insecurity
  risk [HVS]" answered LA19952-3 "At risk"; PRAPARE housing status 71802-3 answered LA30190-5
  "I do not have housing" (the IG's SDOHCC-ObservationResponse* examples).
- SNOMED CT 733423003 "Food insecurity" (SDOHCC-ConditionFoodInsecurityExample).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhirbridge.detect import (
    coverage_state,
    default_sdoh_table,
    detect,
    detect_appointment,
    detect_coverage,
    detect_social_need,
    done_transition,
    engagement_window,
    review_transition,
)
from fhirbridge.detect.review import review_interval
from fhirbridge.testing.builders import care_plan, revise
from fhirbridge.testing.builders import task as build_task
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, TransitionKind
from tests.unit._data import load

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
LOINC = "http://loinc.org"


def changed(resource: dict[str, Any], version: str, **fields: Any) -> dict[str, Any]:
    """A later version of ``resource`` (updated 6 March 2026) with top-level ``fields``
    replaced."""
    return revise(resource, version=version, updated="2026-03-06T10:00:00Z", **fields)


# -- coverage ---------------------------------------------------------------------------------


def test_coverage_example_is_active_inside_its_period_and_ending_near_its_end() -> None:
    """Coverage-9876B1 runs 2011-05-23 to 2012-05-23: active on 2012-01-10; 'ending' within
    30 days of its end (day 30 counts as ending); inactive after it."""
    coverage = load("Coverage-9876B1.json")
    assert coverage_state([coverage], date(2012, 1, 10), 30).state == "active"
    ending = coverage_state([coverage], date(2012, 4, 23), 30)
    assert (ending.state, ending.coverage, ending.ends) == (
        "ending",
        "Coverage/9876B1",
        date(2012, 5, 23),
    )
    assert ending.payor == "Organization/2"
    assert coverage_state([coverage], date(2012, 4, 22), 30).state == "active"
    assert coverage_state([coverage], date(2012, 5, 24), 30).state == "inactive"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("cancelled", "inactive"),  # exists, not in force
        ("draft", "inactive"),
        ("entered-in-error", "none"),  # never was: does not count
    ],
)
def test_coverage_that_is_not_active_is_a_gap(status: str, state: str) -> None:
    """Cancelled or draft Coverage is inactive; entered-in-error counts as no Coverage."""
    coverage = changed(load("Coverage-9876B1.json"), "2", status=status)
    assert coverage_state([coverage], date(2012, 1, 10), 30).state == state


def test_no_coverage_at_all_is_none_and_one_lasting_coverage_is_enough() -> None:
    """No Coverage: 'none'. An ending Coverage beside a lasting one: 'active'."""
    assert coverage_state([], date(2012, 1, 10), 30).state == "none"
    ending = load("Coverage-9876B1.json")
    lasting = changed(ending, "2", id="later", period={"start": "2012-01-01"})
    assert coverage_state([ending, lasting], date(2012, 5, 1), 30).coverage == "Coverage/later"


def test_coverage_with_only_an_end_is_active_until_then() -> None:
    """Coverage-SP1234 (self-pay) has period.end 2012-03-17 and no start."""
    coverage = load("Coverage-SP1234.json")
    assert coverage_state([coverage], date(2011, 1, 1), 30).state == "active"
    assert coverage_state([coverage], date(2012, 3, 1), 30).state == "ending"


def test_coverage_becoming_active_is_a_transition_of_its_beneficiary() -> None:
    """Draft to active: coverage-active for Patient/4 (the example's beneficiary), once."""
    draft = changed(load("Coverage-9876B1.json"), "1", status="draft")
    active = changed(draft, "2", status="active")
    (found,) = detect(draft, active)
    assert found.kind is TransitionKind.COVERAGE_ACTIVE
    assert (found.patient, found.focus, found.discriminator) == (
        "Patient/4",
        "Coverage/9876B1",
        "2",
    )
    assert found.facts["period_end"] == "2012-05-23"
    assert detect_coverage(active, changed(active, "3")) == []  # still active, same period
    renewed = changed(active, "4", period={"start": "2012-05-23", "end": "2013-05-23"})
    assert [t.kind for t in detect_coverage(active, renewed)] == [TransitionKind.COVERAGE_ACTIVE]
    assert detect_coverage(None, changed(active, "5", status="cancelled")) == []


# -- social needs ----------------------------------------------------------------------------


def test_gravity_food_insecurity_screening_is_a_social_need() -> None:
    """HVS question 1 'Often true' and question 3 'At risk': food insecurity, each once."""
    for name in (
        "sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion1Example.json",
        "sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion3Example.json",
    ):
        observation = load(name)
        (found,) = detect(None, observation)
        assert found.kind is TransitionKind.SOCIAL_NEED
        assert found.patient == "Patient/pat-53234"
        assert found.facts["need"] == "food-insecurity"
        assert found.facts["source"] == "screening"
        assert [SDOHCC, "food-insecurity"] in found.facts["need_categories"]
        assert found.occurred_at.isoformat().startswith("2020-09-10T21:56:54")
        assert detect(observation, changed(observation, "9")) == []  # still positive


def test_gravity_housing_status_screening_is_housing_instability() -> None:
    """PRAPARE 71802-3 'I do not have housing', category homelessness: housing-instability."""
    observation = load(
        "sdohcc/Observation-SDOHCC-ObservationResponsePRAPAREHousingStatusExample.json"
    )
    (found,) = detect_social_need(None, observation)
    assert found.facts["need"] == "housing-instability"


@pytest.mark.parametrize(
    ("answer", "status", "positive"),
    [
        ("LA28397-0", "final", True),  # Often true
        ("LA6729-3", "final", True),  # Sometimes true
        ("LA28398-8", "final", False),  # Never true
        ("LA28397-0", "preliminary", False),  # not a final answer yet
        ("LA28397-0", "amended", True),
    ],
)
def test_only_final_positive_answers_are_needs(answer: str, status: str, positive: bool) -> None:
    """Hunger Vital Sign question 1: positive answers of a final (or amended) Observation."""
    observation = load(
        "sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion1Example.json"
    )
    observation["status"] = status
    observation["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": answer}]}
    assert bool(detect_social_need(None, observation)) is positive


def test_screening_without_an_sdoh_category_is_not_a_need() -> None:
    """A positive-looking answer in a plain survey (no SDOH category) is not ours to refer."""
    observation = load(
        "sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion1Example.json"
    )
    observation["category"] = observation["category"][:2]  # social-history, survey
    assert detect_social_need(None, observation) == []


def test_gravity_food_insecurity_condition_is_a_need_until_resolved() -> None:
    """SDOHCC-ConditionFoodInsecurityExample (active, unconfirmed): a need; refuted or
    resolved it is not; a new version of an active one is no new need."""
    condition = load("sdohcc/Condition-SDOHCC-ConditionFoodInsecurityExample.json")
    (found,) = detect(None, condition)
    assert (found.facts["need"], found.facts["source"]) == ("food-insecurity", "condition")
    assert "http://snomed.info/sct|733423003" in found.facts["codes"]
    assert detect(condition, changed(condition, "2")) == []
    refuted = changed(
        condition,
        "3",
        verificationStatus={
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "refuted",
                }
            ]
        },
    )
    assert detect(None, refuted) == []
    resolved = changed(
        condition,
        "4",
        clinicalStatus={
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "resolved",
                }
            ]
        },
    )
    assert detect(None, resolved) == []
    assert [t.kind for t in detect(resolved, condition)] == [TransitionKind.SOCIAL_NEED]


def test_condition_with_the_us_core_sdoh_category_is_matched_by_its_code() -> None:
    """Category US Core ``sdoh`` without a Gravity category: the ICD-10-CM code decides."""
    condition = load("sdohcc/Condition-SDOHCC-ConditionFoodInsecurityExample.json")
    condition["category"] = [
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                    "code": "sdoh",
                }
            ]
        }
    ]
    condition["code"] = {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.82"}]
    }
    (found,) = detect(None, condition)
    assert found.facts["need"] == "transportation-insecurity"


def test_engine_written_resources_and_other_types_are_not_needs() -> None:
    """The engine's own score Observations never count as screenings."""
    observation = load(
        "sdohcc/Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion1Example.json"
    )
    observation["meta"]["tag"] = [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}]
    assert detect(None, observation) == []


def test_shipped_sdoh_table_covers_the_four_needs_of_the_issue() -> None:
    """Food, housing, transportation and financial insecurity, each with its Gravity category."""
    table = default_sdoh_table()
    assert {n.id for n in table.needs} == {
        "food-insecurity",
        "housing-instability",
        "transportation-insecurity",
        "financial-insecurity",
    }
    for need in table.needs:
        assert (SDOHCC, need.id) in need.categories
        assert need.questions and need.referral


# -- no-shows --------------------------------------------------------------------------------


def test_appointment_going_to_noshow_is_a_transition_of_its_patient() -> None:
    """Appointment-example (booked, Patient/example): noshow gives appointment-noshow dated by
    the appointment's start; staying noshow gives nothing more."""
    booked = load("Appointment-example.json")
    missed = changed(booked, "2", status="noshow")
    (found,) = detect(booked, missed)
    assert found.kind is TransitionKind.APPOINTMENT_NOSHOW
    assert (found.patient, found.focus) == ("Patient/example", "Appointment/example")
    assert found.occurred_at.isoformat() == "2013-12-10T09:00:00+00:00"
    assert detect_appointment(missed, changed(missed, "3")) == []
    assert detect_appointment(None, booked) == []


def _noshow(appointment_id: str, start: str) -> dict[str, Any]:
    out = changed(load("Appointment-example.json"), "2", status="noshow", start=start)
    out["id"] = appointment_id
    return out


def test_two_noshows_within_90_days_lapse_once_per_window() -> None:
    """Day 0 and day 80 lapse (window of day 0); day 85 is the same window (not a second
    escalation); day 100 opens a new window; so does day 181 after day 91."""
    first, second = _noshow("a1", "2026-01-01T09:00:00Z"), _noshow("a2", "2026-03-22T09:00:00Z")
    third, fourth = _noshow("a3", "2026-03-27T09:00:00Z"), _noshow("a4", "2026-04-11T09:00:00Z")
    history = [first, second, third, fourth]
    window = {"window_days": 90, "noshows": 2}
    assert engagement_window(history, first, **window).lapsed is False
    lapsed = engagement_window(history, second, **window)
    assert (lapsed.window, lapsed.noshows, lapsed.lapsed) == ("Appointment/a1", 2, True)
    again = engagement_window(history, third, **window)
    assert (again.window, again.noshows) == ("Appointment/a1", 3)
    fresh = engagement_window(history, fourth, **window)
    assert (fresh.window, fresh.noshows, fresh.lapsed) == ("Appointment/a4", 1, False)


def test_day_90_is_inside_the_window() -> None:
    """The window is 90 days: a no-show on day 90 still counts with the first."""
    first, late = _noshow("a1", "2026-01-01T09:00:00Z"), _noshow("a2", "2026-04-01T09:00:00Z")
    assert engagement_window([first], late, window_days=90, noshows=2).lapsed


# -- periodic review and completion ---------------------------------------------------------


def careplan(status: str = "active", activity: list[str] | None = None) -> dict[str, Any]:
    """The engine's transitional-care CarePlan, created 2026-03-02, at version 4."""
    return care_plan(
        status=status,
        created="2026-03-02T09:00:00+00:00",
        activities=activity or (),
        meta={"versionId": "4"},
    )


def task(task_id: str, code: str, status: str, due: str = "2026-03-09") -> dict[str, Any]:
    """An engine Task of the CarePlan."""
    return build_task(task_id, code=code, status=status, due=due, based_on="cp1")


@pytest.mark.parametrize(
    ("tier", "days"),
    [("high", 7), ("moderate", 14), ("intermediate", 14), ("low", 30), (None, 30)],
)
def test_review_interval_follows_the_risk_tier(tier: str | None, days: int) -> None:
    """Pack defaults: high 7, moderate 14 (HOSPITAL's intermediate too), low 30, unknown 30."""
    intervals = {"high": 7, "moderate": 14, "low": 30, "unknown": 30}
    assert review_interval(tier, intervals) == days


def test_review_is_due_at_the_end_of_each_interval_and_keyed_by_it() -> None:
    """High risk (7 days) from 2026-03-02: on 03-02 the review of period 0 is due 03-09; on
    03-12 that of period 1 is due 03-16. The key names the period (restart-safe)."""
    intervals = {"high": 7, "low": 30}
    first = review_transition(
        careplan(), [], tier="high", today=date(2026, 3, 2), intervals=intervals
    )
    assert first is not None and first.kind is TransitionKind.CAREPLAN_REVIEW_DUE
    assert first.facts["due"] == "2026-03-09"
    assert first.key == "careplan-review-due|CarePlan/cp1|every-7d-0"
    again = review_transition(
        careplan(), [], tier="high", today=date(2026, 3, 5), intervals=intervals
    )
    assert again is not None and again.key == first.key
    later = review_transition(
        careplan(),
        [task("r0", "careplan-review", "completed", "2026-03-09")],
        tier="high",
        today=date(2026, 3, 12),
        intervals=intervals,
    )
    assert later is not None and later.facts["due"] == "2026-03-16"


def test_one_review_open_at_a_time_and_none_twice_in_a_period() -> None:
    """An open review blocks the next; a review done early in its period is not redone."""
    intervals = {"high": 7}
    open_review = [task("r0", "careplan-review", "requested", "2026-03-09")]
    assert (
        review_transition(
            careplan(), open_review, tier="high", today=date(2026, 3, 20), intervals=intervals
        )
        is None
    )
    done_early = [task("r0", "careplan-review", "completed", "2026-03-09")]
    assert (
        review_transition(
            careplan(), done_early, tier="high", today=date(2026, 3, 4), intervals=intervals
        )
        is None
    )
    assert (
        review_transition(
            careplan("completed"), [], tier="high", today=date(2026, 3, 4), intervals=intervals
        )
        is None
    )


def test_careplan_is_done_when_every_activity_is_completed_or_cancelled() -> None:
    """Reviews aside, every activity's Task closed: careplan-done; one still open: not."""
    plan = careplan(activity=["Task/t1", "Task/t2", "Task/r0"])
    tasks = [
        task("t1", "tcm-contact", "completed"),
        task("t2", "tcm-visit", "cancelled"),
        task("r0", "careplan-review", "requested"),
    ]
    found = done_transition(plan, tasks, today=date(2026, 3, 20))
    assert found is not None and found.kind is TransitionKind.CAREPLAN_DONE
    assert (found.focus, found.discriminator) == ("CarePlan/cp1", "4")
    tasks[1] = task("t2", "tcm-visit", "in-progress")
    assert done_transition(plan, tasks, today=date(2026, 3, 20)) is None
    assert done_transition(careplan(activity=[]), [], today=date(2026, 3, 20)) is None
    unknown = careplan(activity=["Task/t1", "Task/elsewhere"])
    assert done_transition(unknown, tasks, today=date(2026, 3, 20)) is None
