"""Idempotency keys against real Redis, a real database and real worker processes; result storage.

Runs are counted in Redis by the actors (:mod:`tests.support.records`), duplicates in the
workers' logs and metrics, never in this process's memory.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from dramatiq import Broker
from dramatiq.common import current_millis
from dramatiq.results import ResultFailure
from sqlalchemy import func, select

from service import send, send_many
from service.brokers.embedded import EmbeddedRedis
from service.brokers.redis import FETCH_CLAIM, Acks, CallboardRedisBroker
from service.db.engine import session
from service.deadletters import store as dead_letters
from service.errors import BadInputError
from service.idempotency import Claim, KeyStore, database, message_key
from service.idempotency.database import IdempotencyRecord
from service.idempotency.keys import Store
from service.idempotency.redis_store import FALLBACK_FLAG, PREFIX
from service.middleware.idempotency import CLAIM_OPTION, Idempotency
from service.schedule_history import Fire
from tests.conftest import configure_process
from tests.integration.conftest import StartWorker
from tests.support import idempotency_actors
from tests.support.actors import QUEUE
from tests.support.ports import free_port
from tests.support.processes import CallboardProcess, run_callboard
from tests.support.producer import adopt_actors
from tests.support.records import entries
from tests.support.waiting import wait_until

MODULES = "tests.support.actors,tests.support.idempotency_actors"


@pytest.fixture
def env(
    worker_env: dict[str, str], redis_producer: Broker, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This process configured like the workers (database, broker), producing the test actors."""
    adopt_actors(idempotency_actors, redis_producer)
    return configure_process({**worker_env, "CALLBOARD_ACTOR_MODULES": MODULES}, monkeypatch)


def start(start_worker: StartWorker, **env: str) -> CallboardProcess:
    return start_worker(CALLBOARD_ACTOR_MODULES=MODULES, **env)


def runs(tag: str) -> int:
    return len(entries(tag, "run"))


def duplicates(*workers: CallboardProcess) -> int:
    return sum(len(worker.events("message.duplicate")) for worker in workers)


def scraped_duplicates(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("callboard_idempotent_duplicates_total{")
    )


def key_rows() -> int:
    with session() as db:
        return int(db.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0)


# -- the key store itself, on each side ------------------------------------------------------


@pytest.fixture(params=["redis", "database"])
def side(request: pytest.FixtureRequest) -> str:
    """Where claims go: Redis, or (``idempotency_store="database"``) the database."""
    return str(request.param)


def test_a_key_is_held_by_one_message_until_released_or_expired(
    side: Store, redis_client: redis.Redis, migrated_database_url: str
) -> None:
    keys = KeyStore(redis_client, database_url=migrated_database_url)
    key = "k" * 64
    first = keys.claim(key, "m1", "ti_once", 60, side)
    assert first is not None and first.stores == (side,)
    # Another message is a duplicate; the same message coming back after a crash re-claims
    assert keys.claim(key, "m2", "ti_once", 60, side) is None
    assert keys.claim(key, "m1", "ti_once", 60, side) is not None
    # Only the holder releases: another message's release changes nothing
    keys.release(Claim(key, "m2", 60, (side,)))
    assert keys.claim(key, "m3", "ti_once", 60, side) is None
    keys.release(first)
    third = keys.claim(key, "m3", "ti_once", 60, side)
    assert third is not None
    # Once done, even the same message id (a redelivery) is a duplicate, until the TTL runs out
    keys.succeed(Claim(key, "m3", 0.3, (side,)))
    assert keys.claim(key, "m3", "ti_once", 60, side) is None
    assert keys.claim(key, "m4", "ti_once", 60, side) is None
    wait_until(lambda: keys.claim(key, "m4", "ti_once", 60, side), timeout=10, message="the key to expire")


