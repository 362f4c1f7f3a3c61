"""The pipeline on a real sekmet server: lookups in batches, a rerun that only reads its
pages, and every driver (poll, backfill, receiver, HL7 v2 file and MLLP, plan) going
through the one pass loop to the same transitions and writes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.pipeline import Pipeline, RunStats
from fhirbridge.receiver import create_app
from fhirbridge.sources.hl7v2 import MllpListener, ingest_hl7
from fhirbridge.testing.sekmet import SekmetServer
from fhirbridge.values import IDENTIFIER_SYSTEM, CreateTask
from tests.e2e._sekmet import (
    DISCHARGE_WORK,
    MRN_SYSTEM,
    VISIT_SYSTEM,
    case_manager,
    discharge_home,
    engine_config,
    engine_tasks,
    identifier,
    recent,
)

pytestmark = pytest.mark.e2e
SECRET = "pipeline-secret"


class Counting(httpx.AsyncBaseTransport):
    """A loopback transport that counts requests by ``METHOD Type (what)``: a page of a
    poll, a lookup (a search by patient), a case-management lookup (a search by patient and
    category, or of Coverage or ServiceRequest), a read; ``POST batch`` for a Bundle posted to
    the base."""

    def __init__(self, base_url: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.base_path = httpx.URL(base_url).path.rstrip("/")
        self.seen: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Count, then send."""
        path = request.url.path.removeprefix(self.base_path).strip("/")
        kind, _, rest = path.partition("/")
        params = request.url.params
        case = "category" in params or kind in ("Coverage", "ServiceRequest")
        what = (
            " (case)"
            if "patient" in params and case
            else " (lookup)"
            if "patient" in params or "_id" in params
            else " (read)"
            if rest
            else " (page)"
            if request.method == "GET"
            else ""
        )
        if not kind and request.method == "POST":  # a Bundle to the base: batch or transaction
            kind = str(json.loads(request.content or b"{}").get("type") or "bundle")
        self.seen[f"{request.method} {kind}{what}"] += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


@pytest.fixture
async def counted(sekmet: SekmetServer, tmp_path: Path) -> AsyncIterator[tuple[Bridge, Counting]]:
    """An engine whose every request to sekmet is counted."""
    transport = Counting(sekmet.base_url)
    config = engine_config(sekmet, tmp_path)
    client = FhirClient(sekmet.base_url, transport=transport)
    bridge = Bridge(config, client=client)
    yield bridge, transport
    await bridge.aclose()


async def test_lookups_come_in_batches_and_a_rerun_only_reads_its_pages(
    sekmet: SekmetServer, counted: tuple[Bridge, Counting]
) -> None:
    """Three discharges with care teams: the patients, care teams, earlier stays and risk
    inputs come from one batch request for the page, never from a read or search per
    patient (the case-management lookups are asked per discharge: Coverage, and the social
    needs on record as Observations and Conditions); once the engine has seen its own
    writes, a rerun makes no writes and no requests beyond the pages it reads."""
    bridge, transport = counted
    patients = [sekmet.register_patient(birth_date="1950-03-04") for _ in range(3)]
    for patient in patients:
        case_manager(sekmet, patient)
        sekmet.discharge(sekmet.admit(patient), "home")
    stats = await bridge.run_once(since=recent())
    # per discharge: TCM contact and visit, medication reconciliation, coverage review (no
    # Coverage), and the sweep's first review of the new CarePlan
    assert stats.created == 15
    seen = transport.seen
    case = {k: n for k, n in seen.items() if k.endswith("(case)")}
    assert case == {f"GET {t} (case)": 3 for t in ("Coverage", "Observation", "Condition")}
    lookups = seen["POST batch"] + sum(n for k, n in seen.items() if k.endswith("(lookup)"))
    assert lookups == stats.lookups == 1  # patients, teams, earlier stays, risk inputs
    for kind in ("Patient", "CareTeam", "Condition", "Observation", "Procedure", "Encounter"):
        assert seen[f"GET {kind} (read)"] == 0, kind
    owners = {
        t["owner"]["reference"]
        for p in patients
        for t in engine_tasks(sekmet, p)
        if t["code"]["coding"][0]["code"] in ("tcm-contact", "tcm-visit")  # the care team's
    }
    assert len(owners) == 3 and all(o.startswith("Practitioner/") for o in owners)

    await bridge.run_once(since=recent())  # the engine's own Tasks and CarePlans come back
    transport.seen.clear()
    again = await bridge.run_once(since=recent())
    assert (again.new, again.planned, again.created, again.lookups) == (0, 0, 0, 0)
    assert set(transport.seen) <= {f"GET {t} (page)" for t in bridge.config.engine.watch}
    assert sum(transport.seen.values()) == len(bridge.config.engine.watch)


# -- every driver, one pass loop ---------------------------------------------------------


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[RunStats]:
    """What every call of :meth:`Pipeline.run_pass` returned, in order."""
    seen: list[RunStats] = []
    original = Pipeline.run_pass

    async def spy(self: Pipeline, **kwargs: Any) -> RunStats:
        stats = await original(self, **kwargs)
        seen.append(stats)
        return stats

    monkeypatch.setattr(Pipeline, "run_pass", spy)
    return seen


