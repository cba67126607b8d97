"""``manage.py agents build-image --version X`` publishes the image it built as the fleet's
release X, unless that release exists, through ``publish_built_release`` (the step after a
successful build; the build itself, which needs a Docker engine, is tested in tests/agents)."""

from __future__ import annotations

import pytest

from agents.management.commands.agents import publish_built_release
from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release

pytestmark = pytest.mark.django_db

BUILDER = Actor.command("agents build-image")


def test_a_built_image_is_published_as_the_fleets_release(fleet) -> None:
    said = publish_built_release("1.1.0", "waooaw/agentd:1.1.0", BUILDER)
    release = Release.objects.get()
    assert said == f"Published release 1.1.0 for the fleet (#{release.pk}, waooaw/agentd:1.1.0)."
    assert (release.version, release.artifact, release.agent, release.template) == (
        "1.1.0",
        "waooaw/agentd:1.1.0",
        None,
        "",
    )
    assert release.changelog == "Image waooaw/agentd:1.1.0 built."
    entry = AuditEntry.objects.get(action="servicing.release.publish")
    assert entry.source == "manage.py agents build-image"


def test_a_release_that_exists_is_left_as_it_is(fleet) -> None:
    services.register_first_release(Actor.command("test"))
    first = Release.objects.get()
    said = publish_built_release("1.0.0", "registry.example/agentd:1.0.0", BUILDER)
    assert said == (
        f"Release 1.0.0 exists already for the fleet (#{first.pk}, waooaw/agentd:1.0.0); "
        "not published again."
    )
    assert Release.objects.get().artifact == "waooaw/agentd:1.0.0"


def test_a_release_for_one_agent_does_not_stop_the_fleets(fleet) -> None:
    services.publish(Actor.command("test"), "1.1.0", "local", agent=fleet["wow-cache"])
    said = publish_built_release("1.1.0", "waooaw/agentd:1.1.0", BUILDER)
    assert said.startswith("Published release 1.1.0 for the fleet")
    assert Release.objects.filter(version="1.1.0").count() == 2


def test_a_tag_that_is_not_a_version_is_built_but_not_published(fleet) -> None:
    said = publish_built_release("dev", "waooaw/agentd:dev", BUILDER)
    assert said == (
        "Not published as a release: 'dev' is not a version; use MAJOR.MINOR.PATCH such as 1.2.0"
    )
    assert not Release.objects.exists()


def test_a_user_without_the_admin_role_does_not_publish(fleet, operator) -> None:
    said = publish_built_release("1.1.0", "waooaw/agentd:1.1.0", Actor.command("x", user=operator))
    assert said.startswith("Not published as a release: You cannot publish a release")
    assert not Release.objects.exists()
