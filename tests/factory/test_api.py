"""The factory API under /api/platform/factory: templates with their default cost, checking a
configuration field by field, cost estimates, sandbox runs (one run for real), creating agents
and drafts, at every role; bad ids and input answered 4xx with a sentence, nothing created; no
answer holds a secret's value."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.models import Agent
from agents.workflows.models import WorkflowRun
from factory.models import Draft, SandboxRun
from factory.services import pricing, sandbox
from portal import services as portal_services
from portal.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/platform/factory"
SECRET = "s3cret-value-42"


def send(client, method: str, path: str, body: object = None, **headers):
    data = json.dumps(body if body is not None else {})
    call = getattr(client, method)
    return call(f"{API}{path}", data=data, content_type="application/json", **headers)


def post(client, path: str, body: object = None, **headers):
    return send(client, "post", path, body, **headers)


def made() -> tuple[int, int, int, int]:
    """What a refused or read-only request must leave as it was."""
    return (
        Agent.objects.count(),
        Draft.objects.count(),
        SandboxRun.objects.count(),
        WorkflowRun.objects.count(),
    )


# --- templates --------------------------------------------------------------------------------


def test_templates_list_each_with_its_schema_tests_and_default_cost(catalog, as_viewer) -> None:
    response = as_viewer.get(f"{API}/templates")
    assert response.status_code == 200, response.content
    rows = {row["template_id"]: row for row in response.json()["templates"]}
    assert list(rows) == ["memory", "orchestration", "api", "data", "monitoring", "blank"]
    memory = rows["memory"]
    assert (memory["version"], memory["name"], memory["category"], memory["complexity"]) == (
        1, "Memory", "Storage", "low",
    )  # fmt: skip
    assert memory["capabilities"] == ["memory-storage", "context-retrieval"]
    assert memory["resources"] == {
        "cpu_millicores": 100, "memory_mb": 128, "storage_mb": 256, "replicas": 1,
    }  # fmt: skip
    assert "default_ttl_seconds" in memory["config_schema"]["properties"]
    assert memory["test_tasks"][0] == {
        "name": "puts a long-term key",
        "payload": {"op": "put", "key": "greeting", "value": "hello", "scope": "long"},
    }
    template = catalog["memory"]
    expected = pricing.estimate(template.resources, template.cost_profile["tasks_per_month"])
    assert memory["monthly_cost"]["monthly_total"] == str(expected.total)
    assert [line["item"] for line in memory["monthly_cost"]["breakdown"]] == [
        "CPU", "Memory", "Storage", "Tasks",
    ]  # fmt: skip


def test_the_api_needs_a_role(catalog, as_outsider) -> None:
    assert Client().get(f"{API}/templates").status_code == 401
    assert as_outsider.get(f"{API}/templates").status_code == 401
    assert post(Client(), "/validate", {"template_id": "memory"}).status_code == 401


# --- validate ---------------------------------------------------------------------------------


def validate(client, config: dict, name: str | None = "Acme Memory", template: str = "memory"):
    body = {"template_id": template, "config": config}
    if name is not None:
        body["agent_name"] = name
    response = post(client, "/validate", body)
    assert response.status_code == 200, response.content
    return response.json()


def test_validate_answers_each_error_with_its_field_and_changes_nothing(catalog, as_viewer) -> None:
    before = made()
    answer = validate(
        as_viewer,
        {"slug": "wow-cache", "settings": {"default_ttl_seconds": 0}, "resources": {"replicas": 0}},
    )
    assert answer["valid"] is False
    errors = {error["field"]: error["message"] for error in answer["errors"]}
    assert "wow-cache is taken" in errors["slug"]
    assert "minimum of 1" in errors["settings.default_ttl_seconds"]
    assert errors["resources.replicas"] == "Pick a whole number from 1 to 10."
    assert "owner" in errors  # a Customer-tier agent needs its owner

    itself = validate(as_viewer, {"slug": "acme-memory", "dependencies": ["acme-memory"],
                                  "owner": "Acme"})  # fmt: skip
    assert itself["errors"] == [
        {
            "field": "dependencies",
            "message": "acme-memory cannot depend on itself: that is a cycle.",
        }
    ]
    unknown = validate(as_viewer, {"owner": "Acme", "settings.nope": 1, "colour": "red"})
    assert {e["field"] for e in unknown["errors"]} == {"settings.nope", "colour"}
    assert made() == before


def test_a_configuration_that_checks_out_is_valid(catalog, as_viewer) -> None:
    assert validate(as_viewer, {"owner": "Acme", "settings": {"max_keys": 50}}) == {
        "valid": True, "errors": [],
    }  # fmt: skip
    # The name may come inside the configuration too; without any, it is an error.
    assert validate(as_viewer, {"name": "Acme Two", "owner": "Acme"}, name=None)["valid"]
    nameless = validate(as_viewer, {"owner": "Acme"}, name=None)
    assert [e["field"] for e in nameless["errors"]] == ["name", "slug"]


def test_validate_names_the_templates_when_the_template_is_unknown(catalog, as_viewer) -> None:
    response = post(as_viewer, "/validate", {"template_id": "nope", "config": {}})
    assert response.status_code == 404
    assert response.json()["detail"].startswith("No template 'nope'; templates: memory, ")
    for bad in ("", "x" * 200):
        response = post(as_viewer, "/validate", {"template_id": bad, "config": {}})
        assert response.status_code == 400, bad
        assert "is not a template id; templates: memory" in response.json()["detail"]
    response = post(as_viewer, "/validate", {"template_id": "me\x00mory", "config": {}})
    assert response.status_code == 400 and "NUL" in response.json()["detail"]
    assert post(as_viewer, "/validate", {"template_id": "memory", "config": [1]}).status_code == 422


# --- cost estimates ---------------------------------------------------------------------------


def test_a_cost_estimate_at_the_defaults_and_with_resources_given(catalog, as_viewer) -> None:
    response = as_viewer.get(f"{API}/cost-estimate", {"template_id": "memory"})
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["inputs"] == {"cpu_millicores": 100, "memory_mb": 128, "storage_mb": 256,
                                "replicas": 1, "tasks_per_month": 50000}  # fmt: skip
    assert (answer["template_id"], answer["template_version"]) == ("memory", 1)
    assert answer["currency"] == "USD" and answer["within_budget"] is True
    default_total = answer["monthly_total"]

    bigger = as_viewer.get(f"{API}/cost-estimate", {
        "template_id": "memory", "cpu_millicores": "500", "memory_mb": "1024", "replicas": "3",
        "storage_mb": "0", "tasks_per_month": "0",
    }).json()  # fmt: skip
    assert bigger["inputs"] == {"cpu_millicores": 500, "memory_mb": 1024, "storage_mb": 0,
                                "replicas": 3, "tasks_per_month": 0}  # fmt: skip
    expected = pricing.estimate(
        {"cpu_millicores": 500, "memory_mb": 1024, "storage_mb": 0, "replicas": 3}, 0
    )
    assert bigger["monthly_total"] == str(expected.total) != default_total
    lines = {line["item"]: line["monthly"] for line in bigger["breakdown"]}
    assert lines["Storage"] == lines["Tasks"] == "0.00"


@pytest.mark.parametrize(
    ("parameter", "value", "says"),
    [
        ("cpu_millicores", "lots", "must be a whole number, got 'lots'"),
        ("memory_mb", "-64", "Pick a whole number from 64 to 8192."),
        ("replicas", "99999999999999999999", "is far too large"),
        ("tasks_per_month", "1.5", "must be a whole number"),
        ("tasks_per_month", "100000001", "from 0 to 100,000,000"),
    ],
)
def test_a_bad_cost_input_is_a_400_naming_it(catalog, as_viewer, parameter, value, says) -> None:
    response = as_viewer.get(f"{API}/cost-estimate", {"template_id": "memory", parameter: value})
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["detail"].startswith(f"{parameter}=") and says in answer["detail"]
    assert answer["parameter"] == parameter and answer["code"] == "invalid"


def test_a_nul_byte_in_a_cost_input_is_a_400_naming_it(catalog, as_viewer) -> None:
    response = as_viewer.get(
        f"{API}/cost-estimate", {"template_id": "memory", "storage_mb": "1\x00"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("storage_mb: contains a NUL character")


def test_a_cost_estimate_needs_a_known_template(catalog, as_viewer) -> None:
    missing = as_viewer.get(f"{API}/cost-estimate")
    assert missing.status_code == 400
    assert missing.json()["detail"] == (
        "Name a template; templates: memory, orchestration, api, data, monitoring, blank."
    )
    # A query parameter naming nothing is bad input, as a filter's is.
    response = as_viewer.get(f"{API}/cost-estimate", {"template_id": "gold"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(
        "template_id: No template 'gold'; templates: memory"
    )


# --- sandbox runs ------------------------------------------------------------------------------


def test_a_sandbox_run_is_accepted_then_answers_its_results_without_secrets(
    catalog, as_operator, as_viewer, redis_client
) -> None:
    response = post(as_operator, "/test-sandbox", {
        "template_id": "blank", "config": {"secrets": {"API_TOKEN": SECRET},
                                           "environment": "REGION=eu"},
    })  # fmt: skip
    assert response.status_code == 202, response.content
    accepted = response.json()
    run = SandboxRun.objects.get()
    assert accepted == {"sandbox_id": run.pk, "status": "pending",
                        "url": f"{API}/sandboxes/{run.pk}"}  # fmt: skip
    assert run.actor == "user:otto"
    pending = as_viewer.get(accepted["url"])
    assert pending.status_code == 200 and pending.json()["status"] == "pending"

    sandbox.run_sandbox(run.pk)  # what the worker's task does
    response = as_viewer.get(accepted["url"])
    answer = response.json()
    assert answer["status"] == "passed", answer
    assert (answer["passed"], answer["tests"], answer["template_id"]) == (1, 1, "blank")
    result = answer["results"][0]
    assert (result["name"], result["passed"], result["output"]) == (
        "echoes its input", True, {"hello": "world"},
    )  # fmt: skip
    assert answer["latency_p50_ms"] is not None and answer["latency_p95_ms"] is not None
    assert answer["peak_memory_mb"] and answer["logs"] and answer["torn_down_at"]
    assert answer["config"]["secret_names"] == ["API_TOKEN"]
    assert answer["config"]["environment"] == {"REGION": "eu"}
    assert SECRET not in response.content.decode() and "digest" not in response.content.decode()


def test_a_sandbox_of_a_drafts_configuration_belongs_to_the_draft(
    catalog, as_operator, operator_actor
) -> None:
    from factory.services import drafts

    draft = drafts.create_draft(catalog["memory"], operator_actor)
    drafts.set_fields(draft, {"settings.max_keys": "20", "secrets": "TOKEN=abc"}, operator_actor)
    response = post(as_operator, "/test-sandbox", {"draft_id": str(draft.pk)})
    assert response.status_code == 202, response.content
    run = SandboxRun.objects.get(pk=response.json()["sandbox_id"])
    assert run.draft_id == draft.pk and run.template == draft.template
    assert run.config["agent"]["settings"]["max_keys"] == 20
    assert run.config["secret_names"] == ["TOKEN"]
    other = post(as_operator, "/test-sandbox", {"draft_id": str(draft.pk), "template_id": "api"})
    assert other.status_code == 400 and "not API" in other.json()["detail"]


def test_a_sandbox_of_settings_that_do_not_check_out_is_refused(catalog, as_operator) -> None:
    before = made()
    response = post(as_operator, "/test-sandbox", {
        "template_id": "memory", "config": {"settings": {"max_keys": -1}, "resources": {"gpus": 1}},
    })  # fmt: skip
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["code"] == "invalid"
    assert [e["field"] for e in answer["errors"]] == ["resources.gpus"]
    response = post(as_operator, "/test-sandbox",
                    {"template_id": "memory", "config": {"settings": {"max_keys": -1}}})  # fmt: skip
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["settings.max_keys"]
    assert post(as_operator, "/test-sandbox", {"config": {}}).status_code == 400
    assert made() == before


def test_viewers_cannot_run_sandboxes_and_bad_ids_are_answered(catalog, as_viewer) -> None:
    response = post(as_viewer, "/test-sandbox", {"template_id": "blank", "config": {}})
    assert response.status_code == 403 and "Operator" in response.json()["detail"]
    assert SandboxRun.objects.count() == 0
    bad = as_viewer.get(f"{API}/sandboxes/abc")
    assert bad.status_code == 400 and bad.json()["detail"] == "'abc' is not a sandbox number."
    missing = as_viewer.get(f"{API}/sandboxes/999999")
    assert missing.status_code == 404 and "#999999" in missing.json()["detail"]
    assert post(as_viewer, "/test-sandbox", {"draft_id": "not-a-uuid"}).status_code == 400


# --- creating agents ------------------------------------------------------------------------


def create_body(**config) -> dict:
    return {"agent_name": "Acme Echo", "template_id": "blank",
            "config": {"owner": "Acme", **config}}  # fmt: skip


def test_creating_an_agent_answers_202_with_its_workflow(catalog, as_operator) -> None:
    response = post(as_operator, "/agents", create_body(secrets={"API_TOKEN": SECRET}))
    assert response.status_code == 202, response.content
    answer = response.json()
    run = WorkflowRun.objects.get()
    draft = Draft.objects.get()
    assert answer == {
        "agent_id": "acme-echo", "status": "provisioning", "workflow_id": run.pk,
        "workflow_url": f"/workflows/{run.pk}/", "draft_id": str(draft.pk),
    }  # fmt: skip
    assert run.definition == "factory-create-agent" and run.parameters["slug"] == "acme-echo"
    assert run.roll_back_on_failure is True
    assert draft.status == Draft.Status.CREATING and draft.secrets == {"API_TOKEN": SECRET}
    assert SECRET not in response.content.decode()
    # keep_on_failure: what was made stays when a step fails for good, for debugging.
    kept = post(as_operator, "/agents", {**create_body(slug="acme-keep"), "agent_name": "Keep",
                                         "keep_on_failure": True})  # fmt: skip
    assert kept.status_code == 202, kept.content
    assert WorkflowRun.objects.get(pk=kept.json()["workflow_id"]).roll_back_on_failure is False


def test_an_invalid_configuration_creates_nothing(catalog, as_operator) -> None:
    before = made()
    response = post(as_operator, "/agents", {
        "agent_name": "WowCache", "template_id": "memory",
        "config": {"slug": "wow-cache", "settings": {"max_keys": "many"}},
    })  # fmt: skip
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["code"] == "invalid"
    assert answer["detail"].startswith("The configuration does not check out: ")
    fields = {error["field"] for error in answer["errors"]}
    assert {"name", "slug", "owner", "settings.max_keys"} <= fields
    assert made() == before


def test_a_dry_run_answers_what_would_be_made_and_its_cost(catalog, as_operator) -> None:
    before = made()
    response = post(as_operator, "/agents", {
        **create_body(secrets={"API_TOKEN": SECRET}), "template_id": "memory", "dry_run": True,
    })  # fmt: skip
    assert response.status_code == 200, response.content
    answer = response.json()
    kinds = [thing["kind"] for thing in answer["objects"]]
    assert kinds[:4] == ["Agent", "Task stream", "Consumer group", "Dead-letter stream"]
    assert "Data volume" in kinds and "Alert rule" in kinds and "Secrets" in kinds
    assert answer["values"]["slug"] == "acme-echo" and answer["secret_names"] == ["API_TOKEN"]
    assert answer["cost"]["monthly_total"]
    assert SECRET not in response.content.decode()
    assert made() == before


def test_viewers_cannot_create_agents_and_bad_templates_are_answered(catalog, as_viewer) -> None:
    before = made()
    response = post(as_viewer, "/agents", create_body())
    assert response.status_code == 403 and "create agents" in response.json()["detail"]
    assert post(as_viewer, "/agents", {**create_body(), "template_id": "gold"}).status_code == 404
    assert post(as_viewer, "/agents", {"template_id": "blank"}).status_code == 422
    assert made() == before


def test_a_bearer_token_acts_with_its_users_role(catalog, operator, viewer) -> None:
    operator_token = portal_services.create_api_token(operator, Actor.command("test"))[1]
    viewer_token = portal_services.create_api_token(viewer, Actor.command("test"))[1]
    client = Client()  # no session, no CSRF: the token alone

    def create(token: str):
        return post(client, "/agents", create_body(), HTTP_AUTHORIZATION=f"Bearer {token}")

    assert create(viewer_token).status_code == 403
    response = create(operator_token)
    assert response.status_code == 202, response.content
    assert Draft.objects.get().actor.startswith("token:")
    listed = client.get(f"{API}/templates", HTTP_AUTHORIZATION=f"Bearer {viewer_token}")
    assert len(listed.json()["templates"]) == 6
    assert create("not-a-token").status_code == 401


# --- drafts -----------------------------------------------------------------------------------


def test_a_draft_is_started_filled_in_and_read_with_secret_names_only(
    catalog, as_operator, as_viewer
) -> None:
    response = post(as_operator, "/drafts", {"template_id": "memory"})
    assert response.status_code == 201, response.content
    draft = response.json()
    url = draft["url"]
    assert url == f"{API}/drafts/{draft['draft_id']}"
    assert (draft["template_id"], draft["status"], draft["step"]) == ("memory", "editing", 2)
    assert draft["values"]["resources"]["storage_mb"] == 256 and draft["run"] is None
    assert {"name", "slug", "owner"} <= {e["field"] for e in draft["errors"]}

    changed = send(as_operator, "patch", url.removeprefix(API), {
        "name": "Acme Memory", "slug": "acme-memory", "owner": "Acme",
        "secrets": f"API_KEY={SECRET}", "settings.max_keys": "200",
    })  # fmt: skip
    assert changed.status_code == 200, changed.content
    assert changed.json() == {"errors": []}
    bad = send(as_operator, "patch", url.removeprefix(API), {"slug": "wow-cache",
                                                            "resources.replicas": "two"})  # fmt: skip
    assert {e["field"] for e in bad.json()["errors"]} == {"slug", "resources.replicas"}

    read = as_viewer.get(url)
    assert read.status_code == 200
    answer = read.json()
    assert answer["secret_names"] == ["API_KEY"]
    assert answer["values"]["settings"]["max_keys"] == 200
    assert answer["values"]["slug"] == "wow-cache"  # kept, so it is there when they come back
    assert [e["field"] for e in answer["errors"]] == ["slug"]
    assert SECRET not in read.content.decode() and SECRET not in changed.content.decode()


def test_viewers_read_drafts_but_cannot_start_or_change_them(
    catalog, as_viewer, operator_actor
) -> None:
    from factory.services import drafts

    assert post(as_viewer, "/drafts", {"template_id": "memory"}).status_code == 403
    draft = drafts.create_draft(catalog["memory"], operator_actor)
    path = f"/drafts/{draft.pk}"
    assert as_viewer.get(f"{API}{path}").status_code == 200
    assert send(as_viewer, "patch", path, {"name": "Mine"}).status_code == 403
    assert post(as_viewer, f"{path}/create").status_code == 403
    assert post(as_viewer, f"{path}/cancel").status_code == 403
    assert Draft.objects.get().values["name"] == "" and WorkflowRun.objects.count() == 0


def test_a_draft_is_created_once_and_its_creation_cancelled(
    catalog, as_operator, operator_actor
) -> None:
    from factory.services import drafts

    draft = drafts.create_draft(catalog["blank"], operator_actor)
    path = f"/drafts/{draft.pk}"
    nothing = post(as_operator, f"{path}/cancel")
    assert nothing.status_code == 409 and "no creation running" in nothing.json()["detail"]
    invalid = post(as_operator, f"{path}/create")
    assert invalid.status_code == 400 and invalid.json()["errors"]
    assert WorkflowRun.objects.count() == 0
    send(as_operator, "patch", path, {"name": "Acme Draft", "slug": "acme-draft", "owner": "Acme"})

    response = post(as_operator, f"{path}/create", {"keep_on_failure": False})
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["agent_id"] == "acme-draft" and answer["draft_id"] == str(draft.pk)
    assert answer["workflow_url"] == f"/workflows/{answer['workflow_id']}/"
    again = post(as_operator, f"{path}/create")
    assert again.status_code == 409 and "creating" in again.json()["detail"]
    assert WorkflowRun.objects.count() == 1
    changed = send(as_operator, "patch", path, {"name": "Late"})
    assert changed.status_code == 409

    read = as_operator.get(f"{API}{path}").json()
    assert read["status"] == "creating" and read["run"]["workflow_id"] == answer["workflow_id"]
    assert read["errors"] == []
    cancelled = post(as_operator, f"{path}/cancel")
    assert cancelled.status_code == 202, cancelled.content
    run = WorkflowRun.objects.get()
    assert run.status in ("cancelling", "cancelled")
    assert cancelled.json()["run"]["status"] == run.status


def test_bad_draft_ids_are_answered(catalog, as_operator) -> None:
    bad = as_operator.get(f"{API}/drafts/not-a-uuid")
    assert bad.status_code == 400 and "is not a draft id" in bad.json()["detail"]
    missing = as_operator.get(f"{API}/drafts/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "no such draft" in missing.json()["detail"]
    assert post(as_operator, "/drafts/nope/create").status_code == 400
    assert send(as_operator, "patch", "/drafts/nope", {"name": "x"}).status_code == 400
    assert post(as_operator, "/drafts", {"template_id": "gold"}).status_code == 404
    response = send(as_operator, "patch", f"/drafts/{'0' * 8}-0000-0000-0000-{'0' * 12}", [1])
    assert response.status_code == 422
