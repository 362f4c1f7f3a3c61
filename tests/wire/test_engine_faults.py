"""The engine when the server fails mid-run: retried, then an error, with the watermark
still behind everything not yet journalled."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.errors import RateLimited
from fhirbridge.store import SqliteStore
from fhirbridge.testing.builders import encounter as build_encounter
from tests.wire._client import BASE, ClientFactory


def encounter(n: int) -> dict[str, object]:
    """Stay ``n`` (Encounter/e``n`` of Patient/p``n``): finished inpatient, discharged home."""
    return build_encounter(
        f"e{n}",
        patient=f"p{n}",
        start="2026-11-15T08:00:00Z",
        end="2026-11-20T10:00:00Z",
        disposition="home",
        meta={"versionId": "1", "lastUpdated": "2026-11-20T10:00:00Z"},
    )


def page(entries: list[dict[str, object]], next_url: str | None) -> httpx.Response:
    """A searchset page with the server's clock and an optional next link."""
    bundle: dict[str, object] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": "2026-11-20T12:00:00Z"},
        "entry": [{"resource": e, "search": {"mode": "match"}} for e in entries],
        "link": [{"relation": "next", "url": next_url}] if next_url else [],
    }
    return httpx.Response(200, json=bundle)


async def test_a_503_storm_mid_paging_leaves_the_watermark_unmoved(
    router: respx.MockRouter, make_client: ClientFactory, tmp_path: Path
) -> None:
    """Page 1 arrives, page 2 keeps failing: the run raises RateLimited after its retries,
    page 1 is journalled (nothing lost), and the Encounter watermark has not moved."""
    router.get(f"{BASE}/Encounter", params={"_offset": "1"}).mock(
        return_value=httpx.Response(503, text="<html>busy</html>")
    )
    router.get(f"{BASE}/Encounter").mock(
        return_value=page([encounter(1)], f"{BASE}/Encounter?_offset=1")
    )
    config = load_config(data={"fhir": {"base_url": BASE}, "engine": {"watch": ["Encounter"]}})
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    bridge = Bridge(config, client=make_client(), store=store)
    with pytest.raises(RateLimited):
        await bridge.poller().poll(bridge.default_since())
    assert store.watermark("default", "Encounter") is None
    assert [v.id for v in store.pending()] == ["e1"]


async def test_an_unusable_resource_goes_to_the_dead_letters_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A version that cannot be processed is dead-lettered with its reason; others proceed."""
    config = load_config(data={"fhir": {"base_url": BASE}})
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    bridge = Bridge(config, client=None, store=store)
    broken = encounter(2)
    broken["period"] = "not a period"
    bridge.ingest([json.dumps(broken).encode(), json.dumps(encounter(3)).encode()])
    stats = await bridge.process()
    assert stats.dead == 1
    assert stats.transitions >= 1
    (letter,) = store.dead_letters()
    assert "Encounter/e2" in letter.reason
    assert store.pending() == []


async def test_replay_after_a_fix_processes_the_rejected_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version rejected by a bug is dead-lettered; after the fix, `replay` puts it back on
    the pending list and processing finds its transition."""
    config = load_config(data={"fhir": {"base_url": BASE}})
    store = SqliteStore(tmp_path / "journal.db")
    store.migrate()
    bridge = Bridge(config, client=None, store=store)

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise ValueError("a bug in detection")

    with monkeypatch.context() as patched:
        patched.setattr("fhirbridge.pipeline._evaluate.detect_encounter_views", broken)
        bridge.ingest([json.dumps(encounter(4)).encode()])
        assert (await bridge.process()).dead == 1
    assert bridge.replay() == 1
    stats = await bridge.process()
    assert stats.dead == 0
    assert [t.transition.kind.value for t in store.transitions()] == ["discharge"]
    assert all(letter.replayed for letter in store.dead_letters(include_replayed=True))
