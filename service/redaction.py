"""Redaction of sensitive fields before data leaves the worker (dead-letter store, CLI, logs).

A field is sensitive when its name contains one of ``CALLBOARD_SENSITIVE_FIELDS`` (any case):
``password``, ``user_email``, ``access_token`` ... Positional arguments are named through the
actor's signature. Values of sensitive fields are also scrubbed from free text (exception
messages, tracebacks) so ``ValueError(f"bad address {email}")`` does not leak the address.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

REDACTED = "[redacted]"

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
        redacted_args = []
        for index, item in enumerate(args):
            name = names[index] if index < len(names) else None
            if name is not None and self.is_sensitive(name):
                _collect(item, found)
                redacted_args.append(REDACTED)
            else:
                redacted_args.append(self.redact(item, found))
        return redacted_args, self.redact(dict(kwargs), found)

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
