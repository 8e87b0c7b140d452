"""The schedule: the file model of ``config/schedule.toml``, periodiq's ``periodic=`` actors merged
in, and the validation that refuses a wrong schedule before anything fires.

Using
    ``load_schedule(path, broker)`` reads the file, merges the actors declared with periodiq's
    ``periodic=cron("...")`` option (entry name = actor name, UTC, the file's defaults) and
    validates every entry against the broker's actors (the caller has loaded the actor modules)
    and the queue catalogue. It returns a :class:`Schedule` or raises :class:`ScheduleError`
    listing *every* problem, one per line, each naming its entry.

The file::

    [defaults]                      # all optional
    timezone = "UTC"                # IANA zone of cron entries
    catchup = "latest"              # skip | latest | all
    catchup_window = "1h"
    overlap = "allow"               # skip | allow
    # expires = "15m"               # default: until the next fire
    # jitter = "0s"

    [entries.health-check]
    actor = "periodic_health_check"
    cron = "*/15 * * * *"           # or: every = "30s"; exactly one of the two
    timezone = "Europe/Berlin"
    args = [1, "a"]
    kwargs = { deep = true }
    queue = "maintenance"           # must be in config/queues.py
    expires = "15m"
    jitter = "30s"
    catchup = "latest"
    catchup_window = "2h"
    overlap = "skip"
    enabled = true

Options (defaults)
    ``timezone`` UTC; ``expires`` None (= until the next fire, the trigger's interval at send
    time); ``jitter`` 0 s; ``catchup`` ``latest``; ``catchup_window`` 1 h; ``overlap``
    ``allow``; ``enabled`` true.

Refused (each problem names its entry)
    an unknown actor; a bad or missing expression (both ``cron`` and ``every``, or neither); a bad
    timezone; a duplicate name (twice in the file, or a file entry named like a periodiq actor);
    an unknown key (typos); args/kwargs that do not fit the actor's signature or are not JSON;
    a queue outside the catalogue; a bad ``catchup``/``overlap``; a negative duration, a zero
    ``expires``, or a ``jitter`` not below ``expires`` (the delayed message would expire).

Warnings (the schedule still loads)
    * hotspots: more than ``hotspot_limit`` enabled entries fire in one minute, judged on the
      24 hours after :data:`HOTSPOT_REFERENCE` (a fixed time, so the same file always gives the
      same warnings);
    * an actor that is not idempotent (its policy has no ``idempotency_scope``, and it does not
      carry ``idempotent=True`` when a middleware declares that option): the slot's idempotency
      key cannot stop a duplicate send from running twice.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from dramatiq import Actor, Broker
from dramatiq.errors import ActorNotFound

from config.durations import parse_duration
from config.policies import POLICIES
from config.queues import QUEUES
from scheduler.trigger import Trigger, TriggerError, parse_cron, parse_every, parse_timezone
from service.errors import CallboardError
from service.intake import queue_problem

CATCHUP_POLICIES = ("skip", "latest", "all")
OVERLAP_POLICIES = ("skip", "allow")

#: The keys an ``[entries.<name>]`` table may carry; anything else is a typo and refused.
ENTRY_KEYS = (
    "actor",
    "cron",
    "every",
    "timezone",
    "args",
    "kwargs",
    "queue",
    "expires",
    "jitter",
    "catchup",
    "catchup_window",
    "overlap",
    "enabled",
)
#: The keys ``[defaults]`` may carry.
DEFAULT_KEYS = ("timezone", "expires", "jitter", "catchup", "catchup_window", "overlap")
#: Hotspots are judged on the 24 hours after this time (a Monday, outside any DST change).
HOTSPOT_REFERENCE = datetime(2025, 1, 6, tzinfo=UTC)
#: At most this many hotspot warnings; the rest are counted in the last one.
MAX_HOTSPOT_WARNINGS = 5

_Report = Callable[[str], None]

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_ENTRY_HEADER = re.compile(r'^\s*\[\s*entries\s*\.\s*(?:"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*\]')


@dataclass(frozen=True, slots=True)
class Entry:
    """One periodic entry, validated: its actor exists and its arguments fit the actor.

    ``expression`` is the trigger as written (``"*/15 * * * *"`` or ``"every 30s"``); durations
    are seconds; ``expires`` None means "until the next fire" (``trigger.interval_hint`` at send
    time); ``source`` is ``"file"`` or ``"periodiq"``.
    """

    name: str
    actor: str
    trigger: Trigger
    expression: str
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    expires: float | None = None
    jitter: float = 0.0
    catchup: str = "latest"
    catchup_window: float = 3600.0
    overlap: str = "allow"
    enabled: bool = True
    source: str = "file"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule: entries by name, warnings (one line each), and the sha256 of the
    file's bytes (the daemon compares it to detect a changed file)."""

    entries: dict[str, Entry]
    warnings: tuple[str, ...] = ()
    digest: str = ""


