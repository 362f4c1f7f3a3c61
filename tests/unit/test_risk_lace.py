"""LACE: every boundary of L, A, C and E, the tiers, and what is reported found or missing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest

from fhirbridge.risk import lace
from fhirbridge.testing.builders import condition
from tests.unit._risk_builders import PRIORITY, build_encounter, stamp

ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
ADMIT = datetime(2024, 9, 15, 10, 0, tzinfo=UTC)

# An Encounter of Patient/p1 (``patient=`` for another) admitted at ADMIT; ``days`` sets the end
# that many days (and 2 hours) later, ``end`` sets it outright.
encounter = partial(build_encounter, start=ADMIT, days=2)


def ed_visit(eid: str, start: datetime, *, hours: float = 3, **extra: Any) -> dict[str, Any]:
    """An emergency Encounter that lasted ``hours``."""
    return encounter(
        eid, cls="EMER", start=start, end=start + timedelta(hours=hours), days=None, **extra
    )


# --- L: length of stay -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "points"),
    [
        # admitted and discharged the same day: <1 day
        pytest.param(0, 0, id="0d"),
        # 1, 2, 3 days: the same
        pytest.param(1, 1, id="1d"),
        pytest.param(2, 2, id="2d"),
        pytest.param(3, 3, id="3d"),
        # 4-6 days: 4
        pytest.param(4, 4, id="4d"),
        pytest.param(6, 4, id="6d"),
        # 7-13 days: 5
        pytest.param(7, 5, id="7d"),
        pytest.param(13, 5, id="13d"),
        # 14 days and more: 7
        pytest.param(14, 7, id="14d"),
        pytest.param(40, 7, id="40d"),
    ],
)
def test_length_of_stay_points(days: int, points: int) -> None:
    """L follows the LACE table at every boundary."""
    result = lace(encounter(days=days))
    assert result.length_of_stay == days
    assert result.components["L"] == points


def test_length_of_stay_counts_dates_not_hours() -> None:
    """23:00 to 01:00 the next day is 1 day; 00:30 to 23:30 the same day is 0."""
    late = datetime(2024, 9, 15, 23, 0, tzinfo=UTC)
    assert lace(encounter(start=late, end=late + timedelta(hours=2))).length_of_stay == 1
    early = datetime(2024, 9, 15, 0, 30, tzinfo=UTC)
    assert lace(encounter(start=early, end=early + timedelta(hours=23))).length_of_stay == 0


def test_length_of_stay_dates_are_taken_in_the_facility_time_zone() -> None:
    """02:00Z and 23:00Z are one day apart in UTC but the same day at UTC-5."""
    start = datetime(2024, 9, 16, 2, 0, tzinfo=UTC)
    stay = encounter(start=start, end=datetime(2024, 9, 16, 23, 0, tzinfo=UTC))
    assert lace(stay).length_of_stay == 0
    assert lace(stay, tz=timezone(timedelta(hours=-5))).length_of_stay == 1


def test_bare_dates_are_not_shifted_by_the_time_zone() -> None:
    """A period given as dates keeps its dates in any time zone."""
    stay = encounter(start="2024-09-15", end="2024-09-18")
    assert lace(stay, tz=timezone(timedelta(hours=-5))).length_of_stay == 3


def test_stay_starts_at_the_inpatient_entry_of_class_history() -> None:
    """An ED visit that became an admission in one Encounter counts from the inpatient part."""
    ed_start = datetime(2024, 9, 14, 20, 0, tzinfo=UTC)
    stay = encounter(
        start=ed_start,
        end=datetime(2024, 9, 17, 12, 0, tzinfo=UTC),
        classHistory=[
            {"class": {"code": "EMER"}, "period": {"start": stamp(ed_start)}},
            {"class": {"code": "IMP"}, "period": {"start": "2024-09-15T01:00:00Z"}},
        ],
    )
    assert lace(stay).length_of_stay == 2


def test_open_stay_reports_length_of_stay_missing() -> None:
    """Without a discharge L is 0 and the length of stay is reported missing."""
    result = lace(encounter(days=None, status="in-progress"))
    assert result.components["L"] == 0
    assert result.length_of_stay is None
    assert "length-of-stay" in result.missing


# --- A: acuity -------------------------------------------------------------------------


def _history(*classes: str) -> list[dict[str, Any]]:
    return [
        {"class": {"code": cls}, "period": {"start": stamp(ADMIT + timedelta(hours=i))}}
        for i, cls in enumerate(classes)
    ]


@pytest.mark.parametrize(
    ("extra", "others", "points", "signals"),
    [
        # admitSource emd (from the emergency department)
        pytest.param(
            {
                "hospitalization": {
                    "admitSource": {"coding": [{"system": ADMIT_SOURCE, "code": "emd"}]}
                }
            },
            [],
            3,
            ("admit-source",),
            id="admit-source-emd",
        ),
        # admitSource without a system still reads
        pytest.param(
            {"hospitalization": {"admitSource": {"coding": [{"code": "emd"}]}}},
            [],
            3,
            ("admit-source",),
            id="admit-source-no-system",
        ),
        # admitSource gp: known, not acute
        pytest.param(
            {
                "hospitalization": {
                    "admitSource": {"coding": [{"system": ADMIT_SOURCE, "code": "gp"}]}
                }
            },
            [],
            0,
            (),
            id="admit-source-gp",
        ),
        # classHistory that begins EMER
        pytest.param(
            {"classHistory": _history("EMER", "IMP")},
            [],
            3,
            ("class-history",),
            id="class-history-emer-first",
        ),
        # classHistory where EMER is not the earliest entry
        pytest.param(
            {"classHistory": _history("IMP", "EMER")}, [], 0, (), id="class-history-imp-first"
        ),
        # the index Encounter is partOf the ED Encounter
        pytest.param(
            {"partOf": {"reference": "Encounter/ed"}},
            [ed_visit("ed", ADMIT - timedelta(days=2))],
            3,
            ("linked-ed-visit",),
            id="part-of-ed",
        ),
        # the ED Encounter is partOf the index Encounter
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(days=2), partOf={"reference": "Encounter/idx"})],
            3,
            ("linked-ed-visit",),
            id="ed-part-of-index",
        ),
        # an ED visit that ended 11:59 before the admission
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=14, minutes=59))],
            3,
            ("linked-ed-visit",),
            id="ed-ended-11h59-before",
        ),
        # ... exactly 12 hours before
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=15))],
            3,
            ("linked-ed-visit",),
            id="ed-ended-12h-before",
        ),
        # ... 12:01 before: not linked
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=15, minutes=1))],
            0,
            (),
            id="ed-ended-12h01-before",
        ),
        # an ED visit still open when the admission began
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=2), hours=4)],
            3,
            ("linked-ed-visit",),
            id="ed-overlapping",
        ),
        # a cancelled ED visit is not linked
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=3), status="cancelled")],
            0,
            (),
            id="ed-cancelled",
        ),
        # another patient's ED visit is not linked
        pytest.param(
            {},
            [ed_visit("ed", ADMIT - timedelta(hours=3), patient="Patient/p2")],
            0,
            (),
            id="ed-other-patient",
        ),
        # an ambulatory visit just before is not an ED visit
        pytest.param(
            {},
            [
                encounter(
                    "amb",
                    cls="AMB",
                    start=ADMIT - timedelta(hours=3),
                    end=ADMIT - timedelta(hours=2),
                )
            ],
            0,
            (),
            id="amb-before",
        ),
        # priority EM (emergency), S (stat), UR (urgent)
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "EM"}]}},
            [],
            3,
            ("priority",),
            id="priority-EM",
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "S"}]}},
            [],
            3,
            ("priority",),
            id="priority-S",
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "UR"}]}},
            [],
            3,
            ("priority",),
            id="priority-UR",
        ),
        # priority EL (elective), R (routine), A (ASAP): not acute
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "EL"}]}},
            [],
            0,
            (),
            id="priority-EL",
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "R"}]}},
            [],
            0,
            (),
            id="priority-R",
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "A"}]}},
            [],
            0,
            (),
            id="priority-A",
        ),
        # EM in some other code system is not v3 ActPriority
        pytest.param(
            {"priority": {"coding": [{"system": "http://example.org/p", "code": "EM"}]}},
            [],
            0,
            (),
            id="priority-other-system",
        ),
        # several signals are all reported
        pytest.param(
            {
                "hospitalization": {"admitSource": {"coding": [{"code": "emd"}]}},
                "priority": {"coding": [{"system": PRIORITY, "code": "EM"}]},
            },
            [],
            3,
            ("admit-source", "priority"),
            id="two-signals",
        ),
    ],
)
def test_acuity_signals(
    extra: dict[str, Any], others: list[dict[str, Any]], points: int, signals: tuple[str, ...]
) -> None:
    """A is 3 when the EHR says, in any of its ways, that the admission came through the ED."""
    result = lace(encounter(**extra), encounters=others)
    assert result.components["A"] == points
    assert result.acuity_signals == signals


def test_no_acuity_information_is_reported_missing() -> None:
    """With no admitSource, priority, classHistory or linked ED visit, acuity is missing."""
    result = lace(encounter())
    assert result.components["A"] == 0
    assert "admission-acuity" in result.missing


def test_elective_admission_is_found_not_missing() -> None:
    """An elective priority is information: acuity is found, with 0 points."""
    result = lace(encounter(priority={"coding": [{"system": PRIORITY, "code": "EL"}]}))
    assert "admission-acuity" in result.found


# --- C: comorbidity --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "points", "categories"),
    [
        # none: 0
        pytest.param([], 0, (), id="charlson-0"),
        # dementia weighs 3 in LACE: C 3
        pytest.param(["F03.90"], 3, ("dementia",), id="charlson-3"),
        # dementia 3 + MI 1 = 4: C 5
        pytest.param(["F03.90", "I21.4"], 5, ("mi", "dementia"), id="charlson-4"),
        # metastatic 6: C 5
        pytest.param(["C78.7"], 5, ("metastatic",), id="charlson-6"),
        # CHF weighs 2 in LACE (1 in Charlson)
        pytest.param(["I50.9"], 2, ("chf",), id="chf-lace-weight"),
        # hemiplegia is not in LACE's list
        pytest.param(["G81.90"], 0, ("hemiplegia",), id="hemiplegia-0"),
    ],
)
def test_comorbidity_points(codes: list[str], points: int, categories: tuple[str, ...]) -> None:
    """C is the Charlson score with LACE weights, 0-3 the same and 4 or more 5."""
    conditions = [condition(code, rid=f"c{i}") for i, code in enumerate(codes)]
    result = lace(encounter(), conditions=conditions)
    assert result.components["C"] == points
    assert result.charlson_categories == categories


def test_conditions_of_another_patient_are_ignored() -> None:
    """A Condition whose subject is not the encounter's patient never counts."""
    other = condition("I50.9", patient="p2")
    assert lace(encounter(), conditions=[other]).components["C"] == 0


