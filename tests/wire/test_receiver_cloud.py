"""Cloud events from managed FHIR services: Azure Health Data Services through Event Grid
(both schemas, with the validation handshakes) and Google Cloud Healthcare through a Pub/Sub
push. Each names a resource the receiver fetches from the configured server and journals.
Payloads follow the services' documented examples (tests/data/SOURCES.md)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import respx

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.receiver import create_app
from tests._builders.receiver import AUTH, NOW, SECRET, RecordingStore, Running, journalled
from tests.wire._client import ClientFactory

AZURE = "https://contoso-fhir.fhir.azurehealthcareapis.com"
STORE = "projects/my-project/locations/us-central1/datasets/my-dataset/fhirStores/my-store"
GOOGLE = f"https://healthcare.googleapis.com/v1/{STORE}/fhir"
PATIENT_ID = "e0a1f743-1a70-451f-830e-e96477163902"


@asynccontextmanager
async def receiving(base: str, client: FhirClient) -> AsyncIterator[Running]:
    """A receiver for the server at ``base``, fetching through ``client``."""
    config = load_config(data={"fhir": {"base_url": base}, "store": {"url": "memory://"}})
    store = RecordingStore()
    bridge = Bridge(config, client=client, store=store, clock=FixedClock(NOW))
    bridge.writer = None
    app = create_app(bridge, secret=SECRET, max_body=64_000, gap_grace=0)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as http,
    ):
        yield Running(app, http, bridge, store.new, store.commits)


def patient(version: str) -> dict[str, Any]:
    """The Patient of the documented examples, at ``version``."""
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {"versionId": version, "lastUpdated": "2021-09-08T01:14:04.561Z"},
    }


def event_grid_event(kind: str, version: int) -> dict[str, Any]:
    """An Azure FHIR event in the Event Grid schema, shaped as the documented example."""
    return {
        "id": "e4c7f556-d72c-e7f7-1069-1e82ac76ab41",
        "topic": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.HealthcareApis/"
        "workspaces/ws",
        "subject": f"contoso-fhir.fhir.azurehealthcareapis.com/Patient/{PATIENT_ID}",
        "data": {
            "resourceType": "Patient",
            "resourceFhirAccount": "contoso-fhir.fhir.azurehealthcareapis.com",
            "resourceFhirId": PATIENT_ID,
            "resourceVersionId": version,
        },
        "eventType": f"Microsoft.HealthcareApis.FhirResource{kind}",
        "dataVersion": str(version),
        "metadataVersion": "1",
        "eventTime": "2021-09-08T01:14:04.5613214Z",
    }


def cloudevent(kind: str, version: int) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema."""
    grid = event_grid_event(kind, version)
    return {
        "id": grid["id"],
        "source": grid["topic"],
        "specversion": "1.0",
        "type": grid["eventType"],
        "dataschema": "#1",
        "subject": grid["subject"],
        "time": grid["eventTime"],
        "data": grid["data"],
    }


