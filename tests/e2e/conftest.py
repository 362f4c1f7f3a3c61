"""End-to-end fixtures: a real sekmet FHIR R4 server on loopback, and engines pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.clock import Clock, FixedClock
from fhirbridge.config import Config, load_config
from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer


@pytest.fixture
def sekmet(tmp_path: Path) -> Iterator[SekmetServer]:
    """A fresh, open sekmet server (simulator off) for one test."""
    with SekmetServer.start(tmp_path / "sekmet") as server:
        yield server


def engine_config(server: SekmetServer, tmp_path: Path, **engine: Any) -> Config:
    """A configuration for ``server`` with a journal file in ``tmp_path``."""
    return load_config(
        data={
            "fhir": {"base_url": server.base_url, "name": "sekmet", "retry": {"attempts": 2}},
            "store": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
            "engine": {"default_owner": "Organization/care-coordination", **engine},
        }
    )


@pytest.fixture
async def make_bridge(sekmet: SekmetServer, tmp_path: Path) -> AsyncIterator[Callable[..., Bridge]]:
    """Build engines on the test's server and journal (call it again to 'restart');
    each is closed at the end of the test."""
    made: list[Bridge] = []

    def build(clock: Clock | None = None, **engine: Any) -> Bridge:
        bridge = Bridge.from_config(engine_config(sekmet, tmp_path, **engine), clock=clock)
        made.append(bridge)
        return bridge

    yield build
    for engine in made:
        await engine.aclose()


@pytest.fixture
async def bridge(make_bridge: Callable[..., Bridge]) -> AsyncIterator[Bridge]:
    """An engine on the test's server, closed afterwards."""
    engine = make_bridge()
    yield engine
    await engine.aclose()


def recent() -> datetime:
    """A poll start that covers what the test just did on the server."""
    return datetime.now(UTC) - timedelta(minutes=10)


def fixed(text: str) -> FixedClock:
    """A clock stopped at an ISO instant."""
    return FixedClock(datetime.fromisoformat(text))
