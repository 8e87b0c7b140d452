"""The one function that builds a broker and its whole middleware stack."""

from __future__ import annotations

from dramatiq import Broker, Middleware
from dramatiq.middleware import AsyncIO, Callbacks, GroupCallbacks, Pipelines, ShutdownNotifications
from dramatiq.rate_limits.backends import RedisBackend as BarrierBackend

from config.settings import Settings
from service.brokers.embedded import EmbeddedRedis
from service.brokers.rabbitmq import CallboardRabbitmqBroker
from service.brokers.redis import CallboardRedisBroker
from service.deadletters.mover import DeadLetterMover
from service.middleware.breakers import Breakers
from service.middleware.context import MessageContext
from service.middleware.expiry import Expiry
from service.middleware.handback import HandBack
from service.middleware.idempotency import Idempotency
from service.middleware.metrics import Metrics
from service.middleware.recycle import Recycle
from service.middleware.results import ResultStorage
from service.middleware.retries import Retries
from service.middleware.run_markers import RunMarkers
from service.middleware.status import StatusTracking
from service.middleware.time_limits import TimeLimits
from service.middleware.validation import Validation
from service.sentry import SentryContext, sentry_enabled
from service.state import state_client


def build_middleware(settings: Settings) -> list[Middleware]:
    """The middleware stack, in order.

    Dramatiq runs ``before_*`` hooks in this order and ``after_*`` hooks in reverse, so:

    0. With Sentry on: Sentry's middleware (inserted by its integration) and ``SentryContext``,
       which tags the message's Sentry scope and reports ``throws`` dead letters; their
       ``after`` hooks run last, once every decision about the attempt is made.

    1. ``MessageContext``: first in, last out, so every other hook logs with the message's context.
    1b. ``Validation``: right behind it, so a rejection is logged with the message's context and
       no later hook reads the options of a message it rejects (an option of the wrong type, a
       queue its actor may not use). Its ``before_enqueue`` measures the message with its
       ``request_id``; ``service.intake.IN_FLIGHT_ALLOWANCE`` leaves room for what comes later.
    2. ``Metrics``: its ``after`` hooks run after Retries' and Expiry's, so it counts the outcome
       they decided; its ``before`` hook measures the wait before anything else runs. Left out
       when ``CALLBOARD_METRICS_PORT`` is 0 (nothing would serve what it counts).
    3. ``DeadLetterMover``: drains the broker's dead-letter queues into the store (a thread).
    3b. ``ResultStorage``: stores redacted results of ``store_results`` actors; its ``after``
       hooks run after Retries', so a failure is stored only once it is final.
    3c. ``StatusTracking``: records each message's state; its ``after`` hooks run after
       Retries', Expiry's, Idempotency's and Breakers', so it records what they decided.
    4. ``Callbacks``, ``Pipelines``, ``GroupCallbacks``, ``ShutdownNotifications``, ``AsyncIO``
       (Dramatiq's): ``on_success`` / ``on_failure``, ``pipeline()``, group completion callbacks
       (a barrier on the state Redis), ``notify_shutdown`` and the event loop of ``async def``
       actors work as in plain Dramatiq (as there, ``on_failure`` fires after every failed
       attempt, retried ones included).
    5. ``RunMarkers``: clears a scheduled run's overlap mark once it ends for good; its ``after``
       hooks run after Retries', so a failure that will be retried keeps the mark.
    6. ``Expiry``: skips messages past their ``max_age`` before any work (not a failure).
    6b. ``Idempotency``: claims a keyed message's idempotency key after Expiry (an expired message
       claims nothing) and before anything runs; skips duplicates. Its ``after`` hooks run after
       Retries' and release the key of a failed attempt.
    6c. ``Breakers``: delays a message whose circuit breaker is open (re-enqueued, not failed)
       after Expiry, so an expired message is not delayed; before Retries, so its ``after`` hook
       runs once Retries has decided, and a delayed message never reaches Retries.
    7. ``Retries``: decides retry or death after the actor and the hooks below have run.
    8. ``Recycle``: counts messages for process recycling.
    9. ``HandBack``: tracks running messages so shutdown can return them to the broker.
    10. ``TimeLimits``: last in, first out, so the limits cover the actor and nothing else.
    """
    metrics: list[Middleware] = [Metrics()] if settings.metrics_port else []
    # Sentry's integration puts its own middleware in front of the stack when the broker is
    # built; ours must come right behind it, within the scope it opens per message.
    sentry: list[Middleware] = [SentryContext()] if sentry_enabled() else []
    return [
        *sentry,
        MessageContext(),
        Validation(max_message_bytes=settings.max_message_bytes),
        *metrics,
        DeadLetterMover(interval=settings.dlq_drain_interval),
        ResultStorage(sensitive_fields=settings.sensitive_fields, result_ttl=settings.result_ttl),
        StatusTracking(
            ttl=settings.status_ttl,
            interval=settings.status_flush_interval,
            sensitive_fields=settings.sensitive_fields,
        ),
        Callbacks(),
        Pipelines(),
        GroupCallbacks(None),  # type: ignore[arg-type]  # its barrier backend is attached below
        ShutdownNotifications(),
        AsyncIO(),
        RunMarkers(),
        Expiry(),
        Idempotency(redis_timeout=settings.idempotency_redis_timeout, failover=settings.idempotency_failover),
        Breakers(settings),
        Retries(),
        Recycle(max_messages=settings.worker_max_messages),
        HandBack(),
        TimeLimits(),
    ]


def build_broker(settings: Settings, *, url: str | None = None) -> Broker:
    """A broker for ``url`` (default: ``CALLBOARD_BROKER_URL``, else the embedded Redis's socket)
    with the stack of :func:`build_middleware`.

    ``amqp://`` and ``amqps://`` give RabbitMQ; ``redis://``, ``rediss://`` (TLS; certificate
    options as URL query parameters, e.g. ``?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem``) and
    ``unix://`` give Redis. Building connects to nothing: the first send or fetch does.
    """
    url = url or settings.broker_url or EmbeddedRedis(settings.data_dir).url
    middleware = build_middleware(settings)
    broker: Broker
    if url.startswith(("amqp://", "amqps://")):
        broker = CallboardRabbitmqBroker(url=url, middleware=middleware)
    else:
        # Dramatiq's own (probabilistic) recovery uses the same timeout as the rescuer.
        broker = CallboardRedisBroker(
            url=url, middleware=middleware, heartbeat_timeout=int(settings.heartbeat_timeout * 1000)
        )
    state = state_client(broker, settings)  # results, status and barriers live there
    for each in middleware:
        if isinstance(each, ResultStorage | StatusTracking):
            each.attach(state)
        elif isinstance(each, GroupCallbacks) and state is not None:
            each.rate_limiter_backend = BarrierBackend(client=state)
    return broker
