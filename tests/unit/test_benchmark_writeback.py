"""Smoke test of benchmarks/writeback.py: its cohort and its request classification (the
figures the benchmark prints rest on both). Nothing is timed and no server is started."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from fhir.resources.R4B.encounter import Encounter

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "writeback.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/writeback.py as a module (sys.path left as it was)."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("bench_writeback", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


def test_the_cohort_is_deterministic_valid_and_all_discharges(bench: ModuleType) -> None:
    """Patients x stays finished inpatient Encounters with a disposition, valid R4B, the same
    for the same seed, and their history (Conditions, labs) alongside."""
    entries = bench.cohort(3, 4, 7)
    assert entries == bench.cohort(3, 4, 7)
    kinds = Counter(e["resource"]["resourceType"] for e in entries)
    assert kinds["Patient"] == 3 and kinds["Encounter"] == 12 and kinds["Observation"] == 12
    for entry in entries:
        if entry["resource"]["resourceType"] == "Encounter":
            encounter = entry["resource"]
            assert encounter["status"] == "finished" and encounter["class"]["code"] == "IMP"
            Encounter.model_validate(encounter)


@pytest.mark.parametrize(
    ("method", "path", "query", "kind"),
    [
        ("POST", "/fhir", "", "write POST (transaction)"),  # a write unit
        ("PUT", "/fhir/CarePlan/1", "", "write PUT CarePlan"),
        # the writer's own search by engine identifier
        (
            "GET",
            "/fhir/CarePlan",
            "identifier=https%3A%2F%2Ffhirbridge.dev%2Ffhir%2Fidentifier%7Cabc",
            "write-read GET CarePlan",
        ),
        ("GET", "/fhir/Encounter", "_lastUpdated=gt2026-01-01&_count=100", "poll GET Encounter"),
        ("GET", "/fhir/Condition", "patient=Patient%2F1", "lookup GET Condition"),  # risk input
        ("GET", "/fhir/Patient/1", "", "lookup GET Patient"),
    ],
)
def test_requests_are_counted_by_kind(
    bench: ModuleType, method: str, path: str, query: str, kind: str
) -> None:
    """Each request lands in the write stage, the writer's reads, polling or lookups."""
    assert bench.kind_of(method, path, query) == kind
