"""The writer's wire behaviour on servers that differ from the test server: no transactions,
transactions refused, one resource refused by a strict validator, a 429 storm.

A small stateful FHIR fake on ``httpx.MockTransport`` answers what these servers answer
(a real server on loopback will not produce these failures on demand).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from structlog.testing import capture_logs

from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RequestLimiter, RetryPolicy
from fhirbridge.identity import OBSERVATION_PLACEHOLDER, task_identifier
from fhirbridge.store.memory import MemoryStore
from fhirbridge.values import IDENTIFIER_SYSTEM, CreateTask, RecordRisk, Transition, TransitionKind
from fhirbridge.writeback.outbox import outbox_item
from fhirbridge.writeback.writer import Writer

BASE = "https://ehr.example.org/fhir"
Refusal = Callable[[str, Mapping[str, Any]], Mapping[str, Any] | None]


class FakeFhir:
    """A FHIR server in memory: conditional create, If-Match, identifier and tag search.

    ``transaction``: ``absent`` (not in the CapabilityStatement), ``405`` or ``400`` (listed
    but refused). ``refuse`` may turn a write into a 400 OperationOutcome; the first
    ``storm`` requests after the metadata get 429 with ``Retry-After: 1``.
    """

    def __init__(
        self, *, transaction: str = "absent", refuse: Refusal | None = None, storm: int = 0
    ):
        self.transaction = transaction
        self.refuse = refuse
        self.storm = storm
        self.store: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[str] = []
        self.next_id = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir").strip("/")
        self.requests.append(f"{request.method} {path.split('/')[0] or '(base)'}")
        if path == "metadata":
            return self._json(200, self._capabilities())
        if self.storm > 0:
            self.storm -= 1
            return httpx.Response(429, headers={"Retry-After": "1"})
        parts = path.split("/") if path else []
        body = json.loads(request.content) if request.content else None
        if not parts:
            return self._outcome(int(self.transaction), "not-supported", "no transactions here")
        if request.method == "GET" and len(parts) == 1:
            query = parse_qsl(request.url.query.decode())
            return self._json(200, self._bundle(self._search(parts[0], query)))
        if request.method == "GET":
            found = self.store.get(parts[0], {}).get(parts[1])
            return self._json(200, found) if found else self._outcome(404, "not-found", "gone")
        assert isinstance(body, dict)
        refused = self.refuse(request.method, body) if self.refuse else None
        if refused is not None:
            return self._json(400, refused)
        if request.method == "POST":
            condition = request.headers.get("if-none-exist")
            if condition:
                matches = self._search(parts[0], parse_qsl(condition))
                if len(matches) > 1:
                    return self._outcome(412, "multiple-matches", "several match")
                if matches:
                    return self._json(200, matches[0])
            return self._write(body, created=True)
        current = self.store.get(parts[0], {}).get(parts[1])
        wanted = request.headers.get("if-match")
        if current and wanted and wanted != f'W/"{current["meta"]["versionId"]}"':
            return self._outcome(412, "conflict", "version conflict")
        return self._write({**body, "id": parts[1]}, created=current is None)

    def _capabilities(self) -> dict[str, Any]:
        types = ["Task", "CarePlan", "Observation", "RiskAssessment", "Provenance"]
        rest: dict[str, Any] = {
            "mode": "server",
            "resource": [
                {"type": t, "searchParam": [{"name": "identifier", "type": "token"}]} for t in types
            ],
        }
        if self.transaction != "absent":
            rest["interaction"] = [{"code": "transaction"}]
        return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [rest]}

    def _search(self, kind: str, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = list(self.store.get(kind, {}).values())
        for name, value in query:
            if name == "identifier":
                system, _, code = value.partition("|")
                found = [
                    r
                    for r in found
                    if {"system": system, "value": code}
                    in [{k: i.get(k) for k in ("system", "value")} for i in r.get("identifier", [])]
                ]
            elif name == "_tag":
                system, _, code = value.partition("|")
                found = [
                    r
                    for r in found
                    if {"system": system, "code": code} in r.get("meta", {}).get("tag", [])
                ]
        return found

    def _write(self, body: dict[str, Any], *, created: bool) -> httpx.Response:
        kind = body["resourceType"]
        if "id" not in body or (created and not body.get("id")):
            self.next_id += 1
            body = {**body, "id": f"{kind.lower()}-{self.next_id}"}
        old = self.store.get(kind, {}).get(body["id"])
        version = int(old["meta"]["versionId"]) + 1 if old else 1
        body = {**body, "meta": {**body.get("meta", {}), "versionId": str(version)}}
        self.store.setdefault(kind, {})[body["id"]] = body
        headers = {"Location": f"{BASE}/{kind}/{body['id']}/_history/{version}"}
        return self._json(201 if created else 200, body, headers)

    def _bundle(self, resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        }

    @staticmethod
    def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, json=body, headers={**(headers or {})})

    def _outcome(self, status: int, code: str, text: str) -> httpx.Response:
        issue = {"severity": "error", "code": code, "diagnostics": text}
        return self._json(status, {"resourceType": "OperationOutcome", "issue": [issue]})

    def active(self, kind: str) -> list[dict[str, Any]]:
        """Resources of ``kind`` on the server."""
        return list(self.store.get(kind, {}).values())


NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


def discharge(patient: str) -> Transition:
    """A discharge of ``patient`` from stay ``Encounter/<patient>-stay``."""
    return Transition(
        kind=TransitionKind.DISCHARGE,
        patient=f"Patient/{patient}",
        focus=f"Encounter/{patient}-stay",
        encounter=f"Encounter/{patient}-stay",
        occurred_at=NOW,
        focus_version="2",
    )


def task_action(transition: Transition, code: str = "tcm-contact") -> CreateTask:
    """A create-task action of the shipped pack's kind."""
    return CreateTask(
        rule_id="discharge-community-contact",
        action_id=code,
        code=code,
        display="TCM interactive contact",
        description="Contact the patient within 2 business days",
        priority="routine",
        due=date(2026, 11, 20),
        patient=transition.patient,
        focus=transition.focus,
        encounter=transition.encounter,
        owner=None,
        owner_source="none",
        identifier=task_identifier("discharge-community-contact", code, transition.key),
        transition_key=transition.key,
    )


