"""agentd's replies: a task that names a reply stream gets its outcome there (status, output,
error, duration, version, replica), also when it is dead-lettered; a task id already answered is
acknowledged and not processed again. A real agentd process against a real Redis."""

from __future__ import annotations

import json

from agents.agentd import contract
from tests.agentd.conftest import dead_letters, queue_task, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}


def replies(queue_redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in queue_redis.xrange(stream)]


def test_a_done_task_is_answered_with_its_outcome(start_agentd, queue_redis, reply_stream):
    agent = start_agentd(FAST, args=["--version", "2.3.4"])
    reply_to = reply_stream

    message_id = queue_task(
        queue_redis, agent, task_id="run-7-step-2-a1", reply_to=reply_to,
        payload=json.dumps({"op": "get", "key": "k"}), customer="acme",
    )  # fmt: skip

    [reply] = wait_until(lambda: replies(queue_redis, reply_to))
    assert reply[contract.REPLY_TASK_ID] == "run-7-step-2-a1"
    assert reply[contract.REPLY_MESSAGE_ID] == message_id
    assert reply[contract.REPLY_AGENT] == agent.slug
    assert reply[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED
    assert json.loads(reply[contract.REPLY_OUTPUT]) == {"op": "get", "key": "k"}
    assert reply[contract.REPLY_ERROR] == ""
    assert int(reply[contract.REPLY_DURATION_MS]) >= 0
    assert reply[contract.REPLY_VERSION] == "2.3.4"
    assert reply[contract.REPLY_REPLICA] == f"{agent.slug}-0"
    assert reply[contract.REPLY_ATTEMPTS] == "1"
    assert reply[contract.REPLY_CUSTOMER] == "acme"
    assert queue_redis.zscore(contract.answered(agent.slug), "run-7-step-2-a1") is not None


def test_a_dead_lettered_task_is_answered_with_its_error(start_agentd, queue_redis, reply_stream):
    agent = start_agentd({**FAST, "task_max_failures": 2})
    reply_to = reply_stream

    queue_task(queue_redis, agent, task_id="t-1", reply_to=reply_to, fail="1")

    [reply] = wait_until(lambda: replies(queue_redis, reply_to))
    assert reply[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED
    assert reply[contract.REPLY_ERROR] == "the task asked to fail (fail=1)"
    assert reply[contract.REPLY_ATTEMPTS] == "2"
    assert json.loads(reply[contract.REPLY_OUTPUT]) == {}
    assert len(dead_letters(queue_redis, agent)) == 1


def test_a_task_id_already_answered_is_not_processed_again(start_agentd, queue_redis, reply_stream):
    agent = start_agentd(FAST)
    reply_to = reply_stream

    first = queue_task(queue_redis, agent, task_id="same", reply_to=reply_to)
    wait_until(lambda: replies(queue_redis, reply_to))
    again = queue_task(queue_redis, agent, task_id="same", reply_to=reply_to)
    agent.wait_for_log("task_already_answered", task_id=again)
    other = queue_task(queue_redis, agent, task_id="other", reply_to=reply_to)
    wait_until(lambda: len(replies(queue_redis, reply_to)) == 2)

    assert [r[contract.REPLY_MESSAGE_ID] for r in replies(queue_redis, reply_to)] == [first, other]
    assert queue_redis.hget(contract.counters(agent.slug), contract.COUNTER_PROCESSED) == "2"
    assert queue_redis.xlen(contract.task_stream(agent.slug)) == 0


def test_a_task_without_a_reply_stream_is_still_remembered_by_its_id(start_agentd, queue_redis):
    agent = start_agentd(FAST)

    first = queue_task(queue_redis, agent, task_id="quiet")
    agent.wait_for_log("task_processed", task_id=first)
    again = queue_task(queue_redis, agent, task_id="quiet")
    agent.wait_for_log("task_already_answered", task_id=again)

    assert queue_redis.hget(contract.counters(agent.slug), contract.COUNTER_PROCESSED) == "1"
