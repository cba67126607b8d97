"""The factory in the Django admin: templates listed, shown as indented JSON, each saved change a
new version (the old row unchanged, drafts keep it) and bad data a form error; the price table
changed through the service, audited; drafts and sandbox runs read-only without their secrets.
Only Admins get in."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from factory.admin import JSON_FIELDS
from factory.models import Draft, PriceTable, SandboxRun, Template
from factory.services import drafts, pricing, templates
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/factory"
SECRET = "s3cret-in-the-admin"


def template_data(template: Template, **changes) -> dict[str, str]:
    """The change form's fields as a browser posts them, with ``changes``."""
    data = {}
    for name in templates.EDITABLE:
        value = changes.get(name, getattr(template, name))
        if name in JSON_FIELDS:
            data[name] = value if isinstance(value, str) else json.dumps(value)
        elif name == "active":
            if value:
                data[name] = "on"
        else:
            data[name] = value
    return data


def test_templates_are_listed_without_add_or_delete(catalog, as_admin) -> None:
    response = as_admin.get(f"{ADMIN}/template/")
    assert response.status_code == 200
    content = response.content.decode()
    for text in ("memory", "Orchestration", "Storage", "high", "6 templates"):
        assert text in content
    assert "Add template" not in content and "delete_selected" not in content
    memory = catalog["memory"]
    assert as_admin.get(f"{ADMIN}/template/add/").status_code == 403
    deleting = as_admin.post(f"{ADMIN}/template/{memory.pk}/delete/", {"post": "yes"})
    assert deleting.status_code == 403 and Template.objects.count() == 6


def test_a_template_is_shown_as_indented_json(catalog, as_admin) -> None:
    content = as_admin.get(f"{ADMIN}/template/{catalog['memory'].pk}/change/").content.decode()
    assert "\n  &quot;max_keys&quot;: 10000,\n" in content  # one key a line, indented
    assert "&quot;name&quot;: &quot;puts a long-term key&quot;" in content


def test_saving_a_change_makes_a_new_version_and_keeps_the_old_one(
    catalog, as_admin, operator_actor
) -> None:
    memory = catalog["memory"]
    draft = drafts.create_draft(memory, operator_actor)
    settings = {**memory.settings, "max_keys": 500}
    url = f"{ADMIN}/template/{memory.pk}/change/"
    response = as_admin.post(url, template_data(memory, name="Memory Plus", settings=settings),
                             follow=True)  # fmt: skip
    assert response.redirect_chain[-1][0] == f"{ADMIN}/template/"
    assert (
        "Saved Memory Plus as version 2 (memory@2) from version 1; version 1 is unchanged"
        in response.content.decode()
    )
    old, new = Template.objects.filter(key="memory").order_by("version")
    assert (old.pk, old.name, old.settings["max_keys"]) == (memory.pk, "Memory", 10000)
    assert (new.version, new.name, new.settings["max_keys"]) == (2, "Memory Plus", 500)
    assert new.created_by == "user:ada" and new.config_schema == memory.config_schema
    assert Draft.objects.get(pk=draft.pk).template_id == memory.pk
    assert templates.get_template("memory").pk == new.pk
    audit = AuditEntry.objects.get(action="factory.template.save")
    assert audit.target == "template:memory@2"

    again = as_admin.post(f"{ADMIN}/template/{new.pk}/change/",
                          {**template_data(new, category="Memory"), "_continue": "1"})  # fmt: skip
    third = Template.objects.get(key="memory", version=3)
    assert again["Location"] == f"{ADMIN}/template/{third.pk}/change/"
    assert third.category == "Memory" and Template.objects.get(pk=new.pk).category == "Storage"


