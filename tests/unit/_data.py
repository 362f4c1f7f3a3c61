"""Where the unit tests read their data: the FHIR examples in tests/data (as JSON) and the
repository's mappings/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"
REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def load(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/data."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data
