"""Builders shared by the Encounter detection tests (test_detect_encounter.py and
test_detect_transfer.py): the detection context, fixture loading, Da Vinci notification
Encounters, revised versions, codings and the transition pickers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhirbridge.detect import EncounterContext
from fhirbridge.detect.projection import resolve_references
from fhirbridge.rules.dispositions import disposition_group
from fhirbridge.testing import builders
from fhirbridge.testing.builders import ACT_CODE
from fhirbridge.testing.builders import DISCHARGE_DISPOSITION as DISPOSITION
from fhirbridge.values import Transition, TransitionKind
from tests.unit._data import load

SERVER = "https://ehr.example.org/fhir"
NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
CTX = EncounterContext(server=SERVER, disposition_group=disposition_group, now=NOW)

NUBC = "http://terminology.hl7.org/CodeSystem/nubc-UB92"

# Encounter.period of a stay under way and of the same stay once discharged
ADMITTED = {"start": "2024-04-28T14:05:00-04:00"}
DISCHARGED = {"start": "2024-04-28T14:05:00-04:00", "end": "2024-05-01T11:30:00-04:00"}


def davinci(event: str) -> dict[str, Any]:
    """The Encounter of a Da Vinci notification Bundle (admit, transfer or discharge), with its
    ``urn:uuid:`` references resolved to ``Type/id`` as a $process-message receiver stores it."""
    bundle = load(f"davinci-{event}-notification-message-bundle-01.json")
    ids = {
        entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        for entry in bundle["entry"]
    }
    encounter = next(
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Encounter"
    )
    resolved: dict[str, Any] = resolve_references(encounter, ids)
    return resolved


def revise(resource: dict[str, Any], version: int | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of ``resource`` with top-level fields replaced (``None`` removes one; a trailing
    underscore is dropped, so ``class_`` sets ``class``) and, given ``version``, a new
    ``meta.versionId`` with a ``lastUpdated`` that many minutes after 2024-05-01T08:00Z."""
    updated = f"2024-05-01T08:{version:02d}:00Z" if version is not None else None
    return builders.revise(resource, version=version, updated=updated, **changes)


def coding(code: str, system: str = ACT_CODE) -> dict[str, str]:
    """A Coding (Encounter.class is a Coding in R4)."""
    return {"system": system, "code": code}


def disposition(code: str, system: str = DISPOSITION) -> dict[str, Any]:
    """An Encounter.hospitalization with only a discharge disposition."""
    return {"dischargeDisposition": {"coding": [{"system": system, "code": code}]}}


def inpatient(**changes: Any) -> dict[str, Any]:
    """The core example inpatient stay (IMP, in-progress, Patient/example) with changes."""
    return revise(load("Encounter-example.json"), **changes)


def kinds(transitions: list[Transition]) -> list[str]:
    """The transition kinds, in the order detection reported them."""
    return [t.kind.value for t in transitions]


def only(transitions: list[Transition], kind: TransitionKind) -> Transition:
    """The one transition of ``kind``."""
    found = [t for t in transitions if t.kind is kind]
    assert len(found) == 1, kinds(transitions)
    return found[0]
