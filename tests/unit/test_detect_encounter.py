"""Encounter transitions (fhirbridge.detect.encounter): admission, ED visit and ED discharge,
discharge with its disposition, death, cancellation, what must yield nothing, and keys.
Transfers are in test_detect_transfer.py, readmissions in test_detect_readmission.py.

Encounters come from the FHIR R4 core examples and the Da Vinci Unsolicited Notifications IG
(tests/data, see SOURCES.md); each test derives the versions it needs from them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirbridge.detect import detect_encounter
from fhirbridge.values import TransitionKind
from tests.unit._encounters import (
    ADMITTED,
    CTX,
    DISCHARGED,
    DISPOSITION,
    NOW,
    NUBC,
    SERVER,
    coding,
    davinci,
    disposition,
    inpatient,
    kinds,
    load,
    only,
    revise,
)

DAVINCI_ENCOUNTER = "Encounter/5fe62cd5-bfcf-4d3b-a1e9-80d6f75d6f82"
DAVINCI_PATIENT = "Patient/06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"


# -- admission ----------------------------------------------------------------------------


def test_first_seen_in_progress_inpatient_stay_is_an_admission() -> None:
    """The core example (IMP, in-progress, no period, no meta) seen for the first time is an
    admission of its subject; with no date at all it is stamped with the context's clock."""
    found = detect_encounter(None, load("Encounter-example.json"), CTX)
    assert kinds(found) == ["admission"]
    admission = found[0]
    assert admission.patient == "Patient/example"
    assert admission.focus == admission.encounter == "Encounter/example"
    assert admission.server == SERVER
    assert admission.occurred_at == NOW
    assert admission.facts["encounter_class"] == "IMP"


@pytest.mark.parametrize(
    "klass",
    [
        "IMP",  # inpatient
        "ACUTE",  # inpatient acute (child of IMP)
        "NONAC",  # inpatient non-acute (child of IMP)
        "OBSENC",  # observation
        "SS",  # short stay
    ],
)
def test_inpatient_type_stay_becoming_in_progress_is_an_admission(klass: str) -> None:
    """Every inpatient-type class admits when the stay goes from planned to in-progress, dated
    by period.start."""
    planned = inpatient(version=1, class_=coding(klass), status="planned")
    started = revise(planned, 2, status="in-progress", period=ADMITTED)
    found = detect_encounter(planned, started, CTX)
    assert kinds(found) == ["admission"]
    assert found[0].occurred_at == datetime.fromisoformat(ADMITTED["start"])
    assert found[0].facts["encounter_class"] == klass


@pytest.mark.parametrize(
    "klass",
    [
        "AMB",  # ambulatory
        "HH",  # home health
        "VR",  # virtual
        "FLD",  # field
        "PRENC",  # pre-admission
        "",  # no class at all
    ],
)
def test_other_classes_in_progress_are_not_admissions(klass: str) -> None:
    """Encounters that are not inpatient, observation or short stay never admit."""
    encounter = inpatient(class_=coding(klass) if klass else None, period=ADMITTED)
    assert detect_encounter(None, encounter, CTX) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("in-progress", "in-progress"),  # an unrelated edit of an admitted stay
        ("in-progress", "onleave"),  # leave of absence
        ("onleave", "in-progress"),  # back from leave
    ],
)
def test_admitted_stay_staying_admitted_is_not_a_new_admission(before: str, after: str) -> None:
    """Once admitted, later versions of the stay do not admit again."""
    old = inpatient(version=1, status=before, period=ADMITTED)
    new = revise(old, 2, status=after, serviceType={"text": "cardiology"})
    assert detect_encounter(old, new, CTX) == []


def test_admission_facts_describe_the_stay() -> None:
    """An admission carries the class, status, admit source, service provider and period."""
    encounter = davinci("transfer")
    found = detect_encounter(
        None, revise(encounter, period={"start": "2018-10-21T21:22:15-07:00"}), CTX
    )
    admission = only(found, TransitionKind.ADMISSION)
    assert admission.patient == DAVINCI_PATIENT
    assert admission.facts == {
        "encounter_class": "IMP",
        "status": "in-progress",
        "service_provider": "Organization/a9f20dc1-5147-3789-bcef-bbecb41c5983",
        "admit_source": "emd",
        "start": "2018-10-21T21:22:15-07:00",
        "end": None,
    }


