"""``manage.py servicing``: releases (all, or an agent's; a table or --json as the API answers),
publish, bad, pin and unpin, by id or version, as the shell's Admin or ``--as`` a user with
their role; refusals and bad input end with exit status 2 and change nothing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release

pytestmark = pytest.mark.django_db

SHELL = Actor.command("test")


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicing", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as error:
        call_command("servicing", *args, stdout=io.StringIO(), stderr=io.StringIO())
    return error.value.returncode, str(error.value)


def test_releases_as_a_table(fleet) -> None:
    services.register_first_release(SHELL)
    release = services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0")
    services.mark_bad(SHELL, release, "broken")
    lines = run("releases").splitlines()
    assert lines[0].split() == ["ID", "VERSION", "SCOPE", "ARTIFACT", "PUBLISHED", "BY", "STATE"]
    assert "1.1.0" in lines[1] and "bad, pinned: marked bad: broken" in lines[1]
    assert "1.0.0" in lines[2] and "waooaw/agentd:1.0.0" in lines[2]


def test_no_releases_says_how_to_add_one(fleet) -> None:
    assert "servicing publish" in run("releases")


def test_releases_as_json_are_what_the_api_answers(fleet, as_viewer) -> None:
    services.register_first_release(SHELL)
    services.publish(SHELL, "1.1.0", "local", agent=fleet["wow-cache"])
    printed = json.loads(run("releases", "--agent", "wow-memory", "--json"))
    assert [row["version"] for row in printed["releases"]] == ["1.0.0"]
    answered = as_viewer.get("/api/platform/servicing/releases", {"agent": "wow-memory"}).json()
    assert printed == answered
    assert len(json.loads(run("releases", "--agent", "wow-cache", "--json"))["releases"]) == 2


def test_publish_for_the_fleet_an_agent_and_a_template(fleet) -> None:
    said = run("publish", "1.1.0", "--artifact", "waooaw/agentd:1.1.0", "--changelog", "Faster.",
               "--config", '{"task_block_ms": 500}')  # fmt: skip
    release = Release.objects.get(version="1.1.0")
    assert (
        said.strip()
        == f"Published release 1.1.0 for the fleet (#{release.pk}, waooaw/agentd:1.1.0)."
    )
    assert release.config_changes == {"task_block_ms": 500} and release.changelog == "Faster."
    assert release.published_by.startswith("command:")
    printed = json.loads(
        run("publish", "1.2.0", "--artifact", "local", "--agent", "wow-cache", "--json")
    )
    assert (printed["scope"], printed["agent"]) == ("agent", "wow-cache")
    assert "for template memory" in run(
        "publish", "1.2.0", "--artifact", "x", "--template", "memory"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("publish", "1.2", "--artifact", "local"),
            "'1.2' is not a version; use MAJOR.MINOR.PATCH",
        ),
        (
            ("publish", "1.1.0", "--artifact", "local", "--config", "{not json"),
            "--config is not JSON",
        ),
        (("publish", "1.1.0", "--artifact", "local", "--config", "[1]"), "config_changes must be"),
        (
            ("publish", "1.1.0", "--artifact", "local", "--agent", "nope"),
            "There is no agent 'nope'",
        ),
        (("publish", "1.1.0", "--artifact", "local", "--as", "ghost"), "No user 'ghost'"),
        (("releases", "--agent", "nope"), "There is no agent 'nope'"),
        (("pin", "7.7.7", "--reason", "x"), "There is no release 7.7.7"),
        (("pin", "424242", "--reason", "x"), "There is no release '424242'"),
        (("unpin", "latest", "--reason", "x"), "'latest' is not a version"),
    ],
)
def test_bad_input_exits_2(fleet, args, message) -> None:
    status, said = refused(*args)
    assert status == 2 and message in said
    assert not Release.objects.exists()


def test_publishing_twice_exits_2(fleet) -> None:
    run("publish", "1.1.0", "--artifact", "local")
    status, said = refused("publish", "1.1.0", "--artifact", "local")
    assert status == 2 and "Release 1.1.0 exists already for the fleet" in said


def test_roles_are_those_of_the_user_named(fleet, operator, viewer) -> None:
    status, said = refused("publish", "1.1.0", "--artifact", "local", "--as", "otto")
    assert status == 2 and "it needs the Admin role and you are Operator" in said
    release = services.publish(SHELL, "1.1.0", "local")
    status, said = refused("bad", "1.1.0", "--reason", "broken", "--as", "vera")
    assert status == 2 and "it needs the Operator role and you are Viewer" in said
    assert run("bad", "1.1.0", "--reason", "broken", "--as", "otto").strip() == (
        f"Marked 1.1.0 (the fleet, #{release.pk}) bad; it is pinned."
    )
    status, said = refused("unpin", str(release.pk), "--reason", "fine", "--as", "otto")
    assert status == 2 and "it needs the Admin role" in said
    entry = AuditEntry.objects.get(action="servicing.release.bad", outcome="success")
    assert entry.actor.endswith(" as otto") and entry.source == "manage.py servicing bad"


def test_pin_and_unpin_by_version_and_id(fleet) -> None:
    release = services.publish(SHELL, "1.1.0", "local")
    assert (
        run("pin", "1.1.0", "--reason", "hold").strip()
        == f"Pinned 1.1.0 (the fleet, #{release.pk})."
    )
    status, said = refused("pin", "1.1.0", "--reason", "again")
    assert status == 2 and "1.1.0 is pinned already: hold." in said
    printed = json.loads(run("unpin", str(release.pk), "--reason", "go", "--json"))
    assert printed["pinned"] is False and printed["id"] == release.pk
    release.refresh_from_db()
    assert not release.pinned


def test_the_reason_is_required(fleet) -> None:
    services.publish(SHELL, "1.1.0", "local")
    with pytest.raises(CommandError, match="--reason"):
        call_command("servicing", "pin", "1.1.0", stdout=io.StringIO(), stderr=io.StringIO())
    status, said = refused("pin", "1.1.0", "--reason", " ")
    assert status == 2 and "reason is required." in said