def test_conditions_recorded_after_discharge_are_ignored() -> None:
    """A Condition recorded after the discharge was not known at discharge."""
    later = condition("I50.9", recorded="2024-12-01")
    during = condition("I21.4", rid="c2", recorded=ADMIT + timedelta(hours=5))
    result = lace(encounter(), conditions=[later, during])
    assert result.charlson_categories == ("mi",)
    assert result.inputs == ("Encounter/idx", "Condition/c2")


def test_no_conditions_reported_missing() -> None:
    """Without Conditions C is 0 and conditions are reported missing."""
    assert "conditions" in lace(encounter()).missing


# --- E: ED visits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visits", "points"),
    [
        # 0-3: the same
        pytest.param(0, 0, id="0"),
        pytest.param(3, 3, id="3"),
        # 4 or more: 4
        pytest.param(4, 4, id="4"),
        pytest.param(5, 4, id="5"),
    ],
)
def test_ed_visit_points(visits: int, points: int) -> None:
    """E counts ED visits in the 6 months before, capped at 4."""
    history = [ed_visit(f"ed{i}", ADMIT - timedelta(days=10 * (i + 1))) for i in range(visits)]
    history.append(encounter("amb", cls="AMB", start=ADMIT - timedelta(days=3), days=0))
    assert lace(encounter(), encounters=history).components["E"] == points


