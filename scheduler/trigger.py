"""When a schedule entry fires: standard crontab (vixie cron) expressions and epoch-aligned intervals.

Using::

    trigger = parse_cron("0 3 * * *", "Europe/Berlin")
    trigger.next_fire(datetime.now(UTC))           # the next fire, an aware datetime in UTC
    fire_times(trigger, datetime.now(UTC), 5)      # the next five
    parse_every("15m").next_fire(now)              # :00, :15, :30, :45 of every hour (UTC)

Cron expressions are the five crontab fields ``minute hour day-of-month month day-of-week`` as
vixie cron reads them: 0 and 7 are Sunday; ``sun``..``sat`` and ``jan``..``dec`` in any case;
lists, ranges and steps (``1,15``, ``1-5``, ``*/15``, ``1-10/2``, ``mon-fri``); the macros
``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``. When
both day fields are restricted (neither starts with ``*``) a day matches when EITHER matches:
``0 0 13 * 5`` fires on every 13th and on every Friday. Two small extensions, both unambiguous:
``N/S`` means ``N-max/S`` (as in cronie and APScheduler), and ``sun`` at the end of a range is 7
(``sat-sun`` is the weekend). An expression that can never fire (``0 0 30 2 *``) is refused.

Daylight saving time, in the entry's zone:

- a wall time that happens twice (autumn) fires once, at its first occurrence, unless the hour
  field is a wildcard or step (``*``, ``*/2``): then it fires at every real occurrence, so
  ``*/30 * * * *`` keeps firing every 30 real minutes through the repeated hour;
- a wall time that does not exist (spring) fires once, shifted by the gap (02:30 → 03:30), unless
  the hour field is a wildcard or step: those fire only at times that exist;
- fire times are strictly increasing in UTC (a shifted time that lands on a real one fires once).

(vixie cron also counts a wildcard *minute* as "wildcard"; the issue keys the rule on the hour, so
``*/15 1 * * *`` fires in the first pass of a repeated 01:00 hour only.)

Field matching is done by APScheduler 3's ``CronTrigger`` on naive wall-clock time (run in UTC,
where there is no DST); this module owns everything it gets wrong for us: its weekday numbers
start at Monday (0) and stop at 6; it ANDs day-of-month and day-of-week; ``from_crontab`` knows
no macros and rejects steps wider than the range (``*/90``); its year field starts at 1970; and in
a zone with DST it fires a fixed-time job twice in the repeated hour.

Intervals (``every``) fire on slots aligned to the Unix epoch: slot *k* is *k* x interval seconds
after 1970-01-01T00:00Z, so every replica and every restart agrees on the slot times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from config.durations import parse_duration

__all__ = ["Trigger", "TriggerError", "fire_times", "parse_cron", "parse_every", "parse_timezone"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
# Wider than any change of UTC offset a zone has made (Pacific/Apia skipped 2011-12-30: 24 h).
_SPAN_HOURS = 26

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name in messages, lowest, highest, names accepted)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February as in a leap year


class TriggerError(ValueError):
    """A bad expression, interval or timezone; ``str()`` is one line naming what is wrong."""


@runtime_checkable
class Trigger(Protocol):
    """When a schedule entry fires."""

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware, any zone), in UTC; None if there is none."""
        ...

    def describe(self) -> str:
        """The trigger as written, e.g. ``"cron 0 3 * * * (Europe/Berlin)"`` or ``"every 15m"``."""
        ...

    @property
    def interval_hint(self) -> float:
        """Seconds between the next two fires from now (``math.inf`` if fewer than two remain)."""
        ...


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``"Europe/Berlin"``); TriggerError naming it if unknown."""
    if not isinstance(name, str):
        raise TriggerError(f"timezone must be an IANA name such as 'Europe/Berlin' (got {name!r})")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        matches = [known for known in available_timezones() if known.lower() == name.lower()]
        hint = f"did you mean {matches[0]!r}?" if matches else "use an IANA name such as 'Europe/Berlin'"
        raise TriggerError(f"unknown timezone {name!r} ({hint})") from None


def parse_cron(expression: str, timezone: str = "UTC") -> Trigger:
    """The crontab ``expression`` read in the IANA zone ``timezone`` (semantics: module docstring).

    Raises TriggerError with one line naming the bad field, value, macro or zone.
    """
    if not isinstance(expression, str):
        raise TriggerError(f"cron expression must be a string (got {expression!r})")
    return _Cron(expression, timezone)


def parse_every(text: str | float) -> Trigger:
    """An interval (``"30s"``, ``"15m"``, ``"1h"``, ``"2d"``, or seconds) fired on epoch-aligned slots.

    Slot *k* fires at *k* x interval after 1970-01-01T00:00Z: ``every 15m`` fires at :00, :15,
    :30 and :45 of every UTC hour, ``every 1d`` at 00:00 UTC. The interval must be more than zero.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise TriggerError(f"interval must be a duration such as '15m' (got {text!r})")
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise TriggerError(f"bad interval: {error}") from None
    micros = round(seconds * 1_000_000) if math.isfinite(seconds) else 0
    if micros <= 0:
        raise TriggerError(f"interval {text!r} must be more than zero (examples: 30s, 15m, 1h)")
    return _Every(text if isinstance(text, str) else f"{text}s", micros)


