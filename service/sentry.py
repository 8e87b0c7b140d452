"""Sentry: one error event per dead letter, with sensitive data removed before it leaves.

:func:`init_sentry` turns Sentry on when ``CALLBOARD_SENTRY_DSN`` is set. It runs in
:func:`service.runtime.get_broker` just before the broker is built, because Sentry's Dramatiq
integration patches ``dramatiq.Broker.__init__`` to put its ``SentryMiddleware`` first in every
broker's stack. Without a DSN nothing of Sentry is imported.

Guarantees:
  * **One event per dead letter.** Sentry's middleware is first in the stack, so its
    ``after_process_message`` runs last, after ``Retries`` has decided the attempt: the message is
    failed (``message.failed``) only when it is dead-lettered. :func:`before_send` drops the
    integration's event for an attempt that will be retried and keeps the one of the attempt that
    dead-letters the message, tagged with the dead letter's ``reason`` and ``attempts``.
    An exception in an actor's ``throws``, which Sentry's integration ignores as expected, is
    captured by :class:`SentryContext` when it dead-letters the message: every dead letter
    that an actor run produced has exactly one event.
  * **No second event from the logs.** Sentry's logging integration keeps its defaults
    (breadcrumbs from INFO, an event for each ERROR record), so an actor's ``logger.error(...)``
    and Callboard's operational errors still reach Sentry; the two ERROR records that repeat a
    failure the worker already reports (Dramatiq's ``Failed to process message ...`` on every
    failed attempt, and our ``message.dead``) are dropped.
  * **No sensitive value leaves.** Every field named like ``CALLBOARD_SENSITIVE_FIELDS`` is
    redacted by key (message arguments in ``contexts.dramatiq.data``, positional ones named
    through the actor's signature; ``extra``, request data, user, breadcrumbs' data, stack
    frames' local variables, span data), and the values found are scrubbed from every string of
    the event (exception messages, log messages, breadcrumbs, ``repr`` of locals). Transactions
    (``CALLBOARD_SENTRY_TRACES_SAMPLE_RATE``) are scrubbed the same way.
  * Every event raised while a message runs carries the tags ``queue``, ``actor``,
    ``message_id`` and ``request_id``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, cast

from dramatiq import Broker, Middleware

from config.settings import Settings, get_settings
from service.middleware.options import option
from service.redaction import MIN_SCRUB_LENGTH, REDACTED, Redactor, sensitive_values

#: Breadcrumbs kept per scope (one scope per message): the last log lines before a failure.
MAX_BREADCRUMBS = 50

#: Seconds a stopping process waits for queued events to be sent.
FLUSH_TIMEOUT = 2.0

#: The key under which the running message reaches ``before_send`` in the event hint.
HINT_KEY = "callboard_message"

#: Contexts Sentry fills with facts about the process, not user data: not redacted by key.
_SYSTEM_CONTEXTS = frozenset({"trace", "runtime", "os", "device", "app", "browser", "dead_letter"})

#: ERROR log records that repeat a failure the worker reports with its own event.
_DEAD_LETTER_EVENT = "message.dead"
_DRAMATIQ_FAILURE = "Failed to process message"

#: What Sentry's own scrubber and ours put in place of a value: not values to scrub.
_PLACEHOLDERS = frozenset({REDACTED, "[Filtered]"})

Event = dict[str, Any]
Hint = dict[str, Any]

_lock = threading.Lock()
_enabled = False


def default_release() -> str:
    """``callboard@<installed package version>``."""
    try:
        version = metadata.version("callboard")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"callboard@{version}"


def init_sentry(settings: Settings | None = None) -> bool:
    """Turn Sentry on for this process when a DSN is set; returns whether it is on.

    Idempotent: the first call with a DSN initialises the SDK, later calls return ``True``.
    Must run before the broker is built (see the module docstring).
    """
    global _enabled
    settings = settings or get_settings()
    dsn = settings.sentry_dsn.get_secret_value().strip() if settings.sentry_dsn else ""
    with _lock:
        if _enabled:
            return True
        if not dsn:
            return False
        import sentry_sdk
        from sentry_sdk.integrations.dramatiq import DramatiqIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration

        sentry_sdk.init(
            dsn=dsn,
            integrations=[
                DramatiqIntegration(),
                LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
            ],
            send_default_pii=False,
            include_local_variables=True,
            environment=settings.sentry_environment,
            release=settings.sentry_release or default_release(),
            traces_sample_rate=settings.sentry_traces_sample_rate,
            max_breadcrumbs=MAX_BREADCRUMBS,
            before_send=cast(Any, before_send),
            before_send_transaction=cast(Any, before_send_transaction),
        )
        _enabled = True
        return True


def sentry_enabled() -> bool:
    """Whether :func:`init_sentry` turned Sentry on in this process."""
    return _enabled


def flush_sentry(timeout: float = FLUSH_TIMEOUT) -> None:
    """Send the events still queued (before a process exits with ``os._exit``); no-op when off."""
    if _enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)


@dataclass(frozen=True, slots=True)
class RunningMessage:
    """The message a Sentry scope belongs to, and its actor's function (to name positional args)."""

    message: Any
    fn: Callable[..., Any] | None

    def into_hint(self, event: Event, hint: Hint) -> Event:
        hint.setdefault(HINT_KEY, self)
        return event


