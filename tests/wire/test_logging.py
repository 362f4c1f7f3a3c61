"""The client's log events carry request facts only, never PHI from queries or bodies."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import respx
import structlog
from structlog.testing import capture_logs

from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
MRN = "MRN-884422-DOE"  # the identifier value that must not reach the logs
NAME = "Dorothea Zimmerfeld"  # a name that appears only in response and request bodies
ALLOWED_KEYS = {"event", "log_level", "method", "resource_type", "status", "duration_ms", "attempt"}


async def test_search_logs_no_query_values_or_bodies(
    make_client: Callable[..., FhirClient], router: respx.MockRouter
) -> None:
    """A search by patient identifier, paged and retried, logs one ``fhir_request`` event
    per attempt with method, resource_type, status, duration_ms and attempt only: neither
    the identifier, the next link, nor anything from the bodies."""
    next_url = f"{BASE}?_getpages=abc&identifier=urn:mrn|{MRN}"
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"text": NAME}]}
    router.get(f"{BASE}/Patient").mock(
        side_effect=[
            httpx.Response(503, text=f"busy with {MRN}"),
            httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "link": [{"relation": "next", "url": next_url}],
                    "entry": [{"resource": patient}],
                },
            ),
        ]
    )
    router.get(next_url).respond(200, json={"resourceType": "Bundle", "entry": []})
    router.post(f"{BASE}/Patient").respond(201, json=patient)
    client = make_client()

    with capture_logs() as events:
        found = await client.search_all("Patient", {"identifier": f"urn:mrn|{MRN}"})
        await client.create(patient, if_none_exist=f"identifier=urn:mrn|{MRN}")

    assert [p["id"] for p in found] == ["p1"]
    requests = [e for e in events if e["event"] == "fhir_request"]
    assert [(e["method"], e["resource_type"], e["status"], e["attempt"]) for e in requests] == [
        ("GET", "Patient", 503, 1),
        ("GET", "Patient", 200, 2),
        ("GET", "(base)", 200, 1),
        ("POST", "Patient", 201, 1),
    ]
    for event in events:
        assert set(event) <= ALLOWED_KEYS, event
        assert isinstance(event.get("duration_ms", 0.0), float)
        text = repr(event)
        for secret in (MRN, NAME, "_getpages", "identifier"):
            assert secret not in text, (secret, event)


async def test_client_logs_through_structlog_without_configuring_it(
    client: FhirClient, router: respx.MockRouter
) -> None:
    """Using the client leaves structlog's configuration as the application set it."""
    before = structlog.get_config()
    router.get(f"{BASE}/Patient/1").respond(200, json={"resourceType": "Patient"})

    await client.read("Patient", "1")

    assert structlog.get_config() == before
