"""Write units: what one transition planned, written together.

The outbox holds one item per planned action; the writer groups the pending items by the
transition that planned them (a **unit**), and the units by patient (a **lane**, :mod:`.lanes`):
one patient's units are written in order, different patients' concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fhirbridge.identity import unit_tag
from fhirbridge.store.base import OutboxItem

__all__ = [
    "PER_RESOURCE",
    "TRANSACTION",
    "WritePath",
    "WriteUnit",
    "write_units",
]

WritePath = Literal["transaction", "per-resource"]
TRANSACTION: WritePath = "transaction"
PER_RESOURCE: WritePath = "per-resource"


@dataclass(frozen=True, slots=True)
class WriteUnit:
    """The pending outbox items of one transition, oldest first."""

    transition_key: str
    patient: str
    items: tuple[OutboxItem, ...]

    @property
    def tag(self) -> str:
        """The code of this unit's Provenance tag (same items, same code)."""
        return unit_tag(self.transition_key, (item.key for item in self.items))

    @property
    def transition(self) -> Mapping[str, Any]:
        """The planning transition, as journalled with the first item."""
        found = self.items[0].payload.get("transition")
        return found if isinstance(found, Mapping) else {}


def _transition(item: OutboxItem) -> Mapping[str, Any]:
    found = item.payload.get("transition")
    return found if isinstance(found, Mapping) else {}


def write_units(items: Iterable[OutboxItem]) -> list[WriteUnit]:
    """Group items by their transition key, in the order each unit's first item came."""
    grouped: dict[str, list[OutboxItem]] = {}
    for item in items:
        transition = _transition(item)
        key = str(transition.get("key") or f"item:{item.key}")
        grouped.setdefault(key, []).append(item)
    units = []
    for key, members in grouped.items():
        patient = str(_transition(members[0]).get("patient") or "")
        units.append(WriteUnit(key, patient, tuple(members)))
    return units
