"""The cost estimate (reserved resources all month, tasks at the expected volume, against the
budget) and the fleet's capacity a new agent must fit in."""

from __future__ import annotations

from decimal import Decimal

from agents.models import Agent
from factory.services import drafts, pricing, validation
from portal.actors import Actor


def test_the_estimate_prices_every_item_and_judges_the_budget(catalog) -> None:
    estimate = pricing.estimate(
        {"cpu_millicores": 100, "memory_mb": 128, "storage_mb": 256, "replicas": 1}, 50_000
    )
    lines = {item: amount for item, _, amount in estimate.lines}
    # 0.1 vCPU × 730 h × 0.01, 0.125 GB × 730 h × 0.0015, 0.25 GB × 0.10, 50 × 0.002
    assert lines == {
        "CPU": Decimal("0.73"), "Memory": Decimal("0.14"), "Storage": Decimal("0.03"),
        "Tasks": Decimal("0.10"),
    }  # fmt: skip
    assert estimate.total == Decimal("0.99") and estimate.within_budget
    pricey = pricing.estimate(
        {"cpu_millicores": 1000, "memory_mb": 2048, "storage_mb": 0, "replicas": 2}, 0
    )
    assert pricey.total == Decimal("18.98") and not pricey.within_budget
    assert pricey.as_dict()["within_budget"] is False


def test_prices_are_the_admins_and_audited(catalog, operator_actor) -> None:
    import pytest
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        pricing.update_prices({"vcpu_hour": "0"}, operator_actor)
    pricing.update_prices({"vcpu_hour": "0.02"}, Actor.command("test"))
    estimate = pricing.estimate(
        {"cpu_millicores": 100, "memory_mb": 128, "storage_mb": 0, "replicas": 1}, 0
    )
    assert dict((i, a) for i, _, a in estimate.lines)["CPU"] == Decimal("1.46")
    with pytest.raises(ValueError, match="vcpu_hour must be an amount"):
        pricing.update_prices({"vcpu_hour": "-1"}, Actor.command("test"))


def test_a_new_agent_must_fit_in_what_the_fleet_has_left(catalog, settings, operator_actor) -> None:
    used = pricing.capacity_used()
    assert used["cpu_millicores"] == sum(a.cpu_millicores * a.replicas for a in Agent.objects.all())
    settings.FACTORY_CAPACITY = {
        "cpu_millicores": used["cpu_millicores"] + 300,
        "memory_mb": used["memory_mb"] + 4096,
        "storage_mb": 1000,
    }
    draft = drafts.create_draft(catalog["memory"], operator_actor)
    errors = drafts.set_fields(
        draft, {"resources.cpu_millicores": "200", "resources.replicas": "2"}, operator_actor
    )
    assert [e.as_dict() for e in errors if e.field == "resources.cpu_millicores"] == [
        {
            "field": "resources.cpu_millicores",
            "message": "400 millicores for 2 replica(s) is more than the fleet has left (300 millicores).",
        }
    ]
    errors = drafts.set_fields(draft, {"resources.replicas": "1"}, operator_actor)
    assert not [e for e in errors if e.field.startswith("resources.")]
    assert (
        validation.validate(catalog["memory"], draft.values, fields=["resources.storage_mb"]) == []
    )
