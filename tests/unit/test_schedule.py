"""The schedule file model and its validation: entries and defaults, every refusal naming its entry
(all at once), warnings, and periodiq's ``periodic=`` actors merged in.

A StubBroker carries the test actors; a tiny middleware declares ``periodic`` (periodiq's option)
and ``idempotent``, which Dramatiq refuses on actors until some middleware declares them.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import periodiq
import pytest
from dramatiq import Middleware
from dramatiq.brokers.stub import StubBroker

from config.policies import POLICIES, Policy
from config.settings import load_settings
from scheduler.schedule import (
    Entry,
    ScheduleError,
    is_idempotent,
    load_schedule,
    periodiq_entries,
)
from service import actor, runtime
from service.brokers.factory import build_middleware
from service.errors import ConfigurationError
from tests.support.producer import adopt_actors

SHIPPED_SCHEDULE = Path(__file__).resolve().parents[2] / "config" / "schedule.toml"


class _DeclareOptions(Middleware):
    """Declares the actor options the schedule reads (as the real stack must, see the report)."""

    @property
    def actor_options(self) -> set[str]:
        return {"periodic", "idempotent"}


@pytest.fixture
def stub() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[*build_middleware(load_settings()), _DeclareOptions()])
    runtime.install(broker)
    yield broker
    broker.close()


@pytest.fixture
def actors(stub: StubBroker, monkeypatch: pytest.MonkeyPatch) -> StubBroker:
    """Test actors: ``report(day, deep=False)``, ``tick()``, an idempotent ``sync``, a ``dedup``
    whose policy has an idempotency scope, and a periodiq actor ``weekly``."""
    monkeypatch.setitem(
        POLICIES, "dedup", Policy("dedup", "default", 3, 1, 60, 50, 60, idempotency_scope="global")
    )

    @actor(policy="report")
    def report(day: str, deep: bool = False) -> None: ...

    @actor
    def tick() -> None: ...

    @actor(idempotent=True)
    def sync() -> None: ...

    @actor(policy="dedup")
    def dedup() -> None: ...

    @actor(periodic=periodiq.cron("0 0 * * 0"))
    def weekly() -> None: ...

    return stub


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text(text)
    return path


def problems_of(path: Path, broker: StubBroker) -> list[str]:
    with pytest.raises(ScheduleError) as caught:
        load_schedule(path, broker)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


GOOD = """
[defaults]
timezone = "Europe/Berlin"

[entries.nightly-report]
actor = "report"
cron = "30 1 * * *"
timezone = "America/New_York"
args = ["yesterday"]
kwargs = { deep = true }
queue = "maintenance"
expires = "15m"
jitter = "30s"
catchup = "all"
catchup_window = "2h"
overlap = "skip"
enabled = false

