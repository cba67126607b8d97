"""The wizard's pages through the test client: every step, validation as the user types, the
sandbox gate, creation and its live region."""

from __future__ import annotations

import html

from django.urls import reverse

from factory.models import Draft, SandboxRun
from factory.services import sandbox

from .conftest import drive


def text(response) -> str:
    return html.unescape(response.content.decode())


def start_draft(client, key="memory") -> Draft:
    response = client.post(reverse("factory:new-draft"), {"template": key})
    assert response.status_code == 302, text(response)
    draft = Draft.objects.get()
    assert response["Location"] == reverse("factory:step", args=[draft.pk, "configure"])
    return draft


def test_the_index_shows_the_six_templates_with_their_cost(catalog, as_viewer) -> None:
    page = text(as_viewer.get(reverse("factory:index")))
    for name in ("Memory", "Orchestration", "API", "Data", "Monitoring", "Blank"):
        assert f"<h3>{name}</h3>" in page
    assert "/month" in page and "Creating agents needs the Operator role." in page


def test_a_field_is_checked_as_typed_and_saved_with_the_draft(catalog, as_operator) -> None:
    draft = start_draft(as_operator)
    url = reverse("factory:field", args=[draft.pk])
    answer = text(as_operator.post(url, {"slug": "wow-cache", "_step": "configure"},
                                   headers={"HX-Request": "true", "HX-Trigger-Name": "slug"}))  # fmt: skip
    assert (
        'id="err-slug" aria-live="polite" hx-swap-oob="true"><span>wow-cache is taken by WowCache'
        in answer
    )
    answer = text(as_operator.post(url, {"slug": "acme-memory", "dependencies": "acme-memory", "_step": "configure"},
                                   headers={"HX-Request": "true", "HX-Trigger-Name": "dependencies"}))  # fmt: skip
    assert "acme-memory cannot depend on itself: that is a cycle." in answer
    assert 'id="err-slug" aria-live="polite" hx-swap-oob="true"></p>' in answer
    assert "Give the agent a name" not in answer  # not touched yet
    draft.refresh_from_db()
    assert draft.values["slug"] == "acme-memory"
    answer = text(as_operator.post(url, {"settings.max_keys": "0", "_step": "configure"},
                                   headers={"HX-Request": "true", "HX-Trigger-Name": "settings.max_keys"}))  # fmt: skip
    assert "Most keys: 0 is less than the minimum of 1" in answer
    # A client that names no field is answered about the ones it sent, stored or not.
    answer = text(as_operator.post(url, {"slug": "x" * 70, "_step": "configure"}))
    assert 'id="err-slug" aria-live="polite" hx-swap-oob="true"><span>Use 1 to 63' in answer
    answer = text(as_operator.post(url, {"owner": "x" * 10_000, "_step": "configure"}))
    assert (
        'id="err-owner" aria-live="polite" hx-swap-oob="true"><span>Owner is 10000 characters'
        in answer
    )


def test_the_wizard_goes_from_configure_to_a_created_agent(catalog, as_operator) -> None:
    draft = start_draft(as_operator, "blank")
    step = lambda name: reverse("factory:step", args=[draft.pk, name])  # noqa: E731
    refused = as_operator.post(step("configure"), {"name": "", "slug": "x y"})
    assert refused.status_code == 400 and "Give the agent a name" in text(refused)
    assert as_operator.get(step("review")).status_code == 302  # not reached yet
    ok = as_operator.post(
        step("configure"),
        {"name": "Acme Echo", "slug": "acme-echo", "tier": "customer", "owner": "Acme"},
    )
    assert ok["Location"] == step("resources")
    page = text(as_operator.get(step("resources")))
    assert 'type="range"' in page and "left in the fleet" in page and "a month" in page
    assert "millicores of 16,000 left in the fleet" in page, page
    assert as_operator.post(step("resources"), {"resources.cpu_millicores": "100", "resources.memory_mb": "128",
                            "resources.storage_mb": "0", "resources.replicas": "1", "tasks_per_month": "1000"})["Location"] == step("sandbox")  # fmt: skip
    assert as_operator.post(step("sandbox")).status_code == 409  # no sandbox yet
    as_operator.post(reverse("factory:run-sandbox", args=[draft.pk]))
    run = SandboxRun.objects.get(draft=draft)
    sandbox.run_sandbox(run.pk)
    region = text(as_operator.get(reverse("factory:sandbox-region", args=[draft.pk])))
    assert 'data-sandbox-status="passed"' in region and "✓ pass" in region
    assert as_operator.post(step("sandbox"))["Location"] == step("review")
    review = text(as_operator.get(step("review")))
    assert "agents:acme-echo:tasks" in review and "Acme Echo: error rate" in review
    response = as_operator.post(reverse("factory:create", args=[draft.pk]))
    assert response["Location"] == step("create")
    assert as_operator.get(step("create")).status_code == 200
    draft.refresh_from_db()
    drive(draft.run)
    monitor = text(as_operator.get(reverse("factory:monitor", args=[draft.pk])))
    assert 'data-run-status="succeeded"' in monitor and "answered its first task" in monitor
    assert as_operator.get(step("configure"))["Location"] == step("create")


def test_a_viewer_can_look_but_not_create(catalog, as_viewer, as_operator) -> None:
    draft = start_draft(as_operator)
    assert as_viewer.post(reverse("factory:new-draft"), {"template": "memory"}).status_code == 403
    assert as_viewer.get(reverse("factory:step", args=[draft.pk, "configure"])).status_code == 200
    assert (
        as_viewer.post(reverse("factory:field", args=[draft.pk]), {"name": "x"}).status_code == 403
    )
    assert as_viewer.get("/factory/drafts/not-a-uuid/").status_code == 404
    gone = as_viewer.get(
        reverse("factory:draft", args=["00000000-0000-0000-0000-000000000000"]), follow=True
    )
    assert "There is no such draft; it may have expired." in text(gone)