# -- emergency department -------------------------------------------------------------------


def test_emergency_encounter_arriving_is_an_ed_visit() -> None:
    """The Da Vinci admit Encounter (EMER, in-progress), first seen, is an ED visit dated by its
    period.start (the IG's period.end is dropped here: see the next test)."""
    arrived = revise(davinci("admit"), period={"start": "2018-10-21T21:22:15-07:00"})
    found = detect_encounter(None, arrived, CTX)
    assert kinds(found) == ["ed-visit"]
    assert found[0].patient == DAVINCI_PATIENT
    assert found[0].focus == DAVINCI_ENCOUNTER
    assert found[0].occurred_at == datetime.fromisoformat("2018-10-21T21:22:15-07:00")


def test_in_progress_emergency_encounter_with_period_end_counts_as_finished() -> None:
    """The IG's admit example is in-progress yet carries period.end; an end counts as the end
    of the visit, so it is an ED visit and an ED discharge at once."""
    found = detect_encounter(None, davinci("admit"), CTX)
    assert kinds(found) == ["ed-visit", "ed-discharge"]
    assert found[1].occurred_at == datetime.fromisoformat("2018-10-21T22:22:15-07:00")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("planned", "arrived", ["ed-visit"]),  # the patient arrives
        ("planned", "in-progress", ["ed-visit"]),  # arrival not reported separately
        ("arrived", "triaged", []),  # same visit, triaged
        ("triaged", "in-progress", []),  # same visit, seen by a practitioner
        ("in-progress", "onleave", []),  # same visit, out for imaging
    ],
)
def test_one_ed_visit_per_arrival(before: str, after: str, expected: list[str]) -> None:
    """The ED visit is reported when the encounter becomes active, not at each later status."""
    old = revise(davinci("admit"), 1, status=before, period={"start": "2018-10-21T21:22:15-07:00"})
    new = revise(old, 2, status=after)
    assert kinds(detect_encounter(old, new, CTX)) == expected


def test_ed_visit_finishing_without_admission_is_an_ed_discharge() -> None:
    """An EMER encounter that finishes (still EMER) is an ED discharge, dated by period.end,
    with its disposition; it is neither a discharge nor an admission."""
    visit = revise(davinci("admit"), 1, period={"start": "2018-10-21T21:22:15-07:00"})
    done = revise(
        visit,
        2,
        status="finished",
        period={"start": "2018-10-21T21:22:15-07:00", "end": "2018-10-22T01:10:00-07:00"},
        hospitalization=disposition("home"),
    )
    found = detect_encounter(visit, done, CTX)
    assert kinds(found) == ["ed-discharge"]
    assert found[0].occurred_at == datetime.fromisoformat("2018-10-22T01:10:00-07:00")
    assert found[0].facts["disposition_code"] == "home"
    assert found[0].facts["disposition_group"] == "community"


# -- discharge --------------------------------------------------------------------------------


def test_davinci_discharge_has_its_nubc_disposition_and_group() -> None:
    """The Da Vinci discharge Encounter (IMP, finished, NUBC UB-92 "1") after its in-progress
    version is a discharge dated by period.end, with the raw code and the community group."""
    discharged = davinci("discharge")
    admitted = revise(
        discharged,
        status="in-progress",
        period={"start": discharged["period"]["start"]},
        hospitalization=None,
        meta={"versionId": "1", "lastUpdated": "2020-04-28T21:32:28.234+00:00"},
    )
    found = detect_encounter(admitted, discharged, CTX)
    assert kinds(found) == ["discharge"]
    discharge = found[0]
    assert discharge.patient == DAVINCI_PATIENT
    assert discharge.occurred_at == datetime.fromisoformat("2018-10-23T22:22:15-07:00")
    assert discharge.facts["disposition_system"] == NUBC
    assert discharge.facts["disposition_code"] == "1"
    assert discharge.facts["disposition_group"] == "community"
    assert discharge.facts["end"] == "2018-10-23T22:22:15-07:00"


