"""The notification receiver: FHIR Subscriptions (R4 rest-hook, Backport topic-based) and
Da Vinci notification messages in, durable journal entries and background processing out.

:func:`create_app` builds the ASGI app; :func:`serve` runs it with uvicorn beside the
polling loop (what ``fhirbridge serve`` does).
"""

from __future__ import annotations

from fhirbridge.receiver._notify import (
    Message,
    NotificationError,
    NotificationEvent,
    SubscriptionStatus,
    TopicNotification,
    parse_message,
    parse_status,
    parse_topic_notification,
)
from fhirbridge.receiver._receiver import Receiver, ReceiverUnavailable
from fhirbridge.receiver._tracker import EventTracker, Observation
from fhirbridge.receiver.app import DEFAULT_PREFIX, create_app
from fhirbridge.receiver.server import serve

__all__ = [
    "DEFAULT_PREFIX",
    "EventTracker",
    "Message",
    "NotificationError",
    "NotificationEvent",
    "Observation",
    "Receiver",
    "ReceiverUnavailable",
    "SubscriptionStatus",
    "TopicNotification",
    "create_app",
    "parse_message",
    "parse_status",
    "parse_topic_notification",
    "serve",
]
