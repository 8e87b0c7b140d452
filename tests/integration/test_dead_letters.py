"""Dead letters on real brokers and databases: every capture path, garbage floods, requeue,
purge and retention, a database outage, redaction, and the rate-limited alert."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from dramatiq import Broker, Message

from config.settings import get_settings
from service import send, send_many
from service.deadletters import store
from service.deadletters.requeue import requeue
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.processes import run_callboard
from tests.support.proxy import database_proxy
from tests.support.records import client, entries
from tests.support.waiting import wait_until


def dead(reason: str | None = None, **filters: object) -> list[dict[str, object]]:
    """Dead letters in the store (any state), newest first."""
    return store.list_dead(store.Selection(reason=reason, state=None, **filters), limit=10_000)  # type: ignore[arg-type]


def wait_dead(count: int, reason: str | None = None, timeout: float = 30) -> list[dict[str, object]]:
    return wait_until(
        lambda: len(dead(reason)) >= count and dead(reason),
        timeout=timeout,
        message=f"{count} dead letters ({reason or 'any reason'})",
    )


def push_raw(broker: Broker, body: bytes) -> None:
    """Put ``body`` on the test queue as it is, bypassing every check (a hostile producer)."""
    if hasattr(broker, "client"):
        pipe = broker.client.pipeline()
        redis_id = f"garbage-{uuid.uuid4().hex}"
        pipe.hset(f"dramatiq:{QUEUE}.msgs", redis_id, body)
        pipe.rpush(f"dramatiq:{QUEUE}", redis_id)
        pipe.execute()
    else:
        # Declare the queues as Dramatiq does (lazily, on first use), then publish; mandatory
        # makes an unroutable publish raise instead of vanishing.
        broker._ensure_queue(QUEUE)
        broker.channel.basic_publish(exchange="", routing_key=QUEUE, body=body, mandatory=True)


def broker_dead_count(broker: Broker) -> int:
    if hasattr(broker, "client"):
        return int(broker.client.zcard(f"dramatiq:{QUEUE}.XQ"))
    return int(broker.channel.queue_declare(f"{QUEUE}.XQ", passive=True).method.message_count)


def raw_message(actor: str, args: tuple[object, ...] = (), **options: object) -> Message[object]:
    return Message(queue_name=QUEUE, actor_name=actor, args=args, kwargs={}, options=options)


@pytest.mark.usefixtures("operator_env")
def test_every_capture_path_ends_in_the_store_with_its_reason(
    producer: Broker, start_worker: StartWorker
) -> None:
    # Given a worker
    start_worker()
    # When messages die in each possible way
    send("tb_fail", ["exhausted"], max_retries=0)
    send("tb_throws", ["non-retryable"])
    send("tb_stubborn", ["time-limit"])
    producer.enqueue(raw_message("no_such_actor", ("x",)))
    producer.enqueue(raw_message("tb_record", ()))  # missing its required argument
    push_raw(producer, b"\x00\xffnot a message")
    producer.enqueue(raw_message("tb_record", ("expired",), max_age=1))
    producer.enqueue(raw_message("tb_record", ("kept",), max_age=1, keep_expired=True))
    # Then each reaches the store with the right reason and details
    rows = {row["reason"]: row for row in wait_dead(7, timeout=60)}
    assert set(rows) == {
        "exhausted",
        "non_retryable",
        "time_limit",
        "unknown_actor",
        "bad_arguments",
        "undecodable",
        "expired",
    }
    assert rows["exhausted"]["actor"] == "tb_fail" and rows["exhausted"]["attempts"] == 1
    assert "ValueError: tb_fail always fails" in str(rows["exhausted"]["exception"])
    assert rows["non_retryable"]["exception"].startswith("KeyError")  # type: ignore[union-attr]
    assert rows["time_limit"]["exception"].startswith("HardTimeLimitExceeded")  # type: ignore[union-attr]
    assert rows["unknown_actor"]["actor"] == "no_such_actor"
    assert rows["bad_arguments"]["exception"].startswith("TypeError")  # type: ignore[union-attr]
    assert rows["undecodable"]["actor"] is None
    full = store.detail(store.get(int(rows["exhausted"]["id"])))  # type: ignore[arg-type]
    assert "tb_fail always fails" in full["traceback"] and full["args"] == ["exhausted"]
    # And an expired message without keep_expired is dropped, not dead-lettered
    assert len(dead()) == 7
    assert not entries("expired") and not entries("kept")
    # And the broker's dead-letter queue was emptied into the store
    wait_until(lambda: broker_dead_count(producer) == 0, message="an empty broker DLQ")


@pytest.mark.usefixtures("operator_env")
def test_garbage_flood_does_not_stop_good_messages(producer: Broker, start_worker: StartWorker) -> None:
    # Given 1 000 undecodable bodies interleaved with 200 good messages
    for n in range(200):
        for _ in range(5):
            push_raw(producer, b"garbage " + str(n).encode() + b" \xfe")
        send("tb_record", ["good", n])
    # When a worker consumes them
    worker = start_worker(CALLBOARD_WORKER_THREADS="8")
    # Then every good message runs, and every garbage body is a dead letter
    wait_until(lambda: len(entries("good", "done")) == 200, timeout=120, message="200 good messages")
    wait_dead(1000, "undecodable", timeout=120)
    assert worker.process.poll() is None


@pytest.mark.usefixtures("operator_env")
def test_requeue_runs_again_once_the_cause_is_fixed_and_twice_is_a_noop(
    producer: Broker, start_worker: StartWorker, operator_env: dict[str, str]
) -> None:
    start_worker()
    send("tb_fixable", ["fix"])
    [row] = wait_dead(1, "exhausted")
    client().set("fixed:fix", 1)  # the cause is fixed
    first = run_callboard("dlq", "requeue", str(row["id"]), "--json", env=operator_env)
    assert first.returncode == 0, first.stderr
    [result] = json.loads(first.stdout)
    assert result["requeued"] is True
    wait_until(lambda: entries("fix", "done"), timeout=30, message="the requeued message to succeed")
    shown = json.loads(run_callboard("dlq", "show", str(row["id"]), "--json", env=operator_env).stdout)[0]
    assert shown["state"] == "requeued" and shown["requeued_message_id"] == result["message_id"]
    assert shown["requeue_count"] == 1
    second = run_callboard("dlq", "requeue", str(row["id"]), env=operator_env)
    assert second.returncode == 1 and "not requeued" in second.stdout
    assert len(entries("fix", "done")) == 1


@pytest.mark.usefixtures("operator_env")
def test_bulk_requeue_is_streamed_and_safe_to_run_twice_at_once(producer: Broker) -> None:
    # Given 2 000 dead letters in the store
    now = datetime.now(UTC)
    rows = [_row(f"bulk-{n}", now) for n in range(2000)]
    for start in range(0, len(rows), 500):
        store.store_new(rows[start : start + 500])
    # When two operators requeue all at the same time, in small batches
    counts: list[int] = []
    runs = [
        threading.Thread(
            target=lambda: counts.append(
                requeue(store.Selection(), producer, batch_size=100, keep_ids=False).count
            )
        )
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    # Then every dead letter was sent exactly once
    assert sum(counts) == 2000, counts
    assert _queued(producer) == 2000
    assert store.count_dead() == 0
    # And a third run finds nothing to do
    assert requeue(store.Selection(), producer).count == 0


def _queued(broker: Broker) -> int:
    if hasattr(broker, "client"):
        return int(broker.client.llen(f"dramatiq:{QUEUE}"))
    return int(broker.channel.queue_declare(QUEUE, passive=True).method.message_count)


def _row(message_id: str, failed_at: datetime, **extra: object) -> dict[str, object]:
    from service.sealing import seal

    return {
        "dedupe_key": f"{message_id}:0",
        "message_id": message_id,
        "queue": QUEUE,
        "actor": "tb_record",
        "reason": "exhausted",
        "args": json.dumps([message_id]),
        "kwargs": "{}",
        "options": "{}",
        "sealed_payload": seal(json.dumps({"args": [message_id], "kwargs": {}}).encode()),
        "raw_body": None,
        "exception_type": "ValueError",
        "exception_message": "x",
        "traceback": None,
        "attempts": 1,
        "first_failed_at": failed_at,
        "last_failed_at": failed_at,
        "stored_at": failed_at,
        "state": "dead",
        "requeue_count": 0,
        **extra,
    }


@pytest.mark.usefixtures("operator_env")
def test_purge_and_retention_remove_exactly_what_they_should(
    operator_env: dict[str, str], producer: Broker
) -> None:
    now = datetime.now(UTC)
    store.store_new(
        [
            _row("young", now - timedelta(days=1)),
            _row("old", now - timedelta(days=40)),
            _row("old-other-queue", now - timedelta(days=40), queue="elsewhere"),
            _row("ancient", now - timedelta(days=400), state="requeued"),
            _row("by-id", now),
        ]
    )
    by_id = next(row for row in dead() if row["message_id"] == "by-id")
    purged = run_callboard("dlq", "purge", str(by_id["id"]), "--json", env=operator_env)
    assert json.loads(purged.stdout) == [{"purged": 1}]
    filtered = run_callboard(
        "dlq", "purge", "--older-than", "30d", "--queue", "elsewhere", "--json", env=operator_env
    )
    assert json.loads(filtered.stdout) == [{"purged": 1}]
    assert {row["message_id"] for row in dead()} == {"young", "old", "ancient"}
    # Retention (the maintenance actor's job) removes anything older than 30 days, any state
    assert store.prune(get_settings().dlq_retention) == 2
    assert {row["message_id"] for row in dead()} == {"young"}


@pytest.mark.usefixtures("operator_env")
def test_dead_letters_wait_in_the_broker_while_the_database_is_down(
    producer: Broker, start_worker: StartWorker, migrated_database_url: str
) -> None:
    with database_proxy(migrated_database_url) as (proxy, proxied):
        # Given a worker whose database becomes unreachable
        worker = start_worker(CALLBOARD_DATABASE_URL=proxied)
        proxy.cut()
        # When a message dies
        send("tb_fail", ["db-down"], max_retries=0)
        worker.wait_for_event("dlq.move_failed", timeout=60)
        # Then it waits in the broker's dead-letter queue
        assert broker_dead_count(producer) == 1
        assert not dead()
        # And once the database is back it is moved into the store
        proxy.restore()
        wait_dead(1, "exhausted", timeout=90)
        wait_until(lambda: broker_dead_count(producer) == 0, message="an empty broker DLQ")


@pytest.mark.usefixtures("operator_env")
def test_sensitive_fields_never_reach_the_store_or_the_cli_in_clear(
    producer: Broker, start_worker: StartWorker, operator_env: dict[str, str]
) -> None:
    email, password = "jane.doe@example.com", "hunter2-secret"
    start_worker()
    send("tb_secret", ["secret"], {"email": email, "password": password})
    [row] = wait_dead(1)
    full = store.get(int(row["id"]))  # type: ignore[arg-type]
    stored_text = json.dumps(store.detail(full)) + (full.options or "") + (full.sealed_payload or "")
    assert email not in stored_text and password not in stored_text
    assert "[redacted]" in full.kwargs  # type: ignore[operator]
    for command in (
        ["dlq", "list", "--json"],
        ["dlq", "show", str(row["id"]), "--json"],
        ["dlq", "show", str(row["id"])],
    ):
        output = run_callboard(*command, env=operator_env).stdout
        assert email not in output and password not in output, command
    # And a requeue still sends the original values
    client().set("fixed:secret", 1)
    assert requeue(store.Selection(ids=[int(row["id"])]), producer).count == 1  # type: ignore[arg-type]
    [done] = wait_until(lambda: entries("secret", "done"), message="the requeued message")
    assert done["received"] == f"{email}|{password}"


@pytest.mark.usefixtures("operator_env")
def test_a_poison_flood_sends_one_alert(producer: Broker, start_worker: StartWorker) -> None:
    start_worker(
        CALLBOARD_DLQ_ALERT_ACTOR="tb_alert", CALLBOARD_DLQ_ALERT_INTERVAL="1h", CALLBOARD_WORKER_THREADS="8"
    )
    send_many("tb_fail", [[f"poison-{n}"] for n in range(60)], max_retries=0)
    wait_dead(60, "exhausted", timeout=60)
    alerts = wait_until(lambda: entries("alerts", "alert"), message="the alert")
    assert alerts[0]["actor"] == "tb_fail" and alerts[0]["count"] >= 1
    # Give the worker the time to send more alerts if it were going to (it must not)
    wait_until(
        lambda: not client().llen(f"dramatiq:{QUEUE}") if hasattr(producer, "client") else True,
        message="an empty queue",
    )
    assert len(entries("alerts", "alert")) == 1


@pytest.mark.usefixtures("operator_env")
def test_logs_never_show_a_sensitive_argument(producer: Broker, start_worker: StartWorker) -> None:
    # Given a message whose actor fails with its secrets in the exception text, and retries once
    email, password = "jane.roe@example.com", "correct-horse-battery"
    worker = start_worker()
    send(
        "tb_secret",
        ["logged"],
        {"email": email, "password": password},
        max_retries=1,
        min_backoff=10,
        max_backoff=20,
    )
    # When it has failed twice and died
    worker.wait_for_event("message.dead", timeout=30)
    # Then no log line carries the values, though the failures are logged with their errors
    text = worker.log_path.read_text()
    assert email not in text and password not in text
    assert worker.events("message.retried")[0]["error"].startswith("ValueError: cannot mail [redacted]")
    assert "tb_secret(" in text  # Dramatiq's own failure line, with the message id instead of arguments


@pytest.mark.usefixtures("operator_env")
def test_requeue_takes_over_a_claim_abandoned_by_a_killed_run(producer: Broker) -> None:
    now = datetime.now(UTC)
    store.store_new(
        [
            _row(
                "abandoned",
                now,
                state="requeuing",
                requeue_token="dead-run",
                requeue_claimed_at=now - store.CLAIM_TIMEOUT - timedelta(minutes=1),
            ),
            _row("in-progress", now, state="requeuing", requeue_token="live-run", requeue_claimed_at=now),
        ]
    )
    result = requeue(store.Selection(), producer)
    assert result.count == 1
    states = {row["message_id"]: row["state"] for row in dead()}
    assert states == {"abandoned": "requeued", "in-progress": "requeuing"}


def test_concurrent_movers_store_each_dead_letter_once(
    redis_url: str, migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis only: RabbitMQ hands each dead entry to one reader, so movers cannot race there."""
    # Given 600 dead letters waiting in Redis's dead-letter queue, and two movers (two processes'
    # brokers) draining at the same time in small batches
    monkeypatch.setenv("CALLBOARD_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("CALLBOARD_SECRET_KEY", "test-secret")
    get_settings.cache_clear()
    import redis as redis_client

    from config.settings import load_settings
    from service.brokers.factory import build_broker
    from service.deadletters import hooks
    from service.deadletters.mover import drain

    pipe = redis_client.Redis.from_url(redis_url).pipeline()
    for n in range(600):
        body = raw_message("tb_fail", (f"race-{n}",), dead={"reason": "exhausted", "attempts": 1}).encode()
        pipe.hset(f"dramatiq:{QUEUE}.XQ.msgs", f"race-{n}", body)
        pipe.zadd(f"dramatiq:{QUEUE}.XQ", {f"race-{n}": n})
    pipe.execute()
    counted: list[str] = []
    hooks.on_dead_lettered(lambda queue, actor, reason: counted.append(reason))
    movers = [build_broker(load_settings(), url=redis_url) for _ in range(2)]
    import tests.support.actors as test_actors
    from tests.support.producer import adopt_actors

    adopt_actors(test_actors, movers[0])
    for mover in movers:
        mover.declare_queue(QUEUE)
    threads = [threading.Thread(target=drain, args=(mover,), kwargs={"batch_size": 50}) for mover in movers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then every dead letter is stored once, none as a phantom, and counted once
    rows = dead()
    assert len(rows) == 600 and {row["reason"] for row in rows} == {"exhausted"}
    assert len(counted) == 600
    assert movers[0].client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    hooks._dead_lettered.clear()
