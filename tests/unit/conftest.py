"""Fixtures shared by unit test modules."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbridge.risk import codes
from fhirbridge.risk.codes import (
    CHARLSON_FILE,
    CHARLSON_SNOMED_FILE,
    RISK_INPUTS_FILE,
    charlson_table,
    risk_inputs,
)
from tests.unit._data import REPO_MAPPINGS


@pytest.fixture
def tmp_mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped mappings that the loaders read instead; caches cleared around."""
    for name in (CHARLSON_FILE, CHARLSON_SNOMED_FILE, RISK_INPUTS_FILE):
        shutil.copy(REPO_MAPPINGS / name, tmp_path / name)
    monkeypatch.setattr(codes, "mappings_dir", lambda: tmp_path)
    charlson_table.cache_clear()
    risk_inputs.cache_clear()
    yield tmp_path
    charlson_table.cache_clear()
    risk_inputs.cache_clear()
