"""Service level objectives: an availability objective per agent over 30 days, measured from
the uptime samples the collector already writes, the error budget it leaves and how fast it
burns, and the multi-window burn-rate condition the "SLO burn rate" alert rule fires on.

An objective of 99.9 % allows 0.1 % of the 30 days down (43.2 minutes): that is the error
budget. The burn rate over a window is the share of it down divided by 0.1 %: 1 spends the
budget in exactly 30 days, 14.4 spends 2 % of it in an hour. As Google's SRE workbook advises,
the alert needs a long window and a short one both burning: 14.4 over 1 h and 5 min (the budget
gone in two days, and still burning now), or 6 over 6 h and 30 min.

Every agent's figures come from one uptime query per window (five), whatever the fleet's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from observability import metrics
from observability.models import ServiceLevelObjective
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import BadRequest
from portal.services import record_audit

PERIOD = timedelta(days=30)
WINDOWS = {"5m": timedelta(minutes=5), "30m": timedelta(minutes=30), "1h": timedelta(hours=1),
           "6h": timedelta(hours=6)}  # fmt: skip
# (long window, short window, burn rate both must exceed)
ALERTS = [("1h", "5m", 14.4), ("6h", "30m", 6.0)]


class ObjectiveRefused(BadRequest):
    """An objective that cannot be set; the message says why (400)."""


@dataclass(frozen=True)
class SloStatus:
    agent: Agent
    objective: float  # percent
    availability: float | None  # percent up over the 30 days (None: no samples yet)
    burn: dict[str, float | None]  # window -> burn rate
    alerting: str  # "1h/5m" or "6h/30m" when a burn-rate condition holds, else ""

    @property
    def burn_1h(self) -> float | None:
        return self.burn["1h"]

    @property
    def burn_6h(self) -> float | None:
        return self.burn["6h"]

    @property
    def budget_minutes(self) -> float:
        return (100.0 - self.objective) / 100.0 * PERIOD.total_seconds() / 60

    @property
    def spent_minutes(self) -> float | None:
        # What the availability measured in the window would spend over the whole 30 days (the
        # window may hold less history than that).
        if self.availability is None:
            return None
        return (100.0 - self.availability) / 100.0 * PERIOD.total_seconds() / 60

    @property
    def budget_left_percent(self) -> float | None:
        """What is left of the 30-day budget, in percent (below 0 once it is overspent)."""
        if self.spent_minutes is None:
            return None
        return 100.0 * (1 - self.spent_minutes / self.budget_minutes)

    @property
    def met(self) -> bool | None:
        return None if self.availability is None else self.availability >= self.objective

    def as_dict(self) -> dict:
        return {
            "agent": self.agent.slug,
            "objective": self.objective,
            "availability": _round(self.availability),
            "budget_minutes": round(self.budget_minutes, 2),
            "spent_minutes": _round(self.spent_minutes),
            "budget_left_percent": _round(self.budget_left_percent),
            "burn_rates": {w: _round(v) for w, v in self.burn.items()},
            "alerting": self.alerting,
            "met": self.met,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def objectives(agents: list[Agent]) -> dict[int, float]:
    """The objective of each of ``agents`` that has one: its own, or the default for its slug
    (``SLO_DEFAULT_OBJECTIVES``: WowVision Prime and WowEvent at 99.9 %)."""
    own = dict(
        ServiceLevelObjective.objects.filter(agent__in=agents).values_list("agent_id", "objective")
    )
    defaults = settings.SLO_DEFAULT_OBJECTIVES
    found = {}
    for agent in agents:
        if agent.pk in own:
            found[agent.pk] = own[agent.pk]
        elif agent.slug in defaults:
            found[agent.pk] = defaults[agent.slug]
    return found


def burn_rate(uptime_percent: float | None, objective: float) -> float | None:
    """How many times faster than sustainable the budget burns at this uptime."""
    if uptime_percent is None:
        return None
    return (100.0 - uptime_percent) / (100.0 - objective)


def statuses(agents: list[Agent], now: datetime | None = None) -> list[SloStatus]:
    """The SLO of each of ``agents`` that has an objective, in the order given."""
    now = now or timezone.now()
    wanted = objectives(agents)
    if not wanted:
        return []
    month = metrics.uptimes(PERIOD, now)
    shares = {window: metrics.uptimes(span, now) for window, span in WINDOWS.items()}
    found = []
    for agent in agents:
        if agent.pk not in wanted:
            continue
        objective = wanted[agent.pk]
        burn = {w: burn_rate(shares[w].get(agent.pk), objective) for w in WINDOWS}
        alerting = next(
            (
                f"{long}/{short}"
                for long, short, rate in ALERTS
                if (burn[long] or 0) > rate and (burn[short] or 0) > rate
            ),
            "",
        )
        found.append(SloStatus(agent, objective, month.get(agent.pk), burn, alerting))
    return found


def findings(agents: dict[int, Agent], now: datetime) -> list[tuple[Agent, float, str]]:
    """The "SLO burn rate" rule's findings: (agent, 1-hour burn rate, summary) for each agent
    whose budget burns too fast over both windows of a pair."""
    found = []
    for status in statuses(list(agents.values()), now):
        if not status.alerting:
            continue
        long = status.alerting.split("/")[0]
        left = status.budget_left_percent
        summary = (
            f"{status.agent.name} burns its error budget {status.burn[long]:.1f}× too fast "
            f"({status.alerting}; objective {status.objective:g} %"
            + (f", {left:.0f} % of the 30-day budget left)" if left is not None else ")")
        )
        found.append((status.agent, round(status.burn["1h"] or 0.0, 2), summary))
    return found


def set_objective(agent: Agent, objective: object, actor: Actor) -> ServiceLevelObjective | None:
    """Set ``agent``'s objective (percent, 50 to 99.999), or clear it with None (back to the
    default, if its slug has one). An Admin's: objectives are the platform's promise."""
    try:
        actor.require(roles.MANAGE, "set service level objectives")
    except PermissionDenied as denied:
        record_audit(actor, "slo.set", target=agent.slug, outcome=AuditEntry.Outcome.REFUSED,
                     error=str(denied))  # fmt: skip
        raise
    if objective is not None:
        objective = parse_objective(objective)
    with transaction.atomic():
        if objective is None:
            ServiceLevelObjective.objects.filter(agent=agent).delete()
            record_audit(actor, "slo.clear", target=agent.slug)
            return None
        slo, _ = ServiceLevelObjective.objects.update_or_create(
            agent=agent, defaults={"objective": objective}
        )
        record_audit(actor, "slo.set", target=agent.slug, objective=objective)
    return slo


def parse_objective(value: object) -> float:
    text = str(value).strip().rstrip("%").strip()
    try:
        number = float(text)
    except ValueError:
        raise ObjectiveRefused(
            f"objective={str(value)[:20]!r} is not a number; give a percentage such as 99.9."
        ) from None
    if not 50.0 <= number <= 99.999 or number != number:
        raise ObjectiveRefused(
            f"objective={text[:20]} is out of range: an objective is 50 to 99.999 (percent up); "
            "100 would leave no error budget at all."
        )
    if round(number, 3) != number:
        raise ObjectiveRefused(f"objective={text[:20]} has more than three decimals.")
    return number


# --- what pages show ----------------------------------------------------------------------------


def fleet_statuses(now: datetime | None = None) -> list[SloStatus]:
    """Every agent with an objective (its own or a default), by name."""
    agents = list(
        Agent.objects.filter(
            Q(slo__isnull=False) | Q(slug__in=list(settings.SLO_DEFAULT_OBJECTIVES))
        ).order_by("name")
    )
    return statuses(agents, now)


def panel_context(agent: Agent | None = None) -> dict:
    found = statuses([agent]) if agent is not None else fleet_statuses()
    return {"slos": found, "slo_agent": agent}
