"""What the engine costs a metered EHR: requests per discharge and wall time, against a
plain sequential script, through a loopback proxy that adds a fixed latency.

For each latency (default 0, 10 and 50 ms) it starts a fresh sekmet server, loads a
generated cohort (patients with Conditions, lab Observations, Procedures and a history of
inpatient stays, every stay a discharge), starts a loopback HTTP proxy in its own process
that waits ``latency`` before forwarding each request and counts requests by kind, and
then runs, in the same run:

1. the engine (``Bridge.run_once`` with a fresh journal, every discharge in range): its
   requests by kind, split into the **write stage** (POST/PUT, and the writer's own searches
   by engine identifier or tag) and the **reads** (polling pages; lookups of Patient,
   CareTeam, earlier stays and risk inputs), the wall time of poll + evaluate and of the
   write stage, and the engine's CPU (this process; the server and the proxy run elsewhere);
2. the baseline: a plain sequential httpx script that pages through the finished inpatient
   Encounters and conditional-creates one Task per discharge.

    .venv/bin/python benchmarks/writeback.py                  # 28 patients x 10 stays, 0/10/50 ms
    .venv/bin/python benchmarks/writeback.py --latency 10 --concurrency 1
    .venv/bin/python benchmarks/writeback.py --patients 5 --stays 4 --latency 0   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fhirbridge.clock import FixedClock  # noqa: E402
from fhirbridge.config import load_config  # noqa: E402
from fhirbridge.engine import Bridge  # noqa: E402
from fhirbridge.logs import configure  # noqa: E402
from fhirbridge.testing.sekmet import SekmetServer  # noqa: E402

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
BASELINE_SYSTEM = "https://baseline.bench.invalid/task"
DISPOSITIONS = (("home", 0.7), ("snf", 0.15), ("oth", 0.1), ("aadvice", 0.05))
CONDITIONS = ("I50.9", "J44.9", "E11.9", "N18.3", "F03.90", "I10")
LABS = (("718-7", "g/dL", 9.5, 15.0), ("2951-2", "mmol/L", 128, 145))


# -- the cohort ------------------------------------------------------------------------------
def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def cohort(patients: int, stays: int, seed: int) -> list[dict[str, Any]]:
    """Transaction entries for the cohort: patients, their history and their stays."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> str:
        url = f"urn:uuid:{rng.getrandbits(128):032x}"
        entries.append(
            {
                "fullUrl": url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
        return url

    for index in range(patients):
        born = f"{rng.randint(1930, 1975)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        patient = add(
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:bench:mrn", "value": f"MRN{index:05d}"}],
                "name": [{"family": f"Bench{index}", "given": ["Pat"]}],
                "gender": rng.choice(["female", "male"]),
                "birthDate": born,
            }
        )
        subject = {"reference": patient}
        for code in rng.sample(CONDITIONS, rng.randint(0, 3)):
            add(
                {
                    "resourceType": "Condition",
                    "clinicalStatus": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                "code": "active",
                            }
                        ]
                    },
                    "code": {"coding": [{"system": ICD10, "code": code}]},
                    "subject": subject,
                }
            )
        start = NOW - timedelta(days=330) + timedelta(hours=rng.randint(0, 240))
        for _ in range(stays):
            length = timedelta(days=rng.randint(1, 9), hours=rng.randint(0, 12))
            end = start + length
            code = rng.choices([d for d, _ in DISPOSITIONS], [w for _, w in DISPOSITIONS])[0]
            encounter = add(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
                    "subject": subject,
                    "period": {"start": _stamp(start), "end": _stamp(end)},
                    "hospitalization": {
                        "dischargeDisposition": {"coding": [{"system": DISPOSITION, "code": code}]}
                    },
                }
            )
            loinc, unit, low, high = rng.choice(LABS)
            add(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": LOINC, "code": loinc}]},
                    "subject": subject,
                    "encounter": {"reference": encounter},
                    "effectiveDateTime": _stamp(end - timedelta(hours=6)),
                    "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit},
                }
            )
            if rng.random() < 0.3:
                add(
                    {
                        "resourceType": "Procedure",
                        "status": "completed",
                        "code": {"text": "Procedure during stay"},
                        "subject": subject,
                        "encounter": {"reference": encounter},
                        "performedDateTime": _stamp(start + timedelta(hours=10)),
                    }
                )
            # the next stay: often a readmission within 30 days
            gap = rng.randint(3, 28) if rng.random() < 0.35 else rng.randint(31, 60)
            start = end + timedelta(days=gap, hours=rng.randint(0, 12))
    return entries


