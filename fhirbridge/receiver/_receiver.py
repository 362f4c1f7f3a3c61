"""What the receiver does with a notification once HTTP has checked and parsed it.

:class:`Receiver` owns the group commit, the worker, the event tracker and the metrics. Its
methods return only after what must be durable is journalled, so the HTTP layer may then
acknowledge. Recovery is always the same: ask the worker for a catch-up (a poll since the
watermark), since sekmet, like many servers, has no ``$events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog

from fhirbridge.engine import Bridge, RunStats
from fhirbridge.errors import FhirBridgeError, FhirError, InvalidResource, ResourceNotFound
from fhirbridge.receiver._bounds import JsonLimits, check_json
from fhirbridge.receiver._checkpoint import WalCheckpointer
from fhirbridge.receiver._journal import GroupCommit
from fhirbridge.receiver._metrics import ReceiverMetrics
from fhirbridge.receiver._notify import (
    NotificationError,
    SubscriptionStatus,
    TopicNotification,
    parse_status,
    split_reference,
)
from fhirbridge.receiver._tracker import EventTracker
from fhirbridge.receiver._worker import Worker
from fhirbridge.values import ResourceVersion

__all__ = ["Receiver", "ReceiverUnavailable", "same_server"]

log = structlog.get_logger(__name__)
OnInactive = Callable[[str], Awaitable[None]]


class ReceiverUnavailable(FhirBridgeError):
    """The notification cannot be made durable now; the sender should retry."""


def same_server(base_url: str) -> Callable[[str], bool]:
    """``owns(url)`` for a base URL (what ``FhirClient.owns`` answers, without a client)."""
    base = urlsplit(base_url.rstrip("/"))

    def owns(url: str) -> bool:
        other = urlsplit(url)
        return (
            base.scheme == other.scheme
            and base.netloc == other.netloc
            and (other.path + "/").startswith(base.path.rstrip("/") + "/")
        )

    return owns


class Receiver:
    """The receiver's state and actions for one bridge (see :func:`create_app`)."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        heartbeats: Mapping[str, float] | None = None,
        poll_interval: float | None = None,
        gap_grace: float = 2.0,
        commit_window: float = 0.002,
        check_interval: float = 5.0,
        checkpoint_interval: float = 0.1,
        on_inactive: OnInactive | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: JsonLimits | None = None,
        max_subscriptions: int = 1000,
    ) -> None:
        self.bridge = bridge
        self.limits = limits or JsonLimits()
        self.owns = (
            bridge.client.owns
            if bridge.client is not None
            else same_server(bridge.config.fhir.base_url)
        )
        if heartbeats is None:
            heartbeats = {
                s.topic: float(s.heartbeat)
                for s in bridge.config.subscriptions
                if s.topic and s.heartbeat
            }
        self.heartbeats = dict(heartbeats)
        self.poll_interval = poll_interval
        self.gap_grace = gap_grace
        self.check_interval = check_interval
        self.on_inactive = on_inactive
        self.metrics = ReceiverMetrics(bridge.store, clock=clock)
        self.tracker = EventTracker(
            bridge.store, bridge.server, clock=clock, capacity=max_subscriptions
        )
        self.inflight = 0  # notification requests being handled (the HTTP layer counts)
        self.worker = Worker(bridge, on_pass=self._on_pass, defer=lambda: self.inflight > 0)
        self.journal = GroupCommit(
            bridge.store.append, window=commit_window, on_commit=self._on_commit
        )
        self.checkpointer = WalCheckpointer(bridge.store, interval=checkpoint_interval)
        self._gap_timers: dict[str, asyncio.Handle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker (it processes what an earlier run left), the periodic poll and
        the heartbeat watchdog (and, on a SQLite journal, the WAL checkpointer)."""
        self.checkpointer.start()
        self.worker.start()
        if self.poll_interval:
            self.catch_up("startup")
            self._loops.append(asyncio.create_task(self._every(self.poll_interval, self._poll)))
        if self.heartbeats:
            self._loops.append(
                asyncio.create_task(self._every(self.check_interval, self.check_heartbeats))
            )

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Stop the loops, then let the worker finish the work in flight."""
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        for handle in self._gap_timers.values():
            handle.cancel()
        self._gap_timers.clear()
        self.journal.flush()
        await self.worker.stop(drain_seconds)
        self.checkpointer.stop()

    async def settle(self, within: float = 30.0) -> None:
        """Wait until nothing is queued, scheduled or being processed (tests, benchmarks)."""
        async with asyncio.timeout(within):
            # several conditions, each changed from many places: polling is the simple way
            while self.worker.busy or self._gap_timers or self.journal.waiting:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception as exc:  # a periodic check must outlive one failure
                log.warning("receiver_check_failed", error=type(exc).__name__)

    async def _poll(self) -> None:
        self.catch_up("poll")

    def _on_commit(self, new: list[ResourceVersion], seconds: float) -> None:
        self.metrics.journal_write.observe(seconds)
        if new:
            self.worker.kick()

    def _on_pass(self, seconds: float, stats: RunStats) -> None:
        self.metrics.process.observe(seconds)

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- actions -----------------------------------------------------------------------
    def catch_up(self, reason: str) -> None:
        """Ask the worker to poll since the watermark, then process and write back."""
        self.metrics.catch_ups.labels(reason=reason).inc()
        marks = self.tracker.marks()
        self.worker.request_catch_up(reason, lambda: self.tracker.caught_up(marks))

    def versions(self, resources: Sequence[bytes | Mapping[str, Any]]) -> list[ResourceVersion]:
        """The journal values of received resources (raw bytes are parsed once, here)."""
        versions = []
        for resource in resources:
            try:
                versions.append(ResourceVersion.from_json(self.bridge.server, resource))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise NotificationError(f"the body is not JSON: {exc}") from None
            except ValueError as exc:
                raise NotificationError(f"the body is not a FHIR resource: {exc}") from None
        return versions

    async def accept(self, resources: Sequence[bytes | Mapping[str, Any]]) -> int:
        """Journal resources (grouped with concurrent requests); returns once durable."""
        return await self.journal.append(self.versions(resources))

    async def topic(self, note: TopicNotification) -> None:
        """Handle a Backport notification: journal its resources (fetching id-only focus
        from the configured server), then track its event numbers and status."""
        status = note.status
        resources: list[Mapping[str, Any]] = list(note.resources)
        if status.type == "event-notification":
            carried = {(r["resourceType"], r["id"]) for r in resources}
            focus = [e.focus for e in status.events if e.focus]
            missing = [f for f in focus if split_reference(f) not in carried]
            if missing:
                resources += await self._fetch(missing)
            if not focus and not resources:  # empty content: only a poll tells what changed
                self.catch_up("empty-notification")
        if resources:
            await self.accept(resources)
        self._observe(status)

    def _observe(self, status: SubscriptionStatus) -> None:
        seen = self.tracker.observe(status)
        if seen.error:
            log.warning("subscription_in_error", subscription=status.subscription_id)
            self.catch_up("subscription-error")
            if self.on_inactive is not None:
                self._spawn(self.on_inactive(status.subscription_id))
        if seen.gap:
            self._suspect_gap(status.subscription_id)

    async def _fetch(self, references: list[str]) -> list[Mapping[str, Any]]:
        client = self.bridge.client
        if client is None:
            self.catch_up("id-only-without-client")
            return []
        for reference in references:  # parsing refused foreign URLs; check again anyway
            if reference.startswith(("http://", "https://")) and not client.owns(reference):
                raise NotificationError(f"the focus {reference!r} is not on the FHIR server")
        try:
            found = await asyncio.gather(*(client.read_reference(r) for r in references))
        except (ResourceNotFound, InvalidResource) as exc:  # a retry will not change that
            raise NotificationError(
                f"the focus is not on the FHIR server: {exc.message}", status=422
            ) from exc
        except FhirError as exc:
            self.catch_up("focus-fetch-failed")
            raise ReceiverUnavailable(f"cannot read the focus: {exc}") from exc
        for reference, resource in zip(references, found, strict=True):
            named = (resource.get("resourceType"), resource.get("id"))
            if named != split_reference(reference):
                raise NotificationError(
                    f"the focus {reference} came back as {named[0]}/{named[1]}", status=422
                )
            check_json(resource, self.limits, what="the focus")
        return list(found)

    def _suspect_gap(self, subscription_id: str) -> None:
        if subscription_id in self._gap_timers:
            return
        if self.gap_grace <= 0:
            self._check_gap(subscription_id)
            return
        loop = asyncio.get_running_loop()
        self._gap_timers[subscription_id] = loop.call_later(
            self.gap_grace, self._check_gap, subscription_id
        )

    def _check_gap(self, subscription_id: str) -> None:
        self._gap_timers.pop(subscription_id, None)
        if self.tracker.has_gap(subscription_id):
            log.warning("subscription_events_missed", subscription=subscription_id)
            self.catch_up("event-gap")

    async def check_heartbeats(self) -> list[str]:
        """Catch up for every subscription silent past twice its heartbeat period (asking
        the server for its ``$status`` first); returns their ids."""
        late = self.tracker.overdue(self.heartbeats)
        for subscription_id in late:
            log.warning("subscription_heartbeat_missed", subscription=subscription_id)
            await self.query_status(subscription_id)
            self.catch_up("missed-heartbeat")
        return late

    async def query_status(self, subscription_id: str) -> SubscriptionStatus | None:
        """``Subscription/[id]/$status`` on the server, fed to the tracker."""
        if self.bridge.client is None:
            return None
        try:
            bundle = await self.bridge.client.get(f"Subscription/{subscription_id}/$status")
        except FhirError as exc:
            log.warning("subscription_status_failed", error=type(exc).__name__)
            return None
        for entry in bundle.get("entry") or ():
            try:
                status = parse_status(entry.get("resource") or {})
            except NotificationError:
                continue
            if status.subscription_id == subscription_id:
                self._observe(status)
                if status.status == "off" and self.on_inactive is not None:
                    self._spawn(self.on_inactive(subscription_id))
                return status
        return None
