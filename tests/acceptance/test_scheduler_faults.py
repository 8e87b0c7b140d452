"""The scheduler through faults: a broker outage loses no slot (failed sends are retried until
the slot's ``expires``), a slot claimed by a leader that died before sending is sent by the next
one, and a leader that cannot reach the database stops firing until it can renew its lease."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import redis

from config.settings import get_settings
from scheduler import state
from service.brokers.embedded import EmbeddedRedis
from service.db.engine import dispose_engines
from tests.acceptance.test_scheduler import schedule_file, scheduler_env, sent_slots, start
from tests.support.ports import free_port
from tests.support.proxy import database_proxy
from tests.support.waiting import wait_until

__all__ = ["scheduler_env"]  # the fixture, shared with test_scheduler


def every_second(name: str, catchup: str = "skip") -> str:
    return (
        f'[entries.{name}]\nactor = "tb_record"\nevery = "1s"\nargs = ["{name}"]\n'
        f'catchup = "{catchup}"\ncatchup_window = "1m"\nexpires = "1m"\n\n'
    )


def test_slots_whose_send_failed_during_a_broker_outage_are_sent_when_it_is_back(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a scheduler on a Redis of the test's own, with an every-second entry that skips
    # missed slots (so only the retry of a failed send can bring them back)
    own = EmbeddedRedis(tmp_path / "own-redis", tcp_port=free_port())
    own.start()
    env = {
        **worker_env,
        "CALLBOARD_BROKER_URL": own.url,
        "CALLBOARD_SCHEDULER_LEASE": "3",
        "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, every_second("beat"))),
    }
    scheduler = start(env, tmp_path, "outage")
    client = redis.Redis.from_url(own.url)
    try:
        scheduler.wait_for_event("scheduler.leader", timeout=60)
        wait_until(lambda: len(sent_slots(client, "beat")) >= 2, timeout=30, message="2 slots")
        # When the broker is down for 4 s
        own.stop()
        scheduler.wait_for_event("schedule.send_failed", count=2, timeout=15)
        time.sleep(4)  # the outage's length, not a wait for a condition
        own.start()
        # Then the slots of the outage are sent once it is back: none missing, none twice
        failed = {line["slot"] for line in scheduler.events("schedule.send_failed")}
        wait_until(
            lambda: failed <= {slot.isoformat() for slot in sent_slots(client, "beat")},
            timeout=30,
            message="every failed slot sent",
        )
        wait_until(lambda: len(sent_slots(client, "beat")) >= len(failed) + 4, timeout=30, message="more")
        slots = sent_slots(client, "beat")
        assert {(b - a).total_seconds() for a, b in pairwise(slots)} == {1.0}
        assert not scheduler.events("schedule.send_abandoned")
    finally:
        scheduler.stop()
        own.stop()


def test_a_slot_claimed_by_a_leader_that_died_before_sending_is_sent_by_the_next(
    scheduler_env: dict[str, str],
    migrated_database_url: str,
    tmp_path: Path,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a slot claimed 5 s ago by a leader that died before its send (no message id)
    monkeypatch.setenv("CALLBOARD_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    slot = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    assert state.record_fire("beat", slot, "sent", token=1)
    dispose_engines()
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, every_second("beat")))}
    # When a scheduler takes the lead
    scheduler = start(env, tmp_path, "next")
    try:
        scheduler.wait_for_event("scheduler.leader", timeout=60)
        # Then it sends that slot, though its entry skips missed slots
        wait_until(lambda: slot in sent_slots(redis_client, "beat"), timeout=30, message="the claimed slot")
    finally:
        scheduler.stop()


def test_a_leader_that_cannot_reach_the_database_stops_firing_until_it_can(
    scheduler_env: dict[str, str], migrated_database_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    with database_proxy(migrated_database_url) as (proxy, proxied):
        env = {
            **scheduler_env,
            "CALLBOARD_DATABASE_URL": proxied,
            "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, every_second("beat"))),
        }
        scheduler = start(env, tmp_path, "db")
        try:
            scheduler.wait_for_event("scheduler.leader", timeout=60)
            wait_until(lambda: len(sent_slots(redis_client, "beat")) >= 2, timeout=30, message="2 slots")
            # When the database becomes unreachable
            proxy.cut()
            scheduler.wait_for_event("scheduler.lease_error", timeout=15)
            scheduler.wait_for_event("scheduler.lost_lease", timeout=15)
            # Then, once its lease is no longer trusted, it sends nothing
            quiet_from = len(sent_slots(redis_client, "beat"))
            time.sleep(3)  # three fire times without a trusted lease, not a wait for a condition
            assert len(sent_slots(redis_client, "beat")) == quiet_from
            # And when the database is back it leads and fires again
            proxy.restore()
            scheduler.wait_for_event("scheduler.leader", count=2, timeout=30)
            wait_until(
                lambda: len(sent_slots(redis_client, "beat")) >= quiet_from + 2,
                timeout=30,
                message="fires again",
            )
        finally:
            scheduler.stop()
