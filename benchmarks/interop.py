"""Interop costs: what the capability probes and the preflight cost a server, and what the
R4 invariant check costs per resource the engine writes.

1. **Probes.** ``fhirbridge.fhir.probe.discover`` against a sekmet server (the test harness,
   on loopback): requests sent (counted on the HTTP client), by method, and the wall time.
   The same for the whole preflight (``fhirbridge.preflight.preflight``).
2. **Invariants.** ``fhirbridge.fhir.invariants.violations`` on the RiskAssessment, score
   Observation, Task and CarePlan shapes the engine writes, ``--rounds`` times each: the
   mean time per resource (the fhirpathpy expressions are compiled once and cached).

Run from the repository root::

    .venv/bin/python benchmarks/interop.py
    .venv/bin/python benchmarks/interop.py --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fhirbridge.config import load_config
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.invariants import violations
from fhirbridge.fhir.probe import discover
from fhirbridge.preflight import preflight
from fhirbridge.risk import ScoreResult, risk_assessment, score_observation
from fhirbridge.testing.sekmet import SekmetServer

NOW = datetime(2026, 11, 18, 9, tzinfo=UTC)


def _counting_http(seen: Counter[str]) -> httpx.AsyncClient:
    async def count(request: httpx.Request) -> None:
        seen[request.method] += 1

    return httpx.AsyncClient(event_hooks={"request": [count]}, timeout=30)


async def _probe_costs(base: str, store_url: str) -> list[tuple[str, int, str, float]]:
    rows = []
    seen: Counter[str] = Counter()
    async with _counting_http(seen) as http:
        started = time.perf_counter()
        await discover(FhirClient(base, http=http))
        elapsed = time.perf_counter() - started
    rows.append(("discover()", sum(seen.values()), _by_method(seen), elapsed))

    seen = Counter()
    config = load_config(data={"fhir": {"base_url": base}, "store": {"url": store_url}})
    async with _counting_http(seen) as http:
        started = time.perf_counter()
        report = await preflight(config, client=FhirClient(base, http=http))
        elapsed = time.perf_counter() - started
    assert report.ok, report.failed
    rows.append(("preflight()", sum(seen.values()), _by_method(seen), elapsed))
    return rows


def _by_method(seen: Counter[str]) -> str:
    return ", ".join(f"{method} {count}" for method, count in sorted(seen.items()))


def _written_shapes() -> dict[str, dict[str, Any]]:
    lace = ScoreResult(
        "lace", 12, "high", {"L": 5, "A": 3, "C": 2, "E": 2}, inputs=("Encounter/e1",)
    )
    observation = score_observation(
        lace, patient="Patient/p1", encounter="Encounter/e1", effective=NOW, identifier="o1"
    )
    assessment = risk_assessment(
        lace,
        patient="Patient/p1",
        encounter="Encounter/e1",
        observation_ref="Observation/o1",
        occurrence=NOW,
        identifier="r1",
    )
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "authoredOn": "2026-11-18T09:00:00Z",
        "lastModified": "2026-11-18T09:00:00Z",
        "restriction": {"period": {"start": "2026-11-18", "end": "2026-11-20"}},
        "for": {"reference": "Patient/p1"},
    }
    careplan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-11-18"},
        "activity": [{"reference": {"reference": "Task/t1"}}],
    }
    return {
        "RiskAssessment": assessment,
        "Observation": observation,
        "Task": task,
        "CarePlan": careplan,
    }


def _invariant_costs(rounds: int) -> list[tuple[str, float]]:
    rows = []
    for name, resource in _written_shapes().items():
        assert violations(resource) == [], name  # warm the expression cache, and check
        started = time.perf_counter()
        for _ in range(rounds):
            violations(resource)
        rows.append((name, (time.perf_counter() - started) / rounds * 1000))
    return rows


def main() -> None:
    """Run both parts and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="invariant checks per shape")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SekmetServer.start(Path(tmp) / "sekmet") as server:
        rows = asyncio.run(_probe_costs(server.base_url, f"sqlite:///{tmp}/journal.db"))
    print("| step | requests | by method | wall time |")
    print("| --- | ---: | --- | ---: |")
    for name, count, methods, elapsed in rows:
        print(f"| `{name}` | {count} | {methods} | {elapsed * 1000:.0f} ms |")
    print()
    print("| resource | invariant check per resource |")
    print("| --- | ---: |")
    for name, millis in _invariant_costs(args.rounds):
        print(f"| {name} | {millis:.2f} ms |")


if __name__ == "__main__":
    main()
