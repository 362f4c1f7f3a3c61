"""Planning a transition with a rule pack, as the rule tests do it: one Friday afternoon."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbridge.rules import PlanContext, RulePack
from fhirbridge.values import Plan, Transition

FRIDAY_3PM = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)  # Friday 6 March 2026


def plan_on_friday(
    pack: RulePack,
    transition: Transition,
    *,
    care_team: tuple[tuple[str, str], ...],
    case: Mapping[str, Any] | None = None,
    risk: Mapping[str, str] | None = None,
) -> Plan:
    """The pack's plan an hour after ``FRIDAY_3PM``, default owner ``Organization/cc``."""
    ctx = PlanContext(
        now=FRIDAY_3PM + timedelta(hours=1),
        care_team=care_team,
        default_owner="Organization/cc",
        risk=risk or {},
        case=case or {},
    )
    return pack.plan(transition, ctx)