def test_the_ed_visit_that_led_to_the_admission_is_not_counted() -> None:
    """Three earlier ED visits plus the one that led here: E is 3, A is 3."""
    history = [ed_visit(f"ed{i}", ADMIT - timedelta(days=10 * (i + 1))) for i in range(3)]
    history.append(ed_visit("index-ed", ADMIT - timedelta(hours=4)))
    result = lace(encounter(), encounters=history)
    assert (result.components["A"], result.components["E"]) == (3, 3)
    assert "Encounter/index-ed" in result.inputs


def test_ed_visit_linked_by_part_of_is_not_counted() -> None:
    """An ED Encounter that the admission is partOf is the index visit, however long ago."""
    history = [ed_visit("ed", ADMIT - timedelta(days=2))]
    result = lace(encounter(partOf={"reference": "Encounter/ed"}), encounters=history)
    assert (result.components["A"], result.components["E"]) == (3, 0)


@pytest.mark.parametrize(
    ("admit", "visit", "counted"),
    [
        # exactly 6 calendar months before the admission date counts
        pytest.param(
            datetime(2024, 9, 15, 10, tzinfo=UTC),
            datetime(2024, 3, 15, 8, tzinfo=UTC),
            1,
            id="6-months-to-the-day",
        ),
        # the day before does not
        pytest.param(
            datetime(2024, 9, 15, 10, tzinfo=UTC),
            datetime(2024, 3, 14, 23, tzinfo=UTC),
            0,
            id="a-day-too-early",
        ),
        # month ends clamp: 31 August minus 6 months is 29 February (2024)
        pytest.param(
            datetime(2024, 8, 31, 10, tzinfo=UTC),
            datetime(2024, 2, 29, 8, tzinfo=UTC),
            1,
            id="clamped-month-end",
        ),
        pytest.param(
            datetime(2024, 8, 31, 10, tzinfo=UTC),
            datetime(2024, 2, 28, 8, tzinfo=UTC),
            0,
            id="before-clamped-month-end",
        ),
        # a visit after the admission began is not "before"
        pytest.param(
            datetime(2024, 9, 15, 10, tzinfo=UTC),
            datetime(2024, 9, 16, 8, tzinfo=UTC),
            0,
            id="after-admission",
        ),
    ],
)
def test_ed_visit_window(admit: datetime, visit: datetime, counted: int) -> None:
    """The 6 months are calendar months back from the admission date."""
    result = lace(encounter(start=admit), encounters=[ed_visit("ed", visit)])
    assert result.components["E"] == counted


