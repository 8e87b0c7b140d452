"""Backoff: exponential with full jitter above a floor, checked statistically over many draws."""

from __future__ import annotations

import random
import statistics

import pytest

from service.middleware.retries import backoff_delay

DRAWS = 5000


@pytest.mark.parametrize("retries", [0, 1, 2, 3, 8, 20])
def test_delays_are_uniform_between_floor_and_capped_exponential(retries: int) -> None:
    # Given the default policy's bounds (ms)
    low, high = 1000.0, 300_000.0
    ceiling = min(high, low * 2 ** (retries + 1))
    random.seed(retries)
    # When drawing many delays
    delays = sorted(backoff_delay(retries, low, high) for _ in range(DRAWS))
    # Then every delay is inside [floor, ceiling]
    assert low <= delays[0] and delays[-1] <= ceiling
    # And they are spread uniformly (Kolmogorov-Smirnov distance to the uniform CDF, 99.9 %)
    width = ceiling - low
    distance = max(abs((i + 1) / DRAWS - (d - low) / width) for i, d in enumerate(delays))
    assert distance < 1.95 / DRAWS**0.5
    # And jitter really spreads them (a uniform's stdev is width / sqrt(12))
    assert statistics.pstdev(delays) == pytest.approx(width / 12**0.5, rel=0.05)


def test_ceiling_grows_then_stops_at_max() -> None:
    assert max(backoff_delay(0, 10, 1000) for _ in range(500)) <= 20
    assert max(backoff_delay(2, 10, 1000) for _ in range(500)) <= 80
    assert max(backoff_delay(60, 10, 1000) for _ in range(500)) <= 1000


def test_zero_backoff_policy_retries_at_once() -> None:
    assert backoff_delay(3, 0, 0) == 0
