"""Turn risk scores into planned writes.

The scores themselves are pure (:mod:`fhirbridge.risk`); their inputs (the patient's
Conditions, Encounters, laboratory Observations and Procedures) are looked up in batches by
:class:`fhirbridge.pipeline.Lookups`. This module scores one index stay and builds the
:class:`~fhirbridge.values.RecordRisk` actions for the score Observation and the
RiskAssessment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from fhirbridge.risk import ScoreResult, hospital, lace, risk_assessment, score_observation
from fhirbridge.values import RecordRisk, Transition
from fhirbridge.writeback.writer import OBSERVATION_PLACEHOLDER

__all__ = ["RiskInputs", "score", "score_actions"]

RiskInputs = dict[str, list[dict[str, Any]]]


def score(encounter: Mapping[str, Any], inputs: RiskInputs, tz: tzinfo) -> dict[str, ScoreResult]:
    """LACE and HOSPITAL for one index stay (pure)."""
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
        ),
    }


def score_actions(
    results: Mapping[str, ScoreResult], transition: Transition, when: datetime
) -> list[RecordRisk]:
    """The planned writes of the scores of one discharge (deterministic identifiers)."""
    actions: list[RecordRisk] = []
    encounter = transition.encounter or transition.focus
    for name, result in results.items():
        identifier = hashlib.sha256(f"risk|{name}|{transition.key}".encode()).hexdigest()[:32]
        observation = score_observation(
            result,
            patient=transition.patient,
            encounter=encounter,
            effective=when,
            identifier=f"{identifier}-observation",
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
            )
        )
    return actions
