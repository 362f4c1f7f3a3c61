"""The facility's time zone for the scores' day counts, and the warning when nobody set it.

LACE's L and HOSPITAL's L count calendar days between the admission and discharge dates, and
the ED-visit and admission windows are anchored on the admission date: all of them are dates
*in the facility's zone*. A stay from 20:00 to 20:00 three days later in New York is 3 days
there but can be 4 days on UTC dates. ``engine.timezone`` names the zone; when it is unset the
engine falls back (to the rule pack's zone, else UTC) and says so once::

    from fhirbridge.risk.zone import facility_zone, timezone_warning

    tz = facility_zone(config.engine.timezone, fallback=pack.timezone)
    line = timezone_warning(config.engine.timezone, fallback=pack.timezone)  # None when set
"""

from __future__ import annotations

import threading
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from fhirbridge.errors import ConfigError

__all__ = [
    "TIMEZONE_KEY",
    "facility_zone",
    "reset_timezone_warning",
    "timezone_warning",
    "warn_timezone_unset",
]

log = structlog.get_logger(__name__)

#: The configuration key that names the facility's zone.
TIMEZONE_KEY = "engine.timezone"

_lock = threading.Lock()
_warned = False


def facility_zone(timezone: str | None, *, fallback: str | None = None) -> tzinfo:
    """The zone the scores count days in: ``timezone``, else ``fallback``, else UTC.

    Raises ConfigError for a name the zone database does not know.
    """
    name = timezone or fallback
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{TIMEZONE_KEY}: unknown time zone {name!r}") from exc


def timezone_warning(timezone: str | None, *, fallback: str | None = None) -> str | None:
    """One line for ``check`` when ``engine.timezone`` is unset, else None."""
    if timezone:
        return None
    used = fallback or "UTC"
    return (
        f"{TIMEZONE_KEY} is not set: risk scores count days on {used} dates; set "
        f"{TIMEZONE_KEY} to the facility's zone (for example America/New_York)"
    )


def warn_timezone_unset(timezone: str | None, *, fallback: str | None = None) -> bool:
    """Log ``risk_timezone_unset`` once per process when ``engine.timezone`` is unset.

    Returns True when this call logged. The engine calls it when it first scores a stay.
    """
    global _warned
    line = timezone_warning(timezone, fallback=fallback)
    if line is None:
        return False
    with _lock:
        if _warned:
            return False
        _warned = True
    log.warning("risk_timezone_unset", key=TIMEZONE_KEY, counting_in=fallback or "UTC", detail=line)
    return True


def reset_timezone_warning() -> None:
    """Forget that the warning was logged (tests, or a process that reloads its config)."""
    global _warned
    with _lock:
        _warned = False
