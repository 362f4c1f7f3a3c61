"""Listeners on real sockets for the fuzz and slow-connection tests: the receiver under uvicorn
(the options ``fhirbridge serve`` uses) and the MLLP listener, each on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.receiver.server import ReceiverServer, uvicorn_config
from fhirbridge.sources.hl7v2 import MllpListener
from fhirbridge.store import MemoryStore
from tests._builders.hl7 import FakeFhir, make_bridge
from tests._builders.receiver import BASE, NOW, SECRET


class _Server(ReceiverServer):
    """The receiver's uvicorn server without signal handlers (a test owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the signals alone."""
        yield


@dataclass
class HttpReceiver:
    """A receiver served by uvicorn on ``port``, its app and its bridge."""

    port: int
    app: Starlette
    bridge: Bridge
    server: ReceiverServer

    @property
    def receiver(self) -> Receiver:
        """The app's receiver."""
        receiver: Receiver = self.app.state.receiver
        return receiver


@contextlib.asynccontextmanager
async def http_receiver(**receiver: Any) -> AsyncIterator[HttpReceiver]:
    """The receiver as ``fhirbridge serve`` runs it (connection limits and timeouts from the
    ``receiver`` settings given), on a MemoryStore bridge without write-back."""
    config = load_config(
        data={
            "fhir": {"base_url": BASE, "name": "ehr"},
            "store": {"url": "memory://"},
            "receiver": {"host": "127.0.0.1", "port": 0, **receiver},
        },
        environ={},
    )
    bridge = Bridge(config, client=None, store=MemoryStore(), clock=FixedClock(NOW))
    bridge.writer = None
    app = create_app(
        bridge,
        secret=SECRET,
        max_body=config.receiver.max_body,
        gap_grace=0,
        body_timeout=config.receiver.body_timeout,
    )
    server = _Server(uvicorn_config(app, config.receiver))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield HttpReceiver(port, app, bridge, server)
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def mllp_listener(fhir: FakeFhir, **options: Any) -> AsyncIterator[tuple[int, MllpListener]]:
    """An MLLP listener (no background processing) on the fake FHIR server."""
    bridge = make_bridge(fhir, MemoryStore())
    listener = MllpListener(bridge, process=False, **options)
    port = await listener.start("127.0.0.1", 0)
    try:
        yield port, listener
    finally:
        await listener.aclose()
        await bridge.aclose()
