"""Probe settings through every door: the one validation (each bad value refused with a sentence
naming the field, nothing saved, the refusal audited), the API, the agent page's panel, the
``probes`` command and the admin."""

from __future__ import annotations

import html
import json

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from agents.placement import spec_for
from agents.probes import services
from agents.probes.schema import InvalidProbes, validate_probes
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry

HTMX = {"HTTP_HX_REQUEST": "true"}
GOOD = {
    "liveness": {
        "kind": "tcp",
        "port": None,
        "interval_seconds": 10,
        "timeout_seconds": 2,
        "failure_threshold": 3,
        "success_threshold": 1,
    },
    "readiness": {"kind": "exec", "command": ["cat", "/tmp/ready"], "interval_seconds": 5},
}


def liveness(**fields) -> dict:
    return {"liveness": {"kind": "http", **fields}}


# (document, the field named, words of the sentence)
BAD = [
    ({"liveness": {"kind": "http", "interval_seconds": 0}}, "liveness.interval_seconds", "from 1 to 3600"),
    (liveness(interval_seconds=3601), "liveness.interval_seconds", "from 1 to 3600"),
    (liveness(interval_seconds="often"), "liveness.interval_seconds", "'often'"),
    (liveness(interval_seconds=True), "liveness.interval_seconds", "whole number"),
    (liveness(timeout_seconds=0.5), "liveness.timeout_seconds", "from 1 to 60"),
    (liveness(timeout_seconds=61, interval_seconds=100), "liveness.timeout_seconds", "from 1 to 60"),
    (liveness(timeout_seconds=10, interval_seconds=10), "liveness.timeout_seconds", "less than liveness.interval_seconds"),
    (liveness(failure_threshold=0), "liveness.failure_threshold", "from 1 to 10"),
    (liveness(success_threshold=11), "liveness.success_threshold", "from 1 to 10"),
    (liveness(path="healthz"), "liveness.path", "must start with '/'"),
    (liveness(path="/a b"), "liveness.path", "without spaces"),
    (liveness(status=99), "liveness.status", "from 100 to 599"),
    (liveness(status=600), "liveness.status", "from 100 to 599"),
    ({"readiness": {"kind": "tcp", "port": 0}}, "readiness.port", "from 1 to 65535"),
    ({"readiness": {"kind": "tcp", "port": 65536}}, "readiness.port", "from 1 to 65535"),
    ({"readiness": {"kind": "tcp", "path": "/x"}}, "readiness.path", "not a setting of a tcp probe"),
    ({"readiness": {"kind": "exec"}}, "readiness.command", "list of 1 to 20 strings"),
    ({"readiness": {"kind": "exec", "command": []}}, "readiness.command", "list of 1 to 20 strings"),
    ({"readiness": {"kind": "exec", "command": "cat /tmp/x"}}, "readiness.command", "list of 1 to 20"),
    ({"readiness": {"kind": "exec", "command": ["x"] * 21}}, "readiness.command", "at most 20 items"),
    ({"readiness": {"kind": "exec", "command": ["x" * 1001]}}, "readiness.command", "at most 1000 characters"),
    ({"readiness": {"kind": "exec", "command": ["cat", "a\x00b"]}}, "readiness.command", "NUL byte"),
    ({"readiness": {"kind": "exec", "command": ["cat", 3]}}, "readiness.command", "must be a string"),
    ({"readiness": {"kind": "exec", "command": ["cat", "\ud800"]}}, "readiness.command", "valid Unicode"),
    ({"readiness": {"kind": "udp"}}, "readiness.kind", "http, tcp or exec"),
    ({"startup": {}}, "startup", "not a probe"),
    ({"liveness": "tcp"}, "liveness", "must be an object"),
    ([1, 2], "probes", "must be an object"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "field", "words"), BAD)
def test_every_bad_value_is_refused_with_a_sentence_naming_its_field(document, field, words):
    with pytest.raises(InvalidProbes) as refused:
        validate_probes(document, 5)
    assert refused.value.field == field
    assert field in refused.value.message and words in refused.value.message


