"""Medplum-style rest-hook deliveries: a POST of the bare resource to exactly the endpoint
URL, X-Medplum-Interaction create|update|delete, `{}` as a delete notice, unchanged content
not reprocessed, and X-Signature (HMAC-SHA256) verified per subscription configuration."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import create_app
from fhirbridge.receiver._medplum import signature_matches
from tests._builders.receiver import (
    AUTH,
    BASE,
    NOW,
    SECRET,
    RecordingStore,
    Running,
    encounter,
    journalled,
)

SIGNING_KEY = "hmac-signing-key"


@asynccontextmanager
async def receiving(*, signing: bool = False) -> AsyncIterator[Running]:
    """A receiver whose configured subscription is signed (or not)."""
    spec: dict[str, Any] = {"criteria": "Encounter?status=finished"}
    if signing:
        spec["signing_secret"] = SIGNING_KEY
    config = load_config(
        data={
            "fhir": {"base_url": BASE, "name": "ehr"},
            "store": {"url": "memory://"},
            "subscriptions": [spec],
        }
    )
    store = RecordingStore()
    bridge = Bridge(config, client=None, store=store, clock=FixedClock(NOW))
    bridge.writer = None
    app = create_app(bridge, secret=SECRET, max_body=64_000, gap_grace=0)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as http,
    ):
        yield Running(app, http, bridge, store.new, store.commits)


def medplum_post(
    r: Running, body: bytes, interaction: str, *, key: str | None = None, **headers: str
) -> Any:
    """POST ``body`` to exactly the endpoint, with the headers that server sends."""
    sent = {
        **AUTH,
        "Content-Type": "application/fhir+json",
        "X-Medplum-Subscription": "0b5c9e2a-sub",
        "X-Medplum-Interaction": interaction,
        **headers,
    }
    if key is not None:
        sent["X-Signature"] = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return r.http.post("/notify", content=body, headers=sent)


def uuid_version(resource: dict[str, Any], version: str) -> dict[str, Any]:
    """``resource`` with a UUID version id, as that server mints them."""
    return {**resource, "meta": {**resource["meta"], "versionId": version}}


async def test_a_bare_resource_post_is_journalled() -> None:
    """POST {endpoint} with the bare Encounter and `X-Medplum-Interaction: update` is
    journalled like a rest-hook PUT."""
    async with receiving() as r:
        body = json.dumps(uuid_version(encounter(1), "7f3c2d1e-0a9b")).encode()
        response = await medplum_post(r, body, "update")

        assert response.status_code == 200, response.text
        assert journalled(r) == [("Encounter/e1", "7f3c2d1e-0a9b")]


async def test_unchanged_content_is_not_reprocessed() -> None:
    """Every matching update fires: a delivery whose content equals the processed snapshot
    is acknowledged and not journalled again."""
    async with receiving() as r:
        first = uuid_version(encounter(1), "aaaa-1111")
        await medplum_post(r, json.dumps(first).encode(), "create")
        await r.receiver.settle()
        again = {**first, "meta": {**first["meta"], "versionId": "bbbb-2222"}}
        response = await medplum_post(r, json.dumps(again).encode(), "update")

        assert response.status_code == 200
        assert "unchanged" in response.json()["issue"][0]["diagnostics"]
        assert journalled(r) == [("Encounter/e1", "aaaa-1111")]


async def test_a_delete_notice_with_an_empty_object_is_acknowledged() -> None:
    """`{}` with `X-Medplum-Interaction: delete` is a delete notice: 200, nothing journalled,
    no dead letter."""
    async with receiving() as r:
        response = await medplum_post(
            r, b"{}", "delete", **{"X-Medplum-Deleted-Resource": "Encounter/e1"}
        )

        assert response.status_code == 200, response.text
        assert "Encounter/e1" in response.json()["issue"][0]["diagnostics"]
        assert journalled(r) == []
        assert r.bridge.store.dead_letters() == []


async def test_an_unknown_interaction_is_refused() -> None:
    """An interaction other than create, update or delete is a 400 kept as a dead letter."""
    async with receiving() as r:
        body = json.dumps(encounter(1)).encode()
        response = await medplum_post(r, body, "patch")

        assert response.status_code == 400
        assert len(r.bridge.store.dead_letters()) == 1


async def test_a_signed_delivery_is_verified() -> None:
    """With a signing secret configured, the right X-Signature is accepted and a wrong or
    missing one refused (nothing journalled)."""
    async with receiving(signing=True) as r:
        body = json.dumps(encounter(1)).encode()
        good = await medplum_post(r, body, "create", key=SIGNING_KEY)
        forged = await medplum_post(
            r, json.dumps(encounter(2)).encode(), "update", key="not-the-key"
        )
        unsigned = await medplum_post(r, json.dumps(encounter(3)).encode(), "update")

        assert good.status_code == 200
        assert forged.status_code == 400 and unsigned.status_code == 400
        assert journalled(r) == [("Encounter/e1", "1")]


def test_signature_matching_is_over_the_raw_body() -> None:
    """The hex HMAC-SHA256 of the exact bytes, under any configured key; any change fails."""
    body = b'{"resourceType":"Patient","id":"p1"}'
    signature = hmac.new(b"k2", body, hashlib.sha256).hexdigest()

    assert signature_matches(body, signature, ["k1", "k2"])
    assert signature_matches(body, signature.upper(), ["k2"])
    assert not signature_matches(body + b" ", signature, ["k2"])
    assert not signature_matches(body, None, ["k2"])
