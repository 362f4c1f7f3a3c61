"""A :class:`ScoreResult` as FHIR R4 resources: a score Observation and a RiskAssessment.

Both are plain JSON dicts that ``fhir.resources`` R4B models validate and that meet the R4
invariants (:mod:`fhirbridge.fhir.invariants`, checked here as they are built); the writeback
stage validates them again (with the engine's profiles) before they leave. Codes come from
the engine's CodeSystem ``https://fhirbridge.dev/fhir/CodeSystem/risk-score``
(``profiles/CodeSystem-fhirbridge-risk.json``).

Every ``prediction`` carries ``qualitativeRisk`` and ``probabilityDecimal``: a strict
validator refuses a prediction without a probability under ras-2, and both scores have a
published calibration. R4 expresses the decimal as a percentage (at most 100).

Calibrations (FHIR-NOTES §7):

- **LACE**: van Walraven C et al., CMAJ 2010;182(6):551-7 (PMC2845681), expected risk of
  death or unplanned readmission within 30 days of discharge to the community: 2.0% at a
  score of 0 rising to 43.7% at 19, from a logistic model of the score. The per-score values
  here are that logistic curve through the two published end points (logit-linear in the
  score); they round to the published figures at both ends.
- **HOSPITAL**: Donzé J et al., JAMA Intern Med 2013;173(8):632-8, risk bands low (0-4),
  intermediate (5-6) and high (7 and more) with estimated risks of potentially avoidable
  30-day readmission of 5.8%, 11.9% and 22.8%; the international validation (Donzé JD et
  al., JAMA Intern Med 2016;176(4):496-502, PMC5070968) found the estimated proportions per
  band matched the observed ones (Pearson P = .89).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from fhirbridge.fhir.invariants import check_invariants
from fhirbridge.risk._result import ScoreResult
from fhirbridge.risk.findings import score_notes
from fhirbridge.values import ENGINE_SYSTEM

__all__ = [
    "CALIBRATION_SOURCES",
    "COMPONENT_DISPLAYS",
    "IDENTIFIER_SYSTEM",
    "OUTCOMES",
    "RISK_PROBABILITY_SYSTEM",
    "SCORE_DISPLAYS",
    "SCORE_SYSTEM",
    "TAG",
    "expected_risk",
    "risk_assessment",
    "score_observation",
]

SCORE_SYSTEM = f"{ENGINE_SYSTEM}/CodeSystem/risk-score"
IDENTIFIER_SYSTEM = f"{ENGINE_SYSTEM}/identifier"
TAG = {"system": f"{ENGINE_SYSTEM}/tag", "code": "fhirbridge"}
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
UCUM = "http://unitsofmeasure.org"

#: Display of each score code (as in the CodeSystem).
SCORE_DISPLAYS = {
    "lace": "LACE index for readmission",
    "hospital": "HOSPITAL score for readmission",
}
#: Display of each component code ``{score}-{item}`` (as in the CodeSystem).
COMPONENT_DISPLAYS = {
    "lace-L": "LACE L: length of stay",
    "lace-A": "LACE A: acuity of admission",
    "lace-C": "LACE C: comorbidity (Charlson, LACE weights)",
    "lace-E": "LACE E: emergency department visits in the previous 6 months",
    "hospital-H": "HOSPITAL H: haemoglobin at discharge below 12 g/dL",
    "hospital-O": "HOSPITAL O: discharge from an oncology service",
    "hospital-S": "HOSPITAL S: sodium at discharge below 135 mmol/L",
    "hospital-P": "HOSPITAL P: procedure during the stay",
    "hospital-IT": "HOSPITAL IT: index admission type urgent or emergent",
    "hospital-A": "HOSPITAL A: admissions in the previous 12 months",
    "hospital-L": "HOSPITAL L: length of stay of 5 days or more",
}
#: What each score predicts (RiskAssessment.prediction.outcome.text).
OUTCOMES = {
    "lace": "Death or unplanned readmission within 30 days of discharge",
    "hospital": "Potentially avoidable readmission within 30 days of discharge",
}
#: Where each score's expected risk comes from (RiskAssessment.prediction.rationale).
CALIBRATION_SOURCES = {
    "lace": "van Walraven et al., CMAJ 2010;182(6):551-7: expected risk per LACE score "
    "(logistic curve from 2.0% at 0 to 43.7% at 19)",
    "hospital": "Donzé et al., JAMA Intern Med 2013;173(8):632-8: estimated risk per band "
    "(low 5.8%, intermediate 11.9%, high 22.8%)",
}
#: LACE's published end points: (score, expected risk in percent).
_LACE_ENDS = ((0, 2.0), (19, 43.7))
#: HOSPITAL's band risks in percent, by tier.
_HOSPITAL_BANDS = {"low": 5.8, "intermediate": 11.9, "high": 22.8}


def _logit(percent: float) -> float:
    share = percent / 100
    return math.log(share / (1 - share))


def expected_risk(result: ScoreResult) -> float:
    """The published expected risk of the score's outcome, in percent (one decimal)."""
    if result.score_name == "lace":
        (low_score, low), (high_score, high) = _LACE_ENDS
        if not low_score <= result.total <= high_score:
            raise ValueError(f"a LACE score is 0-19, not {result.total}")
        slope = (_logit(high) - _logit(low)) / (high_score - low_score)
        logit = _logit(low) + slope * (result.total - low_score)
        return round(100 / (1 + math.exp(-logit)), 1)
    if result.score_name == "hospital":
        if result.tier not in _HOSPITAL_BANDS:
            raise ValueError(f"unknown HOSPITAL tier {result.tier!r}")
        return _HOSPITAL_BANDS[result.tier]
    raise ValueError(f"no calibration for score {result.score_name!r}")