@pytest.mark.parametrize(
    "status",
    [
        # never happened
        pytest.param("cancelled", id="cancelled"),
        # should not be in the record
        pytest.param("entered-in-error", id="entered-in-error"),
        # only planned
        pytest.param("planned", id="planned"),
    ],
)
def test_void_ed_visits_are_not_counted(status: str) -> None:
    """Cancelled, entered-in-error and planned ED Encounters are not visits."""
    history = [ed_visit("ed", ADMIT - timedelta(days=20), status=status)]
    assert lace(encounter(), encounters=history).components["E"] == 0


def test_an_earlier_admission_through_the_ed_is_an_ed_visit() -> None:
    """An earlier Encounter whose classHistory shows EMER counts as an ED visit."""
    earlier_start = ADMIT - timedelta(days=40)
    earlier = encounter(
        "old",
        start=earlier_start,
        days=3,
        classHistory=[{"class": {"code": "EMER"}, "period": {"start": stamp(earlier_start)}}],
    )
    assert lace(encounter(), encounters=[earlier]).components["E"] == 1


def test_other_patients_visits_and_the_index_itself_are_not_counted() -> None:
    """The index Encounter in the list and another patient's ED visits do not count."""
    history = [encounter(), ed_visit("ed", ADMIT - timedelta(days=20), patient="Patient/p2")]
    result = lace(encounter(), encounters=history)
    assert result.components["E"] == 0


