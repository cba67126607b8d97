"""Another app (a workflow step's details) asks for the lines an agent wrote about a task, and
for a link to them, through the portal's lookup and link extension points."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent
from observability.models import Level, LogEntry
from portal import extensions

pytestmark = pytest.mark.django_db


def test_an_agents_lines_about_a_task_come_oldest_first_with_a_link() -> None:
    agent = Agent.objects.create(slug="wow-lookup", name="WowLookup")
    other = Agent.objects.create(slug="wow-other", name="WowOther")
    now = timezone.now()
    for seconds, who, message in [
        (1, agent, "task 1796387564161-0 failed (1/3), will retry: boom"),
        (2, agent, "task 1796387564162-0 processed"),
        (3, other, "task 1796387564161-0 seen elsewhere"),
        (4, agent, "task 1796387564161-0 failed 3 times; moved to agents:wow-lookup:dlq"),
    ]:
        LogEntry.objects.create(
            agent=who, ts=now + timedelta(seconds=seconds), level=Level.WARNING, message=message
        )
    lines = extensions.lookup("agent_log_lines", [], agent="wow-lookup", text="1796387564161-0")
    assert len(lines) == 2
    assert "failed (1/3)" in lines[0] and "moved to agents:wow-lookup:dlq" in lines[1]
    assert "wow-lookup/0" in lines[0]
    link = extensions.link("agent_logs", agent="wow-lookup", text="1796387564161-0")
    assert link == "/logs/?agent=wow-lookup&q=1796387564161-0"
    # A lookup that fails (an agent that does not exist) costs the caller nothing.
    assert extensions.lookup(
        "agent_log_lines", ["none"], agent="nobody", text="1796387564161-0"
    ) == ["none"]
    assert extensions.lookup("no-such-lookup", "default") == "default"
