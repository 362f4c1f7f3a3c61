"""The plain values that flow between the stages.

sources -> ``ResourceVersion`` -> store -> detect -> ``Transition`` -> rules -> ``Plan`` of
actions (``CreateTask``, ``CancelTasks``, ``CompleteTasks``) -> writeback.

All are frozen: easy to print, compare, hash and test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, ClassVar

import orjson

__all__ = [
    "ENGINE_SYSTEM",
    "ENGINE_TAG_CODE",
    "ENGINE_TAG_SYSTEM",
    "IDENTIFIER_SYSTEM",
    "TASK_CODE_SYSTEM",
    "Action",
    "CancelTasks",
    "CloseActivity",
    "CompleteCarePlan",
    "CompleteTasks",
    "CreateReferral",
    "CreateTask",
    "Plan",
    "RecordRisk",
    "ResourceVersion",
    "Stay",
    "Transition",
    "TransitionKind",
    "is_engine_resource",
    "parse_instant",
]

#: Base of every system URI the engine mints (identifiers, tags, code systems).
ENGINE_SYSTEM = "https://fhirbridge.dev/fhir"


def parse_instant(value: str | None) -> datetime | None:
    """Parse a FHIR instant/dateTime/date into an aware datetime.

    A date without a time becomes 12:00 UTC, so that its calendar date is the same in every
    facility time zone from UTC-11 to UTC+11 (midnight UTC would be the day before in the
    Americas).

    Returns None for None, an empty string, or a value that is not a FHIR date.
    """
    if not value or not isinstance(value, str):
        return None
    return _parse_instant(value)


@lru_cache(maxsize=8192)
def _parse_instant(value: str) -> datetime | None:
    if len(value) > 10 and value[10] == "T":
        try:  # the common case: a full instant (Python 3.11 reads the trailing Z)
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    text = value.strip()
    try:
        if len(text) == 4:
            text += "-01-01"
        elif len(text) == 7:
            text += "-01"
        if len(text) == 10:
            return datetime.fromisoformat(text + "T12:00:00+00:00")
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of one resource, as received from one server.

    ``raw`` keeps the bytes as they arrived; ``resource`` is the parsed JSON (not compared).
    ``version_id`` is ``meta.versionId``, or ``"h:"`` plus a content hash when the server
    omits it, so deduplication on ``(server, type, id, version_id)`` always works.
    """

    server: str
    resource_type: str
    id: str
    version_id: str
    last_updated: str | None
    raw: bytes = field(repr=False)
    resource: Mapping[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def reference(self) -> str:
        """The relative reference, ``Type/id``."""
        return f"{self.resource_type}/{self.id}"

    @staticmethod
    def parse_json(raw: bytes | str) -> Any:
        """Parse JSON bytes with orjson (1.6 to 3.3 times ``json.loads``'s speed on these
        FHIR resources, ``benchmarks/README.md``), falling back to ``json`` for what orjson
        refuses and ``json`` reads (``NaN``); an integer beyond 64 bits (never a FHIR
        integer) becomes the nearest float. Invalid JSON raises ``ValueError`` as
        ``json.loads`` does."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json.loads(raw)

    @classmethod
    def from_json(cls, server: str, data: bytes | str | Mapping[str, Any]) -> ResourceVersion:
        """Build from raw JSON bytes/str or an already parsed dict.

        Raises ValueError when the data is not a FHIR resource with a type and an id.
        """
        if isinstance(data, Mapping):
            resource: Any = data
            raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        else:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            resource = cls.parse_json(raw)
        if not isinstance(resource, Mapping):
            raise ValueError("not a JSON object")
        rtype = resource.get("resourceType")
        rid = resource.get("id")
        if not isinstance(rtype, str) or not rtype:
            raise ValueError("resourceType is missing")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"{rtype} has no id")
        meta = resource.get("meta") or {}
        version = meta.get("versionId") if isinstance(meta, Mapping) else None
        last_updated = meta.get("lastUpdated") if isinstance(meta, Mapping) else None
        if not version:
            version = "h:" + hashlib.sha256(raw).hexdigest()[:16]
        return cls(
            server=server,
            resource_type=rtype,
            id=rid,
            version_id=str(version),
            last_updated=str(last_updated) if last_updated else None,
            raw=raw,
            resource=resource,
        )


class TransitionKind(StrEnum):
    """The changes of care state the engine recognises."""

    ADMISSION = "admission"
    ED_VISIT = "ed-visit"
    ED_DISCHARGE = "ed-discharge"
    DISCHARGE = "discharge"
    TRANSFER = "transfer"
    DEATH = "death"
    READMISSION = "readmission"
    ENCOUNTER_CANCELLED = "encounter-cancelled"
    REFERRAL_PLACED = "referral-placed"
    REFERRAL_OVERDUE = "referral-overdue"
    REFERRAL_CLOSED = "referral-closed"
    TASK_OVERDUE = "task-overdue"
    TASK_FAILED = "task-failed"
    TASK_COMPLETED = "task-completed"
    COVERAGE_ACTIVE = "coverage-active"
    SOCIAL_NEED = "social-need"
    APPOINTMENT_NOSHOW = "appointment-noshow"
    CAREPLAN_REVIEW_DUE = "careplan-review-due"
    CAREPLAN_DONE = "careplan-done"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of care state, found by ``detect``.

    ``focus`` is the reference of the resource whose change this is (``Encounter/12``);
    ``discriminator`` tells apart several transitions of one kind on one focus (two
    transfers of one stay). ``facts`` holds what rules may test: ``encounter_class``,
    ``disposition_code``, ``disposition_group``, ``service_provider``, ...
    """

    kind: TransitionKind
    patient: str
    focus: str
    occurred_at: datetime
    encounter: str | None = None
    focus_version: str = ""
    discriminator: str = ""
    server: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """A stable identity: the same change seen twice has the same key."""
        parts = [self.kind.value, self.focus]
        if self.discriminator:
            parts.append(self.discriminator)
        return "|".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``fhirbridge plan --json`` prints)."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "patient": self.patient,
            "encounter": self.encounter,
            "focus": self.focus,
            "focus_version": self.focus_version,
            "occurred_at": self.occurred_at.isoformat(),
            "facts": dict(self.facts),
        }


