"""No poison pill: a version that raises while it is evaluated (or that the journal cannot
store) is dead-lettered with the exception's type and message, and the versions before and
after it, from every source, are processed.

Two poisons: a discharge at ``0001-01-01T00:00:00+14:00`` (an ``OverflowError`` when its
local date is taken, an error the engine did not catch before) and a status with a lone
surrogate (the journal cannot encode it when it stores the snapshot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RetryPolicy
from fhirbridge.sources.hl7v2 import ingest_hl7
from fhirbridge.store import SqliteStore
from tests._builders.hl7 import MRN, VISIT, FakeFhir, adt, make_bridge
from tests._builders.receiver import (
    AUTH,
    BASE,
    DATA,
    NOW,
    encounter,
    notification,
    notify,
    put,
    running,
)

OVERFLOW = "0001-01-01T00:00:00+14:00"


def overflowing(version: int, rid: str) -> dict[str, Any]:
    """A discharge whose end is a date out of range once taken to UTC."""
    poison = encounter(version, rid=rid)
    poison["period"]["end"] = OVERFLOW
    return poison


def assert_dead(store: Any, reference: str, error: str) -> None:
    """The one rejected version is ``reference``, with the exception type in the reason."""
    (letter,) = [d for d in store.dead_letters() if d.source == "process"]
    assert letter.rejected_version() is not None
    assert f"{reference}/_history/" in letter.reference
    assert f"cannot process {reference}: " in letter.reason and error in letter.reason
    assert store.pending() == []


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    """One page, stamped with the server's clock."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": "2026-11-21T12:00:00Z"},
        "entry": [{"resource": r} for r in resources],
    }


@pytest.mark.parametrize(
    ("poison", "error"),
    [
        (overflowing(1, "e2"), "OverflowError"),  # raised by evaluation
        ({**encounter(1, rid="e2"), "status": "finished\ud800"}, "surrogates"),  # commit
    ],
)
async def test_a_poll_page_with_a_poison_version(
    tmp_path: Path, poison: dict[str, Any], error: str
) -> None:
    """A page [valid, poison, valid] of three patients: both valid discharges are
    journalled with their work, the poison is dead-lettered, the watermark moves, nothing
    is pending."""
    poison = {**poison, "subject": {"reference": "Patient/p2"}}
    last = {**encounter(1, rid="e3"), "subject": {"reference": "Patient/p3"}}
    page = searchset(encounter(1, rid="e1"), poison, last)

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":  # no batch: lookups search one by one
            return httpx.Response(405, json={"resourceType": "OperationOutcome"})
        if "_lastUpdated" in request.url.params:
            return httpx.Response(200, content=json.dumps(page).encode())
        return httpx.Response(200, json=searchset())

    client = FhirClient(BASE, transport=httpx.MockTransport(server), retry=RetryPolicy(attempts=1))
    config = load_config(data={"fhir": {"base_url": BASE}, "engine": {"watch": ["Encounter"]}})
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    bridge = Bridge(config, client=client, store=store, clock=FixedClock(NOW))
    bridge.writer = None
    stats = await bridge.run_once()
    assert (stats.processed, stats.rejected) == (3, 1)
    assert sorted(t.transition.focus for t in store.transitions()) == [
        "Encounter/e1",
        "Encounter/e3",
    ]
    # per discharge: TCM contact and visit, medication reconciliation, coverage review (the
    # server holds no Coverage)
    assert len([i for i in store.outbox_items() if i.kind == "create-task"]) == 8
    assert_dead(store, "Encounter/e2", error)
    assert store.watermark("default", "Encounter") is not None
    await bridge.aclose()


async def test_a_rest_hook_poison_between_two_valid_notifications() -> None:
    """Three PUTs (valid, poison, valid) of one patient: the worker plans both valid
    discharges and dead-letters the poison; the pass does not fail."""
    async with running() as r:
        for resource in (encounter(2, rid="e1"), overflowing(2, "e2"), encounter(2, rid="e3")):
            assert (await put(r, resource)).status_code == 200
        await r.receiver.settle()
        focuses = sorted(t.transition.focus for t in r.bridge.store.transitions())
        assert focuses == ["Encounter/e1", "Encounter/e3"]
        assert_dead(r.bridge.store, "Encounter/e2", "OverflowError")


