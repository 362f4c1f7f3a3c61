"""Readmissions (fhirbridge.detect.encounter): an inpatient admission whose start date is at most
30 calendar days after an earlier inpatient discharge date of the same patient, counted in the
facility's time zone.

The new stay is the FHIR R4 core example Encounter (IMP, Patient/example) or Encounter-f203
(tests/data, see SOURCES.md); the earlier stays are ``Stay`` values, as the journal returns
them (instants in UTC).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fhirbridge.detect import EncounterContext, detect_encounter
from fhirbridge.values import Stay, Transition, TransitionKind

DATA = Path(__file__).resolve().parents[1] / "data"
SERVER = "https://ehr.example.org/fhir"
NEW_YORK = ZoneInfo("America/New_York")
PATIENT = "Patient/example"
ADMIT = datetime(2024, 4, 28, 14, 5, tzinfo=NEW_YORK)


def load(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/data."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def admitted(start: datetime | None = ADMIT, **changes: Any) -> dict[str, Any]:
    """The core example stay (IMP, in-progress, Patient/example) starting at ``start``."""
    out = copy.deepcopy(load("Encounter-example.json"))
    if start is not None:
        out["period"] = {"start": start.isoformat()}
    out.update({key.rstrip("_"): value for key, value in changes.items()})
    return out


def stay(
    encounter: str,
    end: datetime | None,
    *,
    klass: str = "IMP",
    status: str = "finished",
    patient: str = PATIENT,
    days: int = 3,
) -> Stay:
    """An earlier stay as the journal knows it: start and end in UTC."""
    finish = end.astimezone(UTC) if end is not None else None
    return Stay(
        server=SERVER,
        encounter=encounter,
        patient=patient,
        encounter_class=klass,
        status=status,
        start=(end - timedelta(days=days)).astimezone(UTC) if end is not None else None,
        end=finish,
    )


def context(*stays: Stay, tz: Any = NEW_YORK, window: int = 30) -> EncounterContext:
    """The facility in New York, with the patient's earlier stays."""
    return EncounterContext(server=SERVER, stays=stays, tz=tz, readmission_window_days=window)


def readmissions(transitions: list[Transition]) -> list[Transition]:
    """The readmissions among ``transitions``."""
    return [t for t in transitions if t.kind is TransitionKind.READMISSION]


def local(day: str, time: str = "10:00") -> datetime:
    """A wall-clock instant in New York."""
    return datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=NEW_YORK)


# -- the window -----------------------------------------------------------------------------


def test_admission_after_a_recent_discharge_is_a_readmission() -> None:
    """Admitted 12 days after the last discharge: an admission and a readmission that names
    the earlier stay, dated by the new stay's start."""
    earlier = stay("Encounter/first", local("2024-04-16", "11:00"))
    found = detect_encounter(None, admitted(), context(earlier))
    assert [t.kind.value for t in found] == ["admission", "readmission"]
    readmission = found[1]
    assert readmission.patient == PATIENT
    assert readmission.focus == readmission.encounter == "Encounter/example"
    assert readmission.occurred_at == ADMIT
    assert readmission.server == SERVER
    assert readmission.facts["previous_encounter"] == "Encounter/first"
    assert readmission.facts["days_since_discharge"] == 12
    assert readmission.facts["previous_discharge"] == "2024-04-16T15:00:00+00:00"
    assert readmission.key == "readmission|Encounter/example"


@pytest.mark.parametrize(
    ("discharged", "days", "readmitted"),
    [
        ("2024-04-28", 0, True),  # discharged in the morning, back the same afternoon
        ("2024-04-27", 1, True),  # next day
        ("2024-03-30", 29, True),  # day 29
        ("2024-03-29", 30, True),  # day 30 counts
        ("2024-03-28", 31, False),  # day 31 does not
        ("2024-01-15", 104, False),  # long ago
    ],
)
def test_window_is_thirty_calendar_days(discharged: str, days: int, readmitted: bool) -> None:
    """Day 30 after the discharge date is inside the window, day 31 outside."""
    earlier = stay("Encounter/first", local(discharged, "08:00"))
    new = admitted(local("2024-04-28", "14:05"))
    found = readmissions(detect_encounter(None, new, context(earlier)))
    assert bool(found) is readmitted
    if readmitted:
        assert found[0].facts["days_since_discharge"] == days