def test_davinci_admit_transfer_discharge_sequence() -> None:
    """The IG's three notifications replay one stay (EMER admit, IMP transfer, IMP discharge);
    every version before the discharge already carries period.end, so the discharge must be
    recognised by the status becoming finished."""
    admit, transfer, discharge = davinci("admit"), davinci("transfer"), davinci("discharge")
    assert kinds(detect_encounter(None, admit, CTX)) == ["ed-visit", "ed-discharge"]
    assert kinds(detect_encounter(admit, transfer, CTX)) == ["admission", "transfer"]
    found = detect_encounter(transfer, discharge, CTX)
    assert kinds(found) == ["discharge"]
    assert found[0].facts["disposition_group"] == "community"


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("home", "community"),  # returning home
        ("alt-home", "community"),  # someone else's home
        ("snf", "post-acute"),  # skilled nursing facility
        ("rehab", "post-acute"),  # post-acute rehab
        ("long", "post-acute"),  # long-term care
        ("psy", "post-acute"),  # psychiatric facility
        ("other-hcf", "transfer"),  # another healthcare facility
        ("hosp", "hospice"),  # hospice, not hospital
        ("aadvice", "against-advice"),  # left against advice
        ("exp", "death"),  # died during the stay
        ("oth", "unknown"),  # other
        (None, "unknown"),  # no disposition at all
    ],
)
def test_discharge_carries_raw_disposition_and_group(code: str | None, group: str) -> None:
    """Each FHIR discharge-disposition code reaches the discharge as code and group."""
    admitted = inpatient(version=1, period=ADMITTED)
    discharged = revise(
        admitted,
        2,
        status="finished",
        period=DISCHARGED,
        hospitalization=disposition(code) if code else None,
    )
    discharge = only(detect_encounter(admitted, discharged, CTX), TransitionKind.DISCHARGE)
    assert discharge.facts["disposition_code"] == code
    assert discharge.facts["disposition_system"] == (DISPOSITION if code else None)
    assert discharge.facts["disposition_group"] == group
    assert discharge.occurred_at == datetime.fromisoformat(DISCHARGED["end"])


def test_without_a_grouper_every_disposition_is_unknown() -> None:
    """The default context knows no tables: the group is ``unknown``, the raw code is kept."""
    admitted = inpatient(version=1, period=ADMITTED)
    discharged = revise(
        admitted, 2, status="finished", period=DISCHARGED, hospitalization=disposition("home")
    )
    discharge = only(detect_encounter(admitted, discharged), TransitionKind.DISCHARGE)
    assert discharge.facts["disposition_code"] == "home"
    assert discharge.facts["disposition_group"] == "unknown"


def test_gaining_period_end_while_in_progress_is_a_discharge() -> None:
    """R4 has no 'discharged' status: a period.end on an in-progress stay is its discharge."""
    admitted = inpatient(version=1, period=ADMITTED)
    ended = revise(admitted, 2, period=DISCHARGED)
    found = detect_encounter(admitted, ended, CTX)
    assert kinds(found) == ["discharge"]
    assert found[0].occurred_at == datetime.fromisoformat(DISCHARGED["end"])


def test_first_seen_finished_stay_is_dated_by_period_end_not_last_updated() -> None:
    """Encounter-f203 (IMP, finished 2013-03-20) arriving years later in a backfill is a
    discharge on its period.end, not on meta.lastUpdated."""
    backfilled = revise(load("Encounter-f203.json"), meta={"lastUpdated": "2024-05-01T08:00:00Z"})
    found = detect_encounter(None, backfilled, CTX)
    discharge = only(found, TransitionKind.DISCHARGE)
    assert discharge.patient == "Patient/f201"
    assert discharge.occurred_at == datetime(2013, 3, 20, 12, tzinfo=UTC)  # a date: noon UTC
    assert "admission" not in kinds(found)


