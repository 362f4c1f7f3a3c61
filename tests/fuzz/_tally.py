"""What the fuzz tests sent and got, counted for the end-of-session summary."""

from __future__ import annotations

import os
from collections import Counter

__all__ = ["TALLY", "examples"]

TALLY: Counter[str] = Counter()


def examples(ci: int) -> int:
    """``ci`` examples, or ``FHIRBRIDGE_FUZZ_EXAMPLES`` when that is set (the long run)."""
    return int(os.environ.get("FHIRBRIDGE_FUZZ_EXAMPLES", "0")) or ci
