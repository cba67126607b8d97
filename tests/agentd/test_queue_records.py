"""What agentd writes in Redis for the portal's queue pages: the counters of every move, each
failed attempt, the dead letter's history and its error group; and payloads that ask to fail or
cannot be read. A real agentd process against a real Redis."""

from __future__ import annotations

import json
import signal
import time

import redis

from agents.agentd import contract
from tests.agentd.conftest import dead_letters, pending_count, queue_task, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}


def epoch_ms() -> int:
    return int(time.time() * 1000)


def counters(queue_redis, agent) -> dict[str, str]:
    return queue_redis.hgetall(contract.counters(agent.slug))


# Counters


def test_counters_count_completions_failed_attempts_dead_letters_and_producers(
    start_agentd, queue_redis
):
    agent = start_agentd({**FAST, "task_max_failures": 2})

    done = [queue_task(queue_redis, agent, producer="portal:ada") for _ in range(2)]
    done.append(queue_task(queue_redis, agent))
    doomed = [queue_task(queue_redis, agent, fail="1", producer="workflow:7") for _ in range(2)]
    for task_id in done:
        agent.wait_for_log("task_processed", task_id=task_id)
    for task_id in doomed:
        agent.wait_for_log("task_dead_lettered", task_id=task_id)

    assert counters(queue_redis, agent) == {
        contract.COUNTER_PROCESSED: "3",
        contract.COUNTER_FAILED: "4",
        contract.COUNTER_DEAD_LETTERED: "2",
    }
    # Done or dead-lettered, per producer ("" for a task that names none).
    assert queue_redis.hgetall(contract.producer_counts(agent.slug)) == {
        "portal:ada": "2",
        "": "1",
        "workflow:7": "2",
    }
    exposition = agent.metrics()
    assert exposition.value("agentd_tasks_processed_total") == 3
    assert exposition.value("agentd_tasks_failed_total") == 4
    assert exposition.value("agentd_tasks_dead_lettered_total") == 2


def test_a_task_that_fails_then_succeeds_leaves_no_attempts_behind(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 5, "faults": {"fail_rate": 1}})

    task_id = queue_task(queue_redis, agent)
    agent.wait_for_log("task_failed", task_id=task_id, failures=2)
    agent.patch_config({"faults": {"fail_rate": 0}})
    agent.wait_for_log("task_processed", task_id=task_id)

    failed = int(counters(queue_redis, agent)[contract.COUNTER_FAILED])
    assert failed == len(agent.events("task_failed")) >= 2
    assert counters(queue_redis, agent)[contract.COUNTER_PROCESSED] == "1"
    assert contract.COUNTER_DEAD_LETTERED not in counters(queue_redis, agent)
    assert not queue_redis.hexists(contract.attempt_log(agent.slug), task_id)
    assert not queue_redis.hexists(contract.failure_counts(agent.slug), task_id)
    assert dead_letters(queue_redis, agent) == []


# Attempts and the dead letter


def test_each_failed_attempt_is_logged_while_the_task_waits_for_its_retry(
    start_agentd, queue_redis
):
    agent = start_agentd({"task_max_failures": 3, "task_retry_ms": 60_000})
    before = epoch_ms()

    task_id = queue_task(queue_redis, agent, fail="1")
    agent.wait_for_log("task_failed", task_id=task_id)

    [attempt] = json.loads(queue_redis.hget(contract.attempt_log(agent.slug), task_id))
    assert attempt == {
        "at": attempt["at"],
        "error": "the task asked to fail (fail=1)",
        "replica": f"{agent.slug}-0",
    }
    assert before <= attempt["at"] <= epoch_ms()
    assert counters(queue_redis, agent) == {contract.COUNTER_FAILED: "1"}


def test_dead_letter_keeps_the_task_and_adds_its_history(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 3})
    before = epoch_ms()

    task = {
        "fail": "1",
        contract.FIELD_PRODUCER: "portal:ada",
        contract.FIELD_CUSTOMER: "c-7",
        contract.FIELD_SENT_AT: str(before),
        contract.FIELD_PAYLOAD: json.dumps({"order": 42}),
    }
    task_id = queue_redis.xadd(contract.task_stream(agent.slug), task)
    agent.wait_for_log("task_dead_lettered", task_id=task_id)
    after = epoch_ms()

    [(_, letter)] = dead_letters(queue_redis, agent)
    attempts = json.loads(letter.pop(contract.DLQ_ATTEMPTS))
    error = "the task asked to fail (fail=1)"
    assert letter == {
        **task,
        contract.DLQ_ERROR: error,
        contract.DLQ_FAILURES: "3",
        contract.DLQ_ORIGINAL_ID: task_id,
        contract.DLQ_FIRST_FAILED_AT: str(attempts[0]["at"]),
        contract.DLQ_LAST_FAILED_AT: str(attempts[-1]["at"]),
        contract.DLQ_REPLICA: f"{agent.slug}-0",
        contract.DLQ_FINGERPRINT: contract.error_fingerprint(error)[0],
    }
    assert [(a["error"], a["replica"]) for a in attempts] == [(error, f"{agent.slug}-0")] * 3
    times = [a["at"] for a in attempts]
    assert before <= times[0] < times[-1] <= after
    assert times == sorted(times)
    assert not queue_redis.exists(contract.attempt_log(agent.slug))
    assert not queue_redis.exists(contract.failure_counts(agent.slug))
    assert queue_redis.xlen(contract.task_stream(agent.slug)) == 0
    assert pending_count(queue_redis, agent) == 0