def test_a_document_is_completed_with_the_defaults_and_normalized():
    assert validate_probes({}, 5) == {} and validate_probes(None, 5) == {}
    stored = validate_probes(GOOD, 5)
    assert stored["liveness"] == GOOD["liveness"]
    assert stored["readiness"] == {
        "kind": "exec",
        "command": ["cat", "/tmp/ready"],
        "interval_seconds": 5,
        "timeout_seconds": 1.5,
        "failure_threshold": 1,
        "success_threshold": 1,
    }
    typed = validate_probes(liveness(status="204", interval_seconds="20", timeout_seconds="2.5"), 5)
    assert typed["liveness"]["status"] == 204 and typed["liveness"]["interval_seconds"] == 20
    assert typed["liveness"]["timeout_seconds"] == 2.5
    assert typed["readiness"]["path"] == "/readyz"  # left out: the default


# --- the service -------------------------------------------------------------------------------


def test_an_operator_sets_probes_audited_in_the_same_transaction_and_the_spec_carries_them(
    seeded, operator_actor
):
    cache = services.set_probes(seeded["wow-cache"], GOOD, operator_actor)
    assert Agent.objects.get(slug="wow-cache").probes["liveness"]["kind"] == "tcp"
    entry = AuditEntry.objects.filter(action="agent.probes").latest("pk")
    assert (entry.outcome, entry.target, entry.actor) == ("success", "wow-cache", "user:otto")
    assert entry.detail["probes"]["liveness"]["kind"] == "tcp" and entry.detail["replaced"] == {}
    assert spec_for(cache).probes == cache.probes
    services.set_probes(cache, {}, operator_actor)
    assert Agent.objects.get(slug="wow-cache").probes == {}


def test_a_viewer_is_refused_and_the_refusal_audited(seeded, viewer_actor):
    with pytest.raises(PermissionDenied, match="Operator role"):
        services.set_probes(seeded["wow-cache"], GOOD, viewer_actor)
    assert Agent.objects.get(slug="wow-cache").probes == {}
    entry = AuditEntry.objects.filter(action="agent.probes").latest("pk")
    assert entry.outcome == "refused" and "Operator role" in entry.detail["error"]


def test_a_revoked_agent_takes_no_probes(seeded, operator_actor):
    Agent.objects.filter(slug="wow-cache").update(state="REVOKED")
    with pytest.raises(services.ProbesLocked, match="REVOKED"):
        services.set_probes(Agent.objects.get(slug="wow-cache"), GOOD, operator_actor)


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


def api(client, method: str, token: str, body: object = None, slug: str = "wow-cache"):
    path = f"/api/platform/agents/{slug}/probes"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "get":
        return client.get(path, **headers)
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.put(path, data, content_type="application/json", **headers)


def test_the_api_reads_and_sets_the_probes(client, seeded, operator_token, viewer_token):
    shown = api(client, "get", viewer_token)
    assert shown.status_code == 200
    body = shown.json()
    assert body["custom"] is False and body["runtime"] == "local"
    assert body["liveness"]["path"] == "/healthz" and body["readiness"]["path"] == "/readyz"
    assert body["takes_effect"] == "from the monitor's next round" and body["replicas"] == []

    saved = api(client, "put", operator_token, GOOD)
    assert saved.status_code == 200, saved.content
    assert saved.json()["custom"] is True and saved.json()["liveness"]["kind"] == "tcp"
    assert api(client, "get", viewer_token).json()["readiness"]["command"] == ["cat", "/tmp/ready"]
    assert api(client, "put", operator_token, {}).json()["custom"] is False
    assert api(client, "get", viewer_token, slug="wow-nothing").status_code == 404


@pytest.mark.parametrize(("document", "field", "words"), BAD[::4])
def test_the_api_refuses_a_bad_value_400_naming_it_and_saves_nothing(
    client, seeded, operator_token, document, field, words
):
    answer = api(client, "put", operator_token, document)
    assert answer.status_code == 400
    assert field in answer.json()["detail"] and words in answer.json()["detail"]
    assert answer.json()["field"] == field
    assert Agent.objects.get(slug="wow-cache").probes == {}
    outcomes = set(
        AuditEntry.objects.filter(action="agent.probes").values_list("outcome", flat=True)
    )
    assert outcomes == {"refused"}