def test_saving_without_a_change_makes_no_version(catalog, as_admin) -> None:
    blank = catalog["blank"]
    response = as_admin.post(
        f"{ADMIN}/template/{blank.pk}/change/", template_data(blank), follow=True
    )
    assert "Nothing changed: Blank v1 is kept as it was." in response.content.decode()
    assert Template.objects.filter(key="blank").count() == 1


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"settings": {"default_ttl_seconds": 300, "max_keys": 0, "max_value_bytes": 65536}},
         "the default settings break the schema: 0 is less than the minimum of 1"),
        ({"handler": "cobol"}, "handler must be one of blank, memory"),
        ({"test_tasks": []}, "test_tasks needs at least one test"),
        ({"config_schema": {"type": "nonsense"}}, "config_schema is not a valid JSON Schema"),
        ({"resources": "{oops"}, "Enter a valid JSON."),
    ],
)  # fmt: skip
def test_bad_template_data_is_a_form_error_and_saves_nothing(
    catalog, as_admin, changes, says
) -> None:
    memory = catalog["memory"]
    response = as_admin.post(f"{ADMIN}/template/{memory.pk}/change/",
                             template_data(memory, **changes))  # fmt: skip
    assert response.status_code == 200  # the form again, with the error
    assert says in response.content.decode()
    assert Template.objects.filter(key="memory").count() == 1
    assert not AuditEntry.objects.filter(action="factory.template.save").exists()


def test_prices_are_changed_through_the_service_and_audited(db, as_admin) -> None:
    table = pricing.prices()
    url = f"{ADMIN}/pricetable/{table.pk}/change/"
    data = {name: str(getattr(table, name)) for name in pricing.PRICE_FIELDS}
    assert as_admin.get(f"{ADMIN}/pricetable/").status_code == 200
    response = as_admin.post(url, {**data, "vcpu_hour": "0.02"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert PriceTable.objects.get().vcpu_hour == Decimal("0.02")
    audit = AuditEntry.objects.get(action="factory.prices")
    assert audit.actor == "user:ada"

    refused = as_admin.post(url, {**data, "vcpu_hour": "-1"})
    assert refused.status_code == 200
    assert "vcpu_hour must be an amount from 0 to 999999" in refused.content.decode()
    assert PriceTable.objects.get().vcpu_hour == Decimal("0.02")
    assert as_admin.get(f"{ADMIN}/pricetable/add/").status_code == 403
    assert (
        as_admin.post(f"{ADMIN}/pricetable/{table.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert PriceTable.objects.count() == 1


def test_drafts_and_sandbox_runs_are_read_only_and_never_show_secrets(
    catalog, as_admin, operator_actor
) -> None:
    draft = drafts.create_draft(catalog["blank"], operator_actor)
    drafts.set_fields(draft, {"name": "Acme Echo", "secrets": f"API_KEY={SECRET}"}, operator_actor)
    run = SandboxRun.objects.create(
        **SandboxRun.stamp(operator_actor), draft=draft, template=catalog["blank"],
        name="sbx-9-blank", secrets={"API_KEY": SECRET},
        config={"agent": {"template": "blank"}, "secret_names": ["API_KEY"],
                "secrets_digest": "d1g3st-of-the-secrets"},
    )  # fmt: skip
    pages = {
        "draft list": as_admin.get(f"{ADMIN}/draft/"),
        "draft": as_admin.get(f"{ADMIN}/draft/{draft.pk}/change/"),
        "sandbox list": as_admin.get(f"{ADMIN}/sandboxrun/"),
        "sandbox": as_admin.get(f"{ADMIN}/sandboxrun/{run.pk}/change/"),
    }
    for what, page in pages.items():
        content = page.content.decode()
        assert page.status_code == 200, what
        assert SECRET not in content and "d1g3st" not in content, what
    assert "Acme Echo" in pages["draft list"].content.decode()
    assert "API_KEY" in pages["draft"].content.decode()
    assert "sbx-9-blank" in pages["sandbox list"].content.decode()
    assert 'name="_save"' not in pages["draft"].content.decode()
    assert as_admin.post(f"{ADMIN}/draft/{draft.pk}/change/", {"step": 5}).status_code == 403
    assert as_admin.get(f"{ADMIN}/sandboxrun/add/").status_code == 403
    assert as_admin.post(f"{ADMIN}/sandboxrun/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Draft.objects.get().step == 2 and SandboxRun.objects.count() == 1


@pytest.mark.parametrize("client_name", ["as_operator", "as_viewer", "as_outsider"])
def test_only_admins_get_in(request, catalog, client_name) -> None:
    client = request.getfixturevalue(client_name)
    for model in ("template", "pricetable", "draft", "sandboxrun"):
        assert client.get(f"{ADMIN}/{model}/").status_code == 302  # to the admin's sign-in
    memory = catalog["memory"]
    client.post(f"{ADMIN}/template/{memory.pk}/change/", template_data(memory, name="Mine"))
    assert Template.objects.filter(key="memory").count() == 1
