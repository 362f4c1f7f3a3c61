"""Patient, ServiceRequest and Task transitions (fhirbridge.detect.workflow): death of a Patient,
referrals placed and closed, and the engine's own Tasks failing or completing.

Resources come from the FHIR R4 core examples (tests/data, see SOURCES.md): Patient-example,
ServiceRequest-myringotomy (a referral to a specialist), Task-example6 (a completed fulfiller
Task whose focus is ServiceRequest/lipid).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.detect import (
    REFERRAL_CODES,
    ReferralMatcher,
    detect_patient,
    detect_service_request,
    detect_task,
)
from fhirbridge.testing.builders import REFERRAL, SNOMED
from fhirbridge.testing.builders import revise as next_version
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, Transition

DATA = Path(__file__).resolve().parents[1] / "data"
SERVER = "https://ehr.example.org/fhir"
UPDATED = "2024-05-01T08:30:00Z"


def load(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/data."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def revise(resource: dict[str, Any], version: int | None = None, **changes: Any) -> dict[str, Any]:
    """A copy with top-level fields replaced (``None`` removes one; ``for_`` sets ``for``)
    and, given ``version``, a new ``meta.versionId`` and ``lastUpdated`` (UPDATED)."""
    updated = UPDATED if version is not None else None
    return next_version(resource, version=version, updated=updated, **changes)


def kinds(transitions: list[Transition]) -> list[str]:
    """The transition kinds, in order."""
    return [t.kind.value for t in transitions]


# -- Patient ----------------------------------------------------------------------------------


def test_patient_becoming_deceased_with_a_date_is_a_death_on_that_date() -> None:
    """Patient-example (deceasedBoolean false) gaining a deceasedDateTime is a death dated by
    it, focused on the Patient."""
    alive = revise(load("Patient-example.json"), 1)
    died = revise(alive, 2, deceasedBoolean=None, deceasedDateTime="2024-04-30T21:15:00-04:00")
    found = detect_patient(alive, died, server=SERVER)
    assert kinds(found) == ["death"]
    death = found[0]
    assert death.patient == death.focus == "Patient/example"
    assert death.encounter is None
    assert death.occurred_at == datetime.fromisoformat("2024-04-30T21:15:00-04:00")
    assert death.focus_version == "2"
    assert death.server == SERVER
    assert death.facts == {"source": "patient"}


def test_patient_becoming_deceased_without_a_date_is_dated_by_last_updated() -> None:
    """``deceasedBoolean: true`` carries no date: the version's lastUpdated dates the death."""
    alive = revise(load("Patient-example.json"), 1)
    died = revise(alive, 2, deceasedBoolean=True)
    found = detect_patient(alive, died)
    assert kinds(found) == ["death"]
    assert found[0].occurred_at == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"deceasedBoolean": False}, {"deceasedBoolean": False}, []),  # still alive
        ({}, {"deceasedBoolean": True}, ["death"]),  # first seen already deceased
        ({"deceasedBoolean": True}, {"deceasedDateTime": "2024-04-30"}, []),  # date added later
        ({"deceasedDateTime": "2024-04-30"}, {"deceasedDateTime": "2024-04-30"}, []),  # no change
        ({"deceasedBoolean": True}, {"deceasedBoolean": False}, []),  # corrected: not a death
    ],
)
def test_death_is_reported_once(
    before: dict[str, Any], after: dict[str, Any], expected: list[str]
) -> None:
    """Only the change from alive (or unknown) to deceased is a death."""
    base = revise(load("Patient-example.json"), deceasedBoolean=None)
    old = revise(base, 1, **before) if before else None
    new = revise(base, 2, **after)
    assert kinds(detect_patient(old, new)) == expected


# -- ServiceRequest -------------------------------------------------------------------------


def referral(status: str = "active", version: int = 1, **changes: Any) -> dict[str, Any]:
    """ServiceRequest-myringotomy marked as a referral (SNOMED 3457005 in its category)."""
    request = load("ServiceRequest-myringotomy.json")
    return revise(
        request, version, status=status, category=[REFERRAL, *request["category"]], **changes
    )


def test_active_referral_is_placed() -> None:
    """A referral first seen active is referral-placed for its patient (an absolute subject
    URL becomes ``Patient/id``), dated by authoredOn, with what rules test."""
    found = detect_service_request(None, referral(), server=SERVER)
    assert kinds(found) == ["referral-placed"]
    placed = found[0]
    assert placed.patient == "Patient/77662"
    assert placed.focus == "ServiceRequest/myringotomy"
    assert placed.server == SERVER
    assert placed.occurred_at == datetime(2014, 2, 14, 12, tzinfo=UTC)  # a date: noon UTC
    assert placed.facts["status"] == "active"
    assert placed.facts["codes"] == [f"{SNOMED}|172676009"]
    assert placed.key == "referral-placed|ServiceRequest/myringotomy"


