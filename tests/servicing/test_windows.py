"""Maintenance windows: inside, outside and the next opening; deny over allow; fleet, tier and
agent scopes; daylight saving changes in Europe/Paris; every bad input refused naming its
field, changing nothing; Admin only; audited. And an upgrade asked outside its window waits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import PermissionDenied

from portal.actors import Actor
from portal.models import AuditEntry
from servicing import windows
from servicing.models import MaintenanceWindow, UpgradeStatus
from servicing.services import ServicingRefused
from servicing.upgrades import requests


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def nightly(fleet, admin_actor):
    """02:00-04:00 Paris time, every night, for the whole fleet."""
    return windows.create_window(
        admin_actor, name="Nightly", cron="0 2 * * *", duration_minutes=120,
        timezone="Europe/Paris",
    )  # fmt: skip


def test_without_windows_an_agent_is_always_open(fleet):
    opening = windows.next_opening(fleet["wow-cache"], at("2026-12-04T15:00:00+00:00"))
    assert opening.open and opening.explanation == "no window applies"


def test_inside_an_allow_window_is_open(nightly, fleet):
    opening = windows.next_opening(fleet["wow-cache"], at("2026-12-05T02:30:00+01:00"))
    assert opening.open and "Nightly" in opening.explanation


def test_outside_it_the_next_opening_is_named_in_the_windows_zone(nightly, fleet):
    opening = windows.next_opening(fleet["wow-cache"], at("2026-12-04T15:00:00+00:00"))
    assert not opening.open
    assert opening.starts_at == at("2026-12-05T02:00:00+01:00")
    assert opening.window == nightly
    assert "next opening 2026-12-05 02:00 CET" in opening.explanation


def test_the_window_closes_after_its_duration(nightly, fleet):
    assert windows.next_opening(fleet["wow-cache"], at("2026-12-05T03:59:00+01:00")).open
    closed = windows.next_opening(fleet["wow-cache"], at("2026-12-05T04:00:00+01:00"))
    assert not closed.open and closed.starts_at == at("2026-12-06T02:00:00+01:00")


def test_deny_wins_over_allow_and_the_opening_waits_for_its_end(nightly, fleet, admin_actor):
    windows.create_window(
        admin_actor, name="Freeze", kind="deny", cron="0 0 5 12 *", duration_minutes=24 * 60,
        timezone="Europe/Paris",
    )  # fmt: skip
    inside_both = windows.next_opening(fleet["wow-cache"], at("2026-12-05T02:30:00+01:00"))
    assert not inside_both.open and "deny window 'Freeze'" in inside_both.explanation
    assert inside_both.starts_at == at("2026-12-06T02:00:00+01:00")


def test_a_deny_window_without_allow_windows_opens_at_its_end(fleet, admin_actor):
    windows.create_window(admin_actor, name="Lunch", kind="deny", cron="0 12 * * *",
                          duration_minutes=60, timezone="UTC")  # fmt: skip
    opening = windows.next_opening(fleet["wow-cache"], at("2026-12-04T12:15:00+00:00"))
    assert not opening.open and opening.starts_at == at("2026-12-04T13:00:00+00:00")
    assert windows.next_opening(fleet["wow-cache"], at("2026-12-04T13:00:00+00:00")).open


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # The night clocks go forward (02:00 CET → 03:00 CEST): no 02:00 that night in Paris.
        ("2026-03-29T01:30:00+01:00", None),
        # The night they go back: 02:00 CEST comes, and the window opens in Paris time.
        ("2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00"),
        ("2026-03-30T01:00:00+02:00", "2026-03-30T02:00:00+02:00"),
    ],
)
def test_daylight_saving_changes_follow_the_windows_zone(nightly, fleet, moment, expected):
    opening = windows.next_opening(fleet["wow-cache"], at(moment))
    if expected is not None:
        assert opening.starts_at == at(expected)
    else:  # whatever croniter makes of the missing hour, the opening is Paris 02:00-04:00
        assert opening.open or opening.starts_at is not None
        start = opening.starts_at or at(moment)
        assert 2 <= start.astimezone(windows.ZoneInfo("Europe/Paris")).hour <= 4


def test_the_night_clocks_go_forward_the_window_opens_at_the_first_hour_after_the_gap(
    nightly, fleet
):
    # 2026-03-29: 02:00 CET does not exist in Paris (clocks jump to 03:00 CEST).
    opening = windows.next_opening(fleet["wow-cache"], at("2026-03-29T01:30:00+01:00"))
    assert not opening.open and opening.starts_at == at("2026-03-29T03:00:00+02:00")
    # It stays open its duration in real minutes: two hours, until 05:00 CEST.
    assert windows.next_opening(fleet["wow-cache"], at("2026-03-29T04:59:00+02:00")).open
    assert not windows.next_opening(fleet["wow-cache"], at("2026-03-29T05:00:00+02:00")).open


def test_the_night_clocks_go_back_the_window_covers_02_00_to_04_00_paris_time(nightly, fleet):
    # 2026-10-25: 02:00-03:00 happens twice in Paris (CEST, then CET); the window opens at the
    # first 02:00 and, opened again at the second, lasts until 04:00 CET: three real hours.
    cache = fleet["wow-cache"]
    assert not windows.next_opening(cache, at("2026-10-25T01:59:00+02:00")).open
    assert windows.next_opening(cache, at("2026-10-25T02:00:00+02:00")).open
    assert windows.next_opening(cache, at("2026-10-25T02:30:00+01:00")).open
    assert windows.next_opening(cache, at("2026-10-25T03:59:00+01:00")).open
    closed = windows.next_opening(cache, at("2026-10-25T04:00:00+01:00"))
    assert not closed.open and closed.starts_at == at("2026-10-26T02:00:00+01:00")
    assert "next opening 2026-10-26 02:00 CET" in closed.explanation


def test_a_tier_window_applies_to_that_tiers_agents(fleet, admin_actor):
    from agents.models import Agent

    windows.create_window(admin_actor, name="Customers", cron="0 3 * * *", duration_minutes=60,
                          tier="customer")  # fmt: skip
    Agent.objects.filter(slug="wow-support").update(tier="customer")
    customer = Agent.objects.get(slug="wow-support")
    noon = at("2026-12-04T12:00:00+00:00")
    opening = windows.next_opening(customer, noon)
    assert not opening.open and opening.starts_at == at("2026-12-05T03:00:00+00:00")
    assert opening.window.name == "Customers"
    assert windows.next_opening(customer, at("2026-12-05T03:30:00+00:00")).open


def test_a_disabled_window_does_not_apply(fleet, admin_actor):
    windows.create_window(admin_actor, name="Off", cron="0 2 * * *", duration_minutes=60,
                          enabled=False)  # fmt: skip
    assert windows.windows_for(fleet["wow-cache"]) == []
    assert windows.next_opening(fleet["wow-cache"], at("2026-12-04T12:00:00+00:00")).open


def test_nothing_opening_within_35_days_says_so(fleet, admin_actor):
    windows.create_window(admin_actor, name="Yearly", cron="0 2 1 6 *", duration_minutes=60)
    opening = windows.next_opening(fleet["wow-cache"], at("2026-12-04T12:00:00+00:00"))
    assert not opening.open and opening.starts_at is None and opening.window.name == "Yearly"
    assert opening.explanation.endswith("no window opens in the next 35 days")


def test_a_naive_moment_is_a_programming_error(fleet):
    with pytest.raises(ValueError, match="aware"):
        windows.next_opening(fleet["wow-cache"], datetime(2026, 12, 4, 12, 0))


def test_any_role_lists_windows_by_agent_or_tier(fleet, admin_actor, viewer_actor):
    windows.create_window(admin_actor, name="Fleet", cron="0 2 * * *", duration_minutes=60)
    windows.create_window(admin_actor, name="Customers", cron="0 3 * * *", duration_minutes=60,
                          tier="customer", enabled=False)  # fmt: skip
    windows.create_window(admin_actor, name="Cache", cron="0 4 * * *", duration_minutes=60,
                          agent="wow-cache")  # fmt: skip

    def names(**filters) -> list[str]:
        return [w.name for w in windows.list_windows(viewer_actor, **filters)]

    assert names() == ["Cache", "Customers", "Fleet"]
    assert names(agent=fleet["wow-cache"]) == ["Cache", "Fleet"]
    assert names(tier="customer") == ["Customers", "Fleet"]
    with pytest.raises(ServicingRefused, match="^tier:"):
        names(tier="gold")
    with pytest.raises(PermissionDenied):
        windows.list_windows(Actor(kind="user", user=None))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-05T02:00:00+01:00", "2026-12-05T01:00:00+00:00"),
        ("2026-12-05T01:00:00Z", "2026-12-05T01:00:00+00:00"),
        ("2026-12-05T02:00:00 01:00", "2026-12-05T01:00:00+00:00"),  # a "+" a URL made a space
    ],
)
def test_a_moment_is_read_with_its_offset(text, expected):
    assert windows.parse_moment(text) == datetime.fromisoformat(expected)


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2026-12-05T02:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31Z",
             "2026-12-05\x00"],
)  # fmt: skip
def test_a_moment_without_offset_or_out_of_range_is_refused(text):
    with pytest.raises(ServicingRefused, match="^at:") as refused:
        windows.parse_moment(text)
    assert refused.value.status == 400


def test_tier_and_agent_windows_apply_only_to_theirs(fleet, admin_actor):
    windows.create_window(admin_actor, name="Customers", cron="0 3 * * 6", duration_minutes=60,
                          tier="customer")  # fmt: skip
    windows.create_window(admin_actor, name="Cache only", cron="0 4 * * *", duration_minutes=30,
                          agent="wow-cache")  # fmt: skip
    noon = at("2026-12-04T12:00:00+00:00")
    assert windows.next_opening(fleet["wow-event"], noon).open  # platform tier, not the cache
    cache = windows.next_opening(fleet["wow-cache"], noon)
    assert not cache.open and cache.starts_at == at("2026-12-05T04:00:00+00:00")
    assert [w.name for w in windows.windows_for(fleet["wow-cache"])] == ["Cache only"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 2 * * * *"}, "cron"),
        ({"cron": "0 2\x00 * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 10**9}, "duration_minutes"),
        ({"duration_minutes": "2h"}, "duration_minutes"),
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"kind": "maybe"}, "kind"),
        ({"tier": "gold"}, "tier"),
        ({"agent": "nobody"}, "agent"),
        ({"agent": "wow-cache", "tier": "platform"}, "agent"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_made(
    fleet, admin_actor, values, field
):
    fields = {"name": "W", "cron": "0 2 * * *", "duration_minutes": 60, **values}
    with pytest.raises(ServicingRefused) as refused:
        windows.create_window(admin_actor, **fields)
    assert refused.value.message.startswith(f"{field}:"), refused.value.message
    assert refused.value.status == 400
    assert not MaintenanceWindow.objects.exists()


def test_only_an_admin_changes_windows_and_every_change_is_audited(
    fleet, admin_actor, operator_actor
):
    with pytest.raises(PermissionDenied):
        windows.create_window(operator_actor, name="W", cron="0 2 * * *", duration_minutes=60)
    refusal = AuditEntry.objects.get(action="servicing.window.create", outcome="refused")
    assert refusal.actor == operator_actor.label and "Admin role" in refusal.detail["error"]
    window = windows.create_window(admin_actor, name="W", cron="0 2 * * *", duration_minutes=60)
    windows.update_window(admin_actor, window, duration_minutes=90)
    windows.delete_window(admin_actor, window, "not needed")
    actions = list(
        AuditEntry.objects.filter(action__startswith="servicing.window.", outcome="success")
        .order_by("at")
        .values_list("action", flat=True)
    )
    assert actions == [
        "servicing.window.create", "servicing.window.update", "servicing.window.delete",
    ]  # fmt: skip
    assert not MaintenanceWindow.objects.exists()


def test_an_upgrade_asked_outside_its_window_waits_for_it(
    running, publish, operator_actor, admin_actor
):
    cache = running("wow-cache")
    publish("1.1.0")
    window = windows.create_window(  # a long name: the sentence still fits the upgrade's row
        admin_actor, name="Later" + "x" * 95, cron="0 3 * * *", duration_minutes=60,
        timezone="America/Argentina/ComodRivadavia", agent="wow-cache",
    )  # fmt: skip
    now = at("2026-12-04T12:00:00+00:00")

    upgrade = requests.request_upgrade(operator_actor, cache, "1.1.0", "rolling", now=now)

    assert upgrade.status == UpgradeStatus.SCHEDULED
    assert upgrade.not_before == at("2026-12-05T03:00:00-03:00")
    assert upgrade.window_note.startswith("outside the allow window 'Laterxx")
    with pytest.raises(PermissionDenied):  # only an Admin may override the window
        requests.request_upgrade(operator_actor, cache, "1.1.0", "rolling", now=now,
                                 override_window="urgent")  # fmt: skip
    requests.command(operator_actor, upgrade, "abort", "not tonight")
    upgrade.refresh_from_db()
    assert upgrade.status == UpgradeStatus.ABORTED
    overridden = requests.request_upgrade(
        admin_actor, cache, "1.1.0", "rolling", now=now, override_window="security fix"
    )
    assert overridden.not_before is None and "security fix" in overridden.window_note
    assert AuditEntry.objects.filter(
        action="servicing.upgrade.request", detail__window_override="security fix"
    ).exists()
    assert window.pk


def test_an_upgrade_may_wait_for_a_window_as_far_ahead_as_openings_are_looked_for():
    """Its plan step must not time out first (it did, at the engine's default of 300 s)."""
    from servicing.upgrades import workflow

    definition = workflow.definition()
    assert definition.step("plan").timeout_seconds > windows.HORIZON.total_seconds()
    # Waiting for traffic (a canary step or verify with too few tasks) lasts a day at most.
    assert definition.step("cutover").timeout_seconds >= 24 * 3600
    assert definition.step("verify").timeout_seconds >= 24 * 3600
