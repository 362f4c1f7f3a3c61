"""What the Prometheus metrics of ``run`` and ``serve`` share."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["safe_reading"]


def safe_reading(read: Callable[[], float]) -> Callable[[], float]:
    """``read`` for a gauge's ``set_function``, NaN when it raises: a failing journal must not
    break the scrape."""

    def value() -> float:
        try:
            return read()
        except Exception:  # any failure of the source reads as "unknown"
            return math.nan

    return value
