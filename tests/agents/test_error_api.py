"""The errors JSON API: listing with filters, one error, patterns and stats, one-click recovery
(202, then the outcome on the error), refusals, ignore, the automatic-recovery switch, and who may
do what. No worker runs here: where a recovery must run, the test runs it as the worker would
(``errors.run_recovery``), on real agent processes with a real bad config."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents import errors, services
from agents.models import Agent, AgentError, RecoveryAttempt, RecoverySwitch, State
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry

RUNS_AGENTS = pytest.mark.django_db(transaction=True)  # agent processes and their threads


@pytest.fixture(autouse=True)
def quick(settings):
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 3
    settings.AGENT_AUTO_RECOVERY = True


@pytest.fixture
def admin_token(admin) -> str:
    return portal_services.create_api_token(admin, Actor.command("test"))[1]


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


def api(client: Client, method: str, path: str, token: str, **data):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "get":
        return client.get(f"/api/platform{path}", data, **headers)
    send = client.put if method == "put" else client.post
    return send(f"/api/platform{path}", data, content_type="application/json", **headers)


@pytest.fixture
def recorded(seeded) -> dict[str, AgentError]:
    """Three errors recorded as the services record them (no agent runs): a port conflict, a
    crash and a dependency down, oldest first."""
    return _record_three(seeded)


@transaction.atomic  # record_error is called inside the change's transaction
def _record_three(seeded) -> dict[str, AgentError]:
    port = errors.record_error(
        seeded["wow-cache"], "action", "WowCache cannot listen on port 8080: it is in use.",
        {"reason": "port_in_use", "port": 8080, "holder": {"description": "nginx (pid 42)"},
         "log_lines": ["agentd starting", "bind 127.0.0.1:8080: address already in use"]},
        action="start",
    )  # fmt: skip
    crash = errors.record_error(
        seeded["wow-event"], "crash", "WowEvent exited with code 1.",
        {"exit_code": 1, "log_lines": ["Traceback (most recent call last):", "KeyError: 'x'"]},
    )  # fmt: skip
    dependency = errors.record_error(
        seeded["wow-memory"], "health", "WowMemory is not ready.", {"log_lines": ["waiting"]}
    )
    return {"port": port, "crash": crash, "dependency": dependency}


def break_config(agent: Agent, *configs: dict) -> Agent:
    """Change the agent's config as an Admin does in the admin, one change after another."""
    for config in configs:
        agent = Agent.objects.get(pk=agent.pk)
        agent.config = config
        services.update_agent_settings(agent, ["config"], Actor.command("test"))
    return Agent.objects.get(pk=agent.pk)


@pytest.fixture
def config_error(seeded, bring_up, act) -> AgentError:
    """A running agent given a config agentd refuses, then restarted: the restart fails for real
    (exit code 2) and the portal records a configuration error."""
    cache = break_config(bring_up(seeded["wow-cache"]), {"task_max_failures": -1})
    operation = act(cache, "restart")
    assert operation.status == "failed" and operation.error_reason == "bad_config"
    return AgentError.objects.get(agent=cache)


# --- reading ----------------------------------------------------------------------------------