#: Tier -> risk-probability code; HOSPITAL's "intermediate" is "moderate" (text keeps the tier).
_PROBABILITY = {
    "low": ("low", "Low likelihood"),
    "moderate": ("moderate", "Moderate likelihood"),
    "intermediate": ("moderate", "Moderate likelihood"),
    "high": ("high", "High likelihood"),
}
#: The resource types R4 allows in Observation.derivedFrom.
_DERIVED_FROM_TYPES = frozenset(
    {
        "DocumentReference",
        "ImagingStudy",
        "Media",
        "QuestionnaireResponse",
        "Observation",
        "MolecularSequence",
    }
)


def _score_code(result: ScoreResult) -> dict[str, Any]:
    if result.score_name not in SCORE_DISPLAYS:
        raise ValueError(f"unknown score {result.score_name!r}")
    display = SCORE_DISPLAYS[result.score_name]
    return {
        "coding": [{"system": SCORE_SYSTEM, "code": result.score_name, "display": display}],
        "text": display,
    }


def _stamp(moment: datetime, name: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment.isoformat()


def _common(identifier: str) -> dict[str, Any]:
    return {
        "meta": {"tag": [dict(TAG)]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": identifier}],
        "status": "final",
    }


def score_observation(
    result: ScoreResult,
    *,
    patient: str,
    encounter: str,
    effective: datetime,
    identifier: str,
) -> dict[str, Any]:
    """The score as an Observation: valueInteger total, one component per item.

    ``patient`` and ``encounter`` are references (``Patient/1``); ``effective`` must be aware.
    ``derivedFrom`` lists the inputs R4 allows there (the laboratory Observations); every
    input goes to the RiskAssessment's ``basis``.
    """
    observation: dict[str, Any] = {"resourceType": "Observation", **_common(identifier)}
    observation["category"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "survey",
                    "display": "Survey",
                }
            ]
        }
    ]
    observation["code"] = _score_code(result)
    observation["subject"] = {"reference": patient}
    observation["encounter"] = {"reference": encounter}
    observation["effectiveDateTime"] = _stamp(effective, "effective")
    observation["valueInteger"] = result.total
    derived = [ref for ref in result.inputs if ref.split("/", 1)[0] in _DERIVED_FROM_TYPES]
    if derived:
        observation["derivedFrom"] = [{"reference": ref} for ref in derived]
    components = []
    for item, points in result.components.items():
        code = f"{result.score_name}-{item}"
        display = COMPONENT_DISPLAYS.get(code)
        if display is None:
            raise ValueError(f"unknown component {code!r}")
        components.append(
            {
                "code": {"coding": [{"system": SCORE_SYSTEM, "code": code, "display": display}]},
                "valueInteger": points,
            }
        )
    if components:
        observation["component"] = components
    notes = score_notes(result)
    if notes:
        observation["note"] = notes
    check_invariants(observation)
    return observation


def risk_assessment(
    result: ScoreResult,
    *,
    patient: str,
    encounter: str,
    observation_ref: str,
    occurrence: datetime,
    identifier: str,
) -> dict[str, Any]:
    """The score's tier as a RiskAssessment whose basis is the score Observation and the inputs.

    ``prediction[0].qualitativeRisk`` is coded in risk-probability (low, moderate, high; the
    HOSPITAL tier "intermediate" is coded moderate) with the score's own tier as text;
    ``probabilityDecimal`` is the published expected risk in percent (:func:`expected_risk`),
    ``whenRange`` the 30 days after discharge, ``rationale`` the calibration's source.
    """
    if result.tier not in _PROBABILITY:
        raise ValueError(f"unknown tier {result.tier!r}")
    code, display = _PROBABILITY[result.tier]
    basis = dict.fromkeys([observation_ref, *result.inputs])
    assessment: dict[str, Any] = {"resourceType": "RiskAssessment", **_common(identifier)}
    assessment["method"] = _score_code(result)
    assessment["subject"] = {"reference": patient}
    assessment["encounter"] = {"reference": encounter}
    assessment["occurrenceDateTime"] = _stamp(occurrence, "occurrence")
    assessment["basis"] = [{"reference": ref} for ref in basis]
    assessment["prediction"] = [
        {
            "outcome": {"text": OUTCOMES[result.score_name]},
            "probabilityDecimal": expected_risk(result),
            "qualitativeRisk": {
                "coding": [{"system": RISK_PROBABILITY_SYSTEM, "code": code, "display": display}],
                "text": result.tier,
            },
            "whenRange": {"high": {"value": 30, "unit": "days", "system": UCUM, "code": "d"}},
            "rationale": CALIBRATION_SOURCES[result.score_name],
        }
    ]
    check_invariants(assessment)
    return assessment
