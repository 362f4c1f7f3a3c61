"""Transfers (fhirbridge.detect.encounter): a move to another unit or bed within one stay, a
class change within one Encounter (ED to inpatient, also read from classHistory), and a
discharge or ED discharge to another facility.

Encounters come from the FHIR R4 core examples (Encounter-example, Encounter-emerg) and the
Da Vinci Unsolicited Notifications IG (tests/data, see SOURCES.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhirbridge.detect import detect_encounter
from fhirbridge.values import TransitionKind
from tests.unit._encounters import (
    ADMITTED,
    CTX,
    DISCHARGED,
    DISPOSITION,
    NUBC,
    coding,
    davinci,
    disposition,
    inpatient,
    kinds,
    load,
    only,
    revise,
)

# -- by location ----------------------------------------------------------------------------


def stay_at(*locations: tuple[str, str, str | None, str | None]) -> list[dict[str, Any]]:
    """Encounter.location entries from (reference, status, start, end)."""
    out = []
    for reference, status, start, end in locations:
        period = {"start": start} | ({"end": end} if end else {})
        out.append({"location": {"reference": reference}, "status": status, "period": period})
    return out


WARD_4A = "Location/ward-4a-bed-2"
WARD_6C = "Location/ward-6c-bed-1"


def test_move_to_another_bed_is_a_transfer_by_location() -> None:
    """The active location changing within one stay is a transfer from the old location to
    the new one, dated by the new location's period.start."""
    before = inpatient(
        version=1,
        period=ADMITTED,
        location=stay_at((WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)),
    )
    after = revise(
        before,
        2,
        location=stay_at(
            (WARD_4A, "completed", "2024-04-28T14:30:00-04:00", "2024-04-29T09:00:00-04:00"),
            (WARD_6C, "active", "2024-04-29T09:00:00-04:00", None),
        ),
    )
    found = detect_encounter(before, after, CTX)
    assert kinds(found) == ["transfer"]
    transfer = found[0]
    assert transfer.facts["transfer"] == "location"
    assert (transfer.facts["from_location"], transfer.facts["to_location"]) == (WARD_4A, WARD_6C)
    assert transfer.occurred_at == datetime.fromisoformat("2024-04-29T09:00:00-04:00")
    assert transfer.key.startswith(f"transfer|Encounter/example|location:{WARD_4A}>{WARD_6C}")


def test_move_listed_current_location_first_is_a_transfer() -> None:
    """V2-to-FHIR lists the current location (PV1-3) first and the prior one (PV1-6) after it;
    the active entry is the current location, whatever its position."""
    before = inpatient(
        version=1,
        location=stay_at((WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)),
    )
    after = revise(
        before,
        2,
        location=stay_at(
            (WARD_6C, "active", "2024-04-29T09:00:00-04:00", None),
            (WARD_4A, "completed", "2024-04-28T14:30:00-04:00", "2024-04-29T09:00:00-04:00"),
        ),
    )
    transfer = only(detect_encounter(before, after, CTX), TransitionKind.TRANSFER)
    assert (transfer.facts["from_location"], transfer.facts["to_location"]) == (WARD_4A, WARD_6C)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], [(WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)]),  # first bed assigned
        (
            [(WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)],
            [(WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)],
        ),  # same bed
        (
            [(WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)],
            [
                (WARD_4A, "active", "2024-04-28T14:30:00-04:00", None),
                (WARD_6C, "planned", "2024-04-30T09:00:00-04:00", None),
            ],
        ),  # a move planned, not made
    ],
)
def test_no_location_transfer_without_a_move(
    before: list[tuple[str, str, str | None, str | None]],
    after: list[tuple[str, str, str | None, str | None]],
) -> None:
    """A first placement, an unchanged bed or a planned move is not a transfer."""
    old = inpatient(version=1, location=stay_at(*before))
    new = revise(old, 2, location=stay_at(*after))
    assert detect_encounter(old, new, CTX) == []


def test_location_closed_at_discharge_is_not_a_transfer() -> None:
    """The version that discharges the stay may close its bed: a discharge, not a transfer."""
    before = inpatient(
        version=1,
        period=ADMITTED,
        location=stay_at((WARD_4A, "active", "2024-04-28T14:30:00-04:00", None)),
    )
    after = revise(
        before,
        2,
        status="finished",
        period=DISCHARGED,
        location=stay_at(
            (WARD_4A, "completed", "2024-04-28T14:30:00-04:00", DISCHARGED["end"]),
            (WARD_6C, "active", DISCHARGED["end"], None),
        ),
    )
    assert kinds(detect_encounter(before, after, CTX)) == ["discharge"]


