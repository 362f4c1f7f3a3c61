"""A batch reads the journal in bulk: snapshots, stays and Patients once per batch."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge, RunStats
from fhirbridge.store import MemoryStore
from fhirbridge.values import ResourceVersion, Stay

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _data import encounter_versions

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


class CountingStore(MemoryStore):
    """A memory journal that counts the reads detection and planning make."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def snapshot(self, server: str, resource_type: str, resource_id: str) -> ResourceVersion | None:
        """Count, then read."""
        self.reads["snapshot"] += 1
        return super().snapshot(server, resource_type, resource_id)

    def snapshots(
        self, server: str, resource_type: str, ids: Iterable[str]
    ) -> dict[str, ResourceVersion]:
        """Count, then read."""
        self.reads[f"snapshots {resource_type}"] += 1
        return super().snapshots(server, resource_type, ids)

    def stays(self, server: str, patient: str) -> list[Stay]:
        """Count, then read."""
        self.reads["stays"] += 1
        return super().stays(server, patient)

    def patient_stays(self, server: str, patients: Iterable[str]) -> dict[str, list[Stay]]:
        """Count, then read (through :meth:`stays`, uncounted)."""
        self.reads["patient_stays"] += 1
        return {patient: super(CountingStore, self).stays(server, patient) for patient in patients}


def _run(store: MemoryStore, pages: list[list[bytes]]) -> RunStats:
    config = load_config(
        data={
            "fhir": {"base_url": "https://ehr.example/fhir"},
            "engine": {"max_event_age": "P3650D"},
        }
    )
    bridge = Bridge(config, client=None, store=store, clock=FixedClock(NOW))
    stats = RunStats()

    async def drive() -> None:
        for page in pages:
            await bridge.process(stats=stats, fresh=bridge.ingest(page), batch=len(page))

    asyncio.run(drive())
    return stats


def test_each_batch_reads_snapshots_stays_and_patients_once() -> None:
    """Three pages of stays (admissions, transfers, discharges, readmissions): one bulk read
    of Encounter snapshots, one of Patients and one of stays per page, and none one by one;
    what is found is what a journal read version by version finds."""
    raw = list(encounter_versions(600, patients=120, seed=3))
    pages = [raw[0:200], raw[200:400], raw[400:600]]
    store = CountingStore()
    stats = _run(store, pages)
    assert store.reads == {
        "snapshots Encounter": 3,
        "snapshots Patient": 3,
        "patient_stays": 3,
    }
    one_by_one = CountingStore()
    alone = _run(one_by_one, [[version] for version in raw])
    assert (stats.transitions, stats.planned) == (alone.transitions, alone.planned)
    assert sorted(t.key for t in store.transitions()) == sorted(
        t.key for t in one_by_one.transitions()
    )
    assert stats.transitions > 300 and not stats.dead
