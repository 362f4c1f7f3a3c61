"""Parsing notifications into values: Backport status Bundles, Da Vinci messages, resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.receiver import (
    NotificationError,
    NotificationEvent,
    parse_message,
    parse_status,
    parse_topic_notification,
)
from fhirbridge.receiver._bounds import load_json
from fhirbridge.receiver._notify import is_topic_notification, parse_resource
from fhirbridge.receiver._receiver import same_server

DATA = Path(__file__).resolve().parents[1] / "data"
BASE = "http://127.0.0.1:8090/fhir"
owns = same_server(BASE)


def status_parameters(kind: str = "event-notification", **extra: Any) -> dict[str, Any]:
    """A backport SubscriptionStatus as sekmet sends it (kebab-case names, string numbers)."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "topic", "valueCanonical": "http://sekmet.dev/fhir/SubscriptionTopic/x"},
        {"name": "status", "valueCode": extra.get("status", "active")},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": extra.get("since", "2")},
    ]
    if kind == "event-notification":
        params.append(
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": "2"},
                    {"name": "timestamp", "valueInstant": "2026-11-23T15:11:54.687Z"},
                    {"name": "focus", "valueReference": {"reference": extra.get("focus", "")}},
                ],
            }
        )
    return {"resourceType": "Parameters", "id": "p", "parameter": params}


def history(*entries: dict[str, Any]) -> dict[str, Any]:
    """A history Bundle with the given entries."""
    return {"resourceType": "Bundle", "type": "history", "entry": list(entries)}


def load(name: str) -> dict[str, Any]:
    """A fixture from tests/data."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def test_sekmet_event_notification_parses() -> None:
    """Subscription id, topic, status, type, count and the event (number, focus) come out."""
    status = parse_status(status_parameters(focus=f"{BASE}/Encounter/e1"))
    assert status.subscription_id == "s1"
    assert status.topic == "http://sekmet.dev/fhir/SubscriptionTopic/x"
    assert (status.type, status.status, status.events_since_start) == (
        "event-notification",
        "active",
        2,
    )
    assert status.events == (
        NotificationEvent(2, f"{BASE}/Encounter/e1", "2026-11-23T15:11:54.687Z"),
    )


def test_r4b_subscription_status_and_camel_case_names_parse() -> None:
    """An R4B SubscriptionStatus and camelCase Parameters names mean the same."""
    r4b = parse_status(
        {
            "resourceType": "SubscriptionStatus",
            "status": "active",
            "type": "event-notification",
            "eventsSinceSubscriptionStart": "7",
            "subscription": {"reference": "Subscription/s9"},
            "notificationEvent": [{"eventNumber": "7", "focus": {"reference": "Encounter/e"}}],
        }
    )
    assert (r4b.subscription_id, r4b.events_since_start) == ("s9", 7)
    assert r4b.events == (NotificationEvent(7, "Encounter/e"),)
    camel = parse_status(
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "subscription", "valueReference": {"reference": "Subscription/s2"}},
                {"name": "type", "valueCode": "heartbeat"},
                {"name": "eventsSinceSubscriptionStart", "valueInteger": 4},
            ],
        }
    )
    assert (camel.type, camel.events_since_start, camel.events) == ("heartbeat", 4, ())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "type", "valueCode": "ping"}, "unknown notification type"),  # not a type
        ({"name": "subscription", "valueReference": {"reference": "Patient/1"}}, "not Subscrip"),
        ({"name": "events-since-subscription-start", "valueString": "x"}, "not a number"),
        ({"name": "events-since-subscription-start", "valueString": "-1"}, "negative"),
    ],
)
def test_bad_status_is_refused(change: dict[str, Any], message: str) -> None:
    """A status with a wrong type, subscription reference or count is a NotificationError."""
    params = status_parameters("heartbeat")
    params["parameter"] = [p for p in params["parameter"] if p["name"] != change["name"]]
    params["parameter"].append(change)
    with pytest.raises(NotificationError, match=message):
        parse_status(params)


def test_full_resource_entries_are_carried_and_foreign_urls_refused() -> None:
    """Entries' resources are returned; a fullUrl or focus on another host is refused."""
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished"}
    status = {"fullUrl": "urn:uuid:1", "resource": status_parameters(focus=f"{BASE}/Encounter/e1")}
    entry = {"fullUrl": f"{BASE}/Encounter/e1", "resource": encounter}
    note = parse_topic_notification(history(status, entry), owns)
    assert note.resources == (encounter,)
    foreign_entry = {**entry, "fullUrl": "https://evil.example.net/fhir/Encounter/e1"}
    with pytest.raises(NotificationError, match="not on the configured FHIR server"):
        parse_topic_notification(history(status, foreign_entry), owns)
    foreign_focus = {
        "fullUrl": "urn:uuid:1",
        "resource": status_parameters(focus="https://evil.example.net/fhir/Encounter/e1"),
    }
    with pytest.raises(NotificationError, match="focus"):
        parse_topic_notification(history(foreign_focus), owns)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (history({"resource": {"resourceType": "Parameters"}}), True),  # R4 backport
        (history({"resource": {"resourceType": "SubscriptionStatus"}}), True),  # R4B
        (history({"resource": {"resourceType": "Encounter"}}), False),  # plain history
        ({"resourceType": "Bundle", "type": "message", "entry": []}, False),  # a message
        ({"resourceType": "Encounter"}, False),  # a resource
        ([], False),  # not an object
    ],
)
def test_is_topic_notification(data: Any, expected: bool) -> None:
    """Only a history Bundle that starts with a SubscriptionStatus is a topic notification."""
    assert is_topic_notification(data) is expected


