"""Maintenance windows through every door: the API (/api/platform/servicing/windows: list with
agent and tier filters, create, change, delete, and when an agent's next opening is),
``manage.py servicing windows|window-add|window-remove|window-next`` and the admin. Each calls
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
    """Windows changed by ``action`` (refusals are audited too, as refused)."""
    return AuditEntry.objects.filter(action=f"servicing.window.{action}", outcome="success").count()


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


# --- manage.py servicing windows | window-add | window-remove | window-next -------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicing", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as error:
        call_command("servicing", *args, stdout=io.StringIO(), stderr=io.StringIO())
    return error.value.returncode, str(error.value)


def test_the_command_adds_lists_and_removes_a_window(fleet) -> None:
    said = run("window-add", "Nightly", "--cron", "0 2 * * *", "--duration", "120",
               "--timezone", "Europe/Paris", "--tier", "platform", "--reason", "quiet then")  # fmt: skip
    window = MaintenanceWindow.objects.get()
    assert said.strip() == (f"Added allow window 'Nightly' (#{window.pk}: 0 2 * * * "
                            "Europe/Paris, 120 min, tier platform).")  # fmt: skip
    assert window.created_by.startswith("command:") and window.reason == "quiet then"
    lines = run("windows").splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "CRON", "ZONE", "MINUTES", "SCOPE",
                                "ENABLED"]  # fmt: skip
    assert "Nightly" in lines[1] and "Europe/Paris" in lines[1] and "tier platform" in lines[1]
    assert run("windows", "list") == run("windows")  # the hint servicing.windows gives
    said = run("window-remove", str(window.pk), "--reason", "gone")
    assert "Removed allow window 'Nightly'" in said
    assert not MaintenanceWindow.objects.exists()
    assert audited("create") == audited("delete") == 1
    assert AuditEntry.objects.get(action="servicing.window.delete").detail["reason"] == "gone"


def test_the_command_adds_a_deny_window_for_an_agent(fleet) -> None:
    run("window-add", "Freeze", "--cron", "0 0 24 12 *", "--duration", "2880", "--kind", "deny",
        "--agent", "wow-cache", "--disabled")  # fmt: skip
    window = MaintenanceWindow.objects.get()
    assert (window.kind, window.agent.slug, window.enabled) == ("deny", "wow-cache", False)


def test_the_command_lists_by_agent_and_tier(scoped) -> None:
    def names(*args: str) -> set[str]:
        return {row["name"] for row in json.loads(run("windows", *args, "--json"))["windows"]}

    assert names("--agent", "wow-cache") == {"Nightly", "Cache", "Freeze"}
    assert names("--tier", "customer") == {"Nightly", "Customers", "Freeze"}


def test_no_windows_says_upgrades_may_run_any_time(fleet) -> None:
    said = run("windows")
    assert "may be upgraded at any time" in said and "window-add" in said


def test_the_commands_json_is_what_the_api_answers(scoped, as_viewer) -> None:
    printed = json.loads(run("windows", "--agent", "wow-cache", "--json"))
    assert printed == as_viewer.get(WINDOWS, {"agent": "wow-cache"}).json()
    at = "2026-12-04T15:00:00+00:00"
    printed = json.loads(run("window-next", "wow-cache", "--at", at, "--json"))
    assert printed == as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache", "at": at}).json()
    added = json.loads(
        run("window-add", "Later", "--cron", "0 5 * * *", "--duration", "10", "--json")
    )
    assert added == as_viewer.get(f"{WINDOWS}/{added['id']}").json()


def test_next_in_the_command(nightly) -> None:
    said = run("window-next", "wow-cache", "--at", "2026-12-04T15:00:00Z")
    assert said.startswith("wow-cache: closed: outside the allow window 'Nightly'")
    assert "next opening 2026-12-05 02:00 CET" in said
    assert run("window-next", "wow-cache", "--at", "2026-12-05T01:30:00Z").startswith(
        "wow-cache: open now: inside the allow window 'Nightly'"
    )
    assert run("window-next", "wow-cache").startswith("wow-cache: ")  # now


def test_next_in_the_command_without_windows(fleet) -> None:
    assert run("window-next", "wow-cache").strip() == "wow-cache: open now: no window applies."


ADD = ("window-add", "W", "--cron", "0 2 * * *", "--duration", "60")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("window-add", "W", "--cron", "0 2 * *", "--duration", "60"), "cron:"),
        (("window-add", "W", "--cron", "61 * * * *", "--duration", "60"), "cron:"),
        (("window-add", "W", "--cron", "0 2 * * *", "--duration", "0"), "duration_minutes:"),
        (("window-add", "W", "--cron", "0 2 * * *", "--duration", str(10**9)),
         "duration_minutes:"),
        (("window-add", "W", "--cron", "0 2 * * *", "--duration", "1.5"), "duration_minutes:"),
        ((*ADD, "--timezone", "Mars/Base"), "timezone:"),
        ((*ADD, "--agent", "nobody"), "agent:"),
        ((*ADD, "--tier", "gold"), "tier:"),
        (("window-add", "bad\x00name", "--cron", "0 2 * * *", "--duration", "60"), "name:"),
        (("window-add", " ", "--cron", "0 2 * * *", "--duration", "60"), "name:"),
        (("windows", "--tier", "gold"), "tier:"),
        (("windows", "--agent", "nobody"), "There is no agent 'nobody'"),
        (("window-next", "nobody"), "There is no agent 'nobody'"),
        (("window-next", "wow-cache", "--at", "soon"), "at:"),
        (("window-next", "wow-cache", "--at", "2026-02-30T02:00:00Z"), "at:"),
        (("window-remove", "999999", "--reason", "x"), "There is no window '999999'"),
        (("window-remove", "abc", "--reason", "x"), "There is no window 'abc'"),
    ],
)  # fmt: skip
def test_bad_input_in_the_command_is_exit_status_2(fleet, args, says) -> None:
    status, message = refused(*args)
    assert status == 2 and message.startswith(says), message
    assert not MaintenanceWindow.objects.exists() and audited("create") == 0


def test_an_agent_and_a_tier_together_are_refused_by_the_parser(fleet) -> None:
    with pytest.raises(CommandError, match="not allowed with argument"):
        run(*ADD, "--agent", "wow-cache", "--tier", "platform")
    with pytest.raises(CommandError, match="invalid choice"):
        run(*ADD, "--kind", "maybe")
    with pytest.raises(CommandError, match="--reason"):  # removing says why
        run("window-remove", "1")
    assert not MaintenanceWindow.objects.exists()


def test_the_command_acts_with_the_users_role(nightly, viewer, operator) -> None:
    status, message = refused(*ADD, "--as", operator.username)
    assert status == 2 and "needs the Admin role" in message
    status, message = refused("window-remove", str(nightly.pk), "--reason", "x",
                              "--as", viewer.username)  # fmt: skip
    assert status == 2 and "needs the Admin role" in message
    assert "Nightly" in run("windows", "--as", viewer.username)  # reading needs any role
    assert run("window-next", "wow-cache", "--as", viewer.username).startswith("wow-cache: ")
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


# --- API: the edges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": None}, "cron"),
        ({"cron": "0 2 * * *\x00"}, "cron"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ["UTC"]}, "timezone"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": -5}, "duration_minutes"),
        ({"duration_minutes": 10**9}, "duration_minutes"),
        ({"duration_minutes": 1.5}, "duration_minutes"),
        ({"duration_minutes": True}, "duration_minutes"),
        ({"duration_minutes": None}, "duration_minutes"),
        ({"name": "\x00"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": {"a": 1}}, "name"),
        ({"reason": "why\x00"}, "reason"),
        ({"kind": "sometimes"}, "kind"),
        ({"tier": "gold"}, "tier"),
        ({"agent": "nobody\x00"}, "agent"),
        ({"agent": 5}, "agent"),
        ({"agent": "wow-cache", "tier": "customer"}, "agent"),
        ({"enabled": 1}, "enabled"),
    ],
)
def test_more_bad_input_is_a_400_naming_the_field(fleet, as_admin, change, field) -> None:
    response = send(as_admin, "post", WINDOWS, {**NIGHTLY, **change})
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not MaintenanceWindow.objects.exists() and audited("create") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 10**9}, "duration_minutes"),
        ({"name": "a\x00b"}, "name"),
        ({"tier": "customer", "agent": "wow-cache"}, "agent"),
        ({"agent": "nobody"}, "agent"),
    ],
)
def test_a_bad_patch_is_a_400_naming_the_field(nightly, as_admin, change, field) -> None:
    response = send(as_admin, "patch", f"{WINDOWS}/{nightly.pk}", change)
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    nightly.refresh_from_db()
    assert (nightly.cron, nightly.duration_minutes, nightly.agent_id) == ("0 2 * * *", 120, None)
    assert audited("update") == 0


def test_a_patch_giving_an_agent_to_a_tier_window_is_refused(scoped, as_admin) -> None:
    customers = scoped["Customers"]
    response = send(as_admin, "patch", f"{WINDOWS}/{customers.pk}", {"agent": "wow-cache"})
    assert response.status_code == 400 and response.json()["detail"].startswith("agent:")
    customers.refresh_from_db()
    assert customers.agent_id is None and customers.tier == "customer"
    # Moving it from the tier to the agent in one change is fine.
    response = send(as_admin, "patch", f"{WINDOWS}/{customers.pk}",
                    {"agent": "wow-cache", "tier": ""})  # fmt: skip
    assert response.status_code == 200 and response.json()["scope"] == "agent"


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "{not json", "null"])
def test_a_body_that_is_no_object_is_refused_and_nothing_is_made(fleet, as_admin, body) -> None:
    response = as_admin.post(WINDOWS, data=body, content_type="application/json")
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.content
    assert not MaintenanceWindow.objects.exists()


def test_every_verb_with_an_unknown_id_is_a_404(fleet, as_admin) -> None:
    for unknown in ("999999", "abc", "0", "-1", "1e3", "9" * 30):
        assert as_admin.get(f"{WINDOWS}/{unknown}").status_code == 404
        assert send(as_admin, "patch", f"{WINDOWS}/{unknown}", {"name": "x"}).status_code == 404
        assert as_admin.delete(f"{WINDOWS}/{unknown}").status_code == 404
    assert audited("update") == audited("delete") == 0


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"agent": "wow-cache"},
        {"tier": "platform"},
        {"agent": "nobody"},
        {"agent": "nobody\x00"},
        {"tier": ""},
        {"tier": "gold"},
        {"agent": "wow-cache", "tier": "platform"},
    ],
)
def test_a_get_without_path_params_never_404s(scoped, as_viewer, query) -> None:
    for path in (WINDOWS, f"{WINDOWS}/next"):
        response = as_viewer.get(path, query)
        assert response.status_code in (200, 400), (path, query, response.content)
        if response.status_code == 400:  # naming the parameter (NULs: the portal's guard)
            assert response.json()["detail"].split(":")[0] in ("agent", "tier")


@pytest.mark.parametrize(
    "at",
    [
        "2026-02-30T02:00:00Z",  # no such day
        "2026-13-01T02:00:00Z",
        "2026-12-05T25:00:00+01:00",
        "tomorrow",
        "",
        "2026-12-05T02:00:00",  # no offset
        "0001-01-01T00:00:00+14:00",  # out of range
        "2026-12-05T02:00:00Z\x00",
    ],
)
def test_next_with_a_bad_at_is_a_400_saying_the_format(fleet, as_viewer, at) -> None:
    response = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache", "at": at})
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("at:"), detail


def test_an_impossible_date_says_the_format(fleet, as_viewer) -> None:
    response = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache", "at": "2026-02-30T02:00Z"})
    assert response.status_code == 400
    assert (
        "ISO 8601" in response.json()["detail"]
        and "2026-12-05T02:00:00+01:00" in (response.json()["detail"])
    )


def test_next_lists_the_windows_that_apply(scoped, as_viewer) -> None:
    body = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache",
                                             "at": "2026-12-04T15:00:00Z"}).json()  # fmt: skip
    # Freeze is disabled; Customers is another tier's.
    assert {row["name"] for row in body["windows"]} == {"Nightly", "Cache"}
    assert {"open", "starts_at", "window", "explanation"} <= set(body)
    assert body["open"] is False and body["starts_at"] == "2026-12-05T01:00:00Z"
    assert body["window"]["name"] == "Nightly"
    quiet = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-event"}).json()
    assert [row["name"] for row in quiet["windows"]] == ["Nightly"]


def test_next_without_windows_lists_none(fleet, as_viewer) -> None:
    body = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache"}).json()
    assert body["windows"] == [] and body["open"] is True and body["starts_at"] is None


def test_a_deny_window_closes_an_agent(fleet, as_admin, as_viewer) -> None:
    body = {"name": "Freeze", "kind": "deny", "cron": "0 0 24 12 *", "duration_minutes": 2880,
            "agent": "wow-cache", "reason": "holidays"}  # fmt: skip
    assert send(as_admin, "post", WINDOWS, body).status_code == 201
    answer = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-cache",
                                               "at": "2026-12-24T12:00:00Z"}).json()  # fmt: skip
    assert answer["open"] is False and answer["window"]["name"] == "Freeze"
    assert answer["starts_at"] == "2026-12-26T00:00:00Z"
    assert answer["explanation"].startswith("inside the deny window 'Freeze'")
    other = as_viewer.get(f"{WINDOWS}/next", {"agent": "wow-event",
                                              "at": "2026-12-24T12:00:00Z"}).json()  # fmt: skip
    assert other["open"] is True


def test_a_bearer_token_changes_windows_with_its_users_role(fleet, admin, viewer, client) -> None:
    from portal import services as portal_services

    admin_token = portal_services.create_api_token(admin, SHELL)[1]
    viewer_token = portal_services.create_api_token(viewer, SHELL)[1]
    as_token = {"HTTP_AUTHORIZATION": f"Bearer {viewer_token}"}
    denied = client.post(WINDOWS, data=json.dumps(NIGHTLY), content_type="application/json",
                         **as_token)  # fmt: skip
    assert denied.status_code == 403
    assert client.get(WINDOWS, **as_token).status_code == 200  # reading needs any role
    made = client.post(WINDOWS, data=json.dumps(NIGHTLY), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {admin_token}")  # fmt: skip
    assert made.status_code == 201 and made.json()["created_by"].startswith("token:")
    assert audited("create") == 1


def test_an_operator_and_a_viewer_read_but_do_not_delete(nightly, as_operator, as_viewer) -> None:
    for client in (as_operator, as_viewer):
        assert client.get(f"{WINDOWS}/{nightly.pk}").status_code == 200
        assert client.get(f"{WINDOWS}/next", {"agent": "wow-cache"}).status_code == 200
        assert client.delete(f"{WINDOWS}/999999").status_code == 403  # before saying it exists
    assert MaintenanceWindow.objects.count() == 1


def test_the_admin_lists_the_columns(scoped, as_admin) -> None:
    response = as_admin.get(f"{ADMIN}/")
    assert response.status_code == 200
    page = response.content.decode()
    for column in ("Name", "Kind", "Cron", "Timezone", "Duration", "Scope", "Enabled"):
        assert column.lower() in page.lower(), column
    assert "tier customer" in page and "agent wow-cache" in page


def test_a_refusal_in_the_admin_is_shown_and_saves_nothing(nightly, as_admin) -> None:
    response = as_admin.post(f"{ADMIN}/{nightly.pk}/change/", admin_form(cron="61 * * * *"))
    assert response.status_code == 200
    assert "cron" in response.context["adminform"].form.errors
    nightly.refresh_from_db()
    assert nightly.cron == "0 2 * * *" and audited("update") == 0
    both = admin_form(tier="customer", agent=str(_agent_pk("wow-cache")))
    response = as_admin.post(f"{ADMIN}/add/", {**both, "name": "Both"})
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert MaintenanceWindow.objects.count() == 1 and audited("create") == 1  # nightly's own


def _agent_pk(slug: str) -> int:
    from agents.models import Agent

    return Agent.objects.get(slug=slug).pk
