"""Workers over one PostgreSQL journal: wall time of the write-back cohort with 1, 2 and 4
``fhirbridge run`` processes, through a loopback proxy that adds a fixed latency.

For each worker count it starts a fresh sekmet server, loads the cohort of
``benchmarks/writeback.py`` (default 50 patients x 5 inpatient stays = 250 discharges, every
stay a discharge), starts the latency proxy (10 ms per request by default) and a fresh
journal (a PostgreSQL schema of its own), then starts N ``fhirbridge run`` processes on it
and times them until every discharge is journalled, nothing is pending and the outbox is
empty. The wall time includes starting the processes (the same for every N). The speed-up
is against the one-worker run of the same invocation. The timer sweeps are marked as done
before the workers start, so every run writes the same work (the discharges' Tasks).

    .venv/bin/python benchmarks/workers.py                          # 1, 2, 4 workers at 10 ms
    .venv/bin/python benchmarks/workers.py --workers 1 --workers 2 --patients 10 --stays 2

``WorkerPool`` is also the harness of the chaos test (``tests/e2e/test_workers_chaos.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.writeback import NOW, Proxy, cohort, load, process_cpu  # noqa: E402
from fhirbridge.store import PostgresStore  # noqa: E402
from fhirbridge.testing.sekmet import SekmetServer  # noqa: E402

POSTGRES = os.environ.get("FHIRBRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_url() -> str | None:
    """The URL of the machine's PostgreSQL, or None when none answers."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES, connect_timeout=3):
            return POSTGRES
    except psycopg.Error:
        return None


@contextmanager
def journal_schema(url: str, prefix: str = "fhirbridge_workers") -> Iterator[str]:
    """A fresh schema for one journal, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class WorkerPool:
    """``fhirbridge run`` worker processes on one journal (a schema of a PostgreSQL database).

    ``settings`` are merged into the engine section of the configuration it writes.
    """

    def __init__(
        self,
        folder: Path,
        *,
        base_url: str,
        url: str,
        schema: str,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        engine: dict[str, Any] | None = None,
    ) -> None:
        import json

        self.url, self.schema = url, schema
        self.store_url = f"{url}?options=-csearch_path%3D{schema}"
        settings = {
            "fhir": {"base_url": base_url, "name": "bench", "timeout": 120},
            "store": {"url": self.store_url, "lease_seconds": lease_seconds},
            "engine": {
                "max_event_age": "P3650D",
                "default_owner": "Organization/care-coordination",
                "poll_interval": poll_interval,
                "stop_grace": 5,
                "sweep_interval": 86400,  # one sweep, at the start: timers are not measured
                **(engine or {}),
            },
            "logging": {"format": "json", "level": "warning"},
        }
        self.config = folder / "fhirbridge.yaml"
        self.config.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
        self.logs = folder
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0
        self._offsets: dict[int, int] = {}  # where each worker's latest start logs from

    def start(self, index: int) -> None:
        """Start worker ``index`` (its output goes to ``worker-<index>.log``)."""
        log = (self.logs / f"worker-{index}.log").open("ab")
        self._offsets[index] = log.tell()
        argv = [sys.executable, "-m", "fhirbridge", "--config", str(self.config), "run"]
        argv += ["--now", NOW.isoformat(), "--new-journal"]
        self.processes[index] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.logs
        )
        log.close()
        self.started += 1

    def running(self) -> bool:
        """Whether every worker's latest start reached its service loop (it said so)."""
        for index, offset in self._offsets.items():
            with (self.logs / f"worker-{index}.log").open("rb") as log:
                log.seek(offset)
                if b"fhirbridge run: polling" not in log.read():
                    return False
        return True

    def cpu(self) -> float:
        """CPU seconds the running workers have used so far."""
        return sum(process_cpu(p.pid) for p in self.processes.values() if p.poll() is None)

    def kill(self, index: int) -> None:
        """SIGKILL worker ``index`` and reap it."""
        process = self.processes[index]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM every worker; their exit codes (killed after ``timeout``)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes.values():
            try:
                codes.append(process.wait(timeout))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def store(self) -> PostgresStore:
        """This process's connection to the journal (close it)."""
        return PostgresStore(self.url, schema=self.schema)

    def wait_done(
        self, discharges: int, *, within: float, poll: float = 0.2, settle: float = 0.0
    ) -> float:
        """Wait until ``discharges`` discharges are journalled with nothing pending or owed
        (for ``settle`` seconds on end: a timer sweep may plan more work after a write);
        returns the seconds until it first was (raises TimeoutError past ``within``)."""
        started = time.perf_counter()
        store: PostgresStore | None = None
        since: float | None = None
        try:
            while time.perf_counter() - started < within:
                try:
                    store = store or self.store()
                    if not (store.schema_version() and self.done(store, discharges)):
                        since = None
                    elif since is None:
                        since = time.perf_counter()
                    if since is not None and time.perf_counter() - since >= settle:
                        return since - started
                except Exception:
                    if store is not None:
                        store.close()
                    store = None
                time.sleep(poll)
        finally:
            if store is not None:
                store.close()
        raise TimeoutError(f"the workers did not finish within {within:g} s")

    @staticmethod
    def done(store: PostgresStore, discharges: int) -> bool:
        """Whether every discharge is journalled and nothing is pending or owed."""
        found = len(store.transitions(kind="discharge"))
        return found >= discharges and not store.pending(1) and store.outbox_depth() == 0


