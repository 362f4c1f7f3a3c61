"""HOSPITAL: every item at its boundaries, the tiers, and what is reported found or missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from fhirbridge.risk import hospital
from fhirbridge.testing.builders import SNOMED as SCT
from fhirbridge.testing.builders import observation
from tests.unit._risk_builders import PRIORITY, build_encounter, stamp

ADMIT = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
DISCHARGE = ADMIT + timedelta(days=3, hours=2)

# An Encounter of Patient/p1 (``patient=`` for another) admitted at ADMIT that lasted ``days``
# days (and 2 hours).
encounter = partial(build_encounter, start=ADMIT, days=3)


def lab(
    oid: str,
    code: str,
    value: float,
    unit: str | None,
    *,
    at: datetime = DISCHARGE - timedelta(hours=6),
    **extra: Any,
) -> dict[str, Any]:
    """A final laboratory Observation of Patient/p1 with a UCUM valueQuantity, taken ``at``."""
    return observation(code, rid=oid, value=value, unit=unit, effective=at, **extra)


def procedure(
    pid: str, *, at: datetime | None = ADMIT + timedelta(days=1), **extra: Any
) -> dict[str, Any]:
    """A completed Procedure of Patient/p1."""
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": {"text": "Colonoscopy"},
        "subject": {"reference": "Patient/p1"},
        **extra,
    }
    if at is not None:
        resource["performedDateTime"] = stamp(at)
    return resource


def admission(eid: str, days_before: int, **extra: Any) -> dict[str, Any]:
    """An earlier inpatient Encounter that began ``days_before`` days before the index one."""
    return encounter(eid, start=ADMIT - timedelta(days=days_before), days=2, **extra)


# --- H: haemoglobin --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "points"),
    [
        # g/dL: below 12 is 1 point, 12 is not
        pytest.param(11.9, "g/dL", 1, id="11.9-g/dL"),
        pytest.param(12, "g/dL", 0, id="12-g/dL"),
        # g/L: 119 is 11.9 g/dL, 120 is 12
        pytest.param(119, "g/L", 1, id="119-g/L"),
        pytest.param(120, "g/L", 0, id="120-g/L"),
        # mmol/L (Hb monomer): 7.4 is 11.92 g/dL, 7.5 is 12.09
        pytest.param(7.4, "mmol/L", 1, id="7.4-mmol/L"),
        pytest.param(7.5, "mmol/L", 0, id="7.5-mmol/L"),
        # the unit's case does not matter
        pytest.param(11.0, "g/dl", 1, id="lower-case-unit"),
    ],
)
def test_haemoglobin_points(value: float, unit: str, points: int) -> None:
    """H is 1 when the last haemoglobin is below 12 g/dL, whatever the unit."""
    result = hospital(encounter(), observations=[lab("hb", "718-7", value, unit)])
    assert result.components["H"] == points
    assert "haemoglobin" in result.found
    assert "Observation/hb" in result.inputs


@pytest.mark.parametrize(
    "unit",
    [
        # no unit: g/dL and g/L cannot be told apart
        pytest.param(None, id="no-unit"),
        # a unit the table does not know
        pytest.param("%", id="unknown-unit"),
    ],
)
def test_haemoglobin_without_usable_unit_is_missing(unit: str | None) -> None:
    """A value whose unit cannot be read does not count and is reported missing."""
    result = hospital(encounter(), observations=[lab("hb", "718-7", 10, unit)])
    assert result.components["H"] == 0
    assert "haemoglobin" in result.missing


def test_the_last_haemoglobin_before_discharge_counts() -> None:
    """Of several results during the stay the latest counts; one after discharge is ignored."""
    observations = [
        lab("late", "718-7", 10.0, "g/dL", at=DISCHARGE + timedelta(hours=1)),
        lab("last", "718-7", 12.5, "g/dL", at=DISCHARGE - timedelta(hours=2)),
        lab("first", "718-7", 9.0, "g/dL", at=ADMIT + timedelta(hours=1)),
    ]
    result = hospital(encounter(), observations=observations)
    assert result.components["H"] == 0
    assert "Observation/last" in result.inputs
    assert "Observation/first" not in result.inputs


@pytest.mark.parametrize(
    ("obs", "counted"),
    [
        # before the stay and not referring to it: not a result of the stay
        pytest.param(
            lab("hb", "718-7", 9, "g/dL", at=ADMIT - timedelta(days=30)), False, id="before-stay"
        ),
        # before the period but pointing to the index encounter: counts
        pytest.param(
            lab(
                "hb",
                "718-7",
                9,
                "g/dL",
                at=ADMIT - timedelta(hours=1),
                encounter={"reference": "Encounter/idx"},
            ),
            True,
            id="referenced",
        ),
        # entered in error
        pytest.param(
            lab("hb", "718-7", 9, "g/dL", status="entered-in-error"), False, id="entered-in-error"
        ),
        # another patient's result
        pytest.param(
            lab("hb", "718-7", 9, "g/dL", subject={"reference": "Patient/p2"}),
            False,
            id="other-patient",
        ),
        # another LOINC code
        pytest.param(lab("hb", "4548-4", 9, "%"), False, id="other-code"),
    ],
)
def test_which_haemoglobin_results_belong_to_the_stay(obs: dict[str, Any], counted: bool) -> None:
    """Only the patient's valid results of the stay count."""
    result = hospital(encounter(), observations=[obs])
    assert result.components["H"] == (1 if counted else 0)


