"""The agents in the Django admin: the registry, lifecycle actions through the services, the
read-only history and operations, and audited edits. Only Admins get in."""

from __future__ import annotations

import pytest

from agents import services
from agents.models import Agent, AgentTransition, Operation, State
from portal.models import AuditEntry

CHANGELIST = "/admin/agents/agent/"


def change_form_data(response) -> dict:
    """What the browser would post back from an admin change page, untouched."""
    data = {}
    form = response.context["adminform"].form
    for name, field in form.fields.items():
        value = form[name].value()
        if value is not None:
            data[name] = value
        if field.show_hidden_initial:  # fields with a callable default, e.g. JSON lists
            data[form.add_initial_prefix(name)] = value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for inline_form in formset.forms:
            for name in inline_form.fields:
                value = inline_form[name].value()
                if value is not None:
                    data[inline_form.add_prefix(name)] = value
    return data


def run_admin_action(client, action: str, *agents: Agent):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [agent.pk for agent in agents]},
        follow=True,
    )


def test_admin_lists_the_agents_and_offers_the_lifecycle_actions(seeded, as_admin) -> None:
    response = as_admin.get(CHANGELIST)
    content = response.content.decode()
    assert response.status_code == 200
    assert "14 agents" in content
    for name in ("WowVision Prime", "WowCache", "WowMemory"):
        assert name in content
    for label in ("Provision", "Deploy", "Start", "Stop", "Suspend", "Resume", "Restart", "Revoke"):
        assert f">{label} selected agents</option>" in content
    # Agents are revoked, never deleted: their history stays.
    assert "delete_selected" not in content
    assert (
        as_admin.get(CHANGELIST, {"state__exact": "RUNNING"}).content.decode().count("field-slug")
        == 0
    )
    assert "1 agent" in as_admin.get(CHANGELIST, {"q": "vision"}).content.decode()


def test_admin_views_an_agent_with_its_history_inline(seeded, as_admin, act) -> None:
    cache = seeded["wow-cache"]
    act(cache, "provision")
    response = as_admin.get(f"{CHANGELIST}{cache.pk}/change/")
    content = response.content.decode()
    assert response.status_code == 200
    assert 'value="wow-cache"' in content
    assert "PROVISIONED" in content and "Agent transitions" in content
    # The state is shown, not editable: it changes only through transitions.
    assert 'name="state"' not in content


def test_admin_action_requests_through_the_services_and_the_worker_completes_it(
    seeded, as_admin
) -> None:
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    response = run_admin_action(as_admin, "provision_agents", cache, event)
    assert response.status_code == 200
    assert "Provision requested for 2 agent(s)." in response.content.decode()
    operations = Operation.objects.order_by("agent__slug")
    assert [(op.agent.slug, op.action, op.status, op.actor, op.reason) for op in operations] == [
        ("wow-cache", "provision", "pending", "user:ada", "admin action"),
        ("wow-event", "provision", "pending", "user:ada", "admin action"),
    ]
    assert set(Agent.objects.exclude(pending_action="").values_list("slug", flat=True)) == {
        "wow-cache",
        "wow-event",
    }
    assert AuditEntry.objects.filter(action="agent.provision", actor="user:ada").count() == 2

    for operation in operations:
        assert services.run_operation(str(operation.pk)).status == Operation.Status.SUCCEEDED
    cache.refresh_from_db()
    assert cache.state == State.PROVISIONED and cache.pending_action == ""
    row = cache.transitions.get()
    assert (row.action, row.from_state, row.to_state, row.actor, row.reason) == (
        "provision", "DRAFT", "PROVISIONED", "user:ada", "admin action",
    )  # fmt: skip


def test_admin_action_reports_refusals_and_changes_nothing_for_them(seeded, as_admin, act) -> None:
    cache, memory = seeded["wow-cache"], seeded["wow-memory"]
    act(cache, "provision")
    response = run_admin_action(as_admin, "deploy_agents", cache, memory)
    content = response.content.decode()
    assert "Deploy requested for 1 agent(s)." in content
    assert "WowMemory is DRAFT; provision it first." in content
    assert list(
        Operation.objects.filter(action="deploy").values_list("agent__slug", flat=True)
    ) == ["wow-cache"]
    memory.refresh_from_db()
    assert memory.state == State.DRAFT and memory.pending_action == ""


def test_admin_action_takes_dependencies_in_order(seeded, as_admin) -> None:
    run_admin_action(
        as_admin, "provision_agents", seeded["wow-memory"], seeded["wow-cache"], seeded["wow-event"]
    )
    requested = list(
        Operation.objects.order_by("requested_at").values_list("agent__slug", flat=True)
    )
    assert requested.index("wow-memory") > requested.index("wow-cache")
    assert requested.index("wow-memory") > requested.index("wow-event")