[entries.tick]
actor = "tick"
every = "30s"
"""


def test_a_good_file_parses_to_entries_with_defaults(actors: StubBroker, tmp_path: Path) -> None:
    # Given a file with one entry using every field and one using none
    path = write(tmp_path, GOOD)
    # When it is loaded
    schedule = load_schedule(path, actors)
    # Then every field is read, durations in seconds, and the rest are the defaults
    report = schedule.entries["nightly-report"]
    assert (report.name, report.actor, report.expression, report.timezone) == (
        "nightly-report",
        "report",
        "30 1 * * *",
        "America/New_York",
    )
    assert report.args == ("yesterday",) and report.kwargs == {"deep": True}
    assert report.queue == "maintenance"
    assert (report.expires, report.jitter, report.catchup_window) == (900.0, 30.0, 7200.0)
    assert (report.catchup, report.overlap, report.enabled, report.source) == ("all", "skip", False, "file")
    assert report.trigger.next_fire(datetime(2025, 1, 6, 12, tzinfo=UTC)) == datetime(
        2025, 1, 7, 6, 30, tzinfo=UTC
    )  # 01:30 in New York
    tick = schedule.entries["tick"]
    assert tick == Entry(
        name="tick",
        actor="tick",
        trigger=tick.trigger,
        expression="every 30s",
        timezone="Europe/Berlin",  # from [defaults]
        args=(),
        kwargs={},
        queue=None,
        expires=None,
        jitter=0.0,
        catchup="latest",
        catchup_window=3600.0,
        overlap="allow",
        enabled=True,
        source="file",
    )
    assert tick.trigger.interval_hint == 30
    assert schedule.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_defaults_table_applies_to_entries_that_do_not_say(actors: StubBroker, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
catchup = "skip"
catchup_window = "10m"
overlap = "skip"
expires = "5m"
jitter = "2s"

[entries.a]
actor = "tick"
cron = "0 * * * *"

[entries.b]
actor = "tick"
every = 90
catchup = "all"
expires = 60
""",
    )
    entries = load_schedule(path, actors).entries
    a, b = entries["a"], entries["b"]
    assert b.expression == "every 90s"  # a bare number is seconds
    assert (a.timezone, a.catchup, a.catchup_window, a.overlap, a.expires, a.jitter) == (
        "UTC",
        "skip",
        600.0,
        "skip",
        300.0,
        2.0,
    )
    assert (b.catchup, b.expires) == ("all", 60.0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('actor = "nope"\ncron = "* * * * *"', "unknown actor 'nope'"),
        ('actor = "tik"\ncron = "* * * * *"', "unknown actor 'tik' (did you mean 'tick'?)"),
        ('cron = "* * * * *"', "no actor"),
        ('actor = "tick"\ncron = "* * * * *"\nevery = "1m"', "has both cron and every"),
        ('actor = "tick"', "has no cron or every"),
        ('actor = "tick"\ncron = "61 * * * *"', "bad cron '61 * * * *'"),
        ('actor = "tick"\ncron = "* * *"', "bad cron '* * *'"),
        ('actor = "tick"\nevery = "soon"', "bad every 'soon'"),
        ('actor = "tick"\ncron = "* * * * *"\ntimezone = "Mars/Olympus"', "unknown timezone 'Mars/Olympus'"),
        ('actor = "tick"\ncron = "* * * * *"\ncronn = "x"', "unknown key 'cronn'"),
        ('actor = "tick"\ncron = "* * * * *"\nargs = [1]', "args/kwargs do not fit actor 'tick'"),
        ('actor = "report"\ncron = "* * * * *"', "missing a required argument: 'day'"),
        ('actor = "report"\ncron = "* * * * *"\nargs = ["d"]\nkwargs = {x = 1}', "unexpected keyword"),
        ('actor = "tick"\ncron = "* * * * *"\nargs = "x"', "args must be an array"),
        ('actor = "report"\ncron = "* * * * *"\nargs = [1979-05-27]', "cannot be sent as JSON"),
        ('actor = "tick"\ncron = "* * * * *"\nqueue = "nowhere"', "queue 'nowhere' is not in the catalogue"),
        (  # a report moved onto a queue served sooner than its own: workers would dead-letter it
            'actor = "report"\ncron = "* * * * *"\nargs = ["d"]\nqueue = "critical"',
            "actor 'report' runs on queue 'reports'; a message may not move it to 'critical'",
        ),
        ('actor = "tick"\ncron = "* * * * *"\ncatchup = "some"', "catchup must be one of skip, latest, all"),
        ('actor = "tick"\ncron = "* * * * *"\noverlap = "never"', "overlap must be one of skip, allow"),
        ('actor = "tick"\ncron = "* * * * *"\nexpires = "-5m"', "expires cannot be negative"),
        ('actor = "tick"\ncron = "* * * * *"\njitter = -1', "jitter cannot be negative"),
        ('actor = "tick"\ncron = "* * * * *"\ncatchup_window = "-1h"', "catchup_window cannot be negative"),
        ('actor = "tick"\ncron = "* * * * *"\nexpires = "0s"', "expires must be more than zero"),
        ('actor = "tick"\ncron = "* * * * *"\njitter = "often"', "jitter: 'often' is not a duration"),
        ('actor = "tick"\ncron = "* * * * *"\nenabled = "yes"', "enabled must be true or false"),
        ('actor = "tick"\ncron = "0 * * * *"\njitter = "5m"\nexpires = "5m"', "jitter (300 s) must be less"),
        ('actor = "tick"\nevery = "1m"\njitter = "90s"', "than expires (60 s)"),
    ],
)
def test_each_bad_entry_is_a_problem_naming_it(
    actors: StubBroker, tmp_path: Path, body: str, expected: str
) -> None:
    path = write(tmp_path, f"[entries.broken]\n{body}\n")
    [problem] = problems_of(path, actors)
    assert problem.startswith("entry 'broken': ")
    assert expected in problem


