"""What the console reads from a notification receiver it runs beside.

The receiver mounts the console inside its own app (``fhirbridge serve``), so the console
must not import the receiver: it names the few things it reads as protocols, which
:class:`fhirbridge.receiver._receiver.Receiver` satisfies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["ReceiverView"]


class WorkerView(Protocol):
    """The receiver's processing worker."""

    @property
    def busy(self) -> bool:
        """Whether a pass is running or asked for."""

    def kick(self) -> None:
        """Ask for a pass."""


class TrackerView(Protocol):
    """The receiver's per-subscription event tracker."""

    def marks(self) -> Mapping[str, int]:
        """The highest event number claimed per subscription id."""

    def has_gap(self, subscription_id: str) -> bool:
        """Whether events of the subscription are still unaccounted for."""


class MetricsView(Protocol):
    """The receiver's metrics."""

    def lag(self) -> float:
        """Seconds since the last accepted notification (NaN before the first)."""


class ReceiverView(Protocol):
    """A running receiver, as the console sees it."""

    @property
    def worker(self) -> WorkerView:
        """The processing worker."""

    @property
    def tracker(self) -> TrackerView:
        """The event tracker."""

    @property
    def metrics(self) -> MetricsView:
        """The metrics."""