def test_two_moves_of_one_stay_have_distinct_keys() -> None:
    """A→B then B→A then A→B again: each move is its own transfer (the keys differ)."""
    v1 = inpatient(version=1, location=stay_at((WARD_4A, "active", "2024-04-28T14:30:00Z", None)))
    v2 = revise(v1, 2, location=stay_at((WARD_6C, "active", "2024-04-29T09:00:00Z", None)))
    v3 = revise(v2, 3, location=stay_at((WARD_4A, "active", "2024-04-30T09:00:00Z", None)))
    v4 = revise(v3, 4, location=stay_at((WARD_6C, "active", "2024-05-01T09:00:00Z", None)))
    keys = [
        only(detect_encounter(old, new, CTX), TransitionKind.TRANSFER).key
        for old, new in [(v1, v2), (v2, v3), (v3, v4)]
    ]
    assert len(set(keys)) == 3


# -- by class ---------------------------------------------------------------------------------


def test_ed_to_inpatient_in_one_encounter_is_an_admission_and_a_class_transfer() -> None:
    """Encounter-emerg moved from EMER to IMP in one Encounter: seen as EMER, then as IMP, that
    is an admission and a transfer by class change, and no ED discharge."""
    admitted = load("Encounter-emerg.json")
    in_ed = revise(
        admitted,
        class_=coding("EMER"),
        classHistory=admitted["classHistory"][:1],
        location=admitted["location"][:2],
    )
    found = detect_encounter(in_ed, admitted, CTX)
    assert kinds(found) == ["admission", "transfer"]
    transfer = found[1]
    assert transfer.facts["transfer"] == "class"
    assert (transfer.facts["from_class"], transfer.facts["to_class"]) == ("EMER", "IMP")
    assert transfer.discriminator == "class:EMER>IMP"
    # dated by the classHistory entry that starts the inpatient class
    assert transfer.occurred_at == datetime.fromisoformat("2017-02-01T09:27:00+10:00")


def test_first_seen_encounter_whose_class_history_shows_ed_to_inpatient_is_a_transfer() -> None:
    """Encounter-emerg seen for the first time already IMP: its classHistory (EMER then IMP)
    still tells of the class change, with the same key as if both versions had been seen."""
    admitted = load("Encounter-emerg.json")
    first_seen = detect_encounter(None, admitted, CTX)
    assert kinds(first_seen) == ["admission", "transfer"]
    in_ed = revise(admitted, class_=coding("EMER"), classHistory=admitted["classHistory"][:1])
    seen_moving = detect_encounter(in_ed, admitted, CTX)
    assert [t.key for t in first_seen] == [t.key for t in seen_moving]
    assert first_seen[1].occurred_at == datetime.fromisoformat("2017-02-01T09:27:00+10:00")


def test_class_change_key_does_not_depend_on_the_version_that_carried_it() -> None:
    """EMER to IMP seen in version 2 or, if version 2 was missed, in version 3, is one change."""
    in_ed = inpatient(version=1, class_=coding("EMER"), period=ADMITTED)
    admitted = revise(in_ed, 2, class_=coding("IMP"))
    edited = revise(admitted, 3, serviceType={"text": "cardiology"})
    seen = only(detect_encounter(in_ed, admitted, CTX), TransitionKind.TRANSFER)
    seen_late = only(detect_encounter(in_ed, edited, CTX), TransitionKind.TRANSFER)
    assert seen.key == seen_late.key == "transfer|Encounter/example|class:EMER>IMP"


# -- to another facility ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (DISPOSITION, "other-hcf"),  # FHIR: another healthcare facility
        (NUBC, "02"),  # NUBC: short-term general hospital
    ],
)
def test_discharge_to_another_facility_is_also_a_transfer(system: str, code: str) -> None:
    """A discharge whose disposition is another facility is a discharge and a transfer."""
    admitted = inpatient(version=1, period=ADMITTED)
    moved = revise(
        admitted,
        2,
        status="finished",
        period=DISCHARGED,
        hospitalization=disposition(code, system),
    )
    found = detect_encounter(admitted, moved, CTX)
    assert kinds(found) == ["discharge", "transfer"]
    transfer = found[1]
    assert transfer.facts["transfer"] == "other-facility"
    assert transfer.discriminator == "other-facility"
    assert transfer.occurred_at == datetime.fromisoformat(DISCHARGED["end"])


def test_ed_transfer_to_another_facility_is_a_transfer() -> None:
    """An ED visit ending with a transfer to another facility is an ED discharge and a
    transfer, like the same disposition on an inpatient discharge."""
    visit = revise(davinci("admit"), 1, period={"start": "2018-10-21T21:22:15-07:00"})
    moved = revise(
        visit,
        2,
        status="finished",
        period={"start": "2018-10-21T21:22:15-07:00", "end": "2018-10-21T23:40:00-07:00"},
        hospitalization=disposition("other-hcf"),
    )
    assert kinds(detect_encounter(visit, moved, CTX)) == ["ed-discharge", "transfer"]


def test_hospice_is_not_a_transfer() -> None:
    """``hosp`` is hospice, not a hospital: a discharge only."""
    admitted = inpatient(version=1, period=ADMITTED)
    hospice = revise(
        admitted, 2, status="finished", period=DISCHARGED, hospitalization=disposition("hosp")
    )
    found = detect_encounter(admitted, hospice, CTX)
    assert kinds(found) == ["discharge"]
    assert found[0].facts["disposition_group"] == "hospice"
