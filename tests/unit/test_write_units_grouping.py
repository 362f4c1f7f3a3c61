"""Write units and lanes: grouping outbox items by transition and by patient, and the
action registry."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from fhirbridge.errors import TransportError
from fhirbridge.store.base import OutboxItem
from fhirbridge.writeback.actions import HANDLERS
from fhirbridge.writeback.lanes import Lanes
from fhirbridge.writeback.outbox import _KINDS
from fhirbridge.writeback.units import WriteUnit, write_units


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


async def test_lanes_keep_each_patients_order_and_the_bound() -> None:
    """Three patients, two lanes at a time: never more than two units in flight, each
    patient's units in the order planned, every item claimed once."""
    pending = [
        item(f"{p}{n}", f"t-{p}{n}", f"Patient/{p}") for n in range(3) for p in ("a", "b", "c")
    ]
    pending = [dataclasses.replace(i, id=n + 1) for n, i in enumerate(pending)]
    done: list[str] = []
    active = [0, 0]

    def claim(limit: int) -> list[OutboxItem]:
        return [i for i in pending if i.key not in done][:limit]

    async def write(unit: WriteUnit) -> None:
        active[0] += 1
        active[1] = max(active[1], active[0])
        await asyncio.sleep(0)
        done.extend(i.key for i in unit.items)
        active[0] -= 1

    await Lanes(write, concurrency=2, batch=4).run(claim)
    assert active[1] == 2
    assert sorted(done) == sorted(i.key for i in pending) and len(done) == len(set(done))
    for patient in "abc":
        assert [k for k in done if k.startswith(patient)] == [f"{patient}{n}" for n in range(3)]


async def test_a_failed_lane_stops_the_drain_and_raises() -> None:
    """A unit that fails for a reason a retry may fix: nothing more is started, the error
    propagates, and the failed item is not written (it stays pending)."""
    pending = [
        dataclasses.replace(item(k, f"t-{k}", "Patient/a"), id=n + 1)
        for n, k in enumerate(["a0", "a1"])
    ]
    written: list[str] = []

    async def write(unit: WriteUnit) -> None:
        if unit.items[0].key == "a0":
            raise TransportError("down")
        written.append(unit.items[0].key)

    with pytest.raises(TransportError):
        await Lanes(write, concurrency=2).run(lambda limit: pending[:limit])
    assert written == []


def test_every_outbox_kind_has_a_handler() -> None:
    """The registry covers every action the outbox can hold, and nothing else."""
    assert set(HANDLERS) == set(_KINDS.values())
