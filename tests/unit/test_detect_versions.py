"""The detection entry point (fhirbridge.detect): ``detect`` dispatching on resourceType, the
same version twice yielding nothing, late older versions (``is_newer``), references and keys.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.detect import (
    DetectContext,
    EncounterContext,
    ReferralMatcher,
    detect,
    is_newer,
    local_reference,
)
from fhirbridge.detect.projection import version_key
from fhirbridge.rules.dispositions import disposition_group
from fhirbridge.testing.builders import REFERRAL, revise
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, TransitionKind

DATA = Path(__file__).resolve().parents[1] / "data"
SERVER = "https://ehr.example.org/fhir"
SNOMED = "http://snomed.info/sct"
CONTEXT = DetectContext(
    encounter=EncounterContext(
        server=SERVER,
        disposition_group=disposition_group,
        now=datetime(2024, 5, 6, 12, 0, tzinfo=UTC),
    )
)


def load(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/data."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def versioned(
    resource: dict[str, Any], version: str | None, updated: str | None, **changes: Any
) -> dict[str, Any]:
    """A copy with ``meta.versionId`` / ``meta.lastUpdated`` (None leaves one out)."""
    return revise(resource, version=version, updated=updated, **changes)


def discharged_encounter() -> dict[str, Any]:
    """The core example stay, finished with disposition exp (discharge and death)."""
    return versioned(
        load("Encounter-example.json"),
        "3",
        "2024-05-01T12:00:00Z",
        status="finished",
        period={"start": "2024-04-28T14:05:00Z", "end": "2024-05-01T11:30:00Z"},
        hospitalization={"dischargeDisposition": {"coding": [{"code": "exp"}]}},
    )


def referral(status: str) -> dict[str, Any]:
    """ServiceRequest-myringotomy marked with SNOMED 3457005 (a referral)."""
    request = load("ServiceRequest-myringotomy.json")
    category = [REFERRAL, *request["category"]]
    return versioned(request, "1", "2024-05-01T08:00:00Z", status=status, category=category)


def engine_task(status: str) -> dict[str, Any]:
    """Task-example6 tagged as one of the engine's Tasks."""
    task = versioned(load("Task-example6.json"), "2", "2024-05-01T08:00:00Z", status=status)
    task["meta"]["tag"] = [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}]
    return task


# -- dispatch -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (lambda: load("Encounter-example.json"), ["admission"]),  # Encounter
        (
            lambda: versioned(load("Patient-example.json"), "1", None, deceasedBoolean=True),
            ["death"],
        ),
        (lambda: referral("active"), ["referral-placed"]),  # ServiceRequest
        (lambda: engine_task("failed"), ["task-failed"]),  # Task
        (lambda: load("Task-example6.json"), ["referral-closed"]),  # a fulfiller's Task
        (lambda: {"resourceType": "CarePlan", "id": "cp", "status": "active"}, []),  # not watched
        (lambda: {"id": "x", "status": "active"}, []),  # no resourceType at all
    ],
    ids=[
        "encounter",
        "patient",
        "service-request",
        "engine-task",
        "fulfiller-task",
        "careplan",
        "untyped",
    ],
)
def test_detect_dispatches_on_resource_type(resource: Any, expected: list[str]) -> None:
    """``detect`` hands each watched type to its detector and the server to all of them."""
    found = detect(None, resource(), CONTEXT)
    assert [t.kind.value for t in found] == expected
    assert all(t.server == SERVER for t in found)


def test_detect_without_a_context_uses_defaults() -> None:
    """With no context the defaults apply: no server, the SNOMED referral code, no groups."""
    found = detect(None, discharged_encounter())
    assert [t.kind.value for t in found] == ["discharge"]
    assert found[0].server == ""
    assert found[0].facts["disposition_group"] == "unknown"
    assert DetectContext().is_referral == ReferralMatcher()


def test_detect_context_takes_its_server_from_the_encounter_context() -> None:
    """``DetectContext.server`` is the encounter context's server."""
    assert CONTEXT.server == SERVER


# -- the same version twice -----------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        lambda: load("Encounter-example.json"),  # an admission
        lambda: load("Encounter-emerg.json"),  # an admission and a class transfer
        lambda: load("Encounter-f203.json"),  # a first-seen discharge
        discharged_encounter,  # a discharge and a death
        lambda: versioned(load("Encounter-example.json"), "4", None, status="cancelled"),
        lambda: versioned(load("Patient-example.json"), "1", None, deceasedBoolean=True),
        lambda: referral("active"),  # referral placed
        lambda: referral("completed"),  # referral closed
        lambda: engine_task("failed"),  # engine task failed
        lambda: engine_task("completed"),  # engine task completed
        lambda: load("Task-example6.json"),  # fulfiller task completed
    ],
    ids=[
        "admission",
        "ed-to-inpatient",
        "first-seen-finished",
        "discharge-death",
        "cancelled",
        "deceased",
        "referral-placed",
        "referral-closed",
        "task-failed",
        "task-completed",
        "fulfiller-completed",
    ],
)
def test_same_version_twice_yields_nothing(resource: Any) -> None:
    """``detect(v, v)`` finds no change for any resource, whatever ``v`` means on its own."""
    version = resource()
    assert detect(version, copy.deepcopy(version), CONTEXT) == []


