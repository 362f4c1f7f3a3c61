"""Ask the FHIR server for the configured Subscriptions, idempotently.

Two styles (R4 core Subscription, and the Subscriptions R5 Backport IG), chosen per
``subscriptions[]`` entry:

- ``criteria``: an R4 Subscription, ``channel.type rest-hook``, ``payload
  application/fhir+json`` for full-resource content (the server PUTs each resource to
  ``endpoint/[type]/[id]``) or no payload for empty content (an empty POST);
- ``topic``: a Subscriptions Backport one (profile ``backport-subscription``), criteria the
  topic canonical, ``_criteria`` filter extensions, the content code as the
  ``backport-payload-content`` extension of ``channel._payload``, an optional heartbeat.

The endpoint is ``receiver.public_url + /notify``; the shared secret goes out as the channel
header ``Authorization: Bearer <secret>``. R4 Subscription has no ``identifier`` element, so
each carries the engine's deterministic identifier as a ``meta.tag`` (system
``https://fhirbridge.dev/fhir/identifier``, a hash of endpoint, criteria and filters) plus the
engine tag: running again finds it by tag and updates it (only when it differs or is not
active) instead of creating another.

Servers differ in how a Subscription becomes active. The engine creates it ``requested`` and
waits; a server that leaves it ``requested`` (one that expects clients to create Subscriptions
``active``) gets an update to ``active``, and the summary says so. A server that declares no
topic-based subscriptions gets, for each ``topic`` entry with ``fallback_criteria``, an R4
criteria Subscription with the same meaning (said per Subscription); an entry without one is
reported and skipped. A ``signing_secret`` goes out as the Subscription's secret extension,
which servers that sign deliveries (``x-signature``: HMAC-SHA256 of the body) use as the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from fhirbridge import identity
from fhirbridge.config import Config, SubscriptionConfig
from fhirbridge.engine import Bridge
from fhirbridge.errors import ConfigError, FhirError, ResourceNotFound
from fhirbridge.fhir.capabilities import offers_topic_subscriptions
from fhirbridge.fhir.client import FhirClient
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, IDENTIFIER_SYSTEM

__all__ = [
    "BACKPORT_PROFILE",
    "DEFAULT_PREFIX",
    "build_subscription",
    "delete_subscriptions",
    "ensure_subscriptions",
    "fallback_spec",
    "list_subscriptions",
    "receiver_endpoint",
    "subscription_key",
]

log = structlog.get_logger(__name__)
#: The path under ``receiver.public_url`` where the receiver takes notifications.
DEFAULT_PREFIX = "/notify"
_BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_PROFILE = f"{_BP}/backport-subscription"
EXT_FILTER = f"{_BP}/backport-filter-criteria"
EXT_CONTENT = f"{_BP}/backport-payload-content"
EXT_HEARTBEAT = f"{_BP}/backport-heartbeat-period"
#: The extension that carries the HMAC key of signed deliveries (as Medplum reads it).
EXT_SIGNING_KEY = "https://www.medplum.com/fhir/StructureDefinition/subscription-secret"
FHIR_JSON = "application/fhir+json"
_COMPARED = ("criteria", "_criteria", "channel", "reason", "extension")
Sleep = Callable[[float], Awaitable[None]]


def receiver_endpoint(config: Config, prefix: str = DEFAULT_PREFIX) -> str:
    """Where the server must send notifications: ``receiver.public_url`` + ``prefix``."""
    if not config.receiver.public_url:
        raise ConfigError("receiver.public_url: needed to subscribe (the URL the server calls)")
    return config.receiver.public_url.rstrip("/") + "/" + prefix.strip("/")


def subscription_key(spec: SubscriptionConfig, endpoint: str) -> str:
    """The deterministic identifier of a configured subscription at an endpoint."""
    return identity.subscription_key(endpoint, spec.criteria or spec.topic, spec.filters)


def build_subscription(spec: SubscriptionConfig, *, endpoint: str, secret: str) -> dict[str, Any]:
    """The Subscription resource for one configured entry (status ``requested``)."""
    key = subscription_key(spec, endpoint)
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "header": [f"Authorization: Bearer {secret}"],
    }
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {
            "tag": [
                {"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE},
                {"system": IDENTIFIER_SYSTEM, "code": key},
            ]
        },
        "status": "requested",
        "reason": f"fhirbridge: {spec.criteria or spec.topic}",
        "criteria": spec.criteria or spec.topic,
        "channel": channel,
    }
    signing = spec.resolved_signing_secret()
    if signing:
        resource["extension"] = [{"url": EXT_SIGNING_KEY, "valueString": signing}]
    if spec.criteria is not None:
        if spec.payload == "id-only":
            raise ConfigError("subscriptions[]: id-only content needs a topic (R4 has no id-only)")
        if spec.heartbeat is not None or spec.filters:
            raise ConfigError("subscriptions[]: heartbeat and filters need a topic subscription")
        if spec.payload == "full-resource":
            channel["payload"] = FHIR_JSON
        return resource
    resource["meta"]["profile"] = [BACKPORT_PROFILE]
    if spec.filters:
        resource["_criteria"] = {
            "extension": [{"url": EXT_FILTER, "valueString": f} for f in spec.filters]
        }
    channel["payload"] = FHIR_JSON
    channel["_payload"] = {"extension": [{"url": EXT_CONTENT, "valueCode": spec.payload}]}
    if spec.heartbeat is not None:
        channel["extension"] = [{"url": EXT_HEARTBEAT, "valueUnsignedInt": spec.heartbeat}]
    return resource


def fallback_spec(spec: SubscriptionConfig) -> SubscriptionConfig | None:
    """The R4 criteria entry with the meaning of a topic entry (its ``fallback_criteria``),
    for a server without topic-based subscriptions; None when none is configured."""
    if spec.topic is None or not spec.fallback_criteria:
        return None
    payload = "empty" if spec.payload == "empty" else "full-resource"
    return spec.model_copy(
        update={
            "criteria": spec.fallback_criteria,
            "topic": None,
            "filters": [],
            "heartbeat": None,
            "payload": payload,
        }
    )


def _summary(resource: Mapping[str, Any], action: str = "") -> dict[str, Any]:
    """What callers see of a Subscription (never its headers: they hold the secret)."""
    channel = resource.get("channel") or {}
    tags = (resource.get("meta") or {}).get("tag") or ()
    content = next(
        (
            e.get("valueCode")
            for e in (channel.get("_payload") or {}).get("extension") or ()
            if e.get("url") == EXT_CONTENT
        ),
        "full-resource" if channel.get("payload") else "empty",
    )
    return {
        "id": resource.get("id"),
        "key": next((t.get("code") for t in tags if t.get("system") == IDENTIFIER_SYSTEM), None),
        "style": "topic" if "?" not in str(resource.get("criteria", "?")) else "r4",
        "criteria": resource.get("criteria"),
        "payload": content,
        "endpoint": channel.get("endpoint"),
        "status": resource.get("status"),
        "error": resource.get("error"),
        "action": action,
        "note": "",
    }


def _client(bridge: Bridge) -> FhirClient:
    if bridge.client is None:
        raise FhirError("managing subscriptions needs a FHIR client")
    return bridge.client


async def _await_active(
    client: FhirClient, resource: dict[str, Any], wait: float, sleep: Sleep
) -> dict[str, Any]:
    """Re-read until the server says active (or error/off), for at most ``wait`` seconds."""
    delay, waited = 0.05, 0.0
    while resource.get("status") not in ("active", "error", "off") and waited < wait:
        await sleep(delay)
        waited += delay
        delay = min(delay * 2, 1.0, max(wait - waited, 0.01))
        resource = await client.read("Subscription", str(resource["id"]))
    return resource


async def _topics_offered(client: FhirClient, config: Config) -> bool:
    if not any(spec.topic for spec in config.subscriptions):
        return True
    return offers_topic_subscriptions(await client.capabilities())


async def _activate(
    client: FhirClient, reached: dict[str, Any], wait: float, sleep: Sleep
) -> tuple[dict[str, Any], str]:
    """A Subscription the server left ``requested``: update it to ``active`` ourselves."""
    if reached.get("status") != "requested":
        return reached, ""
    updated = await client.update({**reached, "status": "active"})
    resource = updated.resource or await client.read("Subscription", str(reached["id"]))
    resource = await _await_active(client, resource, wait, sleep)
    log.info("subscription_activated", subscription=str(reached["id"]))
    return resource, "the server left it requested: fhirbridge set it active"


async def ensure_subscriptions(
    bridge: Bridge,
    config: Config | None = None,
    *,
    wait: float = 5.0,
    sleep: Sleep = asyncio.sleep,
) -> list[dict[str, Any]]:
    """Create or update every configured Subscription; returns one summary each, with
    ``action`` created/updated/unchanged/skipped, the ``status`` reached within ``wait``
    seconds and a ``note`` when the engine adapted (activated it, or fell back from a topic
    to R4 criteria).

    The receiver must already be listening: a topic subscription becomes active only after
    the server's handshake to it succeeds.
    """
    config = config or bridge.config
    client = _client(bridge)
    endpoint = receiver_endpoint(config)
    secret = config.receiver.resolved_secret()
    if not secret:
        raise ConfigError("receiver.secret: subscriptions send it back as their channel header")
    if ":" in secret:  # some servers cut a channel.header value at its first ':'
        log.warning("receiver_secret_has_colon", hint="servers such as Medplum cut it there")
    topics = await _topics_offered(client, config)
    results: list[dict[str, Any]] = []
    for configured in config.subscriptions:
        spec, note = configured, ""
        if configured.topic is not None and not topics:
            fallback = fallback_spec(configured)
            if fallback is None:
                log.warning("subscription_skipped", topic=configured.topic)
                results.append(
                    {
                        "id": None,
                        "key": subscription_key(configured, endpoint),
                        "style": "topic",
                        "criteria": configured.topic,
                        "payload": configured.payload,
                        "endpoint": endpoint,
                        "status": None,
                        "error": "the server offers no topic-based subscriptions; give "
                        "subscriptions[].fallback_criteria for an R4 criteria Subscription",
                        "action": "skipped",
                        "note": "",
                    }
                )
                continue
            spec = fallback
            note = f"no topic-based subscriptions here: R4 criteria instead of {configured.topic}"
        desired = build_subscription(spec, endpoint=endpoint, secret=secret)
        key = subscription_key(spec, endpoint)
        found = await client.search_all("Subscription", {"_tag": f"{IDENTIFIER_SYSTEM}|{key}"})
        for extra in found[1:]:  # a duplicate from a concurrent run
            await client.delete("Subscription", str(extra["id"]))
        if not found:
            written = (await client.create(desired)).resource
            action = "created"
        else:
            current = found[0]
            same = all(current.get(k) == desired.get(k) for k in _COMPARED)
            if same and current.get("status") == "active":
                written, action = current, "unchanged"
            else:
                written = (await client.update({**desired, "id": current["id"]})).resource
                action = "updated"
        reached = await _await_active(client, written, wait, sleep)
        reached, activated = await _activate(client, reached, wait, sleep)
        log.info("subscription_ensured", key=key, action=action, status=reached.get("status"))
        summary = _summary(reached, action)
        summary["note"] = "; ".join(filter(None, [note, activated]))
        results.append(summary)
    return results


async def list_subscriptions(bridge: Bridge) -> list[dict[str, Any]]:
    """Every Subscription on the server that carries the engine tag."""
    client = _client(bridge)
    found = await client.search_all(
        "Subscription", {"_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"}
    )
    return [_summary(resource) for resource in found]


async def delete_subscriptions(bridge: Bridge) -> list[dict[str, Any]]:
    """Delete every Subscription that carries the engine tag; returns what was deleted."""
    client = _client(bridge)
    deleted = []
    for summary in await list_subscriptions(bridge):
        try:
            await client.delete("Subscription", str(summary["id"]))
        except ResourceNotFound:
            continue
        deleted.append({**summary, "action": "deleted"})
    return deleted