async def test_event_grid_events_are_fetched_by_version_and_journalled(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """Created then Updated (Event Grid schema, one batch): each version is read with vread
    from the configured server and journalled."""
    for version in ("1", "2"):
        router.get(f"{AZURE}/Patient/{PATIENT_ID}/_history/{version}").respond(
            200, json=patient(version)
        )
    async with receiving(AZURE, make_client(AZURE)) as r:
        batch = [event_grid_event("Created", 1), event_grid_event("Updated", 2)]
        response = await r.http.post("/notify/azure", json=batch, headers=AUTH)

        assert response.status_code == 200, response.text
        assert journalled(r) == [(f"Patient/{PATIENT_ID}", "1"), (f"Patient/{PATIENT_ID}", "2")]


async def test_cloudevents_schema_is_accepted(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """A single event in the CloudEvents schema is handled the same way."""
    router.get(f"{AZURE}/Patient/{PATIENT_ID}/_history/3").respond(200, json=patient("3"))
    async with receiving(AZURE, make_client(AZURE)) as r:
        response = await r.http.post("/notify/azure", json=cloudevent("Updated", 3), headers=AUTH)

        assert response.status_code == 200, response.text
        assert journalled(r) == [(f"Patient/{PATIENT_ID}", "3")]


async def test_event_grid_validation_handshakes(make_client: ClientFactory) -> None:
    """The Event Grid schema's SubscriptionValidationEvent is answered with its code; the
    CloudEvents OPTIONS handshake with WebHook-Allowed-Origin."""
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/sub",
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net/...",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    async with receiving(AZURE, make_client(AZURE)) as r:
        answer = await r.http.post("/notify/azure", json=validation)
        options = await r.http.options(
            "/notify/azure", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
        )

        assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
        assert options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


async def test_an_event_about_another_fhir_service_is_refused(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """An event naming another FHIR service is a 400 and a dead letter; nothing is fetched."""
    async with receiving(AZURE, make_client(AZURE)) as r:
        event = event_grid_event("Created", 1)
        event["data"]["resourceFhirAccount"] = "other.fhir.azurehealthcareapis.com"
        response = await r.http.post("/notify/azure", json=[event], headers=AUTH)

        assert response.status_code == 400
        assert len(r.bridge.store.dead_letters()) == 1
        assert not router.calls


async def test_events_need_the_secret(make_client: ClientFactory) -> None:
    """FHIR events without the secret (header or token parameter) get 401."""
    async with receiving(AZURE, make_client(AZURE)) as r:
        response = await r.http.post("/notify/azure", json=[event_grid_event("Created", 1)])
        assert response.status_code == 401


async def test_a_deleted_event_is_acknowledged_without_a_fetch(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """FhirResourceDeleted: 200, nothing fetched, nothing journalled."""
    async with receiving(AZURE, make_client(AZURE)) as r:
        response = await r.http.post(
            "/notify/azure", json=[event_grid_event("Deleted", 4)], headers=AUTH
        )
        assert response.status_code == 200
        assert journalled(r) == [] and not router.calls


async def test_a_failing_server_asks_for_redelivery(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """The server cannot be read: 503, so Event Grid delivers again later."""
    router.get(f"{AZURE}/Patient/{PATIENT_ID}/_history/1").respond(500)
    async with receiving(AZURE, make_client(AZURE)) as r:
        response = await r.http.post(
            "/notify/azure", json=[event_grid_event("Created", 1)], headers=AUTH
        )
        assert response.status_code == 503


def pubsub_push(data: bytes, action: str, payload_type: str = "NameOnly") -> dict[str, Any]:
    """A Pub/Sub push body carrying a Cloud Healthcare FHIR notification."""
    return {
        "message": {
            "attributes": {
                "action": action,
                "lastUpdatedTime": "Thu, 25 Feb 2021 21:17:04 UTC",
                "payloadType": payload_type,
                "resourceType": "Patient",
                "storeName": STORE,
            },
            "data": base64.b64encode(data).decode(),
            "messageId": "2070443601311540",
            "publishTime": "2021-02-25T21:17:04.757Z",
        },
        "subscription": "projects/my-project/subscriptions/my-subscription",
    }


async def test_pubsub_name_only_is_fetched_and_journalled(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """A NameOnly UpdateResource with the secret as the push endpoint's token parameter: the
    Patient is read from the configured store and journalled."""
    router.get(f"{GOOGLE}/Patient/{PATIENT_ID}").respond(200, json=patient("2"))
    async with receiving(GOOGLE, make_client(GOOGLE)) as r:
        name = f"{STORE}/fhir/Patient/{PATIENT_ID}".encode()
        response = await r.http.post(
            f"/notify/google?token={SECRET}", json=pubsub_push(name, "UpdateResource")
        )

        assert response.status_code == 200, response.text
        assert journalled(r) == [(f"Patient/{PATIENT_ID}", "2")]


async def test_pubsub_full_resource_needs_no_fetch(
    make_client: ClientFactory, router: respx.MockRouter
) -> None:
    """FullResource carries the resource: journalled as it came, no request to the server."""
    async with receiving(GOOGLE, make_client(GOOGLE)) as r:
        body = json.dumps(patient("3")).encode()
        response = await r.http.post(
            "/notify/google",
            json=pubsub_push(body, "CreateResource", "FullResource"),
            headers=AUTH,
        )

        assert response.status_code == 200, response.text
        assert journalled(r) == [(f"Patient/{PATIENT_ID}", "3")] and not router.calls


async def test_pubsub_name_of_another_store_is_refused(make_client: ClientFactory) -> None:
    """A resource name outside the configured store is a 400; nothing is fetched."""
    async with receiving(GOOGLE, make_client(GOOGLE)) as r:
        name = b"projects/other/locations/x/datasets/y/fhirStores/z/fhir/Encounter/e1"
        push = pubsub_push(name, "UpdateResource")
        del push["message"]["attributes"]["storeName"]
        response = await r.http.post("/notify/google", json=push, headers=AUTH)

        assert response.status_code == 400
