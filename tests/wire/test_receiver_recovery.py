"""Topic-based notifications and recovery, against a respx-mocked FHIR server: handshake,
full-resource and id-only content, foreign URLs never fetched, and catch-up polls for empty
notifications, gaps in event numbers, missed heartbeats and subscriptions in error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from fhirbridge.fhir.client import FhirClient
from tests._builders.receiver import (
    AUTH,
    BASE,
    TOPIC,
    Running,
    encounter,
    journalled,
    notification,
    notify,
    running,
)

FOREIGN = "https://evil.example.net/fhir"


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    """A searchset page stamped with the server's clock."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": "2026-11-21T12:00:00Z"},
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def fhir_server(router: respx.MockRouter, *encounters: dict[str, Any]) -> respx.Route:
    """Routes for what polling and processing read: searches (Encounter answers
    ``encounters``, other types nothing) and reads (404); no ``batch`` (405), so lookups
    search one by one. Returns the search route."""
    router.get(path__regex=r"^/fhir/[A-Za-z]+/[^/$]+$").respond(404)
    router.post(path__regex=r"^/fhir/?$").respond(405)

    def search(request: httpx.Request) -> httpx.Response:
        found = encounters if request.url.path.endswith("/Encounter") else ()
        return httpx.Response(200, json=searchset(*found))

    return router.get(path__regex=r"^/fhir/[A-Za-z]+$").mock(side_effect=search)


def polls(route: respx.Route) -> int:
    """How many catch-up polls ran (Encounter searches by ``_lastUpdated``)."""
    return sum(
        1
        for call in route.calls
        if call.request.url.path.endswith("/Encounter")
        and "_lastUpdated" in call.request.url.params
    )


def tcm_codes(r: Running) -> set[str]:
    """The codes of the Tasks the outbox holds."""
    items = r.bridge.store.outbox_items()
    return {i.payload["action"]["code"] for i in items if i.kind == "create-task"}


