"""The notification receiver as the wire and fuzz tests drive it: an app on a memory journal
(no write-back: planned work stays in the outbox) with its lifespan entered, reached over
ASGI, and the notifications it takes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.store import MemoryStore
from fhirbridge.testing import builders
from fhirbridge.values import ResourceVersion

BASE = "https://ehr.example.org/fhir"
SECRET = "s3cret-token"
AUTH = {"Authorization": f"Bearer {SECRET}"}
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
DATA = Path(__file__).resolve().parents[1] / "data"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-complete"


@dataclass
class Running:
    """A receiver app with its lifespan entered, an HTTP client on it, and its bridge."""

    app: Starlette
    http: httpx.AsyncClient
    bridge: Bridge
    new: list[ResourceVersion]
    commits: list[int]

    @property
    def receiver(self) -> Receiver:
        """The app's receiver."""
        receiver: Receiver = self.app.state.receiver
        return receiver


class RecordingStore(MemoryStore):
    """A MemoryStore that notes each append's size and the versions it took as new."""

    def __init__(self) -> None:
        super().__init__()
        self.new: list[ResourceVersion] = []
        self.commits: list[int] = []

    def append(self, versions: Iterable[ResourceVersion]) -> list[ResourceVersion]:
        """Append, then note what happened."""
        batch = list(versions)
        added = super().append(batch)
        self.commits.append(len(batch))
        self.new.extend(added)
        return added


@asynccontextmanager
async def running(
    fhir: FhirClient | None = None, *, max_body: int = 64_000, **options: Any
) -> AsyncIterator[Running]:
    """A receiver on a MemoryStore bridge for ``BASE`` (gap grace 0 unless given)."""
    config = load_config(
        data={"fhir": {"base_url": BASE, "name": "ehr"}, "store": {"url": "memory://"}}
    )
    store = RecordingStore()
    bridge = Bridge(config, client=fhir, store=store, clock=FixedClock(NOW))
    bridge.writer = None  # plan into the outbox, write nothing back
    options.setdefault("gap_grace", 0)
    app = create_app(bridge, secret=SECRET, max_body=max_body, **options)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://receiver") as http,
    ):
        yield Running(app, http, bridge, store.new, store.commits)


def encounter(version: int, status: str = "finished", rid: str = "e1") -> dict[str, Any]:
    """An inpatient stay of Patient/p1, discharged home, at ``meta.versionId`` ``version``."""
    return builders.encounter(
        rid,
        status=status,
        start="2026-11-15T10:00:00Z",
        end="2026-11-20T10:00:00Z" if status == "finished" else None,
        disposition="home",
        meta={"versionId": str(version), "lastUpdated": f"2026-11-20T10:0{version}:00Z"},
    )


def put(r: Running, resource: dict[str, Any], **headers: str) -> Any:
    """PUT a resource to the receiver as a rest-hook notification (with the secret)."""
    url = f"/notify/{resource['resourceType']}/{resource['id']}"
    return r.http.put(url, content=json.dumps(resource), headers={**AUTH, **headers})


def journalled(r: Running) -> list[tuple[str, str]]:
    """``(reference, version)`` of every version the journal took as new, sorted."""
    return sorted((v.reference, v.version_id) for v in r.new)


def notification(
    kind: str,
    number: int | None = None,
    *,
    since: int | None = None,
    focus: str | None = None,
    resources: tuple[dict[str, Any], ...] = (),
    status: str = "active",
) -> dict[str, Any]:
    """A Backport notification Bundle shaped as sekmet sends it, for Subscription/s1."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {
            "name": "events-since-subscription-start",
            "valueString": str(since if since is not None else number or 0),
        },
    ]
    if resources and focus is None:
        focus = f"{BASE}/{resources[0]['resourceType']}/{resources[0]['id']}"
    if number is not None:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(number)}]
        if focus:
            parts.append({"name": "focus", "valueReference": {"reference": focus}})
        params.append({"name": "notification-event", "part": parts})
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:s", "resource": {"resourceType": "Parameters", "parameter": params}}
    ]
    entries += [
        {
            "fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
        }
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


async def notify(r: Running, bundle: dict[str, Any]) -> httpx.Response:
    """POST a notification to the receiver and wait until its effects are done."""
    answer = await r.http.post("/notify", json=bundle, headers=AUTH)
    await r.receiver.settle()
    return answer
