"""Write units and lanes: grouping outbox items by transition and by patient, the write path
a CapabilityStatement suggests, and the action registry."""

from __future__ import annotations

from typing import Any

from fhirbridge.store.base import OutboxItem
from fhirbridge.writeback.actions import HANDLERS
from fhirbridge.writeback.outbox import _KINDS
from fhirbridge.writeback.units import lanes, write_path_for, write_units


def item(key: str, transition: str, patient: str) -> OutboxItem:
    """An outbox item planned by ``transition`` for ``patient``."""
    payload: dict[str, Any] = {"action": {}, "transition": {"key": transition, "patient": patient}}
    return OutboxItem(key=key, kind="create-task", payload=payload)


def test_items_group_into_units_by_transition_in_order() -> None:
    """Items of one transition form one unit, wherever they sit; units keep the order of
    their first item."""
    items = [
        item("a1", "t-a", "Patient/1"),
        item("b1", "t-b", "Patient/2"),
        item("a2", "t-a", "Patient/1"),
        item("c1", "t-c", "Patient/1"),
    ]
    units = write_units(items)
    assert [u.transition_key for u in units] == ["t-a", "t-b", "t-c"]
    assert [i.key for i in units[0].items] == ["a1", "a2"]
    assert units[0].tag != units[2].tag


def test_lanes_hold_one_patient_each_in_order() -> None:
    """A lane per patient, its units in order; a unit without a patient is a lane alone."""
    units = write_units(
        [
            item("a", "t1", "Patient/1"),
            item("b", "t2", "Patient/2"),
            item("c", "t3", "Patient/1"),
            item("d", "t4", ""),
        ]
    )
    grouped = [[u.transition_key for u in lane] for lane in lanes(units)]
    assert grouped == [["t1", "t3"], ["t2"], ["t4"]]


def test_the_write_path_follows_the_system_interactions() -> None:
    """``transaction`` among the server's system interactions: one Bundle per unit."""
    with_tx = {"rest": [{"mode": "server", "interaction": [{"code": "transaction"}]}]}
    batch_only = {"rest": [{"mode": "server", "interaction": [{"code": "batch"}]}]}
    assert write_path_for(with_tx) == "transaction"
    assert write_path_for(batch_only) == "per-resource"
    assert write_path_for({}) == "per-resource"


def test_every_outbox_kind_has_a_handler() -> None:
    """The registry covers every action the outbox can hold, and nothing else."""
    assert set(HANDLERS) == set(_KINDS.values())