def fire_times(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fires of ``trigger`` strictly after ``after`` (fewer if it stops firing)."""
    times: list[datetime] = []
    moment: datetime | None = after
    while len(times) < count and moment is not None:
        moment = trigger.next_fire(moment)
        if moment is not None:
            times.append(moment)
    return times


def _interval_hint(trigger: Trigger) -> float:
    first = trigger.next_fire(datetime.now(UTC))
    second = trigger.next_fire(first) if first is not None else None
    return (second - first).total_seconds() if first is not None and second is not None else math.inf


def _utc(after: datetime) -> datetime:
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be an aware datetime (got naive {after.isoformat()})")
    return after.astimezone(UTC)


class _Every:
    """Epoch-aligned slots every ``micros`` microseconds."""

    def __init__(self, text: str, micros: int) -> None:
        self._text = " ".join(text.split())
        if self._text.replace(".", "", 1).isdigit():
            self._text += "s"
        self._step = timedelta(microseconds=micros)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after``, in UTC."""
        slot = (_utc(after) - EPOCH) // self._step + 1
        try:
            return EPOCH + slot * self._step
        except OverflowError:
            return None

    def describe(self) -> str:
        """``every <interval as written>``."""
        return f"every {self._text}"

    @property
    def interval_hint(self) -> float:
        """The interval in seconds."""
        return self._step.total_seconds()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Every) and other._step == self._step

    def __hash__(self) -> int:
        return hash(self._step)

    def __repr__(self) -> str:
        return f"<trigger {self.describe()}>"


class _Cron:
    """A crontab expression in a zone; see the module docstring for the semantics."""

    def __init__(self, expression: str, timezone: str) -> None:
        self._expression = " ".join(expression.split())
        self._timezone = timezone
        self._zone = parse_timezone(timezone)
        text = _MACROS.get(self._expression.lower(), self._expression)
        if text.startswith("@"):
            known = ", ".join(_MACROS)
            raise TriggerError(f"cron expression {expression!r}: unknown macro (use one of {known})")
        fields = text.split()
        if len(fields) != 5:
            raise TriggerError(
                f"cron expression {expression!r}: expected 5 fields (minute hour day-of-month month "
                f"day-of-week), got {len(fields)}"
            )
        minutes, hours, days, months, weekdays = (
            _parse_field(field, *spec) for field, spec in zip(fields, _FIELDS, strict=True)
        )
        weekdays = {day % 7 for day in weekdays}
        day_star, weekday_star = fields[2].startswith("*"), fields[4].startswith("*")
        either_day = not day_star and not weekday_star
        if not either_day and not any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months):
            raise TriggerError(
                f"cron expression {expression!r}: day-of-month {fields[2]!r} never occurs in "
                f"month {fields[3]!r}"
            )
        # vixie's rule: a job whose hour is a wildcard runs at every real time, a fixed-hour job once.
        # A job whose hour field is a wildcard runs at every real occurrence of its times (both
        # passes of a repeated hour); a fixed-hour job runs once. (Vixie cron also counts a
        # wildcard minute; we judge by the hour, so "*/15 1 * * *" runs in the first pass only.)
        self._every_real_time = fields[1].startswith("*")

        def matcher(day: str, weekday: str) -> CronTrigger:
            return CronTrigger(
                minute=_aps_list(minutes, 0, 59),
                hour=_aps_list(hours, 0, 23),
                day=day,
                month=_aps_list(months, 1, 12),
                day_of_week=weekday,
                second=0,
                timezone=UTC,
            )

        aps_days = _aps_list(days, 1, 31)
        aps_weekdays = _aps_list({(day - 1) % 7 for day in weekdays}, 0, 6)  # APScheduler: Monday is 0
        self._matcher: BaseTrigger = (
            OrTrigger([matcher(aps_days, "*"), matcher("*", aps_weekdays)])
            if either_day
            else matcher(aps_days, aps_weekdays)
        )

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after``, in UTC (DST rules: module docstring)."""
        start = _utc(after)
        try:
            return self._next_fire(start)
        except OverflowError:  # beyond the years a datetime can hold
            return None

    def _next_fire(self, start: datetime) -> datetime | None:
        # Wall times are scanned in order. A wall time a little before the wall time of `start` can
        # still map after `start` (the repeated hour, a time shifted over a gap): start early by the
        # largest offset drop nearby, and stop once no later wall time can map before the best found.
        lowest, highest = _offset_range(self._zone, start)
        local = start.astimezone(self._zone)
        earliest = local.replace(tzinfo=None) - (_offset(local) - min(lowest, _offset(local)))
        best: datetime | None = None
        while (wall := self._next_wall(earliest)) is not None:
            for moment in self._moments(wall):
                if moment > start and (best is None or moment < best):
                    best = moment
                    highest = max(highest, _offset_range(self._zone, best)[1])
            earliest = wall + _MINUTE
            if best is not None and earliest.replace(tzinfo=UTC) - highest >= best:
                break
        return best

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock time at or after ``wall`` (naive)."""
        # APScheduler's year field starts at 1970; the Gregorian calendar repeats every 400 years.
        shift = 400 * math.ceil((1970 - wall.year) / 400) if wall.year < 1970 else 0
        found = self._matcher.get_next_fire_time(None, wall.replace(year=wall.year + shift, tzinfo=UTC))
        if found is None:
            return None
        return found.replace(year=found.year - shift, tzinfo=None)

    def _moments(self, wall: datetime) -> tuple[datetime, ...]:
        """The real instants (UTC) at which the matching wall time ``wall`` fires."""
        first = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first.astimezone(self._zone).replace(tzinfo=None) == wall:  # happens twice
            return (first, second) if self._every_real_time else (first,)
        # Does not exist: fold 0 reads it with the offset before the gap, i.e. shifted by the gap.
        return () if self._every_real_time else (first,)

    def describe(self) -> str:
        """``cron <expression as written> (<zone>)``."""
        return f"cron {self._expression} ({self._timezone})"

    @property
    def interval_hint(self) -> float:
        """Seconds between the next two fires from now."""
        return _interval_hint(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Cron) and (other._expression, other._timezone) == (
            self._expression,
            self._timezone,
        )

    def __hash__(self) -> int:
        return hash((self._expression, self._timezone))

    def __repr__(self) -> str:
        return f"<trigger {self.describe()}>"


