"""Releases in the Django admin: listed, published through the service (a refusal is the form's
error), marked bad, pinned and unpinned by actions that ask for a reason (audited), never
edited nor deleted. Only Admins get in."""

from __future__ import annotations

import pytest

from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release

pytestmark = pytest.mark.django_db

ADMIN = "/admin/servicing/release"
SHELL = Actor.command("test")


@pytest.fixture
def release(fleet) -> Release:
    return services.publish(SHELL, "1.2.0", "waooaw/agentd:1.2.0", changelog="Canary me.")


def test_releases_are_listed_without_delete(release, as_admin) -> None:
    response = as_admin.get(f"{ADMIN}/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "1.2.0" in content and "waooaw/agentd:1.2.0" in content and "fleet" in content
    assert "delete_selected" not in content
    for action in ("mark_bad", "pin", "unpin"):
        assert f'value="{action}"' in content
    assert as_admin.get(f"{ADMIN}/{release.pk}/change/").status_code == 200  # shown, read-only
    deleting = as_admin.post(f"{ADMIN}/{release.pk}/delete/", {"post": "yes"})
    assert deleting.status_code == 403 and Release.objects.count() == 1


@pytest.mark.parametrize("client_fixture", ["as_operator", "as_viewer", "as_outsider"])
def test_only_admins_get_in(release, request, client_fixture) -> None:
    client = request.getfixturevalue(client_fixture)
    response = client.get(f"{ADMIN}/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    pinning = client.post(f"{ADMIN}/", {"action": "pin", "_selected_action": [release.pk],
                                        "apply": "yes", "reason": "x"})  # fmt: skip
    assert pinning.status_code == 302
    release.refresh_from_db()
    assert not release.pinned


def test_a_release_is_published_through_the_service(fleet, as_admin) -> None:
    data = {"version": "1.1.0", "artifact": "waooaw/agentd:1.1.0", "changelog": "Faster.",
            "config_changes": '{"task_block_ms": 500}', "agent": "", "template": ""}  # fmt: skip
    response = as_admin.post(f"{ADMIN}/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    release = Release.objects.get()
    assert (release.version, release.published_by) == ("1.1.0", "user:ada")
    assert release.config_changes == {"task_block_ms": 500}
    assert AuditEntry.objects.filter(action="servicing.release.publish").count() == 1


def test_a_refused_release_is_the_forms_error(fleet, as_admin) -> None:
    data = {"version": "1.1.0", "artifact": "local", "changelog": "",
            "config_changes": '{"task_block_ms": "fast"}', "agent": "", "template": ""}  # fmt: skip
    response = as_admin.post(f"{ADMIN}/add/", data)
    assert response.status_code == 200
    assert "Not published: config_changes: task_block_ms" in response.content.decode()
    assert not Release.objects.exists()


def test_pin_asks_for_a_reason_then_pins_through_the_service(release, as_admin) -> None:
    asking = as_admin.post(f"{ADMIN}/", {"action": "pin", "_selected_action": [release.pk]})
    assert asking.status_code == 200
    content = asking.content.decode()
    assert 'name="reason"' in content and "Pin 1 release(s)" in content
    release.refresh_from_db()
    assert not release.pinned
    done = as_admin.post(
        f"{ADMIN}/",
        {"action": "pin", "_selected_action": [release.pk], "apply": "yes", "reason": "hold"},
        follow=True,
    )
    assert "1 release(s) pinned." in done.content.decode()
    release.refresh_from_db()
    assert (release.pinned, release.pinned_reason, release.pinned_by) == (True, "hold", "user:ada")
    assert AuditEntry.objects.get(action="servicing.release.pin").detail["reason"] == "hold"


def test_mark_bad_and_unpin_actions(release, as_admin) -> None:
    def act(action: str, reason: str):
        return as_admin.post(
            f"{ADMIN}/",
            {"action": action, "_selected_action": [release.pk], "apply": "yes", "reason": reason},
            follow=True,
        ).content.decode()

    assert "1 release(s) marked bad." in act("mark_bad", "error rate 9 %")
    release.refresh_from_db()
    assert release.bad and release.pinned
    assert "1 release(s) unpinned." in act("unpin", "false alarm")
    release.refresh_from_db()
    assert release.bad and not release.pinned
    # Refused by the service: said, nothing changed.
    assert "1.2.0 is not pinned." in act("unpin", "again")
    assert "Reason is required." in act("pin", "")  # the admin capitalises its messages
    release.refresh_from_db()
    assert not release.pinned
