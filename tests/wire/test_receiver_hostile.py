"""Hostile input to the receiver: refused with an OperationOutcome before the journal, never a
5xx, never a journalled poison that later stops processing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import create_app
from fhirbridge.receiver._bounds import JsonLimits, load_json
from fhirbridge.receiver._notify import NotificationError
from fhirbridge.receiver._tracker import EventTracker
from fhirbridge.store import MemoryStore, SqliteStore
from tests._builders.receiver import AUTH, BASE, SECRET, encounter, journalled, put, running

MESSAGE_HEADER = {
    "resourceType": "MessageHeader",
    "eventCoding": {"code": "notification-discharge"},
}


def is_outcome(answer: Any) -> bool:
    """Whether an HTTP answer's body is a FHIR OperationOutcome sent as FHIR JSON."""
    return bool(
        answer.headers.get("content-type", "").startswith("application/fhir+json")
        and answer.json().get("resourceType") == "OperationOutcome"
    )


@pytest.mark.parametrize(
    "raw",
    [
        '"finished\\ud800"',  # an escaped lone high surrogate
        '"finished\\udfff"',  # an escaped lone low surrogate
        '"fin\\u0000ished"',  # NUL: PostgreSQL text cannot hold it
    ],
)
async def test_unstorable_text_is_refused_before_the_journal(raw: str) -> None:
    """Text the journal cannot store or re-encode is a 400 OperationOutcome; nothing is
    journalled; a valid notification after it is journalled and processed."""
    body = json.dumps(encounter(1)).replace('"finished"', raw, 1).encode()
    async with running() as r:
        answer = await r.http.put("/notify/Encounter/e1", content=body, headers=AUTH)
        assert answer.status_code == 400 and is_outcome(answer)
        assert "U+" in answer.json()["issue"][0]["diagnostics"]
        assert journalled(r) == []
        assert (await put(r, encounter(2))).status_code == 200
        await r.receiver.settle()
        assert journalled(r) == [("Encounter/e1", "2")]
        assert r.bridge.store.pending(10) == []


