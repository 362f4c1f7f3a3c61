"""Case-management writes on both write paths (one transaction per unit, and one request per
resource): the referral ServiceRequest is created once with a Provenance naming the need's
record; the CarePlan is completed once its work is done, and new work reopens it."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbridge.testing.sekmet import SekmetServer
from tests.e2e._sekmet import TAG, discharged, engine, engine_tasks, fixed, recent, screening

pytestmark = pytest.mark.e2e
PATHS = pytest.mark.parametrize("transactions", [True, False], ids=["transaction", "per-resource"])


def careplan_of(server: SekmetServer, patient: str) -> dict[str, Any]:
    """The engine's CarePlan of ``patient``."""
    (careplan,) = server.search("CarePlan", {"patient": f"Patient/{patient}", "_tag": TAG})
    return careplan


@PATHS
async def test_referral_is_written_once_with_provenance_of_the_need(
    sekmet: SekmetServer, tmp_path: Path, transactions: bool
) -> None:
    """A positive food-insecurity screening in transitional care: one referral on either
    path, its Provenance naming the screening Observation; another pass writes nothing."""
    patient = discharged(sekmet)
    bridge = engine(sekmet, tmp_path, transactions=transactions, clock=None)
    try:
        await bridge.run_once(since=recent())
        answer = sekmet.create(screening(patient, "Question1"))
        await bridge.run_once(since=recent())
        assert bridge.writer is not None
        assert bridge.writer.path == ("transaction" if transactions else "per-resource")
        (referral,) = sekmet.search(
            "ServiceRequest", {"patient": f"Patient/{patient}", "_tag": TAG}
        )
        assert referral["reasonReference"] == [{"reference": f"Observation/{answer['id']}"}]
        provenance = sekmet.search("Provenance", {"target": f"ServiceRequest/{referral['id']}"})
        assert len(provenance) == 1
        entities = [e["what"]["reference"] for e in provenance[0].get("entity", [])]
        assert any(e.startswith(f"Observation/{answer['id']}") for e in entities)
        await bridge.run_once(since=recent())
        again = sekmet.search("ServiceRequest", {"patient": f"Patient/{patient}", "_tag": TAG})
        assert [r["id"] for r in again] == [referral["id"]]
    finally:
        await bridge.aclose()


@PATHS
async def test_careplan_completed_then_reopened_by_new_work(
    sekmet: SekmetServer, tmp_path: Path, transactions: bool
) -> None:
    """Every coordination Task done: the sweep completes the CarePlan (If-Match) on either
    path; a new discharge of the same patient adds its Tasks and sets the CarePlan active."""
    patient = discharged(sekmet)
    clock = fixed("2026-12-01T12:00:00+00:00")
    options: dict[str, Any] = {"risk": False, "max_event_age": "P3650D"}
    bridge = engine(sekmet, tmp_path / "a", transactions=transactions, clock=clock, **options)
    try:
        await bridge.run_once(since=recent())
        for task in engine_tasks(sekmet, patient):
            if task["code"]["coding"][0]["code"] != "careplan-review":
                changed = copy.deepcopy(task)
                changed["status"] = "completed"
                sekmet.update(changed)
        await bridge.run_once(since=recent())
        await bridge.sweep()
        await bridge.drain()
        done = careplan_of(sekmet, patient)
        assert done["status"] == "completed"

        before = len(done.get("activity") or [])
        sekmet.discharge(sekmet.admit(patient), "home")
        await bridge.run_once(since=recent() - timedelta(minutes=1))
        reopened = careplan_of(sekmet, patient)
        assert reopened["status"] == "active"
        assert len(reopened["activity"]) > before
    finally:
        await bridge.aclose()
