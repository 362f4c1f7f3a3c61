"""Push from managed FHIR services that have no FHIR Subscriptions: their cloud events.

Neither carries the resource version the engine needs reliably, so each event names a
resource that is **fetched from the configured server** and journalled like any
notification (never from a URL the event names: only ``Type/id`` and the version are taken,
after checking that the event is about the configured server).

**Azure Health Data Services** through Event Grid (``POST {prefix}/azure``):
``Microsoft.HealthcareApis.FhirResourceCreated``/``Updated``/``Deleted``, in the Event Grid
schema (an array of events with ``eventType`` and ``data``) or the CloudEvents 1.0 schema
(``type``, ``specversion``; one event or a batch array). ``data`` has ``resourceType``,
``resourceFhirAccount`` (the service's host), ``resourceFhirId`` and ``resourceVersionId``:
the version is read with ``vread``. The subscription validation handshake is answered:
``Microsoft.EventGrid.SubscriptionValidationEvent`` with ``{"validationResponse": code}``,
the CloudEvents ``OPTIONS`` with ``WebHook-Allowed-Origin``.

**Google Cloud Healthcare** through a Pub/Sub push subscription (``POST {prefix}/google``):
``{"message": {"attributes": {...}, "data": base64, "messageId": ...}, "subscription": ...}``;
``attributes.action`` is ``CreateResource``, ``UpdateResource``, ``PatchResource`` or
``DeleteResource``; ``data`` is the resource name
(``projects/P/locations/L/datasets/D/fhirStores/S/fhir/Type/id``) or, with
``payloadType: FullResource``, the resource itself. The name must lie under the configured
base URL's path.

Both authenticate as the receiver does (``Authorization: Bearer <secret>`` or
``X-Fhirbridge-Secret``; Event Grid delivers static headers), and also take the secret as a
``token`` query parameter, the form a Pub/Sub push endpoint can carry. A delete is
acknowledged and logged (type and id only). 200 only once the fetched version is durable;
503 asks the service to redeliver when the server or the journal failed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fhirbridge.errors import FhirError, ResourceNotFound, StoreError
from fhirbridge.receiver._bounds import load_json
from fhirbridge.receiver._notify import NotificationError, parse_resource
from fhirbridge.receiver._receiver import Receiver, ReceiverUnavailable

__all__ = [
    "AZURE_EVENT_TYPES",
    "CloudEvent",
    "CloudRoutes",
    "parse_event_grid",
    "parse_pubsub",
]

log = structlog.get_logger(__name__)
FHIR_JSON = "application/fhir+json"
_AZURE = "Microsoft.HealthcareApis.FhirResource"
AZURE_EVENT_TYPES = {
    f"{_AZURE}Created": "create",
    f"{_AZURE}Updated": "update",
    f"{_AZURE}Deleted": "delete",
}
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
_GOOGLE_ACTIONS = {
    "CreateResource": "create",
    "UpdateResource": "update",
    "PatchResource": "update",
    "DeleteResource": "delete",
}


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One change a cloud event reports: what happened to which resource, and how to get it.

    ``resource`` is set when the event carried the resource itself (Pub/Sub FullResource).
    """

    interaction: str
    resource_type: str
    resource_id: str
    version_id: str | None = None
    resource: Mapping[str, Any] | None = None

    @property
    def reference(self) -> str:
        """``Type/id``."""
        return f"{self.resource_type}/{self.resource_id}"


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise NotificationError(f"the event's {name} is not usable: {value!r}")
    return value


