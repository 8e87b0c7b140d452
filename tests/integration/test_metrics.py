"""Worker metrics on a real broker: a mixed load through 2 worker processes adds up exactly, the
pod serves /healthz and /readyz, and recycled processes leave neither stale series nor files."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dramatiq import Broker
from prometheus_client.parser import text_string_to_metric_families

from service import send
from service.metrics.definitions import wait_buckets
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.ports import free_port
from tests.support.records import entries
from tests.support.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of the pod's exposition, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= found)


def get(port: int, path: str) -> tuple[int, dict[str, object]]:
    """Status and JSON body of ``path`` on the metrics port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.usefixtures("operator_env")
def test_mixed_load_counters_add_up_exactly(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given a pod of 2 worker processes serving metrics
    port = free_port()
    start_worker(
        CALLBOARD_BROKER_URL=broker_url,
        CALLBOARD_WORKER_PROCESSES="2",
        CALLBOARD_METRICS_PORT=str(port),
        CALLBOARD_WORKER_IDLE_TIMEOUT="0.1",
    )
    # When it runs successes, retries, dead letters, expired messages and time limits
    for n in range(20):
        send("tb_record", ["ok"], {"n": n})
    for n in range(3):
        send("tb_fail", [f"fail-{n}"], max_retries=3, min_backoff=100, max_backoff=200)
    for n in range(2):
        send("tb_throws", [f"throws-{n}"])
    send("tb_stubborn", ["stubborn"])
    for n in range(4):  # due in 300 ms but valid for 100 ms: expired when taken
        send("tb_record", ["expired"], {"n": n}, delay=0.3, max_age=100)

    # Then once everything has ended, each counter holds exactly what was sent
    expected = {"success": 20, "retry": 9, "dead": 6, "expired": 4}

    def settled() -> Samples | None:
        samples = scrape(port)
        done = (
            all(
                total(samples, "callboard_messages_total", outcome=outcome) >= count
                for outcome, count in expected.items()
            )
            and total(samples, "callboard_dead_letters_total") >= 6
        )
        return samples if done else None

    samples = wait_until(settled, timeout=60, interval=0.5, message="every message counted")
    for outcome, count in expected.items():
        assert total(samples, "callboard_messages_total", outcome=outcome) == count, outcome
    assert total(samples, "callboard_messages_total", outcome="skipped") == 0
    assert total(samples, "callboard_messages_total", actor="tb_fail", outcome="retry") == 9
    assert total(samples, "callboard_messages_total", actor="tb_stubborn", outcome="dead") == 1
    assert total(samples, "callboard_messages_total", actor="tb_record", outcome="expired") == 4
    # dead letters stored, by reason (expired ones are dropped, not kept, by default)
    assert total(samples, "callboard_dead_letters_total", reason="exhausted", actor="tb_fail") == 3
    assert total(samples, "callboard_dead_letters_total", reason="non_retryable", actor="tb_throws") == 2
    assert total(samples, "callboard_dead_letters_total", reason="time_limit", actor="tb_stubborn") == 1
    assert total(samples, "callboard_dead_letters_total") == 6
    # time limits: one soft and one hard, however often the hard one was repeated
    assert total(samples, "callboard_time_limit_total", actor="tb_stubborn", kind="soft") == 1
    assert total(samples, "callboard_time_limit_total", actor="tb_stubborn", kind="hard") == 1
    # every attempt waited (39), every attempt that ran was timed (35), nothing is running now
    attempts = 20 + 3 * 4 + 2 + 1 + 4
    assert total(samples, "callboard_queue_wait_seconds_count", queue=QUEUE) == attempts
    assert total(samples, "callboard_message_duration_seconds_count", queue=QUEUE) == attempts - 4
    wait_until(  # sampled every second, so it settles just after the last message
        lambda: (
            total(after := scrape(port), "callboard_messages_inprogress") == 0
            and total(after, "callboard_worker_threads_busy") == 0
        ),
        timeout=10,
        message="nothing running",
    )
    # the SLA boundaries are exact buckets of the wait histogram
    les = {dict(labels)["le"] for (name, labels) in samples if name == "callboard_queue_wait_seconds_bucket"}
    assert {str(float(b)) for b in wait_buckets()} <= les
    # and the pod reports its processes and a fresh heartbeat, and no scheduler series
    assert total(samples, "callboard_worker_processes") == 2
    assert total(samples, "callboard_worker_threads") == 2 * 4
    assert total(samples, "callboard_worker_heartbeat_timestamp_seconds") > 0
    assert not [
        name for (name, _) in samples if name.startswith(("callboard_scheduler", "callboard_queue_depth"))
    ]
    assert len(entries("ok", "done")) == 20


def test_health_endpoints_and_recycling_keep_series_and_files_bounded(
    start_worker: StartWorker, tmp_path: Path, redis_producer: Broker
) -> None:
    # Given a pod whose 2 processes recycle every 10 messages, with its metrics directory known
    port, directory = free_port(), tmp_path / "metrics"
    start_worker(
        CALLBOARD_WORKER_PROCESSES="2",
        CALLBOARD_WORKER_MAX_MESSAGES="10",
        CALLBOARD_METRICS_PORT=str(port),
        CALLBOARD_METRICS_DIR=str(directory),
        CALLBOARD_HEARTBEAT_INTERVAL="0.5",
    )
    wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="healthz 200")
    assert get(port, "/healthz") == (200, {"status": "ok"})
    assert get(port, "/readyz") == (200, {"status": "ok"})
    # When 150 messages run through about 15 process lifetimes
    for n in range(150):
        send("tb_record", ["recycled"], {"n": n})
    wait_until(lambda: len(entries("recycled", "done")) >= 150, timeout=60, message="150 done")

    # Then the totals are exact: a recycled process's counts survive it
    def counted() -> Samples | None:
        samples = scrape(port)
        return samples if total(samples, "callboard_messages_total", outcome="success") >= 150 else None

    samples = wait_until(counted, timeout=30, message="150 counted")
    assert total(samples, "callboard_messages_total", outcome="success") == 150
    # And no series carries a pid, whatever the number of processes that came and went
    assert not [labels for (_, labels) in samples if "pid" in dict(labels)]
    # And the directory holds the live processes' files plus one archive per type, not one per
    # dead process
    wait_until(
        lambda: len({p.name.rsplit("_", 1)[-1] for p in directory.glob("counter_*.db")}) <= 2 + 1 + 1,
        timeout=10,
        message="dead processes' counter files folded",
    )
    assert (directory / "counter_archive.db").exists()
    assert get(port, "/healthz")[0] == 200


