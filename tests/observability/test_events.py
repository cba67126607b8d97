"""The event log: written in the same transaction as the change, for every kind of change, and
searchable by agent, kind, severity, time and text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from agents import services
from agents.models import Agent
from observability import events
from observability.models import Event
from portal.actors import Actor

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_a_lifecycle_is_told_by_its_events_with_who_did_it(seeded, bring_up, operator_actor):
    cache = bring_up(seeded["wow-cache"], operator_actor)
    rows = list(Event.objects.filter(agent=cache, kind="transition").order_by("id"))
    assert [row.data["action"] for row in rows] == ["provision", "deploy", "start"]
    assert rows[-1].summary == "WowCache: start DEPLOYED → RUNNING"
    assert {row.actor for row in rows} == {"user:otto"}

    Agent.objects.filter(pk=cache.pk).update(restart_policy="never")
    services.runtime_for(cache).stop(services.spec_for(cache))
    services.record_crash(Agent.objects.get(pk=cache.pk), {"exit_code": 137, "signal": 9})
    crash = Event.objects.filter(agent=cache, kind="transition").latest("id")
    assert crash.severity == "critical" and crash.actor == "system:monitor"
    assert crash.summary.startswith("WowCache RUNNING → ERRORED: ")
    error = Event.objects.filter(agent=cache, kind="error").latest("id")
    assert "error" in error.summary and error.data["classification"]


def test_nothing_is_logged_for_a_change_that_rolled_back(seeded, admin):
    cache = seeded["wow-cache"]
    actor = Actor(kind="user", user=admin)
    cache.description = "new words"
    with pytest.raises(RuntimeError), transaction.atomic():
        services.update_agent_settings(cache, ["description"], actor)
        raise RuntimeError("the change fails after it was made")
    assert not Event.objects.filter(agent=cache).exists()

    services.update_agent_settings(cache, ["description"], actor)
    event = Event.objects.get(agent=cache)
    assert event.summary == "WowCache: description changed" and event.kind == "config"
    assert event.actor == f"user:{admin.username}"


def test_search_filters_and_pages(seeded):
    cache, memory = seeded["wow-cache"], seeded["wow-memory"]
    old = timezone.now() - timedelta(days=2)
    for number in range(5):
        events.record("health", f"WowCache health {number}", agent=cache, severity="warning")
    events.record("drift", "WowMemory drifted", agent=memory)
    Event.objects.create(agent=cache, kind="config", summary="long ago", ts=old)

    assert {e.summary for e in events.search(agent="wow-memory").events} == {"WowMemory drifted"}
    assert len(events.search(agent=cache, kind="health").events) == 5
    assert len(events.search(severity="warning").events) == 5
    assert [e.summary for e in events.search(text="LONG AGO").events] == ["long ago"]
    recent = events.search(agent=cache, since=timezone.now() - timedelta(hours=1))
    assert "long ago" not in {e.summary for e in recent.events}

    first = events.search(agent=cache, limit=4)
    assert len(first.events) == 4 and first.older is not None
    rest = events.search(agent=cache, limit=4, before=first.older)
    assert len(rest.events) == 2 and rest.older is None
    assert not {e.id for e in first.events} & {e.id for e in rest.events}


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"kind": "gossip"}, "Unknown event kind 'gossip'"),
        ({"severity": "loud"}, "Unknown severity 'loud'"),
        ({"agent": "wow-nothing"}, "No agent called 'wow-nothing'"),
        (
            {"since": timezone.now(), "until": timezone.now() - timedelta(hours=1)},
            "after its end",
        ),
    ],
)
def test_bad_filters_say_what_to_change(seeded, filters, message):
    with pytest.raises(events.EventQueryError, match=message):
        events.search(**filters)


def test_purge_removes_only_old_events(seeded):
    cache = seeded["wow-cache"]
    Event.objects.create(
        agent=cache, kind="config", summary="old", ts=timezone.now() - timedelta(days=100)
    )
    events.record("config", "new", agent=cache)
    assert events.purge(timezone.now() - timedelta(days=90)) == 1
    assert list(Event.objects.values_list("summary", flat=True)) == ["new"]
