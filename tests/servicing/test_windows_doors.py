"""Maintenance windows through every door: the API (/api/platform/servicing/windows: list with
agent and tier filters, create, change, delete, and when an agent's next opening is),
``manage.py servicing windows list|add|remove|next`` and the admin. Each calls
``servicing.windows``: Admin only for changes, any role for reading, bad input a 400 naming the
field (exit status 2 in the command, the field's error in the admin) with nothing changed, and
every change audited."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from portal.actors import Actor
from portal.models import AuditEntry
from servicing import windows
from servicing.models import MaintenanceWindow

pytestmark = pytest.mark.django_db

WINDOWS = "/api/platform/servicing/windows"
ADMIN = "/admin/servicing/maintenancewindow"
SHELL = Actor.command("test")
NIGHTLY = {"name": "Nightly", "cron": "0 2 * * *", "duration_minutes": 120,
           "timezone": "Europe/Paris"}  # fmt: skip


def send(client, method: str, path: str, body: object = None):
    data = json.dumps(body if body is not None else {})
    return getattr(client, method)(path, data=data, content_type="application/json")


def audited(action: str) -> int:
    return AuditEntry.objects.filter(action=f"servicing.window.{action}").count()


@pytest.fixture
def nightly(fleet) -> MaintenanceWindow:
    return windows.create_window(SHELL, **NIGHTLY)


@pytest.fixture
def scoped(nightly, fleet) -> dict[str, MaintenanceWindow]:
    """Nightly (fleet), Customers (tier customer), Cache (agent wow-cache), Freeze (deny)."""
    return {
        "Nightly": nightly,
        "Customers": windows.create_window(SHELL, name="Customers", cron="0 3 * * 6",
                                           duration_minutes=60, tier="customer"),
        "Cache": windows.create_window(SHELL, name="Cache", cron="0 4 * * *",
                                       duration_minutes=30, agent="wow-cache"),
        "Freeze": windows.create_window(SHELL, name="Freeze", kind="deny", cron="0 0 24 12 *",
                                        duration_minutes=2880, enabled=False),
    }  # fmt: skip


# --- API: reading ---------------------------------------------------------------------------


def test_a_viewer_lists_the_windows(scoped, as_viewer) -> None:
    response = as_viewer.get(WINDOWS)
    assert response.status_code == 200, response.content
    rows = {row["name"]: row for row in response.json()["windows"]}
    assert set(rows) == {"Nightly", "Customers", "Cache", "Freeze"}
    assert rows["Nightly"] | {"id": 0, "created_at": ""} == {
        "id": 0, "name": "Nightly", "kind": "allow", "cron": "0 2 * * *",
        "duration_minutes": 120, "timezone": "Europe/Paris", "scope": "fleet", "tier": "",
        "agent": None, "enabled": True, "reason": "", "created_by": "command:" + SHELL.name,
        "created_at": "",
    }  # fmt: skip
    assert (rows["Cache"]["scope"], rows["Cache"]["agent"]) == ("agent", "wow-cache")
    assert (rows["Customers"]["scope"], rows["Customers"]["tier"]) == ("tier", "customer")
    assert rows["Freeze"]["enabled"] is False


def test_the_list_filters_by_agent_and_by_tier(scoped, as_viewer) -> None:
    def names(**query) -> set[str]:
        response = as_viewer.get(WINDOWS, query)
        assert response.status_code == 200, response.content
        return {row["name"] for row in response.json()["windows"]}

    assert names(agent="wow-cache") == {"Nightly", "Cache", "Freeze"}  # platform tier
    assert names(agent="wow-event") == {"Nightly", "Freeze"}
    assert names(tier="customer") == {"Nightly", "Customers", "Freeze"}
    assert names(tier="platform") == {"Nightly", "Freeze"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"agent": "nobody"}, "agent"),
        ({"agent": ""}, "agent"),
        ({"tier": "gold"}, "tier"),
        ({"agent": "wow-cache", "tier": "platform"}, "tier"),
    ],
)
def test_a_filter_naming_nothing_is_a_400_naming_it(scoped, as_viewer, query, field) -> None:
    response = as_viewer.get(WINDOWS, query)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:"), response.json()


def test_an_outsider_reads_nothing(scoped, as_outsider, client) -> None:
    assert as_outsider.get(WINDOWS).status_code == 401
    assert client.get(WINDOWS).status_code == 401
    assert client.get(f"{WINDOWS}/next", {"agent": "wow-cache"}).status_code == 401


def test_one_window_and_an_unknown_one(scoped, as_viewer) -> None:
    cache = scoped["Cache"]
    assert as_viewer.get(f"{WINDOWS}/{cache.pk}").json()["name"] == "Cache"
    for unknown in ("999999", "abc"):
        response = as_viewer.get(f"{WINDOWS}/{unknown}")
        assert response.status_code == 404 and "no window" in response.json()["detail"]


def test_next_says_when_an_agents_window_opens(nightly, as_viewer) -> None:
    response = as_viewer.get(
        f"{WINDOWS}/next", {"agent": "wow-cache", "at": "2026-12-04T15:00:00+00:00"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["agent"] == "wow-cache" and body["open"] is False
    assert body["at"] == "2026-12-04T15:00:00Z"
    assert body["starts_at"] == "2026-12-05T01:00:00Z"  # 02:00 in Paris
    assert body["window"]["name"] == "Nightly"
    assert body["explanation"].startswith("outside the allow window 'Nightly'")
    assert "next opening 2026-12-05 02:00 CET" in body["explanation"]


def test_next_inside_the_window_is_open(nightly, as_viewer) -> None:
    # Written unencoded in a URL, the offset's "+" arrives as a space: still understood.
    response = as_viewer.get(f"{WINDOWS}/next?agent=wow-cache&at=2026-12-05T02:30:00+01:00")
    body = response.json()
    assert response.status_code == 200 and body["open"] is True and body["starts_at"] is None
    assert body["at"] == "2026-12-05T01:30:00Z"


def test_next_without_windows_is_open_now(fleet, as_viewer) -> None:
    body = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache"}).json()
    assert body["open"] is True and body["window"] is None
    assert body["explanation"] == "no window applies"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "agent"),
        ({"agent": "nobody"}, "agent"),
        ({"agent": "wow-cache", "at": "tomorrow"}, "at"),
        ({"agent": "wow-cache", "at": "2026-12-05T02:00:00"}, "at"),  # no offset
    ],
)
def test_next_with_bad_input_is_a_400_never_a_404(fleet, as_viewer, query, field) -> None:
    response = as_viewer.get(f"{WINDOWS}/next", query)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:"), response.json()


# --- API: changing ----------------------------------------------------------------------------


def test_an_admin_creates_a_window(fleet, as_admin) -> None:
    body = {**NIGHTLY, "kind": "deny", "agent": "wow-cache", "reason": "backups run then"}
    response = send(as_admin, "post", WINDOWS, body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["kind"], created["scope"], created["agent"]) == ("deny", "agent", "wow-cache")
    assert created["created_by"] == "user:ada" and created["reason"] == "backups run then"
    window = MaintenanceWindow.objects.get()
    assert window.agent.slug == "wow-cache" and window.timezone == "Europe/Paris"
    entry = AuditEntry.objects.get(action="servicing.window.create")
    assert entry.target == f"window:{window.pk}"


@pytest.mark.parametrize("client_fixture", ["as_operator", "as_viewer"])
def test_only_an_admin_creates_changes_or_deletes(nightly, request, client_fixture) -> None:
    client = request.getfixturevalue(client_fixture)
    creating = send(client, "post", WINDOWS, {**NIGHTLY, "name": "Other"})
    assert creating.status_code == 403 and "Admin" in creating.json()["detail"]
    changing = send(client, "patch", f"{WINDOWS}/{nightly.pk}", {"duration_minutes": 60})
    assert changing.status_code == 403
    # Refused before saying whether a window exists.
    assert send(client, "patch", f"{WINDOWS}/999999", {"name": "x"}).status_code == 403
    assert client.delete(f"{WINDOWS}/{nightly.pk}").status_code == 403
    assert list(MaintenanceWindow.objects.values_list("name", "duration_minutes")) == [
        ("Nightly", 120)
    ]
    assert audited("update") == audited("delete") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "0 25 * * *"}, "cron"),
        ({"cron": 7}, "cron"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"duration_minutes": 10081}, "duration_minutes"),
        ({"duration_minutes": "two hours"}, "duration_minutes"),
        ({"name": "bad\x00name"}, "name"),
        ({"agent": "nobody"}, "agent"),
        ({"agent": "wow-cache", "tier": "platform"}, "agent"),
        ({"enabled": "yes"}, "enabled"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_made(
    fleet, as_admin, change, field
) -> None:
    response = send(as_admin, "post", WINDOWS, {**NIGHTLY, **change})
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not MaintenanceWindow.objects.exists() and audited("create") == 0


def test_a_window_missing_its_cron_is_refused(fleet, as_admin) -> None:
    response = send(as_admin, "post", WINDOWS, {"name": "No cron", "duration_minutes": 60})
    assert response.status_code == 400 and response.json()["detail"].startswith("cron:")


def test_an_admin_changes_only_the_fields_sent(nightly, as_admin) -> None:
    response = send(as_admin, "patch", f"{WINDOWS}/{nightly.pk}",
                    {"duration_minutes": 90, "enabled": False})  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["duration_minutes"], body["enabled"], body["cron"]) == (90, False, "0 2 * * *")
    entry = AuditEntry.objects.get(action="servicing.window.update")
    assert entry.detail["before"]["duration_minutes"] == 120
    assert entry.detail["after"]["duration_minutes"] == 90


def test_a_bad_change_is_a_400_and_changes_nothing(nightly, as_admin) -> None:
    response = send(as_admin, "patch", f"{WINDOWS}/{nightly.pk}",
                    {"duration_minutes": 60, "cron": "every night"})  # fmt: skip
    assert response.status_code == 400 and response.json()["detail"].startswith("cron:")
    nightly.refresh_from_db()
    assert (nightly.duration_minutes, nightly.cron) == (120, "0 2 * * *")
    assert audited("update") == 0


def test_changing_an_unknown_window_is_a_404(fleet, as_admin) -> None:
    response = send(as_admin, "patch", f"{WINDOWS}/999999", {"name": "x"})
    assert response.status_code == 404


def test_an_admin_deletes_a_window_once(nightly, as_admin) -> None:
    response = as_admin.delete(f"{WINDOWS}/{nightly.pk}?reason=not+needed")
    assert response.status_code == 204
    assert not MaintenanceWindow.objects.exists()
    assert AuditEntry.objects.get(action="servicing.window.delete").detail["reason"] == "not needed"
    assert as_admin.delete(f"{WINDOWS}/{nightly.pk}").status_code == 404  # asked again
    assert audited("delete") == 1


def test_the_wrong_method_is_a_405(nightly, as_admin) -> None:
    assert send(as_admin, "put", f"{WINDOWS}/{nightly.pk}", NIGHTLY).status_code == 405
    assert as_admin.delete(WINDOWS).status_code == 405


# --- manage.py servicing windows -------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicing", "windows", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as error:
        call_command("servicing", "windows", *args, stdout=io.StringIO(), stderr=io.StringIO())
    return error.value.returncode, str(error.value)


def test_the_command_adds_lists_and_removes_a_window(fleet) -> None:
    said = run("add", "Nightly", "--cron", "0 2 * * *", "--duration", "120",
               "--timezone", "Europe/Paris", "--tier", "platform", "--reason", "quiet then")  # fmt: skip
    window = MaintenanceWindow.objects.get()
    assert said.strip() == (f"Added allow window 'Nightly' (#{window.pk}: 0 2 * * * "
                            "Europe/Paris, 120 min, tier platform).")  # fmt: skip
    assert window.created_by.startswith("command:") and window.reason == "quiet then"
    lines = run("list").splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "CRON", "ZONE", "MINUTES", "SCOPE",
                                "ENABLED"]  # fmt: skip
    assert "Nightly" in lines[1] and "Europe/Paris" in lines[1] and "tier platform" in lines[1]
    assert "Removed allow window 'Nightly'" in run("remove", str(window.pk), "--reason", "gone")
    assert not MaintenanceWindow.objects.exists()
    assert audited("create") == audited("delete") == 1


def test_the_command_adds_a_deny_window_for_an_agent(fleet) -> None:
    run("add", "Freeze", "--cron", "0 0 24 12 *", "--duration", "2880", "--deny",
        "--agent", "wow-cache", "--disabled")  # fmt: skip
    window = MaintenanceWindow.objects.get()
    assert (window.kind, window.agent.slug, window.enabled) == ("deny", "wow-cache", False)


def test_no_windows_says_upgrades_may_run_any_time(fleet) -> None:
    assert "may be upgraded at any time" in run("list")


def test_the_commands_json_is_what_the_api_answers(scoped, as_viewer) -> None:
    printed = json.loads(run("list", "--agent", "wow-cache", "--json"))
    assert printed == as_viewer.get(WINDOWS, {"agent": "wow-cache"}).json()
    at = "2026-12-04T15:00:00+00:00"
    printed = json.loads(run("next", "--agent", "wow-cache", "--at", at, "--json"))
    assert printed == as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache", "at": at}).json()
    added = json.loads(run("add", "Later", "--cron", "0 5 * * *", "--duration", "10", "--json"))
    assert added == as_viewer.get(f"{WINDOWS}/{added['id']}").json()


def test_next_in_the_command(nightly) -> None:
    said = run("next", "--agent", "wow-cache", "--at", "2026-12-04T15:00:00Z")
    assert said.startswith("wow-cache: closed: outside the allow window 'Nightly'")
    assert "next opening 2026-12-05 02:00 CET" in said
    assert run("next", "--agent", "wow-cache", "--at", "2026-12-05T01:30:00Z").startswith(
        "wow-cache: open now: inside the allow window 'Nightly'"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("add", "W", "--cron", "0 2 * *", "--duration", "60"), "cron:"),
        (("add", "W", "--cron", "0 2 * * *", "--duration", "0"), "duration_minutes:"),
        (("add", "W", "--cron", "0 2 * * *", "--duration", "60", "--timezone", "Paris"),
         "timezone:"),
        (("add", "W", "--cron", "0 2 * * *", "--duration", "60", "--agent", "nobody"), "agent:"),
        (("list", "--tier", "gold"), "tier:"),
        (("list", "--agent", "nobody"), "There is no agent 'nobody'"),
        (("next", "--agent", "nobody"), "There is no agent 'nobody'"),
        (("next", "--agent", "wow-cache", "--at", "soon"), "at:"),
        (("remove", "999999"), "There is no window '999999'"),
    ],
)  # fmt: skip
def test_bad_input_in_the_command_is_exit_status_2(fleet, args, says) -> None:
    status, message = refused(*args)
    assert status == 2 and message.startswith(says), message
    assert not MaintenanceWindow.objects.exists()


def test_the_command_acts_with_the_users_role(nightly, viewer, operator) -> None:
    status, message = refused("add", "W", "--cron", "0 2 * * *", "--duration", "60",
                              "--as", operator.username)  # fmt: skip
    assert status == 2 and "needs the Admin role" in message
    status, message = refused("remove", str(nightly.pk), "--as", viewer.username)
    assert status == 2 and "needs the Admin role" in message
    assert "Nightly" in run("list", "--as", viewer.username)  # reading needs any role
    assert MaintenanceWindow.objects.count() == 1 and audited("delete") == 0


# --- the admin ---------------------------------------------------------------------------------


def admin_form(**changes) -> dict:
    return {"name": "Nightly", "kind": "allow", "cron": "0 2 * * *", "duration_minutes": "120",
            "timezone": "Europe/Paris", "tier": "", "agent": "", "enabled": "on", "reason": "",
            **changes}  # fmt: skip


def test_the_admin_creates_a_window_through_the_service(fleet, as_admin) -> None:
    response = as_admin.post(f"{ADMIN}/add/", admin_form(agent=str(fleet["wow-cache"].pk)))
    assert response.status_code == 302, response.content.decode()[:3000]
    window = MaintenanceWindow.objects.get()
    assert (window.created_by, window.agent.slug) == ("user:ada", "wow-cache")
    assert audited("create") == 1


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"cron": "0 2 * *"}, "cron", "is not five fields"),
        ({"duration_minutes": "0"}, "duration_minutes", "must be a whole number"),
        ({"timezone": "Mars/Olympus"}, "timezone", "is not a time zone"),
    ],
)
def test_a_refused_window_is_the_fields_error_in_the_admin(
    fleet, as_admin, changes, field, says
) -> None:
    response = as_admin.post(f"{ADMIN}/add/", admin_form(**changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and says in errors[field][0], errors
    assert not MaintenanceWindow.objects.exists() and audited("create") == 0


def test_the_admin_changes_and_deletes_through_the_service(nightly, as_admin) -> None:
    assert as_admin.get(f"{ADMIN}/").status_code == 200
    response = as_admin.post(f"{ADMIN}/{nightly.pk}/change/", admin_form(duration_minutes="60"))
    assert response.status_code == 302, response.content.decode()[:3000]
    nightly.refresh_from_db()
    assert nightly.duration_minutes == 60 and audited("update") == 1
    entry = AuditEntry.objects.get(action="servicing.window.update")
    assert entry.detail["before"]["duration_minutes"] == 120 and entry.actor == "user:ada"
    assert as_admin.post(f"{ADMIN}/{nightly.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not MaintenanceWindow.objects.exists() and audited("delete") == 1


def test_the_admin_deletes_selected_windows_through_the_service(scoped, as_admin) -> None:
    selected = [scoped["Cache"].pk, scoped["Freeze"].pk]
    response = as_admin.post(f"{ADMIN}/", {"action": "delete_selected",
                                           "_selected_action": selected, "post": "yes"})  # fmt: skip
    assert response.status_code == 302
    assert set(MaintenanceWindow.objects.values_list("name", flat=True)) == {"Nightly",
                                                                             "Customers"}  # fmt: skip
    assert audited("delete") == 2


@pytest.mark.parametrize("client_fixture", ["as_operator", "as_viewer", "as_outsider"])
def test_only_admins_get_into_the_windows_admin(nightly, request, client_fixture) -> None:
    client = request.getfixturevalue(client_fixture)
    response = client.get(f"{ADMIN}/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.post(f"{ADMIN}/{nightly.pk}/change/", admin_form(duration_minutes="60"))
    nightly.refresh_from_db()
    assert nightly.duration_minutes == 120 and audited("update") == 0