def test_referral_code_in_code_is_a_referral_too() -> None:
    """SNOMED 3457005 marks a referral in ServiceRequest.code as well as in category."""
    request = revise(load("ServiceRequest-myringotomy.json"), 1, code=REFERRAL)
    assert kinds(detect_service_request(None, request)) == ["referral-placed"]


def test_only_configured_codes_mark_a_referral() -> None:
    """The example's own category, 103696004 "Patient referral to specialist", is not in the
    default REFERRAL_CODES; a matcher configured with it makes the request a referral."""
    request = load("ServiceRequest-myringotomy.json")
    assert (SNOMED, "103696004") not in REFERRAL_CODES
    assert detect_service_request(None, request) == []
    to_specialist = ReferralMatcher(codes={(SNOMED, "103696004")})
    found = detect_service_request(None, request, is_referral=to_specialist)
    assert kinds(found) == ["referral-placed"]


@pytest.mark.parametrize(
    ("before", "after", "expected", "outcome"),
    [
        ("draft", "active", ["referral-placed"], None),  # signed
        ("active", "active", [], None),  # an edit of an open referral
        ("active", "on-hold", [], None),  # paused
        ("active", "completed", ["referral-closed"], "completed"),  # done
        ("active", "revoked", ["referral-closed"], "cancelled"),  # withdrawn
        ("active", "entered-in-error", ["referral-closed"], "cancelled"),  # a mistake
        ("draft", "revoked", ["referral-closed"], "cancelled"),  # never sent
        ("completed", "entered-in-error", [], None),  # already closed
        ("revoked", "completed", [], None),  # already closed
        (None, "completed", ["referral-closed"], "completed"),  # first seen closed
        (None, "draft", [], None),  # not placed yet
    ],
)
def test_referral_status_changes(
    before: str | None, after: str, expected: list[str], outcome: str | None
) -> None:
    """Active places a referral; completed, revoked or entered-in-error close it once, with
    outcome completed or cancelled."""
    old = referral(before, 1) if before else None
    found = detect_service_request(old, referral(after, 2))
    assert kinds(found) == expected
    if outcome is not None:
        assert found[0].facts["outcome"] == outcome
        assert found[0].occurred_at == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
        assert found[0].key == "referral-closed|ServiceRequest/myringotomy"


def test_referral_facts_name_requester_performer_and_due() -> None:
    """A referral's facts carry requester, first performer and due date (the example's
    occurrencePeriod.end); a display-only encounter is no encounter."""
    placed = detect_service_request(None, referral())[0]
    assert placed.encounter is None
    assert placed.facts["requester"] == "Practitioner/77272"
    assert placed.facts["performer"] == "Practitioner/76597"
    assert placed.facts["due"] == "2014-03-14"
    linked = referral(encounter={"reference": "Encounter/example"})
    assert detect_service_request(None, linked)[0].encounter == "Encounter/example"


def test_referral_without_a_patient_yields_nothing() -> None:
    """A referral whose subject is a display only has no patient to coordinate."""
    request = referral(subject={"display": "Beverly Weaver"})
    assert detect_service_request(None, request) == []


# -- Tasks fulfilling a referral --------------------------------------------------------------


def fulfiller(status: str, version: int, **changes: Any) -> dict[str, Any]:
    """Task-example6 (a lab's Task, not the engine's, focus ServiceRequest/lipid)."""
    return revise(load("Task-example6.json"), version, status=status, **changes)


def test_fulfiller_task_completing_closes_the_referral() -> None:
    """A non-engine Task whose focus is the referral becoming completed closes it, with the
    Task named in the key so it does not collide with the request's own closure."""
    found = detect_task(fulfiller("in-progress", 1), fulfiller("completed", 2), server=SERVER)
    assert kinds(found) == ["referral-closed"]
    closed = found[0]
    assert closed.patient == "Patient/example"
    assert closed.focus == "ServiceRequest/lipid"
    assert closed.discriminator == "task:Task/example6"
    assert closed.key == "referral-closed|ServiceRequest/lipid|task:Task/example6"
    assert closed.facts["outcome"] == "completed"
    assert closed.facts["fulfilled_by"] == "Task/example6"
    assert closed.occurred_at == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def test_fulfiller_task_based_on_the_referral_closes_it() -> None:
    """``basedOn`` the referral counts like ``focus`` (here with a full URL reference)."""
    based_on = {"reference": "https://ehr.example.org/fhir/ServiceRequest/ref-7/_history/2"}
    old = fulfiller("in-progress", 1, focus=None, basedOn=[based_on])
    new = fulfiller("completed", 2, focus=None, basedOn=[based_on])
    assert [t.focus for t in detect_task(old, new)] == ["ServiceRequest/ref-7"]


