"""Transitions read from Patient, ServiceRequest and Task versions.

- a Patient who becomes deceased gives ``death``;
- a referral ServiceRequest that becomes active gives ``referral-placed``; completed,
  revoked or entered in error gives ``referral-closed`` (with ``outcome``);
- a Task that fulfils a referral (``focus`` or ``basedOn`` it) and is completed gives
  ``referral-closed`` for that ServiceRequest;
- one of the engine's own Tasks that the EHR sets to rejected or failed gives
  ``task-failed``; completed gives ``task-completed``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, is_engine_resource, parse_instant

__all__ = [
    "REFERRAL_CODES",
    "ReferralMatcher",
    "detect_patient",
    "detect_service_request",
    "detect_task",
]

#: SNOMED CT "Patient referral" (3457005): the default marker of a referral.
REFERRAL_CODES = frozenset({("http://snomed.info/sct", "3457005")})
OPEN_TASK = frozenset(
    {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)


def _updated(resource: Mapping[str, Any]) -> datetime:
    meta = resource.get("meta") or {}
    return parse_instant(meta.get("lastUpdated")) or datetime.now(UTC)


def _version(resource: Mapping[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def _codings(resource: Mapping[str, Any], *fields: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name in fields:
        value = resource.get(name)
        concepts = value if isinstance(value, list) else [value]
        for concept in concepts:
            if not isinstance(concept, Mapping):
                continue
            for coding in concept.get("coding") or ():
                if coding.get("code"):
                    found.add((str(coding.get("system") or ""), str(coding["code"])))
    return found


@dataclass(frozen=True, slots=True)
class ReferralMatcher:
    """Which ServiceRequests are referrals: any category or code coding in ``codes``."""

    codes: Collection[tuple[str, str]] = REFERRAL_CODES

    def __call__(self, resource: Mapping[str, Any]) -> bool:
        """True when the ServiceRequest is a referral."""
        return bool(_codings(resource, "category", "code") & set(self.codes))


def detect_patient(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], *, server: str = ""
) -> list[Transition]:
    """``death`` when the Patient becomes deceased (boolean true or a date)."""

    def deceased(resource: Mapping[str, Any] | None) -> bool:
        if resource is None:
            return False
        return resource.get("deceasedBoolean") is True or bool(resource.get("deceasedDateTime"))

    if not deceased(after) or deceased(before):
        return []
    patient = f"Patient/{after.get('id')}"
    when = parse_instant(after.get("deceasedDateTime")) or _updated(after)
    return [
        Transition(
            kind=TransitionKind.DEATH,
            patient=patient,
            focus=patient,
            occurred_at=when,
            focus_version=_version(after),
            server=server,
            facts={"source": "patient"},
        )
    ]


def detect_service_request(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    server: str = "",
    is_referral: ReferralMatcher | None = None,
) -> list[Transition]:
    """``referral-placed`` and ``referral-closed`` for referral ServiceRequests."""
    matcher = is_referral or ReferralMatcher()
    if not matcher(after):
        return []
    patient = local_reference(after.get("subject"))
    if patient is None:
        return []
    status = str(after.get("status") or "")
    previous = str(before.get("status") or "") if before is not None else None
    focus = f"ServiceRequest/{after.get('id')}"
    due = after.get("occurrenceDateTime") or (after.get("occurrencePeriod") or {}).get("end")
    facts: dict[str, Any] = {
        "status": status,
        "due": due,
        "requester": local_reference(after.get("requester")),
        "performer": local_reference((after.get("performer") or [None])[0]),
        "codes": sorted(f"{s}|{c}" for s, c in _codings(after, "code")),
    }
    base: dict[str, Any] = {
        "patient": patient,
        "focus": focus,
        "encounter": local_reference(after.get("encounter")),
        "focus_version": _version(after),
        "server": server,
    }
    if status == "active" and previous != "active":
        when = parse_instant(after.get("authoredOn")) or _updated(after)
        return [
            Transition(kind=TransitionKind.REFERRAL_PLACED, occurred_at=when, facts=facts, **base)
        ]
    closing = {"completed": "completed", "revoked": "cancelled", "entered-in-error": "cancelled"}
    if status in closing and previous not in closing:
        return [
            Transition(
                kind=TransitionKind.REFERRAL_CLOSED,
                occurred_at=_updated(after),
                facts={**facts, "outcome": closing[status]},
                **base,
            )
        ]
    return []


def detect_task(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], *, server: str = ""
) -> list[Transition]:
    """Transitions of the engine's own Tasks and of Tasks fulfilling a referral."""
    status = str(after.get("status") or "")
    previous = str(before.get("status") or "") if before is not None else None
    if status == previous:
        return []
    patient = local_reference(after.get("for"))
    if patient is None:
        return []
    task = f"Task/{after.get('id')}"
    common: dict[str, Any] = {
        "patient": patient,
        "encounter": local_reference(after.get("encounter")),
        "focus_version": _version(after),
        "server": server,
    }
    facts = {
        "status": status,
        "task_focus": local_reference(after.get("focus")),
        "owner": local_reference(after.get("owner")),
        "code": next(iter(sorted(c for _, c in _codings(after, "code"))), None),
        "due": (after.get("restriction") or {}).get("period", {}).get("end"),
    }
    if is_engine_resource(after):
        if status in ("rejected", "failed") and (previous is None or previous in OPEN_TASK):
            kind = TransitionKind.TASK_FAILED
        elif status == "completed" and previous != "completed":
            kind = TransitionKind.TASK_COMPLETED
        else:
            return []
        return [
            Transition(kind=kind, focus=task, occurred_at=_updated(after), facts=facts, **common)
        ]
    # a fulfiller's Task for a referral
    if status != "completed":
        return []
    targets = [local_reference(after.get("focus"))]
    targets += [local_reference(ref) for ref in after.get("basedOn") or ()]
    referrals = sorted({t for t in targets if t and t.startswith("ServiceRequest/")})
    return [
        Transition(
            kind=TransitionKind.REFERRAL_CLOSED,
            focus=referral,
            occurred_at=_updated(after),
            discriminator=f"task:{task}",
            facts={**facts, "outcome": "completed", "fulfilled_by": task},
            **common,
        )
        for referral in referrals
    ]