def test_list_is_newest_first_with_root_cause_evidence_and_suggestions(
    client, recorded, viewer_token
) -> None:
    response = api(client, "get", "/errors", viewer_token)
    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body] == [
        recorded["dependency"].pk, recorded["crash"].pk, recorded["port"].pk,
    ]  # fmt: skip
    port = body[2]
    assert set(port) == {
        "id", "agent", "agent_name", "occurred_at", "last_seen_at", "occurrences", "source",
        "summary", "details", "evidence", "classification", "rule", "root_cause", "suggestions",
        "signature", "pattern", "retry_count", "status", "operation", "resolved_at",
        "resolved_by", "resolution", "attempts", "url",
    }  # fmt: skip
    assert (port["agent"], port["agent_name"], port["source"]) == (
        "wow-cache",
        "WowCache",
        "action",
    )
    assert (port["classification"], port["rule"], port["status"]) == (
        "resource", "port_in_use", "open",
    )  # fmt: skip
    assert port["root_cause"] == (
        "Port 8080 is held by nginx (pid 42), so WowCache cannot listen on it."
    )
    assert port["evidence"] == ["agentd starting", "bind 127.0.0.1:8080: address already in use"]
    assert port["details"]["port"] == 8080
    assert [s["action"] for s in port["suggestions"]] == ["pick_new_port", "", "restart"]
    assert port["suggestions"][1]["label"] == "Free the port"
    assert (port["pattern"], port["signature"]) == (
        "port 8080 in use",
        "port_in_use:port 8080 in use",
    )
    assert (port["occurrences"], port["retry_count"], port["attempts"]) == (1, 0, [])
    assert port["resolved_at"] is None and port["resolved_by"] == "" and port["operation"] is None
    assert port["url"] == f"/api/platform/errors/{port['id']}"
    assert body[1]["classification"] == "transient" and body[1]["rule"] == "exited"
    assert body[0]["classification"] == "dependency"
    assert body[0]["root_cause"] == (
        "WowMemory depends on WowCache (DRAFT) and WowEvent (DRAFT), which are not running."
    )


def test_list_costs_the_same_queries_for_one_error_or_many(client, recorded, viewer_token) -> None:
    """Attempts and agents come with the list, not one query per error."""
    for error in recorded.values():
        RecoveryAttempt.objects.create(
            error=error, action="restart", actor_kind="system", actor="system:monitor",
            automatic=True, outcome="did_not_help",
        )  # fmt: skip
    api(client, "get", "/me", viewer_token)  # the token's first use is recorded once
    counts = []
    for limit in (1, 3):
        with CaptureQueriesContext(connection) as queries:
            body = api(client, "get", "/errors", viewer_token, limit=limit).json()
        assert len(body) == limit and all(len(row["attempts"]) == 1 for row in body)
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_filters_by_status_open_agent_and_class(client, recorded, viewer_token, operator) -> None:
    errors.ignore_error(recorded["crash"], Actor(kind="user", user=operator), "known flake")

    def ids(**query) -> list[int]:
        response = api(client, "get", "/errors", viewer_token, **query)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()]

    port, crash, dependency = recorded["port"].pk, recorded["crash"].pk, recorded["dependency"].pk
    assert ids(status="ignored") == [crash]
    assert ids(status="open") == [dependency, port]
    assert ids(open="true") == [dependency, port]
    assert ids(open="false") == [crash]
    assert ids(agent="wow-cache") == [port]
    assert ids(classification="dependency") == [dependency]
    assert ids(classification="resource", open="true", agent="wow-cache") == [port]
    assert ids(limit=1) == [dependency]
    assert ids(agent="wow-vision") == []
    for query, message in [
        ({"status": "fixed"}, "status='fixed' is not an error status; use one of open, recovering"),
        ({"classification": "fatal"}, "classification='fatal' is not a classification; use one"),
        ({"agent": "wow-nothing"}, "agent='wow-nothing' is not an agent; GET /api/platform/agents"),
    ]:
        response = api(client, "get", "/errors", viewer_token, **query)
        assert response.status_code == 400
        assert message in response.json()["detail"]


def test_one_error_and_404(client, recorded, viewer_token) -> None:
    crash = recorded["crash"]
    body = api(client, "get", f"/errors/{crash.pk}", viewer_token).json()
    assert (body["id"], body["agent"], body["summary"]) == (
        crash.pk, "wow-event", "WowEvent exited with code 1.",
    )  # fmt: skip
    assert body["root_cause"] == "WowEvent's process ended on its own (exit code 1)."
    assert body["evidence"][-1] == "KeyError: 'x'"
    missing = api(client, "get", "/errors/4242", viewer_token)
    assert missing.status_code == 404
    assert (
        missing.json()["detail"] == "There is no error #4242; GET /api/platform/errors lists them."
    )