@pytest.mark.parametrize(
    "change",
    [
        {"hospitalization": disposition("home")},  # disposition coded after the discharge
        {"serviceType": {"text": "cardiology"}},  # an unrelated edit
        {"period": {"start": ADMITTED["start"], "end": "2024-05-01T12:00:00-04:00"}},  # end fixed
    ],
)
def test_finished_stay_edited_again_is_not_a_second_discharge(change: dict[str, Any]) -> None:
    """Later versions of a finished stay do not discharge it again."""
    discharged = inpatient(version=2, status="finished", period=DISCHARGED)
    edited = revise(discharged, 3, **change)
    assert detect_encounter(discharged, edited, CTX) == []


@pytest.mark.parametrize(
    "klass",
    [
        "AMB",  # ambulatory visit
        "HH",  # home health
        "VR",  # virtual
    ],
)
def test_other_classes_finishing_are_not_discharges(klass: str) -> None:
    """Only inpatient-type stays are discharged; an EMER one is an ED discharge instead."""
    visit = inpatient(version=1, class_=coding(klass), period=ADMITTED)
    done = revise(visit, 2, status="finished", period=DISCHARGED)
    assert detect_encounter(visit, done, CTX) == []


# -- death ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (DISPOSITION, "exp"),  # FHIR discharge-disposition: expired
        (NUBC, "20"),  # NUBC UB-04: expired
        (NUBC, "41"),  # NUBC UB-04: expired in a medical facility (hospice)
    ],
)
def test_discharge_by_death_is_also_a_death(system: str, code: str) -> None:
    """A stay ending with an 'expired' disposition is a discharge and a death, both dated by
    period.end and carrying the disposition."""
    admitted = inpatient(version=1, period=ADMITTED)
    died = revise(
        admitted,
        2,
        status="finished",
        period=DISCHARGED,
        hospitalization=disposition(code, system),
    )
    found = detect_encounter(admitted, died, CTX)
    assert kinds(found) == ["discharge", "death"]
    death = found[1]
    assert death.patient == "Patient/example"
    assert death.focus == "Encounter/example"
    assert death.occurred_at == datetime.fromisoformat(DISCHARGED["end"])
    assert death.facts["disposition_group"] == "death"


def test_death_in_the_emergency_department_is_a_death() -> None:
    """An ED visit ending with disposition exp is an ED discharge and a death."""
    visit = revise(davinci("admit"), 1, period={"start": "2018-10-21T21:22:15-07:00"})
    died = revise(
        visit,
        2,
        status="finished",
        period={"start": "2018-10-21T21:22:15-07:00", "end": "2018-10-21T23:40:00-07:00"},
        hospitalization=disposition("exp"),
    )
    found = detect_encounter(visit, died, CTX)
    assert kinds(found) == ["ed-discharge", "death"]
    assert found[1].occurred_at == datetime.fromisoformat("2018-10-21T23:40:00-07:00")


# -- cancelled or entered in error ----------------------------------------------------------


@pytest.mark.parametrize(
    ("klass", "before", "after"),
    [
        ("IMP", "in-progress", "cancelled"),  # admission cancelled (ADT A11)
        ("IMP", "planned", "cancelled"),  # planned stay cancelled
        ("IMP", "finished", "entered-in-error"),  # a discharged stay voided
        ("EMER", "arrived", "entered-in-error"),  # ED registration in error
        ("AMB", "planned", "cancelled"),  # any class that was known
    ],
)
def test_known_encounter_voided_is_cancelled(klass: str, before: str, after: str) -> None:
    """A known encounter becoming cancelled or entered-in-error gives encounter-cancelled with
    the previous status, dated by meta.lastUpdated."""
    old = inpatient(version=1, class_=coding(klass), status=before, period=ADMITTED)
    new = revise(old, 2, status=after)
    found = detect_encounter(old, new, CTX)
    assert kinds(found) == ["encounter-cancelled"]
    assert found[0].facts["previous_status"] == before
    assert found[0].occurred_at == datetime(2024, 5, 1, 8, 2, tzinfo=UTC)


