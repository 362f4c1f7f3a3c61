"""Missed-event detection: event numbers, counts, restarts and heartbeats per subscription."""

from __future__ import annotations

from fhirbridge.receiver import EventTracker, NotificationEvent, SubscriptionStatus
from fhirbridge.receiver._tracker import watermark_key
from fhirbridge.store import MemoryStore

TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-complete"


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(*numbers: int, since: int | None = None, status: str = "active") -> SubscriptionStatus:
    """An event-notification of subscription s1 carrying ``numbers``."""
    return SubscriptionStatus(
        subscription="Subscription/s1",
        subscription_id="s1",
        type="event-notification",
        status=status,
        topic=TOPIC,
        events_since_start=since if since is not None else max(numbers, default=0),
        events=tuple(NotificationEvent(n) for n in numbers),
    )


def beat(since: int, kind: str = "heartbeat", status: str = "active") -> SubscriptionStatus:
    """A heartbeat (or handshake) of s1 saying ``since`` events were sent so far."""
    return SubscriptionStatus("Subscription/s1", "s1", kind, status, TOPIC, since)


def test_events_in_order_leave_no_gap_and_persist_the_number() -> None:
    """1, 2, 3 in order: no gap, and the store's counter of s1 says 3 arrived."""
    store = MemoryStore()
    tracker = EventTracker(store, "ehr")
    assert tracker.observe(beat(0, "handshake")).gap is False
    for n in (1, 2, 3):
        assert tracker.observe(event(n)).gap is False
    assert store.record_events("ehr", "s1", ()).contiguous == 3


def test_receivers_sharing_a_store_count_one_subscription_together() -> None:
    """Two receivers each get some of s1's events (a load balancer): neither sees a gap once
    the other's have arrived, and a number one of them saw is a duplicate at the other."""
    store = MemoryStore()
    first, second = EventTracker(store, "ehr"), EventTracker(store, "ehr")
    assert first.observe(event(1)).gap is False
    assert second.observe(event(3)).gap is True  # 2 has not arrived anywhere yet
    assert first.observe(event(2)).gap is False
    assert second.observe(event(4)).gap is False
    assert second.observe(event(1)).duplicates == 1


def test_a_journal_of_the_watermark_era_carries_its_number_over() -> None:
    """A journal that kept s1's number as the watermark subscription:s1 resumes from it."""
    store = MemoryStore()
    store.set_watermark("ehr", watermark_key("s1"), "7")
    assert EventTracker(store, "ehr").observe(event(8)).gap is False


def test_a_repeated_event_is_a_duplicate() -> None:
    """The same event twice is counted as a duplicate, not as news."""
    tracker = EventTracker(MemoryStore(), "ehr")
    assert tracker.observe(event(1)).duplicates == 0
    assert tracker.observe(event(1)).duplicates == 1


def test_a_hole_is_a_gap_until_the_late_event_arrives() -> None:
    """1 then 3 is a gap; 2 arriving late closes it (out-of-order delivery)."""
    tracker = EventTracker(MemoryStore(), "ehr")
    tracker.observe(event(1))
    assert tracker.observe(event(3)).gap is True
    assert tracker.has_gap("s1")
    assert tracker.observe(event(2)).gap is False
    assert not tracker.has_gap("s1")


def test_a_heartbeat_counting_more_events_than_received_is_a_gap() -> None:
    """A heartbeat saying 5 events were sent when 2 arrived means 3 were missed."""
    tracker = EventTracker(MemoryStore(), "ehr")
    tracker.observe(event(1))
    tracker.observe(event(2))
    assert tracker.observe(beat(2)).gap is False
    assert tracker.observe(beat(5)).gap is True


def test_a_restart_resumes_from_the_store() -> None:
    """A new tracker on the same store knows events up to 2 were received: 3 is no gap."""
    store = MemoryStore()
    EventTracker(store, "ehr").observe(event(1, 2))
    again = EventTracker(store, "ehr")
    assert again.observe(event(3)).gap is False


def test_first_contact_in_the_middle_is_a_gap() -> None:
    """Without any record, event 5 means 1 to 4 may have been missed."""
    assert EventTracker(MemoryStore(), "ehr").observe(event(5)).gap is True


def test_a_catch_up_covers_what_was_claimed_when_it_started() -> None:
    """After a catch-up started at marks {s1: 4}, events up to 4 count as covered."""
    tracker = EventTracker(MemoryStore(), "ehr")
    tracker.observe(event(1))
    tracker.observe(event(4))
    marks = tracker.marks()
    assert marks == {"s1": 4}
    tracker.caught_up(marks)
    assert not tracker.has_gap("s1")
    assert tracker.observe(event(5)).gap is False


def test_status_error_is_reported() -> None:
    """A notification whose status is error says so."""
    assert EventTracker(MemoryStore(), "ehr").observe(beat(0, status="error")).error is True


def test_silence_past_twice_the_heartbeat_is_reported_once() -> None:
    """With a 10 s heartbeat, 21 s of silence is reported once, and again only after the
    subscription was heard from and fell silent again."""
    clock = Clock()
    tracker = EventTracker(MemoryStore(), "ehr", clock=clock)
    tracker.observe(beat(0, "handshake"))
    periods = {TOPIC: 10.0}
    clock.now += 19
    assert tracker.overdue(periods) == []
    clock.now += 2
    assert tracker.overdue(periods) == ["s1"]
    assert tracker.overdue(periods) == []
    tracker.observe(beat(0))
    clock.now += 21
    assert tracker.overdue(periods) == ["s1"]


def test_a_topic_without_heartbeat_is_never_late() -> None:
    """No heartbeat period for the topic: silence is not reported."""
    clock = Clock()
    tracker = EventTracker(MemoryStore(), "ehr", clock=clock)
    tracker.observe(beat(0, "handshake"))
    clock.now += 10_000
    assert tracker.overdue({"http://other.example/topic": 10.0}) == []