def test_day_thirty_counts_whatever_the_hours() -> None:
    """Discharged at 23:59 on day 0, readmitted at 00:01 on day 30: still day 30, inside."""
    earlier = stay("Encounter/first", local("2024-03-29", "23:59"))
    found = readmissions(
        detect_encounter(None, admitted(local("2024-04-28", "00:01")), context(earlier))
    )
    assert [t.facts["days_since_discharge"] for t in found] == [30]


def test_window_length_comes_from_the_context() -> None:
    """``readmission_window_days`` sets the window (here 7 days: day 8 is out)."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    assert readmissions(detect_encounter(None, admitted(), context(earlier, window=8)))
    assert not readmissions(detect_encounter(None, admitted(), context(earlier, window=7)))


# -- the facility's time zone -------------------------------------------------------------


def test_late_evening_discharge_counts_on_its_local_date() -> None:
    """Discharged 2024-03-01 23:30 in New York (already 2 March in UTC), admitted 1 April:
    31 local days, so no readmission; counted on UTC dates it would wrongly be day 30."""
    earlier = stay("Encounter/first", local("2024-03-01", "23:30"))
    new = admitted(local("2024-04-01", "09:00"))
    assert not readmissions(detect_encounter(None, new, context(earlier)))
    assert readmissions(detect_encounter(None, new, context(earlier, tz=UTC)))


def test_late_evening_admission_counts_on_its_local_date() -> None:
    """Discharged 1 March, admitted 31 March 22:30 in New York (already 1 April in UTC):
    day 30 locally, a readmission; on UTC dates it would be day 31."""
    earlier = stay("Encounter/first", local("2024-03-01", "10:00"))
    new = admitted(local("2024-03-31", "22:30"))
    found = readmissions(detect_encounter(None, new, context(earlier)))
    assert [t.facts["days_since_discharge"] for t in found] == [30]
    assert not readmissions(detect_encounter(None, new, context(earlier, tz=UTC)))


# -- which earlier stays count --------------------------------------------------------------


def test_nearest_earlier_discharge_is_the_one_named() -> None:
    """With several discharges in the window, the readmission names the most recent one."""
    stays = [
        stay("Encounter/older", local("2024-04-02")),
        stay("Encounter/nearest", local("2024-04-20")),
        stay("Encounter/middle", local("2024-04-10")),
    ]
    found = readmissions(detect_encounter(None, admitted(), context(*stays)))
    assert [t.facts["previous_encounter"] for t in found] == ["Encounter/nearest"]
    assert found[0].facts["days_since_discharge"] == 8


@pytest.mark.parametrize(
    "status",
    [
        "cancelled",  # the earlier stay never happened
        "entered-in-error",  # the earlier stay was a mistake
    ],
)
def test_voided_earlier_stays_are_ignored(status: str) -> None:
    """A cancelled or entered-in-error stay is no discharge, even when nearer than a real one."""
    stays = [
        stay("Encounter/voided", local("2024-04-25"), status=status),
        stay("Encounter/real", local("2024-04-10")),
    ]
    found = readmissions(detect_encounter(None, admitted(), context(*stays)))
    assert [t.facts["previous_encounter"] for t in found] == ["Encounter/real"]
    only_voided = context(stay("Encounter/voided", local("2024-04-25"), status=status))
    assert not readmissions(detect_encounter(None, admitted(), only_voided))


@pytest.mark.parametrize(
    ("klass", "counts"),
    [
        ("IMP", True),  # inpatient
        ("ACUTE", True),  # inpatient acute
        ("NONAC", True),  # inpatient non-acute
        ("OBSENC", True),  # observation
        ("SS", True),  # short stay
        ("EMER", False),  # an ED visit is not an inpatient discharge
        ("AMB", False),  # nor is an outpatient visit
        ("", False),  # nor an encounter of unknown class
    ],
)
def test_only_inpatient_type_discharges_count(klass: str, counts: bool) -> None:
    """The earlier encounter must be an inpatient, observation or short stay."""
    earlier = stay("Encounter/first", local("2024-04-20"), klass=klass)
    assert bool(readmissions(detect_encounter(None, admitted(), context(earlier)))) is counts


@pytest.mark.parametrize(
    "earlier",
    [
        stay("Encounter/open", None, status="in-progress"),  # not discharged yet
        stay("Encounter/other", local("2024-04-20"), patient="Patient/f201"),  # someone else
        stay("Encounter/example", local("2024-04-20")),  # this very stay, as journalled
        stay("Encounter/overlap", local("2024-04-29")),  # ends after this one starts
    ],
    ids=["not-discharged", "other-patient", "same-encounter", "overlapping"],
)
def test_stays_that_are_not_an_earlier_discharge_are_ignored(earlier: Stay) -> None:
    """Open stays, other patients' stays, the stay itself and overlapping stays do not count."""
    assert not readmissions(detect_encounter(None, admitted(), context(earlier)))


