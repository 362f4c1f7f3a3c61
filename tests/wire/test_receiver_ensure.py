"""ensure_subscriptions against a respx-mocked server: create when missing, leave alone when
active and equal, update when changed or in error, remove duplicates, wait for active."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import respx

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.store import MemoryStore
from fhirbridge.subscriptions import (
    build_subscription,
    delete_subscriptions,
    ensure_subscriptions,
    receiver_endpoint,
)
from fhirbridge.values import IDENTIFIER_SYSTEM

BASE = "https://ehr.example.org/fhir"


def bridge_for(client: FhirClient, payload: str = "full-resource") -> Bridge:
    """A bridge on ``client`` configured with one R4 subscription."""
    config = load_config(
        data={
            "fhir": {"base_url": BASE},
            "store": {"url": "memory://"},
            "receiver": {"public_url": "https://bridge.example.org", "secret": "s3cret"},
            "subscriptions": [{"criteria": "Encounter?status=finished", "payload": payload}],
        }
    )
    return Bridge(config, client=client, store=MemoryStore())


def desired(bridge: Bridge, **changes: Any) -> dict[str, Any]:
    """The Subscription the bridge's configuration asks for, as the server would hold it."""
    spec = bridge.config.subscriptions[0]
    sub = build_subscription(spec, endpoint=receiver_endpoint(bridge.config), secret="s3cret")
    return {**sub, "id": "sub1", **changes}


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    """A searchset of ``resources``."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def no_sleep() -> Callable[[float], Awaitable[None]]:
    """An async sleep that returns at once."""

    async def sleep(seconds: float) -> None:
        return None

    return sleep


async def test_missing_subscription_is_created_and_awaited_until_active(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Nothing found by identifier tag: POST it; the server answers requested, a re-read
    says active."""
    bridge = bridge_for(client)
    search = router.get(f"{BASE}/Subscription").respond(200, json=searchset())
    created = router.post(f"{BASE}/Subscription").respond(
        201, json=desired(bridge, status="requested")
    )
    router.get(f"{BASE}/Subscription/sub1").respond(200, json=desired(bridge, status="active"))
    (result,) = await ensure_subscriptions(bridge, sleep=no_sleep())
    assert (result["action"], result["status"], result["id"]) == ("created", "active", "sub1")
    tag = search.calls[0].request.url.params["_tag"]
    assert tag.startswith(f"{IDENTIFIER_SYSTEM}|subscription-")
    sent = json.loads(created.calls[0].request.content)
    assert sent["channel"]["header"] == ["Authorization: Bearer s3cret"]
    assert "header" not in json.dumps(result)  # the secret never comes back to the caller


async def test_active_and_equal_subscription_is_left_alone(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Found, active and as configured: no write at all."""
    bridge = bridge_for(client)
    router.get(f"{BASE}/Subscription").respond(
        200, json=searchset(desired(bridge, status="active"))
    )
    writes = router.route(method__in=["POST", "PUT", "DELETE"]).respond(500)
    (result,) = await ensure_subscriptions(bridge, sleep=no_sleep())
    assert result["action"] == "unchanged"
    assert writes.call_count == 0


async def test_changed_or_errored_subscription_is_updated_and_duplicates_removed(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Found in error with another payload, plus a duplicate: the first is PUT back as
    requested with the configured content, the duplicate deleted."""
    bridge = bridge_for(client, payload="empty")
    stale = desired(bridge_for(client), status="error", error="Delivery failed")
    duplicate = {**stale, "id": "sub2"}
    router.get(f"{BASE}/Subscription").respond(200, json=searchset(stale, duplicate))
    deleted = router.delete(f"{BASE}/Subscription/sub2").respond(200)
    updated = router.put(f"{BASE}/Subscription/sub1").respond(
        200, json=desired(bridge, status="active")
    )
    (result,) = await ensure_subscriptions(bridge, sleep=no_sleep())
    assert (result["action"], result["status"], result["payload"]) == (
        "updated",
        "active",
        "empty",
    )
    assert deleted.call_count == 1
    sent = json.loads(updated.calls[0].request.content)
    assert sent["status"] == "requested" and "payload" not in sent["channel"]


async def test_wait_for_active_is_bounded(client: FhirClient, router: respx.MockRouter) -> None:
    """A server that never activates, not even when asked to: each wait ends (once for the
    server, once after the engine's update to active) and the status is reported as is."""
    bridge = bridge_for(client)
    router.get(f"{BASE}/Subscription").respond(200, json=searchset())
    router.post(f"{BASE}/Subscription").respond(201, json=desired(bridge, status="requested"))
    reads = router.get(f"{BASE}/Subscription/sub1").respond(
        200, json=desired(bridge, status="requested")
    )
    router.put(f"{BASE}/Subscription/sub1").respond(200, json=desired(bridge, status="requested"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    (result,) = await ensure_subscriptions(bridge, wait=2.0, sleep=sleep)
    assert result["status"] == "requested"
    assert sum(slept) <= 4.2 and reads.call_count == len(slept)


async def test_delete_removes_every_engine_subscription(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """delete_subscriptions deletes what the engine-tag search finds."""
    bridge = bridge_for(client)
    router.get(f"{BASE}/Subscription").respond(
        200, json=searchset(desired(bridge), {**desired(bridge), "id": "sub2"})
    )
    deleted = router.route(method="DELETE").mock(return_value=httpx.Response(200))
    gone = await delete_subscriptions(bridge)
    assert [g["id"] for g in gone] == ["sub1", "sub2"]
    assert deleted.call_count == 2
