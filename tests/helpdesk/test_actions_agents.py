"""Quick actions on a customer's agents, for real: agents running on a private local runtime,
dead letters on the session's Redis, memory stores answering ``forget_customer``."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from agents.models import AgentTransition, Operation
from agents.workflows.steps import agent_redis
from helpdesk.actions import services
from helpdesk.actions.services import ActionResult, describe_action, run_action
from helpdesk.refusals import HelpdeskRefused
from observability.queues.models import RedriveJob
from portal.models import AuditEntry
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
        "restart-agent", "scale-agent", "clear-cache", "reset-trial", "resend-email",
        "grant-access", "revoke-access", "redrive-dead-letters", "rollback-version",
        "rollback-config",
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
