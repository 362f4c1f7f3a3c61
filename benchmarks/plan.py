"""`fhirbridge plan` against a plain sequential read of the same Encounters.

A sekmet server on loopback is loaded (transaction Bundles) with a cohort: ``--patients``
patients, each with ``--stays`` inpatient stays discharged home over the last year, an
active CareTeam, three Conditions, four laboratory Observations and a Procedure. Every
request of both contenders goes through the same transport, which waits ``--latency`` ms
before sending (a remote EHR's round trip) and counts requests by kind.

- **baseline**: a plain script reading the Encounters page by page (``_lastUpdated``,
  ``_count`` = the engine's page size, ``next`` links followed), one request at a time,
  ``json.loads`` of each page;
- **plan**: ``Bridge.plan`` on the same server (every watched type polled, transitions
  detected, lookups prefetched, rules and risk scores, the overdue sweep), into an
  in-memory journal, writing nothing.

Printed: requests by kind, wall time, the ratio plan / baseline (target: at most 1.0), the
engine's CPU time per discharge (the server runs in its own process).

    .venv/bin/python benchmarks/plan.py                  # 30 patients x 9 stays, 0 and 10 ms
    .venv/bin/python benchmarks/plan.py --latency 20 --patients 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir.client import FhirClient
from fhirbridge.logs import configure
from fhirbridge.store import MemoryStore
from fhirbridge.testing.sekmet import SekmetServer

NOW = datetime.now(UTC).replace(microsecond=0)
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
LABS = [("718-7", "g/dL", 9.5), ("2951-2", "mmol/L", 131.0), ("2947-0", "mmol/L", 140.0)]


class Latency(httpx.AsyncBaseTransport):
    """Waits ``latency`` seconds before each request and counts requests by kind."""

    def __init__(self, latency: float, base_path: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.latency = latency
        self.base_path = base_path.rstrip("/")
        self.seen: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Count, wait, send."""
        kind = request.url.path.removeprefix(self.base_path).strip("/").split("/")[0]
        self.seen[f"{request.method} {kind or 'batch'}"] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.inner.aclose()


