"""Timer transitions: the engine's open Tasks past their due date (pure).

``overdue_transition(task, today)`` reads one of the engine's Tasks as the server holds it
and says whether it is overdue, and as what: ``referral-overdue`` for a referral's tracking
Task (focus the ServiceRequest), ``task-overdue`` otherwise. Escalations do not cascade.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import Transition, TransitionKind, parse_instant

__all__ = ["overdue_transition"]


def overdue_transition(
    task: Mapping[str, Any], today: date, *, server: str = ""
) -> Transition | None:
    """The timer transition of one of the engine's open Tasks, if it is past due (pure)."""
    due_text = ((task.get("restriction") or {}).get("period") or {}).get("end")
    due = parse_instant(due_text)
    patient = local_reference(task.get("for"))
    if due is None or patient is None or due.date() >= today:
        return None
    if (task.get("businessStatus") or {}).get("text") == "escalation":
        return None  # an escalation is already the last step: it does not cascade
    code = next(
        (c.get("code") for c in (task.get("code") or {}).get("coding") or () if c.get("code")),
        None,
    )
    ref = f"Task/{task['id']}"
    focus = local_reference(task.get("focus"))
    facts = {
        "code": code,
        "due": due_text,
        "status": task.get("status"),
        "owner": local_reference(task.get("owner")),
        "overdue_task": ref,
        "priority": task.get("priority"),
    }
    occurred = datetime.combine(due.date() + timedelta(days=1), time.min, tzinfo=UTC)
    # a referral's tracking Task past due means the referral is overdue
    referral = code == "referral-tracking" and focus and focus.startswith("ServiceRequest/")
    return Transition(
        kind=TransitionKind.REFERRAL_OVERDUE if referral else TransitionKind.TASK_OVERDUE,
        patient=patient,
        focus=focus if referral and focus else ref,
        occurred_at=occurred,
        encounter=local_reference(task.get("encounter")),
        server=server,
        facts=facts,
    )