def load(server: SekmetServer, entries: list[dict[str, Any]]) -> None:
    """Write the cohort straight to the server (not through the proxy) in one transaction."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = httpx.post(
        server.base_url,
        json=bundle,
        headers={"Content-Type": "application/fhir+json"},
        timeout=300,
    )
    response.raise_for_status()


# -- the loopback proxy ----------------------------------------------------------------------
def kind_of(method: str, path: str, query: str) -> str:
    """A request's kind: ``write``, ``write-read`` (the writer's own searches), ``poll`` or
    ``lookup``, then the method and resource type."""
    parts = [p for p in path.split("/") if p][1:]  # drop the "fhir" base segment
    rtype = parts[0] if parts else "(transaction)"
    names = {name for name, _ in parse_qsl(query)}
    values = dict(parse_qsl(query))
    if method in ("POST", "PUT", "DELETE"):
        stage = "write"
    elif any("fhirbridge" in values.get(name, "") for name in ("identifier", "_tag")):
        stage = "write-read"
    elif names & {"_lastUpdated", "_getpages", "_page", "_offset"}:
        stage = "poll"
    else:
        stage = "lookup"
    return f"{stage} {method} {rtype}"


def _proxy(target: str, port: int, latency: float) -> None:  # pragma: no cover - subprocess
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    counts: Counter[str] = Counter()
    mine = f"http://127.0.0.1:{port}/fhir"
    theirs = target.rstrip("/")
    client = httpx.AsyncClient(timeout=300)

    async def counted(request: Request) -> Response:
        if request.method == "POST":
            counts.clear()
            return JSONResponse({})
        return JSONResponse(dict(counts))

    async def forward(request: Request) -> Response:
        path = request.url.path
        query = request.url.query
        counts[kind_of(request.method, path, query)] += 1
        if latency:
            await asyncio.sleep(latency)
        body = (await request.body()).replace(mine.encode(), theirs.encode())
        headers = {
            k: v.replace(mine, theirs)
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length")
        }
        url = theirs + path.removeprefix("/fhir") + (f"?{query}" if query else "")
        answer = await client.request(request.method, url, content=body, headers=headers)
        out = answer.content.replace(theirs.encode(), mine.encode())
        kept = {
            k: v.replace(theirs, mine)
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        }
        return Response(out, status_code=answer.status_code, headers=kept)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(
        routes=[
            Route("/__counts", counted, methods=["GET", "POST"]),
            Route("/fhir", forward, methods=methods),
            Route("/fhir/{rest:path}", forward, methods=methods),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """The latency proxy in its own process."""

    def __init__(self, target: str, latency: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_proxy, args=(target, self.port, latency), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/__counts", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the proxy did not start")

    def counts(self, *, reset: bool = False) -> Counter[str]:
        """Requests by kind since the last reset."""
        url = f"http://127.0.0.1:{self.port}/__counts"
        found = Counter(httpx.get(url).json())
        if reset:
            httpx.post(url)
        return found

    def stop(self) -> None:
        """End the proxy process."""
        self.process.terminate()
        self.process.join(10)


# -- the two runs ----------------------------------------------------------------------------
async def run_engine(
    base_url: str,
    journal: Path,
    concurrency: int | None,
    *,
    per_resource: bool = False,
    server_cpu: Callable[[], float] = lambda: 0.0,
) -> dict[str, float]:
    """One ``run --once`` as the CLI runs it, timed in its two halves (``per_resource``:
    the writer forced onto the path a server without transactions gets)."""
    lanes = {} if concurrency is None else {"concurrency": concurrency}
    config = load_config(
        data={
            "fhir": {"base_url": base_url, "name": "bench", "timeout": 300},
            "store": {"url": f"sqlite:///{journal}"},
            "engine": {
                "max_event_age": "P3650D",
                "default_owner": "Organization/care-coordination",
                **lanes,
            },
        }
    )
    cpu, wall, server = time.process_time(), time.perf_counter(), server_cpu()
    async with Bridge.from_config(config, clock=FixedClock(NOW)) as bridge:
        if per_resource and bridge.client is not None:
            from fhirbridge.writeback.writer import Writer

            bridge.writer = Writer(
                bridge.client,
                bridge.store,
                clock=bridge.clock,
                agent=config.engine.requester,
                codes=bridge.rules.codes,
                concurrency=config.engine.concurrency,
                transactions=False,
            )
        await bridge.poller().poll(NOW - timedelta(days=3650))
        await bridge.process()
        cpu_eval, wall_eval, server_eval = time.process_time(), time.perf_counter(), server_cpu()
        written = await bridge.drain()
        path = getattr(bridge.writer, "path", None)
    return {
        "wall_evaluate": wall_eval - wall,
        "wall_write": time.perf_counter() - wall_eval,
        "cpu_evaluate": cpu_eval - cpu,
        "cpu_write": time.process_time() - cpu_eval,
        "server_evaluate": server_eval - server,
        "server_write": server_cpu() - server_eval,
        "created": float(written.created),
        "dead": float(written.dead),
        "transactions": 1.0 if path == "transaction" else 0.0,
    }


def run_baseline(base_url: str) -> tuple[float, int]:
    """The plain script: page through finished inpatient stays, one Task each."""
    started = time.perf_counter()
    discharges = 0
    with httpx.Client(timeout=300, headers={"Accept": "application/fhir+json"}) as http:
        url: str | None = f"{base_url}/Encounter?status=finished&class=IMP&_count=100"
        while url:
            page = http.get(url).json()
            for entry in page.get("entry") or ():
                encounter = entry["resource"]
                discharges += 1
                value = hashlib.sha256(encounter["id"].encode()).hexdigest()[:32]
                task = {
                    "resourceType": "Task",
                    "identifier": [{"system": BASELINE_SYSTEM, "value": value}],
                    "status": "requested",
                    "intent": "order",
                    "for": encounter["subject"],
                    "focus": {"reference": f"Encounter/{encounter['id']}"},
                    "description": "Follow up after discharge",
                }
                http.post(
                    f"{base_url}/Task",
                    json=task,
                    headers={
                        "Content-Type": "application/fhir+json",
                        "If-None-Exist": f"identifier={BASELINE_SYSTEM}|{value}",
                    },
                ).raise_for_status()
            url = next(
                (link["url"] for link in page.get("link") or () if link["relation"] == "next"),
                None,
            )
    return time.perf_counter() - started, discharges


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _by_stage(counts: Counter[str]) -> dict[str, int]:
    stages: Counter[str] = Counter()
    for kind, count in counts.items():
        stages[kind.split()[0]] += count
    return dict(stages)


def one_latency(args: argparse.Namespace, latency_ms: float, out: Callable[[str], Any]) -> None:
    """Both runs at one latency, on a fresh server."""
    with tempfile.TemporaryDirectory(prefix="fhirbridge-bench-") as folder:
        work = Path(folder)
        with SekmetServer.start(work / "sekmet") as server:
            load(server, cohort(args.patients, args.stays, args.seed))
            proxy = Proxy(server.base_url, latency_ms / 1000)
            pid = server._process.pid  # the server process, for its CPU time
            try:
                proxy.counts(reset=True)
                cpu_before = process_cpu(pid)
                engine = asyncio.run(
                    run_engine(
                        proxy.base_url,
                        work / "j.db",
                        args.concurrency,
                        per_resource=args.per_resource,
                        server_cpu=lambda: process_cpu(pid),
                    )
                )
                engine_server_cpu = process_cpu(pid) - cpu_before
                engine_counts = proxy.counts(reset=True)
                cpu_before = process_cpu(pid)
                baseline_wall, discharges = run_baseline(proxy.base_url)
                baseline_server_cpu = process_cpu(pid) - cpu_before
                baseline_counts = proxy.counts(reset=True)
            finally:
                proxy.stop()
    stages = _by_stage(engine_counts)
    per = max(discharges, 1)
    writes = stages.get("write", 0) + stages.get("write-read", 0)
    reads = stages.get("poll", 0) + stages.get("lookup", 0)
    engine_wall = engine["wall_evaluate"] + engine["wall_write"]
    baseline_requests = sum(baseline_counts.values())
    out(f"\n## latency {latency_ms:g} ms, engine.concurrency {args.concurrency or 'default'}")
    out(
        f"discharges: {discharges}; Tasks created: {engine['created']:.0f}; "
        f"dead letters: {engine['dead']:.0f}; "
        f"write path: {'transaction' if engine['transactions'] else 'per-resource'}"
    )
    out(
        f"write stage: {writes} requests = {writes / per:.2f} per discharge "
        f"(writes {stages.get('write', 0)}, writer lookups {stages.get('write-read', 0)}), "
        f"wall {engine['wall_write']:.2f} s, CPU {engine['cpu_write'] / per * 1000:.1f} ms "
        "per discharge"
    )
    out(
        f"reads (poll + lookups): {reads} requests = {reads / per:.2f} per discharge "
        f"(poll {stages.get('poll', 0)}, lookups {stages.get('lookup', 0)}), "
        f"wall {engine['wall_evaluate']:.2f} s, CPU {engine['cpu_evaluate'] / per * 1000:.1f} ms "
        "per discharge"
    )
    total = writes + reads
    out(
        f"engine total: {total} requests = {total / per:.2f} per discharge, "
        f"wall {engine_wall:.2f} s"
    )
    out(
        f"baseline: {baseline_requests} requests = {baseline_requests / per:.2f} per discharge, "
        f"wall {baseline_wall:.2f} s"
    )
    out(
        f"ratio engine/baseline wall: {engine_wall / baseline_wall:.2f}x "
        f"(write stage alone {engine['wall_write'] / baseline_wall:.2f}x)"
    )
    out(
        f"server CPU per discharge: engine {engine_server_cpu / per * 1000:.1f} ms "
        f"(write stage {engine['server_write'] / per * 1000:.1f}, reads "
        f"{engine['server_evaluate'] / per * 1000:.1f}), baseline "
        f"{baseline_server_cpu / per * 1000:.1f} ms; machine load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    target_writes = writes / per <= 4
    out(f"target <= 4 write requests per discharge: {'PASS' if target_writes else 'MISS'}")
    if latency_ms == 10:
        verdict = "PASS" if engine_wall <= 2 * baseline_wall else "MISS"
        out(f"target wall <= 2x baseline at 10 ms: {verdict}")
    out("by kind: " + json.dumps(dict(sorted(engine_counts.items())), indent=None))


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=28)
    parser.add_argument("--stays", type=int, default=10, help="inpatient stays per patient")
    parser.add_argument("--latency", type=float, action="append", help="ms (repeatable)")
    parser.add_argument("--concurrency", type=int, help="engine.concurrency (default: unset, 8)")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument(
        "--per-resource", action="store_true", help="force the writer's per-resource path"
    )
    args = parser.parse_args(argv)
    configure()  # as the CLI does: warnings and up
    for latency in args.latency or [0.0, 10.0, 50.0]:
        one_latency(args, latency, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
