"""Quick actions on a customer's agents, for real: agents running on a private local runtime,
dead letters on the session's Redis, memory stores answering ``forget_customer``."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from agents.models import Agent, AgentTransition, Operation
from agents.services.liveconfig import patch_config
from agents.workflows.steps import agent_redis
from helpdesk.actions import services
from helpdesk.actions.services import ActionResult, describe_action, run_action
from helpdesk.refusals import HelpdeskRefused
from observability.queues.models import RedriveJob
from portal.models import AuditEntry
from portal.refusals import Refused
from tests.agentd.test_handlers import ask
from tests.helpdesk import actions_kit as kit
from tests.helpdesk.actions_kit import (
    bring_up,
    dead_letter,
    link_agent,
    new_slug,
    run_pending_operations,
)
from tests.helpdesk.conftest import make_customer

agent_root = kit.agent_root  # a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("agent_root")]

MEMORY = {"template": "memory", "task_retry_ms": 50, "task_block_ms": 50}


def test_the_interface_the_issue_detective_calls():
    assert services.ACTIONS == (
        "restart-agent", "start-agent", "scale-agent", "raise-memory", "clear-cache",
        "reset-trial", "resend-email", "grant-access", "revoke-access", "redrive-dead-letters",
        "rollback-version", "rollback-config",
    )  # fmt: skip
    assert ActionResult("x", True, "m", {}).details == {}


def test_an_operator_restarts_a_running_customer_agent(acme, operator_actor, redis_client):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)

    result = run_action(operator_actor, acme, "restart-agent", agent=agent.slug)

    operation = Operation.objects.get(pk=result.details["operation"])
    assert result.ok and result.action == "restart-agent"
    assert result.message == (
        f"Restarting {agent.name}: operation {operation.pk} runs now; its card shows when it is back."
    )
    assert operation.action == "restart" and operation.reason == "help desk, acme-corp"
    [done] = run_pending_operations(agent)  # the worker's part
    assert done.status == Operation.Status.SUCCEEDED, done.error
    assert agent.state == "RUNNING"
    assert AgentTransition.objects.filter(agent=agent, action="restart").count() == 1
    entry = AuditEntry.objects.get(action="helpdesk.action.restart-agent")
    assert entry.target == "customer:acme-corp" and entry.outcome == "success"
    assert entry.detail["agent"] == agent.slug and entry.detail["customer"] == "acme-corp"


def test_an_action_on_another_customers_agent_is_refused_and_nothing_changes(
    acme, operator_actor, db
):
    globex = make_customer("globex", "Globex")
    theirs = link_agent(globex, "globex-bot")

    with pytest.raises(HelpdeskRefused) as refused:
        run_action(operator_actor, acme, "restart-agent", agent=theirs.slug)

    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        "'globex-bot' is not one of Acme Corp's agents, so the help desk will not act on it; its "
        "agents: none."
    )
    assert not Operation.objects.exists()
    entry = AuditEntry.objects.get(action="helpdesk.action.restart-agent")
    assert entry.outcome == "refused" and entry.detail["agent"] == "globex-bot"


def test_a_viewer_may_not_act(acme, viewer_actor):
    agent = link_agent(acme, "acme-bot")
    with pytest.raises(PermissionDenied, match="needs the Operator role and you are Viewer"):
        run_action(viewer_actor, acme, "restart-agent", agent=agent.slug)
    with pytest.raises(PermissionDenied):
        run_action(viewer_actor, acme, "reset-trial", params={"days": 3})
    assert not Operation.objects.exists()


@pytest.mark.parametrize(
    ("action", "agent", "params", "message"),
    [
        ("explode", "acme-bot", {}, "'explode' is not a quick action; use one of restart-agent"),
        ("scale-agent", "acme-bot", {"replicas": 10**20}, "replicas must be a whole number from 1 to 20; got '100000000000000000000'."),
        ("scale-agent", "acme-bot", {"replicas": "3\x00"}, "replicas must be a whole number from 1 to 20"),
        ("scale-agent", "acme-bot", {"replicas": True}, "replicas must be a whole number from 1 to 20; got 'True'."),
        ("scale-agent", "acme-bot", {"replicas": [3]}, "replicas must be a plain value (text, a number or true/false), not a list."),
        ("scale-agent", "acme-bot", "replicas=3", "params is an object of names and values"),
        ("scale-agent", "acme-bot", {"speed": 3}, "scale-agent takes no param 'speed'; its params: replicas."),
        ("restart-agent", None, {}, "restart-agent acts on one of Acme Corp's agents: name it."),
        ("restart-agent", "acme\x00bot", {}, "Name the agent by its slug, such as acme-support."),
        ("restart-agent", 7, {}, "Name the agent by its slug, such as acme-support."),
        ("reset-trial", "acme-bot", {"days": 3}, "reset-trial acts on the customer, not on an agent; leave the agent out."),
        ("reset-trial", None, {"days": 31}, "days must be a whole number from 1 to 30; got '31'."),
        ("resend-email", None, {"kind": "spam"}, "kind must be one of welcome, trial-ending, payment-failed, access-granted; got 'spam'."),
        ("restart-agent", "acme-bot", {"wait": "maybe"}, "wait must be true or false; got 'maybe'."),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_sentence_and_changes_nothing(
    acme, operator_actor, action, agent, params, message
):
    link_agent(acme, "acme-bot")
    before = acme.trial_ends_at

    with pytest.raises(HelpdeskRefused) as refused:
        run_action(operator_actor, acme, action, agent=agent, params=params)

    assert refused.value.message.startswith(message), refused.value.message
    assert refused.value.status in (400, 403, 404)
    assert not Operation.objects.exists()
    acme.refresh_from_db()
    assert acme.trial_ends_at == before


def test_redrive_sends_back_only_this_customers_letters_and_others_stay(
    acme, operator_actor, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    ours = [dead_letter(redis_client, agent, "acme-corp", n) for n in range(3)]
    theirs = [dead_letter(redis_client, agent, "globex", n) for n in range(2)]

    assert describe_action(acme, "redrive-dead-letters", agent=agent.slug) == (
        f"Send 3 of Acme Corp's 3 dead letter(s) on {agent.name} back to its queue (other "
        "customers' letters stay)."
    )
    result = run_action(operator_actor, acme, "redrive-dead-letters", agent=agent.slug)

    assert result.ok, result.message
    assert result.details["sent"] == 3 and result.details["left"] == 0
    job = RedriveJob.objects.get(pk=result.details["job"])
    assert job.message_ids == ours and job.status == "succeeded"
    left = [entry_id.decode() for entry_id, _ in redis_client.xrange(f"agents:{agent.slug}:dlq")]
    assert left == theirs
    with pytest.raises(
        HelpdeskRefused, match="has no dead letters of Acme Corp; nothing to send back"
    ):
        run_action(operator_actor, acme, "redrive-dead-letters", agent=agent.slug)


def test_clear_cache_deletes_exactly_the_customers_keys_in_a_real_memory_store(
    acme, operator_actor, redis_client
):
    store = bring_up(link_agent(acme, new_slug("acme-memory"), MEMORY), redis_client)
    client = agent_redis()

    class Running:  # what tests.agentd's ask() needs of an agent
        slug = store.slug

    def put(key: str, customer: str) -> None:
        payload = {"op": "put", "key": key, "value": 1, "scope": "long"}
        assert ask(client, Running, payload, 15, customer=customer)["status"] == "succeeded"

    put("acme:a", "acme-corp")
    put("acme:b", "acme-corp")
    put("globex:a", "globex")

    result = run_action(operator_actor, acme, "clear-cache")

    assert result.ok, result.message
    assert result.message == f"Deleted 2 cached key(s) of Acme Corp: 2 on {store.slug}."
    keys = ask(client, Running, {"op": "keys", "scope": "long"}, 15)["output"]["keys"]
    assert keys == ["globex:a"]


def test_clear_cache_without_a_memory_store_is_refused(acme, operator_actor):
    link_agent(acme, "acme-bot")
    with pytest.raises(HelpdeskRefused) as refused:
        run_action(operator_actor, acme, "clear-cache")
    assert refused.value.message == (
        "No memory store serves Acme Corp: Acme Corp's agents or WowCache are not running the "
        "memory template. Nothing was deleted; start the memory agent first."
    )


def test_scale_runs_the_customers_agent_on_more_replicas(acme, operator_actor, redis_client):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    assert describe_action(acme, "scale-agent", agent=agent.slug, params={"replicas": 2}) == (
        f"Scale {agent.name} from 1 to 2 replica(s)."
    )

    result = run_action(
        operator_actor, acme, "scale-agent", agent=agent.slug, params={"replicas": "2"}
    )

    agent.refresh_from_db()
    assert result.ok and agent.replicas == 2 and result.details["was"] == 1
    assert result.message.startswith(f"{agent.name} runs 2 replica(s) now (was 1), in ")
    assert len(agent.runtime_details.get("ports") or []) >= 2
    # The same count again: servicing refuses, and says so.
    with pytest.raises(Refused, match="runs 2 replica\\(s\\) already"):
        run_action(operator_actor, acme, "scale-agent", agent=agent.slug, params={"replicas": 2})


def test_rollback_config_puts_the_previous_config_back_on_the_running_agent(
    acme, operator_actor, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    before = dict(agent.config)
    patch_config(agent, {"task_retry_ms": 77}, operator_actor)
    agent.refresh_from_db()
    assert agent.config["task_retry_ms"] == 77

    result = run_action(operator_actor, acme, "rollback-config", agent=agent.slug)

    agent.refresh_from_db()
    assert result.ok, result.message
    assert agent.config == before and agent.previous_config is None
    assert [r["applied"] for r in result.details["replicas"]] == [True]
    with pytest.raises(Refused, match="has no earlier config to go back to"):
        run_action(operator_actor, acme, "rollback-config", agent=agent.slug)


def test_rollback_version_without_an_upgrade_to_undo_is_refused_by_servicing(
    acme, operator_actor, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    with pytest.raises(Refused) as refused:
        run_action(operator_actor, acme, "rollback-version", agent=agent.slug)
    assert refused.value.message == (
        f"{agent.name} has no upgrade to roll back: it runs {agent.version}, and no finished "
        "upgrade took it there."
    )
    entry = AuditEntry.objects.get(action="helpdesk.action.rollback-version")
    assert entry.outcome == "refused"


def test_restart_with_wait_answers_once_the_agent_is_back(acme, operator_actor, redis_client):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    stop = threading.Event()

    def worker() -> None:  # the agents' worker, carrying out what is requested
        while not stop.is_set():
            run_pending_operations(Agent.objects.get(pk=agent.pk))
            time.sleep(0.1)
        connection.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        result = run_action(
            operator_actor, acme, "restart-agent", agent=agent.slug, params={"wait": True}
        )
    finally:
        stop.set()
        thread.join(10)

    assert result.ok and result.details["status"] == "succeeded"
    assert result.message == f"Restarted {agent.name} (operation {result.details['operation']})."


def test_clear_cache_reaches_wowcache_too_when_it_runs_the_memory_template(
    acme, operator_actor, redis_client
):
    own = bring_up(link_agent(acme, new_slug("acme-memory"), MEMORY), redis_client)
    shared = bring_up(
        Agent.objects.create(slug="wow-cache", name="WowCache", config=MEMORY), redis_client
    )
    client = agent_redis()
    for store, key in ((own, "a"), (shared, "b"), (shared, "c")):

        class Running:
            slug = store.slug

        payload = {"op": "put", "key": key, "value": 1}
        assert ask(client, Running, payload, 15, customer="acme-corp")["status"] == "succeeded"

    result = run_action(operator_actor, acme, "clear-cache")

    assert result.ok
    assert (
        result.message == f"Deleted 3 cached key(s) of Acme Corp: 1 on {own.slug}, 2 on wow-cache."
    )
    assert [s["agent"] for s in result.details["stores"]] == [own.slug, "wow-cache"]


def test_start_brings_a_stopped_customer_agent_back(acme, operator_actor, redis_client):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    Operation.objects.all().delete()
    from agents import services as agent_services

    agent_services.request_action(agent, "stop", operator_actor)
    run_pending_operations(agent)
    agent.refresh_from_db()
    assert agent.state == "STOPPED"

    result = run_action(operator_actor, acme, "start-agent", agent=agent.slug)

    assert result.ok and result.details["lifecycle"] == "start"
    [done] = run_pending_operations(agent)
    assert done.status == Operation.Status.SUCCEEDED, done.error
    assert agent.state == "RUNNING"
    # Running already: the lifecycle's own refusal, nothing changed.
    with pytest.raises(Refused):
        run_action(operator_actor, acme, "start-agent", agent=agent.slug)


def test_raise_memory_raises_the_limit_and_restarts(acme, operator_actor, redis_client, settings):
    settings.AGENT_MEMORY_CEILING_MB = 1024
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    was = agent.memory_mb
    Operation.objects.all().delete()

    result = run_action(operator_actor, acme, "raise-memory", agent=agent.slug)

    agent.refresh_from_db()
    assert agent.memory_mb == min(1024, max(was * 2, was + 128)) == result.details["memory_mb"]
    [done] = run_pending_operations(agent)
    assert done.action == "restart" and done.status == Operation.Status.SUCCEEDED, done.error
    # Past the ceiling: refused by agents' own rule, the limit unchanged.
    with pytest.raises(Refused):
        run_action(
            operator_actor, acme, "raise-memory", agent=agent.slug, params={"memory_mb": 4096}
        )
    agent.refresh_from_db()
    assert agent.memory_mb == result.details["memory_mb"]
