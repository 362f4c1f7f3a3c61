"""The kind each action type names itself by: stored in outbox items, printed in plans."""

from __future__ import annotations

from typing import get_args

from fhirbridge.values import (
    Action,
    CancelTasks,
    CloseActivity,
    CompleteCarePlan,
    CompleteTasks,
    CreateReferral,
    CreateTask,
    RecordRisk,
)


def test_every_action_type_has_its_stored_kind() -> None:
    """The kinds are pinned: pending outbox items written by an earlier release carry them."""
    kinds = {cls: cls.KIND for cls in get_args(Action)}
    assert kinds == {
        CreateTask: "create-task",
        CancelTasks: "cancel-tasks",
        CompleteTasks: "complete-tasks",
        RecordRisk: "record-risk",
        CloseActivity: "close-activity",
        CreateReferral: "create-referral",
        CompleteCarePlan: "complete-careplan",
    }


def test_a_plan_names_the_kind_it_stores() -> None:
    """``as_dict`` (what ``fhirbridge plan`` prints) shows the same kind as the outbox."""
    cancel = CancelTasks(
        rule_id="r",
        patient="Patient/1",
        encounter=None,
        status="cancelled",
        reason="x",
        transition_key="k",
    )
    close = CloseActivity(task="Task/1", patient="Patient/1", outcome="completed")
    for action in (cancel, close):
        assert action.as_dict()["action"] == action.KIND
