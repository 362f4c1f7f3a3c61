"""SyncFhirClient: the blocking wrapper drives the async client on its own loop."""

from __future__ import annotations

import httpx
import pytest
import respx

from fhirbridge.errors import ResourceNotFound
from fhirbridge.fhir.client import SyncFhirClient

BASE = "https://ehr.example.org/fhir"


def test_sync_read_and_search(router: respx.MockRouter) -> None:
    """``read`` returns the resource and ``search`` follows next links into one list."""
    router.get(f"{BASE}/Patient/1").respond(200, json={"resourceType": "Patient", "id": "1"})
    page_2 = f"{BASE}?_getpages=x&_getpagesoffset=1"
    router.get(f"{BASE}/Encounter").respond(
        200,
        json={
            "resourceType": "Bundle",
            "link": [{"relation": "next", "url": page_2}],
            "entry": [{"resource": {"resourceType": "Encounter", "id": "e1"}}],
        },
    )
    router.get(page_2).respond(
        200,
        json={
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "Encounter", "id": "e2"}}],
        },
    )

    with SyncFhirClient(BASE, transport=httpx.MockTransport(router.async_handler)) as fhir:
        patient = fhir.read("Patient", "1")
        encounters = fhir.search("Encounter", {"_count": 1})

    assert patient["id"] == "1"
    assert [e["id"] for e in encounters] == ["e1", "e2"]


def test_sync_errors_are_fhirbridge_errors(router: respx.MockRouter) -> None:
    """Errors surface from the blocking call as the same fhirbridge errors."""
    router.get(f"{BASE}/Patient/404").respond(404)

    with (
        SyncFhirClient(BASE, transport=httpx.MockTransport(router.async_handler)) as fhir,
        pytest.raises(ResourceNotFound),
    ):
        fhir.read("Patient", "404")


def test_sync_create_reports_created(router: respx.MockRouter) -> None:
    """``create`` returns the WriteResult of the async client."""
    router.post(f"{BASE}/Task").respond(201, json={"resourceType": "Task", "id": "t1"})

    with SyncFhirClient(BASE, transport=httpx.MockTransport(router.async_handler)) as fhir:
        result = fhir.create({"resourceType": "Task"}, if_none_exist="identifier=a|b")

    assert result.created is True
    assert result.id == "t1"
