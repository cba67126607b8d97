"""The playbooks' checks read real state: agents' state and health from the registry, queue
backlogs and the customer's dead letters from the agents' Redis, the trial and the last payment
from the customer, failing interactions from the interaction records."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from agents.agentd import contract
from agents.models import Agent
from helpdesk.models import Interaction, SubscriptionStatus
from helpdesk.playbooks.checks import evaluate
from tests.helpdesk.actions_kit import dead_letter, link_agent, new_slug


def stopped(customer, prefix: str, redis_client) -> Agent:
    agent = link_agent(customer, new_slug(prefix))
    Agent.objects.filter(pk=agent.pk).update(state="STOPPED")
    agent.refresh_from_db()
    for key in redis_client.scan_iter(f"agents:{agent.slug}:*"):
        redis_client.delete(key)
    return agent


def test_queue_backlog_names_the_agents_over_the_limit(acme, redis_client):
    busy = stopped(acme, "acme-busy", redis_client)
    calm = stopped(acme, "acme-calm", redis_client)
    for n in range(120):
        redis_client.xadd(contract.task_stream(busy.slug), {"payload": f'{{"n": {n}}}'})
    redis_client.xadd(contract.task_stream(calm.slug), {"payload": "{}"})

    seen = evaluate(acme, "queue_backlog", {"max": 100})

    assert not seen.ok and seen.agents == [busy.slug]
    assert seen.seen == f"Backlog over 100: {busy.name} 120."
    assert seen.figures["waiting"] == {busy.slug: 120, calm.slug: 1}
    assert evaluate(acme, "queue_backlog", {"max": 200}).ok


def test_dead_letters_counts_only_this_customers(acme, redis_client):
    agent = stopped(acme, "acme-bot", redis_client)
    for n in range(2):
        dead_letter(redis_client, agent, "acme-corp", n)
    for n in range(5):
        dead_letter(redis_client, agent, "globex", n)

    seen = evaluate(acme, "dead_letters", {"max": 1})

    assert not seen.ok and seen.agents == [agent.slug]
    assert seen.figures["dead_letters"] == {agent.slug: 2}
    assert evaluate(acme, "dead_letters", {"max": 2}).ok


def test_agent_state_health_and_crash_loops(acme):
    running = link_agent(acme, "acme-up")
    errored = link_agent(acme, "acme-down")
    Agent.objects.filter(pk=running.pk).update(state="RUNNING", health="healthy")
    Agent.objects.filter(pk=errored.pk).update(state="ERRORED", restart_attempts=4)

    assert evaluate(acme, "agents_running", True).agents == ["acme-down"]
    assert evaluate(acme, "agents_healthy", True).ok
    looping = evaluate(acme, "crash_loop", {"max": 2})
    assert not looping.ok and looping.agents == ["acme-down"]
    Agent.objects.filter(pk=running.pk).update(health="unhealthy")
    assert evaluate(acme, "agents_healthy", True).agents == ["acme-up"]


def test_trial_and_payment(acme):
    assert evaluate(acme, "trial_active", True).ok  # a paying customer
    assert evaluate(acme, "payment_ok", True).ok
    acme.status = SubscriptionStatus.PAST_DUE
    acme.last_payment_failed_at = timezone.now() - timedelta(hours=3)
    acme.save()

    payment = evaluate(acme, "payment_ok", True)
    trial = evaluate(acme, "trial_active", True)

    assert not payment.ok and payment.seen.startswith("The last payment failed on ")
    assert not trial.ok and trial.seen.startswith(
        "The trial is not active: the subscription is past due"
    )


def test_slow_and_failing_interactions(acme):
    agent = link_agent(acme, "acme-bot")
    now = timezone.now()
    for n in range(20):
        Interaction.objects.create(
            customer=acme, agent=agent, agent_slug=agent.slug, message_id=f"9-{n}",
            outcome="succeeded" if n % 4 else "dead_lettered", latency_ms=3000 if n > 16 else 100,
            at=now - timedelta(minutes=n),
        )  # fmt: skip

    slow = evaluate(acme, "slow_interactions", {"max_ms": 2000})
    failing = evaluate(acme, "recent_failures", {"max": 3})

    assert (
        not slow.ok and slow.agents == ["acme-bot"] and slow.figures["p95_ms"] == {"acme-bot": 3000}
    )
    assert not failing.ok and failing.figures["failed"] == {"acme-bot": 5}
    assert evaluate(acme, "recent_failures", {"max": 5}).ok
