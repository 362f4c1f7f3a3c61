"""Ingest benchmark: Encounter versions through journal, detection and rules, offline.

Generates realistic R4B Encounter versions (``benchmarks/_data.py``: about 2.5 KB each,
10,000 patients for 50,000 versions, stays from planned to discharge, emergency visits,
readmissions), then measures, on the same bytes:

1. the engine: ``Bridge.ingest`` (journal in a SQLite file) then ``Bridge.process``
   (snapshot, detection, rules, outbox enqueue), in batches of 1,000 as a poll reads pages,
   with no FHIR client (no network);
2. the journal alone: ``ResourceVersion.from_json``, ``SqliteStore.append`` and, in one
   ``batch`` per page, ``complete`` of every version (snapshot, encounter index, pending
   list), as the engine calls them, without detection or rules;
3. plain ``json.loads`` (and ``orjson.loads``) of every version;
4. ``fhir.resources`` R4B ``Encounter.model_validate`` on a sample (5,000 by default), with
   the rate extrapolated to the whole run.

It prints the rates, the ratios (engine / json.loads, engine / model_validate), the growth of
resident memory over the engine run, and what the engine found (transitions by kind, planned
writes), and says whether the targets hold: at least 10,000 events/s, at least a third of
the json.loads rate, at least 10x the model_validate rate, less than 100 MB of RSS growth.

With ``--backfill N`` it measures instead a backfill: N generated versions written to an
NDJSON file (by a child process, not timed), then read back line by line, journalled and
processed page by page as a bulk export's files are, with the resident memory of the process
at the end (target: 1,000,000 versions in at most 2 minutes, RSS at most 150 MB).

The findings (transitions and planned writes) are checked against those recorded for the
same count and seed (:data:`EXPECTED`): a digest of every transition key and every outbox
item's key and payload, so a faster engine must find exactly what the engine found before.

Run from the repository root::

    .venv/bin/python benchmarks/ingest.py            # 50,000 versions
    .venv/bin/python benchmarks/ingest.py --quick    # 5,000 (CI smoke)
    .venv/bin/python benchmarks/ingest.py --profile  # also cProfile the engine run
    .venv/bin/python benchmarks/ingest.py --backfill 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import hashlib
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import encounter_versions, patients_for

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge, RunStats
from fhirbridge.logs import configure as configure_logging
from fhirbridge.store import PostgresStore, SqliteStore, Store
from fhirbridge.values import ResourceVersion

#: The engine's clock: every generated version lies before it (and within max_event_age).
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

TARGET_RATE = 10_000.0
TARGET_JSON_SHARE = 1 / 3
TARGET_VALIDATE_MULTIPLE = 10.0
TARGET_RSS_GROWTH_MB = 100.0
TARGET_BACKFILL_SECONDS_PER_MILLION = 120.0
TARGET_BACKFILL_RSS_MB = 150.0

#: What the engine finds in the generated versions, by (count, seed): transitions, planned
#: writes (outbox items) and :func:`findings_digest`. Recorded with the engine of 2026-12-01
#: (before the work on reading fast); a run of another size is checked only for sanity.
EXPECTED: dict[tuple[int, int], tuple[int, int, str]] = {
    (5_000, 20261123): (4_537, 2_829, "bdeae71448f62223"),
    (20_000, 20261123): (18_070, 11_305, "9dba909f176f4710"),
    (50_000, 20261123): (45_222, 28_214, "811fc10edbc4a0e3"),
}


def rss_mb() -> float:
    """Current resident set size in MB (``/proc/self/statm``; peak RSS where it is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the system (glibc ``malloc_trim``), so
    that memory the generator freed does not hide the engine's growth."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the baseline is looser
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class EngineResult:
    """What the engine run measured and found."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    ingest_seconds: float = 0.0
    process_seconds: float = 0.0
    journalled: int = 0
    processed: int = 0
    transitions: int = 0
    planned: int = 0
    dead: int = 0
    rss_before: float = 0.0
    rss_after: float = 0.0
    rss_max: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    outbox: int = 0
    journal_bytes: int = 0
    digest: str = ""


def findings_digest(store: Store) -> str:
    """SHA-256 over every transition key (with its note) and every outbox item's key, kind
    and payload, sorted: equal digests mean the same transitions and the same planned
    writes."""
    lines = sorted(f"t {t.key} {t.note}" for t in store.transitions())
    lines += sorted(
        f"o {item.key} {item.kind} {json.dumps(item.payload, sort_keys=True)}"
        for item in store.outbox_items()
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


async def _drive(bridge: Bridge, data: Sequence[bytes], batch: int, result: EngineResult) -> None:
    for start in range(0, len(data), batch):
        t0 = time.perf_counter()
        fresh = bridge.ingest(data[start : start + batch])
        result.journalled += len(fresh)
        t1 = time.perf_counter()
        # the page just journalled is processed from memory, as a poll hands it over
        stats = await bridge.process(stats=RunStats(), fresh=fresh)
        t2 = time.perf_counter()
        result.ingest_seconds += t1 - t0
        result.process_seconds += t2 - t1
        result.processed += stats.processed
        result.transitions += stats.transitions
        result.planned += stats.planned
        result.dead += stats.dead
        result.rss_max = max(result.rss_max, rss_mb())  # after each page


def run_engine(
    data: Sequence[bytes],
    batch: int,
    profile: cProfile.Profile | None = None,
    journal_dir: str | None = None,
) -> EngineResult:
    """Journal, detect and plan every version; the SQLite file lives in a temporary folder
    (under ``journal_dir`` if given, else the system's temporary directory)."""
    result = EngineResult()
    with tempfile.TemporaryDirectory(prefix="fhirbridge-bench-", dir=journal_dir) as tmp:
        bridge = _bridge(Path(tmp) / "journal.db")
        store = bridge.store
        release_free_memory()
        result.rss_before = rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        asyncio.run(_drive(bridge, data, batch, result))
        if profile is not None:
            profile.disable()
        result.seconds = time.perf_counter() - start
        result.cpu_seconds = time.process_time() - cpu
        gc.collect()
        result.rss_after = rss_mb()
        # what the engine found, read back through the store (not timed)
        result.kinds = Counter(t.transition.kind.value for t in store.transitions())
        result.outbox = store.outbox_depth()
        result.digest = findings_digest(store)
        bridge.store.close()
        result.journal_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir())
    return result


def _bridge(path: Path) -> Bridge:
    """The engine as the benchmark runs it: a SQLite journal at ``path``, no FHIR client,
    the fixed clock, every transition young enough to plan its work."""
    config = load_config(
        data={
            "fhir": {"base_url": "http://bench.invalid/fhir"},
            "store": {"url": f"sqlite:///{path}"},
            "engine": {"max_event_age": "P3650D"},
        }
    )
    store = SqliteStore(path)
    store.migrate()
    return Bridge(config, client=None, store=store, clock=FixedClock(NOW))


def write_ndjson(path: Path, count: int, seed: int) -> None:
    """Write ``count`` generated versions to ``path``, one per line (in a child process, so
    that what the generator holds never counts in the backfill's memory)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from _data import *; "
        "out = open(sys.argv[2], 'wb'); n = int(sys.argv[3]); "
        "[out.write(raw + b'\\n') for raw in "
        "encounter_versions(n, patients=patients_for(n), seed=int(sys.argv[4]))]; out.close()"
    )
    here = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", code, here, str(path), str(count), str(seed)], check=True)


def _pages(path: Path, batch: int) -> Iterator[list[bytes]]:
    with path.open("rb") as lines:
        page: list[bytes] = []
        for line in lines:
            line = line.rstrip(b"\n")
            if line:
                page.append(line)
            if len(page) >= batch:
                yield page
                page = []
        if page:
            yield page


def run_backfill(path: Path, batch: int, journal_dir: str | None) -> EngineResult:
    """Journal and process every line of the NDJSON file at ``path``, a page at a time."""
    result = EngineResult()

    async def drive(bridge: Bridge) -> None:
        for page in _pages(path, batch):
            fresh = bridge.ingest(page)
            result.journalled += len(fresh)
            stats = await bridge.process(stats=RunStats(), fresh=fresh)
            result.processed += stats.processed
            result.transitions += stats.transitions
            result.planned += stats.planned
            result.dead += stats.dead
            result.rss_max = max(result.rss_max, rss_mb())

    with tempfile.TemporaryDirectory(prefix="fhirbridge-backfill-", dir=journal_dir) as tmp:
        bridge = _bridge(Path(tmp) / "journal.db")
        release_free_memory()
        result.rss_before = rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        asyncio.run(drive(bridge))
        result.seconds = time.perf_counter() - start
        result.cpu_seconds = time.process_time() - cpu
        result.rss_after = rss_mb()
        result.outbox = bridge.store.outbox_depth()
        bridge.store.close()
        result.journal_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir())
    return result


def backfill_main(args: argparse.Namespace, out: Callable[[str], Any]) -> int:
    """``--backfill N``: the NDJSON backfill and its two targets."""
    count = args.backfill
    with tempfile.TemporaryDirectory(prefix="fhirbridge-ndjson-", dir=args.journal_dir) as tmp:
        path = Path(tmp) / "Encounter.ndjson"
        start = time.perf_counter()
        write_ndjson(path, count, args.seed)
        size = path.stat().st_size
        out(
            f"wrote {count:,} Encounter versions as NDJSON in {time.perf_counter() - start:.1f} s "
            f"(not timed): {size / 1e6:,.0f} MB"
        )
        result = run_backfill(path, args.batch, args.journal_dir)
    rate = _rate(result.processed, result.seconds)
    per_million = 1_000_000 / rate if rate else float("inf")
    out("")
    out(
        f"backfill of {result.processed:,} versions in pages of {args.batch:,}: "
        f"{result.seconds:.1f} s wall, {result.cpu_seconds:.1f} s CPU, {rate:,.0f} versions/s"
    )
    scaled = "" if count == 1_000_000 else f" (extrapolated from {count:,} at the same rate)"
    out(f"1,000,000 versions would take {per_million:.0f} s{scaled}")
    out(
        f"RSS: {result.rss_before:.0f} MB before, {result.rss_after:.0f} MB at the end, "
        f"highest after a page {result.rss_max:.0f} MB; "
        f"journal {result.journal_bytes / 1e6:,.0f} MB"
    )
    out(
        f"journalled {result.journalled:,}, transitions {result.transitions:,}, planned "
        f"writes {result.planned:,}, dead letters {result.dead:,}"
    )
    checks = [
        (
            f"1,000,000 versions in <= {TARGET_BACKFILL_SECONDS_PER_MILLION:.0f} s{scaled}",
            per_million <= TARGET_BACKFILL_SECONDS_PER_MILLION,
        ),
        (
            f"RSS <= {TARGET_BACKFILL_RSS_MB:.0f} MB at the end (and at its highest)",
            max(result.rss_after, result.rss_max) <= TARGET_BACKFILL_RSS_MB,
        ),
        (
            "nothing dead-lettered, every version processed",
            not result.dead and result.processed == count,
        ),
    ]
    out("")
    for label, ok in checks:
        out(f"[{_verdict(ok)}] {label}")
    return 1 if args.check and not all(ok for _, ok in checks) else 0


def time_journal(
    data: Sequence[bytes], batch: int, open_journal: Callable[[], Store]
) -> tuple[float, float, int]:
    """Seconds for the journal alone (parse, durable append per page, then one batch of
    ``complete`` per page), its CPU seconds, and how many versions it journalled."""
    store = open_journal()
    try:
        journalled = 0
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(data), batch):
            page = data[first : first + batch]
            fresh = store.append([ResourceVersion.from_json("bench", raw) for raw in page])
            journalled += len(fresh)
            with store.batch():
                for version in fresh:
                    store.complete(version)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        assert store.pending() == []
    finally:
        store.close()
    return seconds, cpu_seconds, journalled


@contextlib.contextmanager
def sqlite_journal(journal_dir: str | None) -> Iterator[Callable[[], Store]]:
    """Opens a SQLite journal in a temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="fhirbridge-journal-", dir=journal_dir) as tmp:

        def open_journal() -> Store:
            store = SqliteStore(Path(tmp) / "journal.db")
            store.migrate()
            return store

        yield open_journal