@dataclass(frozen=True, slots=True)
class CreateTask:
    """Write one coordination Task (conditional create on ``identifier``)."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "create-task"

    rule_id: str
    action_id: str
    code: str
    display: str
    description: str
    priority: str
    due: date
    patient: str
    focus: str
    encounter: str | None
    owner: str | None
    owner_source: str
    identifier: str
    transition_key: str
    add_to_careplan: bool = True
    escalation: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "action": self.KIND,
            "rule": self.rule_id,
            "id": self.action_id,
            "code": self.code,
            "description": self.description,
            "priority": self.priority,
            "due": self.due.isoformat(),
            "patient": self.patient,
            "focus": self.focus,
            "encounter": self.encounter,
            "owner": self.owner,
            "owner_source": self.owner_source,
            "identifier": self.identifier,
            "add_to_careplan": self.add_to_careplan,
        }


@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Set the engine's open Tasks for a patient to cancelled: all of them, or only those of
    one ``encounter``, or only those whose ``focus`` is the given resource."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "cancel-tasks"

    rule_id: str
    patient: str
    encounter: str | None
    status: str
    reason: str
    transition_key: str
    focus: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "action": self.KIND,
            "rule": self.rule_id,
            "patient": self.patient,
            "encounter": self.encounter,
            "focus": self.focus,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class CompleteTasks:
    """Set the engine's open Tasks with the given focus (and, given ``code``, that engine
    Task code only) to completed."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "complete-tasks"

    rule_id: str
    focus: str
    reason: str
    transition_key: str
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out: dict[str, Any] = {
            "action": self.KIND,
            "rule": self.rule_id,
            "focus": self.focus,
            "reason": self.reason,
        }
        if self.code:
            out["code"] = self.code
        return out


