"""Hostile notifications against a receiver on a real sekmet server: an id-only focus the
server does not hold is a 4xx and a dead letter (no retry), a focus that climbs out of the
resource path is never fetched, and a poison between two valid notifications leaves both
valid ones journalled and processed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from fhirbridge.engine import Bridge
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.testing.sekmet import SekmetServer
from tests._builders.receiver import notification

pytestmark = pytest.mark.e2e
SECRET = "e2e-hostile-secret"
AUTH = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}


@asynccontextmanager
async def receiving(bridge: Bridge) -> AsyncIterator[tuple[httpx.AsyncClient, Receiver]]:
    """The receiver app for ``bridge``, in process, with its lifespan entered."""
    app = create_app(bridge, secret=SECRET, max_body=1 << 20, gap_grace=0)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as http,
    ):
        yield http, app.state.receiver


def id_only(sekmet: SekmetServer, number: int, focus: str) -> bytes:
    """An id-only event notification for Subscription/s1 naming ``focus``."""
    note: dict[str, Any] = notification("event-notification", number, focus=focus)
    reference = note["entry"][0]["resource"]["parameter"][0]["valueReference"]
    reference["reference"] = f"{sekmet.base_url}/Subscription/s1"
    return json.dumps(note).encode()


@pytest.mark.parametrize(
    ("focus", "status"),
    [
        ("{base}/Encounter/nosuch", 422),  # not on the server: a retry cannot help
        ("Encounter/nosuch", 422),  # the same, relative
        ("Encounter/../../metadata", 400),  # climbs out of the resource path: not fetched
        ("{base}/Encounter/../metadata", 400),
    ],
)
async def test_focus_the_server_does_not_hold_is_refused_for_good(
    sekmet: SekmetServer, bridge: Bridge, focus: str, status: int
) -> None:
    """No 503 for a focus that cannot exist: a 4xx OperationOutcome and a dead letter."""
    async with receiving(bridge) as (http, _):
        body = id_only(sekmet, 1, focus.format(base=sekmet.base_url))
        answer = await http.post("/notify", content=body, headers=AUTH)
    assert answer.status_code == status
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert [d.source for d in bridge.store.dead_letters()] == ["notification"]
    assert bridge.store.pending(10) == []


async def test_poison_between_valid_notifications_stops_nothing(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """A discharge, then the same Encounter with a lone surrogate in its status, then an
    id-only notification of a second discharge: the poison is refused (400, never
    journalled), both discharges are journalled and processed, and their Tasks are on the
    server."""
    first, second = sekmet.register_patient(seed=1), sekmet.register_patient(seed=2)
    stays = [sekmet.admit(first), sekmet.admit(second)]
    done = [sekmet.discharge(stay) for stay in stays]
    async with receiving(bridge) as (http, receiver):
        put = f"/notify/Encounter/{stays[0]}"
        valid = await http.put(put, content=json.dumps(done[0]).encode(), headers=AUTH)
        poison = json.dumps(done[0]).replace('"finished"', '"finished\\ud800"')
        refused = await http.put(put, content=poison.encode(), headers=AUTH)
        later = await http.post(
            "/notify",
            content=id_only(sekmet, 2, f"{sekmet.base_url}/Encounter/{stays[1]}"),
            headers=AUTH,
        )
        await receiver.settle()
    assert (valid.status_code, refused.status_code, later.status_code) == (200, 400, 200)
    assert "lone surrogate" in refused.json()["issue"][0]["diagnostics"]
    assert bridge.store.pending(10) == []
    for stay in stays:
        assert bridge.store.snapshot("sekmet", "Encounter", stay) is not None
    for patient in (first, second):
        tasks = sekmet.search("Task", {"patient": f"Patient/{patient}"})
        assert tasks, f"no Task for Patient/{patient}"
