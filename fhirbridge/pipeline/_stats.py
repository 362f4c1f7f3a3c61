"""What one pass did: the figures every driver reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from fhirbridge.values import Plan

__all__ = ["RunStats"]


@dataclass(slots=True)
class RunStats:
    """What one pass of the engine did.

    ``rejected`` counts the versions dead-lettered while evaluated (a metric: by exception
    type in ``rejected_by``); ``dead`` counts every dead letter of the pass, rejected
    versions and dead writes together.
    """

    read: int = 0
    new: int = 0
    processed: int = 0
    transitions: int = 0
    planned: int = 0
    created: int = 0
    existing: int = 0
    updated: int = 0
    dead: int = 0
    rejected: int = 0
    lookups: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    keep_plans: bool = False
    plans: list[Plan] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The pass's figures by name (what a log event or ``--json`` carries)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("plans", "keep_plans", "rejected_by")
        }

    def reject(self, error: BaseException) -> None:
        """Count a version dead-lettered because evaluating it raised ``error``."""
        name = type(error).__name__
        self.rejected += 1
        self.dead += 1
        self.rejected_by[name] = self.rejected_by.get(name, 0) + 1

    def summary(self) -> str:
        """One human line."""
        return (
            f"read {self.read} ({self.new} new), processed {self.processed}, "
            f"transitions {self.transitions}, planned writes {self.planned}, "
            f"tasks created {self.created} (already there {self.existing}), "
            f"status changes {self.updated}, dead letters {self.dead}"
        )
