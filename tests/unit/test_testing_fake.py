"""The shipped in-memory FHIR fake: the REST semantics the engine relies on, and the engine's
whole loop over it (what users' own tests can do without a server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.errors import InvalidResource, MultipleMatches, ResourceNotFound, VersionConflict
from fhirbridge.store import MemoryStore
from fhirbridge.testing.builders import task as build_task
from fhirbridge.testing.fhirfake import FakeFhirServer
from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM

DATA = Path(__file__).resolve().parents[1] / "data"
TAG = f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"


def task(identifier: str, patient: str = "Patient/p1") -> dict[str, object]:
    """A Task with one identifier, for the server to give an id."""
    return build_task(
        None, patient=patient, identifier=[{"system": "urn:test", "value": identifier}]
    )


async def test_conditional_create_and_versioned_update() -> None:
    """If-None-Exist finds the first write again; If-Match refuses a stale version."""
    fake = FakeFhirServer()
    async with fake.client() as client:
        first = await client.create(task("a"), if_none_exist="identifier=urn:test|a")
        again = await client.create(task("a"), if_none_exist="identifier=urn:test|a")
        assert first.resource["id"] == again.resource["id"]
        assert len(fake.resources("Task")) == 1
        current = await client.read("Task", first.resource["id"])
        updated = await client.update({**current, "status": "accepted"}, if_match="1")
        assert updated.resource["meta"]["versionId"] == "2"
        with pytest.raises(VersionConflict):
            await client.update({**current, "status": "rejected"}, if_match="1")
        fake.put({**task("a"), "id": "other"})
        with pytest.raises(MultipleMatches):
            await client.create(task("a"), if_none_exist="identifier=urn:test|a")
        with pytest.raises(ResourceNotFound):
            await client.read("Task", "nosuch")


async def test_search_filters_pages_and_refuses_what_it_does_not_know() -> None:
    """Searches filter by patient, token and _lastUpdated, page by `next`, and a parameter
    the fake does not implement is a 400 (a test never passes on an ignored filter)."""
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    ticks = iter(start + timedelta(minutes=i) for i in range(100))
    fake = FakeFhirServer(now=lambda: next(ticks))
    for i in range(7):
        fake.put(task(f"t{i}", patient="Patient/p1" if i % 2 else "Patient/p2"))
    async with fake.client() as client:
        p1 = await client.search_all("Task", {"patient": "Patient/p1", "_count": 2})
        assert [t["identifier"][0]["value"] for t in p1] == ["t1", "t3", "t5"]
        late = await client.search_all("Task", {"_lastUpdated": "ge2026-11-02T09:05:00Z"})
        assert len(late) == 2
        token = await client.search_all("Task", {"identifier": "urn:test|t4"})
        assert len(token) == 1
        with pytest.raises(InvalidResource):
            await client.search_all("Task", {"owner:missing": "true"})
    assert fake.count("GET", "Task") == 2 + 1 + 1 + 1  # three pages of p1, then one each


async def test_a_transaction_resolves_references_and_is_all_or_nothing() -> None:
    """urn:uuid references become the created ids; a conditional entry that matches points
    the references at the existing resource; a failing entry undoes the whole Bundle."""
    fake = FakeFhirServer()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": task("x"),
                "request": {
                    "method": "POST",
                    "url": "Task",
                    "ifNoneExist": "identifier=urn:test|x",
                },
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
                "resource": {
                    "resourceType": "Provenance",
                    "target": [{"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}],
                },
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }
    async with fake.client() as client:
        await client.transaction(bundle)
        await client.transaction(bundle)  # a replay: the Task is found, not made again
        (made,) = fake.resources("Task")
        targets = [p["target"][0]["reference"] for p in fake.resources("Provenance")]
        assert targets == [f"Task/{made['id']}"] * 2
        broken = {
            **bundle,
            "entry": [
                {**bundle["entry"][0], "request": {"method": "POST", "url": "Task"}},
                {
                    "resource": {"resourceType": "Task", "id": "zz"},
                    "request": {"method": "PUT", "url": "Task/zz"},
                },
                {"request": {"method": "PATCH", "url": "Task/zz"}},
            ],
        }
        with pytest.raises(InvalidResource):
            await client.transaction(broken)
        assert len(fake.resources("Task")) == 1


async def test_the_engine_runs_its_whole_loop_against_the_fake() -> None:
    """A discharged inpatient stay on the fake gets its follow-up Tasks once: a second pass
    writes nothing more."""
    fake = FakeFhirServer()
    now = datetime.now(UTC)
    fake.put(json.loads((DATA / "Patient-example.json").read_text()))
    encounter = json.loads((DATA / "Encounter-example.json").read_text())
    fake.put(
        {
            **encounter,
            "status": "finished",
            "period": {
                "start": (now - timedelta(days=3)).isoformat(),
                "end": (now - timedelta(hours=2)).isoformat(),
            },
            "hospitalization": {
                "dischargeDisposition": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                            "code": "home",
                        }
                    ]
                }
            },
        }
    )
    config = load_config(
        data={
            "fhir": {"base_url": fake.base_url, "retry": {"attempts": 1}},
            "store": {"url": "memory://"},
            "engine": {"default_owner": "Organization/care-coordination", "risk": False},
        }
    )
    async with Bridge(config, client=fake.client(), store=MemoryStore()) as bridge:
        first = await bridge.run_once(since=now - timedelta(days=1))
        tasks = fake.resources("Task")
        assert first.created == len(tasks) >= 2
        assert all(t.get("code") for t in tasks)
        second = await bridge.run_once(since=now - timedelta(days=1))
    assert second.created == 0
    assert len(fake.resources("Task")) == len(tasks)
    assert {t["meta"]["tag"][0]["code"] for t in tasks} == {ENGINE_TAG_CODE}


async def test_a_pass_heals_duplicates_once_per_heal_interval() -> None:
    """Two engine Tasks sharing one identifier (a racing writer's leftovers): the first pass
    keeps the older and retires the other; the next pass, within `engine.heal_interval`,
    does not sweep again."""
    from fhirbridge.identity import IDENTIFIER_SYSTEM

    fake = FakeFhirServer()
    twin = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-30T10:00:00Z",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": "same-work"}],
        "meta": {"tag": [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}]},
    }
    fake.put(twin)
    fake.put({**twin, "authoredOn": "2026-11-30T10:00:01Z"})
    config = load_config(
        data={
            "fhir": {"base_url": fake.base_url, "retry": {"attempts": 1}},
            "store": {"url": "memory://"},
            "engine": {"risk": False, "watch": ["Encounter"]},
        }
    )
    async with Bridge(config, client=fake.client(), store=MemoryStore()) as bridge:
        await bridge.run_once(since=datetime.now(UTC) - timedelta(days=1))
        statuses = sorted(t["status"] for t in fake.resources("Task"))
        assert statuses == ["entered-in-error", "requested"]
        kept = next(t for t in fake.resources("Task") if t["status"] == "requested")
        assert kept["authoredOn"] == "2026-11-30T10:00:00Z"
        before = fake.count("GET", "CarePlan")
        await bridge.run_once(since=datetime.now(UTC) - timedelta(days=1))
        assert fake.count("GET", "CarePlan") == before  # no second sweep within the interval


async def test_run_forever_is_the_service_loop_and_ends_when_stop_is_set() -> None:
    """`Bridge.run_forever(stop)` runs passes (the service loop of `fhirbridge run`) and
    returns once `stop` is set, after the pass in progress."""
    import asyncio

    fake = FakeFhirServer()
    config = load_config(
        data={
            "fhir": {"base_url": fake.base_url, "retry": {"attempts": 1}},
            "store": {"url": "memory://"},
            "engine": {"risk": False, "watch": ["Encounter"], "poll_interval": 3600},
        }
    )
    stop = asyncio.Event()
    async with Bridge(config, client=fake.client(), store=MemoryStore()) as bridge:
        original = bridge.run_once
        passes = []

        async def once(**kwargs: object) -> object:
            stats = await original()
            passes.append(stats)
            stop.set()
            return stats

        bridge.run_once = once  # type: ignore[method-assign,assignment]
        await asyncio.wait_for(bridge.run_forever(stop), timeout=30)
    assert len(passes) == 1