def test_a_duplicate_name_in_the_file_is_one_line_with_its_line_number(
    actors: StubBroker, tmp_path: Path
) -> None:
    # tomllib refuses a table declared twice; the problem names the entry and both lines
    path = write(
        tmp_path,
        '[entries.twice]\nactor = "tick"\ncron = "* * * * *"\n\n'
        '[entries.twice]\nactor = "tick"\nevery = "1m"\n',
    )
    assert problems_of(path, actors) == ["entry 'twice': duplicate name (line 5, first at line 1)"]


def test_a_key_set_twice_names_the_entry_and_line(actors: StubBroker, tmp_path: Path) -> None:
    path = write(tmp_path, '[entries.a]\nactor = "tick"\nactor = "tick"\ncron = "* * * * *"\n')
    [problem] = problems_of(path, actors)
    assert "entry 'a' (line 3)" in problem and "\n" not in problem


def test_a_periodiq_actor_with_the_name_of_a_file_entry_is_a_duplicate(
    actors: StubBroker, tmp_path: Path
) -> None:
    path = write(tmp_path, '[entries.weekly]\nactor = "tick"\ncron = "0 0 * * *"\n')
    [problem] = problems_of(path, actors)
    assert problem.startswith("entry 'weekly': duplicate name")
    assert "periodiq" in problem


def test_every_problem_is_reported_at_once(actors: StubBroker, tmp_path: Path) -> None:
    # Given a file with problems in the defaults, at the top level and in three entries
    path = write(
        tmp_path,
        """
extra = 1

[defaults]
overlap = "maybe"

[entries.one]
actor = "nope"
cron = "* * * * *"

[entries.two]
actor = "tick"
cron = "99 * * * *"
queue = "nowhere"

[entries.three]
actor = "report"
every = "1h"

[entries.fine]
actor = "tick"
every = "1h"
""",
    )
    # When it is loaded, then each problem is its own line, in file order
    problems = problems_of(path, actors)
    assert len(problems) == 6, problems
    assert "unknown table or key 'extra'" in problems[0]
    assert problems[1].startswith("defaults: overlap must be one of")
    assert problems[2].startswith("entry 'one': unknown actor")
    assert problems[3].startswith("entry 'two': bad cron") and problems[4].startswith("entry 'two': queue")
    assert problems[5].startswith("entry 'three': args/kwargs do not fit")


def test_unreadable_file_and_invalid_toml_are_one_problem(actors: StubBroker, tmp_path: Path) -> None:
    [missing] = problems_of(tmp_path / "absent.toml", actors)
    assert missing.startswith("cannot read schedule file") and "absent.toml" in missing
    [invalid] = problems_of(write(tmp_path, '[entries.a]\nactor = "tick"\ncron = \n'), actors)
    assert invalid.startswith("schedule file: invalid TOML at entry 'a' (line 3): Invalid value")


def test_periodiq_actors_are_merged_with_utc_and_the_defaults(actors: StubBroker, tmp_path: Path) -> None:
    # Given a periodic actor declared the periodiq way, and a file with defaults
    path = write(tmp_path, '[defaults]\ntimezone = "Asia/Tokyo"\ncatchup = "all"\n')
    # When the schedule is loaded
    weekly = load_schedule(path, actors).entries["weekly"]
    # Then it is an entry named after the actor, in UTC, with the file's defaults
    assert (weekly.actor, weekly.expression, weekly.timezone, weekly.source) == (
        "weekly",
        "0 0 * * 0",
        "UTC",
        "periodiq",
    )
    assert weekly.catchup == "all" and weekly.args == () and weekly.kwargs == {}
    # and it fires on Sundays (periodiq 0.14.0 never fires "0 0 * * 0" itself)
    assert weekly.trigger.next_fire(datetime(2025, 1, 6, tzinfo=UTC)) == datetime(2025, 1, 12, tzinfo=UTC)
    assert [e.name for e in periodiq_entries(actors)] == ["weekly"]


