"""Publishing releases: who may, what is refused (and that nothing is changed then), which
releases apply to an agent, its versions, the targets an upgrade may go to, and the first
release registered at start-up."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from agents.models import Agent
from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release
from servicing.services import ServicingRefused

pytestmark = pytest.mark.django_db

SHELL = Actor.command("test")


def refusal(call, *args, **kwargs) -> ServicingRefused:
    with pytest.raises(ServicingRefused) as refused:
        call(*args, **kwargs)
    return refused.value


def test_an_admin_publishes_a_fleet_release_audited(fleet, admin_actor) -> None:
    release = services.publish(
        admin_actor, "1.1.0", "waooaw/agentd:1.1.0", changelog="Faster cache.",
        config_changes={"task_block_ms": 500},
    )  # fmt: skip
    assert (release.version, release.artifact, release.changelog) == (
        "1.1.0",
        "waooaw/agentd:1.1.0",
        "Faster cache.",
    )
    assert release.config_changes == {"task_block_ms": 500}
    assert (release.agent, release.template, release.published_by) == (None, "", "user:ada")
    assert not release.bad and not release.pinned and release.published_at is not None
    entry = AuditEntry.objects.get(action="servicing.release.publish")
    assert entry.target == "release:1.1.0 (the fleet)" and entry.actor == "user:ada"
    assert entry.detail["release_id"] == release.pk


@pytest.mark.parametrize("actor_fixture", ["operator_actor", "viewer_actor"])
def test_only_an_admin_publishes(fleet, request, actor_fixture) -> None:
    actor = request.getfixturevalue(actor_fixture)
    with pytest.raises(PermissionDenied, match="publish a release: it needs the Admin role"):
        services.publish(actor, "1.1.0", "waooaw/agentd:1.1.0")
    assert not Release.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "1.2"}, "'1.2' is not a version; use MAJOR.MINOR.PATCH such as 1.2.0"),
        ({"version": None}, "None is not a version"),
        ({"artifact": ""}, "artifact is required."),
        ({"artifact": "waooaw/agentd 1.1.0"}, "has a space"),
        ({"artifact": "x" * 301}, "artifact is longer than 300 characters."),
        ({"config_changes": ["task_block_ms"]}, "config_changes must be a JSON object"),
        ({"config_changes": {"task_block_ms": "fast"}}, "config_changes: task_block_ms"),
        ({"config_changes": {"task_max_failures": 0}}, "config_changes: task_max_failures"),
        (
            {"template": "no-such-template"},
            "No template 'no-such-template'; templates: api, blank, data, memory",
        ),
        ({"changelog": 5}, "changelog must be text."),
    ],
)
def test_bad_input_is_refused_and_nothing_is_published(fleet, kwargs, message) -> None:
    arguments = {"version": "1.1.0", "artifact": "waooaw/agentd:1.1.0", **kwargs}
    refused = refusal(services.publish, SHELL, **arguments)
    assert message in refused.message
    assert (refused.code, refused.status) == ("invalid", 400)
    assert (
        not Release.objects.exists()
        and not AuditEntry.objects.filter(action="servicing.release.publish").exists()
    )


def test_a_release_for_an_agent_and_a_template_at_once_is_refused(fleet) -> None:
    refused = refusal(
        services.publish, SHELL, "1.1.0", "local", agent=fleet["wow-cache"], template="memory"
    )
    assert refused.message == "A release is for one agent or one template, not both; leave one out."


def test_the_database_also_refuses_both_scopes(fleet) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Release.objects.create(
            version="1.1.0", artifact="local", agent=fleet["wow-cache"], template="memory"
        )


def test_a_version_is_published_once_per_scope(fleet) -> None:
    first = services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0")
    refused = refusal(services.publish, SHELL, "1.1.0", "waooaw/agentd:1.1.0-again")
    assert (refused.code, refused.status) == ("conflict", 409)
    assert refused.message.startswith(f"Release 1.1.0 exists already for the fleet (#{first.pk},")
    # The same version in another scope is another release.
    services.publish(SHELL, "1.1.0", "local", agent=fleet["wow-cache"])
    services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0-memory", template="memory")
    refused = refusal(services.publish, SHELL, "1.1.0", "local", agent=fleet["wow-cache"])
    assert "exists already for agent wow-cache" in refused.message
    refused = refusal(services.publish, SHELL, "1.1.0", "x", template="memory")
    assert "exists already for template memory" in refused.message
    assert Release.objects.filter(version="1.1.0").count() == 3


def test_the_database_keeps_a_version_unique_per_scope(fleet) -> None:
    services.publish(SHELL, "1.1.0", "local", template="memory")
    with pytest.raises(IntegrityError), transaction.atomic():
        Release.objects.create(version="1.1.0", artifact="local", template="memory")


def test_a_version_is_stored_as_parsed(fleet) -> None:
    assert services.publish(SHELL, " 1.1.0 ", " local ").version == "1.1.0"


def test_releases_for_an_agent_are_the_fleets_its_templates_and_its_own(fleet) -> None:
    cache, memory_agent = fleet["wow-cache"], fleet["wow-memory"]
    Agent.objects.filter(pk=memory_agent.pk).update(template="memory@2")
    memory_agent.refresh_from_db()
    fleet_release = services.publish(SHELL, "1.0.0", "waooaw/agentd:1.0.0")
    for_cache = services.publish(SHELL, "1.2.0", "local", agent=cache)
    for_memory_template = services.publish(SHELL, "1.1.0", "local", template="memory")
    services.publish(SHELL, "1.3.0", "local", template="api")
    assert services.releases_for(cache) == [for_cache, fleet_release]
    assert services.releases_for(memory_agent) == [for_memory_template, fleet_release]


def test_releases_are_newest_version_first_not_newest_published(fleet) -> None:
    for version in ("1.10.0", "1.2.0", "1.2.0-rc.1", "1.9.0"):
        services.publish(SHELL, version, f"waooaw/agentd:{version}")
    shown = [release.version for release in services.releases_for(fleet["wow-cache"])]
    assert shown == ["1.10.0", "1.9.0", "1.2.0", "1.2.0-rc.1"]


def test_versions_of_an_agent(fleet) -> None:
    cache = fleet["wow-cache"]
    services.register_first_release(SHELL)
    services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0", changelog="Faster.")
    bad = services.publish(SHELL, "1.2.0", "waooaw/agentd:1.2.0", changelog="Broken.")
    services.mark_bad(SHELL, bad, "fails a share of tasks")
    services.publish(SHELL, "1.3.0", "local", agent=cache, changelog="Just for the cache.")
    answer = services.versions_of(cache)
    assert answer["current_version"] == "1.0.0"
    assert answer["available_versions"] == ["1.3.0", "1.1.0"]
    assert [(entry["version"], entry["changelog"]) for entry in answer["changelog"]] == [
        ("1.3.0", "Just for the cache."),
        ("1.2.0", "Broken."),
        ("1.1.0", "Faster."),
        ("1.0.0", "The first release."),
    ]
    (pinned,) = answer["pinned"]
    assert (pinned["version"], pinned["release_id"], pinned["bad"]) == ("1.2.0", bad.pk, True)
    assert pinned["reason"] == "marked bad: fails a share of tasks"
    # Another agent does not see the cache's own release.
    assert services.versions_of(fleet["wow-memory"])["available_versions"] == ["1.1.0"]


def test_an_agent_on_the_newest_version_has_none_available(fleet) -> None:
    services.register_first_release(SHELL)
    answer = services.versions_of(fleet["wow-cache"])
    assert answer["available_versions"] == [] and answer["pinned"] == []


def test_check_target_answers_the_release(fleet) -> None:
    release = services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0")
    assert services.check_target(fleet["wow-cache"], "1.1.0") == release


def test_check_target_refuses_an_unknown_version_naming_the_releases(fleet) -> None:
    services.register_first_release(SHELL)
    services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0")
    refused = refusal(services.check_target, fleet["wow-cache"], "9.9.9")
    assert refused.message == "WowCache has no release 9.9.9; releases: 1.0.0, 1.1.0."
    assert refused.status == 400
    refused = refusal(services.check_target, fleet["wow-cache"], "1.1")
    assert refused.message.startswith("'1.1' is not a version")


def test_check_target_refuses_a_pinned_version(fleet) -> None:
    release = services.publish(SHELL, "1.2.0", "waooaw/agentd:1.2.0")
    services.pin(SHELL, release, "error rate over 5 % in the canary")
    refused = refusal(services.check_target, fleet["wow-cache"], "1.2.0")
    assert refused.message == (
        "1.2.0 is pinned: error rate over 5 % in the canary. An Admin can unpin it."
    )
    assert refused.status == 409


def test_a_pin_in_any_scope_keeps_the_agent_away(fleet) -> None:
    cache = fleet["wow-cache"]
    services.publish(SHELL, "1.2.0", "waooaw/agentd:1.2.0")
    own = services.publish(SHELL, "1.2.0", "local", agent=cache)
    services.pin(SHELL, own, "breaks the cache")
    assert "is pinned: breaks the cache" in refusal(services.check_target, cache, "1.2.0").message
    assert services.check_target(fleet["wow-memory"], "1.2.0").agent is None


def test_check_target_refuses_a_downgrade_unless_allowed(fleet) -> None:
    cache = fleet["wow-cache"]
    old = services.publish(SHELL, "0.9.0", "waooaw/agentd:0.9.0")
    refused = refusal(services.check_target, cache, "0.9.0")
    assert refused.message.startswith("0.9.0 is older than the 1.0.0 WowCache runs;")
    assert services.check_target(cache, "0.9.0", allow_downgrade=True) == old


def test_check_target_refuses_the_version_running(fleet) -> None:
    services.register_first_release(SHELL)
    refused = refusal(services.check_target, fleet["wow-cache"], "1.0.0")
    assert (refused.message, refused.status) == ("WowCache runs 1.0.0 already.", 409)


def test_the_first_release_is_registered_once(fleet) -> None:
    out = io.StringIO()
    services.seed_step(SHELL, out)
    services.seed_step(SHELL, out)
    (release,) = Release.objects.all()
    assert (release.version, release.artifact, release.changelog) == (
        "1.0.0",
        "waooaw/agentd:1.0.0",
        "The first release.",
    )
    assert release.agent is None and release.template == ""
    assert out.getvalue() == "Registered release 1.0.0 (waooaw/agentd:1.0.0) for the fleet."
    assert AuditEntry.objects.filter(action="servicing.release.publish").count() == 1


def test_the_first_release_is_a_startup_step() -> None:
    from portal.startup import STARTUP_STEPS

    assert services.seed_step in STARTUP_STEPS


def test_find_release_by_id_or_version(fleet) -> None:
    fleet_release = services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0")
    own = services.publish(SHELL, "1.2.0", "local", agent=fleet["wow-cache"])
    services.publish(SHELL, "1.2.0", "local", agent=fleet["wow-memory"])
    assert services.find_release(str(own.pk)) == own
    assert services.find_release("1.1.0") == fleet_release
    refused = refusal(services.find_release, "1.2.0")
    assert refused.message.startswith("2 releases have version 1.2.0: #")
    assert refusal(services.find_release, "4.0.0").status == 404
    assert refusal(services.find_release, "999999").status == 404
    assert refusal(services.find_release, "latest").status == 400