def test_claims_fall_back_to_the_database_and_redis_learns_of_them_when_back(
    migrated_database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    state = EmbeddedRedis(tmp_path / "state", tcp_port=port)
    state.start()
    try:
        quick = redis.Redis.from_url(state.url, socket_timeout=0.25, socket_connect_timeout=0.25)
        worker_a = KeyStore(quick, database_url=migrated_database_url, failover=0)
        worker_b = KeyStore(quick, database_url=migrated_database_url, failover=0)
        # Given Redis is down: claims go to the database, and duplicates are still caught there
        state.stop()
        during = worker_a.claim("d" * 64, "m1", "ti_once", 60)
        assert during is not None and during.stores == ("database",)
        assert worker_b.claim("d" * 64, "m2", "ti_once", 60) is None
        worker_a.succeed(during)
        # When Redis is back, the first claim there raises the flag for the keys claimed meanwhile
        state.start()
        after = worker_a.claim("e" * 64, "m3", "ti_once", 60)
        assert after is not None and after.stores == ("redis", "database")
        # Then a copy of the outage-time key is caught even though Redis never saw it
        assert worker_b.claim("d" * 64, "m4", "ti_once", 60) is None
    finally:
        state.stop()


# -- real workers ----------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_the_same_key_sent_50_times_at_once_to_two_workers_runs_once(
    start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    ports = [free_port(), free_port()]
    workers = [start(start_worker, CALLBOARD_METRICS_PORT=str(port)) for port in ports]
    # When 50 messages with one key (and different arguments) are sent at once
    send_many("ti_once", [["fifty", n, 0.3] for n in range(50)], idempotency_keys=["order-42"] * 50)
    # Then one runs and the other 49 are acked as duplicates, logged and counted
    wait_until(lambda: duplicates(*workers) == 49, timeout=60, message="49 duplicates")
    assert runs("fifty") == 1
    # The success is kept (sent in a batch by the worker's settling thread) as done
    key = PREFIX + message_key("ti_once", [], {}, {"idempotency_key": "order-42"}, "global")
    wait_until(lambda: (redis_client.get(key) or b"").startswith(b"done:"), timeout=10, message="done")
    assert sum(scraped_duplicates(port) for port in ports) == 49
    assert all(line["outcome"] == "skipped" for w in workers for line in w.events("message.finished"))


def test_callboard_send_with_a_key_runs_once_on_every_broker(
    operator_env: dict[str, str], producer: Broker, start_worker: StartWorker, broker_url: str
) -> None:
    env = {**operator_env, "CALLBOARD_ACTOR_MODULES": MODULES}
    worker = start(start_worker)
    # When the same key is sent twice from the command line
    for n in (1, 2):
        sent = run_callboard(
            "send", "ti_once", "--args", f'["cli", {n}]', "--idempotency-key", "cli-key", env=env
        )
        assert sent.returncode == 0, sent.stderr
    # Then one message runs and the other is a duplicate; without a state Redis (RabbitMQ and
    # no CALLBOARD_REDIS_URL) the key lives in the database
    worker.wait_for_event("message.duplicate", timeout=30)
    assert runs("cli") == 1
    assert key_rows() == (1 if broker_url.startswith("amqp") else 0)


@pytest.mark.usefixtures("env")
def test_a_failure_releases_the_key_success_keeps_it_and_expiry_frees_it(
    start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    worker = start(start_worker)
    # When the first attempt fails, the key is released and the retry runs
    send("ti_fail_once", ["life"])
    wait_until(lambda: runs("life") == 1, timeout=30, message="the retry to run")
    assert len(entries("life", "failed")) == 1
    # A copy sent after the success is a duplicate while the key lives (1 s for this actor)
    send("ti_fail_once", ["life"])
    worker.wait_for_event("message.duplicate")
    assert runs("life") == 1
    # Once the key expires, a copy runs again
    key = PREFIX + message_key("ti_fail_once", ["life"], {}, {}, "global")
    wait_until(lambda: not redis_client.exists(key), timeout=10, message="the key to expire")
    send("ti_fail_once", ["life"])
    wait_until(lambda: runs("life") == 2, timeout=30, message="a run after expiry")


@pytest.mark.usefixtures("env")
def test_user_and_tenant_scopes_namespace_keys_and_refuse_messages_without_them(
    start_worker: StartWorker,
) -> None:
    worker = start(start_worker)
    send("ti_per_user", ["users"], user_id=1)
    send("ti_per_user", ["users"], user_id="2")
    send("ti_per_user", ["users"], user_id=1)
    send("ti_per_tenant", ["tenants"], tenant_id="acme")
    send("ti_per_tenant", ["tenants"], tenant_id="acme")
    send("ti_per_tenant", ["tenants"], tenant_id="globex")
    wait_until(lambda: duplicates(worker) == 2 and runs("users") == 2 and runs("tenants") == 2, timeout=30)
    assert key_rows() == 2  # the tenant actor keeps its keys in the database
    # A sender is told at once; a producer that bypasses send gets a bad_options dead letter
    with pytest.raises(BadInputError, match="needs the message option 'user_id'"):
        send("ti_per_user", ["users"])
    idempotency_actors.ti_per_tenant.send("raw")
    rejected = wait_until(
        lambda: dead_letters.list_dead(dead_letters.Selection(reason="bad_options"), limit=10), timeout=30
    )
    assert rejected[0]["actor"] == "ti_per_tenant" and "tenant_id" in str(rejected[0]["exception"])
    assert runs("raw") == 0


@pytest.mark.usefixtures("env")
def test_claims_go_to_the_database_when_the_state_redis_stops(
    start_worker: StartWorker, tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path / "state", tcp_port=free_port()) as state:
        # Given a worker whose state Redis is its own server (the broker stays on the run's Redis)
        worker = start(start_worker, CALLBOARD_REDIS_URL=state.url)
        send("ti_once", ["before"])
        wait_until(lambda: runs("before") == 1, timeout=30, message="a run before the outage")
        assert redis.Redis.from_url(state.url).keys(PREFIX + "*")
        assert key_rows() == 0
        # When the state Redis stops mid-test
        state.stop()
        send("ti_once", ["during"])
        wait_until(lambda: runs("during") == 1, timeout=30, message="a run during the outage")
        send("ti_once", ["during"])
        # Then the claim went to the database, and the copy is still caught there
        worker.wait_for_event("message.duplicate", timeout=30)
        worker.wait_for_event("idempotency.redis_unavailable")
        assert runs("during") == 1
        assert key_rows() == 1


@pytest.mark.usefixtures("env")
def test_stored_results_and_failures_are_redacted(
    start_worker: StartWorker, redis_producer: Broker, redis_client: redis.Redis
) -> None:
    start(start_worker)
    backend = redis_producer.get_results_backend()
    # When an actor with store_results returns data that names its sensitive argument
    result = idempotency_actors.ti_result.send("alice@example.com").get_result(
        backend=backend, block=True, timeout=30_000
    )
    # Then the stored result carries neither the argument nor a sensitive field's value
    assert result == {
        "email": "[redacted]",
        "note": "mailed [redacted]",
        "api_token": "[redacted]",
        "count": 1,
    }
    failed = idempotency_actors.ti_result.send("bob@example.com", fail=True)
    with pytest.raises(ResultFailure) as error:
        failed.get_result(backend=backend, block=True, timeout=30_000)
    assert "ValueError" in str(error.value) and "bob@example.com" not in str(error.value)
    stored = [b"".join(redis_client.lrange(key, 0, -1)) for key in redis_client.keys("callboard:results:*")]
    assert len(stored) == 2
    assert stored and not any(b"@example.com" in value or b"tok-123456" in value for value in stored)


# -- retention -------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_prune_history_reports_what_it_removed_per_store(caplog: pytest.LogCaptureFixture) -> None:
    from actors.maintenance import prune_history

    now = datetime.now(UTC)
    with session() as db:
        for entry, days in (("old", 40), ("older", 90), ("young", 1)):
            sent = now - timedelta(days=days)
            db.add(Fire(entry=entry, slot=sent, sent_at=sent, lateness=0.0, outcome="sent", token=1))
    for key, ttl in (("a", 0.001), ("b", 0.001), ("c", 3600)):
        assert database.claim(key * 64, "m", "ti_once", ttl)
    wait_until(lambda: database.claim("x" * 64, "probe", "ti_once", 0.001) is not None, timeout=5)
    caplog.set_level(logging.INFO, logger="actors.maintenance")
    removed = prune_history.fn()
    assert removed == {"dead_letters": 0, "schedule_fires": 2, "idempotency_keys": 3}
    event = next(r for r in caplog.records if getattr(r, "event", None) == "maintenance.pruned")
    assert event.fields == removed  # type: ignore[attr-defined]
    assert key_rows() == 1
    assert json.dumps(removed)  # JSON-able: it is the actor's result


def test_a_success_goes_to_redis_in_the_call_that_acks_its_message(
    redis_url: str, redis_client: redis.Redis, migrated_database_url: str, tmp_path: Path
) -> None:
    from config.settings import load_settings
    from service.brokers.factory import build_broker

    broker = build_broker(load_settings(data_dir=tmp_path), url=redis_url)
    try:
        assert isinstance(broker, CallboardRedisBroker)
        key = "w" * 64
        keys = KeyStore(redis_client, database_url=migrated_database_url)
        assert keys.claim(key, "m1", "ti_once", 60) is not None
        # Given a success recorded for the message's queue, as the middleware does after a run
        broker.succeed_with_ack("q", PREFIX + key, "m1", 60_000)
        assert redis_client.get(PREFIX + key) == b"run:m1"
        # When the consumer thread sends that queue's acks
        broker.ack_and_fetch("q", broker.take_acks("q"), 0)
        # Then the success was written by the same call
        assert redis_client.get(PREFIX + key) == b"done:m1"
        assert 50 < redis_client.pttl(PREFIX + key) <= 60_000
        # And a success whose message no longer holds the key changes nothing
        broker.succeed_with_ack("q", PREFIX + key, "m2", 60_000)
        broker.flush_acks()
        assert redis_client.get(PREFIX + key) == b"done:m1"
    finally:
        broker.close()


def test_a_deferred_success_reaches_redis_before_the_ack_of_its_message(
    redis_url: str, redis_client: redis.Redis, migrated_database_url: str, tmp_path: Path
) -> None:
    from config.settings import load_settings
    from service.brokers.factory import build_broker
    from service.middleware.idempotency import Idempotency

    broker = build_broker(load_settings(data_dir=tmp_path), url=redis_url)
    try:
        middleware = next(m for m in broker.middleware if isinstance(m, Idempotency))
        # As when the state Redis is not the broker's (CALLBOARD_REDIS_URL elsewhere): the fetch
        # claims nothing and successes are deferred, flushed before acks
        middleware._on_fetch = False
        keys = middleware.store(broker)
        assert keys._deferred is not None
        keys._deferred.interval = 3600  # the background batch would not come in time
        key = "d" * 64
        claim = keys.claim(key, "m1", "ti_once", 60)
        assert claim is not None
        # Given a success handed over for later, as a worker thread does after a run
        keys.succeed(claim, defer=True)
        assert redis_client.get(PREFIX + key) == b"run:m1"
        # When the consumer thread sends the message's ack
        broker.ack_and_fetch("q", Acks(["redis-id-of-m1"], []), 0)
        # Then the success was written first: a redelivered copy would find it done
        assert redis_client.get(PREFIX + key) == b"done:m1"
    finally:
        broker.close()


# -- claims made by the fetch ------------------------------------------------------------------


def _fetch_claiming_consumer(broker: Broker) -> Any:
    """A consumer of the test queue whose fetches claim keys, as in a booted worker."""
    middleware = next(m for m in broker.middleware if isinstance(m, Idempotency))
    middleware.before_worker_boot(broker, None)  # type: ignore[arg-type]  # no worker needed
    return broker.consume(QUEUE, prefetch=16, timeout=100)


@pytest.mark.usefixtures("env")
def test_the_fetch_claims_the_key_the_producer_wrote_into_the_message(
    redis_producer: Broker, redis_client: redis.Redis
) -> None:
    # Given a keyed message sent through Callboard's Redis broker
    sent = idempotency_actors.ti_once.send("fetched")
    key = message_key("ti_once", ["fetched"], {}, {}, "global")
    stored = json.loads(redis_client.hget(f"dramatiq:{QUEUE}.msgs", sent.options["redis_message_id"]))
    assert stored["options"][CLAIM_OPTION] == f"{key} {24 * 3600 * 1000} k1.global"
    consumer = _fetch_claiming_consumer(redis_producer)
    # When a worker's consumer fetches it
    first = next(consumer)
    # Then the fetch claimed the key for the message, before anything ran
    assert first is not None and first.__dict__[FETCH_CLAIM] == 1
    assert redis_client.get(PREFIX + key) == f"run:{sent.message_id}".encode()
    # And a copy fetched later is told it is a duplicate by its own fetch
    send("ti_once", ["fetched"])
    second = next(consumer)
    assert second is not None and second.__dict__[FETCH_CLAIM] == 0
    # While an unkeyed message claims nothing
    send("tb_record", ["plain"])
    third = next(consumer)
    assert third is not None and FETCH_CLAIM not in third.__dict__
    # And while the database-fallback flag is up, a fetched claim says the database must be
    # checked too (outcome 2)
    redis_client.set(FALLBACK_FLAG, "1", px=60_000)
    idempotency_actors.ti_once.send("flagged")
    fourth = next(consumer)
    assert fourth is not None and fourth.__dict__[FETCH_CLAIM] == 2


@pytest.mark.usefixtures("env")
def test_a_fetched_claim_is_freed_when_its_message_is_refused_at_intake(
    redis_producer: Broker, redis_client: redis.Redis
) -> None:
    # Given a keyed message whose body names another queue than the one it was pushed to
    sent = idempotency_actors.ti_once.send("refused")
    redis_id = sent.options["redis_message_id"]
    body = json.loads(redis_client.hget(f"dramatiq:{QUEUE}.msgs", redis_id))
    body["queue_name"] = "elsewhere"
    redis_client.hset(f"dramatiq:{QUEUE}.msgs", redis_id, json.dumps(body))
    consumer = _fetch_claiming_consumer(redis_producer)
    # When the consumer fetches it (claiming its key) and refuses it
    assert next(consumer) is None
    # Then it is a dead letter and its key is free again
    assert redis_client.zscore(f"dramatiq:{QUEUE}.XQ", redis_id) is not None
    assert not redis_client.exists(PREFIX + message_key("ti_once", ["refused"], {}, {}, "global"))


@pytest.mark.usefixtures("env")
def test_a_message_that_expires_before_running_frees_the_key_its_fetch_claimed(
    start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    # Given a keyed message that is past its max_age when a worker fetches it
    sent = idempotency_actors.ti_once.send_with_options(args=("expired",), max_age=200)
    wait_until(lambda: current_millis() - sent.message_timestamp > 250, timeout=5, message="age")
    worker = start(start_worker)
    # When the worker skips it as expired (the fetch had claimed its key)
    worker.wait_for_event("message.expired", timeout=30)
    # Then the key is freed (after the skip: a copy fetched before that is a duplicate, as a
    # copy of any message still in flight is)
    key = PREFIX + message_key("ti_once", ["expired"], {}, {}, "global")
    wait_until(lambda: not redis_client.exists(key), timeout=10, message="the expired message's key freed")
    # And the same call sent again runs
    send("ti_once", ["expired"])
    wait_until(lambda: runs("expired") == 1, timeout=30, message="the second copy to run")
    assert not worker.events("message.duplicate")


@pytest.mark.usefixtures("env")
def test_hostile_claim_options_claim_nothing_and_break_no_fetch(
    redis_producer: Broker, redis_client: redis.Redis
) -> None:
    # Given bodies whose claim option is of the wrong type or shape, or that do not decode
    hostile = [42, ["a" * 64, 1], "not hex 100", "ab 0", "ab -5", f"{'a' * 64}", None]
    sent = [idempotency_actors.ti_once.send("hostile", n) for n in range(len(hostile) + 1)]
    bodies = f"dramatiq:{QUEUE}.msgs"
    for message, spec in zip(sent, hostile, strict=False):
        _write_claim(redis_client, message, spec)
    garbage = b'{"options": {"callboard_claim": "' + b"[" * 5000
    redis_client.hset(bodies, sent[-1].options["redis_message_id"], garbage)
    consumer = _fetch_claiming_consumer(redis_producer)
    # When a consumer fetches them all
    fetched = [next(consumer) for _ in range(len(hostile) - 2)]
    # Then none carries a claim made by the fetch (the worker claims them itself), the claims that
    # are not strings and the garbage body are dead-lettered, and no key was claimed
    assert all(m is not None and FETCH_CLAIM not in m.__dict__ for m in fetched)
    assert next(consumer) is None
    assert redis_client.zcard(f"dramatiq:{QUEUE}.XQ") == 3
    assert not redis_client.keys(PREFIX + "*")


@pytest.mark.usefixtures("env")
def test_a_claim_that_is_not_the_messages_own_is_freed_before_it_runs(
    redis_producer: Broker, redis_client: redis.Redis
) -> None:
    # Given an unkeyed message, and a keyed one whose claim names a key that is not its own,
    # as a producer with other rules (or a sender) could write them
    plain = idempotency_actors.ti_result.send("a@example.com")
    keyed = idempotency_actors.ti_once.send("foreign")
    # (the keyed one says its key was derived for another scope: the worker derives it again)
    for message, spec in ((plain, "a" * 64 + " 60000"), (keyed, "b" * 64 + " 60000 k1.user")):
        _write_claim(redis_client, message, spec)
    consumer = _fetch_claiming_consumer(redis_producer)
    middleware = next(m for m in redis_producer.middleware if isinstance(m, Idempotency))
    fetched = [next(consumer), next(consumer)]
    assert all(m is not None and m.__dict__[FETCH_CLAIM] == 1 for m in fetched)
    assert redis_client.exists(PREFIX + "a" * 64, PREFIX + "b" * 64) == 2
    # When the worker's hook looks at them before they run
    for message in fetched:
        middleware.before_process_message(redis_producer, message)
    # Then both foreign keys are free again, and the keyed message holds its own key
    assert redis_client.exists(PREFIX + "a" * 64, PREFIX + "b" * 64) == 0
    own = PREFIX + message_key("ti_once", ["foreign"], {}, {}, "global")
    assert redis_client.get(own) == f"run:{keyed.message_id}".encode()


@pytest.mark.usefixtures("env")
def test_a_claim_derived_as_the_worker_would_is_used_without_deriving_it_again(
    redis_producer: Broker, redis_client: redis.Redis
) -> None:
    # Given a keyed message whose claim says it was derived as the worker derives the actor's
    # keys (version and scope), naming a digest the worker would not derive from its arguments
    keyed = idempotency_actors.ti_once.send("trusted")
    _write_claim(redis_client, keyed, "c" * 64 + " 60000 k1.global")
    consumer = _fetch_claiming_consumer(redis_producer)
    middleware = next(m for m in redis_producer.middleware if isinstance(m, Idempotency))
    fetched = next(consumer)
    assert fetched is not None and fetched.__dict__[FETCH_CLAIM] == 1
    # When the worker's hook looks at it before it runs
    middleware.before_process_message(redis_producer, fetched)
    # Then the message runs under the claimed digest: nothing was derived, freed or claimed again
    assert redis_client.get(PREFIX + "c" * 64) == f"run:{keyed.message_id}".encode()
    assert not redis_client.exists(PREFIX + message_key("ti_once", ["trusted"], {}, {}, "global"))
    middleware.after_process_message(redis_producer, fetched, result=None)
    consumer.ack(fetched)
    consumer.close()


def _write_claim(redis_client: redis.Redis, message: Any, spec: Any) -> None:
    """Rewrite the stored body of sent ``message`` with ``spec`` as its ``callboard_claim``, as a
    producer with other rules (or a sender) could have written it."""
    bodies = f"dramatiq:{QUEUE}.msgs"
    body = json.loads(redis_client.hget(bodies, message.options["redis_message_id"]))
    body["options"][CLAIM_OPTION] = spec
    redis_client.hset(bodies, message.options["redis_message_id"], json.dumps(body))
