"""Smoke test of the ingest benchmark (benchmarks/_data.py and benchmarks/ingest.py).

200 generated Encounter versions go through ``run_engine`` of ``benchmarks/ingest.py``, the
very path the benchmark times: journal in a SQLite file, detection, rules, outbox, no FHIR
client. Nothing is timed: this only guards that the generator still produces stays the
engine understands (admissions, discharges, readmissions) and that nothing crashes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    """A module of benchmarks/ by file (it is not a package); sys.path is left as it was."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@pytest.fixture(scope="module")
def data_module() -> ModuleType:
    """``benchmarks/_data.py``."""
    return _load("_data")


@pytest.fixture(scope="module")
def ingest_module(data_module: ModuleType) -> ModuleType:
    """``benchmarks/ingest.py`` (it imports ``_data``, loaded first)."""
    return _load("ingest")


def test_generator_is_deterministic_and_realistic(data_module: ModuleType) -> None:
    """Same arguments, same bytes; Encounters of about 2.5 KB, in lastUpdated order."""
    first = list(data_module.encounter_versions(200))
    assert first == list(data_module.encounter_versions(200))
    assert len(first) == 200
    resources = [json.loads(raw) for raw in first]
    assert {r["resourceType"] for r in resources} == {"Encounter"}
    assert 1_500 < sum(len(raw) for raw in first) / len(first) < 4_000
    updated = [r["meta"]["lastUpdated"] for r in resources]
    assert updated == sorted(updated)
    statuses = Counter(r["status"] for r in resources)
    assert statuses["planned"] and statuses["in-progress"] and statuses["finished"]


def test_engine_path_produces_transitions(
    data_module: ModuleType, ingest_module: ModuleType
) -> None:
    """The benchmark's engine path on 200 versions: every version processed, transitions
    (admissions, discharges, readmissions) and planned writes, no dead letters."""
    data = list(data_module.encounter_versions(200, patients=20))
    result = ingest_module.run_engine(data, 50)
    assert result.journalled == result.processed == 200
    assert result.dead == 0
    assert result.transitions == sum(result.kinds.values()) > 0
    assert result.kinds["admission"] > 0
    assert result.kinds["discharge"] > 0
    assert result.kinds["readmission"] > 0
    assert result.planned == result.outbox > 0


def test_backfill_reads_the_ndjson_it_wrote(ingest_module: ModuleType, tmp_path: Path) -> None:
    """``--backfill``: the child process writes the NDJSON, the engine journals and processes
    every line, and the report names the rate, the memory and the targets."""
    lines: list[str] = []
    status = ingest_module.main(
        ["--backfill", "120", "--batch", "50", "--journal-dir", str(tmp_path)], out=lines.append
    )
    text = "\n".join(lines)
    assert status == 0
    assert "wrote 120 Encounter versions as NDJSON" in text
    assert "backfill of 120 versions in pages of 50" in text
    assert "extrapolated from 120" in text
    assert "[PASS] nothing dead-lettered, every version processed" in text
    assert list(tmp_path.iterdir()) == []  # the NDJSON and the journal are removed


def test_findings_digest_tells_runs_apart(
    data_module: ModuleType, ingest_module: ModuleType
) -> None:
    """The same versions give the same digest; fewer versions give another."""
    data = list(data_module.encounter_versions(120, patients=12))
    first = ingest_module.run_engine(data, 40)
    assert ingest_module.run_engine(data, 40).digest == first.digest
    assert ingest_module.run_engine(data[:100], 40).digest != first.digest