def test_periodiq_named_expressions_and_bad_periodic_actors(stub: StubBroker) -> None:
    @actor(periodic=periodiq.cron("@weekly"))
    def sunday() -> None: ...

    [entry] = periodiq_entries(stub)
    assert entry.expression == "@weekly"
    assert entry.trigger.next_fire(datetime(2025, 1, 6, tzinfo=UTC)) == datetime(2025, 1, 12, tzinfo=UTC)

    @actor(periodic=periodiq.cron("0 0 * * *"))
    def needs(day: str) -> None: ...

    with pytest.raises(ScheduleError, match="entry 'needs': periodiq actor must take no arguments"):
        periodiq_entries(stub)


def test_the_stack_accepts_periodic_and_idempotent_actor_options() -> None:
    broker = StubBroker(middleware=build_middleware(load_settings()))
    runtime.install(broker)
    try:

        @actor(periodic=periodiq.cron("0 0 * * 0"), idempotent=True)
        def weekly_sync() -> None: ...

        assert weekly_sync.options["idempotent"] is True
        with pytest.raises(ConfigurationError, match="actor options are undefined"):

            @actor(no_such_option=True)
            def undeclared() -> None: ...

    finally:
        broker.close()


def test_non_idempotent_actors_are_warned_about(actors: StubBroker, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\n".join(
            f'[entries.{name}]\nactor = "{name}"\nevery = "1h"\n' for name in ("tick", "sync", "dedup")
        ),
    )
    warnings = load_schedule(path, actors).warnings
    flagged = sorted(w.split("'")[1] for w in warnings if "is not idempotent" in w)
    assert flagged == ["tick", "weekly"]  # sync: idempotent=True; dedup: a policy with a scope
    assert is_idempotent(actors.get_actor("sync"), actors) and is_idempotent(
        actors.get_actor("dedup"), actors
    )
    assert not is_idempotent(actors.get_actor("tick"), actors)


def test_more_than_the_limit_firing_in_one_minute_is_a_hotspot(actors: StubBroker, tmp_path: Path) -> None:
    def schedule_of(count: int, *, extra: str = "") -> Path:
        tables = [f'[entries.h{i:02}]\nactor = "tick"\ncron = "0 * * * *"\n' for i in range(count)]
        return write(tmp_path, "\n".join(tables) + extra)

    def hotspots(path: Path, limit: int = 10) -> list[str]:
        return [
            w for w in load_schedule(path, actors, hotspot_limit=limit).warnings if w.startswith("hotspot")
        ]

    # Ten entries at minute 0 of every hour are within the limit, eleven are not
    assert hotspots(schedule_of(10)) == []
    [warning] = hotspots(schedule_of(11))
    assert "11 entries fire together at 00:00, 01:00, 02:00, ... UTC (24 minutes a day)" in warning
    assert warning.endswith("more than 10: h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, ... (1 more)")
    # A disabled entry does not fire, so does not count
    disabled = '\n[entries.off]\nactor = "tick"\ncron = "0 * * * *"\nenabled = false\n'
    assert hotspots(schedule_of(10, extra=disabled)) == []
    # Entries in other zones are compared in UTC: 01:00 Berlin (winter) is 00:00 UTC
    berlin = '\n[entries.berlin]\nactor = "tick"\ncron = "0 1 * * *"\ntimezone = "Europe/Berlin"\n'
    [warning] = hotspots(schedule_of(10, extra=berlin))
    assert "at 00:00 UTC (1 minute a day)" in warning and "berlin" in warning
    # Entries firing every minute or more often count in every minute
    often = "\n".join(f'[entries.e{i}]\nactor = "tick"\nevery = "30s"\n' for i in range(3))
    [warning] = hotspots(write(tmp_path, often), limit=2)
    assert warning == "hotspot: 3 entries fire in every minute, more than 2: e0, e1, e2"


def test_the_shipped_schedule_validates_against_the_shipped_actors(stub: StubBroker) -> None:
    # Given the shipped actor modules declared on this broker
    for name in runtime.SHIPPED_ACTOR_MODULES:
        adopt_actors(importlib.import_module(name), stub)
    # When the shipped schedule is loaded, then it is valid and holds dead-letter retention
    schedule = load_schedule(SHIPPED_SCHEDULE, stub)
    prune = schedule.entries["prune-history"]
    assert (prune.actor, prune.expression, prune.catchup, prune.expires) == (
        "prune_history",
        "30 3 * * *",
        "latest",
        None,
    )
    assert all(not w.startswith("hotspot") for w in schedule.warnings)