@pytest.mark.parametrize(
    ("before", "after", "changes"),
    [
        ("completed", "completed", {}),  # completed again (an edit)
        ("in-progress", "failed", {}),  # failed: not a closure
        ("in-progress", "cancelled", {}),  # cancelled by the filler
        ("in-progress", "completed", {"focus": {"reference": "MedicationRequest/rx"}}),  # not a SR
        ("in-progress", "completed", {"for_": None}),  # no patient
    ],
)
def test_other_fulfiller_task_changes_yield_nothing(
    before: str, after: str, changes: dict[str, Any]
) -> None:
    """Only a non-engine Task becoming completed, for a patient and a ServiceRequest, closes
    a referral."""
    old = fulfiller(before, 1, **changes)
    new = fulfiller(after, 2, **changes)
    assert detect_task(old, new) == []


# -- the engine's own Tasks -----------------------------------------------------------------


ENGINE_TAG = {"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}


def engine_task(status: str, version: int, **changes: Any) -> dict[str, Any]:
    """Task-example6 tagged as written by the engine (meta.tag fhirbridge)."""
    task = fulfiller(status, version, **changes)
    task["meta"]["tag"] = [ENGINE_TAG]
    return task


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("requested", "rejected", ["task-failed"]),  # the owner declined it
        ("in-progress", "failed", ["task-failed"]),  # attempted, did not work
        ("accepted", "failed", ["task-failed"]),  # failed before starting
        (None, "failed", ["task-failed"]),  # first seen failed
        ("requested", "completed", ["task-completed"]),  # done
        ("in-progress", "completed", ["task-completed"]),  # done
        (None, "completed", ["task-completed"]),  # first seen done
        ("failed", "failed", []),  # the same state again
        ("completed", "failed", []),  # not from an open state
        ("requested", "cancelled", []),  # cancelled (by the engine itself, usually)
        ("requested", "accepted", []),  # progress, not an outcome
    ],
)
def test_engine_task_outcomes(before: str | None, after: str, expected: list[str]) -> None:
    """The engine's Tasks set to rejected or failed give task-failed, completed gives
    task-completed, focused on the Task itself; never referral-closed, even when the Task's
    focus is a ServiceRequest."""
    old = engine_task(before, 1) if before else None
    found = detect_task(old, engine_task(after, 2), server=SERVER)
    assert kinds(found) == expected
    for transition in found:
        assert transition.focus == "Task/example6"
        assert transition.patient == "Patient/example"
        assert transition.facts["task_focus"] == "ServiceRequest/lipid"


@pytest.mark.parametrize(
    "tag",
    [
        {"system": ENGINE_TAG_SYSTEM, "code": "other"},  # the engine's system, another code
        {"system": "https://example.org/tag", "code": ENGINE_TAG_CODE},  # another system
    ],
)
def test_only_the_engine_tag_makes_an_engine_task(tag: dict[str, str]) -> None:
    """A Task with a look-alike tag is a fulfiller's Task: completed, it closes the referral."""
    old = fulfiller("in-progress", 1)
    new = fulfiller("completed", 2)
    new["meta"]["tag"] = [tag]
    assert kinds(detect_task(old, new)) == ["referral-closed"]


def test_engine_task_facts() -> None:
    """task-failed carries the Task's status, focus, owner, code and due date."""
    old = engine_task("requested", 1)
    new = engine_task(
        "failed",
        2,
        owner={"reference": "PractitionerRole/case-manager"},
        code={
            "coding": [
                {
                    "system": "https://fhirbridge.dev/fhir/CodeSystem/task-code",
                    "code": "tcm-contact",
                }
            ]
        },
        restriction={"period": {"end": "2024-05-03"}},
    )
    failed = detect_task(old, new)[0]
    assert failed.facts["status"] == "failed"
    assert failed.facts["owner"] == "PractitionerRole/case-manager"
    assert failed.facts["code"] == "tcm-contact"
    assert failed.facts["due"] == "2024-05-03"
    assert failed.key == "task-failed|Task/example6"
