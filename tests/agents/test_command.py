"""``manage.py agents``: list, show, history, seed and the lifecycle actions, inline and through a
real Celery worker, with clear errors and a non-zero exit status on failure."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import CommandError, call_command

from agents import services
from agents.models import Agent, Operation, State
from portal.actors import Actor
from portal.celery import app as celery_app
from portal.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]


def agents_command(*args: str) -> tuple[str, str]:
    """Run ``manage.py agents ...`` in this process; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("agents", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def command_user() -> str:
    return "command:" + Actor.command("x").name


# --- reading --------------------------------------------------------------------------------


def test_list_json_has_the_fourteen_agents(seeded) -> None:
    out, _ = agents_command("list", "--json")
    agents = json.loads(out)
    assert len(agents) == 14
    assert sorted(agent["slug"] for agent in agents) == sorted(seeded)
    vision = next(agent for agent in agents if agent["slug"] == "wow-vision")
    assert vision == {
        "slug": "wow-vision", "name": "WowVision Prime", "state": "DRAFT", "health": "unknown",
        "pending_action": None, "runtime": "local", "version": "1.0.0", "tier": "platform",
    }  # fmt: skip


def test_list_as_a_table(seeded) -> None:
    out, _ = agents_command("list")
    lines = out.splitlines()
    assert lines[0].split() == ["SLUG", "NAME", "STATE", "HEALTH", "PENDING", "RUNTIME", "VERSION"]
    assert len(lines) == 15
    assert re.search(
        r"^\s*wow-vision\s+WowVision Prime\s+DRAFT\s+unknown\s+-\s+local\s+1\.0\.0", out, re.M
    )


def test_list_by_state(seeded, act) -> None:
    act(seeded["wow-cache"], "provision")
    for state in ("PROVISIONED", "provisioned"):
        out, _ = agents_command("list", "--state", state, "--json")
        assert [agent["slug"] for agent in json.loads(out)] == ["wow-cache"]
    assert json.loads(agents_command("list", "--state", "RUNNING", "--json")[0]) == []


def test_list_by_running_state_with_a_real_process(seeded, bring_up) -> None:
    bring_up(seeded["wow-cache"])
    out, _ = agents_command("list", "--state", "RUNNING", "--json")
    assert [(agent["slug"], agent["state"]) for agent in json.loads(out)] == [
        ("wow-cache", "RUNNING")
    ]


def test_list_with_a_bad_state_says_which_states_exist(seeded) -> None:
    with pytest.raises(CommandError) as error:
        agents_command("list", "--state", "ASLEEP")
    assert str(error.value) == (
        "--state 'ASLEEP' is not a state; use one of "
        "DRAFT, PROVISIONED, DEPLOYED, RUNNING, SUSPENDED, STOPPED, ERRORED, REVOKED."
    )


def test_show_one_agent(seeded) -> None:
    out, _ = agents_command("show", "wow-memory", "--json")
    memory = json.loads(out)
    assert memory["name"] == "WowMemory"
    assert memory["dependencies"] == ["wow-cache", "wow-event"]
    assert memory["dependents"] == ["wow-analytics", "wow-domain", "wow-search", "wow-vision"]
    assert memory["resources"] == {"cpu_millicores": 500, "memory_mb": 1024}
    text, _ = agents_command("show", "wow-memory")
    assert re.search(r"^state\s+DRAFT$", text, re.M)
    assert re.search(r"^dependencies\s+\['wow-cache', 'wow-event'\]$", text, re.M)


def test_history_lists_transitions_newest_first(seeded, act) -> None:
    cache = seeded["wow-cache"]
    act(cache, "provision", reason="first")
    act(cache, "deploy", reason="second")
    out, _ = agents_command("history", "wow-cache")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[2], row[3], row[4]) for row in rows] == [
        ("deploy", "PROVISIONED", "DEPLOYED"),
        ("provision", "DRAFT", "PROVISIONED"),
    ]
    assert "second" in out.splitlines()[1]
    limited, _ = agents_command("history", "wow-cache", "--limit", "1")
    assert len(limited.splitlines()) == 2


@pytest.mark.django_db
def test_seed_registers_the_fourteen_once() -> None:
    first, _ = agents_command("seed")
    assert re.fullmatch(r"14 agent\(s\) registered, \d+ dependency link\(s\) added\.\n", first)
    assert Agent.objects.count() == 14
    links = Agent.dependencies.through.objects.count()
    again, _ = agents_command("seed")
    assert again == "0 agent(s) registered, 0 dependency link(s) added.\n"
    assert Agent.objects.count() == 14
    assert Agent.dependencies.through.objects.count() == links
    assert AuditEntry.objects.filter(action="agents.seed").count() == 1


def test_unknown_slug_is_a_command_error(seeded) -> None:
    for args in (("show", "wow-nothing"), ("history", "wow-nothing"), ("start", "wow-nothing")):
        with pytest.raises(CommandError, match="There is no agent 'wow-nothing'"):
            agents_command(*args)
    assert not Operation.objects.exists()


# --- acting ---------------------------------------------------------------------------------


