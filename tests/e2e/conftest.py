"""End-to-end fixtures: a real sekmet FHIR R4 server on loopback, and engines pointed at it.

One server serves the whole session (a start costs seconds, a test's cleanup a fraction of
one): each test gets it through ``sekmet``, which deletes everything the test wrote when it
ends, so no test sees another's patients, Tasks or Subscriptions. Every test registers its
own patients anyway. A test that needs a server set up otherwise (authentication, say)
starts one of its own with :meth:`SekmetServer.start`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.clock import Clock
from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import engine_config


@pytest.fixture(scope="session")
def shared_sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    """The session's open sekmet server (simulator off); use ``sekmet`` in tests."""
    with SekmetServer.start(tmp_path_factory.mktemp("sekmet")) as server:
        yield server


@pytest.fixture
def sekmet(shared_sekmet: SekmetServer) -> Iterator[SekmetServer]:
    """The session's sekmet server, as if fresh: what the test writes is deleted after it."""
    if not shared_sekmet.running:
        pytest.fail(f"the session's sekmet server died:\n{shared_sekmet.log_tail()}")
    mark = shared_sekmet.mark()
    yield shared_sekmet
    shared_sekmet.clear_since(mark)


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