def risk_action(transition: Transition) -> RecordRisk:
    """A record-risk action with a valid score Observation and RiskAssessment."""
    ident = "risk-lace-" + transition.patient.split("/")[1]
    subject = {"reference": transition.patient}
    return RecordRisk(
        score="lace",
        tier="high",
        total=15,
        patient=transition.patient,
        encounter=str(transition.encounter),
        identifier=ident,
        observation={
            "resourceType": "Observation",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"{ident}-observation"}],
            "status": "final",
            "code": {"text": "LACE index"},
            "subject": subject,
            "valueInteger": 15,
        },
        risk_assessment={
            "resourceType": "RiskAssessment",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": ident}],
            "status": "final",
            "subject": subject,
            "basis": [{"reference": OBSERVATION_PLACEHOLDER}],
            "prediction": [{"qualitativeRisk": {"text": "high"}}],
        },
        transition_key=transition.key,
    )


def writer_for(
    fake: FakeFhir, store: MemoryStore, *, limiter: RequestLimiter | None = None, **kwargs: Any
) -> Writer:
    """A writer on the fake, retries without real waits."""

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    client = FhirClient(
        BASE,
        transport=httpx.MockTransport(fake.handler),
        retry=RetryPolicy(attempts=8, max_elapsed=1e9, jitter=0),
        sleep=no_wait,
        limiter=limiter,
    )
    return Writer(client, store, clock=_Clock(), **kwargs)


class _Clock:
    def now(self) -> datetime:
        return NOW


def enqueue(store: MemoryStore, transition: Transition, *actions: Any) -> None:
    """Put the actions of one transition in the outbox."""
    store.enqueue([outbox_item(a, transition) for a in actions])


async def test_a_server_without_transactions_gets_one_request_per_resource() -> None:
    """No ``transaction`` in the CapabilityStatement: the per-resource path, logged once; the
    unit's Tasks, CarePlan activity and risk resources are written with one Provenance."""
    fake, store = FakeFhir(transaction="absent"), MemoryStore()
    transition = discharge("p1")
    enqueue(store, transition, task_action(transition), risk_action(transition))
    writer = writer_for(fake, store)
    with capture_logs() as logs:
        stats = await writer.drain()
    assert writer.path == "per-resource"
    assert [e["path"] for e in logs if e["event"] == "write_path_chosen"] == ["per-resource"]
    assert stats.created == 1 and stats.dead == 0
    assert "POST (base)" not in fake.requests
    (provenance,) = fake.active("Provenance")
    targets = sorted(t["reference"].split("/")[0] for t in provenance["target"])
    assert targets == ["CarePlan", "Observation", "RiskAssessment", "Task"]
    assert provenance["entity"][0]["what"]["reference"] == "Encounter/p1-stay/_history/2"


