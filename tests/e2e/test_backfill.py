"""Bulk $export backfill on a real server: history journalled, recent work written, old
transitions kept without flooding worklists, polling carrying on from the export."""

from __future__ import annotations

import pytest

from fhirbridge.engine import Bridge
from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import engine_tasks, set_period

pytestmark = pytest.mark.e2e


async def test_backfill_journals_history_and_writes_only_recent_work(
    sekmet: SekmetServer, bridge: Bridge
) -> None:
    """A stay discharged last year is found (journalled, no Task); one discharged now gets its
    TCM Tasks; every watched type's watermark is the export's transactionTime; a second
    backfill writes nothing new."""
    old_patient = sekmet.register_patient()
    old_stay = sekmet.admit(old_patient)
    sekmet.discharge(old_stay, "home")
    set_period(sekmet, old_stay, "2025-03-01T08:00:00Z", "2025-03-04T12:00:00Z")
    new_patient = sekmet.register_patient()
    sekmet.discharge(sekmet.admit(new_patient), "home")

    messages: list[str] = []
    stats = await bridge.backfill(progress=messages.append)
    assert stats.read >= 4  # two patients, two encounters at least

    kinds = {(t.transition.focus, t.transition.kind.value) for t in bridge.store.transitions()}
    assert (f"Encounter/{old_stay}", "discharge") in kinds
    old = next(
        t
        for t in bridge.store.transitions(kind="discharge")
        if t.transition.focus == f"Encounter/{old_stay}"
    )
    assert old.transition.occurred_at.year == 2025
    assert "max_event_age" in old.note
    assert engine_tasks(sekmet, old_patient) == []
    # TCM contact and visit, medication reconciliation, coverage review (no Coverage)
    assert len(engine_tasks(sekmet, new_patient)) == 4
    marks = {t: bridge.store.watermark(bridge.server, t) for t in bridge.config.engine.watch}
    assert len(set(marks.values())) == 1 and None not in marks.values()
    assert messages

    again = await bridge.backfill()
    assert again.created == 0
    assert len(engine_tasks(sekmet, new_patient)) == 4
