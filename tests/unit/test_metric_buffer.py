"""The metric buffer gives the same exposition as writing each value directly (it reads
prometheus_client's histogram internals, so a change there must fail here)."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.metrics.buffer import MetricBuffer

BUCKETS = (0.005, 0.01, 0.1, 1, 2, 2.5, 3, 5, 10)


def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    counter = Counter("t_messages", "help", ["outcome"], registry=registry)
    histogram = Histogram("t_wait_seconds", "help", ["queue"], buckets=BUCKETS, registry=registry)
    return counter, histogram


def test_buffered_values_expose_exactly_as_direct_writes() -> None:
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct_counter, direct_histogram = metrics(direct_registry)
    buffered_counter, buffered_histogram = metrics(buffered_registry)
    buffer = MetricBuffer()
    rng = random.Random(7)
    # bucket bounds themselves, values between, below the first and above the last
    values = [*BUCKETS, 0.0, 0.004, 2.2, 7.5, 11.0, 1e6] + [rng.uniform(0, 12) for _ in range(2000)]
    for value in values:
        outcome = rng.choice(["success", "retry", "dead"])
        direct_counter.labels(outcome).inc()
        direct_histogram.labels("q").observe(value)
        buffer.inc(buffered_counter.labels(outcome))
        buffer.observe(buffered_histogram.labels("q"), value)
    assert generate_latest(buffered_registry) != generate_latest(direct_registry)  # nothing yet
    buffer.flush()
    assert _without_created(generate_latest(buffered_registry)) == _without_created(
        generate_latest(direct_registry)
    )


def test_concurrent_writers_lose_nothing() -> None:
    registry = CollectorRegistry()
    counter, histogram = metrics(registry)
    buffer = MetricBuffer()
    child, observed = counter.labels("success"), histogram.labels("q")

    def write() -> None:
        for _ in range(5000):
            buffer.inc(child)
            buffer.observe(observed, 0.05)

    threads = [threading.Thread(target=write) for _ in range(8)]
    flusher = threading.Thread(target=lambda: [buffer.flush() for _ in range(200)])
    for thread in [*threads, flusher]:
        thread.start()
    for thread in [*threads, flusher]:
        thread.join()
    buffer.flush()
    assert registry.get_sample_value("t_messages_total", {"outcome": "success"}) == 40_000
    assert registry.get_sample_value("t_wait_seconds_bucket", {"queue": "q", "le": "0.01"}) == 0
    assert registry.get_sample_value("t_wait_seconds_bucket", {"queue": "q", "le": "0.1"}) == 40_000


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]