@dataclass(frozen=True, slots=True)
class RecordRisk:
    """Write a readmission risk score: its Observation, then a RiskAssessment whose basis
    names it (both by conditional create on their identifiers)."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "record-risk"

    score: str
    tier: str
    total: int
    patient: str
    encounter: str
    identifier: str
    observation: Mapping[str, Any] = field(repr=False)
    risk_assessment: Mapping[str, Any] = field(repr=False)
    transition_key: str = ""
    rule_id: str = "risk"
    details: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``details``: items, missing inputs, unrecognised codes)."""
        row = {
            "action": self.KIND,
            "score": self.score,
            "total": self.total,
            "tier": self.tier,
            "patient": self.patient,
            "encounter": self.encounter,
            "identifier": self.identifier,
        }
        if self.details:
            row["details"] = dict(self.details)
        return row


@dataclass(frozen=True, slots=True)
class CloseActivity:
    """Mark the CarePlan activity that references ``task`` as done (the EHR completed it)."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "close-activity"

    task: str
    patient: str
    outcome: str
    transition_key: str = ""
    rule_id: str = "careplan"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"action": self.KIND, "task": self.task, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class CreateReferral:
    """Write a referral ServiceRequest to a community resource for a social need (Gravity
    SDOH Clinical Care), by conditional create on ``identifier``. The existing referral
    tracking then follows it: ``referral-placed`` plans its tracking Task."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "create-referral"

    rule_id: str
    action_id: str
    need: str
    display: str
    categories: tuple[tuple[str, str, str], ...]
    patient: str
    reason: str
    encounter: str | None
    occurrence: date
    performer: str | None
    identifier: str
    transition_key: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "action": self.KIND,
            "rule": self.rule_id,
            "id": self.action_id,
            "need": self.need,
            "description": self.display,
            "patient": self.patient,
            "reason": self.reason,
            "due": self.occurrence.isoformat(),
            "performer": self.performer,
            "identifier": self.identifier,
        }


@dataclass(frozen=True, slots=True)
class CompleteCarePlan:
    """Set the patient's transitional-care CarePlan to completed (If-Match), its work done."""

    #: The action's name in plans and outbox items.
    KIND: ClassVar[str] = "complete-careplan"

    rule_id: str
    careplan: str
    patient: str
    reason: str
    transition_key: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "action": self.KIND,
            "rule": self.rule_id,
            "careplan": self.careplan,
            "reason": self.reason,
        }


Action = (
    CreateTask
    | CancelTasks
    | CompleteTasks
    | RecordRisk
    | CloseActivity
    | CreateReferral
    | CompleteCarePlan
)


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions one transition produces, before anything is written."""

    transition: Transition
    actions: tuple[Action, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out = self.transition.as_dict()
        out["writes"] = [a.as_dict() for a in self.actions]
        if self.note:
            out["note"] = self.note
        return out


#: The ``meta.tag`` on everything the engine writes.
ENGINE_TAG_SYSTEM = f"{ENGINE_SYSTEM}/tag"
ENGINE_TAG_CODE = "fhirbridge"
#: The system of the deterministic identifiers the engine gives what it writes.
IDENTIFIER_SYSTEM = f"{ENGINE_SYSTEM}/identifier"
#: The engine's CodeSystem of coordination task codes.
TASK_CODE_SYSTEM = f"{ENGINE_SYSTEM}/CodeSystem/task-code"


def is_engine_resource(resource: Mapping[str, Any]) -> bool:
    """Whether a resource carries the engine's tag (so the engine wrote it)."""
    for tag in (resource.get("meta") or {}).get("tag") or ():
        if tag.get("system") == ENGINE_TAG_SYSTEM and tag.get("code") == ENGINE_TAG_CODE:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Stay:
    """An encounter of a patient as the journal knows it (for readmission look-back)."""

    server: str
    encounter: str
    patient: str
    encounter_class: str
    status: str
    start: datetime | None
    end: datetime | None
