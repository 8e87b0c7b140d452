"""Chaos scenario 4: PostgreSQL unreachable for 10 s mid-load (a proxy between the workers and the
database that the test cuts). Workers keep running messages; the messages that die meanwhile wait
in the broker's dead-letter queue and reach the store once the database is back; nothing is lost
and nothing runs twice."""

from __future__ import annotations

import time

import pytest
from dramatiq import Broker

from config.settings import get_settings
from service import send, send_many
from service.deadletters import store
from tests.integration.conftest import StartWorker
from tests.support import completions
from tests.support.proxy import database_proxy
from tests.support.waiting import wait_until

OUTAGE = 10.0


def test_workers_keep_running_while_the_database_is_unreachable(
    chaos_producer: Broker,
    start_worker: StartWorker,
    ledger_url: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBOARD_DATABASE_URL", migrated_database_url)  # this process reads the store
    get_settings.cache_clear()
    with database_proxy(migrated_database_url) as (proxy, proxied):
        # Given a pod whose database connection goes through a proxy (the ledger does not)
        worker = start_worker(
            CALLBOARD_DATABASE_URL=proxied, CALLBOARD_WORKER_PROCESSES="2", CALLBOARD_DLQ_DRAIN_INTERVAL="0.5"
        )
        keys = [f"db-{n}" for n in range(600)]
        send_many("tc_complete", [[key, 0.1] for key in keys])
        wait_until(lambda: len(completions.ledger(ledger_url)) >= 50, timeout=30, message="50 done")

        # When the database is unreachable for 10 s, and messages die meanwhile
        proxy.cut()
        cut_at = time.monotonic()
        done_at_cut = len(completions.ledger(ledger_url))
        for n in range(5):
            send("tb_throws", [f"db-dead-{n}"])
        worker.wait_for_event("dlq.move_failed", timeout=30)
        wait_until(lambda: time.monotonic() - cut_at >= OUTAGE, timeout=OUTAGE + 5, message="the outage")
        done_during = len(completions.ledger(ledger_url)) - done_at_cut
        proxy.restore()
        restored_at = time.monotonic()

        # Then the workers kept running messages through the outage
        assert done_during > 0
        # And every message completes once, and the dead ones reach the store once it is back
        wait_until(
            lambda: not completions.check(ledger_url, keys).missing, timeout=60, message="every key completed"
        )
        wait_until(
            lambda: len(store.list_dead(store.Selection(reason="non_retryable"), limit=100)) == 5,
            timeout=60,
            message="the 5 dead letters stored",
        )
        stored_after = time.monotonic() - restored_at
        verdict = completions.check(ledger_url, keys)
        assert verdict.duplicated == {}
        print(
            f"[chaos 4] {len(keys)} messages; {done_during} completed during the {OUTAGE:.0f}s outage; "
            f"dead letters stored {stored_after:.1f}s after the database came back; duplicates 0"
        )
