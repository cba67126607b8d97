"""A playbook's checks: each reads real state now (the customer's agents' state and health,
their queues, the customer's dead letters, the trial, the last payment, recent failing
interactions) and answers whether it meets what the step expects, what it saw, and which of the
customer's agents fall short (the agents a later action of the playbook acts on).

``expect`` is ``true`` for yes/no checks, or ``{"max": N}`` (``{"max_ms": N}`` for latency) for
counted ones; ``CHECKS[name].check_expect`` refuses anything else when a playbook is saved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.utils import timezone

from agents.choices import Health
from agents.lifecycle import State
from agents.models import Agent
from helpdesk.actions.fleet import customer_letters
from helpdesk.models import Customer, Interaction, Outcome, SubscriptionStatus
from observability.queues import catalog, figures
from portal.refusals import Refused

RECENT = timedelta(hours=1)
AUTH_WINDOW = timedelta(hours=24)
PAYMENT_WINDOW = timedelta(days=30)
AUTH_ERROR = re.compile(
    r"\b(401|403)\b|unauthori[sz]ed|forbidden|authenticat|invalid[_ ]?token|expired[_ ]?token|"
    r"credential|api[_ -]?key|permission denied",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Observation:
    """What a check saw: ``ok`` when it meets the expectation; ``agents`` the slugs that fall
    short; ``seen`` one sentence; ``figures`` the numbers behind it."""

    ok: bool
    seen: str
    agents: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seen": self.seen, "agents": self.agents, "figures": self.figures}


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    counted: str  # "" for a yes/no check, else the key of its limit ("max", "max_ms")
    run: Callable[[Customer, Any], Observation]

    def check_expect(self, expect: Any) -> None:
        """``ValueError`` for an expectation this check cannot compare against."""
        if not self.counted:
            if expect is not True:
                raise ValueError(f"check {self.name} expects true")
            return
        limit = expect.get(self.counted) if isinstance(expect, dict) else None
        if not isinstance(expect, dict) or set(expect) != {self.counted} or isinstance(limit, bool):
            raise ValueError(f'check {self.name} expects {{"{self.counted}": N}}')
        if not isinstance(limit, int) or not 0 <= limit <= 10**9:
            raise ValueError(f"check {self.name}: {self.counted} is a whole number from 0")


def _agents(customer: Customer) -> list[Agent]:
    return list(Agent.objects.filter(customer_link__customer=customer).order_by("slug"))


def _names(agents: list[Agent]) -> str:
    return ", ".join(a.name for a in agents)


def agents_running(customer: Customer, expect: Any) -> Observation:
    agents = _agents(customer)
    down = [a for a in agents if a.state != State.RUNNING]
    if not agents:
        return Observation(False, f"{customer.company_name} has no agents.", [], {"agents": 0})
    seen = (
        f"All {len(agents)} agent(s) are running."
        if not down
        else f"Not running: {', '.join(f'{a.name} ({a.state})' for a in down)}."
    )
    return Observation(
        not down, seen, [a.slug for a in down], {"agents": len(agents), "down": len(down)}
    )


def agents_healthy(customer: Customer, expect: Any) -> Observation:
    agents = [a for a in _agents(customer) if a.state == State.RUNNING]
    sick = [a for a in agents if a.health != Health.HEALTHY]
    seen = (
        f"All {len(agents)} running agent(s) are healthy."
        if not sick
        else f"Not healthy: {', '.join(f'{a.name} ({a.health})' for a in sick)}."
    )
    return Observation(
        not sick, seen, [a.slug for a in sick], {"running": len(agents), "unhealthy": len(sick)}
    )


def crash_loop(customer: Customer, expect: Any) -> Observation:
    limit = expect["max"]
    agents = _agents(customer)
    looping = [
        a for a in agents
        if a.state == State.ERRORED or a.restart_attempts > limit or a.restart_gave_up
    ]  # fmt: skip
    seen = (
        "No agent is crashing."
        if not looping
        else "Crashing: "
        + ", ".join(
            f"{a.name} ({a.state}, {a.restart_attempts} automatic restarts)" for a in looping
        )
        + "."
    )
    return Observation(not looping, seen, [a.slug for a in looping], {"crashing": len(looping)})


def queue_backlog(customer: Customer, expect: Any) -> Observation:
    limit = expect["max"]
    agents = [a for a in _agents(customer) if a.state not in (State.DRAFT, State.REVOKED)]
    if not agents:
        return Observation(True, "No agent has a queue yet.", [], {})
    looks = figures.look([catalog.for_agent(a) for a in agents], catalog.agent_redis(), None)
    waiting = {
        a.slug: look.pending for a, look in zip(agents, looks, strict=True) if not look.error
    }
    over = [a for a in agents if waiting.get(a.slug, 0) > limit]
    worst = max(waiting.values(), default=0)
    seen = (
        f"At most {worst} task(s) waiting (limit {limit})."
        if not over
        else "Backlog over "
        + f"{limit}: "
        + ", ".join(f"{a.name} {waiting[a.slug]}" for a in over)
        + "."
    )
    return Observation(not over, seen, [a.slug for a in over], {"waiting": waiting, "limit": limit})


def dead_letters(customer: Customer, expect: Any) -> Observation:
    limit = expect["max"]
    counts = {}
    for agent in _agents(customer):
        if agent.state in (State.DRAFT, State.REVOKED):
            continue
        _ids, total = customer_letters(agent, customer)
        counts[agent.slug] = total
    over = [slug for slug, n in counts.items() if n > limit]
    total = sum(counts.values())
    seen = (
        f"{total} dead letter(s) of {customer.company_name} (limit {limit} per agent)."
        if not over
        else f"Dead letters of {customer.company_name} over {limit}: "
        + ", ".join(f"{slug} {counts[slug]}" for slug in over)
        + "."
    )
    return Observation(not over, seen, over, {"dead_letters": counts, "limit": limit})


def slow_interactions(customer: Customer, expect: Any) -> Observation:
    limit = expect["max_ms"]
    since = timezone.now() - RECENT
    rows = list(
        Interaction.objects.filter(customer=customer, at__gte=since)
        .values_list("agent_slug", "latency_ms")
        .order_by("-at")[:5000]
    )
    by_agent: dict[str, list[int]] = {}
    for slug, latency in rows:
        by_agent.setdefault(slug, []).append(latency)
    p95 = {slug: _p95(values) for slug, values in by_agent.items()}
    slow = sorted(slug for slug, value in p95.items() if value > limit)
    seen = (
        f"p95 latency in the last hour is at most {max(p95.values(), default=0)} ms "
        f"(limit {limit} ms) over {len(rows)} task(s)."
        if not slow
        else f"Slow (p95 over {limit} ms): " + ", ".join(f"{s} {p95[s]} ms" for s in slow) + "."
    )
    return Observation(not slow, seen, slow, {"p95_ms": p95, "tasks": len(rows)})


def _p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def auth_errors(customer: Customer, expect: Any) -> Observation:
    limit = expect["max"]
    since = timezone.now() - AUTH_WINDOW
    failing = (
        Interaction.objects.filter(customer=customer, at__gte=since)
        .exclude(outcome=Outcome.SUCCEEDED)
        .values_list("agent_slug", "error")
        .order_by("-at")[:2000]
    )
    counts: dict[str, int] = {}
    example = ""
    for slug, error in failing:
        if AUTH_ERROR.search(error or ""):
            counts[slug] = counts.get(slug, 0) + 1
            example = example or error
    total = sum(counts.values())
    over = sorted(slug for slug, n in counts.items() if n > limit)
    seen = f"{total} failed task(s) with an authentication error in 24 h (limit {limit})." + (
        f" For example: {example[:160]}" if example else ""
    )
    return Observation(total <= limit, seen, over, {"auth_errors": counts})


def trial_active(customer: Customer, expect: Any) -> Observation:
    now = timezone.now()
    ends = customer.trial_ends_at
    if customer.status == SubscriptionStatus.TRIALING and ends is not None and ends > now:
        left = (ends - now).days
        return Observation(True, f"The trial is active until {ends:%Y-%m-%d} ({left} day(s) left).")
    if customer.status in (SubscriptionStatus.ACTIVE,):
        return Observation(True, f"{customer.company_name} is on the paid {customer.plan} plan.")
    when = f" (it ended {ends:%Y-%m-%d})" if ends is not None and ends <= now else ""
    return Observation(
        False, f"The trial is not active: the subscription is {customer.get_status_display().lower()}{when}.",
        [], {"status": customer.status, "trial_ends_at": ends.isoformat() if ends else None},
    )  # fmt: skip


def payment_ok(customer: Customer, expect: Any) -> Observation:
    failed = customer.last_payment_failed_at
    if failed is None or failed < timezone.now() - PAYMENT_WINDOW:
        return Observation(True, "No failed payment in the last 30 days.")
    return Observation(
        False, f"The last payment failed on {failed:%Y-%m-%d %H:%M} UTC; the subscription is "
        f"{customer.get_status_display().lower()}.",
        [], {"last_payment_failed_at": failed.isoformat(), "status": customer.status},
    )  # fmt: skip


def recent_failures(customer: Customer, expect: Any) -> Observation:
    limit = expect["max"]
    since = timezone.now() - RECENT
    failing = list(
        Interaction.objects.filter(customer=customer, at__gte=since)
        .exclude(outcome=Outcome.SUCCEEDED)
        .values_list("agent_slug", flat=True)[:5000]
    )
    counts: dict[str, int] = {}
    for slug in failing:
        counts[slug] = counts.get(slug, 0) + 1
    over = sorted(slug for slug, n in counts.items() if n > limit)
    seen = f"{len(failing)} failed task(s) in the last hour (limit {limit} per agent)."
    return Observation(not over, seen, over, {"failed": counts})


CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check("agents_running", "The customer's agents are running", "", agents_running),
        Check("agents_healthy", "The running agents are healthy", "", agents_healthy),
        Check("crash_loop", "No agent is crash-looping", "max", crash_loop),
        Check("queue_backlog", "Queues are not backed up", "max", queue_backlog),
        Check("dead_letters", "Few dead letters for the customer", "max", dead_letters),
        Check(
            "slow_interactions", "Recent tasks are fast enough (p95)", "max_ms", slow_interactions
        ),
        Check("auth_errors", "No authentication errors", "max", auth_errors),
        Check("trial_active", "The trial (or plan) is active", "", trial_active),
        Check("payment_ok", "No recent failed payment", "", payment_ok),
        Check("recent_failures", "Few failed tasks in the last hour", "max", recent_failures),
    )
}


def evaluate(customer: Customer, name: str, expect: Any) -> Observation:
    """Run check ``name`` now; a check whose source does not answer (Redis away) is not ok and
    says why rather than failing the playbook."""
    check = CHECKS[name]
    try:
        return check.run(customer, expect)
    except (redis.RedisError, OSError, Refused) as exc:
        return Observation(False, f"Could not check: {exc.__class__.__name__}: {str(exc)[:200]}")