def _parse_field(text: str, name: str, lowest: int, highest: int, names: dict[str, int]) -> set[int]:
    """The values a crontab field allows; TriggerError naming the field and the bad part."""

    def fail(problem: str) -> TriggerError:
        return TriggerError(f"{name} field {text!r}: {problem}")

    def number(token: str, range_end: bool = False) -> int:
        if token.lower() in names:
            value = names[token.lower()]
            return 7 if range_end and name == "day-of-week" and value == 0 else value
        shown = f" {token!r}" if token != text else ""  # the field is the value: say it once
        if not token.isdigit() or not token.isascii():
            accepted = f"a number {lowest}-{highest}"
            if names:
                accepted += f" or a name {next(iter(names))}..{list(names)[-1]}"
            raise fail(f"value{shown} is not {accepted}")
        value = int(token)
        if not lowest <= value <= highest:
            raise fail(f"value{shown} out of range {lowest}-{highest}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise fail("empty list element")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not step_text.isascii() or int(step_text) == 0:
                raise fail(f"step {step_text!r} must be a whole number of at least 1")
            step = int(step_text)
        if base == "*":
            first, last = lowest, highest
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = number(start), number(end, range_end=True)
            if first > last:
                wrapped = f"{start}-{highest},{lowest}-{end}"
                raise fail(f"range {base!r} runs backwards (to wrap around, write {wrapped!r})")
        else:
            first = number(base)
            last = highest if slash else first
        values.update(range(first, last + 1, step))
    return values


def _aps_list(values: Iterable[int], lowest: int, highest: int) -> str:
    """``values`` as an APScheduler field: ``*`` or runs like ``0-4,6``."""
    ordered = sorted(set(values))
    if ordered == list(range(lowest, highest + 1)):
        return "*"
    runs: list[list[int]] = []
    for value in ordered:
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    assert offset is not None  # aware by construction
    return offset


@lru_cache(maxsize=8192)
def _offset_hours(zone: ZoneInfo, hour: int) -> tuple[timedelta, timedelta]:
    """Smallest and largest UTC offset of ``zone`` within 26 h of ``hour`` hours after the epoch."""
    offsets = set()
    for sample in range(hour - _SPAN_HOURS, hour + _SPAN_HOURS + 2):
        try:
            offsets.add(_offset((EPOCH + timedelta(hours=sample)).astimezone(zone)))
        except OverflowError:  # past the years a datetime holds
            continue
    return min(offsets), max(offsets)


def _offset_range(zone: ZoneInfo, moment: datetime) -> tuple[timedelta, timedelta]:
    return _offset_hours(zone, (moment - EPOCH) // timedelta(hours=1))
