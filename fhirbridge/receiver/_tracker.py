"""Missed-event detection for topic-based subscriptions (Backport IG, ``errors.md``).

Per subscription the store counts ``contiguous`` (every event number up to it was received),
the numbers received above it and the highest number the server claims (``events-since-
subscription-start``), atomically (:meth:`~fhirbridge.store.base.Store.record_events`): several
receivers behind a load balancer, each getting some of one subscription's notifications,
count them together, and a restart resumes where they were. The tracker keeps in memory
what it last learnt of them and when the last message came. A number above
``contiguous + 1`` with a hole below it, a count the server reports beyond what arrived, or a
status of ``error`` means events may be lost: the receiver then catches up by polling.
(Journals written before the counters kept ``contiguous`` as the watermark
``subscription:<id>``: the first notification carries it over.)

Deliveries may arrive out of order (sekmet sends from four threads): a hole is only a
*suspected* gap until it outlives a short grace period; the receiver decides that.

The state kept in memory is bounded: at most ``capacity`` subscriptions, the one heard from
least recently is forgotten first (its contiguous number stays in the store, so it resumes
from there if it speaks again). A sender that invents a new subscription id per request
costs a bounded amount of memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from fhirbridge.receiver._notify import SubscriptionStatus
from fhirbridge.store.base import Store

__all__ = ["EventTracker", "Observation", "watermark_key"]

log = structlog.get_logger(__name__)


def watermark_key(subscription_id: str) -> str:
    """The watermark name under which a subscription's contiguous event number is kept."""
    return f"subscription:{subscription_id}"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one notification told the tracker."""

    duplicates: int = 0
    gap: bool = False
    error: bool = False


@dataclass(slots=True)
class _State:
    topic: str | None
    contiguous: int
    last_seen: float
    highest: int = 0
    alarmed: bool = False


class EventTracker:
    """Event numbers and heartbeats per subscription, in memory and in the store."""

    def __init__(
        self,
        store: Store,
        server: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 1000,
    ) -> None:
        self.store = store
        self.server = server
        self.clock = clock
        self.capacity = capacity
        self._subs: OrderedDict[str, _State] = OrderedDict()

    def __len__(self) -> int:
        """How many subscriptions are tracked in memory."""
        return len(self._subs)

    def _state(self, subscription_id: str, topic: str | None) -> _State:
        state = self._subs.get(subscription_id)
        if state is None:
            saved = self.store.watermark(self.server, watermark_key(subscription_id))
            start = int(saved) if saved and saved.isdigit() else None
            count = self.store.record_events(self.server, subscription_id, (), through=start)
            state = _State(topic, count.contiguous, self.clock(), count.highest)
            self._subs[subscription_id] = state
            while len(self._subs) > self.capacity:
                forgotten, _ = self._subs.popitem(last=False)
                log.warning("subscription_state_evicted", subscription=forgotten)
        else:
            self._subs.move_to_end(subscription_id)
        if topic:
            state.topic = topic
        return state

    def _record(
        self,
        subscription_id: str,
        state: _State,
        numbers: Iterable[int] = (),
        *,
        highest: int | None = None,
        through: int | None = None,
    ) -> int:
        """Count in the store; returns how many of ``numbers`` had arrived before."""
        count = self.store.record_events(
            self.server, subscription_id, numbers, highest=highest, through=through
        )
        state.contiguous, state.highest = count.contiguous, count.highest
        return count.duplicates

    def observe(self, status: SubscriptionStatus) -> Observation:
        """Record a notification (after what it carried is journalled)."""
        state = self._state(status.subscription_id, status.topic)
        state.last_seen, state.alarmed = self.clock(), False
        numbers = [event.number for event in status.events if event.number is not None]
        duplicates = self._record(
            status.subscription_id, state, numbers, highest=status.events_since_start
        )
        return Observation(
            duplicates=duplicates,
            gap=state.highest > state.contiguous,
            error=status.status == "error",
        )

    def has_gap(self, subscription_id: str) -> bool:
        """Whether events of the subscription are still unaccounted for."""
        state = self._subs.get(subscription_id)
        return state is not None and state.highest > state.contiguous

    def marks(self) -> dict[str, int]:
        """The highest event number claimed per subscription (what a catch-up started now
        covers: the poll reads the server's current state)."""
        return {sid: state.highest for sid, state in self._subs.items()}

    def caught_up(self, marks: Mapping[str, int]) -> None:
        """A catch-up that started at ``marks`` finished: those events are covered."""
        for sid, highest in marks.items():
            state = self._subs.get(sid)
            if state is not None:
                self._record(sid, state, through=highest)

    def overdue(self, heartbeats: Mapping[str, float]) -> list[str]:
        """Subscriptions silent for more than twice their topic's heartbeat period (each
        reported once until it is heard from again)."""
        now = self.clock()
        late: list[str] = []
        for sid, state in self._subs.items():
            period = heartbeats.get(state.topic or "")
            if period and not state.alarmed and now - state.last_seen > 2 * period:
                state.alarmed = True
                late.append(sid)
        return late

    def topics(self) -> Iterable[tuple[str, str | None]]:
        """``(subscription id, topic)`` of every subscription heard from."""
        return [(sid, state.topic) for sid, state in self._subs.items()]
