"""Fixtures shared by more than one test folder."""

from __future__ import annotations

import pytest

from tests._builders.hl7 import (
    FakeFhir,
    fake_server,
)


@pytest.fixture
def fhir() -> FakeFhir:
    """The fake server with patient pat-1 (MRN M001) and its in-progress stay enc-1 (V001)."""
    return fake_server()
