"""What case management costs in requests: one engine pass over the same discharges with the
shipped pack, and with the shipped pack minus its case-management rules.

A real sekmet server on loopback (``fhirbridge.testing.sekmet``) gets ``--patients``
discharges home (one in four without Coverage on file, one in four screened positive for food
insecurity during the stay); then, twice, on a fresh server with the same story, one
``run_once`` (poll, process, write, sweep) counts every HTTP request by method and resource
type through a counting transport. It prints both tables, per discharge, and the difference.

    .venv/bin/python benchmarks/casemgmt_requests.py --patients 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.fhir import client_from_config
from fhirbridge.rules import RulePack, load_rules
from fhirbridge.testing.sekmet import SekmetServer

#: The shipped pack's case-management rules (what "without" leaves out).
CASE_RULES = frozenset(
    {
        "discharge-community-med-reconciliation",
        "discharge-coverage-review",
        "coverage-active-completes-review",
        "social-need-referral",
        "discharge-social-need-referral",
        "noshow-outreach",
        "noshow-outreach-high-risk",
        "noshow-engagement-escalation",
        "careplan-periodic-review",
        "careplan-completed",
    }
)
SDOH = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"


class Counting(httpx.AsyncBaseTransport):
    """Forwards to the real transport and counts ``(method, resource type)``."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.counts: Counter[tuple[str, str]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/fhir/", 1)[-1].split("/")
        self.counts[(request.method, parts[0] or "(base)")] += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def story(server: SekmetServer, patients: int) -> None:
    """Discharges home; every 4th patient uninsured, every 4th (offset 2) food-insecure."""
    today = datetime.now(UTC).date()
    for n in range(patients):
        patient = server.register_patient(mrn=f"BENCH{n:04d}", seed=n)
        stay = server.admit(patient)
        if n % 4 == 2:
            server.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [{"coding": [{"system": SDOH, "code": "food-insecurity"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
                    "subject": {"reference": f"Patient/{patient}"},
                    "effectiveDateTime": datetime.now(UTC).isoformat(),
                    "valueCodeableConcept": {
                        "coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]
                    },
                }
            )
        server.discharge(stay, "home")
        if n % 4 != 0:
            server.create(
                {
                    "resourceType": "Coverage",
                    "status": "active",
                    "beneficiary": {"reference": f"Patient/{patient}"},
                    "payor": [{"display": "Bench Health"}],
                    "period": {
                        "start": (today - timedelta(days=100)).isoformat(),
                        "end": (today + timedelta(days=300)).isoformat(),
                    },
                }
            )


async def one_pass(folder: Path, patients: int, rules: RulePack) -> tuple[Counter[Any], int]:
    """Requests of one engine pass over a fresh server holding the story; and Tasks made."""
    with SekmetServer.start(folder / "server") as server:
        story(server, patients)
        config = load_config(
            data={
                "fhir": {"base_url": server.base_url, "name": "bench"},
                "store": {"url": f"sqlite:///{folder / 'journal.db'}"},
                "engine": {"default_owner": "Organization/cc", "timezone": "UTC"},
            }
        )
        counting = Counting()
        client = client_from_config(config.fhir, transport=counting)
        async with Bridge(config, client=client, rules=rules) as bridge:
            stats = await bridge.run_once(since=datetime.now(UTC) - timedelta(hours=1))
        return counting.counts, stats.created


def table(title: str, counts: Counter[Any], patients: int) -> None:
    """Print counts by method and type, per discharge."""
    total = sum(counts.values())
    print(f"\n{title}: {total} requests, {total / patients:.1f} per discharge")
    print(f"  {'method':<6} {'type':<16} {'requests':>8} {'per discharge':>14}")
    for (method, kind), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {method:<6} {kind:<16} {n:>8} {n / patients:>14.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    args = parser.parse_args()
    shipped = load_rules()
    without = dataclasses.replace(
        shipped, rules=tuple(r for r in shipped.rules if r.id not in CASE_RULES)
    )
    with tempfile.TemporaryDirectory(prefix="fhirbridge-bench-") as tmp:
        base, base_tasks = await one_pass(Path(tmp) / "without", args.patients, without)
        full, full_tasks = await one_pass(Path(tmp) / "with", args.patients, shipped)
    table(f"without case management ({base_tasks} Tasks)", base, args.patients)
    table(f"with case management ({full_tasks} Tasks)", full, args.patients)
    diff = Counter({k: full[k] - base[k] for k in set(full) | set(base) if full[k] != base[k]})
    table("difference", diff, args.patients)


if __name__ == "__main__":
    asyncio.run(main())
