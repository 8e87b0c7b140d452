"""``callboard queues`` on real brokers: waiting, delayed and dead counts, oldest age, SLA."""

from __future__ import annotations

import json

from dramatiq import Broker

from service import send, send_many
from tests.support.actors import QUEUE
from tests.support.processes import run_callboard
from tests.support.waiting import wait_until


def test_queues_reports_what_waits_and_what_is_delayed(
    operator_env: dict[str, str], producer: Broker
) -> None:
    # Given 5 waiting messages and 2 delayed ones, with no worker running
    send_many("tb_record", [["q", n] for n in range(5)])
    send("tb_record", ["q-later"], delay=3600)
    send("tb_record", ["q-later"], delay=3600)

    # When an operator lists the queues
    def rows() -> dict[str, dict[str, object]]:
        result = run_callboard("queues", "--json", env=operator_env)
        assert result.returncode == 0, result.stderr
        return {row["queue"]: row for row in json.loads(result.stdout)}

    # Then the test queue shows them, and every catalogue queue has its SLA
    row = wait_until(lambda: rows()[QUEUE]["waiting"] == 5 and rows()[QUEUE], message="5 waiting")
    assert row["delayed"] == 2 and row["dead"] == 0
    listed = rows()
    assert listed["critical"]["sla_s"] == 2 and listed["reports"]["sla_s"] == 60
    if hasattr(producer, "client"):  # Redis also knows ages and what workers hold
        assert row["oldest_age_s"] is not None and row["oldest_age_s"] >= 0
        assert row["in_flight"] == 0
