"""Hot config patches: checked by agentd's own rules, saved with the config they replace,
applied to the running replicas without a restart, and rolled back the same way."""

from __future__ import annotations

import json
import urllib.request

import pytest

from agents import services
from agents.models import Agent
from portal.models import AuditEntry
from portal.refusals import BadRequest


def live_config(agent: Agent, replica: int = 0) -> dict:
    port = agent.runtime_details["ports"][replica]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as answer:
        return json.loads(answer.read())


@pytest.fixture
def cache(seeded, bring_up) -> Agent:
    agent = seeded["wow-cache"]
    Agent.objects.filter(pk=agent.pk).update(replicas=2)
    agent.refresh_from_db()
    return bring_up(agent)


def test_a_patch_reaches_every_running_replica_without_a_restart(cache, operator_actor) -> None:
    pids = list(cache.runtime_details.get("pids") or [])
    applied = services.patch_config(
        cache, {"task_retry_ms": 500, "faults": {"latency_ms": 5}}, operator_actor
    )
    assert applied.all_applied and [r["replica"] for r in applied.replicas] == [0, 1]
    cache.refresh_from_db()
    for replica in (0, 1):
        live = live_config(cache, replica)
        assert live["task_retry_ms"] == 500 and live["faults"]["latency_ms"] == 5
    assert cache.config["task_retry_ms"] == 500 and cache.previous_config is not None
    assert list(cache.runtime_details.get("pids") or []) == pids  # no restart
    entry = AuditEntry.objects.filter(action="agent.config.patch").latest("pk")
    assert entry.target == "wow-cache" and entry.detail["patch"]["task_retry_ms"] == 500

    rolled = services.roll_back_config(cache, operator_actor)
    assert rolled.all_applied
    for replica in (0, 1):
        live = live_config(rolled.agent, replica)
        assert live["task_retry_ms"] != 500 and live["faults"]["latency_ms"] == 0


def test_a_patch_agentd_would_refuse_changes_nothing(cache, operator_actor) -> None:
    before = dict(cache.config)
    with pytest.raises(BadRequest) as refused:
        services.patch_config(cache, {"task_retry_ms": "soon"}, operator_actor)
    assert "task_retry_ms must be an integer from 10 to 3600000" in refused.value.message
    with pytest.raises(BadRequest, match="unknown fault 'explode'"):
        services.patch_config(cache, {"faults": {"explode": True}}, operator_actor)
    with pytest.raises(BadRequest, match="The patch is empty"):
        services.patch_config(cache, {}, operator_actor)
    cache.refresh_from_db()
    assert cache.config == before and live_config(cache)["task_retry_ms"] == 2000


def test_an_agent_not_running_keeps_the_patch_for_its_next_start(seeded, operator_actor) -> None:
    applied = services.patch_config(seeded["wow-search"], {"task_block_ms": 200}, operator_actor)
    assert not applied.all_applied
    assert "takes the saved config when it starts" in applied.replicas[0]["detail"]
    assert Agent.objects.get(slug="wow-search").config["task_block_ms"] == 200


def test_the_api_and_the_page(cache, as_operator, as_viewer) -> None:
    url = "/api/platform/agents/wow-cache/config"
    assert (
        as_viewer.patch(
            url, {"config": {"task_block_ms": 300}}, content_type="application/json"
        ).status_code
        == 403
    )
    bad = as_operator.patch(url, {"config": {"task_block_ms": 1}}, content_type="application/json")
    assert (
        bad.status_code == 400
        and "task_block_ms must be an integer from 10 to 5000" in bad.json()["detail"]
    )
    ok = as_operator.patch(url, {"config": {"task_block_ms": 300}}, content_type="application/json")
    assert (
        ok.status_code == 200
        and ok.json()["all_applied"]
        and ok.json()["config"]["task_block_ms"] == 300
    )
    back = as_operator.post(f"{url}/rollback")
    assert back.status_code == 200 and "task_block_ms" not in back.json()["config"]
    assert (
        as_operator.patch(
            "/api/platform/agents/nobody/config", {"config": {}}, content_type="application/json"
        ).status_code
        == 404
    )

    page = as_operator.get("/agents/wow-cache/").content.decode()
    assert 'id="agent-config"' in page and "Apply without restart" in page
    assert "Apply without restart" not in as_viewer.get("/agents/wow-cache/").content.decode()
    refused = as_operator.post(
        "/agents/wow-cache/config/", {"patch": "{not json"}, headers={"HX-Request": "true"}
    )
    assert refused.status_code == 400 and "The patch is not JSON" in refused.content.decode()
    done = as_operator.post(
        "/agents/wow-cache/config/",
        {"patch": '{"task_block_ms": 250}'},
        headers={"HX-Request": "true"},
    )
    assert done.status_code == 200 and "Replica 0: applied." in done.content.decode()
