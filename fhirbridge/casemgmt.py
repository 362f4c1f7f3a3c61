"""What the case-management rules need from the server, looked up when planning.

Advocacy, engagement and monitoring rules test facts that no single resource version
carries: the patient's Coverage on the day of a discharge, whether a social need already has
an open referral, the no-shows around an Appointment, whether the patient's transitional-care
CarePlan is open, and the patient's latest risk tier. :class:`Casework` reads them (only
those some loaded rule tests for the transition's kind) and hands them to the rules as
``PlanContext.case``; the decisions stay pure (:mod:`fhirbridge.detect.coverage`,
:mod:`~fhirbridge.detect.noshow`, :mod:`~fhirbridge.detect.review`).

Its :meth:`Casework.sweep` is the timer part: for every active engine CarePlan, the periodic
review it owes and whether its work is done. Lookups that fail are logged and treated as
absent (a missing CarePlan plans no referral, never a failed run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import structlog

from fhirbridge.detect import local_reference
from fhirbridge.detect.coverage import coverage_state
from fhirbridge.detect.noshow import appointment_patient, engagement_window
from fhirbridge.detect.review import done_transition, review_transition
from fhirbridge.detect.social import default_sdoh_table, detect_social_need
from fhirbridge.errors import FhirError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.rules import BusinessCalendar, RulePack
from fhirbridge.rules.model import KINDS
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    IDENTIFIER_SYSTEM,
    Transition,
    TransitionKind,
)
from fhirbridge.writeback.build import careplan_identifier

__all__ = ["CaseFacts", "Casework", "latest_tiers", "worst_tier"]

log = structlog.get_logger(__name__)

_TAG = f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"
_OPEN_REQUEST = ("draft", "active", "on-hold")
_TIER_ORDER = {"low": 0, "moderate": 1, "intermediate": 1, "high": 2}
#: Case facts each transition kind can have looked up.
_LOOKUPS: Mapping[TransitionKind, frozenset[str]] = {
    TransitionKind.DISCHARGE: frozenset({"coverage", "needs"}),
    TransitionKind.COVERAGE_ACTIVE: frozenset({"coverage"}),
    TransitionKind.SOCIAL_NEED: frozenset({"careplan", "referred"}),
    TransitionKind.APPOINTMENT_NOSHOW: frozenset({"careplan", "engagement", "risk"}),
}

#: The lookup that provides each fact a ``once_per`` may name.
_FACT_SOURCE = {
    "engagement_window": "engagement",
    "noshows_in_window": "engagement",
    "coverage_ref": "coverage",
    "careplan_ref": "careplan",
}


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What was looked up for one transition: ``case`` facts and the latest risk tiers."""

    case: Mapping[str, Any] = field(default_factory=dict)
    risk: Mapping[str, str] = field(default_factory=dict)


def _categories(facts: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(str(c[0]), str(c[1])) for c in facts.get("need_categories") or ()}


def latest_tiers(assessments: Sequence[Mapping[str, Any]], patient: str) -> dict[str, str]:
    """The tier of the engine's latest RiskAssessment of ``patient`` per score (pure)."""
    latest: dict[str, tuple[str, str]] = {}
    for assessment in assessments:
        if local_reference(assessment.get("subject")) != patient:
            continue  # servers that ignore the subject parameter return every one
        method = next(
            (c.get("code") for c in (assessment.get("method") or {}).get("coding") or ()), None
        )
        predictions = assessment.get("prediction") or [{}]
        tier = (predictions[0].get("qualitativeRisk") or {}).get("text")
        when = str(assessment.get("occurrenceDateTime") or "")
        if not method or not tier:
            continue
        if method not in latest or when >= latest[method][0]:
            latest[method] = (when, str(tier).lower())
    return {method: tier for method, (_, tier) in latest.items()}


def worst_tier(tiers: Mapping[str, str]) -> str | None:
    """The highest of several scores' tiers (``intermediate`` ranks as ``moderate``)."""
    known = [t for t in tiers.values() if t in _TIER_ORDER]
    return max(known, key=lambda t: _TIER_ORDER[t]) if known else None


