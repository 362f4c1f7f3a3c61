"""Notifications as plain values: parse what a sender POSTs or PUTs, check it, decide nothing.

Three shapes arrive (R4 rest-hook, the Subscriptions R5 Backport IG, Da Vinci Unsolicited
Notifications):

- R4 rest-hook: a full resource (``PUT [endpoint]/[type]/[id]``) or an empty ``POST``;
- Subscriptions Backport: a ``history`` Bundle whose first entry is the SubscriptionStatus
  (an R4 ``Parameters``, or an R4B ``SubscriptionStatus``), then the focus resources for
  full-resource content, or only ``notification-event.focus`` references for id-only;
- Da Vinci Unsolicited Notifications: a ``message`` Bundle whose first entry is a
  ``MessageHeader`` with an ``eventCoding`` and ``focus`` references.

The body is read first within bounds (:mod:`._bounds`). Everything here is pure: the caller
passes ``owns`` (is this URL on the configured server?),
and anything unusable raises :class:`NotificationError`, which the receiver answers with 400
and keeps as a dead letter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirbridge.detect.projection import resolve_references
from fhirbridge.errors import FhirBridgeError

__all__ = [
    "DAVINCI_EVENTS",
    "DAVINCI_EVENT_SYSTEM",
    "Message",
    "NotificationError",
    "NotificationEvent",
    "SubscriptionStatus",
    "TopicNotification",
    "is_topic_notification",
    "parse_message",
    "parse_resource",
    "parse_status",
    "parse_topic_notification",
    "split_reference",
]

DAVINCI_EVENT_SYSTEM = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
DAVINCI_EVENTS = frozenset(
    {"notification-admit", "notification-discharge", "notification-transfer"}
)
_STATUS_TYPES = frozenset({"Parameters", "SubscriptionStatus"})
_NOTIFICATION_TYPES = frozenset(
    {"handshake", "heartbeat", "event-notification", "query-status", "query-event"}
)
Owns = Callable[[str], bool]
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR ``id``


class NotificationError(FhirBridgeError):
    """The notification is not something the receiver can accept.

    ``status`` is the HTTP answer: 400 for a body that is not a usable notification, 422
    for one that is well formed but names what the server does not hold.
    """

    def __init__(self, message: str | None = None, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One ``notification-event``: its number and focus reference (as sent)."""

    number: int | None
    focus: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """The status part of a Backport notification (or of a ``$status`` answer)."""

    subscription: str
    subscription_id: str
    type: str
    status: str | None = None
    topic: str | None = None
    events_since_start: int | None = None
    events: tuple[NotificationEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicNotification:
    """A Backport notification: the status and the resources carried (full-resource)."""

    status: SubscriptionStatus
    resources: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """A Da Vinci notification message: its event code and the resources to journal."""

    event: str
    resources: tuple[Mapping[str, Any], ...]


def parse_resource(
    data: Any, resource_type: str | None = None, resource_id: str | None = None
) -> Mapping[str, Any]:
    """A FHIR resource with a type and an id (matching the URL's, when given)."""
    if not isinstance(data, Mapping):
        raise NotificationError("the body is not a FHIR resource (not a JSON object)")
    rtype, rid = data.get("resourceType"), data.get("id")
    if not isinstance(rtype, str) or not rtype:
        raise NotificationError("the body is not a FHIR resource (no resourceType)")
    if not _TYPE.fullmatch(rtype):
        raise NotificationError(f"{_show(rtype)} is not a FHIR resource type")
    if not isinstance(rid, str) or not rid:
        raise NotificationError(f"the {rtype} has no id")
    if not _ID.fullmatch(rid):
        raise NotificationError(f"{_show(rid)} is not a FHIR id (A-Z a-z 0-9 - ., 1-64)")
    if resource_type is not None and (rtype, rid) != (resource_type, resource_id):
        raise NotificationError(f"the body is {rtype}/{rid}, the URL {resource_type}/{resource_id}")
    return data


def _show(value: Any) -> str:
    """``repr(value)``, cut short: refusals echo what was sent, never all of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _list(value: Any, name: str) -> Sequence[Any]:
    """A JSON array (absent: empty), or :class:`NotificationError`."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise NotificationError(f"{name} is not a JSON array")
    return value


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    """A JSON object, or :class:`NotificationError`."""
    if not isinstance(value, Mapping):
        raise NotificationError(f"{name} is not a JSON object")
    return value


def split_reference(reference: str) -> tuple[str, str]:
    """``(type, id)`` of a reference ``[base/]Type/id[/_history/vid]``, or
    :class:`NotificationError` when it is not one (a search, ``..``, an id not FHIR's)."""
    path = reference
    if reference.startswith(("http://", "https://")):
        path = reference.split("//", 1)[1].partition("/")[2]
    parts = path.split("/")
    if len(parts) >= 4 and parts[-2] == "_history" and _ID.fullmatch(parts[-1]):
        parts = parts[:-2]
    if (
        "?" in reference
        or "#" in reference
        or len(parts) < 2
        or any(p in (".", "..") for p in parts)
        or not _TYPE.fullmatch(parts[-2])
        or not _ID.fullmatch(parts[-1])
    ):
        raise NotificationError(f"the reference {_show(reference)} is not [base/]Type/id")
    return parts[-2], parts[-1]


def is_topic_notification(data: Any) -> bool:
    """Whether ``data`` is a history Bundle that starts with a SubscriptionStatus."""
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        return False
    entries = data.get("entry")
    if data.get("type") != "history" or not isinstance(entries, list) or not entries:
        return False
    first = entries[0].get("resource") if isinstance(entries[0], Mapping) else None
    kind = first.get("resourceType") if isinstance(first, Mapping) else None
    return isinstance(kind, str) and kind in _STATUS_TYPES


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise NotificationError(f"{name} is not a number: {_show(value)}") from None
    if number < 0:
        raise NotificationError(f"{name} is negative: {number}")
    return number


def _value(item: Mapping[str, Any]) -> Any:
    return next((v for k, v in item.items() if k.startswith("value")), None)


def _reference(value: Any) -> str | None:
    if isinstance(value, Mapping):
        ref = value.get("reference")
        return ref if isinstance(ref, str) and ref else None
    return None


def _subscription_id(reference: str) -> str:
    parts = reference.split("?")[0].rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or parts[-2] != "Subscription" or not parts[-1]:
        raise NotificationError(
            f"the subscription reference {_show(reference)} is not Subscription/id"
        )
    return parts[-1]


def _event(parts: list[Any]) -> NotificationEvent:
    number: Any = None
    focus: str | None = None
    timestamp: str | None = None
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        name = part.get("name")
        if name in ("event-number", "eventNumber"):
            number = _value(part)
        elif name == "focus":
            focus = _reference(part.get("valueReference"))
        elif name == "timestamp":
            timestamp = _value(part)
    return NotificationEvent(_int(number, "event-number"), focus, timestamp)


def parse_status(resource: Mapping[str, Any]) -> SubscriptionStatus:
    """A backport SubscriptionStatus, from R4 ``Parameters`` or R4B ``SubscriptionStatus``."""
    fields: dict[str, Any] = {}
    events: list[NotificationEvent] = []
    if resource.get("resourceType") == "SubscriptionStatus":
        fields = {
            "subscription": _reference(resource.get("subscription")),
            "topic": resource.get("topic"),
            "status": resource.get("status"),
            "type": resource.get("type"),
            "since": resource.get("eventsSinceSubscriptionStart"),
        }
        for item in _list(resource.get("notificationEvent"), "notificationEvent"):
            if isinstance(item, Mapping):
                number = _int(item.get("eventNumber"), "eventNumber")
                events.append(NotificationEvent(number, _reference(item.get("focus"))))
    else:
        for param in _list(resource.get("parameter"), "Parameters.parameter"):
            if not isinstance(param, Mapping):
                continue
            name = param.get("name")
            if name == "subscription":
                fields["subscription"] = _reference(param.get("valueReference"))
            elif name in ("topic", "status", "type"):
                fields[name] = _value(param)
            elif name in ("events-since-subscription-start", "eventsSinceSubscriptionStart"):
                fields["since"] = _value(param)
            elif name in ("notification-event", "notificationEvent"):
                events.append(_event(list(_list(param.get("part"), "notification-event.part"))))
    subscription, kind = fields.get("subscription"), fields.get("type")
    if not isinstance(subscription, str):
        raise NotificationError("the SubscriptionStatus names no subscription")
    if not isinstance(kind, str) or kind not in _NOTIFICATION_TYPES:
        raise NotificationError(f"unknown notification type {_show(kind)}")
    topic, status = fields.get("topic"), fields.get("status")
    return SubscriptionStatus(
        subscription=subscription,
        subscription_id=_subscription_id(subscription),
        type=str(kind),
        status=status if isinstance(status, str) else None,
        topic=topic if isinstance(topic, str) else None,
        events_since_start=_int(fields.get("since"), "events-since-subscription-start"),
        events=tuple(events),
    )


def _check_url(url: Any, owns: Owns, what: str) -> None:
    """Refuse an absolute http(s) URL that is not on the configured server."""
    if isinstance(url, str) and url.startswith(("http://", "https://")) and not owns(url):
        raise NotificationError(f"{what} {_show(url)} is not on the configured FHIR server")


def parse_topic_notification(data: Mapping[str, Any], owns: Owns) -> TopicNotification:
    """A Backport notification Bundle: status, then the resources of full-resource entries.

    Every absolute ``fullUrl`` and focus reference must be on the configured server.
    """
    entries = [e for e in _list(data.get("entry"), "Bundle.entry") if isinstance(e, Mapping)]
    status = parse_status(_mapping(entries[0].get("resource") if entries else None, "entry[0]"))
    for event in status.events:
        _check_url(event.focus, owns, "the focus")
        if event.focus is not None:
            split_reference(event.focus)
    resources: list[Mapping[str, Any]] = []
    for entry in entries[1:]:
        _check_url(entry.get("fullUrl"), owns, "the entry fullUrl")
        if entry.get("resource") is not None:
            resources.append(parse_resource(entry["resource"]))
    return TopicNotification(status, tuple(resources))


def parse_message(data: Mapping[str, Any], owns: Owns) -> Message:
    """A Da Vinci notification message: the focus resources and the Patients in the Bundle,
    with their bundle-local (``urn:uuid:``) references resolved to ``Type/id``."""
    if data.get("resourceType") != "Bundle" or data.get("type") != "message":
        raise NotificationError("$process-message needs a Bundle of type message")
    entries = [e for e in _list(data.get("entry"), "Bundle.entry") if isinstance(e, Mapping)]
    header = entries[0].get("resource") if entries else None
    if not isinstance(header, Mapping) or header.get("resourceType") != "MessageHeader":
        raise NotificationError("the message Bundle does not start with a MessageHeader")
    coding = header.get("eventCoding")
    code = coding.get("code") if isinstance(coding, Mapping) else None
    if not isinstance(coding, Mapping) or not isinstance(code, str) or code not in DAVINCI_EVENTS:
        raise NotificationError(f"unsupported message event {_show(code)}")
    if coding.get("system") not in (None, DAVINCI_EVENT_SYSTEM):
        raise NotificationError(f"unsupported message event system {_show(coding.get('system'))}")
    ids: dict[str, str] = {}
    by_url: dict[str, Mapping[str, Any]] = {}
    for entry in entries[1:]:
        url = entry.get("fullUrl")
        _check_url(url, owns, "the entry fullUrl")
        resource = parse_resource(entry.get("resource"))
        local = f"{resource['resourceType']}/{resource['id']}"
        for key in (url, local):
            if isinstance(key, str):
                ids[key], by_url[key] = local, resource
    focus = [_reference(f) for f in _list(header.get("focus"), "MessageHeader.focus")]
    chosen = [by_url[f] for f in focus if f is not None and f in by_url]
    if not chosen:
        raise NotificationError("the message's focus is not in the Bundle")
    chosen += [r for r in by_url.values() if r.get("resourceType") == "Patient"]
    unique = {(r["resourceType"], r["id"]): r for r in chosen}
    return Message(str(code), tuple(resolve_references(r, ids) for r in unique.values()))