async def test_surrogate_pair_escapes_are_valid_unicode() -> None:
    """A properly paired escape (an emoji) is valid Unicode and is accepted."""
    body = json.dumps(encounter(1) | {"text": {"status": "generated", "div": "\U0001f600"}})
    async with running() as r:
        answer = await r.http.put("/notify/Encounter/e1", content=body.encode(), headers=AUTH)
        assert answer.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/notify", "[" * 100_000 + "]" * 100_000),  # RecursionError in json
        ("/notify", '{"a":' * 70 + "1" + "}" * 70),  # parses, but deeper than the limit
        ("/notify/$process-message", "[" * 5000 + "]" * 5000),
        ("/notify/Encounter/e1", "[" * 5000 + "]" * 5000),
        ("/notify/$process-message", '{"resourceType":"Bundle","type":"message","entry":5}'),
        ("/notify", '{"resourceType":"Bundle","type":"message","entry":5}'),
        (
            "/notify/$process-message",
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "message",
                    "entry": [{"resource": MESSAGE_HEADER | {"focus": 5}}],
                }
            ),
        ),
        (
            "/notify",
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "history",
                    "entry": [{"resource": {"resourceType": "Parameters", "parameter": 5}}],
                }
            ),
        ),
        (
            "/notify",
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "history",
                    "entry": [{"resource": {"resourceType": "SubscriptionStatus", "type": []}}],
                }
            ),
        ),
        (
            "/notify/$process-message",
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "message",
                    "entry": [{"resource": MESSAGE_HEADER | {"eventCoding": {"code": [1]}}}],
                }
            ),
        ),
        ("/notify", '{"resourceType":"Encounter","id":"x","s":"' + "a" * 1_100_000 + '"}'),
        ("/notify", b'{"resourceType":"Encounter","id":"\xed\xa0\x80"}'),  # CESU surrogate
        ("/notify", '{"resourceType":"../metadata","id":"x"}'),  # not a resource type
        ("/notify", '{"resourceType":"Encounter","id":"../x"}'),  # not a FHIR id
    ],
)
async def test_malformed_bodies_are_4xx_outcomes_and_dead_letters(
    path: str, body: str | bytes
) -> None:
    """Depth bombs, numbers where arrays belong, wrong types, huge strings, invalid UTF-8:
    a 4xx OperationOutcome and a dead letter, never a 5xx and never a journal entry."""
    method = "PUT" if path.count("/") == 3 else "POST"
    content = body.encode() if isinstance(body, str) else body
    async with running(max_body=5_000_000) as r:
        answer = await r.http.request(method, path, content=content, headers=AUTH)
        assert 400 <= answer.status_code < 500 and is_outcome(answer)
        assert len(r.bridge.store.dead_letters()) == 1
        assert journalled(r) == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/nowhere", AUTH, 404),  # no such route
        ("DELETE", "/notify", AUTH, 405),  # no such method
        ("GET", "/notify/Encounter/e1", AUTH, 405),
        ("PUT", "/notify/Encounter/e1", {}, 401),  # no secret
        ("POST", "/notify", AUTH | {"Content-Type": "application/fhir+xml"}, 415),
        ("POST", "/notify", AUTH | {"Content-Type": "text/plain"}, 415),
    ],
)
async def test_every_refusal_is_an_operation_outcome(
    method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """404, 405, 401 and 415 answers are OperationOutcomes in FHIR JSON, not plain text."""
    async with running() as r:
        answer = await r.http.request(method, path, content=b"<x/>", headers=headers)
        assert answer.status_code == status and is_outcome(answer)


async def test_too_large_is_413_outcome() -> None:
    """A body over max_body is a 413 OperationOutcome."""
    async with running(max_body=2000) as r:
        answer = await r.http.post("/notify", content=b"{" + b" " * 3000 + b"}", headers=AUTH)
        assert answer.status_code == 413 and is_outcome(answer)


def test_limits_are_configurable() -> None:
    """Depth, value count and string length come from JsonLimits."""
    small = JsonLimits(depth=3, elements=10, string=5)
    assert load_json(b'{"a": [1, "abcde"]}', small) == {"a": [1, "abcde"]}
    for body, reason in [
        (b'{"a": [[[1]]]}', "nested deeper than 3"),
        (b"[" + b"1," * 10 + b"1]", "more than 10 values"),
        (b'["abcdef"]', "longer than 5"),
    ]:
        with pytest.raises(NotificationError, match=reason):
            load_json(body, small)


def test_tracker_memory_is_bounded() -> None:
    """Heartbeats from 5,000 invented subscription ids keep at most ``capacity`` states;
    the one heard from most recently stays."""
    from fhirbridge.receiver._notify import SubscriptionStatus

    tracker = EventTracker(MemoryStore(), "ehr", capacity=100)
    for n in range(5000):
        tracker.observe(SubscriptionStatus(f"Subscription/s{n}", f"s{n}", "heartbeat"))
    assert len(tracker) == 100
    assert ("s4999", None) in list(tracker.topics())
    assert ("s0", None) not in list(tracker.topics())


async def test_dead_letters_keep_only_storable_text(tmp_path: Path) -> None:
    """A URL with NUL in it is refused and its dead letter written to SQLite with the NUL
    escaped (a PostgreSQL text column would refuse it, and the letter would be lost)."""
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    config = load_config(data={"fhir": {"base_url": BASE, "name": "ehr"}}, environ={})
    bridge = Bridge(config, client=None, store=store)
    app = create_app(bridge, secret=SECRET, max_body=10_000)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as http,
    ):
        body = json.dumps(encounter(1)).encode()
        answer = await http.put("/notify/Encounter/e%00%ED%B2%80", content=body, headers=AUTH)
    assert answer.status_code == 400 and is_outcome(answer)
    (letter,) = store.dead_letters()
    assert "\x00" not in letter.reference + letter.reason
    assert "\\x00" in letter.reference
    store.close()