def cohort(patients: int, stays: int, seed: int = 20261201) -> list[dict[str, Any]]:
    """Transaction entries for the whole cohort (``urn:uuid`` references to the patients)."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any], full_url: str | None = None) -> None:
        entry: dict[str, Any] = {
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        }
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)

    for n in range(patients):
        ref = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        subject = {"reference": ref}
        add(
            {
                "resourceType": "Patient",
                "name": [{"family": f"Bench{n}", "given": ["Pat"]}],
                "birthDate": f"{1935 + n % 50}-0{1 + n % 9}-1{n % 9}",
                "gender": "female" if n % 2 else "male",
            },
            ref,
        )
        add(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": subject,
                "participant": [
                    {
                        "role": [{"coding": [{"code": "case-manager"}]}],
                        "member": {"reference": "Organization/care-coordination"},
                    }
                ],
            }
        )
        for code in ("I50.9", "E11.9", "J44.9"):
            add(
                {
                    "resourceType": "Condition",
                    "subject": subject,
                    "code": {
                        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]
                    },
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                }
            )
        for code, unit, value in LABS + LABS[:1]:
            add(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "subject": subject,
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "valueQuantity": {"value": value, "unit": unit},
                    "effectiveDateTime": (NOW - timedelta(days=rng.randint(1, 60))).isoformat(),
                }
            )
        add(
            {
                "resourceType": "Procedure",
                "status": "completed",
                "subject": subject,
                "code": {"text": "procedure"},
                "performedDateTime": (NOW - timedelta(days=rng.randint(1, 60))).isoformat(),
            }
        )
        start = NOW - timedelta(days=360)
        for _ in range(stays):
            start += timedelta(days=rng.randint(10, 38))
            end = start + timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 12))
            add(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": ACT, "code": "IMP"},
                    "subject": subject,
                    "period": {"start": start.isoformat(), "end": end.isoformat()},
                    "hospitalization": {
                        "dischargeDisposition": {
                            "coding": [{"system": DISPOSITION, "code": "home"}]
                        }
                    },
                }
            )
            start = end
    return entries


def load(server: SekmetServer, entries: list[dict[str, Any]]) -> None:
    """POST the cohort as transaction Bundles (a patient's resources stay in one bundle)."""
    bundle: list[dict[str, Any]] = []
    with httpx.Client(timeout=300) as http:
        for entry in [*entries, None]:
            starts_patient = entry is None or entry["resource"]["resourceType"] == "Patient"
            if (starts_patient and len(bundle) >= 300) or (entry is None and bundle):
                answer = http.post(
                    server.base_url,
                    json={"resourceType": "Bundle", "type": "transaction", "entry": bundle},
                    headers={"Content-Type": "application/fhir+json"},
                )
                answer.raise_for_status()
                bundle = []
            if entry is not None:
                bundle.append(entry)


async def baseline(
    server: SekmetServer, since: datetime, page_size: int, latency: float
) -> tuple[float, int, Counter[str]]:
    """Read every Encounter page, one request at a time; (seconds, encounters, requests)."""
    transport = Latency(latency, httpx.URL(server.base_url).path)
    async with httpx.AsyncClient(transport=transport, timeout=300) as http:
        started = time.perf_counter()
        url: str | None = f"{server.base_url}/Encounter"
        params: dict[str, Any] | None = {
            "_lastUpdated": f"ge{since.isoformat().replace('+00:00', 'Z')}",
            "_count": page_size,
            "_sort": "_lastUpdated",
        }
        read = 0
        while url:
            answer = await http.get(url, params=params, headers={"Accept": "application/fhir+json"})
            page = json.loads(answer.content)
            read += len(page.get("entry") or ())
            url = next((x["url"] for x in page.get("link") or () if x["relation"] == "next"), None)
            params = None
        return time.perf_counter() - started, read, transport.seen


async def plan(
    server: SekmetServer, since: datetime, latency: float
) -> tuple[float, float, int, Counter[str]]:
    """``Bridge.plan``; (seconds, CPU seconds, discharges planned, requests)."""
    transport = Latency(latency, httpx.URL(server.base_url).path)
    config = load_config(
        data={
            "fhir": {"base_url": server.base_url, "name": "bench"},
            "store": {"url": "memory://"},
            "engine": {"max_event_age": "P3650D", "risk": RISK},
        }
    )
    client = FhirClient(server.base_url, transport=transport, timeout=300)
    async with Bridge(config, client=client, store=MemoryStore(), clock=FixedClock(NOW)) as bridge:
        started, cpu = time.perf_counter(), time.process_time()
        plans = await bridge.plan(since=since)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    discharges = sum(p.transition.kind.value == "discharge" for p in plans)
    return wall, cpu, discharges, transport.seen


async def measure(
    server: SekmetServer, since: datetime, latencies: list[float], repeat: int
) -> None:
    """Both contenders at each latency, best of ``repeat``."""
    header = ("latency", "baseline s", "plan s", "ratio", "reqs base", "reqs plan", "CPU ms/d.")
    print("{:>8} {:>11} {:>8} {:>6} {:>9} {:>9} {:>10}".format(*header))
    for latency in latencies:
        best_base = best_plan = float("inf")
        for _ in range(repeat):
            base_s, encounters, base_seen = await baseline(server, since, 100, latency / 1000)
            plan_s, cpu, discharges, plan_seen = await plan(server, since, latency / 1000)
            best_base, best_plan = min(best_base, base_s), min(best_plan, plan_s)
        print(
            f"{latency:>6.0f}ms {best_base:>11.3f} {best_plan:>8.3f} {best_plan / best_base:>6.2f}"
            f" {sum(base_seen.values()):>9} {sum(plan_seen.values()):>9}"
            f" {1000 * cpu / max(discharges, 1):>10.2f}"
        )
        print(f"          encounters read {encounters}, discharges planned {discharges}")
        print(f"          plan requests: {dict(sorted(plan_seen.items()))}")


def main() -> None:
    """Load the cohort, then measure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--stays", type=int, default=9)
    parser.add_argument(
        "--latency", type=float, action="append", help="ms (repeatable; default 0 and 10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per latency (the best counts)")
    parser.add_argument("--no-risk", action="store_true", help="engine.risk: false")
    parser.add_argument("--profile", action="store_true", help="cProfile one plan run")
    parser.add_argument("--sort", default="cumulative", help="profile order (tottime...)")
    args = parser.parse_args()
    configure()  # warnings only, as the CLI logs by default
    global RISK
    RISK = not args.no_risk
    with (
        tempfile.TemporaryDirectory() as folder,
        SekmetServer.start(Path(folder) / "sekmet") as server,
    ):
        since = datetime.now(UTC) - timedelta(minutes=1)
        started = time.perf_counter()
        load(server, cohort(args.patients, args.stays))
        took = time.perf_counter() - started
        print(f"loaded {args.patients} patients x {args.stays} stays in {took:.1f} s")
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(plan(server, since, 0.0))
            profiler.disable()
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)
            return
        asyncio.run(measure(server, since, args.latency or [0.0, 10.0], args.repeat))


if __name__ == "__main__":
    main()