def test_readyz_fails_while_the_database_is_unreachable(
    start_worker: StartWorker, redis_producer: Broker
) -> None:
    # Given a worker whose database URL points at a port nothing listens on
    port = free_port()
    start_worker(
        CALLBOARD_METRICS_PORT=str(port),
        CALLBOARD_DATABASE_URL=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test",
    )
    # Then it is alive but not ready, and says why
    status, body = wait_until(lambda: get(port, "/readyz"), timeout=30, message="readyz answers")
    assert status == 503
    problems = body["problems"]
    assert isinstance(problems, list) and len(problems) == 1 and problems[0].startswith("database:")
    assert get(port, "/healthz")[0] == 200


def test_a_thread_stuck_past_its_hard_limit_fails_healthz_until_it_ends(
    start_worker: StartWorker, redis_producer: Broker
) -> None:
    # Given a pod beating every half second
    port = free_port()
    start_worker(CALLBOARD_METRICS_PORT=str(port), CALLBOARD_HEARTBEAT_INTERVAL="0.5")
    wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="healthz 200")
    # When an actor blocks in C code for 16 s, past its 1 s hard limit and the 10 s grace
    send("tb_blocked", ["blocked", 16])
    wait_until(lambda: entries("blocked", "started"), timeout=30, message="the blocked actor started")
    # Then the pod turns unhealthy, says why, and counts the stuck thread
    _, body = wait_until(
        lambda: (answer := get(port, "/healthz"))[0] == 503 and answer, timeout=20, message="healthz 503"
    )
    problems = body["problems"]
    assert isinstance(problems, list) and "stuck past their hard time limit" in problems[0]
    assert total(scrape(port), "callboard_worker_threads_stuck") == 1
    # And healthy again once the call returns and the hard limit ends the message
    wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=30, message="healthz 200 again")
    assert total(scrape(port), "callboard_worker_threads_stuck") == 0
