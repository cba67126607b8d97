"""Marking a release bad (Operator; it pins it too), pinning and unpinning (Admin, with a
reason), each audited; a refused request changes nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release
from servicing.services import ServicingRefused

pytestmark = pytest.mark.django_db

SHELL = Actor.command("test")


@pytest.fixture
def release(fleet) -> Release:
    return services.publish(SHELL, "1.2.0", "waooaw/agentd:1.2.0")


def test_an_operator_marks_a_release_bad_which_pins_it(release, operator_actor) -> None:
    services.mark_bad(operator_actor, release, "error rate over 5 %")
    release.refresh_from_db()
    assert (release.bad, release.bad_reason) == (True, "error rate over 5 %")
    assert (release.pinned, release.pinned_reason) == (True, "marked bad: error rate over 5 %")
    assert release.pinned_by == "user:otto" and release.pinned_at is not None
    entry = AuditEntry.objects.get(action="servicing.release.bad")
    assert entry.target == "release:1.2.0 (the fleet)" and entry.actor == "user:otto"
    assert entry.detail == {"release_id": release.pk, "reason": "error rate over 5 %"}


def test_marking_a_pinned_release_bad_keeps_its_pin(release, admin_actor) -> None:
    services.pin(admin_actor, release, "held back")
    services.mark_bad(admin_actor, release, "broken")
    release.refresh_from_db()
    assert release.bad and release.pinned_reason == "held back"


def test_a_viewer_cannot_mark_a_release_bad(release, viewer_actor) -> None:
    with pytest.raises(PermissionDenied, match="it needs the Operator role"):
        services.mark_bad(viewer_actor, release, "broken")
    release.refresh_from_db()
    assert not release.bad and not release.pinned


def test_marking_bad_twice_is_refused(release, operator_actor) -> None:
    services.mark_bad(operator_actor, release, "broken")
    with pytest.raises(ServicingRefused, match="1.2.0 is marked bad already: broken.") as refused:
        services.mark_bad(operator_actor, release, "broken again")
    assert refused.value.status == 409
    assert AuditEntry.objects.filter(action="servicing.release.bad").count() == 1


def test_an_admin_pins_and_unpins_with_reasons_audited(release, admin_actor) -> None:
    services.pin(admin_actor, release, "wait for the fix")
    release.refresh_from_db()
    assert (release.pinned, release.pinned_reason, release.pinned_by) == (
        True,
        "wait for the fix",
        "user:ada",
    )
    services.unpin(admin_actor, release, "fixed in the config")
    release.refresh_from_db()
    assert (release.pinned, release.pinned_reason, release.pinned_by, release.pinned_at) == (
        False,
        "",
        "",
        None,
    )
    pinned, unpinned = AuditEntry.objects.filter(
        action__in=["servicing.release.pin", "servicing.release.unpin"]
    ).order_by("at")
    assert pinned.detail == {"release_id": release.pk, "reason": "wait for the fix"}
    assert unpinned.detail == {
        "release_id": release.pk,
        "reason": "fixed in the config",
        "was_pinned_for": "wait for the fix",
    }
    # Unpinned, the version is a target again.
    assert services.check_target(release_agent(), "1.2.0") == release


def release_agent():
    from agents.models import Agent

    return Agent.objects.get(slug="wow-cache")


def test_unpinning_a_bad_release_leaves_it_marked_bad(release, admin_actor) -> None:
    services.mark_bad(admin_actor, release, "broken")
    services.unpin(admin_actor, release, "the failures were the load generator's")
    release.refresh_from_db()
    assert release.bad and not release.pinned


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_an_operator_cannot_pin_or_unpin(release, operator_actor, action) -> None:
    if action == "unpin":
        services.pin(SHELL, release, "held")
    with pytest.raises(PermissionDenied, match=f"{action} a release: it needs the Admin role"):
        getattr(services, action)(operator_actor, release, "because")
    release.refresh_from_db()
    assert release.pinned is (action == "unpin")


@pytest.mark.parametrize("reason", ["", "   ", None])
@pytest.mark.parametrize("action", ["pin", "unpin", "mark_bad"])
def test_a_reason_is_required(release, action, reason) -> None:
    if action == "unpin":
        services.pin(SHELL, release, "held")
    with pytest.raises(ServicingRefused, match="reason is required.") as refused:
        getattr(services, action)(SHELL, release, reason)
    assert refused.value.status == 400


def test_pinning_twice_and_unpinning_an_unpinned_release_are_refused(release) -> None:
    with pytest.raises(ServicingRefused, match="1.2.0 is not pinned."):
        services.unpin(SHELL, release, "why not")
    services.pin(SHELL, release, "held")
    with pytest.raises(ServicingRefused, match="1.2.0 is pinned already: held."):
        services.pin(SHELL, release, "held again")
    assert (
        AuditEntry.objects.filter(action__startswith="servicing.release.")
        .exclude(action="servicing.release.publish")
        .count()
        == 1
    )


def test_a_pinned_version_is_deployed_by_no_single_or_bulk_action(fleet, admin_actor):
    from agents import services as agent_services
    from agents.bulk import plan as bulk_plan
    from agents.models import Agent

    services.register_first_release(admin_actor)
    release = services.publish(admin_actor, "1.3.0", "local")
    services.pin(admin_actor, release, "breaks the cache")
    Agent.objects.filter(slug="wow-cache").update(version="1.3.0")
    cache = Agent.objects.get(slug="wow-cache")

    check = agent_services.check_action(cache, "provision", admin_actor)
    assert check.allowed  # only a deploy puts the version anywhere
    provision = agent_services.request_action(cache, "provision", admin_actor, enqueue=False)
    agent_services.run_operation(str(provision.pk))
    cache.refresh_from_db()
    check = agent_services.check_action(cache, "deploy", admin_actor)
    assert not check.allowed and check.code == "pinned"
    assert "version 1.3.0 is pinned (breaks the cache)" in check.message
    planned = bulk_plan.plan_bulk("deploy", [cache])
    assert planned.items[0].code == "pinned"
    services.unpin(admin_actor, release, "fixed")
    assert agent_services.check_action(cache, "deploy", admin_actor).allowed
