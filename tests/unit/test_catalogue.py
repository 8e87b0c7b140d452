"""The queue catalogue and the policies are exactly DESIGN.md's tables."""

from __future__ import annotations

import pytest

from config.policies import POLICIES, get_policy
from config.queues import QUEUES, get_queue

MIN = 60


def test_policies_match_the_design_table() -> None:
    table = {
        # name: (queue, retries, min backoff, max backoff, soft, hard) in seconds
        "default": ("default", 3, 1, 5 * MIN, 9 * MIN, 10 * MIN),
        "critical": ("critical", 3, 1, 30, 50, 60),
        "email": ("email", 5, 60, 10 * MIN, 100, 2 * MIN),
        "report": ("reports", 2, 5 * MIN, 30 * MIN, 28 * MIN, 30 * MIN),
        "external_api": ("external_api", 3, 10, 10 * MIN, 9 * MIN, 10 * MIN),
        "maintenance": ("maintenance", 0, 0, 0, 9 * MIN, 10 * MIN),
    }
    actual = {
        name: (p.queue, p.max_retries, p.min_backoff, p.max_backoff, p.soft_time_limit, p.time_limit)
        for name, p in POLICIES.items()
    }
    assert actual == table


def test_queue_slas_match_the_design() -> None:
    slas = {name: spec.sla_seconds for name, spec in QUEUES.items()}
    assert slas == {
        "critical": 2,
        "high_priority": 3,
        "email": 5,
        "reports": 60,
        "external_api": 10,
        "maintenance": 300,
        "default": 30,
    }


def test_every_policy_queue_is_in_the_catalogue() -> None:
    assert {p.queue for p in POLICIES.values()} <= set(QUEUES)


def test_soft_limit_comes_before_hard_limit() -> None:
    assert all(p.soft_time_limit < p.time_limit for p in POLICIES.values())


def test_unknown_names_say_what_is_known() -> None:
    with pytest.raises(KeyError, match="known: default"):
        get_policy("nope")
    with pytest.raises(KeyError, match="critical"):
        get_queue("nope")