def test_voided_encounter_emits_nothing_else() -> None:
    """A voided version that also changes class, bed, period.end and disposition exp gives
    the cancellation only: no discharge, death, transfer or readmission."""
    old = revise(
        davinci("admit"),
        1,
        period={"start": "2018-10-21T21:22:15-07:00"},
        location=[{"location": {"reference": "Location/ed-bay-3"}, "status": "active"}],
    )
    new = revise(
        old,
        2,
        status="entered-in-error",
        class_=coding("IMP"),
        period=DISCHARGED,
        hospitalization=disposition("exp"),
        location=[{"location": {"reference": "Location/ward-6c-bed-1"}, "status": "active"}],
    )
    assert kinds(detect_encounter(old, new, CTX)) == ["encounter-cancelled"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "cancelled"),  # never known: nothing to cancel
        (None, "entered-in-error"),  # never known
        ("cancelled", "entered-in-error"),  # already voided
        ("cancelled", "cancelled"),  # the same state again
    ],
)
def test_voided_encounter_not_known_before_is_silent(before: str | None, after: str) -> None:
    """Cancellation is reported only for an encounter that was known and not yet voided."""
    old = inpatient(version=1, status=before, period=DISCHARGED) if before else None
    new = inpatient(version=2, status=after, period=DISCHARGED, hospitalization=disposition("exp"))
    assert detect_encounter(old, new, CTX) == []


# -- what yields nothing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        None,  # no subject at all
        {"display": "Peter James Chalmers"},  # display only
        {"reference": "#pat"},  # a contained resource
        {"reference": "urn:uuid:06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"},  # unresolved bundle ref
    ],
)
def test_encounter_without_a_resolvable_subject_yields_nothing(
    subject: dict[str, str] | None,
) -> None:
    """Without a patient to attach it to, no transition is reported."""
    admitted = inpatient(version=1, subject=subject, period=ADMITTED)
    discharged = revise(
        admitted, 2, status="finished", period=DISCHARGED, hospitalization=disposition("exp")
    )
    assert detect_encounter(None, admitted, CTX) == []
    assert detect_encounter(admitted, discharged, CTX) == []


def test_encounter_without_an_id_yields_nothing() -> None:
    """An Encounter with no id cannot be a focus."""
    assert detect_encounter(None, inpatient(id=None), CTX) == []


def fixture_encounters() -> list[dict[str, Any]]:
    """Every Encounter the fixtures hold, as delivered."""
    return [
        load("Encounter-example.json"),
        load("Encounter-emerg.json"),
        load("Encounter-f203.json"),
        davinci("admit"),
        davinci("transfer"),
        davinci("discharge"),
    ]


@pytest.mark.parametrize(
    "encounter",
    fixture_encounters(),
    ids=["example", "emerg", "f203", "davinci-admit", "davinci-transfer", "davinci-discharge"],
)
def test_same_version_twice_yields_nothing(encounter: dict[str, Any]) -> None:
    """Every fixture Encounter means something on first sight, and nothing compared with
    itself."""
    assert detect_encounter(None, encounter, CTX) != []
    assert detect_encounter(encounter, copy.deepcopy(encounter), CTX) == []


# -- keys -----------------------------------------------------------------------------------


def test_same_change_detected_twice_has_the_same_keys() -> None:
    """Detection is deterministic: the same pair of versions gives equal transitions and keys,
    so a replay or a second worker writes nothing twice."""
    transfer, discharge = davinci("transfer"), davinci("discharge")
    first = detect_encounter(transfer, discharge, CTX)
    again = detect_encounter(copy.deepcopy(transfer), copy.deepcopy(discharge), CTX)
    assert first == again
    assert [t.key for t in first] == [f"discharge|{DAVINCI_ENCOUNTER}"]


def test_detection_on_the_first_sight_and_on_a_change_share_keys() -> None:
    """A discharge seen as a change and the same stay first seen finished have one key."""
    admitted = inpatient(version=1, period=ADMITTED)
    discharged = revise(
        admitted, 2, status="finished", period=DISCHARGED, hospitalization=disposition("exp")
    )
    as_change = detect_encounter(admitted, discharged, CTX)
    as_first_sight = detect_encounter(None, discharged, CTX)
    assert [t.key for t in as_change] == [t.key for t in as_first_sight]
    assert [t.key for t in as_change] == [
        "discharge|Encounter/example",
        "death|Encounter/example",
    ]
