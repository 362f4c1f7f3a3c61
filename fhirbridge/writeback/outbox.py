"""Actions to outbox items and back: what a plan owes the server, durably."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from typing import Any, get_args

from fhirbridge.store.base import OutboxItem
from fhirbridge.values import (
    Action,
    CloseActivity,
    CreateReferral,
    CreateTask,
    RecordRisk,
    Transition,
)

__all__ = ["action_from_payload", "outbox_item"]

#: Every action type by the kind its outbox items carry.
_KINDS: dict[str, type[Any]] = {cls.KIND: cls for cls in get_args(Action)}


def outbox_item(action: Action, transition: Transition) -> OutboxItem:
    """The outbox item for one planned action; its key makes a second enqueue a no-op."""
    kind = action.KIND
    # shallow: every field is a plain value or a JSON-ready mapping (asdict deep-copies)
    fields = {f.name: getattr(action, f.name) for f in dataclasses.fields(action)}
    if isinstance(action, CreateTask):
        key = f"task:{action.identifier}"
        fields["due"] = action.due.isoformat()
    elif isinstance(action, RecordRisk):
        key = f"risk:{action.identifier}"
    elif isinstance(action, CloseActivity):
        key = f"close-activity:{action.task}"
    elif isinstance(action, CreateReferral):
        key = f"referral:{action.identifier}"
        fields["occurrence"] = action.occurrence.isoformat()
    else:
        key = f"{kind}:{action.rule_id}:{transition.key}"
    payload = {"action": fields, "transition": transition.as_dict()}
    return OutboxItem(key=key, kind=kind, payload=payload)


def action_from_payload(kind: str, payload: Mapping[str, Any]) -> Action:
    """Rebuild the action of an outbox item."""
    fields = dict(payload["action"])
    if kind == "create-task":
        fields["due"] = date.fromisoformat(fields["due"])
    if kind == "create-referral":
        fields["occurrence"] = date.fromisoformat(fields["occurrence"])
        fields["categories"] = tuple(tuple(c) for c in fields["categories"])
    cls = _KINDS[kind]
    action: Action = cls(**fields)
    return action