def test_the_api_answers_a_body_that_is_not_json_400(client, seeded, operator_token):
    answer = api(client, "put", operator_token, "{not json")
    assert answer.status_code == 400 and "not JSON" in answer.json()["detail"]
    answer = api(client, "put", operator_token, "")
    assert answer.status_code == 400 and "JSON object" in answer.json()["detail"]


def test_the_api_refuses_a_viewer_403_and_audits_it(client, seeded, viewer_token):
    answer = api(client, "put", viewer_token, GOOD)
    assert answer.status_code == 403 and "Operator role" in answer.json()["detail"]
    assert Agent.objects.get(slug="wow-cache").probes == {}
    entry = AuditEntry.objects.filter(action="agent.probes").latest("pk")
    assert entry.outcome == "refused" and entry.door == "api"


def test_the_probes_route_is_not_taken_for_a_lifecycle_action(client, seeded, operator_token):
    # POST /agents/{slug}/{action} must not swallow /agents/{slug}/probes (and vice versa).
    answer = client.post(
        "/api/platform/agents/wow-cache/probes", HTTP_AUTHORIZATION=f"Bearer {operator_token}"
    )
    assert answer.status_code == 405


# --- the agent page ----------------------------------------------------------------------------


def form(document: dict | None = None, **fields) -> dict:
    """The panel's form fields for the defaults, changed by ``fields``."""
    data = {}
    for which, path in (("liveness", "/healthz"), ("readiness", "/readyz")):
        data.update({
            f"{which}-kind": "http", f"{which}-path": path, f"{which}-status": "200",
            f"{which}-port": "", f"{which}-command": "", f"{which}-interval_seconds": "5",
            f"{which}-timeout_seconds": "1.5", f"{which}-failure_threshold": "1",
            f"{which}-success_threshold": "1",
        })  # fmt: skip
    data.update(fields)
    return data


def test_the_agent_page_shows_the_panel_with_a_form_for_operators_only(
    seeded, as_operator, as_viewer
):
    page = as_operator.get("/agents/wow-cache/").content.decode()
    assert 'id="agent-probes"' in page and "GET /healthz → 200" in page
    assert 'name="liveness-kind"' in page and "data-swap-invalid" in page
    viewer_page = as_viewer.get("/agents/wow-cache/").content.decode()
    assert 'id="agent-probes"' in viewer_page and 'name="liveness-kind"' not in viewer_page


def test_an_operator_saves_probes_from_the_panel(seeded, as_operator):
    data = form(**{"liveness-kind": "exec", "liveness-command": "sh -c 'test -f /tmp/ok'",
                   "readiness-kind": "tcp", "readiness-port": "9000"})  # fmt: skip
    answer = as_operator.post("/agents/wow-cache/probes/change/", data, **HTMX)
    assert answer.status_code == 200
    assert "Probes saved" in answer.content.decode()
    probes = Agent.objects.get(slug="wow-cache").probes
    assert probes["liveness"]["command"] == ["sh", "-c", "test -f /tmp/ok"]
    assert probes["readiness"] == {
        "kind": "tcp", "port": 9000, "interval_seconds": 5, "timeout_seconds": 1.5,
        "failure_threshold": 1, "success_threshold": 1,
    }  # fmt: skip
    # Without htmx: back to the agent's page.
    back = as_operator.post("/agents/wow-cache/probes/change/", form(reset="1"))
    assert back.status_code == 302 and back["Location"] == "/agents/wow-cache/#agent-probes"
    assert Agent.objects.get(slug="wow-cache").probes == {}


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"liveness-timeout_seconds": "9"}, "liveness.timeout_seconds must be less than"),
        ({"readiness-status": "99"}, "readiness.status must be a whole number from 100 to 599"),
        ({"liveness-kind": "tcp", "liveness-port": "70000"}, "liveness.port must be a whole"),
        ({"liveness-kind": "exec", "liveness-command": ""}, "liveness.command must be a list"),
        ({"liveness-kind": "exec", "liveness-command": "sh -c 'open"}, "liveness.command cannot be read"),
        ({"liveness-path": "healthz"}, "liveness.path must start with '/'"),
    ],
)  # fmt: skip
def test_the_panel_refuses_a_bad_value_400_with_the_sentence_and_saves_nothing(
    seeded, as_operator, fields, sentence
):
    answer = as_operator.post("/agents/wow-cache/probes/change/", form(**fields), **HTMX)
    assert answer.status_code == 400
    content = html.unescape(answer.content.decode())
    assert sentence in content and 'aria-invalid="true"' in content
    for name, value in fields.items():  # the form as it was typed
        assert f'value="{value}"' in content or name.endswith("-kind")
    assert Agent.objects.get(slug="wow-cache").probes == {}
    assert not AuditEntry.objects.filter(action="agent.probes", outcome="success").exists()
    # Without htmx, the same sentence on a page of its own, still 400.
    page = as_operator.post("/agents/wow-cache/probes/change/", form(**fields))
    assert page.status_code == 400 and sentence in html.unescape(page.content.decode())


