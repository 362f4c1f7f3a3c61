"""The plan stage: a transition and what is known about its patient -> a Plan.

The rule pack (:meth:`fhirbridge.rules.RulePack.plan`) decides the Tasks; the policy steps
(:mod:`._policy`) add risk scores and activity closes; the case-management lookups
(:class:`fhirbridge.casemgmt.Casework`) give the rules their ``case`` facts. Everything a
batch of transitions needs from the server is prefetched for all of them at once
(:meth:`Planner.prefetch`); the case lookups are asked per transition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from fhirbridge.clock import Clock
from fhirbridge.errors import FhirError, StoreError
from fhirbridge.pipeline._lookups import Lookups
from fhirbridge.pipeline._policy import Planning, Policy
from fhirbridge.rules import BusinessCalendar, PlanContext, RulePack
from fhirbridge.rules.evaluate import TIMER_KINDS
from fhirbridge.values import Action, Plan, Transition

if TYPE_CHECKING:
    from fhirbridge.casemgmt import Casework

__all__ = ["Planner"]

log = structlog.get_logger(__name__)

Planned = tuple[Transition, Mapping[str, Any] | None]


class Planner:
    """Plans transitions with the rule pack, the policy steps and the lookups."""

    def __init__(
        self,
        rules: RulePack,
        lookups: Lookups,
        *,
        calendar: BusinessCalendar,
        clock: Clock,
        max_event_age: timedelta,
        default_owner: str | None,
        policy: Sequence[Policy],
        casework: Casework | None = None,
    ) -> None:
        self.rules = rules
        self.lookups = lookups
        self.calendar = calendar
        self.clock = clock
        self.max_event_age = max_event_age
        self.default_owner = default_owner
        self.policy = tuple(policy)
        self.casework = casework

    def _wants_risk(self, transition: Transition, resource: Mapping[str, Any] | None) -> bool:
        planning = Planning(transition, resource, self.clock.now())
        return self.lookups.online and any(step.wants_risk(planning) for step in self.policy)

    async def prefetch(
        self,
        planned: Sequence[Planned],
        *,
        patients: Sequence[str] = (),
        stays: Sequence[str] = (),
        discharges: Sequence[Planned] = (),
    ) -> None:
        """Look up, in one request, what planning ``planned`` needs, the Patient and care
        team of ``patients``, the earlier stays of ``stays``, and what ``discharges``
        (transitions that may come) would need."""
        if not self.lookups.online or not (planned or patients or stays or discharges):
            return
        maybe = [*planned, *discharges]
        try:
            await self.lookups.prefetch(
                [*patients, *(t.patient for t, _ in maybe)],
                stays=stays,
                risk=[t.patient for t, r in maybe if self._wants_risk(t, r)],
            )
        except (FhirError, StoreError, MemoryError):
            raise
        except Exception as exc:  # an answer we cannot read: each lookup is asked again
            log.warning("lookup_prefetch_failed", error=type(exc).__name__)

    async def plan(self, transition: Transition, resource: Mapping[str, Any] | None = None) -> Plan:
        """The plan of one transition; ``resource`` is the version that caused it (None for
        timers)."""
        now = self.clock.now()
        patient = await self.lookups.patient(transition.patient)
        care_team = await self.lookups.care_team(transition.patient)
        inputs = (
            await self.lookups.risk_inputs(transition.patient)
            if self._wants_risk(transition, resource)
            else None
        )
        tiers: dict[str, str] = {}
        extra: list[Action] = []
        planning = Planning(transition, resource, now, inputs, patient)
        for step in self.policy:
            added = step.apply(planning)
            tiers.update(added.tiers)
            extra.extend(added.actions)
        # case management: the lookups its rules test (coverage, CarePlan, referrals,
        # no-shows, latest risk tiers), only for transitions that can still create work
        recent = now - transition.occurred_at <= self.max_event_age
        case = (
            await self.casework.facts(transition)
            if self.casework is not None and (recent or transition.kind in TIMER_KINDS)
            else None
        )
        context = PlanContext(
            now=now,
            calendar=self.calendar,
            max_event_age=self.max_event_age,
            patient=patient,
            care_team=care_team,
            default_owner=self.default_owner,
            risk=tiers or (dict(case.risk) if case else {}),
            case=case.case if case else {},
        )
        plan = self.rules.plan(transition, context)
        if extra:
            plan = Plan(transition=plan.transition, actions=(*plan.actions, *extra), note=plan.note)
        return plan