@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_outsider"])
def test_only_admins_reach_the_agents_admin(request, seeded, role_client) -> None:
    client = request.getfixturevalue(role_client)
    cache = seeded["wow-cache"]
    for path in (
        CHANGELIST,
        f"{CHANGELIST}{cache.pk}/change/",
        "/admin/agents/agenttransition/",
        "/admin/agents/operation/",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/"), path
    refused = client.post(
        CHANGELIST, {"action": "provision_agents", "_selected_action": [cache.pk]}
    )
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    assert not Operation.objects.exists()
    assert Agent.objects.get(slug="wow-cache").pending_action == ""


@pytest.mark.parametrize("model", ["agenttransition", "operation"])
def test_history_and_operations_are_read_only_in_the_admin(seeded, as_admin, act, model) -> None:
    act(seeded["wow-cache"], "provision")
    row = AgentTransition.objects.get() if model == "agenttransition" else Operation.objects.get()
    base = f"/admin/agents/{model}/"
    listing = as_admin.get(base)
    assert listing.status_code == 200
    assert "WowCache" in listing.content.decode()
    assert as_admin.get(f"{base}add/").status_code == 403
    assert as_admin.post(f"{base}add/", {}).status_code == 403
    assert as_admin.get(f"{base}{row.pk}/delete/").status_code == 403
    assert as_admin.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    view = as_admin.get(f"{base}{row.pk}/change/")
    assert view.status_code == 200
    assert (
        'type="submit"'
        not in view.content.decode().split('id="content-main"')[1].split("</form>")[0]
    )
    assert as_admin.post(f"{base}{row.pk}/change/", {"reason": "rewritten"}).status_code == 403
    assert "delete_selected" not in listing.content.decode()
    assert type(row).objects.count() == 1
    if model == "agenttransition":
        assert AgentTransition.objects.get().reason == ""


def test_agents_cannot_be_deleted_in_the_admin(seeded, as_admin) -> None:
    cache = seeded["wow-cache"]
    assert as_admin.get(f"{CHANGELIST}{cache.pk}/delete/").status_code == 403
    assert as_admin.post(f"{CHANGELIST}{cache.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Agent.objects.filter(slug="wow-cache").exists()


def test_editing_an_agent_in_the_admin_is_audited(seeded, as_admin, act) -> None:
    cache = seeded["wow-cache"]
    act(cache, "provision")  # an agent with history, so the inline is posted back too
    page = as_admin.get(f"{CHANGELIST}{cache.pk}/change/")
    data = change_form_data(page)
    data.update(version="1.1.0", memory_mb=768, state="RUNNING")
    response = as_admin.post(f"{CHANGELIST}{cache.pk}/change/", data)
    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else ""
    )
    cache.refresh_from_db()
    assert (cache.version, cache.memory_mb) == ("1.1.0", 768)
    assert cache.state == State.PROVISIONED  # a posted state is ignored
    assert cache.transitions.count() == 1
    entry = AuditEntry.objects.get(action="agent.edit")
    assert (entry.actor, entry.target, entry.outcome) == (
        "user:ada",
        "wow-cache",
        AuditEntry.Outcome.SUCCESS,
    )
    assert entry.detail["changes"] == {"version": "1.1.0", "memory_mb": 768}


def test_editing_dependencies_in_the_admin_audits_the_new_ones(seeded, as_admin) -> None:
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    data = change_form_data(as_admin.get(f"{CHANGELIST}{cache.pk}/change/"))
    data["dependencies"] = [event.pk]
    response = as_admin.post(f"{CHANGELIST}{cache.pk}/change/", data)
    assert response.status_code == 302
    assert [dep.slug for dep in cache.dependencies.all()] == ["wow-event"]
    entry = AuditEntry.objects.get(action="agent.edit")
    assert entry.detail["changes"] == {"dependencies": ["WowEvent"]}


def test_a_dependency_cycle_is_refused_in_the_admin(seeded, as_admin) -> None:
    cache, memory = seeded["wow-cache"], seeded["wow-memory"]  # WowMemory depends on WowCache
    data = change_form_data(as_admin.get(f"{CHANGELIST}{cache.pk}/change/"))
    data["dependencies"] = [memory.pk]
    response = as_admin.post(f"{CHANGELIST}{cache.pk}/change/", data)
    assert response.status_code == 200
    assert "WowMemory already depends on WowCache" in response.content.decode()
    assert not cache.dependencies.exists()
    assert not AuditEntry.objects.filter(action="agent.edit").exists()


def test_a_slug_that_is_a_page_address_is_refused(seeded, as_admin) -> None:
    cache = seeded["wow-cache"]
    data = change_form_data(as_admin.get(f"{CHANGELIST}{cache.pk}/change/"))
    data["slug"] = "bulk"
    response = as_admin.post(f"{CHANGELIST}{cache.pk}/change/", data)
    assert response.status_code == 200
    assert "the address of a portal page under /agents/" in response.content.decode()
    cache.refresh_from_db()
    assert cache.slug == "wow-cache"


def test_an_agent_cannot_depend_on_itself(seeded, as_admin) -> None:
    cache = seeded["wow-cache"]
    data = change_form_data(as_admin.get(f"{CHANGELIST}{cache.pk}/change/"))
    data["dependencies"] = [cache.pk]
    response = as_admin.post(f"{CHANGELIST}{cache.pk}/change/", data)
    assert response.status_code == 200
    assert "WowCache cannot depend on itself." in response.content.decode()
    assert not cache.dependencies.exists()


def test_admin_registers_a_new_agent_in_draft_with_dependencies(seeded, as_admin) -> None:
    data = change_form_data(as_admin.get(f"{CHANGELIST}add/"))
    data.update(
        slug="acme-helper",
        name="Acme Helper",
        tier="customer",
        dependencies=[seeded["wow-event"].pk],
    )
    response = as_admin.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 302
    helper = Agent.objects.get(slug="acme-helper")
    assert helper.state == State.DRAFT
    assert [dep.slug for dep in helper.dependencies.all()] == ["wow-event"]
    entry = AuditEntry.objects.get(action="agent.edit", target="acme-helper")
    assert entry.detail["changes"]["dependencies"] == ["WowEvent"]