def parse_event_grid(data: Any, fhir_host: str) -> tuple[str | None, list[CloudEvent]]:
    """Events in the Event Grid or CloudEvents schema: (validation code, FHIR events).

    Every FHIR event must be about ``fhir_host`` (the configured server's host).
    """
    events = data if isinstance(data, list) else [data]
    found: list[CloudEvent] = []
    for event in events:
        if not isinstance(event, Mapping):
            raise NotificationError("an Event Grid event is not a JSON object")
        kind = event.get("eventType") or event.get("type")
        body = event.get("data") or {}
        if kind == VALIDATION_EVENT:
            code = body.get("validationCode") if isinstance(body, Mapping) else None
            if not isinstance(code, str) or not code:
                raise NotificationError("the validation event has no validationCode")
            return code, []
        interaction = AZURE_EVENT_TYPES.get(str(kind))
        if interaction is None:
            raise NotificationError(f"unsupported event type {kind!r}")
        if not isinstance(body, Mapping):
            raise NotificationError("the event's data is not a JSON object")
        account = str(body.get("resourceFhirAccount") or "").lower()
        if account != fhir_host.lower():
            raise NotificationError(
                f"the event is about {account or 'no FHIR service'}, not the configured server"
            )
        version = body.get("resourceVersionId")
        found.append(
            CloudEvent(
                interaction,
                _text(body.get("resourceType"), "resourceType"),
                _text(body.get("resourceFhirId"), "resourceFhirId"),
                str(version) if version is not None else None,
            )
        )
    return None, found


def _store_path(base_url: str) -> str:
    return urlsplit(base_url).path.strip("/")


def parse_pubsub(data: Any, base_url: str) -> CloudEvent:
    """One Pub/Sub push message from a Cloud Healthcare FHIR store on ``base_url``."""
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        raise NotificationError("not a Pub/Sub push message (no message object)")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise NotificationError("the message attributes are not a JSON object")
    interaction = _GOOGLE_ACTIONS.get(str(attributes.get("action")))
    if interaction is None:
        raise NotificationError(f"unsupported action {attributes.get('action')!r}")
    try:
        payload = base64.b64decode(str(message.get("data") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise NotificationError("the message data is not base64") from None
    store = _store_path(base_url)
    named = str(attributes.get("storeName") or "")
    if named and not store.endswith(named.strip("/") + "/fhir"):
        raise NotificationError("the message is about another FHIR store")
    if attributes.get("payloadType") == "FullResource" and interaction != "delete":
        resource = parse_resource(load_json(payload))
        return CloudEvent(
            interaction,
            str(resource["resourceType"]),
            str(resource["id"]),
            (resource.get("meta") or {}).get("versionId"),
            resource,
        )
    name = payload.decode("utf-8", "replace").strip().strip("/")
    head, _, tail = name.rpartition("/fhir/")
    if not head or not store.endswith(f"{head}/fhir"):
        raise NotificationError("the resource name is not under the configured FHIR store")
    parts = tail.split("/")
    if len(parts) != 2:
        raise NotificationError("the resource name does not end in Type/id")
    return CloudEvent(
        interaction,
        _text(parts[0], "resource type"),
        _text(parts[1], "resource id"),
        attributes.get("versionId"),
    )


def _outcome(status: int, text: str, severity: str = "error", **headers: str) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": "informational" if status == 200 else "processing",
                "diagnostics": text,
            }
        ],
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=FHIR_JSON,
        headers=headers or None,
    )


