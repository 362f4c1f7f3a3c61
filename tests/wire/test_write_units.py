"""The writer's wire behaviour on servers that differ from the test server: no transactions,
transactions refused, one resource refused by a strict validator, a 429 storm.

The shipped in-memory server (:class:`fhirbridge.testing.fhirfake.FakeFhirServer`) answers,
and a small injector in front of it produces the failures a real server on loopback will not
produce on demand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import RequestLimiter, RetryPolicy
from fhirbridge.identity import OBSERVATION_PLACEHOLDER, task_identifier
from fhirbridge.store.memory import MemoryStore
from fhirbridge.testing.fhirfake import FakeFhirServer
from fhirbridge.values import IDENTIFIER_SYSTEM, CreateTask, RecordRisk, Transition, TransitionKind
from fhirbridge.writeback.outbox import outbox_item
from fhirbridge.writeback.writer import Writer

#: Answers a request instead of the server (None: let the server answer).
Inject = Callable[[httpx.Request], httpx.Response | None]


def outcome(status: int, code: str, text: str) -> httpx.Response:
    """An error answer with an OperationOutcome."""
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": [issue]})


def is_transaction(request: httpx.Request, fake: FakeFhirServer) -> bool:
    """A POST to the base: a transaction or batch Bundle."""
    return request.method == "POST" and request.url.path.rstrip("/") == httpx.URL(
        fake.base_url
    ).path.rstrip("/")


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
    fake: FakeFhirServer,
    store: MemoryStore,
    *,
    inject: Inject | None = None,
    limiter: RequestLimiter | None = None,
    **kwargs: Any,
) -> Writer:
    """A writer on the fake (behind ``inject``), retries without real waits."""

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = inject(request) if inject is not None else None
        return answer if answer is not None else fake.transport.handle_request(request)

    client = FhirClient(
        fake.base_url,
        transport=httpx.MockTransport(handler),
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
    unit's Task, CarePlan activity and risk resources are written with one Provenance."""
    fake, store = FakeFhirServer(transactions=False), MemoryStore()
    transition = discharge("p1")
    enqueue(store, transition, task_action(transition), risk_action(transition))
    writer = writer_for(fake, store)
    with capture_logs() as logs:
        stats = await writer.drain()
    assert writer.path == "per-resource"
    assert [e["path"] for e in logs if e["event"] == "write_path_chosen"] == ["per-resource"]
    assert stats.created == 1 and stats.dead == 0
    assert not any(is_transaction(r, fake) for r in fake.requests)
    (provenance,) = fake.resources("Provenance")
    targets = sorted(t["reference"].split("/")[0] for t in provenance["target"])
    assert targets == ["CarePlan", "Observation", "RiskAssessment", "Task"]
    assert provenance["entity"][0]["what"]["reference"] == "Encounter/p1-stay/_history/2"


def _state(fake: FakeFhirServer) -> dict[str, Any]:
    """What a path leaves on the fake, free of ids: Tasks, activities, Provenance targets."""
    tasks = {f"Task/{t['id']}": t["code"]["coding"][0]["code"] for t in fake.resources("Task")}
    kinds = {
        f"{kind}/{r['id']}": kind
        for kind in ("Task", "CarePlan", "Observation", "RiskAssessment")
        for r in fake.resources(kind)
    }
    (careplan,) = fake.resources("CarePlan")
    return {
        "tasks": sorted(tasks.values()),
        "activities": sorted(tasks[a["reference"]["reference"]] for a in careplan["activity"]),
        "provenance": sorted(
            sorted(kinds[t["reference"]] for t in p["target"]) for p in fake.resources("Provenance")
        ),
    }


async def test_both_paths_leave_the_same_state_and_the_transaction_costs_one_request() -> None:
    """The same unit on the transaction path and on the per-resource path: the same Tasks,
    activities and Provenance targets; the transaction path sends one Bundle (after one
    CarePlan search), the per-resource path a request per resource."""
    states, writes = [], []
    for transactions in (True, False):
        fake, store = FakeFhirServer(transactions=transactions), MemoryStore()
        transition = discharge("p1")
        enqueue(
            store,
            transition,
            task_action(transition),
            task_action(transition, "tcm-visit"),
            risk_action(transition),
        )
        stats = await writer_for(fake, store).drain()
        assert stats.created == 2 and stats.dead == 0
        states.append(_state(fake))
        writes.append(sum(1 for r in fake.requests if r.method in ("POST", "PUT")))
        if transactions:
            assert sum(1 for r in fake.requests if is_transaction(r, fake)) == 1
    assert states[0] == states[1]
    assert writes[0] == 1 and writes[1] >= 6


