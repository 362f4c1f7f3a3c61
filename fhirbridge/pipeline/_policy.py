"""Planning policy beside the rule pack: named steps the planner runs for every transition.

The rule pack decides which Tasks a transition creates; these steps add what is not a rule
of the pack but still policy: the risk scores of a recent discharge (whose tiers the rules
read as ``risk.<score>.tier``, and whose Observation and RiskAssessment are written), and
closing the CarePlan activity of a Task that was completed. :func:`default_policy` is what
the engine runs; pass another tuple to :class:`~fhirbridge.pipeline.Planner` (or
``Bridge(policy=...)``) to change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from fhirbridge.config import RiskConfig
from fhirbridge.risk.zone import warn_timezone_unset
from fhirbridge.riskplan import RiskInputs, score, score_actions
from fhirbridge.values import Action, CloseActivity, Transition, TransitionKind

__all__ = [
    "CloseCompletedActivity",
    "Enriched",
    "Planning",
    "Policy",
    "RiskScores",
    "default_policy",
]


@dataclass(frozen=True, slots=True)
class Planning:
    """What a policy step sees: the transition, the version that caused it (None for
    timers), the clock's now, and, once looked up, the patient's risk inputs and Patient."""

    transition: Transition
    resource: Mapping[str, Any] | None
    now: datetime
    risk_inputs: RiskInputs | None = None
    patient: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Enriched:
    """What a policy step adds to a plan: risk tiers the rules read, and actions."""

    tiers: Mapping[str, str] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()


class Policy(Protocol):
    """One planning step beside the rules (an extension point)."""

    @property
    def name(self) -> str:
        """What logs and plans call the step."""

    def wants_risk(self, planning: Planning) -> bool:
        """Whether :meth:`apply` reads the patient's risk inputs (so they are prefetched)."""

    def apply(self, planning: Planning) -> Enriched:
        """The tiers and actions this step adds (pure)."""


@dataclass(frozen=True, slots=True)
class RiskScores:
    """LACE and HOSPITAL for a discharge younger than ``max_event_age``: the tiers for the
    rules and a RecordRisk action per score. Needs the discharged Encounter and the
    patient's risk inputs (no server, no scores). ``settings`` is the ``risk``
    configuration; ``configured_tz`` and ``pack_tz`` say whether ``engine.timezone`` was
    set (a warning once when it was not)."""

    tz: str
    max_event_age: timedelta
    settings: RiskConfig | None = None
    configured_tz: str | None = None
    pack_tz: str | None = None
    name: str = "risk-scores"

    def wants_risk(self, planning: Planning) -> bool:
        """A discharge, with its Encounter, not older than ``max_event_age``."""
        transition = planning.transition
        return (
            transition.kind is TransitionKind.DISCHARGE
            and planning.resource is not None
            and planning.now - transition.occurred_at <= self.max_event_age
        )

    def apply(self, planning: Planning) -> Enriched:
        """The scores' tiers and RecordRisk actions (nothing without inputs)."""
        if planning.resource is None or planning.risk_inputs is None:
            return Enriched()
        if not self.wants_risk(planning):
            return Enriched()
        warn_timezone_unset(self.configured_tz, fallback=self.pack_tz)
        results = score(
            planning.resource,
            planning.risk_inputs,
            ZoneInfo(self.tz),
            patient=planning.patient,
            settings=self.settings,
        )
        return Enriched(
            tiers={name: result.tier for name, result in results.items()},
            actions=tuple(score_actions(results, planning.transition, planning.now)),
        )


@dataclass(frozen=True, slots=True)
class CloseCompletedActivity:
    """A completed Task closes its CarePlan activity (outcome ``completed``)."""

    name: str = "close-completed-activity"

    def wants_risk(self, planning: Planning) -> bool:
        """Never."""
        return False

    def apply(self, planning: Planning) -> Enriched:
        """A CloseActivity for a completed Task."""
        transition = planning.transition
        if transition.kind is not TransitionKind.TASK_COMPLETED:
            return Enriched()
        close = CloseActivity(
            task=transition.focus,
            patient=transition.patient,
            outcome="completed",
            transition_key=transition.key,
        )
        return Enriched(actions=(close,))


def default_policy(
    *, risk: bool, tz: str, max_event_age: timedelta, **risk_options: Any
) -> tuple[Policy, ...]:
    """The engine's steps: risk scores (when ``engine.risk``; ``risk_options`` are the other
    fields of :class:`RiskScores`), then closing activities."""
    steps: list[Policy] = (
        [RiskScores(tz=tz, max_event_age=max_event_age, **risk_options)] if risk else []
    )
    steps.append(CloseCompletedActivity())
    return tuple(steps)
