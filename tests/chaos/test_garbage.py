"""Chaos scenario 6: 1,000 garbage bodies interleaved with 10,000 good messages.

A hostile or broken producer writes straight into Redis, past every check of ``send``: bytes
that are not JSON, JSON nested 10,000 deep, bodies over the size limit, JSON of the wrong shape,
options of the wrong type, messages that claim another queue or move their actor to the urgent
one. One garbage body follows every 10 good ``tc_complete`` messages while a pod of 2 worker
processes consumes them.

Checks: every good key completed (at-least-once: duplicates are counted, not refused); exactly
1,000 dead letters, each with the reason its kind deserves; no garbage body ran; no worker
process crashed or logged a crashed thread; all of it within 60 s. The measured figures are
printed (``pytest -s``) and recorded in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import redis
from dramatiq import Broker

from service import send_many
from service.deadletters import store
from tests.integration.conftest import StartWorker
from tests.support import completions
from tests.support.chaos_actors import QUEUE
from tests.support.waiting import wait_until

GOOD = 10_000
GARBAGE = 1_000
BETWEEN = GOOD // GARBAGE  # good messages between two garbage bodies
BOUND = 60.0

#: A pod of 2 processes x 8 threads on the chaos queue, and on ``critical`` for the garbage that
#: moves its actor there. Processes recycle at the default 1,000 messages, as in production:
#: each one is replaced about 5 times during the scenario.
POD = {
    "CALLBOARD_WORKER_PROCESSES": "2",
    "CALLBOARD_WORKER_THREADS": "8",
    "CALLBOARD_WORKER_QUEUES": f"{QUEUE},critical",
}

CRASH_SIGNS = ("Traceback", "Consumer encountered", "Unexpected failure in", "Unhandled error")


def _fields(n: int, **overrides: object) -> dict[str, object]:
    key = f"garbage-{n}"
    return {
        "message_id": key,
        "queue_name": QUEUE,
        "actor_name": "tc_complete",
        "args": [key],
        "kwargs": {},
        "options": {},
        "message_timestamp": int(time.time() * 1000),
        **overrides,
    }


def _json(n: int, **overrides: object) -> bytes:
    return json.dumps(_fields(n, **overrides)).encode()


def _deep(n: int) -> bytes:
    head = json.dumps({key: value for key, value in _fields(n).items() if key != "args"})[:-1]
    return f'{head}, "args": [{"[" * 10_000}{"]" * 10_000}]}}'.encode()


#: Garbage kinds, taken in turn: (what it is, body of garbage number n, queue, expected reason).
KINDS: list[tuple[str, Callable[[int], bytes], str, str]] = [
    ("not JSON", lambda n: f"garbage {n} \x00".encode(), QUEUE, "undecodable"),
    ("not UTF-8", lambda n: b"\xfe\xff" + str(n).encode(), QUEUE, "undecodable"),
    ("args not a list", lambda n: _json(n, args="abc"), QUEUE, "undecodable"),
    ("missing fields", lambda n: json.dumps({"message_id": f"garbage-{n}"}).encode(), QUEUE, "undecodable"),
    ("nested 10,000 deep", _deep, QUEUE, "undecodable"),
    ("300 KB", lambda n: _json(n, args=[f"garbage-{n}", "x" * 300_000]), QUEUE, "oversized"),
    ("max_retries='x'", lambda n: _json(n, options={"max_retries": "x"}), QUEUE, "bad_options"),
    ("eta='soon'", lambda n: _json(n, options={"eta": "soon"}), QUEUE, "bad_options"),
    ("claims critical", lambda n: _json(n, queue_name="critical"), QUEUE, "wrong_queue"),
    ("moved to critical", lambda n: _json(n, queue_name="critical"), "critical", "wrong_queue"),
]


def _push_raw(client: redis.Redis, raw: bytes, queue: str, n: int) -> None:
    """Store ``raw`` and push its id, as Dramatiq does, with no check at all."""
    redis_id = f"garbage-{n}"
    pipe = client.pipeline(transaction=False)
    pipe.hset(f"dramatiq:{queue}.msgs", redis_id, raw)
    pipe.rpush(f"dramatiq:{queue}", redis_id)
    pipe.execute()


def test_garbage_interleaved_with_good_messages(
    chaos_producer: Broker, start_worker: StartWorker, ledger_url: str, migrated_database_url: str
) -> None:
    # Given a pod of 2 worker processes
    pod = start_worker(**POD)
    pod.wait_for_event("worker.started", count=2, timeout=60)
    client = chaos_producer.client  # type: ignore[attr-defined]
    # When 10,000 good messages are sent in tens, each ten followed by one garbage body
    started = time.monotonic()
    keys: list[str] = []
    expected: Counter[str] = Counter()
    for n in range(GARBAGE):
        batch = [f"good-{n * BETWEEN + i}" for i in range(BETWEEN)]
        send_many("tc_complete", [[key] for key in batch])
        keys += batch
        _, make, queue, reason = KINDS[n % len(KINDS)]
        _push_raw(client, make(n), queue, n)
        expected[reason] += 1
    sent = time.monotonic() - started
    # Then every good message completes
    wait_until(
        lambda: not completions.check(ledger_url, keys).missing,
        timeout=BOUND,
        interval=0.5,
        message=f"{GOOD} good keys completed",
    )
    completed = time.monotonic() - started
    # And every garbage body is one dead letter with its reason
    wait_until(
        lambda: store.count_dead(migrated_database_url) >= GARBAGE,
        timeout=max(BOUND - completed, 5),
        interval=0.5,
        message=f"{GARBAGE} dead letters",
    )
    stored = time.monotonic() - started
    reasons: Counter[str] = Counter()
    for row in store.stats(migrated_database_url):
        reasons[row["reason"]] += row["count"]
    verdict = completions.check(ledger_url, keys)
    print(
        f"\n[chaos 6] {GOOD} good + {GARBAGE} garbage: sent in {sent:.1f}s, all good complete "
        f"{completed:.1f}s, all garbage stored {stored:.1f}s after the first send; dead letters "
        f"{dict(reasons)}; duplicates {len(verdict.duplicated)}; "
        f"recycled {len(pod.events('worker.recycled'))}"
    )
    assert reasons == expected, (reasons, expected)
    assert stored <= BOUND
    # And no garbage body ran, not even those that decoded to a real actor and arguments
    assert not [key for key in completions.ledger(ledger_url) if key.startswith("garbage-")]
    assert verdict.missing == []
    # And no worker process crashed or lost a thread, and nothing was left in flight
    assert pod.process.poll() is None
    text = pod.log_path.read_text()
    assert not [sign for sign in CRASH_SIGNS if sign in text], text[-5000:]
    assert not pod.events("worker.crashed")
    refused = pod.events("message.rejected") + pod.events("message.undecodable")
    assert len(refused) == GARBAGE
    wait_until(
        lambda: client.hlen(f"dramatiq:{QUEUE}.msgs") == 0 and client.hlen("dramatiq:critical.msgs") == 0,
        timeout=10,
        message="no message body left behind",
    )