@pytest.mark.parametrize("refusal", ["405", "400"])
async def test_a_refused_transaction_falls_back_to_per_resource_writes(refusal: str) -> None:
    """The server lists transactions but refuses them (405, or 400 on conditional entries):
    the unit is written one resource at a time, the writer stays on that path (logged once),
    and nothing is dead-lettered."""
    fake, store = FakeFhir(transaction=refusal), MemoryStore()
    for name in ("p1", "p2"):
        transition = discharge(name)
        enqueue(store, transition, task_action(transition))
    writer = writer_for(fake, store, concurrency=1)
    with capture_logs() as logs:
        stats = await writer.drain()
    assert stats.created == 2 and stats.dead == 0
    assert writer.path == "per-resource"
    assert fake.requests.count("POST (base)") == 1
    assert len([e for e in logs if e["event"] == "write_path_fallback"]) == 1
    assert len(fake.active("Task")) == 2


async def test_one_refused_resource_is_dead_lettered_alone_with_the_outcome() -> None:
    """A strict validator refuses the RiskAssessment (400 invariant): the Tasks and the score
    Observation of the same unit are written, only the risk item is dead-lettered, and its
    reason carries the server's OperationOutcome."""
    invariant = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invariant",
                "diagnostics": "probability is decimal implies (probability as decimal) <= 100",
                "expression": ["RiskAssessment.prediction[0]"],
            }
        ],
    }

    def refuse(method: str, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return invariant if body.get("resourceType") == "RiskAssessment" else None

    fake, store = FakeFhir(transaction="400", refuse=refuse), MemoryStore()
    transition = discharge("p1")
    enqueue(
        store,
        transition,
        task_action(transition),
        task_action(transition, "tcm-visit"),
        risk_action(transition),
    )
    writer = writer_for(fake, store)
    stats = await writer.drain()
    assert stats.created == 2 and stats.dead == 1
    assert len(fake.active("Task")) == 2 and len(fake.active("Observation")) == 1
    assert fake.active("RiskAssessment") == []
    (dead,) = store.outbox_items("dead")
    assert dead.kind == "record-risk"
    assert "invariant" in dead.last_error and '"resourceType":"OperationOutcome"' in dead.last_error
    # a refused resource is not a refused transaction: the writer keeps transactions
    assert writer.path == "transaction"


async def test_a_429_storm_slows_every_lane_and_dead_letters_nothing() -> None:
    """Four patients written at once; the server answers 429 with Retry-After to a burst of
    requests: every lane waits (one shared limiter), and once the storm passes everything is
    written, nothing dead-lettered."""
    now = [0.0]
    waited_by: set[str] = set()

    async def sleep(seconds: float) -> None:
        task = asyncio.current_task()
        waited_by.add(task.get_name() if task else "?")
        await asyncio.sleep(0)  # the clock stands still: the pause holds every later request

    limiter = RequestLimiter(clock=lambda: now[0], sleep=sleep)
    fake, store = FakeFhir(transaction="absent", storm=6), MemoryStore()
    for name in ("p1", "p2", "p3", "p4"):
        transition = discharge(name)
        enqueue(store, transition, task_action(transition))
    writer = writer_for(fake, store, limiter=limiter, concurrency=4)
    stats = await writer.drain()
    assert stats.created == 4 and stats.dead == 0
    assert store.outbox_items("dead") == []
    assert limiter.waits >= 1
    assert len(waited_by) == 4  # every lane was held by the pause
    assert len(fake.active("Task")) == 4


async def test_request_rate_is_capped() -> None:
    """``fhir.max_requests_per_second``: ten requests at 5 per second take 1.8 s of waits."""
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RequestLimiter(5.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        await limiter.acquire()
    assert sum(waits) == pytest.approx(1.8)


async def test_one_patients_units_are_written_in_order_across_lanes() -> None:
    """Two patients with two units each and two lanes: the patients interleave, but each
    patient's units reach the server in the order they were planned."""
    fake, store = FakeFhir(transaction="absent"), MemoryStore()
    order: list[str] = []
    original = fake.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/Task"):
            order.append(
                json.loads(request.content)["code"]["coding"][0]["code"]
                + "@"
                + json.loads(request.content)["for"]["reference"]
            )
        return original(request)

    fake.handler = handler  # type: ignore[method-assign]
    for name in ("p1", "p2"):
        first = discharge(name)
        enqueue(store, first, task_action(first, "tcm-contact"))
        second = Transition(
            kind=TransitionKind.READMISSION,
            patient=first.patient,
            focus=f"Encounter/{name}-second",
            encounter=f"Encounter/{name}-second",
            occurred_at=NOW,
        )
        enqueue(store, second, task_action(second, "tcm-visit"))
    writer = writer_for(fake, store, concurrency=2)
    await writer.drain()
    for patient in ("Patient/p1", "Patient/p2"):
        mine = [o.split("@")[0] for o in order if o.endswith(patient)]
        assert mine == ["tcm-contact", "tcm-visit"]