# --- S: sodium -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "unit", "points"),
    [
        # serum/plasma sodium: below 135 is 1 point
        pytest.param("2951-2", 134, "mmol/L", 1, id="134"),
        pytest.param("2951-2", 135, "mmol/L", 0, id="135"),
        pytest.param("2951-2", 134.9, "mmol/L", 1, id="134.9"),
        # blood sodium code
        pytest.param("2947-0", 130, "mmol/L", 1, id="blood-130"),
        # mEq/L is the same number
        pytest.param("2951-2", 134, "meq/L", 1, id="meq"),
    ],
)
def test_sodium_points(code: str, value: float, unit: str, points: int) -> None:
    """S is 1 when the last sodium is below 135 mmol/L."""
    result = hospital(encounter(), observations=[lab("na", code, value, unit)])
    assert result.components["S"] == points
    assert "sodium" in result.found


# --- O: oncology service ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "points"),
    [
        # serviceType coded SNOMED CT "Medical oncology"
        pytest.param(
            {"serviceType": {"coding": [{"system": SCT, "code": "394593009"}]}},
            2,
            id="service-type-code",
        ),
        # serviceType named "Hematology/Oncology"
        pytest.param({"serviceType": {"text": "Hematology/Oncology"}}, 2, id="service-type-text"),
        # Encounter.type display
        pytest.param(
            {"type": [{"coding": [{"code": "x", "display": "Oncology admission"}]}]},
            2,
            id="type-display",
        ),
        # serviceProvider display
        pytest.param({"serviceProvider": {"display": "Oncology Ward 5"}}, 2, id="provider"),
        # a non-oncology service
        pytest.param(
            {
                "serviceType": {
                    "coding": [{"system": SCT, "code": "394802001", "display": "General medicine"}]
                }
            },
            0,
            id="general-medicine",
        ),
    ],
)
def test_oncology_service_points(extra: dict[str, Any], points: int) -> None:
    """O is 2 for a discharge from an oncology service, by code or by name."""
    result = hospital(encounter(**extra))
    assert result.components["O"] == points
    assert "service" in result.found


def test_caller_oncology_codes_replace_the_shipped_ones() -> None:
    """oncology_services matches local codes, and replaces the shipped SNOMED codes."""
    local = encounter(serviceType={"coding": [{"system": "urn:local", "code": "ONC"}]})
    assert hospital(local, oncology_services={"urn:local|ONC"}).components["O"] == 2
    assert hospital(local, oncology_services={"ONC"}).components["O"] == 2
    assert hospital(local).components["O"] == 0
    shipped = encounter(serviceType={"coding": [{"system": SCT, "code": "394593009"}]})
    assert hospital(shipped, oncology_services={"ONC"}).components["O"] == 0


def test_no_service_information_is_missing() -> None:
    """Without serviceType, type or serviceProvider the service is reported missing."""
    assert "service" in hospital(encounter()).missing


