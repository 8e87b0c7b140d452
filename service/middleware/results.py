"""Result storage: opt-in per actor (``store_results=True``), redacted like logs, on the state Redis.

Guarantees:
  * Only actors (or messages) with ``store_results=True`` store anything: the return value of a
    success, ``None`` for a message skipped without failing (expired, duplicate), the exception
    (type and message) of a message that failed for good. Dramatiq's ``message.get_result()``
    reads them back (``ResultFailure`` for a failure).
  * Before it is stored, a result passes through the same redaction as logs
    (:mod:`service.redaction`): values under a sensitive key (``CALLBOARD_SENSITIVE_FIELDS``) are
    replaced by ``[redacted]``, and the values of the call's sensitive arguments are scrubbed from
    every string in it and from an exception's message.
  * Results live ``result_ttl`` in the state Redis (:func:`service.state.state_client`), under
    ``callboard:results:<queue>:<actor>:<message id>``; with no state Redis (RabbitMQ and no
    ``CALLBOARD_REDIS_URL``) nothing is stored and the first attempt to store logs
    ``results.unavailable`` once.
  * Unlike Dramatiq's ``Results``, an actor that returns a value without ``store_results`` logs
    nothing (maintenance actors return their counts).

Options (message → actor → policy):
  store_results(bool): store this actor's results. Defaults to False.
  result_ttl(int): milliseconds a result is kept. Defaults to the policy's ``result_ttl``, else
    ``CALLBOARD_RESULT_TTL`` (1 hour), through the factory.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Broker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from service.logs import log_event
from service.redaction import Redactor, sensitive_values

logger = logging.getLogger(__name__)

#: Results are kept under ``callboard:results:<queue>:<actor>:<message id>`` (a Redis list).
NAMESPACE = "callboard:results"


class ResultStorage(Results):
    """Dramatiq's ``Results`` with redaction, on a backend attached once the broker exists.

    Parameters:
      sensitive_fields(list[str]): what redaction treats as sensitive
        (``CALLBOARD_SENSITIVE_FIELDS``, through the factory).
      result_ttl(float): seconds a result is kept unless the actor says otherwise.
    """

    def __init__(self, *, sensitive_fields: list[str], result_ttl: float) -> None:
        super().__init__(backend=None, result_ttl=int(result_ttl * 1000))
        self.redactor = Redactor(sensitive_fields)
        self._warned = False

    def attach(self, client: Any) -> None:
        """Store results in ``client`` (the state Redis); ``None`` leaves storage off."""
        self.backend = (
            RedisBackend(client=client, namespace=NAMESPACE, use_namespace_prefix_keys=True)
            if client is not None
            else None
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        store, ttl = self._lookup_options(broker, message)
        if store and exception is None and self._ready():
            self.backend.store_result(message, self._redact(broker, message, result), ttl)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        if self._ready(quiet=True):
            super().after_skip_message(broker, message)

    def after_nack(self, broker: Broker, message: Any) -> None:
        store, ttl = self._lookup_options(broker, message)
        if store and message.failed and self._ready():
            exception = message._exception or Exception("unknown")
            # The backend keeps the type's name and the text: a stand-in of the same name carries
            # the redacted text (the real type's constructor may not take one string).
            stand_in = type(type(exception).__name__, (Exception,), {})
            text = self._redact(broker, message, str(exception))
            self.backend.store_exception(message, stand_in(text), ttl)

    def _redact(self, broker: Broker, message: Any, value: Any) -> Any:
        fn = broker.actors[message.actor_name].fn if message.actor_name in broker.actors else None
        values = sensitive_values(self.redactor, fn, message.args, message.kwargs)
        return _scrub(self.redactor.redact(value, values), values)

    def _ready(self, *, quiet: bool = False) -> bool:
        if self.backend is not None:
            return True
        if not self._warned and not quiet:
            self._warned = True
            log_event(logger, logging.WARNING, "results.unavailable", error="no state Redis for results")
        return False


def _scrub(value: Any, values: list[str]) -> Any:
    if isinstance(value, str):
        return Redactor.scrub(value, values)
    if isinstance(value, dict):
        return {key: _scrub(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, values) for item in value]
    return value
