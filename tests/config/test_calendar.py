"""config.calendar: mainland China working days, 调休 included."""

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from config.calendar import (
    CalendarDataError,
    CalendarRangeError,
    WorkCalendar,
    china_date_of_ns,
    china_day_start_ns,
)


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return WorkCalendar.load()


def test_covers_2024_to_2026(cal: WorkCalendar) -> None:
    assert cal.years == (2024, 2025, 2026)


@pytest.mark.parametrize(
    "day",
    [
        date(2025, 10, 1),  # National Day
        date(2025, 10, 8),  # the 8-day National Day + Mid-Autumn block
        date(2025, 1, 28),  # 除夕, statutory from 2025
        date(2025, 5, 5),  # Monday inside Labour Day
        date(2024, 2, 16),
        date(2026, 2, 23),  # last day of the 9-day 2026 Spring Festival
        date(2026, 1, 2),
    ],
)
def test_holidays_are_not_working_days(cal: WorkCalendar, day: date) -> None:
    assert not cal.is_working_day(day)


@pytest.mark.parametrize(
    "day",
    [
        date(2025, 9, 28),  # Sunday, make-up for National Day
        date(2025, 1, 26),  # Sunday, make-up for Spring Festival
        date(2025, 2, 8),  # Saturday
        date(2024, 5, 11),  # Saturday
        date(2026, 1, 4),  # Sunday
        date(2026, 2, 28),  # Saturday
    ],
)
def test_makeup_days_are_working_days(cal: WorkCalendar, day: date) -> None:
    assert day.weekday() >= 5
    assert cal.is_working_day(day)


def test_plain_weekdays_and_weekends(cal: WorkCalendar) -> None:
    assert cal.is_working_day(date(2025, 3, 12))  # Wednesday
    assert not cal.is_working_day(date(2025, 3, 15))  # Saturday
    assert not cal.is_working_day(date(2025, 3, 16))  # Sunday
    assert cal.is_working_day(date(2024, 2, 9))  # 除夕 2024 was not yet a holiday


def test_weekends_skipped(cal: WorkCalendar) -> None:
    assert cal.add_working_days(date(2025, 3, 14), 1) == date(2025, 3, 17)  # Fri -> Mon
    assert cal.add_working_days(date(2025, 3, 14), 5) == date(2025, 3, 21)
    assert cal.working_days_between(date(2025, 3, 14), date(2025, 3, 21)) == 5


def test_add_working_days_across_national_day_2025(cal: WorkCalendar) -> None:
    # Tue 30 Sep; Oct 1-8 off; Thu 9, Fri 10, Sat 11 (make-up) work; Mon 13 ...
    start = date(2025, 9, 30)
    assert cal.add_working_days(start, 1) == date(2025, 10, 9)
    assert cal.add_working_days(start, 3) == date(2025, 10, 11)
    assert cal.add_working_days(start, 4) == date(2025, 10, 13)
    # Fri 26 Sep -> Sun 28 (make-up), Mon 29, Tue 30, then after the holiday.
    assert cal.add_working_days(date(2025, 9, 26), 4) == date(2025, 10, 9)
    # "results within 10 working days" of Thu 25 Sep 2025: 26, 28, 29, 30, 9, 10, 11, 13, 14, 15.
    assert cal.add_working_days(date(2025, 9, 25), 10) == date(2025, 10, 15)


def test_add_and_between_are_inverse(cal: WorkCalendar) -> None:
    start = date(2025, 9, 19)  # a Friday, so stepping back lands on it again
    for n in range(0, 40):
        end = cal.add_working_days(start, n)
        assert cal.working_days_between(start, end) == n
        assert cal.add_working_days(end, -n) == start
    assert cal.working_days_between(date(2025, 10, 15), date(2025, 9, 25)) == -10


def test_zero_days_is_identity(cal: WorkCalendar) -> None:
    assert cal.add_working_days(date(2025, 10, 3), 0) == date(2025, 10, 3)


def test_outside_covered_years_raises(cal: WorkCalendar) -> None:
    with pytest.raises(CalendarRangeError):
        cal.is_working_day(date(2023, 12, 29))
    with pytest.raises(CalendarRangeError):
        cal.add_working_days(date(2026, 12, 28), 10)


def test_datetime_is_refused(cal: WorkCalendar) -> None:
    with pytest.raises(TypeError):
        cal.is_working_day(datetime(2025, 10, 1, 12, 0))


def test_deadline_ns_ends_at_china_midnight(cal: WorkCalendar) -> None:
    # 2025-09-30 23:30 in Beijing is 15:30 UTC; 1 working day later is Oct 9, so the
    # deadline is 2025-10-10 00:00 Beijing = 2025-10-09 16:00 UTC.
    start_ns = china_day_start_ns(date(2025, 9, 30)) + (23 * 60 + 30) * 60 * 10**9
    assert start_ns == 1_759_246_200 * 10**9  # 2025-09-30T15:30:00Z
    assert china_date_of_ns(start_ns) == date(2025, 9, 30)
    deadline = cal.deadline_ns(start_ns, 1)
    assert deadline == china_day_start_ns(date(2025, 10, 10))
    assert china_date_of_ns(deadline - 1) == date(2025, 10, 9)
    assert china_day_start_ns(date(1970, 1, 2)) == (24 - 8) * 3600 * 10**9


def test_each_year_gives_exactly_the_statutory_days_off(cal: WorkCalendar) -> None:
    # Make-up days only move days off around: Mon-Fri count minus working-day count must
    # equal the statutory public holidays (11 days; 13 from 2025, when 除夕 and May 2 were
    # added). Catches a typo'd date in the data file. (A 元旦 block whose make-up day falls
    # in the previous December, as in 2019, would need an allowance here.)
    for year in cal.years:
        day, weekdays, working = date(year, 1, 1), 0, 0
        while day.year == year:
            weekdays += day.weekday() < 5
            working += cal.is_working_day(day)
            day += timedelta(days=1)
        assert weekdays - working == (11 if year < 2025 else 13), year


def test_contradictory_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "h.toml"
    bad.write_text(
        'region = "CN"\n[years.2025]\nnotice = "x"\nstatus = "official"\n'
        "holidays = [2025-10-01]\nmakeup_workdays = [2025-10-09]\n",  # a Thursday
        encoding="utf-8",
    )
    with pytest.raises(CalendarDataError, match="Saturdays or Sundays"):
        WorkCalendar.load(bad)


def test_wrong_type_in_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "h.toml"
    bad.write_text(
        'region = "CN"\n[years.2025]\nnotice = "x"\nstatus = "official"\n'
        'holidays = ["2025-10-01"]\nmakeup_workdays = []\n',
        encoding="utf-8",
    )
    with pytest.raises(CalendarDataError, match="holidays"):
        WorkCalendar.load(bad)
