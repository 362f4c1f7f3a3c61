"""The RiskAssessments the engine writes carry their published probability and meet the R4
invariants as the server stores them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fhirbridge.engine import Bridge
from fhirbridge.fhir.invariants import violations
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import condition, fixed, past_ed_visit, recent, risk_assessments, set_period

pytestmark = pytest.mark.e2e


async def test_written_risk_assessments_have_probability_and_pass_the_invariants(
    sekmet: SekmetServer, make_bridge: Callable[..., Bridge]
) -> None:
    """LACE 15 (ED admission, 7 days, CHF + COPD + dementia, two ED visits): the stored
    RiskAssessment says 26.5% (van Walraven 2010 curve) and high; HOSPITAL carries its band
    risk; both pass ras-1/ras-2 as read back from the server."""
    patient = sekmet.register_patient(birth_date="1941-02-03")
    for code in ("I50.9", "J44.9", "F03.90"):
        condition(sekmet, patient, code)
    past_ed_visit(sekmet, patient, "2026-08-02")
    past_ed_visit(sekmet, patient, "2026-10-01")
    stay = sekmet.admit(patient)
    sekmet.discharge(stay, "home")
    set_period(sekmet, stay, "2026-11-10T08:00:00Z", "2026-11-17T15:00:00Z")

    bridge = make_bridge(clock=fixed("2026-11-18T09:00:00+00:00"))
    await bridge.run_once(since=recent())

    assessments = risk_assessments(sekmet, patient)
    lace = assessments["lace"]["prediction"][0]
    assert lace["probabilityDecimal"] == 26.5
    assert lace["qualitativeRisk"]["coding"][0]["code"] == "high"
    hospital = assessments["hospital"]["prediction"][0]
    assert hospital["probabilityDecimal"] in (5.8, 11.9, 22.8)
    for stored in assessments.values():
        assert violations(stored) == []
