"""Prometheus metrics of one receiver, in a registry of its own (two apps never collide).

=========================================== ======= ======================================
metric                                      kind    meaning
=========================================== ======= ======================================
``fhirbridge_notifications_received_total`` counter by ``type`` (rest-hook, rest-hook-empty,
                                                    handshake, heartbeat, event-notification,
                                                    query-status, message, unknown) and
                                                    ``outcome`` (accepted, unauthorized,
                                                    too_large, invalid, unavailable)
``fhirbridge_outbox_depth``                 gauge   outbox items pending
``fhirbridge_dead_letters``                 gauge   dead letters not replayed
``fhirbridge_journal_write_seconds``        histo   one group commit to the journal
``fhirbridge_process_seconds``              histo   one worker pass (process + write-back)
``fhirbridge_notification_lag_seconds``     gauge   seconds since the last notification
``fhirbridge_catch_ups_total``              counter catch-up polls asked for, by ``reason``
=========================================== ======= ======================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fhirbridge.metrics import safe_reading
from fhirbridge.store.base import Store

__all__ = ["ReceiverMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ReceiverMetrics:
    """The receiver's metrics; ``render()`` is the ``/metrics`` body."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.last_notification: float | None = None
        self._children: dict[tuple[str, str], Any] = {}
        self.notifications = Counter(
            "fhirbridge_notifications_received",
            "Notifications received, by type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.catch_ups = Counter(
            "fhirbridge_catch_ups",
            "Catch-up polls asked for, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.journal_write = Histogram(
            "fhirbridge_journal_write_seconds",
            "Time to append one group of notifications to the journal.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.process = Histogram(
            "fhirbridge_process_seconds",
            "Time of one worker pass (catch-up, processing and write-back).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "fhirbridge_outbox_depth", "Outbox items pending.", registry=self.registry
        ).set_function(safe_reading(lambda: float(store.outbox_depth())))
        Gauge(
            "fhirbridge_dead_letters", "Dead letters not replayed.", registry=self.registry
        ).set_function(safe_reading(lambda: float(len(store.dead_letters()))))
        Gauge(
            "fhirbridge_notification_lag_seconds",
            "Seconds since the last notification was accepted (NaN before the first).",
            registry=self.registry,
        ).set_function(self.lag)

    def lag(self) -> float:
        """Seconds since the last accepted notification (NaN before the first)."""
        if self.last_notification is None:
            return math.nan
        return self.clock() - self.last_notification

    def received(self, kind: str, outcome: str) -> None:
        """Count one notification; an accepted one also resets the lag."""
        child = self._children.get((kind, outcome))
        if child is None:
            child = self._children[kind, outcome] = self.notifications.labels(kind, outcome)
        child.inc()
        if outcome == "accepted":
            self.last_notification = self.clock()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
