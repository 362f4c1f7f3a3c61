"""Monitoring at intervals: the transitional-care CarePlan's periodic review, and its end
(pure timer detection, run by the same sweep as overdue escalation).

``review_transition(careplan, tasks, tier, today, intervals)``: while the CarePlan is active,
its life is cut into periods of ``interval`` days (by the patient's latest risk tier) from
the day it was created; period ``k`` owes one review due on its last day. A review is planned
when none is open and period ``k`` has none yet; the transition's key names the period, so a
restart (or a second sweep) plans the same review, never a second one.

``done_transition(careplan, tasks)``: every activity of an active CarePlan is completed or
cancelled (reviews aside: they are the monitoring, not the plan's work) -> ``careplan-done``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, parse_instant

__all__ = [
    "CLOSED_TASK",
    "REVIEW_CODE",
    "done_transition",
    "review_interval",
    "review_transition",
]

#: The engine Task code of a care-plan review (the shipped pack defines it).
REVIEW_CODE = "careplan-review"
#: Task statuses that count as done for a CarePlan activity.
CLOSED_TASK = frozenset({"completed", "cancelled", "entered-in-error"})
_CLOSED_DETAIL = frozenset({"completed", "cancelled", "stopped", "entered-in-error"})
_CLOSED_REQUEST = frozenset({"completed", "revoked", "entered-in-error"})
_OPEN_TASK = frozenset(
    {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)
_TIER_NAMES = {"intermediate": "moderate"}


def _code(task: Mapping[str, Any]) -> str | None:
    for coding in (task.get("code") or {}).get("coding") or ():
        if coding.get("code"):
            return str(coding["code"])
    return None


def _due(task: Mapping[str, Any]) -> str | None:
    return ((task.get("restriction") or {}).get("period") or {}).get("end")


def review_interval(tier: str | None, intervals: Mapping[str, int]) -> int:
    """Days between reviews for a risk tier (``intermediate`` reads as ``moderate``; a tier
    the table lacks takes ``unknown``, then ``low``, then 30)."""
    name = _TIER_NAMES.get(tier or "", tier or "unknown")
    for key in (name, tier or "", "unknown", "low"):
        if key in intervals:
            return int(intervals[key])
    return 30


def _anchor(careplan: Mapping[str, Any]) -> date | None:
    created = parse_instant(careplan.get("created")) or parse_instant(
        (careplan.get("period") or {}).get("start")
    )
    created = created or parse_instant((careplan.get("meta") or {}).get("lastUpdated"))
    return created.date() if created is not None else None


def review_transition(
    careplan: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    *,
    tier: str | None,
    today: date,
    intervals: Mapping[str, int],
    server: str = "",
) -> Transition | None:
    """The review the CarePlan owes now, if any (see the module docstring)."""
    patient = local_reference(careplan.get("subject"))
    anchor = _anchor(careplan)
    if careplan.get("status") != "active" or patient is None or anchor is None:
        return None
    reviews = [t for t in tasks if _code(t) == REVIEW_CODE]
    if any(t.get("status") in _OPEN_TASK for t in reviews):
        return None  # one open at a time
    interval = review_interval(tier, intervals)
    period = max(0, (today - anchor).days) // interval
    due = anchor + timedelta(days=(period + 1) * interval)
    if any(_due(t) == due.isoformat() for t in reviews):
        return None  # this period's review exists (done early)
    ref = f"CarePlan/{careplan.get('id')}"
    start = anchor + timedelta(days=period * interval)
    return Transition(
        kind=TransitionKind.CAREPLAN_REVIEW_DUE,
        patient=patient,
        focus=ref,
        occurred_at=datetime.combine(start, time(12), tzinfo=UTC),
        discriminator=f"every-{interval}d-{period}",
        server=server,
        facts={
            "due": due.isoformat(),
            "interval_days": interval,
            "period": period,
            "tier": tier or "unknown",
        },
    )


def _activity_done(activity: Mapping[str, Any], status_of: Mapping[str, str]) -> bool:
    detail = activity.get("detail")
    if isinstance(detail, Mapping):
        return detail.get("status") in _CLOSED_DETAIL
    ref = local_reference(activity.get("reference"))
    if ref is None:
        return False
    status = status_of.get(ref)
    if ref.startswith("Task/"):
        return status in CLOSED_TASK
    return status in _CLOSED_REQUEST


def done_transition(
    careplan: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    *,
    today: date,
    server: str = "",
) -> Transition | None:
    """``careplan-done`` when every activity of an active CarePlan is done (see above)."""
    patient = local_reference(careplan.get("subject"))
    if careplan.get("status") != "active" or patient is None:
        return None
    known = {f"{t.get('resourceType', 'Task')}/{t.get('id')}": t for t in tasks}
    status_of = {ref: str(t.get("status") or "") for ref, t in known.items()}
    work = [
        a
        for a in careplan.get("activity") or ()
        if _code(known.get(local_reference(a.get("reference")) or "", {})) != REVIEW_CODE
    ]
    if not work or not all(_activity_done(a, status_of) for a in work):
        return None
    meta = careplan.get("meta") or {}
    version = str(meta.get("versionId") or "")
    return Transition(
        kind=TransitionKind.CAREPLAN_DONE,
        patient=patient,
        focus=f"CarePlan/{careplan.get('id')}",
        occurred_at=datetime.combine(today, time(12), tzinfo=UTC),
        focus_version=version,
        discriminator=version,
        server=server,
        facts={"activities": len(work)},
    )