@pytest.mark.parametrize("refusal", [405, 400])
async def test_a_refused_transaction_falls_back_to_per_resource_writes(refusal: int) -> None:
    """The server lists transactions but refuses them (405, or 400 on conditional entries):
    the unit is written one resource at a time, the writer stays on that path (logged once),
    and nothing is dead-lettered."""
    fake, store = FakeFhirServer(), MemoryStore()
    sent: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if not is_transaction(request, fake):
            return None
        sent.append(refusal)
        return outcome(refusal, "not-supported", "conditional entries are not supported here")

    for name in ("p1", "p2"):
        transition = discharge(name)
        enqueue(store, transition, task_action(transition))
    writer = writer_for(fake, store, inject=refuse, concurrency=1)
    with capture_logs() as logs:
        stats = await writer.drain()
    assert stats.created == 2 and stats.dead == 0
    assert writer.path == "per-resource"
    assert sent == [refusal]
    assert len([e for e in logs if e["event"] == "write_path_fallback"]) == 1
    assert len(fake.resources("Task")) == 2


async def test_one_refused_resource_is_dead_lettered_alone_with_the_outcome() -> None:
    """A strict validator refuses the RiskAssessment (400 invariant), so also any transaction
    holding it: the Tasks and the score Observation of the same unit are written, only the
    risk item is dead-lettered, and its reason carries the server's OperationOutcome."""
    fake, store = FakeFhirServer(), MemoryStore()
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

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method in ("POST", "PUT") and b'"RiskAssessment"' in request.content:
            return httpx.Response(400, json=invariant)
        return None

    transition = discharge("p1")
    enqueue(
        store,
        transition,
        task_action(transition),
        task_action(transition, "tcm-visit"),
        risk_action(transition),
    )
    writer = writer_for(fake, store, inject=refuse)
    stats = await writer.drain()
    assert stats.created == 2 and stats.dead == 1
    assert len(fake.resources("Task")) == 2 and len(fake.resources("Observation")) == 1
    assert fake.resources("RiskAssessment") == []
    (dead,) = store.outbox_items("dead")
    assert dead.kind == "record-risk"
    assert "invariant" in dead.last_error and '"resourceType":"OperationOutcome"' in dead.last_error
    # a refused resource is not a refused transaction: the writer keeps transactions
    assert writer.path == "transaction"


async def test_a_429_storm_slows_every_lane_and_dead_letters_nothing() -> None:
    """Four patients written at once; the server answers 429 with Retry-After to a burst of
    requests: every lane waits (one shared limiter), and once the storm passes everything is
    written, nothing dead-lettered."""
    waited_by: set[str] = set()

    async def sleep(seconds: float) -> None:
        task = asyncio.current_task()
        waited_by.add(task.get_name() if task else "?")
        await asyncio.sleep(0)  # the clock stands still: the pause holds every later request

    storm = [6]

    def throttle(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/metadata") or storm[0] <= 0:
            return None
        storm[0] -= 1
        return httpx.Response(429, headers={"Retry-After": "1"})

    limiter = RequestLimiter(clock=lambda: 0.0, sleep=sleep)
    fake, store = FakeFhirServer(transactions=False), MemoryStore()
    for name in ("p1", "p2", "p3", "p4"):
        transition = discharge(name)
        enqueue(store, transition, task_action(transition))
    writer = writer_for(fake, store, inject=throttle, limiter=limiter, concurrency=4)
    stats = await writer.drain()
    assert stats.created == 4 and stats.dead == 0
    assert store.outbox_items("dead") == []
    assert storm == [0] and limiter.waits >= 1
    assert len(waited_by) == 4  # every lane was held by the pause
    assert len(fake.resources("Task")) == 4


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
    fake, store = FakeFhirServer(transactions=False), MemoryStore()
    order: list[tuple[str, str]] = []

    def record(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path.endswith("/Task"):
            task = json.loads(request.content)
            order.append((task["for"]["reference"], task["code"]["coding"][0]["code"]))
        return None

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
    await writer_for(fake, store, inject=record, concurrency=2).drain()
    for patient in ("Patient/p1", "Patient/p2"):
        assert [code for who, code in order if who == patient] == ["tcm-contact", "tcm-visit"]
