"""The Subscriptions the engine asks for: R4 rest-hook and Backport topic shapes, their
deterministic identifiers, and configurations that cannot be expressed."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbridge.config import Config, SubscriptionConfig, load_config
from fhirbridge.errors import ConfigError
from fhirbridge.subscriptions import (
    BACKPORT_PROFILE,
    build_subscription,
    receiver_endpoint,
    subscription_key,
)
from fhirbridge.values import IDENTIFIER_SYSTEM

ENDPOINT = "https://bridge.example.org/notify"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-complete"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def config(**receiver: Any) -> Config:
    """A configuration with the given receiver section."""
    return load_config(
        data={"fhir": {"base_url": "https://ehr.example.org/fhir"}, "receiver": receiver}
    )


def test_r4_full_resource_subscription() -> None:
    """criteria style: rest-hook to the endpoint, fhir+json payload, the secret as a header,
    the engine tag and the deterministic identifier as tags."""
    spec = SubscriptionConfig(criteria="Encounter?status=finished")
    sub = build_subscription(spec, endpoint=ENDPOINT, secret="s3cret")
    assert sub["status"] == "requested"
    assert sub["criteria"] == "Encounter?status=finished"
    assert sub["channel"] == {
        "type": "rest-hook",
        "endpoint": ENDPOINT,
        "header": ["Authorization: Bearer s3cret"],
        "payload": "application/fhir+json",
    }
    tags = {t["system"]: t["code"] for t in sub["meta"]["tag"]}
    assert tags[IDENTIFIER_SYSTEM] == subscription_key(spec, ENDPOINT)
    assert "profile" not in sub["meta"]


def test_r4_empty_subscription_has_no_payload() -> None:
    """payload empty: no channel.payload, so the server sends an empty POST."""
    spec = SubscriptionConfig(criteria="Encounter?status=finished", payload="empty")
    assert "payload" not in build_subscription(spec, endpoint=ENDPOINT, secret="s")["channel"]


def test_topic_subscription_carries_backport_extensions() -> None:
    """topic style: the Backport profile, the topic as criteria, filter extensions on
    _criteria, the content code on channel._payload and the heartbeat on channel."""
    spec = SubscriptionConfig(topic=TOPIC, filters=["class=IMP"], payload="id-only", heartbeat=60)
    sub = build_subscription(spec, endpoint=ENDPOINT, secret="s")
    assert sub["meta"]["profile"] == [BACKPORT_PROFILE]
    assert sub["criteria"] == TOPIC
    assert sub["_criteria"] == {
        "extension": [{"url": f"{BP}/backport-filter-criteria", "valueString": "class=IMP"}]
    }
    channel = sub["channel"]
    assert channel["payload"] == "application/fhir+json"
    assert channel["_payload"] == {
        "extension": [{"url": f"{BP}/backport-payload-content", "valueCode": "id-only"}]
    }
    assert channel["extension"] == [
        {"url": f"{BP}/backport-heartbeat-period", "valueUnsignedInt": 60}
    ]


@pytest.mark.parametrize(
    "spec",
    [
        SubscriptionConfig(criteria="Encounter?", payload="id-only"),  # R4 has no id-only
        SubscriptionConfig(criteria="Encounter?", heartbeat=30),  # nor heartbeats
        SubscriptionConfig(criteria="Encounter?", filters=["class=IMP"]),  # nor filters
    ],
)
def test_what_r4_cannot_express_is_a_config_error(spec: SubscriptionConfig) -> None:
    """Backport-only features on a criteria subscription are refused, not dropped."""
    with pytest.raises(ConfigError, match="topic"):
        build_subscription(spec, endpoint=ENDPOINT, secret="s")


def test_key_is_stable_and_tells_subscriptions_apart() -> None:
    """The same entry at the same endpoint has one key; payload and heartbeat do not change
    it (they are updated in place); criteria, filters and endpoint do."""
    base = SubscriptionConfig(topic=TOPIC, filters=["class=IMP"])
    same = SubscriptionConfig(topic=TOPIC, filters=["class=IMP"], payload="empty", heartbeat=5)
    assert subscription_key(base, ENDPOINT) == subscription_key(same, ENDPOINT)
    other_filter = SubscriptionConfig(topic=TOPIC, filters=["class=AMB"])
    assert subscription_key(base, ENDPOINT) != subscription_key(other_filter, ENDPOINT)
    assert subscription_key(base, ENDPOINT) != subscription_key(base, ENDPOINT + "2")


def test_endpoint_is_public_url_plus_prefix() -> None:
    """The endpoint is receiver.public_url + /notify; without public_url it is an error."""
    assert receiver_endpoint(config(public_url="https://b.example/")) == "https://b.example/notify"
    with pytest.raises(ConfigError, match="public_url"):
        receiver_endpoint(config())
