"""Triggers: crontab as vixie cron reads it (not as APScheduler does), DST in the entry's zone,
epoch-aligned intervals. Expected times in the tables are worked out by hand from the calendar;
the property tests compare against an independent wall-clock enumeration written here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.trigger import Trigger, TriggerError, fire_times, parse_cron, parse_every, parse_timezone

PROPERTY_SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def local(zone: str, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold)


SUNDAYS = [utc(2025, 1, 5), utc(2025, 1, 12)]  # 2025-01-01 is a Wednesday

NEXT_FIRES = [
    # Sunday is 0, 7 and sun; @weekly is Sunday 00:00 (periodiq 0.14 never fires these)
    pytest.param("0 0 * * 0", "UTC", utc(2025, 1, 1), SUNDAYS, id="sunday-as-0"),
    pytest.param("0 0 * * 7", "UTC", utc(2025, 1, 1), SUNDAYS, id="sunday-as-7"),
    pytest.param("0 0 * * sun", "UTC", utc(2025, 1, 1), SUNDAYS, id="sunday-as-sun"),
    pytest.param("0 0 * * SUN", "UTC", utc(2025, 1, 1), SUNDAYS, id="sunday-name-any-case"),
    pytest.param("@weekly", "UTC", utc(2025, 1, 1), SUNDAYS, id="weekly"),
    pytest.param("@WEEKLY", "UTC", utc(2025, 1, 1), SUNDAYS, id="macro-any-case"),
    # both day fields restricted: either matches (every 13th AND every Friday)
    pytest.param(
        "0 0 13 * 5",
        "UTC",
        utc(2025, 1, 1),
        [utc(2025, 1, 3), utc(2025, 1, 10), utc(2025, 1, 13), utc(2025, 1, 17), utc(2025, 1, 24)],
        id="dom-or-dow",
    ),
    pytest.param(
        "0 12 1 * mon",
        "UTC",
        utc(2025, 1, 28),
        [utc(2025, 2, 1, 12), utc(2025, 2, 3, 12), utc(2025, 2, 10, 12)],
        id="dom-or-dow-name",
    ),
    # a day field starting with * is unrestricted: then both must match (vixie's DOM_STAR)
    pytest.param(
        "0 0 */10 * mon", "UTC", utc(2025, 1, 1), [utc(2025, 3, 31), utc(2025, 4, 21)], id="dom-star-and"
    ),
    pytest.param(
        "0 0 13 * */7", "UTC", utc(2025, 1, 1), [utc(2025, 4, 13), utc(2025, 7, 13)], id="dow-star-and"
    ),
    # weekday names and ranges
    pytest.param(
        "0 9 * * mon-fri", "UTC", utc(2025, 1, 3, 10), [utc(2025, 1, 6, 9), utc(2025, 1, 7, 9)], id="mon-fri"
    ),
    pytest.param(
        "0 0 * * sat-sun",
        "UTC",
        utc(2025, 1, 1),
        [utc(2025, 1, 4), utc(2025, 1, 5), utc(2025, 1, 11)],
        id="sat-sun",
    ),
    pytest.param(
        "0 0 * * 5-7",
        "UTC",
        utc(2025, 1, 1),
        [utc(2025, 1, 3), utc(2025, 1, 4), utc(2025, 1, 5), utc(2025, 1, 10)],
        id="range-to-7",
    ),
    # steps, ranges with steps, lists
    pytest.param(
        "*/15 * * * *",
        "UTC",
        utc(2025, 1, 1, 10, 7, 30),
        [utc(2025, 1, 1, 10, 15), utc(2025, 1, 1, 10, 30), utc(2025, 1, 1, 10, 45), utc(2025, 1, 1, 11)],
        id="every-15-minutes",
    ),
    pytest.param(
        "1-10/3 * * * *",
        "UTC",
        utc(2025, 1, 1, 10),
        [utc(2025, 1, 1, 10, m) for m in (1, 4, 7, 10)] + [utc(2025, 1, 1, 11, 1)],
        id="range-with-step",
    ),
    pytest.param(
        "5/20 * * * *",
        "UTC",
        utc(2025, 1, 1, 10),
        [utc(2025, 1, 1, 10, 5), utc(2025, 1, 1, 10, 25), utc(2025, 1, 1, 10, 45), utc(2025, 1, 1, 11, 5)],
        id="start-with-step",
    ),
    pytest.param(
        "0 */6 * * *",
        "UTC",
        utc(2025, 1, 1, 7),
        [utc(2025, 1, 1, 12), utc(2025, 1, 1, 18), utc(2025, 1, 2)],
        id="hour-step",
    ),
    pytest.param(
        "0,30 9-17/4 * * *",
        "UTC",
        utc(2025, 1, 1, 12),
        [
            utc(2025, 1, 1, 13),
            utc(2025, 1, 1, 13, 30),
            utc(2025, 1, 1, 17),
            utc(2025, 1, 1, 17, 30),
            utc(2025, 1, 2, 9),
        ],
        id="list-and-hour-range-step",
    ),
    # macros; "after" is exclusive
    pytest.param(
        "@hourly", "UTC", utc(2025, 1, 1, 10), [utc(2025, 1, 1, 11), utc(2025, 1, 1, 12)], id="hourly"
    ),
    pytest.param("@daily", "UTC", utc(2025, 1, 1), [utc(2025, 1, 2), utc(2025, 1, 3)], id="daily"),
    pytest.param("@midnight", "UTC", utc(2025, 1, 1), [utc(2025, 1, 2), utc(2025, 1, 3)], id="midnight"),
    pytest.param("@monthly", "UTC", utc(2025, 1, 15), [utc(2025, 2, 1), utc(2025, 3, 1)], id="monthly"),
    pytest.param("@yearly", "UTC", utc(2025, 1, 1), [utc(2026, 1, 1), utc(2027, 1, 1)], id="yearly"),
    pytest.param("@annually", "UTC", utc(2025, 1, 1), [utc(2026, 1, 1), utc(2027, 1, 1)], id="annually"),
    # month names, leap days, the turn of the year
    pytest.param(
        "0 12 * jan,JUL *",
        "UTC",
        utc(2025, 2, 1),
        [utc(2025, 7, 1, 12), utc(2025, 7, 2, 12)],
        id="month-names",
    ),
    pytest.param(
        "0 12 1 jan-mar/2 *",
        "UTC",
        utc(2025, 1, 2),
        [utc(2025, 3, 1, 12), utc(2026, 1, 1, 12)],
        id="month-name-range-step",
    ),
    pytest.param("0 0 29 2 *", "UTC", utc(2025, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)], id="feb-29"),
    pytest.param("0 0 29 2 *", "UTC", utc(2096, 3, 1), [utc(2104, 2, 29)], id="feb-29-not-in-2100"),
    pytest.param(
        "59 23 31 12 *", "UTC", utc(2025, 12, 31, 23, 59), [utc(2026, 12, 31, 23, 59)], id="end-of-year"
    ),
    pytest.param("0 0 * * 0", "UTC", utc(1960, 1, 1), [utc(1960, 1, 3), utc(1960, 1, 10)], id="before-1970"),
    # per-entry time zones
    pytest.param(
        "0 3 * * *",
        "Europe/Berlin",
        utc(2025, 1, 6),
        [utc(2025, 1, 6, 2), utc(2025, 1, 7, 2)],
        id="berlin-winter",
    ),
    pytest.param("0 3 * * *", "Europe/Berlin", utc(2025, 7, 1), [utc(2025, 7, 1, 1)], id="berlin-summer"),
    pytest.param(
        "30 1 * * *", "America/New_York", utc(2025, 1, 6, 12), [utc(2025, 1, 7, 6, 30)], id="new-york"
    ),
    pytest.param(
        "0 9 * * 1-5", "Asia/Kolkata", utc(2025, 1, 3, 4), [utc(2025, 1, 6, 3, 30)], id="kolkata-weekdays"
    ),
    pytest.param(
        "*/30 * * * *",
        "Asia/Kathmandu",
        utc(2025, 1, 1),
        [utc(2025, 1, 1, 0, 15), utc(2025, 1, 1, 0, 45)],
        id="kathmandu-quarter-offset",
    ),
    pytest.param(
        "0 12 25 12 *", "Australia/Sydney", utc(2025, 1, 1), [utc(2025, 12, 25, 1)], id="sydney-summer"
    ),
    pytest.param(
        "0 * * * *", "UTC", local("Asia/Tokyo", 2025, 1, 1, 9), [utc(2025, 1, 1, 1)], id="after-in-any-zone"
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after", "expected"), NEXT_FIRES)
def test_next_fires(expression: str, zone: str, after: datetime, expected: list[datetime]) -> None:
    # Given an entry  When asking for its next fires  Then they are the crontab ones, in UTC
    fires = fire_times(parse_cron(expression, zone), after, len(expected))
    assert fires == expected
    assert all(fire.tzinfo is UTC for fire in fires)


# -- daylight saving time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expression", "day", "first_occurrence"),
    [
        ("America/New_York", "30 1 * * *", date(2025, 11, 2), utc(2025, 11, 2, 5, 30)),  # 01:30 EDT
        ("Europe/Berlin", "30 2 * * *", date(2025, 10, 26), utc(2025, 10, 26, 0, 30)),  # 02:30 CEST
        ("Europe/Berlin", "30 1 * * *", date(2025, 10, 26), utc(2025, 10, 25, 23, 30)),  # not repeated
    ],
)
def test_autumn_fixed_time_fires_once_at_first_occurrence(
    zone: str, expression: str, day: date, first_occurrence: datetime
) -> None:
    # Given a daily entry whose wall time may happen twice on the change day
    trigger = parse_cron(expression, zone)
    # When listing the fires from the day before
    before = day - timedelta(days=1)
    fires = fire_times(trigger, local(zone, before.year, before.month, before.day), 3)
    # Then it fires once a day, on the change day at the first occurrence, then 25 h later
    assert [fire.astimezone(ZoneInfo(zone)).date() for fire in fires] == [
        before,
        day,
        day + timedelta(days=1),
    ]
    assert fires[1] == first_occurrence
    assert fires[2] - fires[1] == timedelta(hours=25)
    # And from 45 minutes on (inside the repeated hour) the next fire is the next day's
    assert trigger.next_fire(first_occurrence + timedelta(minutes=45)) == fires[2]


@pytest.mark.parametrize(
    ("zone", "day", "shifted"),
    [
        ("America/New_York", date(2025, 3, 9), utc(2025, 3, 9, 7, 30)),  # 03:30 EDT
        ("Europe/Berlin", date(2025, 3, 30), utc(2025, 3, 30, 1, 30)),  # 03:30 CEST
    ],
)
def test_spring_nonexistent_time_fires_once_shifted_by_the_gap(
    zone: str, day: date, shifted: datetime
) -> None:
    # Given a daily 02:30 entry and a change day on which 02:30 does not exist
    trigger = parse_cron("30 2 * * *", zone)
    # When listing the fires from the day before
    before = day - timedelta(days=1)
    fires = fire_times(trigger, local(zone, before.year, before.month, before.day), 3)
    # Then it fires once that day, at 03:30 local
    assert fires[1] == shifted
    assert shifted.astimezone(ZoneInfo(zone)).time() == time(3, 30)
    assert [fire.astimezone(ZoneInfo(zone)).date() for fire in fires] == [
        before,
        day,
        day + timedelta(days=1),
    ]


def test_spring_shifted_time_that_lands_on_a_real_one_fires_once() -> None:
    # Given 02:00, 02:30, 03:00, 03:30 daily; on the change day 02:xx is shifted onto 03:xx
    trigger = parse_cron("0,30 2,3 * * *", "America/New_York")
    # Then each real instant fires once: 03:00 and 03:30 EDT, then the next day's 02:00
    assert fire_times(trigger, utc(2025, 3, 9, 5), 3) == [
        utc(2025, 3, 9, 7),
        utc(2025, 3, 9, 7, 30),
        utc(2025, 3, 10, 6),
    ]


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("America/New_York", utc(2025, 3, 9, 7)),  # 02:00 EST -> 03:00 EDT
        ("America/New_York", utc(2025, 11, 2, 6)),  # 02:00 EDT -> 01:00 EST
        ("Europe/Berlin", utc(2025, 3, 30, 1)),  # 02:00 CET -> 03:00 CEST
        ("Europe/Berlin", utc(2025, 10, 26, 1)),  # 03:00 CEST -> 02:00 CET
    ],
)
def test_wildcard_hour_fires_at_every_real_half_hour(zone: str, change: datetime) -> None:
    # Given */30 with a wildcard hour  When listing 6 real hours of fires across the change
    fires = fire_times(parse_cron("*/30 * * * *", zone), change - timedelta(hours=3), 12)
    # Then they are exactly 30 real minutes apart, from 2.5 h before the change to 3 h after
    assert fires == [change - timedelta(hours=2, minutes=30) + k * timedelta(minutes=30) for k in range(12)]
    # And in autumn the repeated hour is walked twice, in spring the missing hour not at all
    walls = [fire.astimezone(ZoneInfo(zone)).strftime("%H:%M") for fire in fires]
    repeated = "01" if zone == "America/New_York" else "02"
    if change.month > 6:
        assert walls.count(f"{repeated}:00") == walls.count(f"{repeated}:30") == 2
    else:
        assert not [wall for wall in walls if wall.startswith("02:")]


def test_hourly_fires_in_both_passes_of_the_repeated_hour() -> None:
    fires = fire_times(parse_cron("0 * * * *", "America/New_York"), utc(2025, 11, 2, 4, 30), 3)
    assert fires == [
        utc(2025, 11, 2, 5),
        utc(2025, 11, 2, 6),
        utc(2025, 11, 2, 7),
    ]  # 01:00 EDT, 01:00 EST, 02:00


def test_inside_the_first_pass_a_later_wall_time_can_come_first() -> None:
    # 01:40 EDT: the next fire is 01:45 EDT, before the repeated 01:00 (EST)
    fires = fire_times(parse_cron("0,45 * * * *", "America/New_York"), utc(2025, 11, 2, 5, 40), 4)
    expected = [utc(2025, 11, 2, 5, 45), utc(2025, 11, 2, 6), utc(2025, 11, 2, 6, 45), utc(2025, 11, 2, 7)]
    assert fires == expected


def test_fixed_hour_with_minute_steps_shifts_the_missing_hour() -> None:
    fires = fire_times(parse_cron("*/20 2 * * *", "America/New_York"), utc(2025, 3, 9, 5), 4)
    assert fires == [utc(2025, 3, 9, 7), utc(2025, 3, 9, 7, 20), utc(2025, 3, 9, 7, 40), utc(2025, 3, 10, 6)]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "message"),
    [
        ("0 0 * * 8", "UTC", "day-of-week field '8': value out of range 0-7"),
        ("0 0 * * 1,8", "UTC", "day-of-week field '1,8': value '8' out of range 0-7"),
        ("0 0 * * funday", "UTC", "day-of-week field 'funday': value is not a number 0-7 or a name sun..sat"),
        ("60 * * * *", "UTC", "minute field '60': value out of range 0-59"),
        ("x * * * *", "UTC", "minute field 'x': value is not a number 0-59"),
        ("-1 * * * *", "UTC", "minute field '-1'"),
        ("0 24 * * *", "UTC", "hour field '24': value out of range 0-23"),
        ("0 0 0 * *", "UTC", "day-of-month field '0': value out of range 1-31"),
        ("0 0 32 * *", "UTC", "day-of-month field '32': value out of range 1-31"),
        ("0 0 L * *", "UTC", "day-of-month field 'L'"),
        ("0 0 ? * *", "UTC", "day-of-month field '?'"),
        ("0 0 * 13 *", "UTC", "month field '13': value out of range 1-12"),
        ("0 0 * 0 *", "UTC", "month field '0': value out of range 1-12"),
        ("0 0 * foo *", "UTC", "month field 'foo': value is not a number 1-12 or a name jan..dec"),
        ("*/0 * * * *", "UTC", "minute field '*/0': step '0' must be a whole number of at least 1"),
        ("*/x * * * *", "UTC", "minute field '*/x': step 'x'"),
        ("5-1 * * * *", "UTC", "minute field '5-1': range '5-1' runs backwards"),
        ("0 0 * * fri-mon", "UTC", "day-of-week field 'fri-mon': range 'fri-mon' runs backwards"),
        ("1,,2 * * * *", "UTC", "minute field '1,,2': empty list element"),
        ("* * * *", "UTC", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("* * * * * *", "UTC", "expected 5 fields"),
        ("", "UTC", "got 0"),
        ("@reboot", "UTC", "cron expression '@reboot': unknown macro"),
        ("0 0 30 2 *", "UTC", "day-of-month '30' never occurs in month '2'"),
        ("0 0 31 apr,jun *", "UTC", "never occurs"),
        ("0 3 * * *", "Mars/Base", "unknown timezone 'Mars/Base'"),
        ("0 3 * * *", "utc", "unknown timezone 'utc' (did you mean 'UTC'?)"),
        ("0 3 * * *", "", "unknown timezone ''"),
        ("0 3 * * *", "Europe/Berlin\n", "unknown timezone 'Europe/Berlin\\n'"),
        ("0 3 * * *", "../etc/passwd", "unknown timezone"),
    ],
)
def test_bad_expressions_and_zones_are_one_line_errors(expression: str, zone: str, message: str) -> None:
    with pytest.raises(TriggerError) as caught:
        parse_cron(expression, zone)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parse_timezone() -> None:
    assert parse_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(TriggerError, match="unknown timezone 'Europe/Berlln'"):
        parse_timezone("Europe/Berlln")


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_cron("* * * * *").next_fire(datetime(2025, 1, 1))


# -- describe, equality, interval hint, fire_times ----------------------------------------------


def test_describe_and_equality() -> None:
    assert parse_cron("0 3 * * *", "Europe/Berlin").describe() == "cron 0 3 * * * (Europe/Berlin)"
    assert parse_cron(" @weekly ").describe() == "cron @weekly (UTC)"
    assert parse_every("15m").describe() == "every 15m"
    assert parse_every("90").describe() == "every 90s"
    assert (
        parse_cron("0 3 * * *", "UTC")
        == parse_cron("0  3 * * *", "UTC")
        != parse_cron("0 3 * * *", "Asia/Tokyo")
    )
    assert isinstance(parse_cron("0 3 * * *"), Trigger) and isinstance(parse_every("1h"), Trigger)


def test_interval_hint() -> None:
    assert parse_cron("*/15 * * * *").interval_hint == 900
    assert parse_cron("@daily", "UTC").interval_hint == 86400
    assert parse_cron("@daily", "America/New_York").interval_hint in (23 * 3600, 24 * 3600, 25 * 3600)
    assert parse_every("30s").interval_hint == 30


def test_fire_times_counts() -> None:
    trigger = parse_cron("@hourly")
    assert fire_times(trigger, utc(2025, 1, 1), 0) == []
    assert len(fire_times(trigger, utc(2025, 1, 1), 48)) == 48
    assert fire_times(trigger, datetime.max.replace(tzinfo=UTC) - timedelta(minutes=90), 5) == [
        utc(9999, 12, 31, 23)
    ]


# -- every ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("15m", utc(2025, 1, 1, 10, 7, 30), utc(2025, 1, 1, 10, 15)),
        ("15m", utc(2025, 1, 1, 10, 15), utc(2025, 1, 1, 10, 30)),  # strictly after
        ("15m", local("Asia/Kolkata", 2025, 1, 1, 15, 40), utc(2025, 1, 1, 10, 15)),  # 10:10 UTC
        ("30s", utc(2025, 1, 1, 10, 0, 0, 1), utc(2025, 1, 1, 10, 0, 30)),
        ("1h", utc(2025, 1, 1, 10, 59, 59), utc(2025, 1, 1, 11)),
        ("7m", utc(2025, 1, 1), utc(2025, 1, 1, 0, 5)),  # slots count from the epoch, not the hour
        ("2d", utc(2025, 1, 1), utc(2025, 1, 2)),  # 2025-01-01 is day 20089 since the epoch (odd)
        ("90", utc(2025, 1, 1), utc(2025, 1, 1, 0, 1, 30)),
    ],
)
def test_every_fires_on_epoch_aligned_slots(text: str, after: datetime, expected: datetime) -> None:
    assert parse_every(text).next_fire(after) == expected


@given(
    seconds=st.integers(1, 30 * 86400),
    after=st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
)
@PROPERTY_SETTINGS
def test_every_slots_are_aligned_to_the_epoch(seconds: int, after: datetime) -> None:
    # Given any interval  When two replicas ask at different times
    trigger, replica = parse_every(f"{seconds}s"), parse_every(str(seconds))
    fire = trigger.next_fire(after)
    # Then the slot is a whole number of intervals after the epoch, in (after, after + interval]
    assert fire is not None and fire.tzinfo is UTC
    assert int(fire.timestamp()) % seconds == 0 and fire.microsecond == 0
    assert after < fire <= after + timedelta(seconds=seconds)
    assert replica.next_fire(after - timedelta(seconds=seconds / 3)) in (
        fire,
        fire - timedelta(seconds=seconds),
    )


@pytest.mark.parametrize(
    "text", ["0", "0s", "0m", 0, 0.0, "0.0000001s", "garbage", "-5m", "", "15 minutes", True]
)
def test_every_rejects_zero_and_garbage(text: str | float) -> None:
    with pytest.raises(TriggerError) as caught:
        parse_every(text)
    assert "\n" not in str(caught.value)


# -- properties: an independent wall-clock enumeration ------------------------------------------

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight (00:00 -> 01:00, 01:00 -> 00:00)
    "Asia/Tehran",
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "Africa/Casablanca",  # negative DST around Ramadan
    "Pacific/Apia",  # skipped 2011-12-30
]
WEEKDAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class Field:
    text: str
    values: frozenset[int]

    @property
    def star(self) -> bool:
        return self.text.startswith("*")


@dataclass(frozen=True)
class Spec:
    minute: Field
    hour: Field
    day: Field
    month: Field
    weekday: Field  # values 0-6, Sunday 0

    @property
    def expression(self) -> str:
        return " ".join(f.text for f in (self.minute, self.hour, self.day, self.month, self.weekday))

    @property
    def either_day(self) -> bool:
        return not self.day.star and not self.weekday.star

    def day_matches(self, day: date) -> bool:
        if day.month not in self.month.values:
            return False
        by_date, by_weekday = day.day in self.day.values, day.isoweekday() % 7 in self.weekday.values
        return (by_date or by_weekday) if self.either_day else (by_date and by_weekday)

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second == 0
            and wall.minute in self.minute.values
            and wall.hour in self.hour.values
            and self.day_matches(wall.date())
        )

    def can_fire(self) -> bool:
        return self.either_day or any(
            d <= DAYS_IN_MONTH[m - 1] for d in self.day.values for m in self.month.values
        )


@st.composite
def fields(draw: st.DrawFn, lowest: int, highest: int, names: list[str] | None = None) -> Field:
    """A crontab field: 1-3 comma parts, each *, */s, n, a-b, a-b/s or a/s; names where allowed."""
    weekday = highest == 7

    def render(value: int, range_end: bool = False) -> str:
        if names is None or not draw(st.booleans()):
            return str(value)
        if weekday:  # as a range end "sun" is 7; elsewhere 0
            if value == 7 and range_end:
                return "sun"
            if value == 7 or (value == 0 and range_end):
                return str(value)
            return WEEKDAY_NAMES[value].upper() if draw(st.booleans()) else WEEKDAY_NAMES[value]
        return names[value - 1].capitalize() if draw(st.booleans()) else names[value - 1]

    texts, values = [], set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["*", "*/s", "n", "a-b", "a-b/s", "a/s"]))
        step = draw(st.integers(1, highest - lowest + 2))
        first = draw(st.integers(lowest, highest))
        last = draw(st.integers(first, highest))
        if kind == "*":
            texts.append("*")
            values.update(range(lowest, highest + 1))
        elif kind == "*/s":
            texts.append(f"*/{step}")
            values.update(range(lowest, highest + 1, step))
        elif kind == "n":
            texts.append(render(first))
            values.add(first)
        elif kind == "a-b":
            texts.append(f"{render(first)}-{render(last, range_end=True)}")
            values.update(range(first, last + 1))
        elif kind == "a-b/s":
            texts.append(f"{render(first)}-{render(last, range_end=True)}/{step}")
            values.update(range(first, last + 1, step))
        else:
            texts.append(f"{render(first)}/{step}")
            values.update(range(first, highest + 1, step))
    if weekday:
        values = {value % 7 for value in values}
    return Field(",".join(texts), frozenset(values))


# Day fields lean to "*" so that most expressions fire often enough to be enumerated quickly.
specs = st.builds(
    Spec,
    minute=fields(0, 59),
    hour=st.one_of(st.just(Field("*", frozenset(range(24)))), fields(0, 23)),
    day=st.one_of(st.just(Field("*", frozenset(range(1, 32)))), fields(1, 31)),
    month=st.one_of(st.just(Field("*", frozenset(range(1, 13)))), fields(1, 12, MONTH_NAMES)),
    weekday=st.one_of(st.just(Field("*", frozenset(range(7)))), fields(0, 7, WEEKDAY_NAMES)),
)


def offsets_near(zone: ZoneInfo, moment: datetime, hours: int = 30) -> set[timedelta]:
    return {
        offset
        for k in range(-hours, hours + 1)
        if (offset := (moment + timedelta(hours=k)).astimezone(zone).utcoffset()) is not None
    }


def wall_of(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def instants(
    wall: datetime, zone: ZoneInfo, offsets: set[timedelta], every_real_time: bool
) -> list[datetime]:
    """When the matching wall time fires, found by trying the zone's nearby offsets (no fold)."""
    real = sorted(
        {wall.replace(tzinfo=UTC) - o for o in offsets if wall_of(wall.replace(tzinfo=UTC) - o, zone) == wall}
    )
    if real:
        return real if every_real_time else real[:1]
    if every_real_time:
        return []
    # Missing wall time: read it with the offset in force just before the gap.
    before = wall.replace(tzinfo=UTC) - max(offsets)
    return [wall.replace(tzinfo=UTC) - (before.astimezone(zone).utcoffset() or timedelta())]


