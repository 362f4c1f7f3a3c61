"""Outgoing resources are checked against the engine's profiles before they leave."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.structuredefinition import StructureDefinition

from fhirbridge.errors import ProfileError
from fhirbridge.rules import load_rules
from fhirbridge.values import CreateTask
from fhirbridge.writeback.build import build_careplan, build_task
from fhirbridge.writeback.profile import check, ensure, load_profile, profiles_dir

NOW = datetime(2026, 12, 24, 20, 0, tzinfo=UTC)


def _action(**changes: object) -> CreateTask:
    fields: dict[str, object] = {
        "rule_id": "discharge-community-contact",
        "action_id": "contact",
        "code": "tcm-contact",
        "display": "Interactive contact within 2 business days",
        "description": "Contact the patient.",
        "priority": "routine",
        "due": date(2026, 12, 29),
        "patient": "Patient/p1",
        "focus": "Encounter/e1",
        "encounter": "Encounter/e1",
        "owner": "Practitioner/cm",
        "owner_source": "care-team:case-manager",
        "identifier": "0" * 32,
        "transition_key": "discharge|Encounter/e1",
    }
    fields.update(changes)
    return CreateTask(**fields)  # type: ignore[arg-type]


def test_shipped_profiles_are_valid_fhir() -> None:
    """Every StructureDefinition and CodeSystem in profiles/ validates as R4 (R4B models)."""
    for path in sorted(profiles_dir().glob("*.json")):
        data = json.loads(path.read_text())
        if data["resourceType"] == "StructureDefinition":
            StructureDefinition.model_validate(data)
        elif data["resourceType"] == "CodeSystem":
            CodeSystem.model_validate(data)


def test_task_code_system_lists_every_code_of_the_shipped_pack() -> None:
    """The task-code CodeSystem and the shipped rule pack's codes agree."""
    data = json.loads((profiles_dir() / "CodeSystem-fhirbridge-task-code.json").read_text())
    assert {c["code"] for c in data["concept"]} == set(load_rules().codes)


def test_a_built_task_conforms() -> None:
    """A Task built for a planned action passes its profile."""
    task = build_task(
        _action(), authored_on=NOW, requester="Device/fhirbridge", careplan="CarePlan/c"
    )
    assert check(task, load_profile("fhirbridge-coordination-task")) == []
    assert task["restriction"]["period"]["end"] == "2026-12-29"


def test_a_referral_tracking_task_also_says_fulfill() -> None:
    """A Task whose focus is a ServiceRequest carries task-code fulfill beside the engine code."""
    task = build_task(
        _action(code="referral-tracking", focus="ServiceRequest/s1"),
        authored_on=NOW,
        requester="Device/fhirbridge",
    )
    systems = {(c["system"], c["code"]) for c in task["code"]["coding"]}
    assert ("http://hl7.org/fhir/CodeSystem/task-code", "fulfill") in systems


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: t.pop("owner") and t.pop("requester"), "Task.requester"),  # required element
        (lambda t: t.update(intent="plan"), "Task.intent"),  # fixed code
        (lambda t: t.update(priority="whenever"), "Task.priority"),  # required binding
        (lambda t: t["code"]["coding"][0].update(code="made-up"), "Task.code"),  # unknown code
        (lambda t: t["meta"].update(tag=[]), "Task.meta.tag"),  # the engine tag
        (lambda t: t["restriction"]["period"].pop("end"), "restriction.period.end"),  # no due
    ],
)
def test_a_task_that_breaks_the_profile_is_refused(mutate: object, problem: str) -> None:
    """Each kind of violation is named, and `ensure` refuses to let the Task leave."""
    task = build_task(_action(), authored_on=NOW, requester="Device/fhirbridge")
    mutate(task)  # type: ignore[operator]
    problems = check(task, load_profile("fhirbridge-coordination-task"))
    assert any(problem in p for p in problems), problems
    with pytest.raises(ProfileError):
        ensure(task, "fhirbridge-coordination-task")


def test_a_built_careplan_conforms() -> None:
    """The transitional-care CarePlan carries assess-plan, the engine tag and an identifier."""
    careplan = build_careplan("Patient/p1", created=NOW)
    assert check(careplan, load_profile("fhirbridge-transitional-care-careplan")) == []
    careplan["category"] = careplan["category"][1:]
    assert check(careplan, load_profile("fhirbridge-transitional-care-careplan"))
