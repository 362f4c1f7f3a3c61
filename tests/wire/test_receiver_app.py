"""The receiver over HTTP (ASGI, in memory): authentication, size bounds, refusals kept as
dead letters, each notification style journalled, duplicates harmless, operations endpoints,
through the harness of :mod:`tests._builders.receiver`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import respx

from fhirbridge.errors import StoreError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.receiver._journal import GroupCommit
from fhirbridge.values import ResourceVersion
from tests._builders.receiver import (
    AUTH,
    BASE,
    DATA,
    SECRET,
    encounter,
    journalled,
    put,
    running,
)

# -- authentication and bounds --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no credentials
        {"Authorization": "Bearer wrong"},  # wrong secret
        {"Authorization": f"Basic {SECRET}"},  # right secret, wrong scheme
        {"X-Fhirbridge-Secret": "wrong"},  # wrong secret in the other header
    ],
)
async def test_missing_or_wrong_secret_is_401(headers: dict[str, str]) -> None:
    """Without the right secret: 401 with an OperationOutcome, nothing journalled."""
    async with running() as r:
        answer = await r.http.put(
            "/notify/Encounter/e1", content=json.dumps(encounter(1)), headers=headers
        )
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["issue"][0]["code"] == "login"
        assert journalled(r) == []


async def test_secret_header_is_accepted() -> None:
    """``X-Fhirbridge-Secret`` carries the secret as well as a bearer token does."""
    async with running() as r:
        answer = await r.http.put(
            "/notify/Encounter/e1",
            content=json.dumps(encounter(1)),
            headers={"X-Fhirbridge-Secret": SECRET},
        )
        assert answer.status_code == 200
        assert journalled(r) == [("Encounter/e1", "1")]


async def test_body_over_max_body_is_413_by_length_and_by_stream() -> None:
    """A declared Content-Length over the bound, or a chunked body that grows past it: 413."""
    big = json.dumps({**encounter(1), "text": {"div": "x" * 5000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with running(max_body=2048) as r:
        declared = await r.http.put("/notify/Encounter/e1", content=big, headers=AUTH)
        assert declared.status_code == 413
        streamed = await r.http.put("/notify/Encounter/e1", content=chunks(), headers=AUTH)
        assert streamed.status_code == 413
        assert journalled(r) == []
        assert r.bridge.store.dead_letters() == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Encounter xmlns='http://hl7.org/fhir'/>", "not JSON"),  # XML or garbage
        (b'{"hello": "world"}', "no resourceType"),  # JSON, not FHIR
        (json.dumps(encounter(1, rid="other")).encode(), "the URL Encounter/e1"),  # wrong id
    ],
)
async def test_unusable_body_is_400_and_a_dead_letter(body: bytes, reason: str) -> None:
    """Non-JSON, non-FHIR or mismatched bodies: 400 OperationOutcome, body kept as a dead
    letter with the reason."""
    async with running() as r:
        answer = await r.http.put("/notify/Encounter/e1", content=body, headers=AUTH)
        assert answer.status_code == 400
        assert reason in answer.json()["issue"][0]["diagnostics"]
        (letter,) = r.bridge.store.dead_letters()
        assert (letter.source, letter.payload) == ("notification", body)
        assert reason in letter.reason
        assert journalled(r) == []


# -- journalling and processing ------------------------------------------------------------


async def test_rest_hook_put_is_journalled_then_processed() -> None:
    """A PUT is answered 200 once journalled; the worker then plans the two TCM Tasks and
    medication reconciliation (no server configured: no coverage lookup)."""
    async with running() as r:
        answer = await put(r, encounter(2))
        assert answer.status_code == 200
        assert journalled(r) == [("Encounter/e1", "2")]
        await r.receiver.settle()
        codes = {i.payload["action"]["code"] for i in r.bridge.store.outbox_items()}
        assert codes == {"tcm-contact", "tcm-visit", "med-reconciliation"}


async def test_post_of_one_resource_is_journalled() -> None:
    """``POST {prefix}`` with a resource body (sekmet's post-endpoint mode) is journalled."""
    async with running() as r:
        answer = await r.http.post("/notify", json=encounter(3), headers=AUTH)
        assert answer.status_code == 200
        assert journalled(r) == [("Encounter/e1", "3")]


async def test_duplicate_and_older_versions_create_no_more_work() -> None:
    """The same version twice and then an older one: one outbox entry per Task, no more."""
    async with running() as r:
        for version in (encounter(2), encounter(2), encounter(1, status="in-progress")):
            assert (await put(r, version)).status_code == 200
            await r.receiver.settle()
        assert journalled(r) == [("Encounter/e1", "1"), ("Encounter/e1", "2")]
        assert len(r.bridge.store.outbox_items()) == 3  # contact, visit, med reconciliation
        assert len(r.bridge.store.transitions()) == 1


async def test_concurrent_notifications_share_a_commit() -> None:
    """Fifty concurrent PUTs are all answered 200 and journalled in fewer transactions."""
    async with running(commit_window=0.005) as r:
        answers = await asyncio.gather(
            *(put(r, encounter(1, "in-progress", rid=f"e{n}")) for n in range(50))
        )
        assert {a.status_code for a in answers} == {200}
        assert sum(r.commits) == 50 and len(r.commits) < 50
        assert len(journalled(r)) == 50


async def test_group_commit_fails_every_waiter_alike() -> None:
    """When the journal fails, every request of the batch gets the error as a StoreError,
    whatever the store raised (so: 503, never a 500 or a 400)."""

    def broken(versions: Any) -> list[ResourceVersion]:
        raise RuntimeError("disk full")

    commit = GroupCommit(broken, window=0.001)
    results = await asyncio.gather(
        commit.append(["v1"]),  # type: ignore[list-item]
        commit.append(["v2"]),  # type: ignore[list-item]
        return_exceptions=True,
    )
    assert [type(e) for e in results] == [StoreError, StoreError]
    assert "RuntimeError: disk full" in str(results[0])


async def test_davinci_message_is_journalled_and_answered_200() -> None:
    """``$process-message`` with the Da Vinci discharge example: 200; the Encounter (its
    subject resolved to Patient/id) and the Patient are journalled and processed."""
    body = (DATA / "davinci-discharge-notification-message-bundle-01.json").read_bytes()
    async with running() as r:
        answer = await r.http.post("/notify/$process-message", content=body, headers=AUTH)
        assert answer.status_code == 200
        assert "notification-discharge" in answer.json()["issue"][0]["diagnostics"]
        kinds = sorted(ref.split("/")[0] for ref, _ in journalled(r))
        assert kinds == ["Encounter", "Patient"]
        await r.receiver.settle()
        (stay,) = [v for v in r.new if v.resource_type == "Encounter"]
        snapshot = r.bridge.store.snapshot("ehr", "Encounter", stay.id)
        assert snapshot is not None
        assert snapshot.resource["subject"]["reference"].startswith("Patient/06e1f0dd")


async def test_message_bundle_posted_to_the_prefix_is_a_message() -> None:
    """A message Bundle POSTed to ``{prefix}`` is handled like ``$process-message``."""
    body = (DATA / "davinci-admit-notification-message-bundle-01.json").read_bytes()
    async with running() as r:
        answer = await r.http.post("/notify", content=body, headers=AUTH)
        assert answer.status_code == 200
        assert len(journalled(r)) == 2


async def test_other_bundles_are_refused() -> None:
    """A transaction Bundle is not a notification: 400 and a dead letter."""
    async with running() as r:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
        answer = await r.http.post("/notify", json=bundle, headers=AUTH)
        assert answer.status_code == 400
        assert len(r.bridge.store.dead_letters()) == 1


# -- operations ------------------------------------------------------------------------------


async def test_health_readiness_and_metrics() -> None:
    """/healthz answers 200, /readyz reports the journal (no server configured), /metrics
    counts notifications by type and outcome and exposes the outbox and lag gauges."""
    async with running() as r:
        await put(r, encounter(2))
        await r.http.put("/notify/Encounter/e1", content=b"{}")
        await r.receiver.settle()
        assert (await r.http.get("/healthz")).status_code == 200
        ready = await r.http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"journal": "ok", "server": "not configured"}
        text = (await r.http.get("/metrics")).text
        assert (
            'fhirbridge_notifications_received_total{outcome="accepted",type="rest-hook"} 1.0'
            in text
        )
        assert 'outcome="unauthorized",type="unknown"} 1.0' in text
        assert "fhirbridge_outbox_depth 3.0" in text
        assert "fhirbridge_notification_lag_seconds" in text


async def test_readiness_fails_when_the_server_is_unreachable(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """/readyz is 503 while the server's metadata cannot be read, 200 once it can (the
    answer is cached for ``readiness_ttl`` seconds)."""
    route = router.get(f"{BASE}/metadata").respond(404)
    async with running(client, readiness_ttl=0) as r:
        down = await r.http.get("/readyz")
        assert down.status_code == 503
        (issue,) = down.json()["issue"]  # an OperationOutcome, like every refusal
        assert issue["diagnostics"].startswith("server: unreachable")
        route.respond(200, json={"resourceType": "CapabilityStatement"})
        assert (await r.http.get("/readyz")).status_code == 200
