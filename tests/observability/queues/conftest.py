"""Queue tests: a real Redis (this worker's database, emptied) and dead letters written as agentd
writes them, so the portal's side can be driven without waiting for tasks to fail."""

from __future__ import annotations

import json
import time

import pytest

from agents.agentd import contract
from tests.agents.conftest import (  # noqa: F401 - fixtures for this package
    act,
    agent_root,
    bring_up,
    seeded,
)


@pytest.fixture
def queue_redis(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def dead_letter(queue_redis):
    """Write one dead letter for ``slug`` as agentd does (fields, group count, label)."""

    def write(
        slug: str,
        *,
        error: str = "ConnectionError: wow-cache:6379",
        payload: dict | None = None,
        redrives: int = 0,
        producer: str = "portal:tester",
        failures: int = 3,
        **extra: str,
    ) -> str:
        fingerprint, label = contract.error_fingerprint(error)
        now = int(time.time() * 1000)
        attempts = [
            {"at": now - 100 * (failures - i), "error": error, "replica": f"{slug}-0"}
            for i in range(failures)
        ]
        fields = {
            contract.FIELD_PRODUCER: producer,
            contract.FIELD_PAYLOAD: json.dumps(payload if payload is not None else {"n": 1}),
            contract.DLQ_ERROR: error,
            contract.DLQ_FAILURES: str(failures),
            contract.DLQ_ORIGINAL_ID: f"{now}-0",
            contract.DLQ_ATTEMPTS: json.dumps(attempts),
            contract.DLQ_FIRST_FAILED_AT: str(attempts[0]["at"]),
            contract.DLQ_LAST_FAILED_AT: str(attempts[-1]["at"]),
            contract.DLQ_REPLICA: f"{slug}-0",
            contract.DLQ_FINGERPRINT: fingerprint,
            **extra,
        }
        if redrives:
            fields[contract.FIELD_REDRIVES] = str(redrives)
        pipe = queue_redis.pipeline(transaction=True)
        pipe.xadd(contract.dead_letters(slug), fields)
        pipe.hincrby(contract.dead_letter_groups(slug), fingerprint, 1)
        pipe.hset(contract.dead_letter_labels(slug), fingerprint, label)
        pipe.hincrby(contract.counters(slug), contract.COUNTER_DEAD_LETTERED, 1)
        return pipe.execute()[0]

    return write