class ScheduleError(CallboardError):
    """The schedule cannot be used. ``problems`` holds every problem found, one line each, naming
    its entry (``entry 'x': unknown actor 'nope'``); ``str()`` is all of them, one per line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class _Defaults:
    timezone: str = "UTC"
    expires: float | None = None
    jitter: float = 0.0
    catchup: str = "latest"
    catchup_window: float = 3600.0
    overlap: str = "allow"


def load_schedule(path: Path, broker: Broker, *, hotspot_limit: int = 10) -> Schedule:
    """Read, merge and validate the schedule at ``path`` against ``broker``'s actors.

    Actor modules must be loaded first (``service.runtime.load_actors``). Raises
    :class:`ScheduleError` listing every problem (an unreadable file or invalid TOML is one
    problem, since nothing after it can be checked). Never raises for warnings.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ScheduleError([f"cannot read schedule file {path}: {error.strerror or error}"]) from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScheduleError([f"schedule file {path} is not UTF-8: {error.reason}"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScheduleError(_toml_problems(text, error)) from None

    problems: list[str] = []
    for key in document:
        if key not in ("defaults", "entries"):
            problems.append(f"schedule file: unknown table or key {key!r} (known: defaults, entries)")
    defaults = _read_defaults(document.get("defaults", {}), problems)
    tables = document.get("entries", {})
    if not isinstance(tables, dict):
        problems.append("schedule file: 'entries' must be a table of [entries.<name>] tables")
        tables = {}

    entries: dict[str, Entry] = {}
    for name, table in tables.items():
        entry = _read_entry(name, table, defaults, broker, problems)
        if entry is not None:
            entries[name] = entry
    for entry in _periodic_entries(broker, defaults, problems):
        if entry.name in tables:
            problems.append(
                f"entry {entry.name!r}: duplicate name: in the schedule file and declared by "
                f"periodiq's periodic= option on actor {entry.actor!r}"
            )
        else:
            entries[entry.name] = entry
    if problems:
        raise ScheduleError(problems)
    warnings = [*_idempotency_warnings(entries.values(), broker), *_hotspots(entries, hotspot_limit)]
    return Schedule(entries=entries, warnings=tuple(warnings), digest=digest)


def periodiq_entries(broker: Broker) -> list[Entry]:
    """The entries of actors declared with periodiq's ``periodic=cron("...")`` option.

    Each is named after its actor, fires in UTC with the built-in defaults and no arguments.
    Raises :class:`ScheduleError` when an expression is not valid crontab or the actor needs
    arguments.
    """
    problems: list[str] = []
    entries = _periodic_entries(broker, _Defaults(), problems)
    if problems:
        raise ScheduleError(problems)
    return entries


def is_idempotent(actor: Actor[Any, Any], broker: Broker) -> bool:
    """Whether running ``actor`` twice for one slot is harmless: its policy (or options) carry an
    ``idempotency_scope``, or it carries ``idempotent=True`` and some middleware declares that
    option (Dramatiq refuses undeclared options, so the check is skipped until one does)."""
    options = actor.options
    if "idempotent" in broker.actor_options and options.get("idempotent") is True:
        return True
    if options.get("idempotency_scope"):
        return True
    policy = POLICIES.get(str(options.get("policy", "")))
    return bool(policy is not None and policy.idempotency_scope)


# -- reading ------------------------------------------------------------------------------------


def _toml_problems(text: str, error: tomllib.TOMLDecodeError) -> list[str]:
    """Invalid TOML as one-line problems: each duplicated entry name (tomllib stops at the first),
    else the parser's message with its line and the entry it is in."""
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _ENTRY_HEADER.match(line)
        if not match:
            continue
        name = next(group for group in match.groups() if group is not None)
        if name in seen:
            duplicates.append(f"entry {name!r}: duplicate name (line {number}, first at line {seen[name]})")
        else:
            seen[name] = number
    if duplicates:
        return duplicates
    message = str(error)
    position = _TOML_POSITION.search(message)
    if position is None:
        return [f"schedule file: invalid TOML: {message}"]
    line_number = int(position.group(1))
    where = f"line {line_number}"
    for line in text.splitlines()[:line_number]:
        match = _ENTRY_HEADER.match(line)
        if match:
            where = f"entry {next(g for g in match.groups() if g is not None)!r} (line {line_number})"
    return [f"schedule file: invalid TOML at {where}: {message[: position.start()]}"]


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _duration(value: Any, key: str, *, positive: bool = False) -> float:
    """Seconds in ``value``; raises ``ValueError`` with a one-line reason naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} must be a duration such as '30s', '15m', '2h' (got {value!r})")
    if (isinstance(value, str) and value.strip().startswith("-")) or (
        not isinstance(value, str) and value < 0
    ):
        raise ValueError(f"{key} cannot be negative (got {value!r})")
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None
    if positive and seconds <= 0:
        raise ValueError(f"{key} must be more than zero (got {value!r})")
    return seconds


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)} (got {value!r})")
    return str(value)


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"timezone must be an IANA zone name such as 'Europe/Berlin' (got {value!r})")
    try:
        parse_timezone(value)
    except TriggerError as error:
        raise ValueError(str(error)) from None
    return value


#: Readers of the options an entry may take from ``[defaults]``; each raises a one-line ValueError.
_OPTION_READERS: dict[str, Callable[[Any], Any]] = {
    "expires": lambda value: _duration(value, "expires", positive=True),
    "jitter": lambda value: _duration(value, "jitter"),
    "catchup": lambda value: _choice(value, "catchup", CATCHUP_POLICIES),
    "catchup_window": lambda value: _duration(value, "catchup_window"),
    "overlap": lambda value: _choice(value, "overlap", OVERLAP_POLICIES),
}


def _read_defaults(table: Any, problems: list[str]) -> _Defaults:
    """The ``[defaults]`` table; bad values are reported once here and replaced by the built-ins
    (so each entry is not blamed for them)."""
    if not isinstance(table, dict):
        problems.append("defaults: must be a table")
        return _Defaults()
    values: dict[str, Any] = {}
    readers: dict[str, Callable[[Any], Any]] = {"timezone": _timezone, **_OPTION_READERS}
    for key, value in table.items():
        reader = readers.get(key)
        if reader is None:
            problems.append(f"defaults: unknown key {key!r}{_suggest(key, DEFAULT_KEYS)}")
            continue
        try:
            values[key] = reader(value)
        except ValueError as error:
            problems.append(f"defaults: {error}")
    return _Defaults(**values)


def _read_entry(
    name: str, table: Any, defaults: _Defaults, broker: Broker, problems: list[str]
) -> Entry | None:
    """One ``[entries.<name>]`` table as an :class:`Entry`, or None after appending its problems."""
    found: list[str] = []

    def problem(text: str) -> None:
        found.append(f"entry {name!r}: {text}")

    if not isinstance(table, dict):
        problem("must be a table ([entries.<name>] with actor and cron or every)")
        problems.extend(found)
        return None
    for key in table:
        if key not in ENTRY_KEYS:
            problem(f"unknown key {key!r}{_suggest(key, ENTRY_KEYS)}")

    actor = _entry_actor(table.get("actor"), broker, problem)

    timezone: str | None = defaults.timezone
    if "timezone" in table:
        try:
            timezone = _timezone(table["timezone"])
        except ValueError as error:
            problem(str(error))
            timezone = None
    trigger, expression = _entry_trigger(table, timezone, problem)

    args, kwargs = table.get("args", []), table.get("kwargs", {})
    if not isinstance(args, list):
        problem(f"args must be an array (got {args!r})")
        args = None
    if not isinstance(kwargs, dict):
        problem(f"kwargs must be a table (got {kwargs!r})")
        kwargs = None
    if args is not None and kwargs is not None:
        _check_arguments(actor, args, kwargs, problem)

    queue = table.get("queue")
    if queue is not None and (not isinstance(queue, str) or queue not in QUEUES):
        hint = _suggest(str(queue), QUEUES) or f" (known: {', '.join(QUEUES)})"
        problem(f"queue {queue!r} is not in the catalogue{hint}")
    elif queue is not None and actor is not None:
        # Workers dead-letter a message moved to a queue served sooner than its actor's own
        # (reason wrong_queue): such an entry would fail at every fire, so it is refused here.
        moved = queue_problem(actor.actor_name, actor.queue_name, queue)
        if moved:
            problem(moved)

    values: dict[str, Any] = {}
    for key, reader in _OPTION_READERS.items():
        if key in table:
            try:
                values[key] = reader(table[key])
            except ValueError as error:
                problem(str(error))
    jitter = values.get("jitter", defaults.jitter)
    expires = values.get("expires", defaults.expires)
    if expires is None and trigger is not None and expression.startswith("every "):
        expires = trigger.interval_hint  # the default: until the next fire
    if jitter and expires is not None and jitter >= expires:
        problem(
            f"jitter ({jitter:g} s) must be less than expires ({expires:g} s): "
            "a message delayed by the jitter would expire before it runs"
        )
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problem(f"enabled must be true or false (got {enabled!r})")

    problems.extend(found)
    if found or actor is None or trigger is None or timezone is None:
        return None
    return Entry(
        name=name,
        actor=actor.actor_name,
        trigger=trigger,
        expression=expression,
        timezone=timezone,
        args=tuple(args or ()),
        kwargs=dict(kwargs or {}),
        queue=queue,
        expires=values.get("expires", defaults.expires),
        jitter=values.get("jitter", defaults.jitter),
        catchup=values.get("catchup", defaults.catchup),
        catchup_window=values.get("catchup_window", defaults.catchup_window),
        overlap=values.get("overlap", defaults.overlap),
        enabled=bool(enabled),
        source="file",
    )


def _entry_actor(value: Any, broker: Broker, problem: _Report) -> Actor[Any, Any] | None:
    if value is None:
        problem('no actor (add actor = "<actor name>")')
        return None
    if not isinstance(value, str):
        problem(f"actor must be an actor name (got {value!r})")
        return None
    try:
        return broker.get_actor(value)
    except ActorNotFound:
        problem(f"unknown actor {value!r}{_suggest(value, broker.get_declared_actors())}")
        return None


@lru_cache(maxsize=1024)
def _cron(expression: str, timezone: str) -> Trigger:
    """:func:`parse_cron`, once per expression and zone (triggers are immutable; entries share)."""
    return parse_cron(expression, timezone)


def _entry_trigger(
    table: dict[str, Any], timezone: str | None, problem: _Report
) -> tuple[Trigger | None, str]:
    """The entry's trigger and its expression as written; ``(None, "")`` after a problem."""
    cron, every = table.get("cron"), table.get("every")
    if cron is not None and every is not None:
        problem("has both cron and every (give one)")
        return None, ""
    if cron is None and every is None:
        problem('has no cron or every (add cron = "*/15 * * * *" or every = "15m")')
        return None, ""
    if cron is not None:
        if not isinstance(cron, str):
            problem(f"cron must be a string (got {cron!r})")
            return None, ""
        if timezone is None:  # already reported; the expression cannot be judged without a zone
            return None, ""
        try:
            return _cron(cron, timezone), cron
        except TriggerError as error:
            problem(f"bad cron {cron!r}: {str(error).removeprefix(f'cron expression {cron!r}: ')}")
            return None, ""
    if isinstance(every, bool) or not isinstance(every, str | int | float):
        problem(f"every must be a duration such as '30s' or '15m' (got {every!r})")
        return None, ""
    try:
        trigger = parse_every(every)
    except TriggerError as error:
        problem(f"bad every {every!r}: {str(error).removeprefix('bad interval: ')}")
        return None, ""
    return trigger, trigger.describe()


def _check_arguments(
    actor: Actor[Any, Any] | None, args: list[Any], kwargs: dict[str, Any], problem: _Report
) -> None:
    try:
        json.dumps([args, kwargs])
    except (TypeError, ValueError) as error:
        problem(f"args/kwargs cannot be sent as JSON: {error}")
        return
    if actor is None:
        return
    try:
        inspect.signature(actor.fn).bind(*args, **kwargs)
    except TypeError as error:
        problem(f"args/kwargs do not fit actor {actor.actor_name!r}: {error}")
    except ValueError:  # a builtin without a signature: nothing to check
        pass


def _periodic_entries(broker: Broker, defaults: _Defaults, problems: list[str]) -> list[Entry]:
    """Entries of the actors that carry periodiq's ``periodic`` option (a ``CronSpec``, whose
    ``parsed_from`` keeps the expression as written, or a plain string)."""
    entries = []
    for name in sorted(broker.get_declared_actors()):
        actor = broker.get_actor(name)
        spec = actor.options.get("periodic")
        if spec is None:
            continue
        expression = spec if isinstance(spec, str) else (getattr(spec, "parsed_from", None) or str(spec))
        try:
            trigger = parse_cron(expression, "UTC")
        except (TriggerError, ValueError) as error:
            problems.append(f"entry {name!r}: bad periodiq periodic={expression!r}: {error}")
            continue
        try:
            inspect.signature(actor.fn).bind()
        except TypeError as error:
            problems.append(f"entry {name!r}: periodiq actor must take no arguments: {error}")
            continue
        except ValueError:
            pass
        entries.append(
            Entry(
                name=name,
                actor=name,
                trigger=trigger,
                expression=expression,
                timezone="UTC",
                expires=defaults.expires,
                jitter=defaults.jitter,
                catchup=defaults.catchup,
                catchup_window=defaults.catchup_window,
                overlap=defaults.overlap,
                source="periodiq",
            )
        )
    return entries


# -- warnings -----------------------------------------------------------------------------------


def _idempotency_warnings(entries: Iterable[Entry], broker: Broker) -> list[str]:
    warnings = []
    for entry in entries:
        actor = broker.get_actor(entry.actor)
        if not is_idempotent(actor, broker):
            policy = actor.options.get("policy", "none (plain Dramatiq actor)")
            warnings.append(
                f"entry {entry.name!r}: actor {entry.actor!r} is not idempotent (policy {policy} has no "
                "idempotency_scope): a slot sent twice may run twice"
            )
    return warnings


def _hotspots(entries: dict[str, Entry], limit: int) -> list[str]:
    """Minutes (UTC) of the reference day in which more than ``limit`` enabled entries fire.

    Each distinct trigger is enumerated once over the 24 hours (at most 1440 fires for a cron);
    an ``every`` entry of a minute or less counts in every minute without enumerating its fires.
    """
    every_minute = sorted(
        entry.name
        for entry in entries.values()
        if entry.enabled and entry.expression.startswith("every ") and entry.trigger.interval_hint <= 60
    )
    if len(every_minute) > limit:  # every minute is a hotspot: one warning says it all
        return [
            f"hotspot: {len(every_minute)} entries fire in every minute, more than {limit}: "
            f"{_names(every_minute)}"
        ]
    fast = set(every_minute)
    sharing: dict[Any, tuple[Trigger, list[str]]] = {}  # entries with equal triggers fire together
    for entry in entries.values():
        if entry.enabled and entry.name not in fast:
            sharing.setdefault(_key(entry.trigger), (entry.trigger, []))[1].append(entry.name)
    end = HOTSPOT_REFERENCE + timedelta(days=1)
    by_minute: dict[datetime, set[str]] = defaultdict(set)
    for trigger, sharers in sharing.values():
        moment = trigger.next_fire(HOTSPOT_REFERENCE - timedelta(microseconds=1))
        while moment is not None and moment < end:
            by_minute[moment.astimezone(UTC).replace(second=0, microsecond=0)].update(sharers)
            moment = trigger.next_fire(moment)
    groups: dict[frozenset[str], list[datetime]] = defaultdict(list)
    for minute in sorted(by_minute):
        together = frozenset(by_minute[minute].union(every_minute))
        if len(together) > limit:
            groups[together].append(minute)
    warnings = []
    for together, minutes in sorted(groups.items(), key=lambda item: (-len(item[0]), item[1][0])):
        shown = ", ".join(m.strftime("%H:%M") for m in minutes[:3]) + (", ..." if len(minutes) > 3 else "")
        warnings.append(
            f"hotspot: {len(together)} entries fire together at {shown} UTC "
            f"({len(minutes)} minute{'s' if len(minutes) > 1 else ''} a day), more than {limit}: "
            f"{_names(together)}"
        )
    if len(warnings) > MAX_HOTSPOT_WARNINGS:
        rest = len(warnings) - MAX_HOTSPOT_WARNINGS + 1
        warnings = [*warnings[: MAX_HOTSPOT_WARNINGS - 1], f"hotspot: and {rest} more groups of minutes"]
    return warnings


def _key(trigger: Trigger) -> Any:
    """``trigger`` itself when hashable (equal triggers share one key), else its identity."""
    try:
        hash(trigger)
    except TypeError:
        return id(trigger)
    return trigger


def _names(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:10]) + (f", ... ({len(ordered) - 10} more)" if len(ordered) > 10 else "")