def test_same_change_twice_gives_the_same_transitions_and_keys() -> None:
    """Detecting one change twice (a replay, a second worker) gives equal transitions."""
    before = versioned(load("Encounter-example.json"), "2", "2024-04-28T18:10:00Z")
    after = discharged_encounter()
    first, again = detect(before, after, CONTEXT), detect(before, after, CONTEXT)
    assert first == again
    assert [t.key for t in first] == ["discharge|Encounter/example", "death|Encounter/example"]
    assert {t.key for t in first} == {t.key for t in detect(None, after, CONTEXT)}


# -- ordering of versions -------------------------------------------------------------------


T1, T2 = "2024-05-01T08:00:00Z", "2024-05-01T09:00:00Z"


@pytest.mark.parametrize(
    ("before", "after", "newer"),
    [
        (("1", T1), ("2", T2), True),  # the next version
        (("2", T2), ("1", T1), False),  # an older version arriving late
        (("2", T2), ("2", T2), False),  # the same version again
        (("9", T1), ("10", T1), True),  # same instant: versionId compared as a number
        (("10", T1), ("9", T1), False),  # ... not as text
        (("1", T1), ("2", "2024-05-01T08:00:00.000+00:00"), True),  # same instant, other spelling
        (("5", T2), ("6", T1), False),  # lastUpdated decides over versionId
        (("1", None), ("2", None), True),  # no lastUpdated: versionId decides
        (("a1", None), ("b7", None), True),  # opaque versionIds that differ: process it
        (("a1", None), ("a1", None), False),  # the same opaque versionId
        ((None, T1), (None, T2), True),  # no versionId: lastUpdated decides
    ],
)
def test_is_newer(
    before: tuple[str | None, str | None], after: tuple[str | None, str | None], newer: bool
) -> None:
    """A version is processed only when it is later than the snapshot."""
    patient = load("Patient-example.json")
    old = versioned(patient, *before)
    new = versioned(patient, *after)
    assert is_newer(old, new) is newer


def test_anything_is_newer_than_no_snapshot() -> None:
    """The first version of a resource is always processed."""
    assert is_newer(None, load("Patient-example.json"))


def test_versions_without_meta_are_compared_by_content() -> None:
    """Resources pushed without meta (no versionId, no lastUpdated) cannot be ordered: a
    changed one is processed rather than dropped, an identical one is not."""
    alive = load("Patient-example.json")
    assert "meta" not in alive
    died = {**alive, "deceasedBoolean": True}
    assert is_newer(alive, died)
    assert not is_newer(alive, copy.deepcopy(alive))


def test_late_older_version_is_ignored_by_the_engine_flow() -> None:
    """The engine drops a late older version before detection: had it been compared, the
    stale in-progress version would read as a new admission."""
    admitted = versioned(load("Encounter-example.json"), "2", T1)
    discharged = discharged_encounter()
    assert not is_newer(discharged, admitted)
    assert [t.kind for t in detect(discharged, admitted, CONTEXT)] == [TransitionKind.ADMISSION]


@pytest.mark.parametrize(
    ("meta", "key"),
    [
        ({"versionId": "12", "lastUpdated": T1}, (datetime(2024, 5, 1, 8, tzinfo=UTC), 12)),
        ({"versionId": "W/abc"}, (None, "W/abc")),  # opaque versionId kept as text
        ({}, (None, "")),  # nothing known
    ],
)
def test_version_key(meta: dict[str, str], key: tuple[datetime | None, int | str]) -> None:
    """The ordering key is (lastUpdated, versionId as a number when it is one)."""
    assert version_key({"resourceType": "Patient", "meta": meta}) == key


# -- references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Patient/example", "Patient/example"),  # relative
        ({"reference": "Patient/example", "display": "Peter"}, "Patient/example"),  # Reference
        ("https://fhir.orionhealth.com/blaze/fhir/Patient/77662", "Patient/77662"),  # absolute
        ("Patient/example/_history/3", "Patient/example"),  # versioned
        ("https://ehr.example.org/fhir/Encounter/e1/_history/2", "Encounter/e1"),  # both
        ("Patient?identifier=urn:mrn|123", None),  # a conditional reference: no id
        ("Patient/", None),  # no id
        ("#pat", None),  # contained
        ("urn:uuid:06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b", None),  # bundle-local
        ({"display": "Peter"}, None),  # display only
        ("", None),  # empty
        (None, None),  # missing
    ],
)
def test_local_reference(value: Any, expected: str | None) -> None:
    """References become ``Type/id``, dropping base URL and ``_history``; others None."""
    assert local_reference(value) == expected
