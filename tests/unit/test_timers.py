"""The sweep's pure part: which of the engine's open Tasks are overdue, and as what."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhirbridge.detect import overdue_transition
from fhirbridge.testing.builders import task as build_task
from fhirbridge.values import TransitionKind

TODAY = date(2026, 12, 1)


def task(**changes: Any) -> dict[str, Any]:
    """An open engine Task of Encounter/e1 owned by Practitioner/cm, due on 30 Nov 2026."""
    return build_task(**{"focus": "e1", "owner": "cm", "due": "2026-11-30", **changes})


def test_a_task_past_its_due_date_is_task_overdue() -> None:
    """Due yesterday: a task-overdue transition keyed on the Task, dated the day after due."""
    transition = overdue_transition(task(), TODAY)
    assert transition is not None
    assert transition.kind is TransitionKind.TASK_OVERDUE
    assert transition.key == "task-overdue|Task/t1"
    assert transition.occurred_at.date() == date(2026, 12, 1)
    assert transition.facts["owner"] == "Practitioner/cm"


@pytest.mark.parametrize(
    "changes",
    [
        {"restriction": {"period": {"end": "2026-12-01"}}},  # due today: not late yet
        {"restriction": {}},  # no due date
        {"businessStatus": {"text": "escalation"}},  # escalations do not cascade
        {"for": None},  # no patient
    ],
)
def test_tasks_that_are_not_overdue(changes: dict[str, Any]) -> None:
    """Nothing to escalate for these."""
    assert overdue_transition(task(**changes), TODAY) is None


def test_an_overdue_referral_tracking_task_is_referral_overdue() -> None:
    """A referral's tracking Task past due raises referral-overdue on the ServiceRequest."""
    transition = overdue_transition(
        task(
            code="referral-tracking",
            focus="ServiceRequest/s1",
        ),
        TODAY,
    )
    assert transition is not None
    assert transition.kind is TransitionKind.REFERRAL_OVERDUE
    assert transition.focus == "ServiceRequest/s1"


def test_the_key_does_not_depend_on_when_the_sweep_runs() -> None:
    """Sweeping late gives the same transition key, so the escalation is planned once."""
    early = overdue_transition(task(), TODAY)
    late = overdue_transition(task(), date(2027, 3, 1))
    assert early is not None and late is not None
    assert early.key == late.key
