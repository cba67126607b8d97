"""agentd's interaction records: every task done for a customer, succeeded or dead-lettered,
lands once on the shared interactions stream in the transaction that ends it; tasks for nobody
do not. A real agentd process against a real Redis."""

from __future__ import annotations

import json
import uuid

from agents.agentd import contract
from tests.agentd.conftest import queue_task, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}


def records_for(queue_redis, customer: str) -> list[dict[str, str]]:
    return [
        fields
        for _, fields in queue_redis.xrange(contract.INTERACTIONS)
        if fields.get(contract.REPLY_CUSTOMER) == customer
    ]


def test_a_task_done_for_a_customer_is_recorded_once(start_agentd, queue_redis):
    agent = start_agentd(FAST, args=["--version", "1.4.0"])
    customer = f"acme-{uuid.uuid4().hex[:8]}"

    message_id = queue_task(
        queue_redis, agent, customer=customer, producer=f"customer:{customer}",
        payload=json.dumps({"kind": "lookup", "q": "x"}),
    )  # fmt: skip
    [record] = wait_until(lambda: records_for(queue_redis, customer))

    assert record[contract.REPLY_AGENT] == agent.slug
    assert record[contract.REPLY_MESSAGE_ID] == message_id
    assert record[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED
    assert record[contract.REPLY_ERROR] == ""
    assert record[contract.INTERACTION_KIND] == "lookup"
    assert record[contract.INTERACTION_PRODUCER] == f"customer:{customer}"
    assert record[contract.REPLY_VERSION] == "1.4.0"
    assert record[contract.REPLY_ATTEMPTS] == "1"
    assert int(record[contract.INTERACTION_AT]) > 0


def test_a_dead_lettered_task_is_recorded_with_its_error(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 2})
    customer = f"acme-{uuid.uuid4().hex[:8]}"

    queue_task(queue_redis, agent, customer=customer, fail="1")
    [record] = wait_until(lambda: records_for(queue_redis, customer))

    assert record[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED
    assert record[contract.REPLY_ERROR] == "the task asked to fail (fail=1)"
    assert record[contract.REPLY_ATTEMPTS] == "2"
    # The kind falls back to the agent's template when the payload names none.
    assert record[contract.INTERACTION_KIND] == "blank"


def test_a_task_for_nobody_is_not_recorded(start_agentd, queue_redis):
    agent = start_agentd(FAST)

    first = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=first)

    mine = [
        fields
        for _, fields in queue_redis.xrange(contract.INTERACTIONS)
        if fields.get(contract.REPLY_AGENT) == agent.slug
    ]
    assert mine == []