@pytest.mark.parametrize("event", ["admit", "transfer", "discharge"])
def test_davinci_message_journals_focus_and_patient_with_resolved_references(event: str) -> None:
    """The Da Vinci examples give their Encounter and Patient, ``urn:uuid:`` refs resolved."""
    message = parse_message(load(f"davinci-{event}-notification-message-bundle-01.json"), owns)
    assert message.event == f"notification-{event}"
    kinds = {r["resourceType"]: r for r in message.resources}
    assert set(kinds) == {"Encounter", "Patient"}
    subject = kinds["Encounter"]["subject"]["reference"]
    assert subject == "Patient/06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["entry"][0]["resource"].update(eventCoding={"code": "x"}), "unsupported"),
        (lambda b: b["entry"].pop(0), "MessageHeader"),  # no header first
        (lambda b: b["entry"][0]["resource"].update(focus=[]), "focus"),  # focus not in Bundle
        (lambda b: b["entry"][1].update(fullUrl="https://evil.example.net/E/1"), "not on"),
        (lambda b: b.update(type="collection"), "type message"),  # not a message
    ],
)
def test_bad_davinci_message_is_refused(change: Any, message: str) -> None:
    """A message without a usable header, focus or with a foreign fullUrl is refused."""
    bundle = load("davinci-discharge-notification-message-bundle-01.json")
    change(bundle)
    with pytest.raises(NotificationError, match=message):
        parse_message(bundle, owns)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<Encounter/>", "not JSON"),  # XML
        (b"[1, 2]", "not a JSON object"),  # JSON, not a resource
        (b'{"id": "e1"}', "no resourceType"),  # no type
        (b'{"resourceType": "Encounter"}', "has no id"),  # no id
        (b'{"resourceType": "Encounter", "id": "e2"}', "the URL Encounter/e1"),  # id mismatch
    ],
)
def test_resource_bodies_are_checked(body: bytes, message: str) -> None:
    """A rest-hook body must be JSON, a resource with type and id, and match the URL."""
    with pytest.raises(NotificationError, match=message):
        parse_resource(load_json(body), "Encounter", "e1")