# --- P: procedures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proc", "points"),
    [
        # performed during the stay
        pytest.param(procedure("p1"), 1, id="during-stay"),
        # referring to the index encounter, with no time
        pytest.param(
            procedure("p1", at=None, encounter={"reference": "Encounter/idx"}), 1, id="referenced"
        ),
        # performedPeriod during the stay
        pytest.param(
            procedure("p1", at=None, performedPeriod={"start": stamp(ADMIT)}), 1, id="period"
        ),
        # before the stay
        pytest.param(procedure("p1", at=ADMIT - timedelta(days=5)), 0, id="before-stay"),
        # after the discharge
        pytest.param(procedure("p1", at=DISCHARGE + timedelta(hours=1)), 0, id="after-stay"),
        # not done
        pytest.param(procedure("p1", status="not-done"), 0, id="not-done"),
        # entered in error
        pytest.param(procedure("p1", status="entered-in-error"), 0, id="entered-in-error"),
        # another patient's
        pytest.param(procedure("p1", subject={"reference": "Patient/p2"}), 0, id="other-patient"),
    ],
)
def test_procedure_points(proc: dict[str, Any], points: int) -> None:
    """P is 1 when any procedure was done during the stay."""
    result = hospital(encounter(), procedures=[proc])
    assert result.components["P"] == points
    assert "procedures" in result.found
    assert ("Procedure/p1" in result.inputs) == bool(points)


def test_no_procedures_is_missing() -> None:
    """Without Procedures P is 0 and procedures are reported missing."""
    assert "procedures" in hospital(encounter()).missing


# --- IT: index admission type ----------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "others", "points"),
    [
        # admitSource emd
        pytest.param(
            {"hospitalization": {"admitSource": {"coding": [{"code": "emd"}]}}},
            [],
            1,
            id="admit-source",
        ),
        # classHistory beginning EMER
        pytest.param(
            {
                "classHistory": [
                    {
                        "class": {"code": "EMER"},
                        "period": {"start": stamp(ADMIT - timedelta(hours=3))},
                    },
                    {"class": {"code": "IMP"}, "period": {"start": stamp(ADMIT)}},
                ]
            },
            [],
            1,
            id="class-history",
        ),
        # a linked ED visit (partOf)
        pytest.param(
            {"partOf": {"reference": "Encounter/ed"}},
            [encounter("ed", cls="EMER", start=ADMIT - timedelta(hours=5), days=0)],
            1,
            id="part-of",
        ),
        # an ED visit ending just before the admission
        pytest.param(
            {},
            [encounter("ed", cls="EMER", start=ADMIT - timedelta(hours=4), days=0)],
            1,
            id="ed-just-before",
        ),
        # priority EM, S and UR: urgent or emergent
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "EM"}]}}, [], 1, id="priority-EM"
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "S"}]}}, [], 1, id="priority-S"
        ),
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "UR"}]}}, [], 1, id="priority-UR"
        ),
        # elective
        pytest.param(
            {"priority": {"coding": [{"system": PRIORITY, "code": "EL"}]}}, [], 0, id="priority-EL"
        ),
    ],
)
def test_index_admission_type_points(
    extra: dict[str, Any], others: list[dict[str, Any]], points: int
) -> None:
    """IT is 1 for an urgent/emergent admission, read the same way as LACE's A."""
    assert hospital(encounter(**extra), encounters=others).components["IT"] == points


# --- A: earlier admissions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "points"),
    [
        # 0-1: 0
        pytest.param(0, 0, id="0"),
        pytest.param(1, 0, id="1"),
        # 2-5: 2
        pytest.param(2, 2, id="2"),
        pytest.param(5, 2, id="5"),
        # more than 5: 5
        pytest.param(6, 5, id="6"),
    ],
)
def test_admissions_points(count: int, points: int) -> None:
    """A counts inpatient admissions in the 12 months before, not the index one."""
    history = [admission(f"a{i}", 20 * (i + 1)) for i in range(count)]
    history.append(encounter())  # the index itself, listed with the history
    result = hospital(encounter(), encounters=history)
    assert result.components["A"] == points
    assert "Encounter/idx" not in result.inputs[1:]


@pytest.mark.parametrize(
    ("other", "counted"),
    [
        # exactly 12 calendar months before the admission date
        pytest.param(
            encounter("a", start=datetime(2023, 3, 15, 8, tzinfo=UTC), days=2),
            True,
            id="12-months-to-the-day",
        ),
        # the day before that
        pytest.param(
            encounter("a", start=datetime(2023, 3, 14, 8, tzinfo=UTC), days=2),
            False,
            id="a-day-too-early",
        ),
        # ACUTE and NONAC are inpatient classes
        pytest.param(admission("a", 30, cls="ACUTE"), True, id="acute"),
        pytest.param(admission("a", 30, cls="NONAC"), True, id="nonac"),
        # ED and ambulatory visits are not admissions
        pytest.param(admission("a", 30, cls="EMER"), False, id="emer"),
        pytest.param(admission("a", 30, cls="AMB"), False, id="amb"),
        # cancelled and entered-in-error admissions did not happen
        pytest.param(admission("a", 30, status="cancelled"), False, id="cancelled"),
        pytest.param(admission("a", 30, status="entered-in-error"), False, id="entered-in-error"),
        # another patient's admission
        pytest.param(admission("a", 30, patient="Patient/p2"), False, id="other-patient"),
        # a sub-encounter of the index stay is part of it
        pytest.param(
            encounter(
                "a", start=ADMIT - timedelta(hours=3), days=0, partOf={"reference": "Encounter/idx"}
            ),
            False,
            id="part-of-index",
        ),
    ],
)
def test_which_encounters_are_earlier_admissions(other: dict[str, Any], counted: bool) -> None:
    """Only the patient's real inpatient stays of the previous 12 months count."""
    history = [admission("base", 100), other]
    result = hospital(encounter(), encounters=history)
    assert result.components["A"] == (2 if counted else 0)