def test_a_viewer_cannot_change_probes_from_the_page(seeded, as_viewer):
    answer = as_viewer.post("/agents/wow-cache/probes/change/", form(), **HTMX)
    assert answer.status_code == 403
    assert Agent.objects.get(slug="wow-cache").probes == {}
    assert AuditEntry.objects.filter(action="agent.probes").latest("pk").outcome == "refused"
    assert as_viewer.post("/agents/wow-cache/probes/change/", form()).status_code == 403


def test_the_panel_has_a_page_of_its_own_and_refuses_the_wrong_method(seeded, as_viewer):
    page = as_viewer.get("/agents/wow-cache/probes/")
    assert page.status_code == 200 and 'id="agent-probes"' in page.content.decode()
    assert "<html" in page.content.decode()
    fragment = as_viewer.get("/agents/wow-cache/probes/", **HTMX).content.decode()
    assert fragment.startswith("<section") and "<html" not in fragment
    assert as_viewer.get("/agents/wow-cache/probes/change/").status_code == 405
    assert as_viewer.get("/agents/wow-nothing/probes/").status_code == 404


# --- the command and the admin -------------------------------------------------------------------


def test_the_command_shows_sets_and_resets(seeded, capsys, viewer):
    call_command("probes", "set", "wow-cache", json.dumps(GOOD))
    assert Agent.objects.get(slug="wow-cache").probes["liveness"]["kind"] == "tcp"
    entry = AuditEntry.objects.filter(action="agent.probes").latest("pk")
    assert entry.outcome == "success" and entry.door == "command"
    capsys.readouterr()
    call_command("probes", "show", "wow-cache", "--json")
    shown = json.loads(capsys.readouterr().out)
    assert shown["custom"] is True and shown["liveness"]["failure_threshold"] == 3
    call_command("probes", "show", "wow-cache")
    out = capsys.readouterr().out
    assert "liveness   TCP on the replica's port, every 10 s" in out

    with pytest.raises(CommandError) as refused:
        call_command("probes", "set", "wow-cache", json.dumps(liveness(status=700)))
    assert refused.value.returncode == 2 and "liveness.status" in str(refused.value)
    with pytest.raises(CommandError, match="Operator role"):
        call_command("probes", "set", "wow-cache", json.dumps(GOOD), "--as", viewer.username)
    with pytest.raises(CommandError, match="not JSON"):
        call_command("probes", "set", "wow-cache", "{oops")
    with pytest.raises(CommandError, match="No agent"):
        call_command("probes", "show", "wow-nothing")
    call_command("probes", "reset", "wow-cache")
    assert Agent.objects.get(slug="wow-cache").probes == {}


def test_the_admin_shows_the_probes_but_does_not_edit_them(seeded, as_admin, operator_actor):
    cache = services.set_probes(seeded["wow-cache"], GOOD, operator_actor)
    page = as_admin.get(f"/admin/agents/agent/{cache.pk}/change/").content.decode()
    assert "Probes" in page and "/tmp/ready" in page
    assert 'name="probes"' not in page
