"""Interactions: what real agentd processes did for a customer reaches the help desk exactly
once, through agentd's interaction stream and the ingester, also when an ingester died after
reading (or after storing) and before acknowledging."""

from __future__ import annotations

import json

import pytest
import redis

from agents.agentd import contract
from agents.models import Agent
from helpdesk import interactions
from helpdesk.models import Interaction, InteractionDay, Outcome
from tests.agentd.conftest import queue_redis, queue_task, start_agentd, wait_until  # noqa: F401

FAST = {"task_retry_ms": 50, "task_block_ms": 50, "task_max_failures": 2}


@pytest.fixture
def stream(queue_redis):  # noqa: F811
    """The interaction stream and the help desk's group, empty at the start and the end."""
    queue_redis.delete(contract.INTERACTIONS)
    yield queue_redis
    queue_redis.delete(contract.INTERACTIONS)


def recorded(client: redis.Redis, count: int) -> None:
    wait_until(lambda: client.xlen(contract.INTERACTIONS) >= count, message="agentd's records")


def test_tasks_done_for_a_customer_become_interactions(acme, start_agentd, stream):  # noqa: F811
    process = start_agentd(FAST)
    Agent.objects.create(slug=process.slug, name="Acme Helper", tier="customer")
    for n in range(3):
        queue_task(stream, process, customer="acme-corp", payload=json.dumps({"kind": f"k{n}"}))
    queue_task(stream, process, customer="acme-corp", fail="1")
    queue_task(stream, process, customer="nobody-we-know")
    queue_task(stream, process)  # for no customer: not recorded at all
    recorded(stream, 5)

    done = interactions.ingest_interactions(client=stream)

    assert (done.stored, done.unknown_customer, done.unreadable) == (4, 1, 0)
    rows = list(Interaction.objects.filter(customer=acme).order_by("at", "id"))
    assert sorted(r.kind for r in rows if r.outcome == Outcome.SUCCEEDED) == ["k0", "k1", "k2"]
    [failed] = [r for r in rows if r.outcome == Outcome.DEAD_LETTERED]
    assert failed.error == "the task asked to fail (fail=1)" and failed.attempts == 2
    assert {r.agent.slug for r in rows} == {process.slug}
    assert stream.xlen(contract.INTERACTIONS) == 0  # stored, acknowledged and deleted
    [day] = InteractionDay.objects.filter(customer=acme)
    assert (day.succeeded, day.failed) == (3, 1)


def test_records_read_by_an_ingester_that_died_are_stored_by_the_next(acme, start_agentd, stream):  # noqa: F811
    process = start_agentd(FAST)
    for _ in range(4):
        queue_task(stream, process, customer="acme-corp")
    recorded(stream, 4)
    interactions.ensure_group(stream)
    # The first ingester read everything, then died before storing or acknowledging.
    read = stream.xreadgroup(
        interactions.GROUP, interactions.CONSUMER, {contract.INTERACTIONS: ">"}, count=10
    )
    assert len(read[0][1]) == 4

    done = interactions.ingest_interactions(client=stream)

    assert done.stored == 4
    assert Interaction.objects.filter(customer=acme).count() == 4
    assert InteractionDay.objects.get(customer=acme).succeeded == 4
    assert stream.xpending(contract.INTERACTIONS, interactions.GROUP)["pending"] == 0


def test_records_stored_but_not_acknowledged_are_not_stored_twice(acme, start_agentd, stream):  # noqa: F811
    process = start_agentd(FAST)
    for _ in range(3):
        queue_task(stream, process, customer="acme-corp")
    recorded(stream, 3)
    interactions.ensure_group(stream)
    entries = stream.xreadgroup(
        interactions.GROUP, interactions.CONSUMER, {contract.INTERACTIONS: ">"}, count=10
    )[0][1]
    # Stored by an ingester killed before it acknowledged: the rows are there, the records too.
    Interaction.objects.bulk_create(interactions._row(fields, acme.pk, {}) for _, fields in entries)

    interactions.ingest_interactions(client=stream)
    interactions.ingest_interactions(client=stream)

    assert Interaction.objects.filter(customer=acme).count() == 3
    # Counted per day by whoever stored them first, never again.
    assert not InteractionDay.objects.filter(customer=acme).exists()
    assert stream.xlen(contract.INTERACTIONS) == 0


@pytest.mark.parametrize(
    "broken",
    [
        {contract.REPLY_STATUS: "exploded"},
        {contract.INTERACTION_AT: "yesterday"},
        {contract.REPLY_MESSAGE_ID: ""},
        {contract.REPLY_DURATION_MS: "1e400"},
    ],
)
def test_an_unreadable_record_is_counted_and_dropped(acme, stream, broken):
    good = {
        contract.REPLY_CUSTOMER: "acme-corp", contract.REPLY_AGENT: "acme-x",
        contract.REPLY_MESSAGE_ID: "1-1", contract.REPLY_STATUS: contract.REPLY_SUCCEEDED,
        contract.REPLY_DURATION_MS: "12", contract.REPLY_ATTEMPTS: "1",
        contract.INTERACTION_AT: "1764800000000",
    }  # fmt: skip
    stream.xadd(contract.INTERACTIONS, {**good, **broken})
    stream.xadd(contract.INTERACTIONS, {**good, contract.REPLY_MESSAGE_ID: "1-2"})

    done = interactions.ingest_interactions(client=stream)

    assert (done.stored, done.unreadable) == (1, 1)
    assert list(Interaction.objects.values_list("message_id", flat=True)) == ["1-2"]