def test_parent_encounter_of_the_index_is_not_an_earlier_admission() -> None:
    """The Encounter the index one is partOf is the same hospitalisation."""
    parent = admission("parent", 1)
    result = hospital(
        encounter(partOf={"reference": "Encounter/parent"}),
        encounters=[admission("base", 100), parent],
    )
    assert result.components["A"] == 0


# --- L: length of stay -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "points"),
    [
        # 4 days: 0
        pytest.param(4, 0, id="4d"),
        # 5 days: 2
        pytest.param(5, 2, id="5d"),
    ],
)
def test_length_of_stay_points(days: int, points: int) -> None:
    """L is 2 for a stay of 5 days or more."""
    assert hospital(encounter(days=days)).components["L"] == points


# --- total and tiers -------------------------------------------------------------------

ONCOLOGY: dict[str, Any] = {"serviceType": {"text": "Oncology"}}
EMERGENT: dict[str, Any] = {"priority": {"coding": [{"system": PRIORITY, "code": "EM"}]}}


@pytest.mark.parametrize(
    ("extra", "observations", "total", "tier"),
    [
        # O 2 + L 2 = 4: low
        pytest.param(ONCOLOGY, [], 4, "low", id="4-low"),
        # + IT 1 = 5: intermediate
        pytest.param({**ONCOLOGY, **EMERGENT}, [], 5, "intermediate", id="5-intermediate"),
        # + H 1 = 6: intermediate
        pytest.param(
            {**ONCOLOGY, **EMERGENT},
            [lab("hb", "718-7", 9, "g/dL")],
            6,
            "intermediate",
            id="6-intermediate",
        ),
        # + S 1 = 7: high
        pytest.param(
            {**ONCOLOGY, **EMERGENT},
            [lab("hb", "718-7", 9, "g/dL"), lab("na", "2951-2", 130, "mmol/L")],
            7,
            "high",
            id="7-high",
        ),
    ],
)
def test_tiers(
    extra: dict[str, Any], observations: list[dict[str, Any]], total: int, tier: str
) -> None:
    """Low 0-4, intermediate 5-6, high 7 and above."""
    result = hospital(encounter(days=5, **extra), observations=observations)
    assert (result.total, result.tier) == (total, tier)
    assert result.total == sum(result.components.values())


def test_maximum_is_13() -> None:
    """Every item at its top: 1 + 2 + 1 + 1 + 1 + 5 + 2 = 13, with every input found."""
    history = [admission(f"a{i}", 20 * (i + 1)) for i in range(6)]
    result = hospital(
        encounter(days=6, **ONCOLOGY, **EMERGENT),
        observations=[lab("hb", "718-7", 9, "g/dL"), lab("na", "2951-2", 130, "mmol/L")],
        procedures=[procedure("p1")],
        encounters=history,
    )
    assert result.components == {"H": 1, "O": 2, "S": 1, "P": 1, "IT": 1, "A": 5, "L": 2}
    assert (result.total, result.tier) == (13, "high")
    assert result.missing == ()
    assert result.inputs[:4] == (
        "Encounter/idx",
        "Observation/hb",
        "Observation/na",
        "Procedure/p1",
    )


def test_bare_encounter_reports_what_is_missing() -> None:
    """With the Encounter alone every other input is reported missing, in item order."""
    result = hospital(encounter(days=None, status="in-progress"))
    assert result.total == 0
    assert result.missing == (
        "haemoglobin",
        "service",
        "sodium",
        "procedures",
        "admission-acuity",
        "admissions",
        "length-of-stay",
    )
    assert result.score_name == "hospital"
