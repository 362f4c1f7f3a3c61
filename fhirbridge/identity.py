"""Every deterministic identifier the engine mints, in one place.

Exactly-once rests on these: a Task, a risk score, a CarePlan or a Subscription written
twice (a replay, a restart, a second worker) carries the same identifier both times, so a
conditional create finds the first. Journals and servers already hold resources with these
values, so a format never changes: ``tests/unit/test_identity.py`` pins each one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from fhirbridge.values import ENGINE_SYSTEM, IDENTIFIER_SYSTEM

__all__ = [
    "DUPLICATE_SYSTEM",
    "OBSERVATION_PLACEHOLDER",
    "UNIT_TAG_SYSTEM",
    "careplan_identifier",
    "identifier_query",
    "identifier_token",
    "risk_identifier",
    "risk_observation_identifier",
    "subscription_key",
    "task_identifier",
    "unit_tag",
]

#: Stands for the score Observation in a planned RiskAssessment until it has an id.
OBSERVATION_PLACEHOLDER = "urn:fhirbridge:score-observation"
#: The ``meta.tag`` system naming the write unit a Provenance records.
UNIT_TAG_SYSTEM = f"{ENGINE_SYSTEM}/write-unit"
#: Where a healed duplicate keeps its former identifier (so it no longer claims it).
DUPLICATE_SYSTEM = f"{IDENTIFIER_SYSTEM}/duplicate"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def task_identifier(rule_id: str, action_id: str, transition_key: str) -> str:
    """The identifier of a planned Task (32 hex characters)."""
    return _digest(f"{rule_id}|{action_id}|{transition_key}", 32)


def risk_identifier(score: str, transition_key: str) -> str:
    """The identifier of a RiskAssessment for ``score`` (``lace``, ``hospital``)."""
    return _digest(f"risk|{score}|{transition_key}", 32)


def risk_observation_identifier(score: str, transition_key: str) -> str:
    """The identifier of the score Observation a RiskAssessment is based on."""
    return f"{risk_identifier(score, transition_key)}-observation"


def careplan_identifier(patient: str) -> str:
    """The identifier of a patient's transitional-care CarePlan."""
    return _digest(f"careplan|transitional-care|{patient}", 32)


def subscription_key(endpoint: str, criteria: str | None, filters: Iterable[str]) -> str:
    """The identifier (a ``meta.tag`` code) of a Subscription of ``criteria`` (or a topic)
    with ``filters`` at ``endpoint``."""
    basis = json.dumps([endpoint, criteria, sorted(filters)])
    return "subscription-" + _digest(basis, 24)


def unit_tag(transition_key: str, item_keys: Iterable[str]) -> str:
    """The code that names one write unit (a transition's outbox items) on its Provenance,
    so a unit written again finds the Provenance it already has."""
    return _digest("unit|" + json.dumps([transition_key, sorted(item_keys)]), 32)


def identifier_token(value: str) -> str:
    """The token search value ``system|value`` of an engine identifier."""
    return f"{IDENTIFIER_SYSTEM}|{value}"


def identifier_query(value: str) -> str:
    """The search (for ``If-None-Exist``) that finds the resource with this identifier."""
    return f"identifier={identifier_token(value)}"