def timers_off(pool: WorkerPool) -> None:
    """Migrate the journal and mark the timer sweep and the duplicate sweep as just done, so
    every run writes exactly the discharges' work (an overdue-Task sweep would escalate
    whatever Tasks happen to exist when it runs, which depends on the timing)."""
    from fhirbridge.engine import HEAL_MARK
    from fhirbridge.pipeline import SWEEP_MARK

    store = pool.store()
    try:
        store.migrate()
        for mark in (SWEEP_MARK, HEAL_MARK):
            store.set_watermark("bench", mark, NOW.isoformat())
    finally:
        store.close()


def one_run(workers: int, args: argparse.Namespace, url: str) -> tuple[float, int, float, float]:
    """Wall time of ``workers`` workers on a fresh server and journal, Tasks created, and the
    CPU seconds the workers and the FHIR server used."""
    import httpx

    entries = cohort(args.patients, args.stays, args.seed)
    discharges = args.patients * args.stays
    with tempfile.TemporaryDirectory(prefix="fhirbridge-workers-") as folder:
        work = Path(folder)
        with SekmetServer.start(work / "sekmet") as server, journal_schema(url) as schema:
            load(server, entries)
            proxy = Proxy(server.base_url, args.latency / 1000)
            try:
                lanes = {} if args.concurrency is None else {"concurrency": args.concurrency}
                pool = WorkerPool(
                    work, base_url=proxy.base_url, url=url, schema=schema, engine=lanes
                )
                timers_off(pool)
                server_cpu = process_cpu(server._process.pid)
                started = time.perf_counter()
                for index in range(workers):
                    pool.start(index)
                try:
                    pool.wait_done(discharges, within=args.timeout)
                    wall = time.perf_counter() - started
                    workers_cpu = pool.cpu()
                    server_cpu = process_cpu(server._process.pid) - server_cpu
                finally:
                    codes = pool.stop()
                if any(code != 0 for code in codes):
                    raise RuntimeError(f"a worker exited with {codes}")
                tasks = httpx.get(
                    f"{server.base_url}/Task", params={"_summary": "count"}, timeout=60
                ).json()
            finally:
                proxy.stop()
    return wall, int(tasks.get("total", 0)), workers_cpu, server_cpu


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """Run the benchmark; returns the exit status (1 when PostgreSQL is not there)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--stays", type=int, default=5, help="inpatient stays per patient")
    parser.add_argument("--latency", type=float, default=10.0, help="ms added per request")
    parser.add_argument("--workers", type=int, action="append", help="worker counts (repeatable)")
    parser.add_argument(
        "--concurrency", type=int, help="engine.concurrency of each worker (default: unset, 8)"
    )
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args(argv)
    url = postgres_url()
    if url is None:
        out(f"PostgreSQL does not answer at {POSTGRES} (set FHIRBRIDGE_TEST_POSTGRES)")
        return 1
    counts = args.workers or [1, 2, 4]
    out(
        f"# workers on PostgreSQL: {args.patients * args.stays} discharges "
        f"({args.patients} patients x {args.stays} stays), {args.latency:g} ms per request, "
        f"engine.concurrency {args.concurrency or 'default (8)'} per worker; "
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    out("| workers | wall (s) | Tasks | speed-up | workers' CPU (s) | server CPU (s) |")
    out("| ---: | ---: | ---: | ---: | ---: | ---: |")
    baseline: float | None = None
    for workers in counts:
        wall, tasks, cpu, server = one_run(workers, args, url)
        baseline = baseline if baseline is not None else wall
        out(
            f"| {workers} | {wall:.1f} | {tasks} | {baseline / wall:.2f}x | {cpu:.1f} "
            f"| {server:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