async def test_a_topic_notification_poison_between_two_valid_ones(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Full-resource topic events 1, 2 (poison), 3: events 1 and 3 are processed."""
    router.route().respond(404)
    async with running(client) as r:
        await notify(r, notification("handshake", since=0))
        resources = (encounter(2, rid="e1"), overflowing(2, "e2"), encounter(2, rid="e3"))
        for number, resource in enumerate(resources, start=1):
            answer = await notify(
                r, notification("event-notification", number, resources=(resource,))
            )
            assert answer.status_code == 200
        focuses = sorted(t.transition.focus for t in r.bridge.store.transitions())
        assert focuses == ["Encounter/e1", "Encounter/e3"]
        assert_dead(r.bridge.store, "Encounter/e2", "OverflowError")


def message(name: str, *, poison: bool = False) -> bytes:
    """A Da Vinci notification example, its Encounter's end made out of range if asked."""
    bundle = json.loads((DATA / name).read_bytes())
    if poison:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Encounter":
                entry["resource"].setdefault("period", {})["end"] = OVERFLOW
    return json.dumps(bundle).encode()


async def test_a_davinci_message_poison_between_two_valid_messages() -> None:
    """An admit, a poisoned discharge, a transfer: the admit and the transfer are
    processed, the discharge's Encounter version is dead-lettered."""
    bodies = [
        message("davinci-admit-notification-message-bundle-01.json"),
        message("davinci-discharge-notification-message-bundle-01.json", poison=True),
        message("davinci-transfer-notification-message-bundle-01.json"),
    ]
    async with running() as r:
        for body in bodies:
            answer = await r.http.post("/notify/$process-message", content=body, headers=AUTH)
            assert answer.status_code == 200
        await r.receiver.settle()
        store = r.bridge.store
        (letter,) = [d for d in store.dead_letters() if d.source == "process"]
        assert "OverflowError" in letter.reason
        rejected = letter.rejected_version()
        assert rejected is not None and rejected[1] == "Encounter"
        kinds = {t.transition.kind.value for t in store.transitions()}
        assert "admission" in kinds and "transfer" in kinds
        assert "discharge" not in kinds
        assert store.pending() == []


async def test_an_hl7_poison_message_between_two_valid_ones(tmp_path: Path) -> None:
    """Three A03s for three stays, the middle one discharged at a date out of range: the
    first and third become discharges, the second is dead-lettered by the pass."""
    fake = FakeFhir()
    fake.add(
        {"resourceType": "Patient", "id": "pat-1", "identifier": [{"system": MRN, "value": "M001"}]}
    )
    for n in (1, 2, 3):
        fake.add(
            {
                "resourceType": "Encounter",
                "id": f"enc-{n}",
                "meta": {"versionId": "2", "lastUpdated": "2026-12-20T14:00:00Z"},
                "status": "in-progress",
                "class": {"code": "IMP"},
                "subject": {"reference": "Patient/pat-1"},
                "identifier": [{"system": VISIT, "value": f"V00{n}"}],
                "period": {"start": "2026-12-20T09:00:00-05:00"},
            }
        )
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    bridge = make_bridge(fake, store)
    bridge.writer = None
    data = (
        adt(control="C1", pv1={19: "V001", 45: "20261224150000-0500"})
        + adt(control="C2", pv1={19: "V002", 45: "00010101000000+1400"})
        + adt(control="C3", pv1={19: "V003", 45: "20261224160000-0500"})
    )
    stats = await ingest_hl7(bridge, data.encode())
    assert (stats.journalled, stats.transitions) == (3, 2)
    focuses = sorted(t.transition.focus for t in store.transitions())
    assert focuses == ["Encounter/enc-1", "Encounter/enc-3"]
    assert_dead(store, "Encounter/enc-2", "OverflowError")
    await bridge.aclose()