def test_patterns_group_the_same_failure_and_stats_count_it(
    client, recorded, seeded, viewer_token
) -> None:
    # The same conflict again on wow-cache (counted on its open error) and once on wow-search.
    again = errors.record_error(
        seeded["wow-cache"], "action", "in use", {"reason": "port_in_use", "port": 8080}
    )
    assert again.pk == recorded["port"].pk
    errors.record_error(
        seeded["wow-search"], "action", "in use", {"reason": "port_in_use", "port": 8080}
    )
    body = api(client, "get", "/errors/patterns", viewer_token).json()
    assert body[0]["pattern"] == "port 8080 in use"
    assert (body[0]["times"], body[0]["agents"], body[0]["open"]) == (3, 2, 2)
    assert body[0]["classification"] == "resource" and body[0]["first"] <= body[0]["last"]
    assert sorted(row["pattern"] for row in body[1:]) == [
        "dependency down: WowCache, WowEvent", "exited (exit code 1)",
    ]  # fmt: skip
    only_event = api(client, "get", "/errors/patterns", viewer_token, agent="wow-event").json()
    assert [row["pattern"] for row in only_event] == ["exited (exit code 1)"]
    bad = api(client, "get", "/errors/patterns", viewer_token, days=0)
    assert bad.status_code == 400 and "days=0 is out of range" in bad.json()["detail"]

    stats = api(client, "get", "/errors/stats", viewer_token).json()
    assert (stats["last_hour"], stats["open"]) == (5, 4)
    assert stats["per_hour_24h"] == round(5 / 24, 2)
    assert {
        (row["agent"], row["classification"]): row["times"] for row in stats["by_agent_and_class"]
    } == {
        ("wow-cache", "resource"): 2, ("wow-event", "transient"): 1,
        ("wow-memory", "dependency"): 1, ("wow-search", "resource"): 1,
    }  # fmt: skip


def test_anonymous_and_roleless_get_401(client, recorded, as_outsider) -> None:
    assert client.get("/api/platform/errors").status_code == 401
    assert as_outsider.get("/api/platform/errors").status_code == 401
    assert client.post(f"/api/platform/errors/{recorded['port'].pk}/ignore").status_code == 401


def test_openapi_documents_the_error_endpoints(as_viewer) -> None:
    paths = as_viewer.get("/api/platform/openapi.json").json()["paths"]
    for path in (
        "/api/platform/errors", "/api/platform/errors/{error_id}",
        "/api/platform/errors/{error_id}/recover", "/api/platform/errors/{error_id}/ignore",
        "/api/platform/errors/patterns", "/api/platform/errors/stats",
        "/api/platform/errors/automatic-recovery",
    ):  # fmt: skip
        assert path in paths, path
    assert set(paths["/api/platform/errors/automatic-recovery"]) == {"get", "put"}


# --- recovering -------------------------------------------------------------------------------


@RUNS_AGENTS
def test_recover_answers_202_and_the_error_shows_the_verified_fix(
    client, config_error, operator_token
) -> None:
    error = config_error
    assert (error.classification, error.rule) == ("configuration", "bad_config")
    assert [s["action"] for s in error.one_click] == ["rollback_config"]
    response = api(
        client, "post", f"/errors/{error.pk}/recover", operator_token, action="rollback_config"
    )
    assert response.status_code == 202, response.json()
    attempt = RecoveryAttempt.objects.get()
    assert response.json() == {
        "id": attempt.pk, "error": error.pk, "agent": "wow-cache", "action": "rollback_config",
        "label": "Roll back the config", "outcome": "running",
        "url": f"/api/platform/errors/{error.pk}",
    }  # fmt: skip
    polled = api(client, "get", f"/errors/{error.pk}", operator_token).json()
    assert (polled["status"], polled["retry_count"]) == ("recovering", 1)
    assert [(a["id"], a["outcome"]) for a in polled["attempts"]] == [(attempt.pk, "running")]
    again = api(
        client, "post", f"/errors/{error.pk}/recover", operator_token, action="rollback_config"
    )
    assert again.status_code == 409 and again.json()["code"] == "busy"
    assert "already running" in again.json()["detail"]

    errors.run_recovery(attempt.pk)  # what the worker does with the queued task

    done = api(client, "get", f"/errors/{error.pk}", operator_token).json()
    assert done["status"] == "resolved"
    assert done["resolved_by"].startswith("token:") and done["resolved_by"].endswith("(otto)")
    settle = settings.AGENT_RECOVERY_SETTLE_SECONDS
    assert (
        done["resolution"]
        == f"Roll back the config: verified: RUNNING and healthy for {settle:g} s"
    )
    (attempt_out,) = done["attempts"]
    assert (attempt_out["outcome"], attempt_out["label"]) == ("fixed", "Roll back the config")
    assert attempt_out["detail"] == f"verified: RUNNING and healthy for {settle:g} s"
    assert attempt_out["finished_at"] is not None and attempt_out["automatic"] is False
    cache = Agent.objects.get(slug="wow-cache")
    assert (cache.state, cache.health, cache.config) == (State.RUNNING, "healthy", {})
    closed = api(client, "post", f"/errors/{error.pk}/recover", operator_token, action="restart")
    assert closed.status_code == 409 and closed.json()["code"] == "closed"
    assert AuditEntry.objects.filter(action="agent.recover", target="wow-cache").count() >= 2


