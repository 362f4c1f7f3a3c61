"""Build the resources the engine writes: coordination Tasks, the transitional-care CarePlan,
and Provenance. Each is validated with ``fhir.resources`` (R4B models serve R4) and the
engine's profile before it is returned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.task import Task
from pydantic import ValidationError

from fhirbridge.errors import ProfileError
from fhirbridge.identity import UNIT_TAG_SYSTEM, careplan_identifier, identifier_query
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    IDENTIFIER_SYSTEM,
    TASK_CODE_SYSTEM,
    CreateTask,
)
from fhirbridge.writeback.profile import ensure

__all__ = [
    "ASSESS_PLAN",
    "CAREPLAN_CODE",
    "build_careplan",
    "build_provenance",
    "build_task",
    "careplan_identifier",
    "engine_tag",
    "identifier_query",
    "instant",
]

ASSESS_PLAN = {
    "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
    "code": "assess-plan",
}
CAREPLAN_CODE = {
    "system": TASK_CODE_SYSTEM.replace("task-code", "careplan-category"),
    "code": "transitional-care",
    "display": "Transitional care",
}


def engine_tag() -> dict[str, str]:
    """The ``meta.tag`` coding on everything the engine writes."""
    return {"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}


def instant(moment: datetime) -> str:
    """A FHIR instant as ``fhir.resources`` writes it (UTC as ``Z``)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, dict | list) and not value)


def _without_none(value: Any) -> Any:
    """FHIR JSON has no nulls and no empty arrays or objects: drop them (as a dump would)."""
    if isinstance(value, dict):
        pairs = ((k, _without_none(v)) for k, v in value.items())
        return {k: v for k, v in pairs if not _empty(v)}
    if isinstance(value, list):
        items = (_without_none(v) for v in value)
        return [v for v in items if not _empty(v)]
    return value


def _validated(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (JSON-ready, built here) once ``fhir.resources`` accepts it. The model is
    not dumped back: that costs as much again as validating and gives the same JSON."""
    data = _without_none(data)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProfileError(
            f"{data['resourceType']} is not valid FHIR: {where}: {first['msg']}"
        ) from exc
    return data


def build_task(
    action: CreateTask,
    *,
    authored_on: datetime,
    requester: str,
    careplan: str | None = None,
    codes: Mapping[str, str] | None = None,
    status: str = "requested",
) -> dict[str, Any]:
    """The coordination Task for ``action``, validated. ``codes`` maps code to display."""
    display = (codes or {}).get(action.code) or action.display
    data: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"tag": [engine_tag()]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": action.identifier}],
        "status": status,
        "intent": "order",
        "priority": action.priority,
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": action.code, "display": display}],
            "text": display,
        },
        "description": action.description,
        "focus": {"reference": action.focus},
        "for": {"reference": action.patient},
        "authoredOn": instant(authored_on),
        "lastModified": instant(authored_on),
        "requester": {"reference": requester},
        "restriction": {"period": {"end": action.due.isoformat()}},
        "note": [{"text": f"owner chosen by: {action.owner_source}; rule: {action.rule_id}"}],
    }
    if action.focus.startswith("ServiceRequest/"):
        # a Task about a request seeks its fulfilment (R4 task-code, as in Gravity's
        # referral management Task)
        data["code"]["coding"].append(
            {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}
        )
    if action.encounter:
        data["encounter"] = {"reference": action.encounter}
    if careplan:
        data["basedOn"] = [{"reference": careplan}]
    if action.owner:
        data["owner"] = {"reference": action.owner}
    if action.escalation:
        data["businessStatus"] = {"text": "escalation"}
    task = _validated(Task, data)
    ensure(task, "fhirbridge-coordination-task", extra_codes=_extra(codes))
    return task


def _extra(codes: Mapping[str, str] | None) -> Collection[str]:
    return tuple(codes or ())


def build_careplan(patient: str, *, created: datetime) -> dict[str, Any]:
    """A new, empty transitional-care CarePlan for ``patient``, validated."""
    data: dict[str, Any] = {
        "resourceType": "CarePlan",
        "meta": {"tag": [engine_tag()]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": careplan_identifier(patient)}],
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [ASSESS_PLAN]}, {"coding": [CAREPLAN_CODE]}],
        "title": "Transitional care",
        "description": "Coordination work after transitions of care, kept by fhirbridge.",
        "subject": {"reference": patient},
        "created": instant(created),
    }
    careplan = _validated(CarePlan, data)
    ensure(careplan, "fhirbridge-transitional-care-careplan")
    return careplan


def build_provenance(
    target: str | Sequence[str],
    *,
    recorded: datetime,
    agent: str,
    entities: Collection[str] = (),
    activity: str = "CREATE",
    reason: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """A Provenance naming the engine as agent for a write to ``target`` (one reference or
    several: every resource of a write unit). ``unit`` tags it with the unit's code
    (:func:`fhirbridge.identity.unit_tag`), the key a replay finds it by."""
    targets = [target] if isinstance(target, str) else list(target)
    tags = [engine_tag()]
    if unit:
        tags.append({"system": UNIT_TAG_SYSTEM, "code": unit})
    data: dict[str, Any] = {
        "resourceType": "Provenance",
        "meta": {"tag": tags},
        "target": [{"reference": ref} for ref in targets],
        "recorded": instant(recorded),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": activity,
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"reference": agent, "display": "fhirbridge"},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": ref}} for ref in entities],
    }
    if reason:
        data["reason"] = [{"text": reason}]
    return _validated(Provenance, data)