def test_failures_and_attempts_survive_a_restart_and_name_each_replica(start_agentd, queue_redis):
    first = start_agentd({"task_max_failures": 3, "task_retry_ms": 60_000})
    task_id = queue_task(queue_redis, first, fail="1")
    first.wait_for_log("task_failed", task_id=task_id)
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = start_agentd({**FAST, "task_max_failures": 3}, slug=first.slug, replica=1)
    second.wait_for_log("task_dead_lettered", task_id=task_id)

    [(_, letter)] = dead_letters(queue_redis, second)
    replicas = [a["replica"] for a in json.loads(letter[contract.DLQ_ATTEMPTS])]
    assert replicas == [f"{first.slug}-0", f"{first.slug}-1", f"{first.slug}-1"]
    assert letter[contract.DLQ_FAILURES] == "3"
    assert letter[contract.DLQ_REPLICA] == f"{first.slug}-1"
    assert [r["failures"] for r in second.events("task_failed")] == [2]
    assert counters(queue_redis, second) == {
        contract.COUNTER_FAILED: "3",
        contract.COUNTER_DEAD_LETTERED: "1",
    }


def test_dead_letters_are_counted_per_error_group_with_its_label(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 1})

    asked = [queue_task(queue_redis, agent, fail="1") for _ in range(3)]
    garbled = [queue_task(queue_redis, agent, payload="{oops") for _ in range(2)]
    wait_until(lambda: len(dead_letters(queue_redis, agent)) == 5)

    letters = [letter for _, letter in dead_letters(queue_redis, agent)]
    errors = {letter[contract.DLQ_ORIGINAL_ID]: letter[contract.DLQ_ERROR] for letter in letters}
    asked_fingerprint, asked_label = contract.error_fingerprint(errors[asked[0]])
    garbled_fingerprint, garbled_label = contract.error_fingerprint(errors[garbled[0]])
    assert {errors[task_id] for task_id in asked} == {"the task asked to fail (fail=1)"}
    assert len({errors[task_id] for task_id in garbled}) == 1
    assert queue_redis.hgetall(contract.dead_letter_groups(agent.slug)) == {
        asked_fingerprint: "3",
        garbled_fingerprint: "2",
    }
    assert queue_redis.hgetall(contract.dead_letter_labels(agent.slug)) == {
        asked_fingerprint: asked_label,
        garbled_fingerprint: garbled_label,
    }
    fingerprints = {letter[contract.DLQ_FINGERPRINT] for letter in letters}
    assert fingerprints == {asked_fingerprint, garbled_fingerprint}


# Payloads


def test_a_payload_with_fail_true_fails_and_fail_false_does_not(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 1})

    doomed = queue_task(queue_redis, agent, payload=json.dumps({"fail": True, "n": 1}))
    spared = queue_task(queue_redis, agent, payload=json.dumps({"fail": False, "n": 2}))
    agent.wait_for_log("task_dead_lettered", task_id=doomed)
    agent.wait_for_log("task_processed", task_id=spared)

    [(_, letter)] = dead_letters(queue_redis, agent)
    assert letter[contract.DLQ_ERROR] == 'the task asked to fail (payload "fail": true)'
    assert json.loads(letter[contract.FIELD_PAYLOAD]) == {
        "fail": True,
        "n": 1,
    }


def test_a_payload_that_is_not_json_is_poison_and_the_worker_goes_on(start_agentd, queue_redis):
    agent = start_agentd({**FAST, "task_max_failures": 2})

    poison = queue_task(queue_redis, agent, payload='{"order": 42,')
    listed = queue_task(queue_redis, agent, payload="[1, 2]")
    after = queue_task(queue_redis, agent, payload=json.dumps({"order": 43}))
    agent.wait_for_log("task_processed", task_id=after)
    agent.wait_for_log("task_dead_lettered", task_id=poison)
    agent.wait_for_log("task_dead_lettered", task_id=listed)

    letters = {
        letter[contract.DLQ_ORIGINAL_ID]: letter for _, letter in dead_letters(queue_redis, agent)
    }
    poison_attempts = json.loads(letters[poison][contract.DLQ_ATTEMPTS])
    assert len(poison_attempts) == 2
    assert all(a["error"].startswith("payload is not valid JSON: ") for a in poison_attempts)
    assert letters[poison][contract.FIELD_PAYLOAD] == '{"order": 42,'
    assert letters[listed][contract.DLQ_ERROR] == "payload must be a JSON object, got list"
    assert agent.events("worker_error") == []


def test_a_payload_that_is_not_utf8_is_dead_lettered_byte_for_byte(
    start_agentd, queue_redis, redis_url
):
    agent = start_agentd({**FAST, "task_max_failures": 1})
    raw = redis.Redis.from_url(redis_url)
    payload = b'{"name": "\xc3\xa9 caf\xe9"}'  # UTF-8, then a Latin-1 byte

    poison = raw.xadd(contract.task_stream(agent.slug), {contract.FIELD_PAYLOAD: payload})
    after = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=after)
    record = agent.wait_for_log("task_dead_lettered", task_id=poison.decode())

    [(_, letter)] = raw.xrange(contract.dead_letters(agent.slug))
    raw.close()
    assert letter[contract.FIELD_PAYLOAD.encode()] == payload
    assert record["error"] == "payload is not UTF-8 text (byte 16)"
    assert agent.events("worker_error") == []