@RUNS_AGENTS
def test_a_recovery_that_does_not_help_leaves_the_error_open(
    client, seeded, bring_up, act, operator_token
) -> None:
    """The config before the bad one was unhealthy too: rolling back starts the agent, but it is
    not healthy within the verify time."""
    cache = break_config(
        bring_up(seeded["wow-cache"]), {"faults": {"unhealthy": True}}, {"task_max_failures": -1}
    )
    assert act(cache, "restart").status == "failed"
    error = AgentError.objects.get(agent=cache)
    response = api(
        client, "post", f"/errors/{error.pk}/recover", operator_token, action="rollback_config"
    )
    assert response.status_code == 202
    errors.run_recovery(response.json()["id"])
    body = api(client, "get", f"/errors/{error.pk}", operator_token).json()
    assert (body["status"], body["retry_count"], body["resolved_at"]) == ("open", 1, None)
    (attempt,) = body["attempts"]
    assert attempt["outcome"] == "did_not_help"
    assert attempt["detail"].startswith("not RUNNING and healthy within 3 s: RUNNING but unhealthy")


def test_refusals_say_why_and_change_nothing(client, recorded, operator_token) -> None:
    port = recorded["port"]
    not_offered = api(
        client, "post", f"/errors/{port.pk}/recover", operator_token, action="raise_memory"
    )
    assert not_offered.status_code == 409
    assert not_offered.json() == {
        "detail": "Raise the memory limit and restart is not a fix for this error; offered: "
        "Pick another port and start, Restart.",
        "code": "not_offered",
        "offered": ["pick_new_port", "restart"],
    }
    unknown = api(client, "post", f"/errors/{port.pk}/recover", operator_token, action="reboot")
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown"
    assert unknown.json()["detail"].startswith("'reboot' is not a recovery; use one of restart,")
    assert unknown.json()["offered"] == ["pick_new_port", "restart"]
    missing_action = api(client, "post", f"/errors/{port.pk}/recover", operator_token)
    assert missing_action.status_code == 400 and missing_action.json()["code"] == "unknown"
    no_error = api(client, "post", "/errors/4242/recover", operator_token, action="restart")
    assert no_error.status_code == 404
    port.refresh_from_db()
    assert (port.status, port.retry_count) == ("open", 0)
    assert not RecoveryAttempt.objects.exists()
    assert AuditEntry.objects.filter(action="agent.recover", outcome="refused").count() == 3