def expected_fires(spec: Spec, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` fires after ``after``, by enumerating matching wall times day by day."""
    every_real_time = spec.hour.star
    margin = timedelta(hours=27)  # more than any offset change
    earliest = wall_of(after, zone) - margin
    found: set[datetime] = set()
    day = earliest.date()
    while True:
        if len(found) >= count:
            last = sorted(found)[count - 1]
            if datetime.combine(day, time()) > wall_of(last, zone) + margin:
                return sorted(found)[:count]
        if spec.day_matches(day):
            offsets = offsets_near(zone, datetime.combine(day, time(12), UTC), 40)
            for hour in sorted(spec.hour.values):
                for minute in sorted(spec.minute.values):
                    wall = datetime.combine(day, time(hour, minute))
                    if wall >= earliest:
                        found.update(m for m in instants(wall, zone, offsets, every_real_time) if m > after)
        day += timedelta(days=1)


def is_shifted(spec: Spec, zone: ZoneInfo, fire: datetime) -> bool:
    """``fire`` is a matching wall time that does not exist, read with the offset before the gap."""
    offsets = offsets_near(zone, fire)
    for offset in offsets:
        wall = (fire + offset).replace(tzinfo=None)
        exists = any(wall_of(wall.replace(tzinfo=UTC) - other, zone) == wall for other in offsets)
        if not exists and spec.matches(wall):
            return True
    return False


@cache
def transitions(zone_name: str) -> list[datetime]:
    """Offset changes of the zone between 2005 and 2035, found by a daily scan and bisection."""
    zone, found = ZoneInfo(zone_name), []
    moment = utc(2005, 1, 1)
    while moment < utc(2035, 1, 1):
        following = moment + timedelta(days=1)
        if moment.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = moment, following
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high.replace(second=0, microsecond=0))
        moment = following
    return found


@st.composite
def starts(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a start time, half of them within a day and a half before an offset change."""
    zone = draw(st.sampled_from(ZONES))
    changes = transitions(zone)
    if changes and draw(st.booleans()):
        change = draw(st.sampled_from(changes))
        start = change + timedelta(minutes=draw(st.integers(-36 * 60, 6 * 60)))
    else:
        start = draw(st.datetimes(datetime(1995, 1, 1), datetime(2045, 1, 1), timezones=st.just(UTC)))
    return zone, start + timedelta(seconds=draw(st.sampled_from([0, 0, 1, 30, 59])))


def assert_next_fires_are_right(spec: Spec, zone_name: str, after: datetime, count: int = 20) -> None:
    zone = ZoneInfo(zone_name)
    # When listing the next fires
    fires = fire_times(parse_cron(spec.expression, zone_name), after, count)
    # Then they are in UTC and strictly increasing
    assert len(fires) == count and all(fire.tzinfo is UTC for fire in fires)
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    # And each matches the expression on the local wall clock, or is a matching missing wall
    # time shifted by the gap (fixed-hour entries only)
    for fire in fires:
        shifted = not spec.hour.star and is_shifted(spec, zone, fire)
        assert spec.matches(wall_of(fire, zone)) or shifted, fire
    # And no minute that should fire is skipped between consecutive fires (a sample of minutes)
    for previous, following in pairwise(fires):
        first, last = previous + timedelta(minutes=1), following - timedelta(minutes=1)
        middle = first + timedelta(minutes=((last - first) // timedelta(minutes=1)) // 2)
        for minute in {first, middle, last} if first <= last else set():
            seen = minute.astimezone(zone)
            should_fire = spec.matches(seen.replace(tzinfo=None)) and (spec.hour.star or seen.fold == 0)
            assert not should_fire, f"{minute} ({seen}) skipped"
    # And they are exactly the fires an independent enumeration of wall times finds
    assert fires == expected_fires(spec, zone, after, count)


@given(spec=specs, start=starts())
@PROPERTY_SETTINGS
def test_fires_increase_match_and_skip_nothing(spec: Spec, start: tuple[str, datetime]) -> None:
    # Given a random expression, zone and start time
    zone_name, after = start
    if not spec.can_fire():
        with pytest.raises(TriggerError, match="never occurs"):
            parse_cron(spec.expression, zone_name)
        return
    assert_next_fires_are_right(spec, zone_name, after)


SPARSE_MINUTES = [
    Field(text, frozenset(values))
    for text, values in [
        ("0", [0]),
        ("30", [30]),
        ("45", [45]),
        ("59", [59]),
        ("0,30", [0, 30]),
        ("*/15", [0, 15, 30, 45]),
        ("15-45/10", [15, 25, 35, 45]),
        ("5/20", [5, 25, 45]),
        ("*/7", range(0, 60, 7)),
    ]
]


@st.composite
def around_changes(draw: st.DrawFn) -> tuple[Spec, str, datetime]:
    """An entry whose hour field names the hours around an offset change, started shortly before it."""
    zone_name = draw(st.sampled_from([name for name in ZONES if transitions(name)]))
    change = draw(st.sampled_from(transitions(zone_name)))
    zone = ZoneInfo(zone_name)
    before, after = wall_of(change - timedelta(minutes=1), zone).hour, wall_of(change, zone).hour
    nearby = sorted({before, (before + 1) % 24, after})
    hour_text = draw(st.sampled_from(["*", "*/2", *map(str, nearby), ",".join(map(str, nearby))]))
    hours = range(0, 24, 2) if hour_text == "*/2" else range(24) if hour_text == "*" else nearby
    if hour_text.isdigit():
        hours = [int(hour_text)]
    every_day = Field("*", frozenset(range(1, 32)))
    spec = Spec(
        minute=draw(st.one_of(st.sampled_from(SPARSE_MINUTES), fields(0, 59))),
        hour=Field(hour_text, frozenset(hours)),
        day=every_day,
        month=Field("*", frozenset(range(1, 13))),
        weekday=Field("*", frozenset(range(7))),
    )
    return spec, zone_name, change - timedelta(minutes=draw(st.integers(0, 150)))


@given(case=around_changes())
@PROPERTY_SETTINGS
def test_fires_around_offset_changes(case: tuple[Spec, str, datetime]) -> None:
    # Given an entry that fires in the hours where the wall clock jumps, started before the jump
    spec, zone_name, after = case
    assert_next_fires_are_right(spec, zone_name, after, count=30)