# -- which new stays count ------------------------------------------------------------------


def test_readmission_is_found_when_the_stay_is_admitted_not_at_every_version() -> None:
    """The look-back runs when the stay is admitted; its discharge does not repeat it."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    ctx = context(earlier)
    planned = admitted(status="planned")
    in_progress = admitted()
    finished = admitted(status="finished", period={"start": ADMIT.isoformat(), "end": "2024-05-01"})
    assert not readmissions(detect_encounter(None, planned, ctx))
    assert readmissions(detect_encounter(planned, in_progress, ctx))
    assert not readmissions(detect_encounter(in_progress, finished, ctx))


def test_ed_visit_becoming_inpatient_can_be_a_readmission() -> None:
    """An EMER encounter whose class becomes IMP is admitted then, and looked back from."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    in_ed = admitted(class_={"code": "EMER"})
    found = detect_encounter(in_ed, admitted(), context(earlier))
    assert [t.kind.value for t in found] == ["admission", "readmission", "transfer"]


def test_first_seen_finished_stay_counts_dated_by_its_start() -> None:
    """Encounter-f203 (IMP, 2013-03-11 to 2013-03-20) first seen already finished: a
    readmission dated by its period.start when an earlier stay ended within 30 days."""
    earlier = stay(
        "Encounter/f202", datetime(2013, 2, 20, 9, 0, tzinfo=UTC), patient="Patient/f201"
    )
    found = detect_encounter(None, load("Encounter-f203.json"), context(earlier, tz=UTC))
    assert [t.kind.value for t in found] == ["readmission", "discharge"]
    assert found[0].occurred_at == datetime(2013, 3, 11, 12, tzinfo=UTC)  # a date: noon UTC
    assert found[0].facts["days_since_discharge"] == 19


def test_stay_seen_planned_then_finished_counts() -> None:
    """A short stay admitted and discharged between two polls (planned, then finished) was
    never seen in progress; it still counts as a readmission."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    planned = admitted(status="planned", class_={"code": "SS"})
    finished = admitted(
        status="finished",
        class_={"code": "SS"},
        period={"start": ADMIT.isoformat(), "end": (ADMIT + timedelta(hours=20)).isoformat()},
    )
    found = detect_encounter(planned, finished, context(earlier))
    assert [t.kind.value for t in found] == ["readmission", "discharge"]


def test_stay_without_a_start_is_not_a_readmission() -> None:
    """With no period.start there is no admission date to count from."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    found = detect_encounter(None, admitted(start=None), context(earlier))
    assert [t.kind.value for t in found] == ["admission"]


def test_ed_visit_is_not_a_readmission() -> None:
    """Only inpatient-type admissions are readmissions; an ED visit after a discharge is not."""
    earlier = stay("Encounter/first", local("2024-04-20"))
    visit = admitted(class_={"code": "EMER"})
    assert [t.kind.value for t in detect_encounter(None, visit, context(earlier))] == ["ed-visit"]
