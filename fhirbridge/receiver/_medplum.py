"""Rest-hook deliveries in the style Medplum sends: a ``POST`` of the bare resource to exactly
the endpoint URL (not the R4 ``PUT endpoint/Type/id``), with headers

- ``X-Medplum-Subscription``: the Subscription's id;
- ``X-Medplum-Interaction``: ``create``, ``update`` or ``delete``;
- ``X-Medplum-Deleted-Resource``: ``Type/id`` of a delete (whose body is ``{}``);
- ``X-Signature``: when the Subscription carries a secret, the hex HMAC-SHA256 of the body
  under it;
- each ``channel.header`` value (cut at its first ``:`` after the name, so a secret sent
  there must hold no ``:``).

Every matching create or update fires, not only the change that matters, and failed
deliveries are retried for days: a resource whose content (all but ``meta``) equals the
journal's snapshot is acknowledged and not journalled again. A delete is acknowledged and
logged (type and id only): the journal keeps versions, and a deleted resource has none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from fhirbridge.receiver._bounds import load_json
from fhirbridge.receiver._notify import NotificationError, parse_resource
from fhirbridge.receiver._receiver import Receiver

__all__ = [
    "INTERACTION_HEADER",
    "Delivery",
    "is_medplum_delivery",
    "medplum_delivery",
    "parse_delivery",
    "signature_matches",
]

log = structlog.get_logger(__name__)
INTERACTION_HEADER = "x-medplum-interaction"
_INTERACTIONS = frozenset({"create", "update", "delete"})


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a delivery's headers say."""

    interaction: str
    subscription: str | None = None
    deleted: str | None = None


def is_medplum_delivery(headers: Mapping[str, str]) -> bool:
    """Whether the request carries ``X-Medplum-Interaction``."""
    return INTERACTION_HEADER in {k.lower() for k in headers}


def parse_delivery(headers: Mapping[str, str]) -> Delivery:
    """The interaction, subscription and deleted reference from the headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    interaction = lowered.get(INTERACTION_HEADER, "").strip().lower()
    if interaction not in _INTERACTIONS:
        raise NotificationError(f"unknown X-Medplum-Interaction {interaction!r}")
    deleted = lowered.get("x-medplum-deleted-resource", "").strip() or None
    return Delivery(interaction, lowered.get("x-medplum-subscription"), deleted)


def signature_matches(body: bytes, signature: str | None, keys: Sequence[str]) -> bool:
    """Whether ``signature`` is the hex HMAC-SHA256 of ``body`` under one of ``keys``
    (compared in constant time)."""
    if not signature:
        return False
    given = signature.strip().lower().encode()
    return any(
        hmac.compare_digest(hmac.new(k.encode(), body, hashlib.sha256).hexdigest().encode(), given)
        for k in keys
    )


def _content(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _unchanged(receiver: Receiver, resource: Mapping[str, Any]) -> bool:
    snapshot = receiver.bridge.store.snapshot(
        receiver.bridge.server, str(resource["resourceType"]), str(resource["id"])
    )
    if snapshot is None:
        return False
    return _content(json.loads(snapshot.raw)) == _content(resource)


async def medplum_delivery(
    receiver: Receiver, body: bytes, headers: Mapping[str, str], keys: Sequence[str]
) -> tuple[str, str]:
    """Handle one delivery; returns (kind, what was done). With signing ``keys`` configured,
    a delivery without a matching ``X-Signature`` is refused."""
    delivery = parse_delivery(headers)
    lowered = {k.lower(): v for k, v in headers.items()}
    if keys and not signature_matches(body, lowered.get("x-signature"), keys):
        raise NotificationError("the X-Signature does not match the body under any signing key")
    data = load_json(body, receiver.limits)
    if delivery.interaction == "delete":
        if not isinstance(data, Mapping):
            raise NotificationError("a delete notice must be a JSON object")
        reference = delivery.deleted
        if reference is None and data.get("resourceType") and data.get("id"):
            reference = f"{data['resourceType']}/{data['id']}"
        log.info("notification_delete", resource=reference, subscription=delivery.subscription)
        return "delete", f"delete of {reference or 'an unnamed resource'} noted"
    resource = parse_resource(data)
    if _unchanged(receiver, resource):
        log.info(
            "notification_unchanged",
            resource=f"{resource['resourceType']}/{resource['id']}",
            interaction=delivery.interaction,
        )
        return "rest-hook", "unchanged content; not reprocessed"
    await receiver.accept([body])
    return "rest-hook", f"{delivery.interaction} journalled"
