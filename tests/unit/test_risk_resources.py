"""Scores as FHIR: the Observation, the RiskAssessment, the CodeSystem and the public API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.riskassessment import RiskAssessment

import fhirbridge.risk
from fhirbridge.risk import ScoreResult, risk_assessment, score_observation
from fhirbridge.risk.assessment import COMPONENT_DISPLAYS, SCORE_DISPLAYS, SCORE_SYSTEM

CODESYSTEM = Path(__file__).resolve().parents[2] / "profiles" / "CodeSystem-fhirbridge-risk.json"
NOW = datetime(2024, 3, 18, 12, 0, tzinfo=UTC)

LACE = ScoreResult(
    score_name="lace",
    total=12,
    tier="high",
    components={"L": 5, "A": 3, "C": 2, "E": 2},
    found=("length-of-stay", "admission-acuity", "conditions", "ed-visits"),
    inputs=("Encounter/idx", "Encounter/ed", "Condition/c1", "Encounter/ed1", "Encounter/ed2"),
    charlson_categories=("chf",),
)
HOSPITAL = ScoreResult(
    score_name="hospital",
    total=6,
    tier="intermediate",
    components={"H": 1, "O": 2, "S": 1, "P": 1, "IT": 1, "A": 0, "L": 0},
    inputs=("Encounter/idx", "Observation/hb", "Observation/na", "Procedure/p1"),
)


def observation_of(result: ScoreResult) -> dict[str, Any]:
    """The score Observation of ``result`` for Patient/p1, Encounter/idx."""
    return score_observation(
        result, patient="Patient/p1", encounter="Encounter/idx", effective=NOW, identifier="obs-1"
    )


def assessment_of(result: ScoreResult) -> dict[str, Any]:
    """The RiskAssessment of ``result`` based on Observation/obs-1."""
    return risk_assessment(
        result,
        patient="Patient/p1",
        encounter="Encounter/idx",
        observation_ref="Observation/obs-1",
        occurrence=NOW,
        identifier="ra-1",
    )


def codesystem_codes() -> dict[str, str]:
    """Every code of the shipped CodeSystem (nested concepts too) with its display."""
    found: dict[str, str] = {}

    def walk(concepts: list[dict[str, Any]]) -> None:
        for concept in concepts:
            found[concept["code"]] = concept["display"]
            walk(concept.get("concept", []))

    walk(json.loads(CODESYSTEM.read_text())["concept"])
    return found


@pytest.mark.parametrize(
    "result", [pytest.param(LACE, id="lace"), pytest.param(HOSPITAL, id="hospital")]
)
def test_observation_validates_and_carries_the_score(result: ScoreResult) -> None:
    """The Observation is valid R4(B): final, engine code, valueInteger, tag and identifier."""
    obs = observation_of(result)
    Observation.model_validate(obs)
    assert obs["status"] == "final"
    assert obs["code"]["coding"][0] == {
        "system": SCORE_SYSTEM,
        "code": result.score_name,
        "display": SCORE_DISPLAYS[result.score_name],
    }
    assert obs["valueInteger"] == result.total
    assert obs["subject"] == {"reference": "Patient/p1"}
    assert obs["encounter"] == {"reference": "Encounter/idx"}
    assert obs["effectiveDateTime"] == "2024-03-18T12:00:00+00:00"
    assert obs["meta"]["tag"] == [
        {"system": "https://fhirbridge.dev/fhir/tag", "code": "fhirbridge"}
    ]
    assert obs["identifier"] == [
        {"system": "https://fhirbridge.dev/fhir/identifier", "value": "obs-1"}
    ]


@pytest.mark.parametrize(
    "result", [pytest.param(LACE, id="lace"), pytest.param(HOSPITAL, id="hospital")]
)
def test_observation_has_one_component_per_item(result: ScoreResult) -> None:
    """Each score item becomes a component coded {score}-{item} with its points."""
    obs = observation_of(result)
    got = {c["code"]["coding"][0]["code"]: c["valueInteger"] for c in obs["component"]}
    assert got == {f"{result.score_name}-{k}": v for k, v in result.components.items()}


def test_derived_from_holds_only_types_r4_allows() -> None:
    """derivedFrom takes the lab Observations only; other inputs go to the RiskAssessment basis."""
    assert observation_of(HOSPITAL)["derivedFrom"] == [
        {"reference": "Observation/hb"},
        {"reference": "Observation/na"},
    ]
    assert "derivedFrom" not in observation_of(LACE)


@pytest.mark.parametrize(
    ("result", "code", "text"),
    [
        # LACE's high is risk-probability high
        pytest.param(LACE, "high", "high", id="lace-high"),
        # HOSPITAL's intermediate is coded moderate, text keeps "intermediate"
        pytest.param(HOSPITAL, "moderate", "intermediate", id="hospital-intermediate"),
        # low is low
        pytest.param(
            ScoreResult("lace", 3, "low", {"L": 3, "A": 0, "C": 0, "E": 0}),
            "low",
            "low",
            id="lace-low",
        ),
        # LACE's moderate is moderate
        pytest.param(
            ScoreResult("lace", 7, "moderate", {"L": 4, "A": 3, "C": 0, "E": 0}),
            "moderate",
            "moderate",
            id="lace-moderate",
        ),
    ],
)
def test_risk_assessment_validates_and_codes_the_tier(
    result: ScoreResult, code: str, text: str
) -> None:
    """The RiskAssessment is valid R4(B) and codes the tier in risk-probability."""
    ra = assessment_of(result)
    RiskAssessment.model_validate(ra)
    risk = ra["prediction"][0]["qualitativeRisk"]
    assert risk["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/risk-probability"
    assert risk["coding"][0]["code"] == code
    assert risk["text"] == text


def test_risk_assessment_fields() -> None:
    """Status, method, subject, encounter, occurrence, basis, identifier and tag are set."""
    ra = assessment_of(LACE)
    assert ra["status"] == "final"
    assert ra["method"]["coding"][0]["code"] == "lace"
    assert ra["subject"] == {"reference": "Patient/p1"}
    assert ra["encounter"] == {"reference": "Encounter/idx"}
    assert ra["occurrenceDateTime"] == "2024-03-18T12:00:00+00:00"
    assert [b["reference"] for b in ra["basis"]] == ["Observation/obs-1", *LACE.inputs]
    assert ra["identifier"] == [
        {"system": "https://fhirbridge.dev/fhir/identifier", "value": "ra-1"}
    ]
    assert ra["meta"]["tag"][0]["code"] == "fhirbridge"


def test_scores_computed_from_json_validate_end_to_end() -> None:
    """lace() and hospital() on plain JSON give resources that validate."""
    stay = {
        "resourceType": "Encounter",
        "id": "idx",
        "status": "finished",
        "class": {"code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-03-11T10:00:00Z", "end": "2024-03-18T11:00:00Z"},
        "hospitalization": {"admitSource": {"coding": [{"code": "emd"}]}},
    }
    for result in (fhirbridge.risk.lace(stay), fhirbridge.risk.hospital(stay)):
        Observation.model_validate(observation_of(result))
        RiskAssessment.model_validate(assessment_of(result))


@pytest.mark.parametrize(
    "call",
    [
        # a naive effective time
        pytest.param(
            lambda: score_observation(
                LACE,
                patient="Patient/p1",
                encounter="Encounter/1",
                effective=datetime(2024, 3, 18),
                identifier="x",
            ),
            id="observation",
        ),
        # a naive occurrence time
        pytest.param(
            lambda: risk_assessment(
                LACE,
                patient="Patient/p1",
                encounter="Encounter/1",
                observation_ref="Observation/1",
                occurrence=datetime(2024, 3, 18),
                identifier="x",
            ),
            id="risk-assessment",
        ),
    ],
)
def test_naive_times_are_refused(call: Any) -> None:
    """Times without a zone would be ambiguous on the server: refused."""
    with pytest.raises(ValueError, match="aware"):
        call()


def test_unknown_score_is_refused() -> None:
    """A result of a score the CodeSystem does not define cannot become an Observation."""
    with pytest.raises(ValueError, match="unknown score"):
        observation_of(ScoreResult("news2", 3, "low", {}))


def test_codesystem_validates() -> None:
    """The shipped CodeSystem is a valid R4(B) CodeSystem: url, active, complete."""
    data = json.loads(CODESYSTEM.read_text())
    CodeSystem.model_validate(data)
    assert data["url"] == SCORE_SYSTEM
    assert (data["status"], data["content"]) == ("active", "complete")
    assert data["count"] == len(codesystem_codes())


def test_codesystem_defines_every_code_the_engine_writes() -> None:
    """Score and component codes, with the same displays, are all in the CodeSystem."""
    assert codesystem_codes() == {**SCORE_DISPLAYS, **COMPONENT_DISPLAYS}


def test_public_api_is_sorted_and_complete() -> None:
    """__all__ is sorted and names exactly what the package exports."""
    names = fhirbridge.risk.__all__
    assert names == sorted(names)
    assert set(names) == {
        "ScoreResult",
        "charlson",
        "hospital",
        "lace",
        "risk_assessment",
        "score_observation",
    }
    for name in names:
        assert callable(getattr(fhirbridge.risk, name))