def test_no_encounter_history_is_reported_missing() -> None:
    """Without other Encounters E is 0 and ED visits are reported missing."""
    result = lace(encounter(), encounters=[encounter()])
    assert "ed-visits" in result.missing


# --- total and tiers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "acute", "codes", "total", "tier"),
    [
        # L 4: 4, low
        pytest.param(4, False, [], 4, "low", id="4-low"),
        # L 5: 5, moderate
        pytest.param(7, False, [], 5, "moderate", id="5-moderate"),
        # L 4 + A 3 + C 2 (CHF): 9, moderate
        pytest.param(4, True, ["I50.9"], 9, "moderate", id="9-moderate"),
        # L 5 + A 3 + C 2: 10, high
        pytest.param(7, True, ["I50.9"], 10, "high", id="10-high"),
        # L 7 + A 3 + C 5 = 15 (with E 4 too, see test_maximum_is_19)
        pytest.param(14, True, ["C78.7"], 15, "high", id="15-high"),
    ],
)
def test_tiers(days: int, acute: bool, codes: list[str], total: int, tier: str) -> None:
    """Low 0-4, moderate 5-9, high 10 and above."""
    extra: dict[str, Any] = (
        {"priority": {"coding": [{"system": PRIORITY, "code": "EM"}]}} if acute else {}
    )
    conditions = [condition(code, rid=f"c{i}") for i, code in enumerate(codes)]
    result = lace(encounter(days=days, **extra), conditions=conditions)
    assert (result.total, result.tier) == (total, tier)
    assert result.total == sum(result.components.values())


def test_maximum_is_19() -> None:
    """L 7 + A 3 + C 5 + E 4 = 19, high, with every input found."""
    history = [ed_visit(f"ed{i}", ADMIT - timedelta(days=10 * (i + 1))) for i in range(4)]
    history.append(ed_visit("index-ed", ADMIT - timedelta(hours=4)))
    result = lace(encounter(days=20), conditions=[condition("C78.7")], encounters=history)
    assert result.components == {"L": 7, "A": 3, "C": 5, "E": 4}
    assert (result.total, result.tier) == (19, "high")
    assert result.missing == ()
    assert result.found == ("length-of-stay", "admission-acuity", "conditions", "ed-visits")
    assert result.inputs == (
        "Encounter/idx",
        "Encounter/index-ed",
        "Condition/c1",
        "Encounter/ed0",
        "Encounter/ed1",
        "Encounter/ed2",
        "Encounter/ed3",
    )


def test_bare_encounter_reports_what_is_missing() -> None:
    """An Encounter without a period or history scores 0 and names every missing input."""
    bare = {
        "resourceType": "Encounter",
        "id": "x",
        "status": "in-progress",
        "class": {"code": "IMP"},
    }
    result = lace(bare)
    assert (result.total, result.tier) == (0, "low")
    assert result.missing == ("length-of-stay", "admission-acuity", "conditions", "ed-visits")
    assert result.found == ()
    assert result.inputs == ("Encounter/x",)


def test_result_is_frozen_and_prints_as_dict() -> None:
    """The result is an immutable value with a JSON-ready view."""
    result = lace(encounter())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.total = 3  # type: ignore[misc]
    assert result.as_dict()["score"] == "lace"
    assert result.as_dict()["components"] == {"L": 2, "A": 0, "C": 0, "E": 0}


def test_only_encounters_are_accepted_as_the_index() -> None:
    """Passing another resource as the index encounter is a programming error."""
    with pytest.raises(ValueError, match="Encounter"):
        lace({"resourceType": "Condition", "id": "c1"})
