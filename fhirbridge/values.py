"""The plain values that flow between the stages.

sources -> ``ResourceVersion`` -> store -> detect -> ``Transition`` -> rules -> ``Plan`` of
actions (``CreateTask``, ``CancelTasks``, ``CompleteTasks``) -> writeback.

All are frozen: easy to print, compare, hash and test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import msgspec
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
    "LazyResource",
    "Plan",
    "RecordRisk",
    "ResourceVersion",
    "Stay",
    "Transition",
    "TransitionKind",
    "is_engine_resource",
    "lazy_resource",
    "narrow_decode",
    "parse_instant",
    "parse_json",
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


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON bytes with orjson (1.6 to 3.3 times ``json.loads``'s speed on these FHIR
    resources, ``benchmarks/README.md``), falling back to ``json`` for what orjson refuses
    and ``json`` reads (``NaN``); an integer beyond 64 bits (never a FHIR integer) becomes
    the nearest float. Invalid JSON raises ``ValueError`` as ``json.loads`` does."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class _Meta(msgspec.Struct, gc=False):
    versionId: Any = None
    lastUpdated: Any = None


#: The members of a resource that :class:`LazyResource` answers without parsing the rest:
#: the patient references that lanes and the journal's lane key read.
HEAD_FIELDS = ("subject", "patient", "for", "beneficiary", "individual")


#: A member the resource does not have (a present one is never empty JSON).
_ABSENT = msgspec.Raw()


class _Head(msgspec.Struct, gc=False, rename={"for_": "for"}):
    """What ``from_json`` reads of every resource; the rest is skipped, not built."""

    resourceType: Any = None
    id: Any = None
    meta: _Meta | None = None
    subject: msgspec.Raw = _ABSENT
    patient: msgspec.Raw = _ABSENT
    for_: msgspec.Raw = _ABSENT
    beneficiary: msgspec.Raw = _ABSENT
    individual: msgspec.Raw = _ABSENT

    def parts(self) -> dict[str, msgspec.Raw]:
        """The undecoded patient references present in the resource."""
        found = {
            "subject": self.subject,
            "patient": self.patient,
            "for": self.for_,
            "beneficiary": self.beneficiary,
            "individual": self.individual,
        }
        return {name: part for name, part in found.items() if len(part)}


_HEAD = msgspec.json.Decoder(_Head)


class LazyResource(Mapping[str, Any]):
    """A resource's JSON object, parsed from its bytes the first time a member is read.

    The patient references (:data:`HEAD_FIELDS`) come from a first, narrow decode and do not
    parse the rest: a version that only needs its lane and its projection (an Encounter,
    projected from the bytes) never builds the whole dict. Reading anything else parses the
    bytes once (:func:`parse_json`) and answers from the dict.
    """

    __slots__ = ("_data", "_parts", "_raw")

    def __init__(self, raw: bytes, parts: Mapping[str, msgspec.Raw]) -> None:
        self._raw = raw
        self._parts: dict[str, Any] = dict(parts)
        self._data: dict[str, Any] | None = None

    @property
    def parsed(self) -> bool:
        """Whether the whole object has been parsed."""
        return self._data is not None

    def _dict(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            data = self._data = parse_json(self._raw)
        return data

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when the resource has no such member."""
        if self._data is None and key in HEAD_FIELDS:
            if key not in self._parts:
                return default
            part = self._parts[key]
            if isinstance(part, msgspec.Raw):
                part = self._parts[key] = parse_json(bytes(part))
            return part
        return self._dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __contains__(self, key: object) -> bool:
        if self._data is None and key in HEAD_FIELDS:
            return key in self._parts
        return key in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyResource):
            other = other._dict()
        return self._dict() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyResource({self._dict()!r})"


_Decoded = TypeVar("_Decoded")


def narrow_decode(decoder: msgspec.json.Decoder[_Decoded], raw: bytes) -> _Decoded | None:
    """``decoder.decode(raw)``: the few members a typed struct names, the rest skipped; None
    where the caller must parse ``raw`` whole to judge it as the full parse does. That is when
    msgspec refuses it (not an object, a member of an unusual type, not JSON), when ``raw``
    is not UTF-8 throughout (msgspec does not check the members it skips), and when it nests
    deeper than msgspec can follow from this call's stack (its limit is the recursion limit
    left, the full parse's a fixed depth)."""
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def _head(raw: bytes) -> _Head | None:
    """The narrow decode of ``raw``; None when it is not a plain object of the usual types
    (the caller then parses it whole and judges it as before)."""
    return narrow_decode(_HEAD, raw)


def lazy_resource(raw: bytes) -> Mapping[str, Any]:
    """The JSON object of ``raw`` as a :class:`LazyResource` (parsed at once when the
    narrow decode cannot read it; ``ValueError`` then if it is not JSON)."""
    head = _head(raw)
    return LazyResource(raw, head.parts()) if head is not None else parse_json(raw)


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of one resource, as received from one server.

    ``raw`` keeps the bytes as they arrived; ``resource`` is the parsed JSON (not compared),
    a :class:`LazyResource` when the version was built from bytes: what reads it parses it.
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

    parse_json = staticmethod(parse_json)

    @classmethod
    def from_json(cls, server: str, data: bytes | str | Mapping[str, Any]) -> ResourceVersion:
        """Build from raw JSON bytes/str or an already parsed dict.

        From bytes, only the type, id, ``meta`` and patient references are decoded here; the
        resource is parsed when something reads it (:class:`LazyResource`).

        Raises ValueError when the data is not a FHIR resource with a type and an id.
        """
        if isinstance(data, Mapping):
            resource: Any = data
            raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        else:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            head = _head(raw)
            if head is not None and type(head.resourceType) is str and type(head.id) is str:
                version = cls._from_head(server, raw, head)
                if version is not None:
                    return version
            resource = parse_json(raw)
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
        return cls._built(server, rtype, rid, version, last_updated, raw, resource)

    @classmethod
    def _from_head(cls, server: str, raw: bytes, head: _Head) -> ResourceVersion | None:
        """What :meth:`from_json` builds from the narrow decode; None for what the whole
        parse must judge (no type or id, or a ``meta`` that is no object)."""
        if not head.resourceType or not head.id:
            return None
        meta = head.meta
        return cls._built(
            server,
            head.resourceType,
            head.id,
            meta.versionId if meta is not None else None,
            meta.lastUpdated if meta is not None else None,
            raw,
            LazyResource(raw, head.parts()),
        )

    @classmethod
    def _built(
        cls,
        server: str,
        rtype: str,
        rid: str,
        version: Any,
        last_updated: Any,
        raw: bytes,
        resource: Mapping[str, Any],
    ) -> ResourceVersion:
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
    _key: str = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # the key is read several times per transition (journal, outbox, plans): made once
        kind = TransitionKind(self.kind)
        parts = (
            [kind.value, self.focus, self.discriminator]
            if self.discriminator
            else [
                kind.value,
                self.focus,
            ]
        )
        object.__setattr__(self, "_key", "|".join(parts))

    @property
    def key(self) -> str:
        """A stable identity: the same change seen twice has the same key."""
        return self._key

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
