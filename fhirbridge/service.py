"""``fhirbridge run`` as a service: passes on a timer, a clean stop, and operations endpoints.

:class:`PollingService` runs :meth:`fhirbridge.Bridge.run_once` every
``engine.poll_interval`` seconds and logs one ``run_pass`` event per pass (with a ``run_id``
bound to every event of the pass). :meth:`PollingService.stop` (SIGTERM, SIGINT) lets the
pass in progress finish, up to ``engine.stop_grace`` seconds, and then returns: what a pass
has not finished stays pending in the journal and outbox, and the next start completes it
(writes are create-once, so an interrupted write is never made twice).

With a metrics port, an ASGI app answers beside the loop:

============================================= ======= ==========================================
``GET /healthz``                                      200 while passes keep starting (the loop is
                                                      not stuck), else 503
``GET /readyz``                                       200 once a pass has succeeded and the
                                                      journal answers, else 503
``GET /metrics``                                      Prometheus exposition:
``fhirbridge_passes_total``                   counter passes, by ``outcome`` (ok, failed)
``fhirbridge_pass_seconds``                   histo   duration of one pass
``fhirbridge_last_pass_timestamp_seconds``    gauge   Unix time the last successful pass ended
``fhirbridge_transitions_total``              counter transitions detected
``fhirbridge_tasks_created_total``            counter Tasks created on the server
``fhirbridge_versions_read_total``            counter resource versions read
``fhirbridge_dead_letters``                   gauge   dead letters not replayed
``fhirbridge_outbox_depth``                   gauge   outbox items pending
``fhirbridge_worker_lanes``                   gauge   patient lanes this worker leases, by
                                                      ``worker``
``fhirbridge_worker_outbox_leased``           gauge   outbox items leased to this worker, by
                                                      ``worker``
``fhirbridge_worker_lease_takeovers``         gauge   leases this worker took over after their
                                                      holder stopped renewing, by ``worker``
``fhirbridge_worker_leadership``              gauge   1 for each leadership lease held
                                                      (``poll:<server>:<type>``,
                                                      ``timers:<server>``), by ``worker`` and
                                                      ``lease``
============================================= ======= ==========================================

The ``fhirbridge_worker_*`` metrics are there when the bridge is a worker sharing its journal
(PostgreSQL); the bridge renews the worker's leases while it runs (between passes too) and
gives them up when it closes, so the other workers take its lanes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from fhirbridge.errors import FhirBridgeError
from fhirbridge.metrics import safe_reading

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from fhirbridge.engine import Bridge, RunStats
    from fhirbridge.pipeline import WorkerLeases

__all__ = ["PollingService", "ServiceMetrics"]

log = structlog.get_logger(__name__)

_PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServiceMetrics:
    """The polling service's Prometheus metrics, in a registry of their own."""

    def __init__(self, bridge: Bridge) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        store = bridge.store
        self.registry = CollectorRegistry(auto_describe=True)
        self.passes = Counter(
            "fhirbridge_passes", "Engine passes, by outcome.", ["outcome"], registry=self.registry
        )
        self.pass_seconds = Histogram(
            "fhirbridge_pass_seconds",
            "Duration of one engine pass (poll, process, write-back).",
            buckets=_PASS_BUCKETS,
            registry=self.registry,
        )
        self.last_pass = Gauge(
            "fhirbridge_last_pass_timestamp_seconds",
            "Unix time at which the last successful pass ended.",
            registry=self.registry,
        )
        self.transitions = Counter(
            "fhirbridge_transitions", "Transitions detected.", registry=self.registry
        )
        self.tasks_created = Counter(
            "fhirbridge_tasks_created", "Tasks created on the server.", registry=self.registry
        )
        self.versions_read = Counter(
            "fhirbridge_versions_read", "Resource versions read.", registry=self.registry
        )
        Gauge(
            "fhirbridge_dead_letters", "Dead letters not replayed.", registry=self.registry
        ).set_function(safe_reading(lambda: float(len(store.dead_letters()))))
        Gauge(
            "fhirbridge_outbox_depth", "Outbox items pending.", registry=self.registry
        ).set_function(safe_reading(lambda: float(store.outbox_depth())))
        if bridge.leases is not None:
            self._worker_metrics(bridge.leases)

    def _worker_metrics(self, leases: WorkerLeases) -> None:
        from prometheus_client import Gauge
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.registry import Collector

        worker = leases.worker
        readings: tuple[tuple[str, str, Callable[[], float]], ...] = (
            (
                "fhirbridge_worker_lanes",
                "Patient lanes this worker leases.",
                lambda: len(leases.held),
            ),
            (
                "fhirbridge_worker_outbox_leased",
                "Outbox items leased to this worker.",
                lambda: leases.items,
            ),
            (
                "fhirbridge_worker_lease_takeovers",
                "Leases this worker took over after their holder stopped renewing them.",
                lambda: leases.takeovers,
            ),
        )
        for name, text, read in readings:
            gauge = Gauge(name, text, ["worker"], registry=self.registry)
            gauge.labels(worker).set_function(read)

        class Leadership(Collector):
            def collect(self) -> Iterator[GaugeMetricFamily]:
                family = GaugeMetricFamily(
                    "fhirbridge_worker_leadership",
                    "Leadership leases this worker holds (1 each).",
                    labels=["worker", "lease"],
                )
                for lease in sorted(leases.leading):
                    family.add_metric([worker, lease], 1.0)
                yield family

        self.registry.register(Leadership())

    def record(self, stats: RunStats, seconds: float) -> None:
        """Count one successful pass."""
        self.passes.labels("ok").inc()
        self.pass_seconds.observe(seconds)
        self.last_pass.set(time.time())
        self.transitions.inc(stats.transitions)
        self.tasks_created.inc(stats.created)
        self.versions_read.inc(stats.read)

    def render(self) -> bytes:
        """The exposition text."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class PollingService:
    """Passes of one engine on a timer, until :meth:`stop`.

    ``interval`` defaults to ``engine.poll_interval``; ``grace`` (seconds) bounds how long a
    stop waits for the pass in progress; ``stop``, when given, is the event that ends it.
    """

    def __init__(
        self,
        bridge: Bridge,
        *,
        interval: float | None = None,
        grace: float | None = None,
        stop: asyncio.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bridge = bridge
        self.interval = interval if interval is not None else bridge.config.engine.poll_interval
        self.grace = grace if grace is not None else bridge.config.engine.stop_grace
        self.metrics = ServiceMetrics(bridge)
        self.monotonic = monotonic
        self.passes = 0
        self.failures = 0
        self.last_ok: float | None = None
        self.last_started: float | None = None
        self.longest = 0.0
        self._stop = stop if stop is not None else asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to end after the pass in progress (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stop.is_set()

    async def run(self) -> None:
        """Run passes until stopped. A pass that fails (server down, journal busy) is logged
        and counted, and the next one is tried after the interval."""
        leases = self.bridge.leases
        log.info(
            "service_started",
            interval=self.interval,
            server=self.bridge.server,
            worker=leases.worker if leases is not None else None,
        )
        while not self._stop.is_set():
            await self._one_pass()
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
        log.info("service_stopped", passes=self.passes, failed=self.failures)

    async def _one_pass(self) -> None:
        run_id = uuid.uuid4().hex[:12]
        started = self.monotonic()
        self.last_started = started
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            task = asyncio.ensure_future(self.bridge.run_once())
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():
                    log.info("service_stopping", grace=self.grace)
                    done, _ = await asyncio.wait({task}, timeout=self.grace)
                    if not done:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        log.warning("run_pass_interrupted", grace=self.grace)
                        return
                stats = task.result()
            except FhirBridgeError as exc:
                self.failures += 1
                self.metrics.passes.labels("failed").inc()
                log.warning("run_pass_failed", error=type(exc).__name__, message=str(exc)[:300])
                return
            finally:
                stopper.cancel()
            seconds = self.monotonic() - started
            self.passes += 1
            self.last_ok = self.monotonic()
            self.longest = max(self.longest, seconds)
            self.metrics.record(stats, seconds)
            log.info("run_pass", seconds=round(seconds, 3), **stats.counts())

    # -- operations endpoints ----------------------------------------------------------
    def healthy(self) -> bool:
        """Whether the loop is alive: a pass started within a few intervals (or is running)."""
        if self.last_started is None:
            return True
        # a long pass (a backlog) is not a stuck loop: allow twice the longest pass seen
        allowed = max(3 * self.interval, 300.0) + self.grace + 2 * self.longest
        return self.monotonic() - self.last_started <= allowed

    def ready(self) -> dict[str, str]:
        """Readiness checks by name: "ok" or why not."""
        checks: dict[str, str] = {}
        try:
            self.bridge.store.outbox_depth()
            checks["journal"] = "ok"
        except Exception as exc:  # any journal failure means not ready
            checks["journal"] = f"failing ({type(exc).__name__})"
        checks["first_pass"] = "ok" if self.last_ok is not None else "not yet"
        return checks

    def app(self) -> Starlette:
        """The ASGI app with ``/healthz``, ``/readyz`` and ``/metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def healthz(request: Request) -> Response:
            ok = self.healthy()
            body = {"status": "ok" if ok else "stalled", "passes": self.passes}
            return JSONResponse(body, status_code=200 if ok else 503)

        async def readyz(request: Request) -> Response:
            checks = self.ready()
            ready = all(v == "ok" for v in checks.values())
            return JSONResponse(
                {"status": "ready" if ready else "not ready", "checks": checks},
                status_code=200 if ready else 503,
            )

        async def metrics(request: Request) -> Response:
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        async def not_found(request: Request, exc: Exception) -> Response:
            return JSONResponse(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": "not-found",
                            "diagnostics": "this port answers /healthz, /readyz and /metrics",
                        }
                    ],
                },
                status_code=404,
                media_type="application/fhir+json",
            )

        return Starlette(
            routes=[
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
            ],
            exception_handlers={404: not_found, 405: not_found},
        )

    async def serve(self, host: str, port: int) -> None:
        """Run the passes and, on ``host:port``, the operations endpoints, until stopped."""
        import uvicorn

        config = uvicorn.Config(
            self.app(),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = _quiet_server(config)
        web = asyncio.ensure_future(server.serve())
        try:
            await self.run()
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await web


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: the service's loop owns the signals."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _quiet_server(config: Any) -> Any:
    return _quiet_server_class()(config)
