"""The receiver app in process under hostile requests: never a 5xx, every refusal an
OperationOutcome, and valid notifications interleaved with garbage all journalled and
processed."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.store import SqliteStore
from tests._builders.receiver import AUTH, BASE, NOW, SECRET, encounter, notification
from tests.fuzz._strategies import (
    Hostile,
    deep,
    hostile_requests,
    is_outcome,
    poisoned_text,
    valid,
)
from tests.fuzz._tally import TALLY, examples


class Driver:
    """A receiver app on a SQLite journal (the default one, which refuses what it cannot
    encode) with its lifespan entered on an event loop of its own, so that synchronous
    hypothesis tests can send it requests one at a time."""

    def __init__(self, folder: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.store = SqliteStore(folder / "journal.db")
        self.store.migrate()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        config = load_config(
            data={"fhir": {"base_url": BASE, "name": "ehr"}, "store": {"url": "memory://"}},
            environ={},
        )
        bridge = Bridge(config, client=None, store=self.store, clock=FixedClock(NOW))
        bridge.writer = None
        self.bridge = bridge
        self.app = create_app(bridge, secret=SECRET, max_body=200_000, gap_grace=0)
        await self.stack.enter_async_context(self.app.router.lifespan_context(self.app))
        transport = httpx.ASGITransport(app=self.app)
        self.http = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://receiver")
        )

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """One request, answered."""
        return self.loop.run_until_complete(
            self.http.request(method, path, content=body, headers=headers)
        )

    def settle(self) -> None:
        """Wait for the receiver's worker to finish what is queued."""
        receiver: Receiver = self.app.state.receiver
        self.loop.run_until_complete(receiver.settle())

    def close(self) -> None:
        """Leave the lifespan and close the loop."""
        self.loop.run_until_complete(self.stack.aclose())
        self.loop.close()
        self.store.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    """One receiver for the module's examples."""
    app = Driver(tmp_path_factory.mktemp("fuzz-receiver"))
    yield app
    app.close()


def check(answer: httpx.Response, label: str) -> None:
    """Never 5xx; every refusal an OperationOutcome; counted in the tally."""
    TALLY["receiver: hostile requests"] += 1
    TALLY[f"receiver: {answer.status_code // 100}xx"] += 1
    if answer.status_code >= 500:
        TALLY["receiver: 5xx"] += 1
    if answer.status_code >= 400 and not is_outcome(answer):
        TALLY["receiver: bare refusals"] += 1
    assert answer.status_code < 500, f"{label} -> {answer.status_code} {answer.text[:200]}"
    assert answer.status_code < 400 or is_outcome(answer), f"{label} -> bare {answer.text[:200]}"


@settings(max_examples=examples(800))
@given(request=hostile_requests())
def test_hostile_requests_never_5xx_and_refusals_are_outcomes(
    driver: Driver, request: Hostile
) -> None:
    """Whatever arrives, the answer is below 500 and every 4xx is an OperationOutcome."""
    check(
        driver.send(request.method, request.path, request.body, request.headers), request.describe()
    )


TYPE_ERRORS = [
    ("/notify/$process-message", '{"resourceType":"Bundle","type":"message","entry":5}'),
    (
        "/notify",
        '{"resourceType":"Bundle","type":"history","entry":[{"resource":'
        '{"resourceType":"Parameters","parameter":5}}]}',
    ),
    (
        "/notify",
        '{"resourceType":"Bundle","type":"message","entry":[{"resource":'
        '{"resourceType":"MessageHeader","eventCoding":{"code":"notification-admit"},"focus":5}}]}',
    ),
]


@st.composite
def garbage(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    """A request the receiver must refuse (4xx with an OperationOutcome, nothing journalled)."""
    kind = draw(st.sampled_from(["poison", "deep", "types", "auth", "foreign", "nosuch"]))
    enc = encounter(1, rid="g1")
    if kind == "poison":
        return "PUT", "/notify/Encounter/g1", poisoned_text(draw, enc), AUTH
    if kind == "deep":
        return (
            "POST",
            draw(st.sampled_from(["/notify", "/notify/$process-message"])),
            deep(draw),
            AUTH,
        )
    if kind == "types":
        path, body = draw(st.sampled_from(TYPE_ERRORS))
        return "POST", path, body.encode(), AUTH
    if kind == "auth":
        return "PUT", "/notify/Encounter/g1", json.dumps(enc).encode(), {}
    note: dict[str, Any] = notification("event-notification", None, resources=(enc,))
    if kind == "foreign":
        note = copy.deepcopy(note)
        note["entry"][1]["fullUrl"] = "https://elsewhere.example.com/fhir/Encounter/g1"
        return "POST", "/notify", json.dumps(note).encode(), AUTH
    focus = draw(st.sampled_from(["Encounter/../../metadata", "Encounter?x=1", "Encounter/a b"]))
    note = notification("event-notification", 1, focus=focus)
    return "POST", "/notify", json.dumps(note).encode(), AUTH


@settings(max_examples=examples(80))
@given(
    plan=st.lists(
        st.one_of(st.sampled_from(["put", "post", "topic", "message"]), garbage()),
        min_size=2,
        max_size=8,
    )
)
def test_valid_notifications_between_garbage_are_all_journalled_and_processed(
    driver: Driver, plan: list[Any]
) -> None:
    """Each valid notification is acknowledged, journalled and processed (nothing is left
    pending); each piece of garbage between them is a 4xx OperationOutcome."""
    expected: list[str] = []
    for item in plan:
        if isinstance(item, str):
            method, path, body, rid = valid(item)
            answer = driver.send(method, path, body, AUTH)
            TALLY["receiver: valid interleaved"] += 1
            assert answer.status_code == 200, answer.text
            expected.append(rid)
        else:
            method, path, body, headers = item
            answer = driver.send(method, path, body, headers)
            check(answer, f"{method} {path} {body[:80]!r}")
            assert 400 <= answer.status_code < 500
    driver.settle()
    store = driver.store
    assert [rid for rid in expected if store.snapshot("ehr", "Encounter", rid) is None] == []
    assert store.pending(10) == []
    assert store.snapshot("ehr", "Encounter", "g1") is None  # no garbage journalled