class SentryContext(Middleware):
    """First in our stack when Sentry is on, so right after Sentry's own middleware (which its
    integration inserts in front of every broker's stack and which opens one scope per message).

    ``before_process_message`` tags the message's scope and adds an event processor that hands
    the message to :func:`before_send` through the event hint, so ``before_send`` can tell a
    retried attempt from a dead one and knows which argument values to scrub.
    ``after_worker_shutdown`` sends what is still queued.
    """

    def before_process_message(self, broker: Broker, message: Any) -> None:
        import sentry_sdk
        from sentry_sdk.integrations.dramatiq import DramatiqIntegration

        # The same test Sentry's middleware makes before it opens the message's scope.
        if sentry_sdk.get_client().get_integration(DramatiqIntegration) is None:
            return
        scope = sentry_sdk.get_isolation_scope()
        for key, value in _message_tags(message).items():
            scope.set_tag(key, value)
        try:
            fn = broker.get_actor(message.actor_name).fn
        except Exception:
            fn = None
        scope.add_event_processor(cast(Any, RunningMessage(message, fn).into_hint))

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        # Sentry's middleware, like Dramatiq, treats an exception in ``throws`` as expected and
        # reports nothing; here it dead-letters the message, and every dead letter gets its event.
        if exception is None or not message.failed:
            return
        throws = option(broker, message, "throws")
        if throws and isinstance(exception, throws):
            import sentry_sdk
            from sentry_sdk.utils import event_from_exception

            # Captured as Sentry's middleware captures a failed attempt, so before_send treats
            # both alike (it keeps the event of the attempt that dead-letters the message).
            event, hint = event_from_exception(
                exception,
                client_options=sentry_sdk.get_client().options,
                mechanism={"type": "dramatiq", "handled": False},
            )
            sentry_sdk.capture_event(event, hint=hint)

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        flush_sentry()


def before_send(event: Event, hint: Hint) -> Event | None:
    """Drop retried attempts and duplicate log events; tag and redact the rest (Sentry's hook)."""
    if _repeats_a_reported_failure(hint):
        return None
    running: RunningMessage | None = hint.get(HINT_KEY)
    if running is not None and _raised_in_worker(event):
        exception = _exception(hint)
        if exception is None or _outcome(running.message, exception) != "dead":
            return None  # this attempt will be retried: the attempt that dead-letters reports it
        _add_death(event, running.message)
    return _tag_and_scrub(event, running)


def before_send_transaction(event: Event, hint: Hint) -> Event | None:
    """Tag and redact a transaction like an error event (Sentry's hook)."""
    return _tag_and_scrub(event, hint.get(HINT_KEY))


def _tag_and_scrub(event: Event, running: RunningMessage | None) -> Event:
    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = event["tags"] = {}
    for key, value in _tags_of(event, running).items():
        tags.setdefault(key, value)
    return scrub_event(event, Redactor(get_settings().sensitive_fields), running)


def _outcome(message: Any, exception: BaseException) -> str:
    from service.middleware.outcomes import processed_outcome

    return processed_outcome(message, exception)


def _add_death(event: Event, message: Any) -> None:
    from service.deadletters.capture import dead_options

    try:
        dead = dead_options(message)
    except Exception:
        return
    event.setdefault("contexts", {})["dead_letter"] = {
        "reason": dead.get("reason"),
        "attempts": dead.get("attempts"),
    }
    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = event["tags"] = {}
    tags["dead_letter_reason"] = str(dead.get("reason"))
    tags["attempts"] = str(dead.get("attempts"))


def _repeats_a_reported_failure(hint: Hint) -> bool:
    record = hint.get("log_record")
    if not isinstance(record, logging.LogRecord):
        return False
    if getattr(record, "event", None) == _DEAD_LETTER_EVENT:
        return True
    return (
        record.name.startswith("dramatiq")
        and isinstance(record.msg, str)
        and record.msg.startswith(_DRAMATIQ_FAILURE)
    )


def _raised_in_worker(event: Event) -> bool:
    """Whether Sentry's Dramatiq middleware captured ``event`` (an actor's failed attempt)."""
    for value in _exception_values(event):
        mechanism = value.get("mechanism")
        if isinstance(mechanism, dict) and mechanism.get("type") == "dramatiq":
            return True
    return False


def _exception_values(event: Event) -> list[dict[str, Any]]:
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else None
    return [value for value in values or () if isinstance(value, dict)]


def _exception(hint: Hint) -> BaseException | None:
    exc_info = hint.get("exc_info")
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    return None


