"""Turn risk scores into planned writes.

The scores themselves are pure (:mod:`fhirbridge.risk`); their inputs (the patient's
Conditions, Encounters, laboratory Observations and Procedures) are looked up in batches by
:class:`fhirbridge.pipeline.Lookups`. This module scores one index stay and builds the
:class:`~fhirbridge.values.RecordRisk` actions for the score Observation and the
RiskAssessment.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

import structlog

from fhirbridge.config import RiskConfig
from fhirbridge.identity import (
    OBSERVATION_PLACEHOLDER,
    risk_identifier,
    risk_observation_identifier,
)
from fhirbridge.risk import ScoreResult, hospital, lace, risk_assessment, score_observation
from fhirbridge.risk.eligibility import not_scored_reason
from fhirbridge.risk.findings import score_details
from fhirbridge.values import RecordRisk, Transition

__all__ = ["RiskInputs", "score", "score_actions"]

log = structlog.get_logger(__name__)
RiskInputs = dict[str, list[dict[str, Any]]]


def score(
    encounter: Mapping[str, Any],
    inputs: RiskInputs,
    tz: tzinfo,
    *,
    patient: Mapping[str, Any] | None = None,
    settings: RiskConfig | None = None,
) -> dict[str, ScoreResult]:
    """LACE and HOSPITAL for one index stay (pure); nothing for a death in hospital.

    ``patient`` (the Patient resource) tells a death by the discharge date; ``settings`` is the
    ``risk`` configuration (oncology services, organizations and locations).
    """
    reason = not_scored_reason(encounter, patient, tz=tz)
    if reason is not None:
        log.info("risk_not_scored", encounter=encounter.get("id"), reason=reason)
        return {}
    oncology = (settings or RiskConfig()).oncology
    own = encounter.get("id")
    others = [e for e in inputs["encounters"] if e.get("id") != own]
    return {
        "lace": lace(encounter, conditions=inputs["conditions"], encounters=others, tz=tz),
        "hospital": hospital(
            encounter,
            observations=inputs["observations"],
            procedures=inputs["procedures"],
            encounters=others,
            tz=tz,
            oncology_services=oncology.services,
            oncology_organizations=oncology.organizations,
            oncology_locations=oncology.locations,
        ),
    }


def score_actions(
    results: Mapping[str, ScoreResult], transition: Transition, when: datetime
) -> list[RecordRisk]:
    """The planned writes of the scores of one discharge (deterministic identifiers)."""
    actions: list[RecordRisk] = []
    encounter = transition.encounter or transition.focus
    for name, result in results.items():
        identifier = risk_identifier(name, transition.key)
        observation = score_observation(
            result,
            patient=transition.patient,
            encounter=encounter,
            effective=when,
            identifier=risk_observation_identifier(name, transition.key),
        )
        assessment = risk_assessment(
            result,
            patient=transition.patient,
            encounter=encounter,
            observation_ref=OBSERVATION_PLACEHOLDER,
            occurrence=when,
            identifier=identifier,
        )
        actions.append(
            RecordRisk(
                score=name,
                tier=result.tier,
                total=result.total,
                patient=transition.patient,
                encounter=encounter,
                identifier=identifier,
                observation=observation,
                risk_assessment=assessment,
                transition_key=transition.key,
                details=score_details(result),
            )
        )
    return actions
