"""HL7 v2 messages built from fields, and a fake FHIR server for the v2 source to look
Encounters and Patients up in (sample messages are in tests/data/hl7v2/)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RetryPolicy
from fhirbridge.store import Store

DATA = Path(__file__).parents[1] / "data" / "hl7v2"
BASE = "https://ehr.example.org/fhir"
VISIT, MRN = "urn:oid:1.2.3.4.5.2", "urn:oid:1.2.3.4.5.1"
CR = "\r"


def segment(name: str, fields: dict[int, str]) -> str:
    """One segment from its numbered fields (gaps are empty fields)."""
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, max(fields) + 1))


def adt(
    event: str = "A03",
    *,
    sent: str = "20261224150000-0500",
    control: str = "CTRL1",
    pid: dict[int, str] | None = None,
    pv1: dict[int, str] | None = None,
) -> str:
    """A small ADT message: MRN M001 (type MR), visit V001, inpatient, plus the given fields."""
    msh = f"MSH|^~\\&|ADT|HOSP|FHIRBRIDGE|HOSP|{sent}||ADT^{event}^ADT_A01|{control}|P|2.5"
    pid_fields = {3: "M001^^^HOSP^MR", 5: "DOE^JANE"} | (pid or {})
    pv1_fields = {2: "I", 19: "V001"} | (pv1 or {})
    parts = [msh, f"EVN|{event}|{sent}", segment("PID", pid_fields), segment("PV1", pv1_fields)]
    return "\r".join(parts) + "\r"


class FakeFhir:
    """A FHIR server in a dict: reads, and searches by ``identifier`` or ``patient``."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.status = 200

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.status != 200:
            return httpx.Response(self.status, json={"resourceType": "OperationOutcome"})
        kind, _, rid = request.url.path.removeprefix("/fhir/").partition("/")
        found = [r for r in self.resources if r["resourceType"] == kind]
        if rid:
            match = next((r for r in found if r["id"] == rid), None)
            return httpx.Response(200 if match else 404, json=match or {})
        params = request.url.params
        self.queries.append(f"{kind}?{params}")
        if "identifier" in params:
            system, _, value = params["identifier"].partition("|")
            value = value.replace("\\|", "|").replace("\\,", ",")
            found = [r for r in found if {"system": system, "value": value} in r["identifier"]]
        if "patient" in params:
            found = [r for r in found if r.get("subject", {}).get("reference") == params["patient"]]
        entries = [{"resource": r} for r in found]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries}
        )


def fake_server() -> FakeFhir:
    """A FakeFhir holding patient pat-1 (MRN M001) and its in-progress stay enc-1 (V001)."""
    fake = FakeFhir()
    fake.add(
        {
            "resourceType": "Patient",
            "id": "pat-1",
            "meta": {"versionId": "1", "lastUpdated": "2026-12-20T14:00:00Z"},
            "identifier": [{"system": MRN, "value": "M001"}],
        }
    )
    fake.add(
        {
            "resourceType": "Encounter",
            "id": "enc-1",
            "meta": {"versionId": "2", "lastUpdated": "2026-12-20T14:00:00Z"},
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/pat-1"},
            "identifier": [{"system": VISIT, "value": "V001"}],
            "period": {"start": "2026-12-20T09:00:00-05:00"},
        }
    )
    return fake


def make_bridge(fhir: FakeFhir, store: Store) -> Bridge:
    """An engine on the fake server (no retries, no risk scores) over ``store``."""
    config = load_config(data={"fhir": {"base_url": BASE}, "engine": {"risk": False}})
    client = FhirClient(
        BASE, transport=httpx.MockTransport(fhir), retry=RetryPolicy(attempts=1, jitter=0.0)
    )
    return Bridge(config, client=client, store=store)


def reasons(store: Store) -> list[str]:
    """The dead letters' reasons, oldest first."""
    return [letter.reason for letter in store.dead_letters()]


async def exchange(port: int, payload: bytes) -> str:
    """Send one MLLP frame and return the ACK text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x0b" + payload + b"\x1c\r")
    await writer.drain()
    frame = await reader.readuntil(b"\x1c\r")
    writer.close()
    await writer.wait_closed()
    assert frame.startswith(b"\x0b")
    return frame[1:-2].decode()


def msa(ack: str) -> list[str]:
    """The MSA segment's fields."""
    return next(s for s in ack.split(CR) if s.startswith("MSA|")).split("|")
