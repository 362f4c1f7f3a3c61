"""What the console shows, gathered from the engine's journal, the receiver (when the
console runs inside ``serve``) and the FHIR server, as JSON-ready values.

Only references and counts: no names, no payloads (a dead letter's payload may carry PHI),
unless ``show_names`` adds the patients' names read from the server.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from fhirbridge.engine import Bridge
from fhirbridge.errors import FhirBridgeError
from fhirbridge.report.model import Point
from fhirbridge.store.base import DeadLetter

if TYPE_CHECKING:
    from fhirbridge.console._receiving import ReceiverView
    from fhirbridge.sources.hl7v2 import MllpListener

__all__ = ["Sample", "Sampler", "dead_letter_rows", "gather_status"]

log = structlog.get_logger(__name__)
#: How many pending versions are counted before the console says "at least".
PENDING_CAP = 1000
RECENT_TRANSITIONS = 50
SAMPLE_EVERY = 60.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The engine's figures at one moment."""

    at: float
    wall: datetime
    pending: int
    outbox: int
    dead_letters: int


class Sampler:
    """The figures of the last hour, one sample a minute at most, taken when the console is
    looked at (no background task: the console may be mounted in another app)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.samples: deque[Sample] = deque(maxlen=int(HOUR / SAMPLE_EVERY) + 1)

    def take(self, bridge: Bridge, now: datetime) -> None:
        """Record a sample unless one was taken less than a minute ago."""
        at = self.clock()
        if self.samples and at - self.samples[-1].at < SAMPLE_EVERY:
            return
        store = bridge.store
        self.samples.append(
            Sample(
                at=at,
                wall=now,
                pending=len(store.pending(PENDING_CAP)),
                outbox=store.outbox_depth(),
                dead_letters=len(store.dead_letters()),
            )
        )

    def series(self, name: str) -> list[Point]:
        """One point per sample of the last hour for ``pending``, ``outbox`` or
        ``dead_letters`` (labelled by local time)."""
        now = self.clock()
        recent = [s for s in self.samples if now - s.at <= HOUR]
        return [
            Point(s.wall.strftime("%H:%M"), getattr(s, name), 1, float(getattr(s, name)))
            for s in recent
        ]


def dead_letter_rows(
    letters: Sequence[DeadLetter], *, source: str | None = None, text: str | None = None
) -> list[dict[str, Any]]:
    """Dead letters as rows (no payload), newest first, filtered by source and by a text
    found in the reference or the reason."""
    needle = (text or "").strip().lower()
    rows = []
    for letter in reversed(letters):
        if source and letter.source != source:
            continue
        if needle and needle not in f"{letter.reference} {letter.reason}".lower():
            continue
        rows.append(
            {
                "id": letter.id,
                "source": letter.source,
                "reference": letter.reference,
                "reason": letter.reason,
                "created_at": letter.created_at.isoformat(timespec="seconds"),
                "size": len(letter.payload),
            }
        )
    return rows


async def _subscriptions(bridge: Bridge, receiver: ReceiverView | None) -> dict[str, Any]:
    from fhirbridge.subscriptions import list_subscriptions

    try:
        found = await list_subscriptions(bridge)
    except FhirBridgeError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "items": []}
    marks = receiver.tracker.marks() if receiver is not None else {}
    items = []
    for row in found:
        sid = str(row["id"])
        contiguous = bridge.store.watermark(bridge.server, f"subscription:{sid}")
        items.append(
            {
                **{k: row.get(k) for k in ("id", "status", "style", "payload", "criteria")},
                "last_event": int(contiguous) if contiguous and contiguous.isdigit() else None,
                "highest_claimed": marks.get(sid),
                "gap": receiver.tracker.has_gap(sid) if receiver is not None else None,
                "heartbeat": _heartbeat(bridge, str(row.get("criteria") or "")),
            }
        )
    return {"error": None, "items": items}


def _heartbeat(bridge: Bridge, criteria: str) -> int | None:
    for sub in bridge.config.subscriptions:
        if sub.topic and sub.topic == criteria and sub.heartbeat:
            return int(sub.heartbeat)
    return None


def _writes(items: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
    by_transition: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        key = ((item.payload or {}).get("transition") or {}).get("key")
        if not key:
            continue
        result = dict(item.result or {})
        written = result.get("task") or result.get("risk_assessment") or result.get("reference")
        by_transition.setdefault(str(key), []).append(
            {"kind": item.kind, "state": item.state, "reference": written, "error": item.last_error}
        )
    return by_transition


async def _names(bridge: Bridge, patients: Sequence[str]) -> dict[str, str]:
    ids = sorted({p.split("/", 1)[1] for p in patients if p.startswith("Patient/")})
    if not ids or bridge.client is None:
        return {}
    try:
        found = await bridge.client.search_all("Patient", {"_id": ",".join(ids[:100])})
    except FhirBridgeError:
        return {}
    names = {}
    for patient in found:
        name = (patient.get("name") or [{}])[0]
        text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")])
        names[f"Patient/{patient['id']}"] = text.strip()
    return names


async def gather_status(
    bridge: Bridge,
    *,
    now: datetime,
    receiver: ReceiverView | None = None,
    hl7: MllpListener | None = None,
    show_names: bool = False,
) -> dict[str, Any]:
    """Everything the console page shows (and ``/console/api/status`` answers)."""
    store = bridge.store
    pending = len(store.pending(PENDING_CAP))
    outbox = Counter(item.state for item in store.outbox_items())
    transitions = store.transitions(since=now - timedelta(days=7))[-RECENT_TRANSITIONS:]
    writes = _writes(store.outbox_items())
    base = bridge.config.fhir.base_url.rstrip("/")
    recent: list[dict[str, Any]] = []
    for stored in reversed(transitions):
        t = stored.transition
        recent.append(
            {
                "key": stored.key,
                "kind": t.kind.value,
                "focus": t.focus,
                "patient": t.patient,
                "occurred_at": t.occurred_at.isoformat(),
                "detected_at": stored.detected_at.isoformat(),
                "note": stored.note,
                "writes": [
                    {**w, "url": f"{base}/{w['reference']}" if w["reference"] else None}
                    for w in writes.get(stored.key, [])
                ],
            }
        )
    names = await _names(bridge, [r["patient"] for r in recent]) if show_names else {}
    for row in recent:
        row["patient_name"] = names.get(row["patient"])
    lag = receiver.metrics.lag() if receiver is not None else math.nan
    return {
        "now": now.isoformat(),
        "server": base,
        "feeds": {
            "subscriptions": await _subscriptions(bridge, receiver),
            "last_notification_seconds": None if math.isnan(lag) else round(lag, 1),
            "receiver": receiver is not None,
            "watermarks": {
                kind: store.watermark(bridge.server, kind) for kind in bridge.config.engine.watch
            },
            "hl7": hl7.stats.summary() if hl7 is not None else None,
        },
        "journal": {
            "pending": pending,
            "pending_capped": pending >= PENDING_CAP,
            "worker_busy": receiver.worker.busy if receiver is not None else None,
        },
        "outbox": {state: outbox.get(state, 0) for state in ("pending", "done", "dead")},
        "dead_letters": dead_letter_rows(store.dead_letters()),
        "transitions": recent,
        "audit": [
            {**record, "at": record["at"].isoformat(timespec="seconds")}
            for record in store.audit_log(limit=30)
        ],
    }