def _message_tags(message: Any) -> dict[str, str]:
    tags = {
        "queue": message.queue_name,
        "actor": message.actor_name,
        "message_id": message.message_id,
        "request_id": (message.options or {}).get("request_id"),
    }
    return {key: str(value) for key, value in tags.items() if value}


def _tags_of(event: Event, running: RunningMessage | None) -> dict[str, str]:
    if running is not None:
        return _message_tags(running.message)
    data = _dramatiq_data(event)
    if data is None:
        return {}
    tags = {
        "queue": data.get("queue_name"),
        "actor": data.get("actor_name"),
        "message_id": data.get("message_id"),
        "request_id": (data.get("options") or {}).get("request_id"),
    }
    return {key: str(value) for key, value in tags.items() if value}


def _dramatiq_data(event: Event) -> dict[str, Any] | None:
    contexts = event.get("contexts")
    context = contexts.get("dramatiq") if isinstance(contexts, dict) else None
    data = context.get("data") if isinstance(context, dict) else None
    return data if isinstance(data, dict) else None


def _actor_fn(name: Any) -> Callable[..., Any] | None:
    """The function of actor ``name`` on Dramatiq's global broker, if one is set (never built here)."""
    from dramatiq import broker as dramatiq_broker

    broker = dramatiq_broker.global_broker
    if broker is None or not isinstance(name, str):
        return None
    try:
        return broker.get_actor(name).fn
    except Exception:
        return None


def scrub_event(event: Event, redactor: Redactor, running: RunningMessage | None = None) -> Event:
    """``event`` with sensitive fields redacted by key and their values scrubbed from every string.

    ``running`` (the message the event was raised for) supplies the argument values to scrub even
    when Sentry left the message out of the event (over its size limit).
    """
    found: list[str] = []
    if running is not None:
        message = running.message
        found += sensitive_values(redactor, running.fn, message.args, message.kwargs)
        redactor.redact(dict(message.options or {}), found)

    data = _dramatiq_data(event)
    if data is not None:
        fn = running.fn if running is not None else _actor_fn(data.get("actor_name"))
        args = data.get("args")
        kwargs = data.get("kwargs")
        data["args"], data["kwargs"] = redactor.redact_call(
            fn,
            args if isinstance(args, list | tuple) else [],
            kwargs if isinstance(kwargs, dict) else {},
            found,
        )
        if isinstance(data.get("options"), dict):
            data["options"] = redactor.redact(data["options"], found)

    for key in ("extra", "request", "user"):
        if key in event:
            event[key] = redactor.redact(event[key], found)
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        for name, context in list(contexts.items()):
            if name not in _SYSTEM_CONTEXTS:
                contexts[name] = redactor.redact(context, found)
            elif isinstance(context, dict) and isinstance(context.get("data"), dict):
                context["data"] = redactor.redact(context["data"], found)
    breadcrumbs = event.get("breadcrumbs")
    crumbs = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in crumbs if isinstance(crumbs, list) else ():
        if isinstance(crumb, dict) and "data" in crumb:
            crumb["data"] = redactor.redact(crumb["data"], found)
    for span in event.get("spans") or ():
        if isinstance(span, dict) and "data" in span:
            span["data"] = redactor.redact(span["data"], found)
    _redact_frame_vars(event, redactor, found)

    values = _spellings(found)
    result: Event = _map_strings(event, lambda text: redactor.redact_text(Redactor.scrub(text, values) or ""))
    return result


def _redact_frame_vars(node: Any, redactor: Redactor, found: list[str]) -> None:
    """Redact the local variables of every stack frame (exceptions, threads, chained causes)."""
    if isinstance(node, dict):
        frames = node.get("frames")
        if isinstance(frames, list):
            for frame in frames:
                if isinstance(frame, dict) and isinstance(frame.get("vars"), dict):
                    frame["vars"] = redactor.redact(frame["vars"], found)
        for value in node.values():
            if isinstance(value, dict | list):
                _redact_frame_vars(value, redactor, found)
    elif isinstance(node, list):
        for item in node:
            _redact_frame_vars(item, redactor, found)


def _spellings(values: Iterable[str]) -> list[str]:
    """Each value as it may appear in the event: plain, without ``repr`` quotes, escaped."""
    spellings: set[str] = set()
    for value in values:
        if value in _PLACEHOLDERS:
            continue
        candidates = [value, json.dumps(value)[1:-1], repr(value)[1:-1]]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            candidates.append(value[1:-1])  # a local variable's repr: 'alice@example.com'
        spellings.update(item for item in candidates if len(item) >= MIN_SCRUB_LENGTH)
    return sorted(spellings)


def _map_strings(node: Any, change: Callable[[str], str]) -> Any:
    if isinstance(node, str):
        return change(node)
    if isinstance(node, dict):
        return {key: _map_strings(value, change) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_map_strings(item, change) for item in node]
    return node
