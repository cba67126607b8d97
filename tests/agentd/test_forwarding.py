"""Agent-to-agent traffic: agentd hands a share of the tasks it completed on to other agents
(config ``forward``), as new tasks on their streams. A real agentd process against a real Redis."""

from __future__ import annotations

import json
import time

import pytest

from agents.agentd import contract
from agents.agentd.config import MAX_FORWARDS, parse_config
from agents.catalog import PLATFORM_AGENTS, PLATFORM_SLUGS
from tests.agentd.conftest import dead_letters, queue_task, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}


def stream(queue_redis, slug: str) -> list[tuple[str, dict[str, str]]]:
    return queue_redis.xrange(contract.task_stream(slug))


# The config


def test_forward_is_answered_by_get_config(start_agentd, spare_slug):
    target = spare_slug()
    agent = start_agentd({"forward": [{"to": target, "share": 0.25}]})

    assert agent.get("/config").json()["forward"] == [{"to": target, "share": 0.25}]


@pytest.mark.parametrize(
    ("forward", "expected"),
    [
        ({"to": "wow-cache", "share": 1}, "forward must be a list"),
        ([{"to": f"agent-{n}", "share": 1} for n in range(MAX_FORWARDS + 1)], "at most 16"),
        (["wow-cache"], "forward[0] must be a JSON object"),
        ([{"to": "wow-cache", "share": 1, "weight": 2}], "forward[0] has an unknown key 'weight'"),
        ([{"share": 1}], "forward[0].to must be an agent slug"),
        ([{"to": "wow cache!", "share": 1}], "forward[0].to must be an agent slug"),
        ([{"to": 7, "share": 1}], "forward[0].to must be an agent slug"),
        ([{"to": "wow-cache"}], "forward[0].share is missing"),
        ([{"to": "wow-cache", "share": 1.5}], "forward[0].share must be a number from 0 to 1"),
        ([{"to": "wow-cache", "share": -0.1}], "forward[0].share must be a number from 0 to 1"),
        ([{"to": "wow-cache", "share": True}], "forward[0].share must be a number from 0 to 1"),
        ([{"to": "wow-cache", "share": "1"}], "forward[0].share must be a number from 0 to 1"),
        (
            [{"to": "wow-cache", "share": 1}, {"to": "wow-cache", "share": 0.5}],
            "forward[1].to names wow-cache a second time",
        ),
    ],
)
def test_invalid_forward_is_refused_naming_the_bad_key(start_agentd, forward, expected):
    agent = start_agentd({"forward": [{"to": "wow-event", "share": 0.5}]})
    before = agent.get("/config").json()

    response = agent.patch_config({"forward": forward})

    assert response.status == 400
    assert expected in response.json()["error"]
    assert agent.get("/config").json() == before
    assert agent.events("config_changed") == []


def test_an_agent_may_not_forward_to_itself(start_agentd):
    agent = start_agentd()

    response = agent.patch_config({"forward": [{"to": agent.slug, "share": 1}]})

    assert response.status == 400
    assert response.json()["error"] == (
        f"forward[0].to names this agent ({agent.slug}); an agent may not forward to itself"
    )


def test_the_catalog_default_configs_are_valid_and_forward_inside_the_fleet():
    forwards = {}
    for definition in PLATFORM_AGENTS:
        config = parse_config(definition.config, slug=definition.slug)
        forwards[definition.slug] = [(entry.to, entry.share) for entry in config.forward]

    assert all(to in PLATFORM_SLUGS for targets in forwards.values() for to, _ in targets)
    assert {slug: targets for slug, targets in forwards.items() if targets} == {
        "wow-event": [("wow-notification", 0.5), ("wow-analytics", 0.3)],
        "wow-memory": [("wow-cache", 0.5)],
        "wow-search": [("wow-cache", 0.3)],
        "wow-support": [("wow-communication", 0.3)],
        "wow-communication": [("wow-notification", 0.3)],
        "wow-integration": [("wow-event", 0.2)],
    }


# Forwarding


def test_share_one_forwards_each_completed_task_once_and_share_zero_never(
    start_agentd, queue_redis, spare_slug
):
    always, never = spare_slug(), spare_slug()
    agent = start_agentd(
        {
            **FAST,
            "task_max_failures": 1,
            "forward": [{"to": always, "share": 1}, {"to": never, "share": 0}],
        }
    )
    before = int(time.time() * 1000)

    done = {
        queue_task(queue_redis, agent, customer="c-1"): "c-1",
        queue_task(queue_redis, agent, producer="portal:ada"): None,
        queue_task(queue_redis, agent, customer="c-2", payload=json.dumps({"n": 3})): "c-2",
    }
    failed = queue_task(queue_redis, agent, fail="1")
    for task_id in done:
        agent.wait_for_log("task_processed", task_id=task_id)
    agent.wait_for_log("task_dead_lettered", task_id=failed)

    forwarded = {}
    for _, task in stream(queue_redis, always):
        payload = json.loads(task.pop(contract.FIELD_PAYLOAD))
        assert payload["kind"] == "forward"
        assert before <= int(task.pop(contract.FIELD_SENT_AT)) <= int(time.time() * 1000)
        forwarded[payload["forwarded_from"]] = task
    assert forwarded == {
        f"{agent.slug}/{task_id}": {
            contract.FIELD_PRODUCER: agent.slug,
            contract.FIELD_HOPS: "1",
            **({contract.FIELD_CUSTOMER: customer} if customer else {}),
        }
        for task_id, customer in done.items()
    }
    assert not queue_redis.exists(contract.task_stream(never))
    exposition = agent.metrics()
    assert exposition.types["agentd_tasks_forwarded_total"] == "counter"
    assert exposition.value("agentd_tasks_forwarded_total", to=always) == 3
    assert exposition.value("agentd_tasks_forwarded_total", to=never) == 0


