"""Circuit-breaker state in a real Redis: consecutive failures open it, one trial at a time when
half-open (across threads, as across processes), the trial's outcome closes or reopens it; a
transition is logged, counted, and alerted only when a ``send_alert`` actor exists."""

from __future__ import annotations

import logging
import threading

import pytest
import redis
from dramatiq import Broker

from config.settings import load_settings
from service.breakers import announce
from service.breakers.store import KEY_PREFIX, BreakerStore, Decision
from service.metrics.definitions import BREAKER_TRANSITIONS
from tests.support.waiting import wait_until

RECOVERY = 0.3


def store_of(client: redis.Redis, threshold: int = 5, recovery: float = RECOVERY) -> BreakerStore:
    return BreakerStore(client, threshold=threshold, recovery=recovery)


def recovery_over(client: redis.Redis, name: str) -> bool:
    """Whether Redis's clock has passed the breaker's ``open_until`` (without asking the breaker,
    which would take the trial)."""
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000 >= int(client.hget(KEY_PREFIX + name, "open_until") or 0)


def trip(store: BreakerStore, name: str) -> None:
    for _ in range(store.threshold):
        store.record(name, "failure")
    assert store.state(name) == "open"


def test_consecutive_failures_open_it_and_a_success_resets_the_count(redis_client: redis.Redis) -> None:
    store = store_of(redis_client, recovery=30)  # long: it stays open for the whole test
    # Four failures, a success, four failures: never five in a row
    for outcome in ["failure"] * 4 + ["success"] + ["failure"] * 4:
        assert store.record("api", outcome) is None  # type: ignore[arg-type]
    assert store.state("api") == "closed" and store.acquire("api", trial_lease=1).allowed
    # Refusals that prove the remote answered (neutral) neither count nor reset
    assert store.record("api", "neutral") is None
    assert store.record("api", "failure") == "opened"
    decision = store.acquire("api", trial_lease=1)
    assert not decision.allowed and decision.state == "open" and 0 < decision.wait <= 30
    # Outcomes of calls let through before it opened change nothing
    assert store.record("api", "success") is None and store.state("api") == "open"


def test_half_open_lets_exactly_one_trial_through(redis_client: redis.Redis) -> None:
    store = store_of(redis_client)
    trip(store, "smtp")
    wait_until(lambda: recovery_over(redis_client, "smtp"), timeout=5, message="recovery timeout")
    # When 20 threads ask at once after the recovery timeout
    decisions: list[Decision] = []
    barrier = threading.Barrier(20)

    def ask() -> None:
        barrier.wait()
        decisions.append(store.acquire("smtp", trial_lease=30))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one is the trial, and it alone moved the breaker to half-open
    trials = [d for d in decisions if d.allowed]
    assert len(trials) == 1 and trials[0].trial and trials[0].transition == "half_open"
    assert all(d.state == "half_open" and d.wait > 0 for d in decisions if not d.allowed)
    # And a stale token or a plain success cannot close it; the trial's success does
    assert store.record("smtp", "success") is None
    assert store.record("smtp", "success", "not-the-trial") is None and store.state("smtp") == "half_open"
    assert store.record("smtp", "success", trials[0].trial) == "closed"
    assert store.state("smtp") == "closed" and not redis_client.exists(KEY_PREFIX + "smtp")


def test_a_failed_trial_reopens_and_a_neutral_one_frees_the_lease(redis_client: redis.Redis) -> None:
    store = store_of(redis_client, threshold=1)
    trip(store, "webhook:example.com")
    wait_until(lambda: recovery_over(redis_client, "webhook:example.com"), timeout=5, message="recovery")
    first = store.acquire("webhook:example.com", trial_lease=30)
    # A neutral outcome (a 4xx) frees the lease: the next call is the trial at once
    assert store.record("webhook:example.com", "neutral", first.trial) is None
    second = store.acquire("webhook:example.com", trial_lease=30)
    assert second.trial and second.transition is None
    # Its failure opens the breaker again for a whole recovery timeout
    assert store.record("webhook:example.com", "failure", second.trial) == "opened"
    assert store.state("webhook:example.com") == "open"


def test_a_trial_that_never_reports_gives_way_after_its_lease(redis_client: redis.Redis) -> None:
    store = store_of(redis_client, threshold=1)
    trip(store, "crashy")
    wait_until(lambda: recovery_over(redis_client, "crashy"), timeout=5, message="recovery")
    lost = store.acquire("crashy", trial_lease=1)  # its process dies: it never reports
    assert lost.trial
    waiting = store.acquire("crashy", trial_lease=1)
    assert not waiting.allowed and waiting.wait <= 1
    # After the lease another call becomes the trial, and the lost one's report is ignored
    after = wait_until(
        lambda: (d := store.acquire("crashy", trial_lease=30)).allowed and d, timeout=5, message="a new trial"
    )
    assert after.trial and after.trial != lost.trial
    assert store.record("crashy", "success", lost.trial) is None and store.state("crashy") == "half_open"


def test_a_transition_is_logged_and_counted_and_its_alert_skipped_without_send_alert(
    redis_producer: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker with no send_alert actor (the alerts actor is not deployed)
    counter = BREAKER_TRANSITIONS.labels(breaker="webhook", state="open")
    before = counter._value.get()
    # When this process opens a per-host breaker
    with caplog.at_level(logging.INFO, logger="service.breakers"):
        announce(redis_producer, load_settings(), "webhook:example.com", "opened")
    # Then it is logged with the full name and counted under the bounded family label
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "breaker.opened"]
    assert line.fields["breaker"] == "webhook:example.com" and line.fields["alert"] == "no_actor"  # type: ignore[attr-defined]
    assert counter._value.get() == before + 1
