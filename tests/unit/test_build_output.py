"""What the builders send is what ``fhir.resources`` would have written: they validate with
the models but no longer dump them back (a cost as large as the validation)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.task import Task

from fhirbridge.errors import ProfileError
from fhirbridge.values import CreateTask
from fhirbridge.writeback.build import build_careplan, build_provenance, build_task

ACTION = CreateTask(
    rule_id="discharge-community-contact",
    action_id="tcm-contact",
    code="tcm-contact",
    display="TCM interactive contact",
    description="Contact the patient",
    priority="routine",
    due=date(2026, 1, 2),
    patient="Patient/p",
    focus="ServiceRequest/r",
    encounter="Encounter/e",
    owner="Practitioner/x",
    owner_source="care-team",
    identifier="abc",
    transition_key="discharge|Encounter/e",
    escalation=True,
)


def _round_trip(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_validate(data).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    return dumped


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),  # UTC with microseconds: "Z"
        datetime(2026, 1, 1, 7, 0, tzinfo=ZoneInfo("America/New_York")),  # an offset kept
    ],
)
def test_built_resources_equal_the_model_dump(moment: datetime) -> None:
    """Task, CarePlan and Provenance come out exactly as the model would dump them."""
    task = build_task(ACTION, authored_on=moment, requester="Device/x", careplan="CarePlan/c")
    assert task == _round_trip(Task, task)
    careplan = build_careplan("Patient/p", created=moment)
    assert careplan == _round_trip(CarePlan, careplan)
    provenance = build_provenance(
        ["Task/1", "urn:uuid:1"], recorded=moment, agent="Device/x", reason="r", unit="u"
    )
    assert provenance == _round_trip(Provenance, provenance)
    assert provenance["meta"]["tag"][1]["code"] == "u"


def test_an_invalid_resource_is_still_refused() -> None:
    """Validation still runs: a Task with a bad priority never leaves."""
    bad = dataclasses.replace(ACTION, priority="whenever")
    with pytest.raises(ProfileError):
        build_task(bad, authored_on=datetime(2026, 1, 1, tzinfo=UTC), requester="Device/x")