@contextlib.contextmanager
def postgres_journal(url: str) -> Iterator[Callable[[], Store]]:
    """Opens a PostgreSQL journal in a throwaway schema (dropped afterwards)."""
    import psycopg
    from psycopg import sql

    schema = f"fhirbridge_bench_{uuid.uuid4().hex[:8]}"

    def open_journal() -> Store:
        store = PostgresStore(url, schema=schema)
        store.migrate()
        return store

    try:
        yield open_journal
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def time_json(data: Sequence[bytes]) -> float:
    """Seconds for ``json.loads`` of every version."""
    loads = json.loads
    start = time.perf_counter()
    for raw in data:
        loads(raw)
    return time.perf_counter() - start


def time_orjson(data: Sequence[bytes]) -> float:
    """Seconds for ``orjson.loads`` of every version (what the engine parses with)."""
    import orjson

    loads = orjson.loads
    start = time.perf_counter()
    for raw in data:
        loads(raw)
    return time.perf_counter() - start


def time_model_validate(sample: Sequence[bytes]) -> tuple[float, float]:
    """Seconds for R4B ``Encounter.model_validate(json.loads(raw))`` and for
    ``Encounter.model_validate_json(raw)`` over the sample."""
    from fhir.resources.R4B.encounter import Encounter

    Encounter.model_validate(json.loads(sample[0]))  # build the validators before timing
    start = time.perf_counter()
    for raw in sample:
        Encounter.model_validate(json.loads(raw))
    from_dict = time.perf_counter() - start
    start = time.perf_counter()
    for raw in sample:
        Encounter.model_validate_json(raw)
    from_json = time.perf_counter() - start
    return from_dict, from_json


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """Run the benchmark; returns the exit status (1 only with --check and a missed target)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="versions (default 50000)")
    parser.add_argument("--quick", action="store_true", help="5,000 versions (CI smoke)")
    parser.add_argument("--batch", type=int, default=1_000, help="versions per ingest call")
    parser.add_argument(
        "--sample", type=int, default=5_000, help="versions for model_validate (default 5000)"
    )
    parser.add_argument("--seed", type=int, default=20261123, help="generator seed")
    parser.add_argument(
        "--journal-dir",
        help="where the SQLite journal's temporary folder goes (default: the system's temp "
        "directory; /dev/shm takes the disk's fsyncs out of the measurement)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also time the journal alone on this PostgreSQL database (a throwaway schema)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the engine run")
    parser.add_argument(
        "--backfill",
        type=int,
        metavar="N",
        help="instead: backfill N generated versions from an NDJSON file (RSS at the end)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    count = 5_000 if args.quick else args.count
    if count < 1 or args.batch < 1 or args.sample < 1:
        parser.error("--count, --batch and --sample must be positive")

    configure_logging()  # warnings only, as the CLI does: no per-transition log lines

    if args.backfill is not None:
        if args.backfill < 1:
            parser.error("--backfill must be positive")
        return backfill_main(args, out)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    out(f"fhirbridge ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    out(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load}")
    start = time.perf_counter()
    data = list(encounter_versions(count, patients=patients_for(count), seed=args.seed))
    generated = time.perf_counter() - start
    count = len(data)
    total_bytes = sum(len(raw) for raw in data)
    out(
        f"generated {count:,} Encounter versions for {patients_for(count):,} patients "
        f"in {generated:.1f} s (not timed): {total_bytes / 1e6:.1f} MB, "
        f"{total_bytes / count:,.0f} B per version on average"
    )

    profile = cProfile.Profile() if args.profile else None
    engine = run_engine(data, args.batch, profile, args.journal_dir)
    json_seconds = time_json(data)
    orjson_seconds = time_orjson(data)
    with sqlite_journal(args.journal_dir) as opener:
        journal_seconds, journal_cpu, journal_count = time_journal(data, args.batch, opener)
    postgres: tuple[float, float, int] | None = None
    if args.postgres:
        with postgres_journal(args.postgres) as opener:
            postgres = time_journal(data, args.batch, opener)
    step = max(1, count // min(args.sample, count))
    sample = data[::step][: args.sample]
    validate_seconds, validate_json_seconds = time_model_validate(sample)
    scale = count / len(sample)  # seconds on the sample, extrapolated to the whole run

    engine_rate = _rate(count, engine.seconds)
    json_rate = _rate(count, json_seconds)
    validate_rate = _rate(len(sample), validate_seconds)
    growth = engine.rss_after - engine.rss_before
    star = " *" if len(sample) < count else ""
    rows: list[tuple[str, float, float | None]] = [
        (
            f"engine: ingest + detect + rules + outbox, pages of {args.batch:,}",
            engine.seconds,
            engine_rate,
        ),
        ("  ingest (parse, journal)", engine.ingest_seconds, None),
        ("  process (snapshot, detect, rules, outbox)", engine.process_seconds, None),
        (
            "journal alone: parse, append, complete (one batch a page)",
            journal_seconds,
            _rate(count, journal_seconds),
        ),
        *(
            [("journal alone on PostgreSQL", postgres[0], _rate(count, postgres[0]))]
            if postgres
            else []
        ),
        ("json.loads only", json_seconds, json_rate),
        ("orjson.loads only", orjson_seconds, _rate(count, orjson_seconds)),
        (
            f"R4B Encounter.model_validate(json.loads(raw)){star}",
            validate_seconds * scale,
            validate_rate,
        ),
        (
            f"R4B Encounter.model_validate_json(raw){star}",
            validate_json_seconds * scale,
            _rate(len(sample), validate_json_seconds),
        ),
    ]
    out("")
    out(f"{'path':<62} {'seconds':>8} {'events/s':>9}")
    for label, seconds, rate in rows:
        shown = f"{rate:>9,.0f}" if rate is not None else ""
        out(f"{label:<62} {seconds:>8.2f} {shown}")
    if star:
        out(
            f"* fhir.resources timed on {len(sample):,} versions sampled evenly from the run; "
            f"seconds extrapolated to {count:,}"
        )
    out(
        f"engine CPU time {engine.cpu_seconds:.2f} s ({_rate(count, engine.cpu_seconds):,.0f} "
        "events per CPU second; wall time also waits on the disk and on busy cores)"
    )
    out("")
    share = engine_rate / json_rate
    multiple = engine_rate / validate_rate
    journal_share = _rate(count, journal_seconds) / json_rate
    out(f"engine / json.loads       {share:6.3f}  (target >= {TARGET_JSON_SHARE:.2f})")
    out(f"engine / model_validate   {multiple:6.3f}  (target >= {TARGET_VALIDATE_MULTIPLE:.0f})")
    out(
        f"journal alone / json.loads {journal_share:5.3f}  "
        f"({journal_count:,} journalled; CPU {journal_cpu:.2f} s, "
        f"{_rate(count, journal_cpu):,.0f} per CPU second)"
    )
    if postgres:
        out(
            f"journal alone on PostgreSQL / json.loads {json_seconds / postgres[0]:5.3f}  "
            f"(CPU {postgres[1]:.2f} s)"
        )
    out(f"orjson.loads / json.loads {json_seconds / orjson_seconds:6.3f}")
    out(
        f"resident memory (RSS) over the engine run: {engine.rss_before:.0f} MB before, "
        f"{engine.rss_after:.0f} MB after, growth {growth:+.1f} MB "
        f"(target < {TARGET_RSS_GROWTH_MB:.0f} MB); highest after a page "
        f"{engine.rss_max:.0f} MB ({engine.rss_max - engine.rss_before:+.1f} MB)"
    )
    out(
        f"peak RSS of the process {peak_rss_mb():.0f} MB (the generated bytes included); "
        f"journal {engine.journal_bytes / 1e6:.0f} MB (SQLite file and WAL) "
        f"in {args.journal_dir or tempfile.gettempdir()}"
    )
    out("")
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(engine.kinds.items()))
    out(
        f"journalled {engine.journalled:,}, processed {engine.processed:,}, "
        f"dead letters {engine.dead:,}"
    )
    out(f"transitions {engine.transitions:,}: {kinds}")
    out(f"planned writes (outbox items) {engine.planned:,}; outbox depth {engine.outbox:,}")
    expected = EXPECTED.get((count, args.seed))
    found = (engine.transitions, engine.planned, engine.digest)
    out(
        f"findings digest {engine.digest}"
        + (f" (recorded: {expected[2]})" if expected else " (no recorded findings for this size)")
    )

    checks = [
        (f"engine >= {TARGET_RATE:,.0f} events/s", engine_rate >= TARGET_RATE),
        (f"engine >= {TARGET_JSON_SHARE:.2f} x the json.loads rate", share >= TARGET_JSON_SHARE),
        (
            f"engine >= {TARGET_VALIDATE_MULTIPLE:.0f} x the model_validate rate",
            multiple >= TARGET_VALIDATE_MULTIPLE,
        ),
        (
            f"RSS growth < {TARGET_RSS_GROWTH_MB:.0f} MB (at the end, and at its highest)",
            max(growth, engine.rss_max - engine.rss_before) < TARGET_RSS_GROWTH_MB,
        ),
        (
            "sanity: discharges and readmissions found, nothing dead-lettered",
            engine.kinds["discharge"] > 0 and engine.kinds["readmission"] > 0 and not engine.dead,
        ),
        *(
            [
                (
                    "same transitions and planned writes as recorded (counts and digest)",
                    found == expected,
                )
            ]
            if expected
            else []
        ),
    ]
    out("")
    for label, ok in checks:
        out(f"[{_verdict(ok)}] {label}")

    if profile is not None:
        for order in ("tottime", "cumulative"):
            buffer = io.StringIO()
            pstats.Stats(profile, stream=buffer).sort_stats(order).print_stats(25)
            out("")
            out(f"cProfile of the engine run, top 25 by {order} (timings above include it):")
            out(buffer.getvalue().strip())
    return 1 if args.check and not all(ok for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
