"""Redaction of sensitive fields before data leaves the worker (dead-letter store, CLI, logs).

A field is sensitive when its name contains one of ``CALLBOARD_SENSITIVE_FIELDS`` (any case):
``password``, ``user_email``, ``access_token`` ... Positional arguments are named through the
actor's signature. Values of sensitive fields are also scrubbed from free text (exception
messages, tracebacks) so ``ValueError(f"bad address {email}")`` does not leak the address.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

REDACTED = "[redacted]"

#: Attribute of an actor function naming parameters that are sensitive whatever their name.
SENSITIVE_PARAMETERS = "__callboard_sensitive__"

F = TypeVar("F", bound=Callable[..., Any])

#: Values shorter than this are not scrubbed from free text: "1" or "ok" would mangle it.
MIN_SCRUB_LENGTH = 4


class Redactor:
    """Redacts values of fields whose names contain any of ``terms``."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(term.lower() for term in terms if term)

    def is_sensitive(self, name: str) -> bool:
        """Whether a field called ``name`` is sensitive."""
        lowered = name.lower()
        return any(term in lowered for term in self.terms)

    def redact(self, value: Any, found: list[str] | None = None) -> Any:
        """A copy of ``value`` with sensitive keys' values replaced (dicts and lists, recursively).

        The replaced values (as strings) are appended to ``found`` for :meth:`scrub`.
        """
        if isinstance(value, dict):
            result = {}
            for key, item in value.items():
                if isinstance(key, str) and self.is_sensitive(key):
                    _collect(item, found)
                    result[key] = REDACTED
                else:
                    result[key] = self.redact(item, found)
            return result
        if isinstance(value, list | tuple):
            return [self.redact(item, found) for item in value]
        return value

    def redact_call(
        self,
        fn: Callable[..., Any] | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        found: list[str] | None = None,
    ) -> tuple[list[Any], dict[str, Any]]:
        """``args`` and ``kwargs`` of a call to ``fn`` with sensitive parameters redacted.

        Positional arguments are matched to parameter names through ``fn``'s signature; without
        ``fn`` (unknown actor) only keyword names and nested dict keys can be judged.
        """
        names = _parameter_names(fn, len(args))
        marked: frozenset[str] = getattr(fn, SENSITIVE_PARAMETERS, frozenset())
        redacted_args = []
        for index, item in enumerate(args):
            name = names[index] if index < len(names) else None
            if name is not None and (name in marked or self.is_sensitive(name)):
                _collect(item, found)
                redacted_args.append(REDACTED)
            else:
                redacted_args.append(self.redact(item, found))
        redacted_kwargs = self.redact({k: v for k, v in kwargs.items() if k not in marked}, found)
        for key in kwargs.keys() & marked:
            _collect(kwargs[key], found)
            redacted_kwargs[key] = REDACTED
        return redacted_args, redacted_kwargs

    def redact_text(self, text: str) -> str:
        """``text`` with values after ``<sensitive name>=`` or ``<sensitive name>:`` redacted."""
        if not self.terms:
            return text
        pattern = "|".join(re.escape(term) for term in self.terms)
        return re.sub(
            rf"((?:{pattern})[\w-]*[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&]+)",
            rf"\1{REDACTED}",
            text,
            flags=re.IGNORECASE,
        )

    @staticmethod
    def scrub(text: str | None, values: Iterable[str]) -> str | None:
        """``text`` with every occurrence of ``values`` replaced by ``[redacted]``."""
        if not text:
            return text
        for value in sorted(set(values), key=len, reverse=True):
            if len(value) >= MIN_SCRUB_LENGTH:
                text = text.replace(value, REDACTED)
        return text


def sensitive_values(
    redactor: Redactor, fn: Callable[..., Any] | None, args: Sequence[Any], kwargs: dict[str, Any]
) -> list[str]:
    """The values of ``fn``'s sensitive arguments in a call, as strings (for :meth:`Redactor.scrub`)."""
    found: list[str] = []
    redactor.redact_call(fn, args, kwargs, found)
    return found


def _collect(value: Any, found: list[str] | None) -> None:
    if found is None:
        return
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)
    elif value is not None:
        found.append(str(value))


def _parameter_names(fn: Callable[..., Any] | None, count: int) -> list[str | None]:
    if fn is None:
        return []
    try:
        positional, var_positional = _signature_names(fn)
    except TypeError:  # unhashable callable: no cache
        positional, var_positional = _signature_names.__wrapped__(fn)
    names: list[str | None] = list(positional)
    if var_positional is not None and count > len(names):
        names += [var_positional] * (count - len(names))
    return names


@functools.lru_cache(maxsize=1024)
def _signature_names(fn: Callable[..., Any]) -> tuple[tuple[str, ...], str | None]:
    # Cached: logs redact every message's arguments, and inspect.signature is slow.
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return (), None
    names: list[str] = []
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return tuple(names), parameter.name
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
    return tuple(names), None


def sensitive_parameters(*names: str) -> Callable[[F], F]:
    """Mark parameters of an actor function as sensitive although their names match none of
    ``CALLBOARD_SENSITIVE_FIELDS`` (``to`` of ``send_email``): their values are redacted and
    scrubbed wherever the sensitive fields' are (logs, dead-letter store). Apply below ``@actor``.
    """

    def mark(fn: F) -> F:
        setattr(fn, SENSITIVE_PARAMETERS, frozenset(names) | getattr(fn, SENSITIVE_PARAMETERS, frozenset()))
        return fn

    return mark


def fingerprint(value: str) -> str:
    """A short stable stand-in for ``value`` (an email address) in logs and results: ``h:`` and
    the first 12 hex digits of the SHA-256 of the stripped, lower-cased value.

    It links repeated values without showing them; it does not hide a value from someone who can
    guess it (hash a candidate and compare), so it is a pseudonym, not encryption.
    """
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()
    return f"h:{digest[:12]}"