async def test_handshake_and_full_resource_event_need_no_fetch(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A handshake is acknowledged; a full-resource event journals the entry's resource and
    reads nothing from the server but what processing needs."""
    search = fhir_server(router)
    async with running(client) as r:
        assert (await notify(r, notification("handshake", since=0))).status_code == 200
        done = await notify(r, notification("event-notification", 1, resources=(encounter(2),)))
        assert done.status_code == 200
        assert journalled(r) == [("Encounter/e1", "2")]
        assert polls(search) == 0
        assert not any("/Encounter/e1" in str(c.request.url) for c in router.calls)


async def test_id_only_event_fetches_the_focus_from_the_server(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """id-only: the focus is read from the configured server, journalled, then processed."""
    read = router.get(f"{BASE}/Encounter/e1").respond(200, json=encounter(2))
    fhir_server(router)
    async with running(client) as r:
        answer = await notify(
            r, notification("event-notification", 1, focus=f"{BASE}/Encounter/e1")
        )
        assert answer.status_code == 200
        assert read.call_count == 1
        assert journalled(r) == [("Encounter/e1", "2")]
        # the mocked server holds no Coverage for the patient: a coverage review too
        assert tcm_codes(r) == {
            "tcm-contact",
            "tcm-visit",
            "med-reconciliation",
            "coverage-review",
        }


async def test_foreign_focus_is_refused_and_never_fetched(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A focus on another host: 400, a dead letter, and no request to that host."""
    foreign = router.get(url__startswith=FOREIGN).respond(200, json=encounter(2))
    async with running(client) as r:
        bundle = notification("event-notification", 1, focus=f"{FOREIGN}/Encounter/e1")
        answer = await notify(r, bundle)
        assert answer.status_code == 400
        assert "not on the configured FHIR server" in answer.json()["issue"][0]["diagnostics"]
        assert foreign.call_count == 0
        assert [d.source for d in r.bridge.store.dead_letters()] == ["notification"]


async def test_focus_that_cannot_be_read_is_503_and_a_catch_up(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """When the id-only focus cannot be read now (the server fails), the sender is told to
    retry (503) and a catch-up poll is asked for."""
    router.get(f"{BASE}/Encounter/e9").respond(500)
    search = fhir_server(router)
    async with running(client) as r:
        answer = await notify(
            r, notification("event-notification", 1, focus=f"{BASE}/Encounter/e9")
        )
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert polls(search) == 1


@pytest.mark.parametrize("status", [404, 410, 400])  # not found, gone, refused as bad
async def test_focus_the_server_does_not_hold_is_422_and_a_dead_letter(
    client: FhirClient, router: respx.MockRouter, status: int
) -> None:
    """An id-only focus the server answers 404/410/400 for is refused for good (422 with an
    OperationOutcome and a dead letter), not a 503 the sender would retry forever."""
    router.get(f"{BASE}/Encounter/nosuch").respond(status)
    async with running(client) as r:
        answer = await notify(
            r, notification("event-notification", 1, focus=f"{BASE}/Encounter/nosuch")
        )
        assert answer.status_code == 422
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert [d.source for d in r.bridge.store.dead_letters()] == ["notification"]
        assert r.new == []


@pytest.mark.parametrize(
    "focus",
    [
        "Encounter/../../metadata",  # climbs out of the resource path
        f"{BASE}/Encounter/../metadata",  # the same, absolute on the configured server
        "Encounter?status=finished",  # a search, not a resource
        "Encounter/a b",  # not a FHIR id
    ],
)
async def test_focus_that_is_no_resource_reference_is_refused_unfetched(
    client: FhirClient, router: respx.MockRouter, focus: str
) -> None:
    """A focus that is not ``[base/]Type/id`` is a 400 and a dead letter; nothing is fetched."""
    async with running(client) as r:
        answer = await notify(r, notification("event-notification", 1, focus=focus))
        assert answer.status_code == 400
        assert "is not [base/]Type/id" in answer.json()["issue"][0]["diagnostics"]
        assert not router.calls
        assert len(r.bridge.store.dead_letters()) == 1


async def test_empty_notifications_poll_since_the_watermark(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """An empty R4 rest-hook POST and an empty-content topic event each lead to a poll
    that journals what changed."""
    search = fhir_server(router, encounter(2))
    async with running(client) as r:
        answer = await r.http.post("/notify", headers=AUTH)
        await r.receiver.settle()
        assert answer.status_code == 200
        assert polls(search) == 1
        polled = r.bridge.store.snapshot("ehr", "Encounter", "e1")
        assert polled is not None and polled.version_id == "2"
        assert (await notify(r, notification("event-notification", 1))).status_code == 200
        assert polls(search) == 2


async def test_a_gap_in_event_numbers_triggers_a_catch_up(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Events 1 then 3 (2 never arrives): one catch-up poll; 1, 2 in order: none."""
    search = fhir_server(router)
    body = (encounter(2),)
    async with running(client) as r:
        await notify(r, notification("event-notification", 1, resources=body))
        await notify(r, notification("event-notification", 2, resources=body))
        assert polls(search) == 0
        await notify(r, notification("event-notification", 4, resources=body))
        assert polls(search) == 1
        await notify(r, notification("event-notification", 5, resources=body))
        assert polls(search) == 1  # 3 is covered by the catch-up


async def test_late_event_within_grace_is_no_gap(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """1, 3, then 2 shortly after (out-of-order delivery): no catch-up; a duplicate of 3
    changes nothing."""
    search = fhir_server(router)
    body = (encounter(2),)
    async with running(client, gap_grace=0.5) as r:
        for number in (1, 3, 2, 3):
            answer = await r.http.post(
                "/notify",
                json=notification("event-notification", number, resources=body),
                headers=AUTH,
            )
            assert answer.status_code == 200
        await r.receiver.settle()
        assert polls(search) == 0
        assert journalled(r) == [("Encounter/e1", "2")]
        assert len(r.bridge.store.transitions()) == 1


async def test_heartbeat_claiming_more_events_triggers_a_catch_up(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A heartbeat whose events-since-subscription-start exceeds what arrived: catch-up."""
    search = fhir_server(router)
    async with running(client) as r:
        await notify(r, notification("handshake", since=0))
        await notify(r, notification("heartbeat", since=0))
        assert polls(search) == 0
        await notify(r, notification("heartbeat", since=2))
        assert polls(search) == 1


async def test_missed_heartbeat_queries_status_and_catches_up(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Silence for more than twice the heartbeat period: ``$status`` is asked, and its
    events count and ``error`` status lead to a catch-up and a reactivation request."""
    status = notification("query-status", since=3, status="error")["entry"][0]["resource"]
    asked = router.get(f"{BASE}/Subscription/s1/$status").respond(
        200, json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": status}]}
    )
    search = fhir_server(router)
    inactive: list[str] = []

    async def on_inactive(subscription_id: str) -> None:
        inactive.append(subscription_id)

    clock = Clock()
    options = {"heartbeats": {TOPIC: 10.0}, "check_interval": 3600, "clock": clock}
    async with running(client, on_inactive=on_inactive, **options) as r:
        await notify(r, notification("handshake", since=0))
        clock.now += 15
        assert await r.receiver.check_heartbeats() == []
        clock.now += 10
        assert await r.receiver.check_heartbeats() == ["s1"]
        await r.receiver.settle()
        assert asked.call_count == 1
        assert polls(search) >= 1
        assert inactive == ["s1"]


async def test_status_error_in_a_notification_triggers_a_catch_up(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A notification reporting status error: catch-up poll and the reactivation hook."""
    search = fhir_server(router)
    inactive: list[str] = []

    async def on_inactive(subscription_id: str) -> None:
        inactive.append(subscription_id)

    async with running(client, on_inactive=on_inactive) as r:
        await notify(r, notification("heartbeat", since=0, status="error"))
        assert polls(search) == 1
        assert inactive == ["s1"]
