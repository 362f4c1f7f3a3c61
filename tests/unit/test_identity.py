"""The engine's deterministic identifiers, pinned: journals and servers already hold them."""

from __future__ import annotations

import pytest

from fhirbridge import identity
from fhirbridge.config import SubscriptionConfig
from fhirbridge.rules.evaluate import task_identifier
from fhirbridge.subscriptions import subscription_key

TRANSITION = "sekmet|discharge|Encounter/e1"


def test_task_identifier_format_is_pinned() -> None:
    """A Task's identifier is sha256("rule|action|transition key"), 32 hex characters."""
    value = identity.task_identifier("tcm-discharge", "tcm-contact", TRANSITION)
    assert value == "b337ee19348f6afa4126a36ef5e1b6d2"
    assert task_identifier("tcm-discharge", "tcm-contact", TRANSITION) == value


def test_risk_identifiers_are_pinned() -> None:
    """The RiskAssessment's identifier and its score Observation's (``-observation``)."""
    assert identity.risk_identifier("lace", TRANSITION) == "e56be1f04e8b4bc5cf06574e2479b7ac"
    assert (
        identity.risk_observation_identifier("lace", TRANSITION)
        == "e56be1f04e8b4bc5cf06574e2479b7ac-observation"
    )


def test_careplan_identifier_is_pinned() -> None:
    """One transitional-care CarePlan per patient, named by a hash of the patient."""
    assert identity.careplan_identifier("Patient/p1") == "d7fdae58b62811d1e3d3933cb0bfb2ae"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # an R4 criteria subscription
        (
            SubscriptionConfig(criteria="Encounter?status=finished"),
            "subscription-c86b30a29b506e2c6555c432",
        ),
        # a topic subscription with filters (their order does not matter)
        (
            SubscriptionConfig(
                topic="http://hl7.org/SubscriptionTopic/encounter-end",
                filters=["Encounter?class=IMP", "Encounter?patient=Patient/1"],
            ),
            "subscription-380c6b7b60351a8057650034",
        ),
    ],
)
def test_subscription_key_is_pinned(spec: SubscriptionConfig, expected: str) -> None:
    """A Subscription's tag code hashes endpoint, criteria or topic, and sorted filters."""
    assert subscription_key(spec, "https://bridge.example/notify") == expected


def test_unit_tag_ignores_item_order_and_depends_on_the_items() -> None:
    """A write unit's tag is the same for the same items in any order, and differs when the
    unit holds other items (a later replay of one dead item is a unit of its own)."""
    one = identity.unit_tag(TRANSITION, ["task:a", "risk:b"])
    assert one == identity.unit_tag(TRANSITION, ["risk:b", "task:a"])
    assert one != identity.unit_tag(TRANSITION, ["task:a"])
    assert len(one) == 32


def test_identifier_query_names_the_engine_system() -> None:
    """If-None-Exist searches by the engine's identifier system."""
    assert identity.identifier_query("abc") == (
        "identifier=https://fhirbridge.dev/fhir/identifier|abc"
    )
