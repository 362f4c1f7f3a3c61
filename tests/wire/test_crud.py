"""Reads, writes, transactions and the CapabilityStatement on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import respx

from fhirbridge.fhir.client import FHIR_JSON, FhirClient

BASE = "https://ehr.example.org/fhir"
TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


async def test_read_gets_type_and_id_asking_for_fhir_json(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """``read`` is ``GET [base]/[type]/[id]`` with ``Accept: application/fhir+json``."""
    route = router.get(f"{BASE}/Patient/123").respond(
        200, json={"resourceType": "Patient", "id": "123"}
    )

    patient = await client.read("Patient", "123")

    assert patient == {"resourceType": "Patient", "id": "123"}
    assert route.calls.last.request.headers["accept"] == FHIR_JSON


async def test_vread_gets_the_history_version(client: FhirClient, router: respx.MockRouter) -> None:
    """``vread`` is ``GET [base]/[type]/[id]/_history/[vid]``."""
    router.get(f"{BASE}/Patient/123/_history/2").respond(
        200, json={"resourceType": "Patient", "id": "123", "meta": {"versionId": "2"}}
    )

    patient = await client.vread("Patient", "123", "2")

    assert patient["meta"]["versionId"] == "2"


async def test_create_posts_the_body_and_reads_location_and_etag(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A plain create POSTs FHIR JSON and reports id, version and ``created`` from the 201."""
    route = router.post(f"{BASE}/Task").respond(
        201,
        json={**TASK, "id": "t1", "meta": {"versionId": "1"}},
        headers={"Location": f"{BASE}/Task/t1/_history/1", "ETag": 'W/"1"'},
    )

    result = await client.create(TASK)

    request = route.calls.last.request
    assert json.loads(request.content) == TASK
    assert request.headers["content-type"] == FHIR_JSON
    assert request.headers["prefer"] == "return=representation"
    assert "if-none-exist" not in request.headers
    assert result.created is True
    assert (result.id, result.version_id) == ("t1", "1")
    assert result.location == f"{BASE}/Task/t1/_history/1"


async def test_create_with_minimal_return_takes_id_from_location(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """With an empty body (``Prefer: return=minimal`` servers) the id comes from Location."""
    router.post(f"{BASE}/Task").respond(
        201, headers={"Location": f"{BASE}/Task/t9/_history/4", "ETag": 'W/"4"'}
    )

    result = await client.create(TASK)

    assert result.resource == {}
    assert (result.id, result.version_id) == ("t9", "4")


async def test_conditional_create_sends_if_none_exist_and_reports_created(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """``if_none_exist`` goes in the If-None-Exist header; a 201 means a new resource."""
    route = router.post(f"{BASE}/Task").respond(201, json={**TASK, "id": "t1"})

    result = await client.create(TASK, if_none_exist="identifier=urn:sys|abc")

    assert route.calls.last.request.headers["if-none-exist"] == "identifier=urn:sys|abc"
    assert result.created is True


async def test_conditional_create_of_an_existing_resource_is_not_created(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A 200 to a conditional create means one match already existed: ``created`` is False."""
    router.post(f"{BASE}/Task").respond(200, json={**TASK, "id": "old"})

    result = await client.create(TASK, if_none_exist="identifier=urn:sys|abc")

    assert result.created is False
    assert result.id == "old"


async def test_update_puts_to_type_and_id(client: FhirClient, router: respx.MockRouter) -> None:
    """``update`` is ``PUT [base]/[type]/[id]`` with the body and no If-Match by default."""
    route = router.put(f"{BASE}/Task/t1").respond(
        200, json={**TASK, "id": "t1"}, headers={"ETag": 'W/"5"'}
    )

    result = await client.update({**TASK, "id": "t1"})

    assert "if-match" not in route.calls.last.request.headers
    assert json.loads(route.calls.last.request.content)["id"] == "t1"
    assert result.version_id == "5"
    assert result.created is False


async def test_update_with_if_match_sends_a_weak_etag(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """``if_match="3"`` goes on the wire as ``If-Match: W/"3"``; a ready ETag passes as is."""
    route = router.put(f"{BASE}/Task/t1").respond(200, json={**TASK, "id": "t1"})

    await client.update({**TASK, "id": "t1"}, if_match="3")
    await client.update({**TASK, "id": "t1"}, if_match='W/"7"')

    sent = [call.request.headers["if-match"] for call in route.calls]
    assert sent == ['W/"3"', 'W/"7"']


async def test_conditional_update_puts_to_type_with_query(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """``conditional_update`` is ``PUT [base]/[type]?query``; a 201 means it created."""
    route = router.put(f"{BASE}/Task", params={"identifier": "urn:sys|abc"}).respond(
        201, json={**TASK, "id": "t2"}
    )

    result = await client.conditional_update(TASK, "identifier=urn:sys|abc")

    assert route.call_count == 1
    assert result.created is True


async def test_transaction_posts_the_bundle_to_the_base(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A transaction is ``POST [base]`` (no trailing slash) and returns the response Bundle."""
    reply = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": "Task/t1/_history/1"}}],
    }
    route = router.post(BASE).respond(200, json=reply)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": TASK, "request": {"method": "POST", "url": "Task"}}],
    }

    response = await client.transaction(bundle)

    assert str(route.calls.last.request.url) == BASE
    assert json.loads(route.calls.last.request.content) == bundle
    assert response == reply


async def test_batch_returns_each_entry_status(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """A batch comes back whole, with a per-entry status for the caller to check."""
    reply = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"response": {"status": "201 Created"}}, {"response": {"status": "404"}}],
    }
    router.post(BASE).respond(200, json=reply)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": TASK, "request": {"method": "POST", "url": "Task"}},
            {"request": {"method": "GET", "url": "Patient/gone"}},
        ],
    }

    response = await client.transaction(bundle)

    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created", "404"]


async def test_capabilities_are_fetched_once_per_client(
    make_client: Callable[..., FhirClient], router: respx.MockRouter
) -> None:
    """Two (even concurrent) ``capabilities`` calls make one request; a new client refetches."""
    route = router.get(f"{BASE}/metadata").respond(
        200, json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
    )
    first = make_client()

    a, b = await asyncio.gather(first.capabilities(), first.capabilities())
    await first.capabilities()

    assert a == b
    assert a["fhirVersion"] == "4.0.1"
    assert route.call_count == 1
    await make_client().capabilities()
    assert route.call_count == 2
