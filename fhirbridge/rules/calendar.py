"""Business-day arithmetic in a facility's time zone.

"Within 2 business days" (TCM, CMS MLN908628) counts Monday to Friday without holidays,
"without respect to normal practice hours or date of notification of discharge": day 0 is the
*local* date of the discharge, day 1 the next business day, and so on. A
:class:`BusinessCalendar` holds the three things that arithmetic needs (the time zone that
decides what "the date" of an instant is, the weekend days, the holidays) and nothing else:
it never reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhirbridge.errors import ConfigError

__all__ = ["WEEKDAYS", "BusinessCalendar", "parse_weekdays"]

#: Day names (and common spellings) to ``date.weekday()`` numbers; Monday is 0.
WEEKDAYS: dict[str, int] = {
    "mon": 0,
    "tue": 1,
    "wed": 2,
    "thu": 3,
    "fri": 4,
    "sat": 5,
    "sun": 6,
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}


def parse_weekdays(values: Iterable[str | int]) -> frozenset[int]:
    """Turn day names (``sat``, ``Sunday``) or numbers 0-6 (Monday = 0) into weekday numbers.

    Raises ValueError naming the first value that is neither.
    """
    days: set[int] = set()
    for value in values:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a day of the week")
        if isinstance(value, int):
            if not 0 <= value <= 6:
                raise ValueError(f"{value!r} is not a day of the week (0 = Monday ... 6 = Sunday)")
            days.add(value)
            continue
        number = WEEKDAYS.get(str(value).strip().lower())
        if number is None:
            raise ValueError(f"{value!r} is not a day of the week (mon, tue, ... sun)")
        days.add(number)
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Weekend days and holidays in one time zone.

    ``weekend`` holds ``date.weekday()`` numbers (Monday = 0, Saturday = 5, Sunday = 6).
    Raises :class:`~fhirbridge.errors.ConfigError` for an unknown time zone or a week
    without any business day.
    """

    tz: str = "UTC"
    weekend: frozenset[int] = frozenset({5, 6})
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Accept any iterable from callers and keep the stored values hashable.
        object.__setattr__(self, "weekend", frozenset(self.weekend))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown time zone {self.tz!r} (use an IANA name)") from exc
        if any(not isinstance(d, int) or not 0 <= d <= 6 for d in self.weekend):
            raise ConfigError(f"weekend days must be 0-6 (Monday = 0), got {sorted(self.weekend)}")
        if len(self.weekend) >= 7:
            raise ConfigError("the weekend cannot cover the whole week")

    @property
    def zone(self) -> ZoneInfo:
        """The calendar's time zone."""
        return ZoneInfo(self.tz)

    def local_date(self, dt: datetime) -> date:
        """The calendar date of ``dt`` in this time zone (a naive ``dt`` is taken as UTC)."""
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(self.zone).date()

    def is_business_day(self, day: date) -> bool:
        """True unless ``day`` is a weekend day or a holiday."""
        return day.weekday() not in self.weekend and day not in self.holidays

    def add_days(self, start: date, n: int) -> date:
        """``n`` calendar days after ``start`` (before it when ``n`` is negative)."""
        return start + timedelta(days=n)

    def add_business_days(self, start: date, n: int) -> date:
        """The ``n``-th business day after ``start`` (before it when ``n`` is negative).

        ``start`` itself never counts: Friday + 1 is Monday, Saturday + 1 is Monday too.
        ``n == 0`` gives ``start`` when it is a business day, else the next business day.
        """
        if n == 0:
            day = start
            while not self.is_business_day(day):
                day += timedelta(days=1)
            return day
        step = timedelta(days=1 if n > 0 else -1)
        remaining = abs(n)
        day = start
        while remaining:
            day += step
            if self.is_business_day(day):
                remaining -= 1
        return day
