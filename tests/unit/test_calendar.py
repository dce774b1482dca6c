"""Working days and the promises counted in them (R2, P1, X2), on the real holiday table."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.holidays import china_working_day
from chalicelib.domain.calendar import WorkingCalendar, end_of_day
from chalicelib.domain.days import SHANGHAI

CHINA = WorkingCalendar(china_working_day)


def shanghai(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def test_a_review_submitted_before_national_day_is_due_after_it_R2() -> None:
    # GIVEN a submission on Wed 30 Sep 2026; 1-7 Oct are off, Sat 10 Oct is worked
    due = CHINA.review_due(shanghai("2026-09-30T15:00:00"))
    # THEN the 3rd working day after it is the adjusted Saturday
    assert due == shanghai("2026-10-10T23:59:59")


def test_an_adjusted_working_weekend_counts_and_an_ordinary_sunday_does_not() -> None:
    assert CHINA.is_working_day(date(2026, 10, 10))  # Saturday, worked for National Day
    assert not CHINA.is_working_day(date(2026, 10, 11))
    assert CHINA.working_days_after(date(2026, 10, 9), 1) == date(2026, 10, 10)
    assert CHINA.working_days_after(date(2026, 10, 10), 1) == date(2026, 10, 12)


def test_past_the_tables_years_monday_to_friday_counts() -> None:
    # GIVEN Wed 30 Dec 2026; the table stops at 2026
    assert china_working_day(date(2027, 1, 4)) is None
    # THEN Thu 31 Dec (known), then Fri 1 Jan and Mon 4 Jan 2027 by the weekday fallback
    assert CHINA.review_due(shanghai("2026-12-30T10:00:00")) == shanghai("2027-01-04T23:59:59")


def test_configured_overrides_win_over_the_table() -> None:
    calendar = WorkingCalendar(
        china_working_day,
        holidays=frozenset({date(2027, 1, 1)}),
        working_days=frozenset({date(2026, 10, 11)}),
    )
    assert not calendar.is_working_day(date(2027, 1, 1))
    assert calendar.is_working_day(date(2026, 10, 11))


def test_the_day_of_submission_is_the_shanghai_day_not_the_utc_one() -> None:
    # 16:30 UTC on Thursday 19 Nov is 00:30 on Friday 20 Nov in Shanghai
    late = datetime(2026, 11, 19, 16, 30, tzinfo=UTC)
    early = datetime(2026, 11, 19, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on the 19th
    assert CHINA.review_due(late) == shanghai("2026-11-25T23:59:59")  # Mon 23, Tue 24, Wed 25
    assert CHINA.review_due(early) == shanghai("2026-11-24T23:59:59")


def test_a_payout_is_due_after_five_working_days_and_level_two_a_working_day_later_X2() -> None:
    due = CHINA.payout_due(shanghai("2026-11-20T09:00:00"))  # a Friday
    assert due == shanghai("2026-11-27T23:59:59")
    assert CHINA.second_level_at(due) == shanghai("2026-11-30T23:59:59")  # over the weekend


@given(
    start=st.datetimes(
        min_value=datetime(2004, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    )
)
def test_a_review_is_due_at_the_end_of_a_working_day_three_working_days_on(start: datetime) -> None:
    due = CHINA.review_due(start)
    assert due.astimezone(SHANGHAI).time().isoformat() == "23:59:59"
    assert CHINA.is_working_day(due.astimezone(SHANGHAI).date())
    day = start.astimezone(SHANGHAI).date()
    between = [day + timedelta(days=n) for n in range(1, (due.date() - day).days + 1)]
    assert sum(CHINA.is_working_day(d) for d in between) == 3
    assert due > start


@pytest.mark.parametrize("day", [date(2026, 2, 17), date(2026, 5, 1)])
def test_the_spring_festival_and_labour_day_are_days_off(day: date) -> None:
    assert not CHINA.is_working_day(day)
    assert end_of_day(day).utcoffset() == timedelta(hours=8)
