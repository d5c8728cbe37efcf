"""Working-day calendar for mainland China (public holidays and 调休 make-up working days).

Theory of operation: the calendar is data (``config/holidays_cn.toml``, one table per year
copied from the State Council's yearly notice); this module only answers questions about it.
A day is a working day when it is a declared make-up working day, or a Monday-Friday that is
not inside a holiday block. Dates in years the file does not cover raise
``CalendarRangeError``: a deadline computed from a guess is worse than no deadline.

Counting follows the Civil Code's rule for periods: the starting day is not counted, and the
period ends at 24:00 of its last day. So "refund within 5 working days" of day D ends at the
end of ``add_working_days(D, 5)``, and ``working_days_between(D, that_day) == 5``.

Used by the shell layers and staff tools to turn such rules into ``deadline_ns`` values that
enter the ledger inside commands. The engine never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import msgspec

__all__ = [
    "DEFAULT_HOLIDAYS_PATH",
    "CalendarDataError",
    "CalendarRangeError",
    "WorkCalendar",
    "china_date_of_ns",
    "china_day_start_ns",
]

DEFAULT_HOLIDAYS_PATH = Path(__file__).with_name("holidays_cn.toml")

_NS_PER_DAY = 86_400 * 1_000_000_000
# Mainland China keeps UTC+8 all year (no daylight saving since 1991).
_CHINA_UTC_OFFSET_NS = 8 * 3_600 * 1_000_000_000
_EPOCH = date(1970, 1, 1)
_SATURDAY = 5


class CalendarRangeError(LookupError):
    """A date in a year the holiday file does not cover."""


class CalendarDataError(ValueError):
    """The holiday file is unreadable or contradicts itself."""


class _Year(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    notice: str
    status: Literal["official", "provisional"]
    holidays: list[date]
    makeup_workdays: list[date]


class _HolidayFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str
    years: dict[int, _Year]


class WorkCalendar:
    """Immutable answers to "is this a working day" for the years in the data."""

    __slots__ = ("_holidays", "_makeup_workdays", "_years")

    def __init__(
        self, years: Iterable[int], holidays: Iterable[date], makeup_workdays: Iterable[date]
    ) -> None:
        self._years = frozenset(years)
        self._holidays = frozenset(holidays)
        self._makeup_workdays = frozenset(makeup_workdays)

    @classmethod
    def load(cls, path: str | Path | None = None) -> WorkCalendar:
        """Read and check a holiday file (default: the packaged ``holidays_cn.toml``)."""
        source = Path(path) if path is not None else DEFAULT_HOLIDAYS_PATH
        try:
            data = msgspec.toml.decode(source.read_bytes(), type=_HolidayFile, strict=True)
        except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
            raise CalendarDataError(f"{source}: {exc}") from None
        for year, entry in data.years.items():
            _check_year(source, year, entry)
        return cls(
            years=data.years,
            holidays=(d for entry in data.years.values() for d in entry.holidays),
            makeup_workdays=(d for entry in data.years.values() for d in entry.makeup_workdays),
        )

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(sorted(self._years))

    def is_working_day(self, day: date) -> bool:
        _require_date(day)
        if day.year not in self._years:
            raise CalendarRangeError(f"{day} is outside the calendar's years {self.years}")
        if day in self._makeup_workdays:
            return True
        return day.weekday() < _SATURDAY and day not in self._holidays

    def add_working_days(self, day: date, n: int) -> date:
        """The n-th working day after ``day`` (before it when n < 0); ``day`` itself is
        not counted. n == 0 returns ``day`` unchanged."""
        _require_date(day)
        step = timedelta(days=1 if n >= 0 else -1)
        remaining = abs(n)
        current = day
        while remaining:
            current += step
            if self.is_working_day(current):
                remaining -= 1
        return current

    def working_days_between(self, a: date, b: date) -> int:
        """Working days in (a, b]; negative when b is before a."""
        _require_date(a)
        _require_date(b)
        if b < a:
            return -self.working_days_between(b, a)
        count = 0
        current = a
        while current < b:
            current += timedelta(days=1)
            count += self.is_working_day(current)
        return count

    def deadline_ns(self, start_ns: int, working_days: int) -> int:
        """Exclusive deadline of "within N working days" of an instant: 24:00 China time
        at the end of the N-th working day after the (China) day of ``start_ns``."""
        if working_days < 0:
            raise ValueError("working_days must be >= 0")
        last_day = self.add_working_days(china_date_of_ns(start_ns), working_days)
        return china_day_start_ns(last_day + timedelta(days=1))


def china_date_of_ns(ts_ns: int) -> date:
    """The calendar date in China (UTC+8) of a Unix-epoch nanosecond timestamp."""
    return _EPOCH + timedelta(days=(ts_ns + _CHINA_UTC_OFFSET_NS) // _NS_PER_DAY)


def china_day_start_ns(day: date) -> int:
    """Unix-epoch nanoseconds of 00:00 China time (UTC+8) on ``day``."""
    _require_date(day)
    return (day - _EPOCH).days * _NS_PER_DAY - _CHINA_UTC_OFFSET_NS


def _require_date(day: object) -> None:
    # datetime is a date subclass but never equals one: set lookups would silently miss.
    if not isinstance(day, date) or isinstance(day, datetime):
        raise TypeError(f"expected a datetime.date, got {type(day).__name__}")


def _check_year(source: Path, year: int, entry: _Year) -> None:
    def fail(why: str) -> None:
        raise CalendarDataError(f"{source}: years.{year}: {why}")

    for name, days in (("holidays", entry.holidays), ("makeup_workdays", entry.makeup_workdays)):
        if len(set(days)) != len(days):
            fail(f"{name} lists a date twice")
        stray = [d for d in days if d.year != year]
        if stray:
            fail(f"{name} has dates outside {year}: {stray}")
    weekdays = [d for d in entry.makeup_workdays if d.weekday() < _SATURDAY]
    if weekdays:
        fail(f"make-up working days must be Saturdays or Sundays: {weekdays}")
    both = set(entry.holidays) & set(entry.makeup_workdays)
    if both:
        fail(f"dates are both holiday and make-up working day: {sorted(both)}")
