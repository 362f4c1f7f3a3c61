"""RiskAssessment that strict validators accept: a published probability on every
prediction, and the R4 invariants checked before anything leaves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from fhirbridge.errors import ProfileError
from fhirbridge.fhir.invariants import check_invariants, violations
from fhirbridge.risk import ScoreResult, risk_assessment
from fhirbridge.risk.assessment import expected_risk

NOW = datetime(2024, 3, 18, 12, 0, tzinfo=UTC)


def _result(name: str, total: int, tier: str) -> ScoreResult:
    return ScoreResult(score_name=name, total=total, tier=tier, components={})


def _assessment(result: ScoreResult) -> dict[str, Any]:
    return risk_assessment(
        result,
        patient="Patient/p1",
        encounter="Encounter/idx",
        observation_ref="Observation/obs-1",
        occurrence=NOW,
        identifier="ra-1",
    )


@pytest.mark.parametrize(
    ("total", "percent"),
    [
        (0, 2.0),  # van Walraven 2010: a score of 0 is 2.0%
        (19, 43.7),  # ... and 19 is 43.7%
        (10, 12.2),  # between, the logistic curve through both ends
    ],
)
def test_lace_expected_risk_follows_the_published_calibration(total: int, percent: float) -> None:
    """LACE's expected 30-day risk of death or unplanned readmission, in percent."""
    assert expected_risk(_result("lace", total, "high")) == percent


def test_lace_expected_risk_rises_with_the_score() -> None:
    """Every point more is a higher risk."""
    risks = [expected_risk(_result("lace", t, "low")) for t in range(20)]
    assert risks == sorted(risks) and len(set(risks)) == 20


@pytest.mark.parametrize(
    ("tier", "percent"),
    [("low", 5.8), ("intermediate", 11.9), ("high", 22.8)],  # Donzé 2013 band risks
)
def test_hospital_band_risks(tier: str, percent: float) -> None:
    """HOSPITAL's estimated risk of potentially avoidable readmission per band."""
    assert expected_risk(_result("hospital", 6, tier)) == percent


@pytest.mark.parametrize(
    "result",
    [
        _result("lace", 3, "low"),
        _result("lace", 12, "high"),
        _result("hospital", 5, "intermediate"),
    ],
)
def test_every_prediction_has_probability_and_qualitative_risk(result: ScoreResult) -> None:
    """probabilityDecimal (percent, <= 100) and qualitativeRisk on every prediction; the R4B
    model and the R4 invariants (ras-1, ras-2) accept it."""
    assessment = _assessment(result)

    for prediction in assessment["prediction"]:
        assert 0 < prediction["probabilityDecimal"] <= 100
        assert prediction["qualitativeRisk"]["coding"]
    RiskAssessment.model_validate(assessment)
    assert violations(assessment) == []


def test_a_prediction_without_probability_breaks_ras_2() -> None:
    """The body a strict server refused (no probability) is caught here, under ras-2."""
    assessment = _assessment(_result("lace", 12, "high"))
    del assessment["prediction"][0]["probabilityDecimal"]

    assert [v.split(" ")[0] for v in violations(assessment)] == ["ras-2"]
    with pytest.raises(ProfileError, match="ras-2"):
        check_invariants(assessment)


@pytest.mark.parametrize(
    ("resource", "key"),
    [
        (  # a probability over 100 percent
            {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 120}]},
            "ras-2",
        ),
        (  # a range in something other than UCUM percent
            {
                "resourceType": "RiskAssessment",
                "prediction": [{"probabilityRange": {"low": {"value": 0.1, "unit": "ratio"}}}],
            },
            "ras-1",
        ),
        (  # a CarePlan activity with both a reference and a detail
            {
                "resourceType": "CarePlan",
                "activity": [
                    {"reference": {"reference": "Task/1"}, "detail": {"status": "scheduled"}}
                ],
            },
            "cpl-3",
        ),
        (  # a Task modified before it was authored
            {
                "resourceType": "Task",
                "authoredOn": "2026-01-02T00:00:00Z",
                "lastModified": "2026-01-01T00:00:00Z",
            },
            "inv-1",
        ),
        (  # an execution period that ends before it starts
            {
                "resourceType": "Task",
                "executionPeriod": {"start": "2026-01-02", "end": "2026-01-01"},
            },
            "per-1",
        ),
        (  # an Observation with a value and a data-absent reason
            {
                "resourceType": "Observation",
                "valueInteger": 3,
                "dataAbsentReason": {"text": "unknown"},
            },
            "obs-6",
        ),
        ({"resourceType": "Task", "meta": {}}, "ele-1"),  # an empty element
    ],
)
def test_broken_invariants_are_named(resource: dict[str, Any], key: str) -> None:
    """Each invariant that bites what the engine writes is found, by key."""
    assert key in {v.split(" ")[0] for v in violations(resource)}
