"""Business-day arithmetic of fhirbridge.rules.calendar, on fixed dates only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from fhirbridge.errors import ConfigError
from fhirbridge.rules import BusinessCalendar
from fhirbridge.rules.calendar import parse_weekdays

FRIDAY = date(2026, 3, 6)
MEMORIAL_DAY = date(2026, 5, 25)  # a Monday


def test_fixed_dates_are_the_weekdays_the_tests_assume() -> None:
    """The anchor dates fall on the weekdays the other tests rely on."""
    assert FRIDAY.weekday() == 4
    assert MEMORIAL_DAY.weekday() == 0


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (FRIDAY, 1, date(2026, 3, 9)),  # Friday + 1 -> Monday
        (FRIDAY, 2, date(2026, 3, 10)),  # Friday + 2 -> Tuesday (TCM contact deadline)
        (date(2026, 3, 4), 2, date(2026, 3, 6)),  # Wednesday + 2 -> Friday
        (date(2026, 3, 7), 1, date(2026, 3, 9)),  # Saturday + 1 -> Monday
        (date(2026, 3, 8), 1, date(2026, 3, 9)),  # Sunday + 1 -> Monday
        (FRIDAY, 5, date(2026, 3, 13)),  # a whole working week
        (FRIDAY, 10, date(2026, 3, 20)),  # two weeks
        (date(2026, 3, 9), -1, FRIDAY),  # Monday - 1 -> the Friday before
    ],
)
def test_add_business_days_skips_weekends(start: date, n: int, expected: date) -> None:
    """Weekend days never count, and the start day itself never counts."""
    assert BusinessCalendar().add_business_days(start, n) == expected


def test_add_business_days_skips_a_monday_holiday() -> None:
    """Friday + 1 before a Monday holiday is Tuesday; + 2 is Wednesday."""
    calendar = BusinessCalendar(holidays=frozenset({MEMORIAL_DAY}))
    friday = date(2026, 5, 22)
    assert calendar.add_business_days(friday, 1) == date(2026, 5, 26)
    assert calendar.add_business_days(friday, 2) == date(2026, 5, 27)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (date(2026, 3, 4), date(2026, 3, 4)),  # Wednesday is a business day: itself
        (date(2026, 3, 7), date(2026, 3, 9)),  # Saturday -> Monday
        (date(2026, 5, 24), date(2026, 5, 26)),  # Sunday before a Monday holiday -> Tuesday
    ],
)
def test_zero_business_days_is_start_or_next_business_day(start: date, expected: date) -> None:
    """n = 0 gives the start when it is a business day, else the next business day."""
    calendar = BusinessCalendar(holidays=frozenset({MEMORIAL_DAY}))
    assert calendar.add_business_days(start, 0) == expected


def test_add_days_counts_calendar_days() -> None:
    """add_days ignores weekends and holidays (TCM visit windows are calendar days)."""
    calendar = BusinessCalendar(holidays=frozenset({date(2026, 3, 9)}))
    assert calendar.add_days(FRIDAY, 14) == date(2026, 3, 20)
    assert calendar.add_days(FRIDAY, 3) == date(2026, 3, 9)


def test_custom_weekend() -> None:
    """A Friday-Saturday weekend makes Thursday + 1 a Sunday."""
    calendar = BusinessCalendar(weekend=frozenset({4, 5}))
    assert calendar.add_business_days(date(2026, 3, 5), 1) == date(2026, 3, 8)
    assert not calendar.is_business_day(FRIDAY)
    assert calendar.is_business_day(date(2026, 3, 8))


def test_is_business_day() -> None:
    """Weekdays are business days unless they are holidays."""
    calendar = BusinessCalendar(holidays=frozenset({MEMORIAL_DAY}))
    assert calendar.is_business_day(FRIDAY)
    assert not calendar.is_business_day(date(2026, 3, 7))
    assert not calendar.is_business_day(MEMORIAL_DAY)


@pytest.mark.parametrize(
    ("instant", "tz", "expected"),
    [
        # 23:30 UTC Friday is 18:30 Friday in New York (EST, UTC-5).
        (datetime(2026, 3, 6, 23, 30, tzinfo=UTC), "America/New_York", FRIDAY),
        # 03:30 UTC Friday is still Thursday evening in New York.
        (datetime(2026, 3, 6, 3, 30, tzinfo=UTC), "America/New_York", date(2026, 3, 5)),
        # 12:30 UTC Friday is already Saturday in Auckland (NZDT, UTC+13).
        (datetime(2026, 3, 6, 12, 30, tzinfo=UTC), "Pacific/Auckland", date(2026, 3, 7)),
        # An offset instant is converted, not read literally.
        (
            datetime(2026, 3, 6, 23, 30, tzinfo=timezone(timedelta(hours=-8))),
            "UTC",
            date(2026, 3, 7),
        ),
        # A naive datetime is taken as UTC.
        (datetime(2026, 3, 6, 3, 30), "America/New_York", date(2026, 3, 5)),
    ],
)
def test_local_date_uses_the_calendar_time_zone(instant: datetime, tz: str, expected: date) -> None:
    """The local date of an instant depends on the calendar's zone."""
    assert BusinessCalendar(tz=tz).local_date(instant) == expected


def test_time_zone_moves_the_deadline() -> None:
    """A Thursday-evening New York discharge (Friday in UTC) is due Monday, not Tuesday."""
    discharge = datetime(2026, 3, 6, 3, 30, tzinfo=UTC)
    new_york = BusinessCalendar(tz="America/New_York")
    utc = BusinessCalendar()
    assert new_york.add_business_days(new_york.local_date(discharge), 2) == date(2026, 3, 9)
    assert utc.add_business_days(utc.local_date(discharge), 2) == date(2026, 3, 10)


def test_bad_calendars_are_config_errors() -> None:
    """An unknown zone or a week without business days is refused up front."""
    with pytest.raises(ConfigError, match="Mars/Base"):
        BusinessCalendar(tz="Mars/Base")
    with pytest.raises(ConfigError, match="whole week"):
        BusinessCalendar(weekend=frozenset(range(7)))
    with pytest.raises(ConfigError, match="0-6"):
        BusinessCalendar(weekend=frozenset({7}))


def test_calendar_is_a_hashable_value() -> None:
    """Calendars compare by value and accept any iterable of days."""
    one = BusinessCalendar(holidays=frozenset({MEMORIAL_DAY}))
    two = BusinessCalendar(holidays={MEMORIAL_DAY})  # type: ignore[arg-type]
    assert one == two
    assert hash(one) == hash(two)


def test_parse_weekdays() -> None:
    """Day names in any case, long or short, and numbers 0-6 are accepted."""
    assert parse_weekdays(["sat", "Sunday", 0]) == frozenset({5, 6, 0})
    with pytest.raises(ValueError, match="funday"):
        parse_weekdays(["funday"])
    with pytest.raises(ValueError, match="7"):
        parse_weekdays([7])
