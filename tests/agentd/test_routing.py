"""Version routing: while two versions of an agent run side by side (blue-green, canary), the
routing hash says which version takes which tasks of the main stream, each version also reads a
stream of its own, and the portal can move a stopped version's leftovers back. Real agentd
processes against a real Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from agents.agentd import contract
from agents.agentd.routing import (
    ROUTING_REFRESH_SECONDS,
    Routing,
    clear_routing,
    move_tasks,
    read_routing,
    set_routing,
)
from tests.agentd.conftest import dead_letters, new_slug, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}
BLUE, GREEN = "1.0.0", "2.0.0"


def replies(queue_redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in queue_redis.xrange(stream)]


def send(queue_redis, stream: str, task_id: str, reply_to: str, **fields: str) -> str:
    return queue_redis.xadd(stream, {"task_id": task_id, "reply_to": reply_to, **fields})


def answered_by(queue_redis, reply_to: str, count: int, timeout: float = 30.0) -> dict[str, str]:
    """task id -> the version that answered it, once ``count`` replies are there; fails on a
    task answered twice."""

    def enough() -> list[dict[str, str]]:
        found = replies(queue_redis, reply_to)
        return found if len(found) >= count else []

    found = wait_until(enough, timeout, f"fewer than {count} replies on {reply_to}")
    twice = [t for t, n in Counter(r[contract.REPLY_TASK_ID] for r in found).items() if n > 1]
    assert twice == []
    return {r[contract.REPLY_TASK_ID]: r[contract.REPLY_VERSION] for r in found}


def start_versions(start_agentd, config=FAST):
    """A replica of BLUE and one of GREEN of one agent."""
    blue = start_agentd(config, args=["--version", BLUE])
    green = start_agentd(config, slug=blue.slug, replica=1, args=["--version", GREEN])
    return blue, green


def processed(*agents) -> float:
    return sum(agent.metrics().value("agentd_tasks_processed_total") for agent in agents)


# The routing itself


def test_the_names_both_sides_read():
    assert contract.version_stream("wow-cache", "1.2.0") == "agents:wow-cache:tasks:v1.2.0"
    assert contract.routing_key("wow-cache") == "agents:wow-cache:routing"
    assert (contract.ROUTING_SERVING, contract.ROUTING_CANARY, contract.ROUTING_WEIGHT) == (
        "serving",
        "canary",
        "weight",
    )


def test_canary_bucket_is_deterministic_and_spreads_keys_over_0_to_99():
    buckets = [contract.canary_bucket(f"task-{n}") for n in range(10_000)]

    assert buckets == [contract.canary_bucket(f"task-{n}") for n in range(10_000)]
    assert set(buckets) == set(range(100))
    share_below_30 = sum(bucket < 30 for bucket in buckets) / len(buckets)
    assert 0.28 < share_below_30 < 0.32


def test_target_sends_the_canarys_share_to_it_and_the_rest_to_serving():
    keys = [f"k{n}" for n in range(1000)]
    routing = Routing(serving=BLUE, canary=GREEN, weight=30)

    targets = {key: routing.target(key) for key in keys}

    assert all(
        (target == GREEN) == (contract.canary_bucket(key) < 30) for key, target in targets.items()
    )
    assert {Routing(BLUE, GREEN, 0).target(key) for key in keys} == {BLUE}
    assert {Routing(BLUE, GREEN, 100).target(key) for key in keys} == {GREEN}
    assert {Routing(BLUE, "", 100).target(key) for key in keys} == {BLUE}


def test_set_read_and_clear_routing(queue_redis):
    slug = new_slug()
    assert read_routing(queue_redis, slug) is None

    set_routing(queue_redis, slug, BLUE, canary=GREEN, weight=30)
    assert read_routing(queue_redis, slug) == Routing(BLUE, GREEN, 30)
    set_routing(queue_redis, slug, GREEN)
    assert read_routing(queue_redis, slug) == Routing(GREEN, "", 0)
    assert queue_redis.hgetall(contract.routing_key(slug)) == {
        "serving": GREEN,
        "canary": "",
        "weight": "0",
    }

    clear_routing(queue_redis, slug)
    assert read_routing(queue_redis, slug) is None
    queue_redis.hset(contract.routing_key(slug), "canary", GREEN)
    assert read_routing(queue_redis, slug) is None  # no serving version: no routing
    queue_redis.delete(contract.routing_key(slug))


@pytest.mark.parametrize(
    ("serving", "canary", "weight"),
    [("", "", 0), (BLUE, GREEN, 101), (BLUE, GREEN, -1), (BLUE, GREEN, True), (BLUE, BLUE, 10)],
)
def test_set_routing_refuses_a_bad_value_and_changes_nothing(queue_redis, serving, canary, weight):
    slug = new_slug()
    set_routing(queue_redis, slug, BLUE)

    with pytest.raises(ValueError):
        set_routing(queue_redis, slug, serving, canary=canary, weight=weight)

    assert read_routing(queue_redis, slug) == Routing(BLUE)
    clear_routing(queue_redis, slug)


# agentd with and without routing


def test_without_routing_every_replica_takes_main_stream_tasks(
    start_agentd, queue_redis, reply_stream
):
    blue, green = start_versions(start_agentd, {**FAST, "faults": {"latency_ms": 5}})
    main = contract.task_stream(blue.slug)

    for n in range(40):
        send(queue_redis, main, f"t-{n}", reply_stream)

    versions = answered_by(queue_redis, reply_stream, 40)
    assert len(versions) == 40
    assert set(versions.values()) == {BLUE, GREEN}  # both replicas took a share
    assert processed(blue, green) == 40
    assert queue_redis.xlen(main) == 0
    assert "agentd_tasks_routed_total" not in blue.metrics().names()


def test_metrics_say_the_replicas_version(start_agentd):
    agent = start_agentd(args=["--version", "3.1.4"])

    exposition = agent.metrics()

    assert exposition.types["agentd_build_info"] == "gauge"
    assert exposition.value("agentd_build_info", version="3.1.4", slug=agent.slug) == 1


def test_the_serving_version_answers_the_main_stream_and_the_other_only_its_own(
    start_agentd, queue_redis, reply_stream, spare_slug
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE)
    blue = start_agentd(FAST, slug=slug, args=["--version", BLUE])
    green = start_agentd(FAST, slug=slug, replica=1, args=["--version", GREEN])
    main = contract.task_stream(slug)

    for n in range(40):
        send(queue_redis, main, f"main-{n}", reply_stream)
    for n in range(5):
        send(queue_redis, contract.version_stream(slug, GREEN), f"preview-{n}", reply_stream)

    versions = answered_by(queue_redis, reply_stream, 45)
    assert {versions[f"main-{n}"] for n in range(40)} == {BLUE}
    assert {versions[f"preview-{n}"] for n in range(5)} == {GREEN}
    assert blue.metrics().value("agentd_tasks_processed_total") == 40
    assert green.metrics().value("agentd_tasks_processed_total") == 5
    assert "agentd_tasks_routed_total" not in green.metrics().names()  # it never read main
    for stream in (main, contract.version_stream(slug, GREEN)):
        assert queue_redis.xlen(stream) == 0
        assert queue_redis.xpending(stream, contract.CONSUMER_GROUP)["pending"] == 0
    assert queue_redis.hget(contract.counters(slug), contract.COUNTER_PROCESSED) == "45"


def test_a_canary_takes_its_share_and_every_task_is_answered_once(
    start_agentd, queue_redis, reply_stream, spare_slug
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE, canary=GREEN, weight=30)
    blue = start_agentd(FAST, slug=slug, args=["--version", BLUE])
    green = start_agentd(FAST, slug=slug, replica=1, args=["--version", GREEN])
    tasks = 400

    for n in range(tasks):
        send(queue_redis, contract.task_stream(slug), f"canary-{n}", reply_stream)

    versions = answered_by(queue_redis, reply_stream, tasks)
    assert len(versions) == tasks
    to_green = [task_id for task_id, version in versions.items() if version == GREEN]
    # Drawn by count: 30 of every hundred, so exactly its share (give or take a redelivery).
    assert abs(len(to_green) - 120) <= 2, len(to_green)
    assert processed(blue, green) == tasks
    blue_metrics = blue.metrics()
    assert blue_metrics.value("agentd_tasks_routed_total", to_version=GREEN) == len(to_green)
    assert blue_metrics.types["agentd_tasks_routed_total"] == "counter"
    assert queue_redis.xlen(contract.version_stream(slug, GREEN)) == 0


def test_switching_the_serving_version_under_load_loses_and_doubles_no_task(
    start_agentd, queue_redis, reply_stream, spare_slug, redis_url
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE)
    config = {**FAST, "faults": {"latency_ms": 2}}
    blue = start_agentd(config, slug=slug, args=["--version", BLUE])
    green = start_agentd(config, slug=slug, replica=1, args=["--version", GREEN])
    tasks = 400
    sent = threading.Event()

    def produce() -> None:
        for n in range(tasks):
            send(queue_redis, contract.task_stream(slug), f"switch-{n}", reply_stream)
            time.sleep(0.005)
        sent.set()

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: len(replies(queue_redis, reply_stream)) >= 100, timeout=20)
    set_routing(queue_redis, slug, GREEN)
    producer.join(30)

    versions = answered_by(queue_redis, reply_stream, tasks)
    assert sent.is_set()
    assert sorted(versions) == sorted(f"switch-{n}" for n in range(tasks))
    assert processed(blue, green) == tasks  # nothing processed twice
    assert versions["switch-0"] == BLUE
    assert versions[f"switch-{tasks - 1}"] == GREEN
    assert queue_redis.xlen(contract.task_stream(slug)) == 0
    assert queue_redis.xlen(contract.version_stream(slug, GREEN)) == 0


def test_a_failing_task_on_a_version_stream_is_retried_then_dead_lettered(
    start_agentd, queue_redis, reply_stream, spare_slug
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE)
    green = start_agentd({**FAST, "task_max_failures": 3}, slug=slug, args=["--version", GREEN])
    own = contract.version_stream(slug, GREEN)

    message_id = send(queue_redis, own, "doomed", reply_stream, fail="1")

    [reply] = wait_until(lambda: replies(queue_redis, reply_stream), timeout=10)
    assert reply[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED
    assert reply[contract.REPLY_ATTEMPTS] == "3"
    assert reply[contract.REPLY_VERSION] == GREEN
    assert [r["failures"] for r in green.events("task_failed")] == [1, 2]
    [(_, letter)] = dead_letters(queue_redis, green)
    assert letter[contract.DLQ_ORIGINAL_ID] == message_id
    assert letter[contract.DLQ_FAILURES] == "3"
    assert letter["fail"] == "1"
    assert queue_redis.xlen(own) == 0
    assert queue_redis.xpending(own, contract.CONSUMER_GROUP)["pending"] == 0
    assert not queue_redis.exists(contract.failure_counts(slug))
    assert not queue_redis.exists(contract.attempt_log(slug))
    assert queue_redis.hget(contract.counters(slug), contract.COUNTER_FAILED) == "3"
    assert queue_redis.hget(contract.counters(slug), contract.COUNTER_DEAD_LETTERED) == "1"


def test_equal_ids_on_the_main_and_a_version_stream_count_their_failures_apart(
    start_agentd, queue_redis, spare_slug
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE)
    main, own = contract.task_stream(slug), contract.version_stream(slug, BLUE)
    queue_redis.xadd(main, {"fail": "1"}, id="5-1")
    queue_redis.xadd(own, {"fail": "1"}, id="5-1")

    agent = start_agentd({**FAST, "task_retry_ms": 60_000}, slug=slug, args=["--version", BLUE])

    wait_until(lambda: len(agent.events("task_failed")) == 2, timeout=10)
    assert queue_redis.hgetall(contract.failure_counts(slug)) == {"5-1": "1", f"{own}/5-1": "1"}
    assert set(queue_redis.hkeys(contract.attempt_log(slug))) == {"5-1", f"{own}/5-1"}


# Moving a stopped version's leftovers


def test_move_tasks_moves_pending_and_new_entries_exactly_once(queue_redis, spare_slug):
    slug = spare_slug()
    source, target = contract.version_stream(slug, GREEN), contract.task_stream(slug)
    queue_redis.xgroup_create(source, contract.CONSUMER_GROUP, id="0", mkstream=True)
    for n in range(5):
        queue_redis.xadd(source, {"task_id": f"left-{n}", "n": str(n)})
    queue_redis.xreadgroup(contract.CONSUMER_GROUP, f"{slug}-1", {source: ">"}, count=2)
    pending_id = queue_redis.xrange(source)[0][0]
    queue_redis.hset(contract.failure_counts(slug), f"{source}/{pending_id}", 2)

    moved = move_tasks(queue_redis, source, target, slug=slug)

    assert moved == 5
    assert queue_redis.xlen(source) == 0
    assert queue_redis.xpending(source, contract.CONSUMER_GROUP)["pending"] == 0
    assert [f for _, f in queue_redis.xrange(target)] == [
        {"task_id": f"left-{n}", "n": str(n)} for n in range(5)
    ]
    assert not queue_redis.exists(contract.failure_counts(slug))  # they start afresh
    assert move_tasks(queue_redis, source, target) == 0


def test_move_tasks_works_on_a_stream_nobody_read(queue_redis, spare_slug):
    slug = spare_slug()
    source, target = contract.version_stream(slug, GREEN), contract.task_stream(slug)
    queue_redis.xadd(source, {"job": "a"})
    queue_redis.xadd(source, {"job": "b"})

    assert move_tasks(queue_redis, source, target) == 2
    assert [f["job"] for _, f in queue_redis.xrange(target)] == ["a", "b"]


def test_a_rolled_back_versions_leftovers_are_answered_by_the_serving_version(
    start_agentd, queue_redis, reply_stream, spare_slug
):
    slug = spare_slug()
    set_routing(queue_redis, slug, BLUE, canary=GREEN, weight=100)
    blue = start_agentd(FAST, slug=slug, args=["--version", BLUE])
    for n in range(20):  # all routed to GREEN, which does not run
        send(queue_redis, contract.task_stream(slug), f"left-{n}", reply_stream)
    own = contract.version_stream(slug, GREEN)
    wait_until(lambda: queue_redis.xlen(own) == 20, timeout=10)

    set_routing(queue_redis, slug, BLUE)
    time.sleep(2 * ROUTING_REFRESH_SECONDS)  # no replica routes by the old routing any more
    moved = move_tasks(queue_redis, own, contract.task_stream(slug), slug=slug)

    versions = answered_by(queue_redis, reply_stream, 20)
    assert moved == 20
    assert set(versions.values()) == {BLUE}
    assert len(versions) == 20
    assert blue.metrics().value("agentd_tasks_routed_total", to_version=GREEN) == 20