def _wanted(rules: RulePack) -> dict[str, set[str]]:
    """Per transition kind, the case facts (and ``risk``) some rule of that kind tests."""
    wanted: dict[str, set[str]] = {}
    for rule in rules.rules:
        match = rule.when.kind
        kinds = [k for k in KINDS if match.test(k)]
        names = set(rule.when.case)
        if rule.when.risk:
            names.add("risk")
        for item in rule.then:
            if item.create_referral is not None:
                names.add("needs")
            task = item.task
            if task is not None and task.once_per:
                names.add(_FACT_SOURCE.get(task.once_per, task.once_per))
        for kind in kinds:
            wanted.setdefault(kind, set()).update(names)
    return wanted


class Casework:
    """Case-management lookups on one server, for the rules of one pack."""

    def __init__(
        self,
        client: FhirClient | None,
        rules: RulePack,
        *,
        server: str,
        calendar: BusinessCalendar,
    ) -> None:
        self.client = client
        self.rules = rules
        self.server = server
        self.calendar = calendar
        self._wanted = _wanted(rules)

    async def _search(self, kind: str, params: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The matches; None when the lookup failed (its facts are then left absent, and
        a condition on an absent fact does not hold)."""
        assert self.client is not None
        try:
            return await self.client.search_all(kind, {**params, "_count": 200})
        except FhirError as exc:
            log.warning("case_lookup_failed", resource_type=kind, error=type(exc).__name__)
            return None

    async def careplan(self, patient: str) -> dict[str, Any] | None:
        """The patient's transitional-care CarePlan (the engine's): ``{}`` when there is
        none, None when the lookup failed."""
        identifier = f"{IDENTIFIER_SYSTEM}|{careplan_identifier(patient)}"
        found = await self._search("CarePlan", {"identifier": identifier})
        if found is None:
            return None
        mine = [c for c in found if local_reference(c.get("subject")) == patient]
        return mine[0] if mine else {}

    async def tiers(self, patient: str) -> dict[str, str]:
        """The patient's latest risk tier per score, from the engine's RiskAssessments."""
        found = await self._search("RiskAssessment", {"subject": patient, "_tag": _TAG})
        return latest_tiers(found or [], patient)

    async def facts(self, transition: Transition) -> CaseFacts:
        """The case facts the loaded rules test for ``transition``'s kind."""
        names = self._wanted.get(transition.kind.value, set()) & _LOOKUPS.get(
            transition.kind, frozenset()
        )
        if self.client is None or not names:
            return CaseFacts()
        patient = transition.patient
        defaults = self.rules.defaults
        case: dict[str, Any] = {}
        risk: dict[str, str] = {}
        if "careplan" in names:
            careplan = await self.careplan(patient)
            if careplan is not None:
                case["careplan"] = str(careplan.get("status")) if careplan else "none"
                case["careplan_ref"] = f"CarePlan/{careplan['id']}" if careplan else None
        coverages = (
            await self._search("Coverage", {"patient": patient}) if ("coverage" in names) else None
        )
        if coverages is not None:
            mine = [c for c in coverages if local_reference(c.get("beneficiary")) == patient]
            day = self.calendar.local_date(transition.occurred_at)
            state = coverage_state(mine, day, defaults.coverage_ending_days or 0)
            case.update(state.facts())
        if "referred" in names and case.get("careplan", "active") == "active":
            # (no open CarePlan: the referral rules cannot hold, skip the lookup)
            referred = await self._referred(transition)
            if referred is not None:
                case["referred"] = referred
        if "needs" in names:
            needs = await self._needs_on_record(transition)
            if needs is not None:
                case["needs"] = needs
        if "engagement" in names:
            case.update(await self._engagement(transition))
        if "risk" in names:
            risk = await self.tiers(patient)
        log.info("case_looked_up", kind=transition.kind.value, facts=sorted(case))
        return CaseFacts(case=case, risk=risk)

    async def _open_referral_categories(self, patient: str) -> set[tuple[str, str]] | None:
        """The categories of the patient's open ServiceRequests (any author)."""
        found = await self._search(
            "ServiceRequest", {"patient": patient, "status": ",".join(_OPEN_REQUEST)}
        )
        if found is None:
            return None
        return {
            (str(c.get("system") or ""), str(c.get("code") or ""))
            for request in found
            if local_reference(request.get("subject")) == patient
            and request.get("status") in _OPEN_REQUEST
            for concept in request.get("category") or ()
            for c in (concept or {}).get("coding") or ()
        }

    async def _referred(self, transition: Transition) -> bool | None:
        """Whether the social need has an open referral already; None when the lookup
        failed."""
        open_categories = await self._open_referral_categories(transition.patient)
        if open_categories is None:
            return None
        return bool(open_categories & _categories(transition.facts))

    async def _needs_on_record(self, transition: Transition) -> list[dict[str, Any]] | None:
        """The patient's social needs on record (active SDOH Conditions; positive screening
        answers within ``defaults.social_need_lookback_days`` of the transition) without an
        open referral, one per need: what a discharge opening transitional care refers."""
        table = default_sdoh_table()
        categories = sorted({c for n in table.needs for c in n.categories} | table.general)
        query = {
            "patient": transition.patient,
            "category": ",".join(f"{s}|{c}" for s, c in categories),
        }
        observations = await self._search("Observation", query)
        conditions = await self._search("Condition", query)
        if observations is None or conditions is None:
            return None
        lookback = timedelta(days=self.rules.defaults.social_need_lookback_days or 0)
        found: dict[str, dict[str, Any]] = {}
        for resource in [*conditions, *observations]:
            if local_reference(resource.get("subject")) != transition.patient:
                continue
            for need in detect_social_need(None, resource, server=self.server, table=table):
                late = abs(transition.occurred_at - need.occurred_at) > lookback
                if need.facts["source"] == "screening" and late:
                    continue
                found.setdefault(
                    str(need.facts["need"]),
                    {
                        **need.facts,
                        "reason": need.focus,
                        "recorded": self.calendar.local_date(need.occurred_at).isoformat(),
                    },
                )
        if not found:
            return []
        open_categories = await self._open_referral_categories(transition.patient)
        if open_categories is None:
            return None
        return [n for n in found.values() if not open_categories & _categories(n)]

    async def _engagement(self, transition: Transition) -> dict[str, Any]:
        defaults = self.rules.defaults
        if defaults.engagement_noshows is None or defaults.engagement_window_days is None:
            return {"engagement": "engaged"}
        found = await self._search(
            "Appointment", {"patient": transition.patient, "status": "noshow"}
        )
        if found is None:
            return {}
        mine = [a for a in found if appointment_patient(a) == transition.patient]
        this = next((a for a in mine if f"Appointment/{a.get('id')}" == transition.focus), None)
        if this is None:  # not on the server any more: judge it as the transition saw it
            this = {
                "id": transition.focus.split("/", 1)[1],
                "status": "noshow",
                "start": transition.facts.get("start") or transition.occurred_at.isoformat(),
            }
        engagement = engagement_window(
            mine,
            this,
            window_days=defaults.engagement_window_days,
            noshows=defaults.engagement_noshows,
        )
        return engagement.facts()

    # -- timers --------------------------------------------------------------------------
    async def sweep(self, today: date) -> list[Transition]:
        """The reviews active engine CarePlans owe today, and those whose work is done."""
        wanted = {TransitionKind.CAREPLAN_REVIEW_DUE.value, TransitionKind.CAREPLAN_DONE.value}
        if self.client is None or not wanted & set(self._wanted):
            return []
        intervals = self.rules.defaults.review_interval_days or {}
        careplans = await self._search("CarePlan", {"_tag": _TAG, "status": "active"}) or []
        found: list[Transition] = []
        for careplan in careplans:
            patient = local_reference(careplan.get("subject"))
            if careplan.get("status") != "active" or patient is None:
                continue
            ref = f"CarePlan/{careplan['id']}"
            listed = await self._search("Task", {"based-on": ref, "_tag": _TAG})
            if listed is None:
                continue  # the plan's Tasks are unknown: decide nothing about it
            tasks = [
                t for t in listed if ref in {local_reference(b) for b in t.get("basedOn") or ()}
            ]
            done = done_transition(careplan, tasks, today=today, server=self.server)
            if done is not None:
                found.append(done)
                continue
            if not intervals:
                continue
            tier = worst_tier(await self.tiers(patient))
            review = review_transition(
                careplan, tasks, tier=tier, today=today, intervals=intervals, server=self.server
            )
            if review is not None:
                found.append(review)
        log.info("casework_sweep_done", careplans=len(careplans), due=len(found))
        return found