async def via_poll(bridge: Bridge, sekmet: SekmetServer, stay: dict[str, Any]) -> None:
    """The poller."""
    await bridge.run_once(since=recent())


async def via_backfill(bridge: Bridge, sekmet: SekmetServer, stay: dict[str, Any]) -> None:
    """A bulk export."""
    await bridge.backfill()


async def via_receiver(bridge: Bridge, sekmet: SekmetServer, stay: dict[str, Any]) -> None:
    """A rest-hook notification with the discharged Encounter."""
    app = create_app(bridge, secret=SECRET, max_body=1 << 20)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http,
    ):
        encounter = sekmet.read("Encounter", stay["encounter"])
        answer = await http.put(
            f"/notify/Encounter/{encounter['id']}",
            content=json.dumps(encounter),
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert answer.status_code == 200
        await app.state.receiver.settle()


async def via_hl7_file(bridge: Bridge, sekmet: SekmetServer, stay: dict[str, Any]) -> None:
    """An ADT^A03 in a file."""
    message = discharge_home(stay["mrn"], stay["visit"]).encode()
    await ingest_hl7(bridge, message, visit_system=VISIT_SYSTEM, mrn_system=MRN_SYSTEM)


async def via_mllp(bridge: Bridge, sekmet: SekmetServer, stay: dict[str, Any]) -> None:
    """An ADT^A03 over MLLP."""
    listener = MllpListener(bridge, visit_system=VISIT_SYSTEM, mrn_system=MRN_SYSTEM)
    port = await listener.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = discharge_home(stay["mrn"], stay["visit"]).encode()
        writer.write(b"\x0b" + message + b"\x1c\r")
        await writer.drain()
        ack = await reader.readuntil(b"\x1c\r")
        writer.close()
        await writer.wait_closed()
        assert b"MSA|AA|" in ack
    finally:
        await listener.aclose()


DRIVERS: dict[str, Callable[[Bridge, SekmetServer, dict[str, Any]], Any]] = {
    "poll": via_poll,
    "backfill": via_backfill,
    "receiver": via_receiver,
    "hl7-file": via_hl7_file,
    "hl7-mllp": via_mllp,
}


@pytest.mark.parametrize("driver", sorted(DRIVERS))
async def test_every_driver_goes_through_the_one_pass_loop(
    sekmet: SekmetServer, tmp_path: Path, passes: list[RunStats], driver: str
) -> None:
    """One discharge home, fed by ``driver`` into a fresh journal: the pass loop runs, the
    discharge is the transition ``plan`` shows, and the Tasks written are the ones ``plan``
    planned (same identifiers), once."""
    made: list[Bridge] = []

    def make_bridge(**engine: Any) -> Bridge:
        folder = tmp_path / f"engine-{len(made)}"
        folder.mkdir()
        config = engine_config(sekmet, folder, **engine)
        made.append(Bridge.from_config(config))
        return made[-1]

    try:
        await _one_discharge(sekmet, make_bridge, passes, driver)
    finally:
        for bridge in made:
            await bridge.aclose()


async def _one_discharge(
    sekmet: SekmetServer,
    make_bridge: Callable[..., Bridge],
    passes: list[RunStats],
    driver: str,
) -> None:
    patient = sekmet.register_patient(birth_date="1950-03-04")
    encounter = sekmet.admit(patient)
    stay = {
        "encounter": encounter,
        "mrn": identifier(sekmet.read("Patient", patient), MRN_SYSTEM),
        "visit": identifier(sekmet.read("Encounter", encounter), VISIT_SYSTEM),
    }
    dry = []
    if driver not in ("hl7-file", "hl7-mllp"):
        sekmet.discharge(encounter, "home")
        dry = await make_bridge(watch=["Encounter"]).plan(since=recent())
        assert passes, "plan did not run the pass loop"
        passes.clear()
    bridge = make_bridge(watch=["Encounter"])
    await DRIVERS[driver](bridge, sekmet, stay)
    assert passes, "the driver did not run the pass loop"
    discharges = [
        t.transition
        for t in bridge.store.transitions(kind="discharge")
        if t.transition.patient == f"Patient/{patient}"
    ]
    assert [t.focus for t in discharges] == [f"Encounter/{encounter}"]
    # the discharge's work; the pass's sweep may add the new CarePlan's first review
    tasks = [
        t for t in engine_tasks(sekmet, patient) if t["code"]["coding"][0]["code"] in DISCHARGE_WORK
    ]
    assert {t["code"]["coding"][0]["code"] for t in tasks} == DISCHARGE_WORK
    if dry:
        (planned,) = [
            p
            for p in dry
            if p.transition.kind.value == "discharge"
            and p.transition.patient == discharges[0].patient
        ]
        assert planned.transition.key == discharges[0].key
        identifiers = {
            i["value"] for t in tasks for i in t["identifier"] if i["system"] == IDENTIFIER_SYSTEM
        }
        assert {a.identifier for a in planned.actions if isinstance(a, CreateTask)} == identifiers
    assert sum(p.dead for p in passes) == 0
