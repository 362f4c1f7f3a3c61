"""Patient names in the console only with ``show_names``: read from the server (respx)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import respx

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.console import console_app
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.store import MemoryStore
from fhirbridge.values import ResourceVersion, Transition, TransitionKind

BASE = "https://ehr.example.org/fhir"
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "meta": {"versionId": "1"}}


def bundle(*resources: dict[str, object]) -> dict[str, object]:
    """A searchset Bundle of ``resources``."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


@pytest.mark.parametrize("show_names", [True, False])
async def test_names_only_when_configured(show_names: bool) -> None:
    """A discharge of Patient/p1 in the journal: the transitions table names the patient only
    with ``show_names``; without it, the server is not even asked for the Patient."""
    config = load_config(data={"fhir": {"base_url": BASE}})
    async with (
        respx.mock(base_url=BASE, assert_all_called=False) as mock,
        FhirClient(BASE) as client,
    ):
        mock.get("/Subscription").respond(json=bundle())
        patients = mock.get("/Patient").respond(
            json=bundle(
                {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"given": ["Ada"], "family": "Lovelace"}],
                }
            )
        )
        bridge = Bridge(config, client=client, store=MemoryStore(), clock=FixedClock(NOW))
        version = ResourceVersion.from_json("default", ENCOUNTER)
        bridge.store.append([version])
        discharge = Transition(TransitionKind.DISCHARGE, "Patient/p1", "Encounter/e1", NOW)
        bridge.store.complete(version, transitions=[discharge])
        app = console_app(bridge, secret=None, show_names=show_names, clock=FixedClock(NOW))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
            page = await http.get("/console")
        assert page.status_code == 200 and "Patient/p1" in page.text
        assert ("Ada Lovelace" in page.text) is show_names
        assert patients.called is show_names
