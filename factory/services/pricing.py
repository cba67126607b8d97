"""What a new agent costs a month, and what room the fleet has left for it.

The estimate prices what is reserved (CPU and memory for every hour of the month, storage for
the month) and what is used (tasks, at the volume the user expects: a usage-based item is never
shown as free because nobody said how much it is used).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, Sum

from agents.models import Agent, State
from factory.models import PriceTable
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

HOURS_PER_MONTH = Decimal("730")
CENT = Decimal("0.01")
PRICE_FIELDS = (
    "vcpu_hour", "memory_gb_hour", "storage_gb_month", "per_thousand_tasks", "budget_per_agent",
)  # fmt: skip


def prices() -> PriceTable:
    """The price table (made from settings the first time it is read)."""
    table = PriceTable.objects.order_by("pk").first()
    if table is None:
        configured = settings.FACTORY_PRICES
        table, _ = PriceTable.objects.get_or_create(
            pk=1,
            defaults={
                "currency": configured["currency"],
                **{name: Decimal(configured[name]) for name in PRICE_FIELDS},
            },
        )
    return table


@audits_refusals("factory.prices")
def update_prices(changes: Mapping[str, Any], actor: Actor) -> PriceTable:
    """Admin: change prices (each a non-negative amount)."""
    actor.require(roles.MANAGE, "change the factory's prices")
    table = prices()
    before = {name: str(getattr(table, name)) for name in PRICE_FIELDS}
    for name, value in changes.items():
        if name not in PRICE_FIELDS:
            raise ValueError(f"{name} is not a price; prices: {', '.join(PRICE_FIELDS)}")
        amount = Decimal(str(value))
        if not amount.is_finite() or amount < 0 or amount >= 1_000_000:
            raise ValueError(f"{name} must be an amount from 0 to 999999")
        setattr(table, name, amount)
    table.save()
    record_audit(
        actor, "factory.prices", target="prices", before=before,
        after={name: str(getattr(table, name)) for name in PRICE_FIELDS},
    )  # fmt: skip
    return table


@dataclass(frozen=True)
class Estimate:
    currency: str
    lines: tuple[tuple[str, str, Decimal], ...]  # (item, how it was counted, monthly amount)
    total: Decimal
    budget: Decimal

    @property
    def within_budget(self) -> bool:
        return self.total <= self.budget

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "monthly_total": str(self.total),
            "budget": str(self.budget),
            "within_budget": self.within_budget,
            "breakdown": [
                {"item": item, "basis": basis, "monthly": str(amount)}
                for item, basis, amount in self.lines
            ],
        }


def estimate(resources: Mapping[str, int], tasks_per_month: int) -> Estimate:
    """The monthly cost of an agent with ``resources`` running all month and doing
    ``tasks_per_month`` tasks."""
    table = prices()
    replicas = Decimal(resources["replicas"])
    vcpus = Decimal(resources["cpu_millicores"]) / 1000 * replicas
    memory_gb = Decimal(resources["memory_mb"]) / 1024 * replicas
    storage_gb = Decimal(resources["storage_mb"]) / 1024
    tasks = Decimal(tasks_per_month)
    lines = (
        ("CPU", f"{vcpus.normalize():f} vCPU × 730 h × {table.vcpu_hour.normalize():f}",
         vcpus * HOURS_PER_MONTH * table.vcpu_hour),
        ("Memory", f"{_gb(memory_gb)} GB × 730 h × {table.memory_gb_hour.normalize():f}",
         memory_gb * HOURS_PER_MONTH * table.memory_gb_hour),
        ("Storage", f"{_gb(storage_gb)} GB × {table.storage_gb_month.normalize():f}",
         storage_gb * table.storage_gb_month),
        ("Tasks", f"{int(tasks):,} tasks × {table.per_thousand_tasks.normalize():f} per 1,000",
         tasks / 1000 * table.per_thousand_tasks),
    )  # fmt: skip
    rounded = tuple((item, basis, _cents(amount)) for item, basis, amount in lines)
    return Estimate(
        currency=table.currency,
        lines=rounded,
        total=_cents(sum((amount for _, _, amount in lines), Decimal(0))),
        budget=table.budget_per_agent,
    )


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _gb(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.001')).normalize():f}"


def capacity() -> dict[str, int]:
    return dict(settings.FACTORY_CAPACITY)


def capacity_used() -> dict[str, int]:
    """What the registry's agents (all but REVOKED) hold now."""
    totals = Agent.objects.exclude(state=State.REVOKED).aggregate(
        cpu=Sum(F("cpu_millicores") * F("replicas")),
        memory=Sum(F("memory_mb") * F("replicas")),
        storage=Sum("storage_mb"),
    )
    return {
        "cpu_millicores": int(totals["cpu"] or 0),
        "memory_mb": int(totals["memory"] or 0),
        "storage_mb": int(totals["storage"] or 0),
    }


def capacity_left() -> dict[str, int]:
    total, used = capacity(), capacity_used()
    return {key: max(0, total[key] - used[key]) for key in total}
