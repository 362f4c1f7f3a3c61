"""Case-management lookups on the wire: what is asked for which transition, and what a
failing lookup leaves (an absent fact, so no rule acts on a guess)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import httpx
import respx

from fhirbridge.casemgmt import Casework
from fhirbridge.fhir.client import FhirClient
from fhirbridge.rules import load_rules
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.values import Transition, TransitionKind
from tests.wire._client import BASE

DISCHARGE = Transition(
    kind=TransitionKind.DISCHARGE,
    patient="Patient/p1",
    focus="Encounter/e1",
    encounter="Encounter/e1",
    occurred_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
    facts={"encounter_class": "IMP", "disposition_code": "home"},
)


def bundle(*resources: dict[str, Any]) -> httpx.Response:
    """A one-page searchset."""
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return httpx.Response(
        200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries}
    )


def casework(client: FhirClient, **replace: Any) -> Casework:
    """Lookups for the shipped pack (or the pack with fields replaced)."""
    pack = load_rules()
    if replace:
        pack = dataclasses.replace(pack, **replace)
    return Casework(client, pack, server="ehr", calendar=BusinessCalendar())


async def test_discharge_looks_up_coverage_and_needs_on_record(
    router: respx.MockRouter, client: FhirClient
) -> None:
    """A discharge asks for the patient's Coverage, SDOH Observations and Conditions; an
    ending Coverage (10 days left of the pack's 30) reads 'ending'; no needs on record."""
    coverage = router.get(f"{BASE}/Coverage", params={"patient": "Patient/p1"}).mock(
        return_value=bundle(
            {
                "resourceType": "Coverage",
                "id": "c1",
                "status": "active",
                "beneficiary": {"reference": "Patient/p1"},
                "payor": [{"reference": "Organization/plan"}],
                "period": {"start": "2026-01-01", "end": "2026-11-30"},
            }
        )
    )
    observations = router.get(f"{BASE}/Observation").mock(return_value=bundle())
    conditions = router.get(f"{BASE}/Condition").mock(return_value=bundle())
    facts = await casework(client).facts(DISCHARGE)
    assert facts.case["coverage"] == "ending"
    assert facts.case["coverage_ref"] == "Coverage/c1"
    assert facts.case["payor"] == "Organization/plan"
    assert facts.case["needs"] == []
    assert coverage.call_count == observations.call_count == conditions.call_count == 1
    asked = str(observations.calls[0].request.url)
    assert "food-insecurity" in asked and "patient=Patient%2Fp1" in asked


async def test_a_failed_lookup_leaves_the_fact_absent(
    router: respx.MockRouter, client: FhirClient
) -> None:
    """Coverage answers 400 (not retried): no 'coverage' fact, so no coverage review is
    planned on a guess; the other lookups still answer."""
    router.get(f"{BASE}/Coverage").mock(return_value=httpx.Response(400))
    router.get(f"{BASE}/Observation").mock(return_value=bundle())
    router.get(f"{BASE}/Condition").mock(return_value=bundle())
    facts = await casework(client).facts(DISCHARGE)
    assert "coverage" not in facts.case
    assert facts.case["needs"] == []


async def test_a_pack_without_case_rules_asks_nothing(
    router: respx.MockRouter, client: FhirClient
) -> None:
    """Lookups follow the rules: a pack with no case-management rule makes no request."""
    pack = load_rules()
    plain = tuple(
        r
        for r in pack.rules
        if not r.when.case and not any(item.create_referral for item in r.then)
    )
    facts = await casework(client, rules=plain).facts(DISCHARGE)
    assert facts.case == {}
    assert router.calls.call_count == 0
