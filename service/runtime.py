"""The process's broker and loaded actor modules.

Dramatiq binds actors to the global broker when they are declared, so the broker is built (from
settings) before any actor module is imported; :func:`get_broker` does that lazily and installs it
as Dramatiq's global broker. Actor modules are loaded by name: the shipped ones plus
``CALLBOARD_ACTOR_MODULES``.
"""

from __future__ import annotations

import importlib
import re
import threading

import dramatiq
from dramatiq import Broker

from config.settings import get_settings
from service.errors import ConfigurationError

#: The actor modules Callboard ships; users add theirs with ``CALLBOARD_ACTOR_MODULES``.
SHIPPED_ACTOR_MODULES: tuple[str, ...] = (
    "actors.diagnostics",
    "actors.maintenance",
    "actors.notifications",
    "actors.monitoring",
)

_lock = threading.RLock()
_broker: Broker | None = None
_loaded: tuple[str, ...] | None = None


def get_broker() -> Broker:
    """The process broker, built from settings on first use and set as Dramatiq's global broker."""
    global _broker
    with _lock:
        if _broker is None:
            from service.brokers.factory import build_broker
            from service.sentry import init_sentry

            init_sentry(get_settings())  # before the broker: Sentry patches Broker.__init__
            install(build_broker(get_settings()))
        assert _broker is not None
        return _broker


def install(broker: Broker) -> None:
    """Use ``broker`` for this process (tests and embedding applications)."""
    global _broker, _loaded
    with _lock:
        _broker = broker
        _loaded = None
        dramatiq.set_broker(broker)


def actor_module_names() -> tuple[str, ...]:
    """The shipped actor modules followed by ``CALLBOARD_ACTOR_MODULES``, without duplicates."""
    return tuple(dict.fromkeys((*SHIPPED_ACTOR_MODULES, *get_settings().actor_modules)))


def _duplicate_hint(error: Exception) -> str:
    # A plain ``@dramatiq.actor`` reusing a name fails with Dramatiq's ValueError, which does not
    # say where the first actor of that name comes from (``@actor`` says it itself).
    found = re.fullmatch(r"An actor named '(.+)' is already registered\.", str(error))
    if found is None:
        return ""
    from service.actors import first_declaration

    return first_declaration(found.group(1))


def load_actors() -> tuple[str, ...]:
    """Import every actor module once (after building the broker); returns their names.

    Raises :class:`ConfigurationError` naming the module that fails to import.
    """
    global _loaded
    with _lock:
        get_broker()
        if _loaded is None:
            names = actor_module_names()
            for name in names:
                try:
                    importlib.import_module(name)
                except Exception as error:  # any error in a user's module is a configuration error
                    raise ConfigurationError(
                        f"CALLBOARD_ACTOR_MODULES: cannot load actor module {name!r}: "
                        f"{type(error).__name__}: {error}{_duplicate_hint(error)}"
                    ) from None
            _loaded = names
        return _loaded