def test_inline_actions_take_an_agent_to_running_with_a_real_process(seeded) -> None:
    for action, state in (
        ("provision", "PROVISIONED"),
        ("deploy", "DEPLOYED"),
        ("start", "RUNNING"),
    ):
        out, _ = agents_command(action, "wow-cache", "--inline", "--reason", "on call")
        assert re.fullmatch(rf"✓ wow-cache: {action} done in \d+\.\d s, now {state}\n", out)
    cache = Agent.objects.get(slug="wow-cache")
    assert cache.state == State.RUNNING
    port = cache.runtime_details["ports"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        assert response.status == 200
    history = list(cache.transitions.order_by("at").values_list("action", "actor", "reason"))
    assert history == [
        (action, command_user(), "on call") for action in ("provision", "deploy", "start")
    ]


def test_several_agents_are_taken_in_dependency_order(seeded) -> None:
    out, _ = agents_command(
        "provision", "wow-memory", "wow-cache", "wow-event", "wow-cache", "--inline"
    )
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "✓ wow-cache",
        "✓ wow-event",
        "✓ wow-memory",
    ]
    assert Operation.objects.count() == 3


def test_an_action_without_wait_only_requests_it(seeded) -> None:
    out, _ = agents_command("provision", "wow-cache")
    operation = Operation.objects.get()
    assert out == f"→ wow-cache: provision requested (operation {operation.pk})\n"
    assert operation.status == Operation.Status.PENDING
    assert Agent.objects.get(slug="wow-cache").pending_action == "provision"


def test_a_refused_action_is_a_command_error(seeded) -> None:
    with pytest.raises(CommandError, match=r"^1 of 1 failed or were refused\.$") as error:
        agents_command("start", "wow-cache", "--inline")
    assert error.value.returncode == 1
    assert not Operation.objects.exists()
    assert Agent.objects.get(slug="wow-cache").state == State.DRAFT


def test_a_refusal_among_several_is_reported_and_the_rest_go_ahead(seeded, act) -> None:
    act(seeded["wow-cache"], "provision")
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 failed or were refused"):
        call_command(
            "agents",
            "deploy",
            "wow-cache",
            "wow-event",
            "--inline",
            stdout=io.StringIO(),
            stderr=err,
        )
    assert "✗ wow-event: WowEvent is DRAFT; provision it first." in err.getvalue()
    assert Agent.objects.get(slug="wow-cache").state == State.DEPLOYED


def test_a_failed_operation_is_a_command_error(seeded, act) -> None:
    cache = seeded["wow-cache"]
    cache.config = {"faults": {"fail_rate": 5}}
    cache.save()
    act(cache, "provision")
    act(cache, "deploy")
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 failed"):
        call_command("agents", "start", "wow-cache", "--inline", stdout=io.StringIO(), stderr=err)
    assert re.search(r"✗ wow-cache: start failed in \d+\.\d s: .*fail_rate", err.getvalue())
    assert Agent.objects.get(slug="wow-cache").state == State.DEPLOYED


def test_stopping_an_agent_others_need_wants_yes(seeded, bring_up) -> None:
    for slug in ("wow-cache", "wow-event", "wow-memory"):
        bring_up(seeded[slug])
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("agents", "stop", "wow-cache", "--inline", stdout=io.StringIO(), stderr=err)
    assert (
        "WowMemory depends on WowCache and is running; to stop it anyway, confirm."
        in err.getvalue()
    )
    assert Agent.objects.get(slug="wow-cache").state == State.RUNNING
    out, _ = agents_command("stop", "wow-cache", "--inline", "--yes")
    assert out.endswith("now STOPPED\n")


def test_start_with_dependencies_brings_them_up_first(seeded, act) -> None:
    memory = seeded["wow-memory"]
    act(memory, "provision")
    act(memory, "deploy")
    out, _ = agents_command("start", "wow-memory", "--inline", "--with-dependencies")
    assert out.endswith("now RUNNING\n")
    running = set(Agent.objects.filter(state=State.RUNNING).values_list("slug", flat=True))
    assert running == {"wow-cache", "wow-event", "wow-memory"}


def test_exit_status_is_non_zero_on_failure(test_database_url, redis_url, agent_root) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "agents", "start", "wow-nothing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "There is no agent 'wow-nothing'" in result.stderr
    bad_state = subprocess.run(
        [sys.executable, "manage.py", "agents", "list", "--state", "ASLEEP"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad_state.returncode == 2  # a usage error (issue 14: the same bad filter at every door)
    assert "is not a state" in bad_state.stderr


@pytest.mark.django_db(transaction=True)
def test_wait_follows_the_operation_through_a_real_celery_worker(redis_client) -> None:
    services.seed_platform_agents(Actor.command("test"))
    agents_command("provision", "wow-cache", "--inline")
    agents_command("deploy", "wow-cache", "--inline")
    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        out, _ = agents_command("start", "wow-cache", "--wait")
    assert re.fullmatch(r"✓ wow-cache: start done in \d+\.\d s, now RUNNING\n", out)
    operation = Operation.objects.get(action="start")
    assert (operation.status, operation.attempts) == (Operation.Status.SUCCEEDED, 1)
    cache = Agent.objects.get(slug="wow-cache")
    assert cache.state == State.RUNNING and cache.pending_action == ""
    port = cache.runtime_details["ports"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        assert response.status == 200