class CloudRoutes:
    """The two cloud-event endpoints of one receiver."""

    def __init__(self, receiver: Receiver, *, secret: str | None, max_body: int) -> None:
        self.receiver = receiver
        self.secret = secret.encode() if secret is not None else None
        self.max_body = max_body

    def _authorized(self, request: Request) -> bool:
        if self.secret is None:
            return True
        given = request.headers.get("x-fhirbridge-secret") or request.query_params.get("token")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(given.encode(), self.secret)

    async def _body(self, request: Request) -> bytes | None:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                return None
        return bytes(body)

    def _dead_letter(self, request: Request, reason: str, body: bytes) -> None:
        try:
            self.receiver.bridge.store.dead_letter(
                "notification", f"{request.method} {request.url.path}", reason, body
            )
        except StoreError as exc:
            log.error("dead_letter_failed", error=str(exc))

    async def _fetch(self, event: CloudEvent) -> Mapping[str, Any] | None:
        client = self.receiver.bridge.client
        if client is None:
            raise ReceiverUnavailable("no FHIR client to fetch the resource with")
        try:
            if event.version_id:
                return await client.vread(event.resource_type, event.resource_id, event.version_id)
            return await client.read(event.resource_type, event.resource_id)
        except ResourceNotFound:
            return None  # deleted since: nothing to journal
        except FhirError as exc:
            raise ReceiverUnavailable(f"cannot read {event.reference}: {exc}") from exc

    async def _journal(self, kind: str, events: list[CloudEvent]) -> str:
        resources: list[Mapping[str, Any]] = []
        for event in events:
            if event.interaction == "delete":
                log.info("notification_delete", resource=event.reference, via=kind)
                continue
            resource = event.resource if event.resource is not None else await self._fetch(event)
            if resource is not None:
                resources.append(resource)
        if resources:
            await self.receiver.accept(resources)
        return f"{len(resources)} of {len(events)} event(s) journalled"

    async def _serve(self, request: Request, kind: str, body: bytes | None, parse: Any) -> Response:
        count = self.receiver.metrics.received
        if not self._authorized(request):
            count(kind, "unauthorized")
            return _outcome(401, "missing or wrong notification secret")
        if body is None:
            count(kind, "too_large")
            return _outcome(413, f"the body is larger than {self.max_body} bytes")
        try:
            answer = await parse(body)
        except NotificationError as exc:
            count(kind, "invalid")
            self._dead_letter(request, exc.message, body)
            return _outcome(400, exc.message)
        except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
            # a shape no parser rule foresaw: refuse and keep it, never a 500
            count(kind, "invalid")
            reason = f"the event cannot be read ({type(exc).__name__})"
            log.warning("notification_unreadable", kind=kind, error=type(exc).__name__)
            self._dead_letter(request, reason, body)
            return _outcome(400, reason)
        except (ReceiverUnavailable, StoreError) as exc:
            count(kind, "unavailable")
            log.warning("notification_not_durable", kind=kind, error=type(exc).__name__)
            return _outcome(503, "not journalled; retry later", **{"Retry-After": "5"})
        count(kind, "accepted")
        return _outcome(200, str(answer), severity="information")

    async def event_grid(self, request: Request) -> Response:
        """``POST|OPTIONS {prefix}/azure``: Azure Health Data Services through Event Grid.

        The validation handshakes are answered before authentication: they carry no data and
        change nothing, and a subscription's first call may not carry its delivery headers.
        """
        if request.method == "OPTIONS":  # CloudEvents webhook validation (abuse protection)
            origin = request.headers.get("webhook-request-origin", "")
            if not origin:
                return Response(status_code=400)
            return Response(status_code=200, headers={"WebHook-Allowed-Origin": origin})
        host = urlsplit(self.receiver.bridge.config.fhir.base_url).netloc
        body = await self._body(request)
        if body is not None:
            try:
                code, _ = parse_event_grid(load_json(body, self.receiver.limits), host)
            except (NotificationError, ValueError, TypeError, KeyError, AttributeError):
                code = None
            if code is not None:
                log.info("event_grid_validated")
                return JSONResponse({"validationResponse": code})

        async def parse(raw: bytes) -> str:
            _, events = parse_event_grid(load_json(raw, self.receiver.limits), host)
            return await self._journal("event-grid", events)

        return await self._serve(request, "event-grid", body, parse)

    async def pubsub(self, request: Request) -> Response:
        """``POST {prefix}/google``: Google Cloud Healthcare through a Pub/Sub push."""
        base = self.receiver.bridge.config.fhir.base_url

        async def parse(raw: bytes) -> str:
            event = parse_pubsub(load_json(raw, self.receiver.limits), base)
            return await self._journal("pubsub", [event])

        return await self._serve(request, "pubsub", await self._body(request), parse)
