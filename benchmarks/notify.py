"""Notification benchmark: how fast the receiver acknowledges, and how soon the work lands.

1. **Acknowledgements.** The receiver (``fhirbridge.receiver.create_app``) runs under uvicorn
   in a child process, on a SQLite journal, with no FHIR client (processing runs in its
   background worker; nothing is written back). Distinct Encounter versions
   (``benchmarks/_data.py``, about 2.1 KB each) are PUT as R4 rest-hook notifications over
   ``--concurrency`` keep-alive connections, in two runs of ``--count``: a closed loop (each
   connection sends again as soon as it is answered) and an open loop paced at ``--rate``
   per second (latency counted from when each request was due). Printed for each: accepted
   notifications per second and p50/p99/max acknowledgement latency; then how many journal
   transactions the group commit used and how long the worker took after the burst.
2. **End to end.** A sekmet FHIR server (the test harness) and the receiver in this process
   (uvicorn, same event loop), the engine configured on sekmet. For ``--patients`` patients
   admitted and discharged in sekmet: (a) the receiver is sent the discharged Encounter and
   the time until both TCM Tasks can be read back from sekmet is measured; (b) sekmet itself
   notifies the receiver through an R4 rest-hook Subscription and the time from the
   discharge call to the readable Tasks is measured.

Target: at least 500 notifications/s acknowledged with p99 under 50 ms (the exit status
follows the paced run).

Run from the repository root::

    .venv/bin/python benchmarks/notify.py                 # 2 x 2,000 PUTs, concurrency 50
    .venv/bin/python benchmarks/notify.py --quick         # 2 x 400 PUTs, 3 patients
    .venv/bin/python benchmarks/notify.py --skip-e2e      # acknowledgements only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import encounter_versions

from fhirbridge.testing.sekmet import free_port

SECRET = "bench-secret"  # noqa: S105 - a throwaway secret for a receiver on loopback
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TARGET_RATE = 500.0
TARGET_P99_MS = 50.0


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of ``values`` (``share`` in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- the receiver in a child process ------------------------------------------------------------


def serve_receiver(port: int, journal: Path, window: float) -> None:
    """Child process: the receiver on ``port`` over a SQLite journal, offline (no client)."""
    import uvicorn

    from fhirbridge.clock import FixedClock
    from fhirbridge.config import load_config
    from fhirbridge.engine import Bridge
    from fhirbridge.logs import configure
    from fhirbridge.receiver import create_app
    from fhirbridge.receiver.server import ReceiverServer, freeze_heap
    from fhirbridge.store import SqliteStore

    configure()
    config = load_config(
        data={
            "fhir": {"base_url": "http://bench.invalid/fhir", "name": "bench"},
            "store": {"url": f"sqlite:///{journal}"},
            "engine": {"max_event_age": "P3650D"},
        }
    )
    store = SqliteStore(journal)
    store.migrate()
    bridge = Bridge(config, client=None, store=store, clock=FixedClock(NOW))
    app = create_app(bridge, secret=SECRET, max_body=1 << 20, commit_window=window)
    server = ReceiverServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    freeze_heap()
    asyncio.run(server.serve())


# -- a lean HTTP/1.1 keep-alive client ----------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


def _put(port: int, body: bytes) -> bytes:
    resource = json.loads(body)
    head = (
        f"PUT /notify/Encounter/{resource['id']} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {SECRET}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class AckResult:
    """What the acknowledgement run measured."""

    seconds: float
    latencies: list[float]
    statuses: dict[int, int]


async def blast(
    port: int, bodies: list[bytes], concurrency: int, rate: float | None = None
) -> AckResult:
    """PUT every body over ``concurrency`` keep-alive connections; time each answer.

    Without ``rate`` each connection sends its next request as soon as the last is answered
    (closed loop: as fast as the receiver goes). With ``rate`` request ``i`` is due at
    ``i / rate`` seconds (open loop) and its latency counts from when it was due, so a
    receiver that falls behind is charged for the wait too.
    """
    requests = [_put(port, body) for body in bodies]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(enumerate(requests))
    started = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index, request in queue:
                due = time.perf_counter()
                if rate is not None:
                    due = started + index / rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return AckResult(time.perf_counter() - started, latencies, statuses)


async def _wait_healthy(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        status = await _exchange(reader, writer, request)
        writer.close()
        if status == 200:
            return
    raise RuntimeError("the receiver did not start")


def _report(name: str, result: AckResult, count: int) -> tuple[float, float]:
    rate = count / result.seconds
    p50 = percentile(result.latencies, 0.50) * 1000
    p99 = percentile(result.latencies, 0.99) * 1000
    print(f"  {name}")
    print(f"    statuses        {result.statuses}")
    print(f"    accepted        {rate:,.0f} notifications/s ({result.seconds:.2f} s)")
    print(
        f"    ack latency     p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
        f"max {max(result.latencies) * 1000:.1f} ms"
    )
    return rate, p99


def run_acks(count: int, concurrency: int, window: float, rate: float) -> bool:
    """Part 1; returns whether the targets hold."""
    bodies = list(encounter_versions(2 * count + 100))
    warm, closed, opened = bodies[:100], bodies[100 : 100 + count], bodies[100 + count :]
    with tempfile.TemporaryDirectory(prefix="fhirbridge-notify-") as tmp:
        journal = Path(tmp) / "journal.db"
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(journal), str(window)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            asyncio.run(_wait_healthy(port))
            asyncio.run(blast(port, warm, 10))
            _wait_processed(journal, within=60)
            fast = asyncio.run(blast(port, closed, concurrency))
            acked = time.perf_counter()
            drained = _wait_processed(journal, within=120)
            processed_after = time.perf_counter() - acked if drained else float("nan")
            paced = asyncio.run(blast(port, opened, concurrency, rate))
            _wait_processed(journal, within=120)
            commits = _commits(port)
        finally:
            child.terminate()
            child.wait(30)
    print(
        f"acknowledgements: {count} PUTs per run, {concurrency} connections, "
        f"group-commit window {window * 1000:.1f} ms"
    )
    top, top_p99 = _report("as fast as it goes (closed loop)", fast, count)
    print(f"    worker done     {processed_after:.2f} s after the last acknowledgement")
    paced_rate, paced_p99 = _report(f"paced at {rate:.0f}/s (open loop)", paced, count)
    total = 2 * count + 100
    print(
        f"  journal commits   {commits} for {total} notifications "
        f"(~{total / max(commits, 1):.1f} per transaction)"
    )
    ok_fast = top >= TARGET_RATE and top_p99 < TARGET_P99_MS
    ok_paced = paced_rate >= 0.95 * rate and paced_p99 < TARGET_P99_MS
    clean = fast.statuses == {200: count} and paced.statuses == {200: count}
    for name, ok in (("closed loop", ok_fast), (f"paced {rate:.0f}/s", ok_paced)):
        verdict = "met" if ok and clean else "NOT met"
        print(f"  target (>= {TARGET_RATE:.0f}/s, p99 < {TARGET_P99_MS:.0f} ms), {name}: {verdict}")
    return ok_paced and clean


def _wait_processed(journal: Path, within: float) -> bool:
    from fhirbridge.store import SqliteStore

    store = SqliteStore(journal)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not store.pending(1):
                return True
            time.sleep(0.05)
        return False
    finally:
        store.close()


def _commits(port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for line in text.splitlines():
        if line.startswith("fhirbridge_journal_write_seconds_count"):
            return int(float(line.split()[1]))
    return 0


# -- end to end against sekmet ------------------------------------------------------------------


async def _tasks_readable(sekmet: object, patient: str, within: float = 30.0) -> float:
    from fhirbridge.testing.sekmet import SekmetServer
    from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM

    assert isinstance(sekmet, SekmetServer)
    query = {"patient": f"Patient/{patient}", "_tag": f"{ENGINE_TAG_SYSTEM}|{ENGINE_TAG_CODE}"}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if len(await asyncio.to_thread(sekmet.search, "Task", query)) >= 2:
            return time.perf_counter()
        await asyncio.sleep(0.005)
    raise RuntimeError(f"no Tasks for Patient/{patient} within {within} s")


async def _e2e(sekmet: object, patients: int) -> tuple[list[float], list[float], list[float]]:
    import httpx
    import uvicorn

    from fhirbridge.config import load_config
    from fhirbridge.engine import Bridge
    from fhirbridge.receiver import create_app
    from fhirbridge.subscriptions import ensure_subscriptions
    from fhirbridge.testing.sekmet import SekmetServer

    assert isinstance(sekmet, SekmetServer)
    port = free_port()
    journal = Path(sekmet.workdir).parent / "journal.db"
    config = load_config(
        data={
            "fhir": {"base_url": sekmet.base_url, "name": "sekmet"},
            "store": {"url": f"sqlite:///{journal}"},
            "receiver": {"public_url": f"http://127.0.0.1:{port}", "secret": SECRET},
            "subscriptions": [{"criteria": "Encounter?status=finished"}],
        }
    )
    acks: list[float] = []
    direct: list[float] = []
    subscribed: list[float] = []

    def stay() -> tuple[str, dict[str, object]]:
        patient = sekmet.register_patient()
        return patient, sekmet.discharge(sekmet.admit(patient), "home")

    async with Bridge.from_config(config) as bridge:
        app = create_app(bridge, secret=SECRET, max_body=1 << 20)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        headers = {"Authorization": f"Bearer {SECRET}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(patients):  # (a) the receiver is sent the discharged Encounter
                patient, encounter = await asyncio.to_thread(stay)
                started = time.perf_counter()
                answer = await http.put(
                    f"/notify/Encounter/{encounter['id']}", json=encounter, headers=headers
                )
                acks.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                direct.append(await _tasks_readable(sekmet, patient) - started)
        await ensure_subscriptions(bridge, config)
        for _ in range(patients):  # (b) sekmet notifies through its Subscription
            patient = await asyncio.to_thread(sekmet.register_patient)
            encounter_id = await asyncio.to_thread(sekmet.admit, patient)
            started = time.perf_counter()
            await asyncio.to_thread(sekmet.discharge, encounter_id, "home")
            subscribed.append(await _tasks_readable(sekmet, patient) - started)
        server.should_exit = True
        await serving
    return acks, direct, subscribed


def run_e2e(patients: int) -> None:
    """Part 2: notification to Tasks on a real FHIR server (sekmet)."""
    from fhirbridge.testing.sekmet import SekmetServer

    with (
        tempfile.TemporaryDirectory(prefix="fhirbridge-notify-e2e-") as tmp,
        SekmetServer.start(Path(tmp) / "sekmet") as sekmet,
    ):
        acks, direct, subscribed = asyncio.run(_e2e(sekmet, patients))

    def row(name: str, values: list[float]) -> None:
        ms = sorted(v * 1000 for v in values)
        print(
            f"  {name:<36} median {statistics.median(ms):6.0f} ms   "
            f"min {ms[0]:6.0f} ms   max {ms[-1]:6.0f} ms"
        )

    print(f"end to end on sekmet ({patients} discharges each):")
    row("ack of a discharge notification", acks)
    row("notification -> both Tasks readable", direct)
    row("discharge (subscription) -> Tasks", subscribed)


def main() -> None:
    """Parse arguments and run the parts asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="notifications to PUT")
    parser.add_argument("--concurrency", type=int, default=50, help="connections at once")
    parser.add_argument("--window", type=float, default=0.002, help="group commit window (s)")
    parser.add_argument("--rate", type=float, default=500.0, help="paced run's rate (1/s)")
    parser.add_argument("--patients", type=int, default=10, help="discharges end to end")
    parser.add_argument("--quick", action="store_true", help="400 PUTs, 3 patients")
    parser.add_argument("--skip-e2e", action="store_true", help="acknowledgements only")
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "JOURNAL", "WINDOW"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve_receiver(int(args.serve[0]), Path(args.serve[1]), float(args.serve[2]))
        return
    from fhirbridge.logs import configure

    configure()
    if args.quick:
        args.count, args.patients = 400, 3
    ok = run_acks(args.count, args.concurrency, args.window, args.rate)
    if not args.skip_e2e:
        run_e2e(args.patients)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
