"""The customer overview: profile, agents with their queue figures, open errors, thirty days of
activity and the last 50 interactions beside the changes that touched the agents, in a fixed
number of queries however many agents the customer has."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent, AgentError, AgentTransition, State
from agents.services.registry import NewAgent, register_agent
from helpdesk import interactions, overview
from helpdesk.models import CustomerAgent, Interaction, Outcome
from portal.actors import Actor
from tests.helpdesk.conftest import make_customer


def add_agents(customer, count: int, prefix: str = "acme") -> list[Agent]:
    actor = Actor.command("test")
    made = []
    for n in range(count):
        agent = register_agent(NewAgent(slug=f"{prefix}-{n}", name=f"{prefix.title()} {n}"), actor)
        CustomerAgent.objects.create(customer=customer, agent=agent)
        made.append(agent)
    return made


def add_interactions(customer, agent, count: int, *, failed_every: int = 0, start=None):
    start = start or timezone.now() - timedelta(hours=1)
    Interaction.objects.bulk_create(
        Interaction(
            customer=customer, agent=agent, agent_slug=agent.slug, message_id=f"{agent.slug}-{n}",
            kind="lookup",
            outcome=Outcome.DEAD_LETTERED if failed_every and n % failed_every == 0 else Outcome.SUCCEEDED,
            error="boom" if failed_every and n % failed_every == 0 else "",
            latency_ms=20, at=start + timedelta(seconds=n),
        )
        for n in range(count)
    )  # fmt: skip
    interactions.rebuild_days([customer.pk])  # as the ingester would have counted them


def test_the_last_50_interactions_newest_first(acme, viewer_actor):
    [agent] = add_agents(acme, 1)
    add_interactions(acme, agent, 80)

    view = overview.customer_overview(viewer_actor, acme)

    assert len(view.interactions) == 50
    assert view.interactions[0].message_id == "acme-0-79"
    assert [i.at for i in view.interactions] == sorted(
        (i.at for i in view.interactions), reverse=True
    )


def test_failures_only_keeps_the_failed_ones(acme, viewer_actor):
    [agent] = add_agents(acme, 1)
    add_interactions(acme, agent, 30, failed_every=10)

    view = overview.customer_overview(viewer_actor, acme, failures_only=True)

    assert {i.message_id for i in view.interactions} == {"acme-0-0", "acme-0-10", "acme-0-20"}
    assert view.totals["failed_30d"] == 3
    assert view.totals["interactions_30d"] == 30


def test_other_customers_interactions_are_not_shown(acme, viewer_actor):
    other = make_customer("globex", "Globex")
    [mine] = add_agents(acme, 1)
    [theirs] = add_agents(other, 1, prefix="globex")
    add_interactions(acme, mine, 3)
    add_interactions(other, theirs, 5)

    view = overview.customer_overview(viewer_actor, acme)

    assert {i.agent_slug for i in view.interactions} == {"acme-0"}
    assert [row.agent.slug for row in view.agents] == ["acme-0"]


def test_events_show_what_touched_the_agents(acme, viewer_actor):
    [agent] = add_agents(acme, 1)
    add_interactions(acme, agent, 3)
    AgentTransition.objects.create(
        agent=agent, action="deploy", from_state=State.PROVISIONED, to_state=State.DEPLOYED,
        actor="user:ops", actor_kind="user",
    )  # fmt: skip
    AgentError.objects.create(
        agent=agent, source="crash", summary="exited with code 137", classification="resource",
        rule="oom", root_cause="out of memory", signature="oom",
    )  # fmt: skip

    view = overview.customer_overview(viewer_actor, acme)

    kinds = {event.kind for event in view.events}
    assert {"deploy", "error"} <= kinds
    assert view.totals["open_errors"] == 1
    merged = overview.timeline(view)
    assert {kind for kind, _ in merged} == {"interaction", "event"}


def test_thirty_days_of_activity_one_bar_a_day(acme, viewer_actor):
    [agent] = add_agents(acme, 1)
    add_interactions(acme, agent, 4, failed_every=2, start=timezone.now() - timedelta(days=3))

    view = overview.customer_overview(viewer_actor, acme)

    assert len(view.activity) == overview.ACTIVITY_DAYS
    assert sum(day.succeeded for day in view.activity) == 2
    assert sum(day.failed for day in view.activity) == 2
    bars = overview.activity_bars(view.activity)
    assert max(bar["ok_h"] + bar["bad_h"] for bar in bars) == pytest.approx(58.0)


def test_the_overview_asks_a_fixed_number_of_queries(acme, viewer_actor):
    agents = add_agents(acme, 1)
    add_interactions(acme, agents[0], 60, failed_every=7)

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            overview.customer_overview(viewer_actor, acme)
        return len(captured.captured_queries)

    count()  # the actor's role is read once, then remembered
    one = count()
    for agent in add_agents(acme, 5, prefix="more"):
        add_interactions(acme, agent, 20, failed_every=3)
    assert count() == one


def test_contacts_are_masked_for_viewers_when_configured(
    acme, viewer_actor, operator_actor, settings
):
    settings.HELPDESK_MASK_CONTACTS = True

    assert overview.customer_overview(viewer_actor, acme).contacts[0].email == "w•••@acme.com"
    acme.refresh_from_db()
    assert overview.customer_overview(operator_actor, acme).contacts[0].email == "wile@acme.com"
