"""`subscribe` on servers that activate differently, or offer no topic-based subscriptions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.errors import ConfigError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.store import MemoryStore
from fhirbridge.subscriptions import EXT_SIGNING_KEY, ensure_subscriptions

BASE = "https://ehr.example.org/fhir"
NO_TOPICS = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{"mode": "server", "resource": [{"type": "Subscription"}]}],
}


async def no_sleep(seconds: float) -> None:
    """Return at once."""


def bridge_for(client: FhirClient, *subscriptions: dict[str, Any]) -> Bridge:
    """A bridge on ``client`` with ``subscriptions``."""
    config = load_config(
        data={
            "fhir": {"base_url": BASE},
            "store": {"url": "memory://"},
            "receiver": {"public_url": "https://bridge.example.org", "secret": "s3cret"},
            "subscriptions": list(subscriptions),
        }
    )
    return Bridge(config, client=client, store=MemoryStore())


class Server:
    """Holds Subscriptions; never activates one by itself (it expects clients to create
    them active), activates on a PUT with status active."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, Any]] = {}
        self.puts: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        path = request.url.path.removeprefix("/fhir/")
        if path == "metadata":
            return httpx.Response(200, json=NO_TOPICS)
        if request.method == "GET" and path == "Subscription":
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
        if request.method == "POST":
            body = {**json.loads(request.content), "id": f"s{len(self.held) + 1}"}
            self.held[body["id"]] = body
            return httpx.Response(201, json=body)
        rid = path.split("/")[1]
        if request.method == "PUT":
            body = json.loads(request.content)
            self.puts.append(body)
            self.held[rid] = body
            return httpx.Response(200, json=body)
        return httpx.Response(200, json=self.held[rid])


async def test_a_subscription_left_requested_is_set_active_and_said(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Created requested, never activated by the server: the engine updates it to active,
    and the summary says it did."""
    server = Server()
    router.route(host="ehr.example.org").mock(side_effect=server.handle)
    bridge = bridge_for(client, {"criteria": "Encounter?status=finished"})

    (row,) = await ensure_subscriptions(bridge, wait=0.2, sleep=no_sleep)

    assert (row["status"], row["action"]) == ("active", "created")
    assert "fhirbridge set it active" in row["note"]
    assert [p["status"] for p in server.puts] == ["active"]


async def test_no_topics_falls_back_to_r4_criteria_per_subscription(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A topic entry on a server without topic-based subscriptions becomes an R4 criteria
    Subscription (fallback_criteria); an entry without one is reported and skipped."""
    server = Server()
    router.route(host="ehr.example.org").mock(side_effect=server.handle)
    topic = "http://example.org/SubscriptionTopic/encounter-complete"
    bridge = bridge_for(
        client,
        {
            "topic": topic,
            "filters": ["class=IMP"],
            "payload": "id-only",
            "fallback_criteria": "Encounter?status=finished&class=IMP",
        },
        {"topic": topic + "-2"},
    )

    fallback, skipped = await ensure_subscriptions(bridge, wait=0.2, sleep=no_sleep)

    assert fallback["style"] == "r4" and fallback["status"] == "active"
    assert fallback["criteria"] == "Encounter?status=finished&class=IMP"
    assert fallback["payload"] == "full-resource"
    assert "no topic-based subscriptions here" in fallback["note"]
    (held,) = server.held.values()
    assert "profile" not in held["meta"]
    assert skipped["action"] == "skipped" and "fallback_criteria" in skipped["error"]


async def test_a_signing_secret_goes_out_as_the_secret_extension(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """subscriptions[].signing_secret is sent as the key servers sign deliveries with."""
    server = Server()
    router.route(host="ehr.example.org").mock(side_effect=server.handle)
    bridge = bridge_for(
        client, {"criteria": "Encounter?status=finished", "signing_secret": "hmac-key"}
    )

    await ensure_subscriptions(bridge, wait=0.2, sleep=no_sleep)

    (held,) = server.held.values()
    assert held["extension"] == [{"url": EXT_SIGNING_KEY, "valueString": "hmac-key"}]


def test_fallback_criteria_belongs_to_a_topic_entry() -> None:
    """fallback_criteria on an R4 criteria entry is a configuration error naming the key."""
    with pytest.raises(ConfigError, match="fallback_criteria"):
        load_config(
            data={
                "fhir": {"base_url": BASE},
                "subscriptions": [
                    {"criteria": "Encounter?status=finished", "fallback_criteria": "Encounter"}
                ],
            }
        )