def test_forwarded_tasks_are_worked_by_the_target_agent(start_agentd, queue_redis):
    target = start_agentd(FAST)
    source = start_agentd({**FAST, "forward": [{"to": target.slug, "share": 1}]})

    task_id = queue_task(queue_redis, source, customer="c-9")
    forwarded_id = source.wait_for_log("task_forwarded", task_id=task_id)["forwarded_id"]
    target.wait_for_log("task_processed", task_id=forwarded_id)

    assert queue_redis.hgetall(contract.counters(target.slug)) == {contract.COUNTER_PROCESSED: "1"}
    assert queue_redis.hgetall(contract.producer_counts(target.slug)) == {source.slug: "1"}
    assert queue_redis.xlen(contract.task_stream(target.slug)) == 0
    assert dead_letters(queue_redis, target) == []


def test_patch_config_turns_forwarding_on_and_off_live(start_agentd, queue_redis, spare_slug):
    target = spare_slug()
    agent = start_agentd(FAST)

    first = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=first)
    response = agent.patch_config({"forward": [{"to": target, "share": 1}]})
    second = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=second)
    agent.patch_config({"forward": None})
    third = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=third)

    assert response.status == 200
    assert response.json()["forward"] == [{"to": target, "share": 1}]
    assert agent.events("config_changed")[0]["changed"] == ["forward"]
    origins = [
        json.loads(task["payload"])["forwarded_from"] for _, task in stream(queue_redis, target)
    ]
    assert origins == [f"{agent.slug}/{second}"]
    assert agent.get("/config").json()["forward"] == []


def test_a_forward_redis_refuses_is_a_warning_and_the_task_still_completes(
    start_agentd, queue_redis, spare_slug
):
    broken, working = spare_slug(), spare_slug()
    queue_redis.set(contract.task_stream(broken), "not a stream")
    agent = start_agentd(
        {**FAST, "forward": [{"to": broken, "share": 1}, {"to": working, "share": 1}]}
    )

    task_id = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=task_id)
    warning = agent.wait_for_log("forward_failed", task_id=task_id)

    assert warning["level"] == "warning"
    assert warning["to"] == broken
    assert "WRONGTYPE" in warning["error"]
    assert queue_redis.xlen(contract.task_stream(working)) == 1
    assert queue_redis.xlen(contract.task_stream(agent.slug)) == 0
    assert queue_redis.hgetall(contract.counters(agent.slug)) == {contract.COUNTER_PROCESSED: "1"}
    assert dead_letters(queue_redis, agent) == []
    exposition = agent.metrics()
    assert exposition.value("agentd_tasks_forwarded_total", to=broken) == 0
    assert exposition.value("agentd_tasks_forwarded_total", to=working) == 1


def test_a_task_that_came_through_max_hops_is_not_forwarded_again(
    start_agentd, queue_redis, spare_slug
):
    target = spare_slug()
    agent = start_agentd({**FAST, "forward": [{"to": target, "share": 1}]})

    last_hop = queue_task(queue_redis, agent, hops=str(contract.FORWARD_MAX_HOPS - 1))
    too_far = queue_task(queue_redis, agent, hops=str(contract.FORWARD_MAX_HOPS))
    for task_id in (last_hop, too_far):
        agent.wait_for_log("task_processed", task_id=task_id)

    [(_, task)] = stream(queue_redis, target)
    assert json.loads(task["payload"])["forwarded_from"] == f"{agent.slug}/{last_hop}"
    assert task[contract.FIELD_HOPS] == str(contract.FORWARD_MAX_HOPS)
    assert agent.wait_for_log("forward_stopped", task_id=too_far)["max_hops"] == 8
    assert agent.events("forward_stopped")[0]["task_id"] == too_far


def test_forwarding_at_a_share_between_zero_and_one_forwards_some(
    start_agentd, queue_redis, spare_slug
):
    target = spare_slug()
    agent = start_agentd({**FAST, "forward": [{"to": target, "share": 0.5}]})

    for _ in range(60):
        queue_task(queue_redis, agent)
    wait_until(lambda: queue_redis.hget(contract.counters(agent.slug), "processed") == "60")

    # 60 draws at 0.5: fewer than 10 or more than 50 is a one-in-a-billion chance.
    assert 10 <= queue_redis.xlen(contract.task_stream(target)) <= 50