def test_ignore_closes_the_error_with_the_reason(client, recorded, operator_token) -> None:
    crash = recorded["crash"]
    response = api(
        client, "post", f"/errors/{crash.pk}/ignore", operator_token, reason="a test run"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["resolution"]) == (crash.pk, "ignored", "a test run")
    assert body["resolved_by"].endswith("(otto)") and body["resolved_at"] is not None
    recover = api(client, "post", f"/errors/{crash.pk}/recover", operator_token, action="restart")
    assert recover.status_code == 409 and recover.json()["code"] == "closed"

    again = api(client, "post", f"/errors/{crash.pk}/ignore", operator_token, reason="twice")
    assert again.status_code == 409 and again.json()["code"] == "closed"
    crash.refresh_from_db()
    assert crash.resolution == "a test run"  # the first ignore stands

    port = recorded["port"]
    without_reason = api(client, "post", f"/errors/{port.pk}/ignore", operator_token).json()
    assert (without_reason["status"], without_reason["resolution"]) == ("ignored", "ignored")
    assert api(client, "post", "/errors/4242/ignore", operator_token).status_code == 404
    assert AuditEntry.objects.filter(action="agent.error.ignore").count() == 2

    dependency = recorded["dependency"]
    recovering = api(
        client, "post", f"/errors/{dependency.pk}/recover", operator_token,
        action="start_dependencies",
    )  # fmt: skip
    assert recovering.status_code == 202
    busy = api(client, "post", f"/errors/{dependency.pk}/ignore", operator_token)
    assert busy.status_code == 409 and busy.json()["code"] == "busy"
    dependency.refresh_from_db()
    assert dependency.status == "recovering"


def test_viewer_gets_403_on_every_mutation_and_nothing_changes(
    client, recorded, viewer_token
) -> None:
    port = recorded["port"]
    for method, path, data in [
        ("post", f"/errors/{port.pk}/recover", {"action": "pick_new_port"}),
        ("post", f"/errors/{port.pk}/ignore", {"reason": "not mine"}),
        ("put", "/errors/automatic-recovery", {"on": False}),
    ]:
        response = api(client, method, path, viewer_token, **data)
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"
        assert "it needs the" in response.json()["detail"]
    port.refresh_from_db()
    assert (port.status, port.retry_count) == ("open", 0)
    assert not RecoveryAttempt.objects.exists() and not RecoverySwitch.objects.exists()
    assert api(client, "get", f"/errors/{port.pk}", viewer_token).status_code == 200


def test_session_recover_needs_csrf(recorded, operator) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(
        f"/api/platform/errors/{recorded['port'].pk}/recover",
        {"action": "restart"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not RecoveryAttempt.objects.exists()


# --- the automatic-recovery switch ----------------------------------------------------------------


def test_only_an_admin_switches_automatic_recovery(
    client, db, admin_token, operator_token, viewer_token
) -> None:
    assert api(client, "get", "/errors/automatic-recovery", viewer_token).json() == {
        "on": True, "changed_by": "", "changed_at": None,
    }  # fmt: skip
    refused = api(client, "put", "/errors/automatic-recovery", operator_token, on=False)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("You cannot switch automatic recovery on or off")
    assert errors.automatic_recovery_on() is True

    off = api(client, "put", "/errors/automatic-recovery", admin_token, on=False)
    assert off.status_code == 200
    assert off.json()["on"] is False and off.json()["changed_by"].endswith("(ada)")
    assert errors.automatic_recovery_on() is False
    assert api(client, "get", "/errors/automatic-recovery", operator_token).json()["on"] is False
    again = api(client, "put", "/errors/automatic-recovery", admin_token, on=False)
    assert again.status_code == 200 and again.json()["on"] is False  # idempotent
    assert api(client, "put", "/errors/automatic-recovery", admin_token, on=True).json()["on"]
    assert errors.automatic_recovery_on() is True

    empty = api(client, "put", "/errors/automatic-recovery", admin_token)
    assert empty.status_code == 400 and empty.json()["code"] == "invalid"
    switched = AuditEntry.objects.filter(action="errors.automatic_recovery")
    assert switched.filter(outcome=AuditEntry.Outcome.SUCCESS).count() == 3
    assert switched.filter(outcome=AuditEntry.Outcome.REFUSED).count() == 1  # the Operator's
    assert api(client, "post", "/errors/automatic-recovery", admin_token).status_code == 405
