"""``fhirbridge serve``: the receiver under uvicorn, with the polling loop, in one event loop.

SIGTERM (or Ctrl-C) stops accepting connections, lets requests in flight finish (each is
answered only once journalled), then the worker finishes its pass and processes what is
pending, and :func:`serve` returns normally (exit code 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from fhirbridge.config import Config, ReceiverConfig
from fhirbridge.engine import Bridge
from fhirbridge.errors import ConfigError, FhirBridgeError
from fhirbridge.receiver._bounds import JsonLimits
from fhirbridge.receiver._protocol import ConnectionLimits, guarded_protocol
from fhirbridge.receiver.app import DEFAULT_PREFIX, create_app
from fhirbridge.subscriptions import ensure_subscriptions

__all__ = ["ReceiverServer", "freeze_heap", "serve"]

log = structlog.get_logger(__name__)


class ReceiverServer(uvicorn.Server):
    """uvicorn's server with its signals handled on the event loop and not re-raised after
    the graceful shutdown (uvicorn re-raises them, which would end the process by signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install SIGINT/SIGTERM handlers for the life of the server (main thread only)."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (ValueError, RuntimeError, NotImplementedError):
                continue
            installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def freeze_heap() -> None:
    """Keep what is loaded at start-up out of the garbage collector's full passes.

    The engine imports large libraries (``fhir.resources``, pydantic); a full collection
    over them pauses the event loop for about 100 ms here, and every request in flight waits.
    ``gc.freeze`` after a last collection leaves later passes only the objects made since.
    """
    gc.collect()
    gc.freeze()


def _reactivator(bridge: Bridge, config: Config) -> Any:
    lock = asyncio.Lock()

    async def reactivate(subscription_id: str) -> None:
        async with lock:
            try:
                await ensure_subscriptions(bridge, config)
            except FhirBridgeError as exc:
                log.warning("subscription_reactivation_failed", error=type(exc).__name__)

    return reactivate


def uvicorn_config(app: Any, receiver: ReceiverConfig) -> uvicorn.Config:
    """The ASGI server's settings: address, connection limits and timeouts (see
    :mod:`._protocol`), TLS when configured, and mutual TLS (client certificates required and
    checked against ``receiver.tls_client_ca``) when that is set."""
    tls: dict[str, Any] = {}
    if receiver.tls_certfile is not None:
        tls = {"ssl_certfile": str(receiver.tls_certfile), "ssl_keyfile": str(receiver.tls_keyfile)}
    if receiver.tls_client_ca is not None:
        tls["ssl_ca_certs"] = str(receiver.tls_client_ca)
        tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return uvicorn.Config(
        app,
        host=receiver.host,
        port=receiver.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        http=guarded_protocol(
            ConnectionLimits(
                header_timeout=receiver.header_timeout,
                body_timeout=receiver.body_timeout,
                max_connections=receiver.max_connections,
                max_head=receiver.max_header_bytes,
            )
        ),
        timeout_keep_alive=receiver.keep_alive_timeout,
        **tls,
    )


async def serve(
    config: Config, *, poll: bool = True, prefix: str = DEFAULT_PREFIX, worker: bool = False
) -> None:
    """Receive notifications on ``receiver.host:port`` until SIGTERM/SIGINT.

    With ``poll`` the server is also polled every ``receiver.poll_interval`` seconds (and once
    at start). ``worker``: one of several receivers sharing the journal (PostgreSQL), each
    processing and writing the patient lanes it leases (every ``receiver.poll_interval``
    seconds it also takes up what the others journalled for its lanes). A subscription that
    reports ``error`` is set back to requested (re-running
    :func:`fhirbridge.subscriptions.ensure_subscriptions`) when subscriptions are configured.
    """
    receiver = config.receiver
    secret = receiver.resolved_secret()
    if not secret:
        raise ConfigError(
            "receiver.secret: the receiver needs a shared secret (receiver.secret, "
            "receiver.secret_file or FHIRBRIDGE_RECEIVER__SECRET) that senders present"
        )
    async with Bridge.from_config(config, worker=worker) as bridge:
        app = create_app(
            bridge,
            secret=secret,
            max_body=receiver.max_body,
            prefix=prefix,
            poll_interval=receiver.poll_interval if poll else None,
            on_inactive=_reactivator(bridge, config) if config.subscriptions else None,
            limits=JsonLimits(
                depth=receiver.max_json_depth,
                elements=receiver.max_json_values,
                string=receiver.max_string_length,
            ),
            body_timeout=receiver.body_timeout,
            max_subscriptions=receiver.max_subscriptions,
        )
        server = ReceiverServer(uvicorn_config(app, receiver))
        log.info("receiver_starting", host=receiver.host, port=receiver.port, poll=poll)
        freeze_heap()
        await server.serve()
