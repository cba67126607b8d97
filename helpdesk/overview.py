"""One customer at a glance: profile, plan and trial, each agent with its state, health,
version and queue figures, open errors, open tickets, thirty days of activity, and the last 50
interactions beside the changes that touched the customer's agents (deploys, restarts, crashes,
upgrades, config changes, errors).

:func:`customer_overview` asks the database a fixed number of queries and Redis one pipeline,
however many agents, interactions or events the customer has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, AgentError, AgentTransition, State
from helpdesk.customers import require_viewer
from helpdesk.models import (
    AccessGrant,
    Contact,
    Customer,
    Interaction,
    InteractionDay,
    Outcome,
    Ticket,
)
from observability.queues import catalog, figures
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from servicing.models import Upgrade

RECENT = 50
# The agents the overview page lists (and offers quick actions on), those needing a person
# first; a customer with hundreds has "show all". The API answers every one.
AGENTS_SHOWN = 25
ACTIVITY_DAYS = 30
EVENTS = 40
EVENT_DAYS = 7
CONFIG_ACTIONS = ("agent.edit", "agent.config.patch", "agent.config.rollback", "agent.memory")


@dataclass
class AgentRow:
    agent: Agent
    queue: figures.Figures | None = None
    open_errors: int = 0

    @property
    def backlog(self) -> int | None:
        return None if self.queue is None or self.queue.error else self.queue.pending

    @property
    def dead_letters(self) -> int | None:
        return None if self.queue is None or self.queue.error else self.queue.dead_letters


@dataclass(frozen=True)
class Event:
    """Something that touched one of the customer's agents."""

    at: datetime
    kind: str  # deploy, lifecycle, crash, upgrade, config, error
    agent: str
    text: str
    link: str = ""
    bad: bool = False


@dataclass(frozen=True)
class Day:
    day: datetime
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


@dataclass
class Overview:
    customer: Customer
    contacts: list[Contact]
    masked: bool
    agents: list[AgentRow]
    errors: list[AgentError]
    tickets: list[Ticket]
    grants: list[AccessGrant]
    interactions: list[Interaction]
    failures_only: bool
    events: list[Event]
    activity: list[Day]
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def activity_peak(self) -> int:
        return max((day.total for day in self.activity), default=0)

    @property
    def trial_days_left(self) -> int | None:
        ends = self.customer.trial_ends_at
        if ends is None:
            return None
        return (ends - timezone.now()).days


def mask_email(email: str) -> str:
    name, at, domain = email.partition("@")
    if not at:
        return "•••"
    return f"{name[:1]}•••@{domain}"


def contacts_masked(actor: Actor) -> bool:
    return settings.HELPDESK_MASK_CONTACTS and not actor.has(roles.OPERATE)


def customer_overview(actor: Actor, customer: Customer, *, failures_only: bool = False) -> Overview:
    require_viewer(actor)
    now = timezone.now()
    masked = contacts_masked(actor)
    contacts = list(customer.contacts.all())
    if masked:
        for contact in contacts:
            contact.email = mask_email(contact.email)
        customer.email = mask_email(customer.email) if customer.email else ""
    agents = list(
        Agent.objects.filter(customer_link__customer=customer)
        .exclude(state=State.REVOKED)
        .annotate(
            open_errors=Count("errors", filter=Q(errors__status__in=AgentError.OPEN_STATUSES))
        )
        .order_by("name")
    )
    rows = [AgentRow(agent, open_errors=agent.open_errors) for agent in agents]
    _queue_figures(rows)
    errors = list(
        AgentError.objects.filter(agent__in=agents, status__in=AgentError.OPEN_STATUSES)
        .select_related("agent")
        .order_by("-last_seen_at")[:20]
    )
    tickets = list(customer.tickets.order_by("-created_at")[:20])
    grants = list(
        customer.grants.filter(revoked_at__isnull=True, expires_at__gt=now).select_related(
            "grantee"
        )
    )
    recent = customer.interactions.all()
    if failures_only:
        recent = recent.exclude(outcome=Outcome.SUCCEEDED)
    interactions = list(recent.order_by("-at", "-id")[:RECENT])
    # The changes of the last week at least, and as far back as the interactions shown go.
    since = now - timedelta(days=EVENT_DAYS)
    if interactions:
        since = min(since, interactions[-1].at)
    events = _events(agents, since)
    activity = _activity(customer, now)
    totals = {
        "agents": len(rows),
        "running": sum(1 for row in rows if row.agent.state == "RUNNING"),
        "open_errors": sum(row.open_errors for row in rows),
        "open_tickets": sum(1 for ticket in tickets if ticket.open),
        "backlog": sum(row.backlog or 0 for row in rows),
        "dead_letters": sum(row.dead_letters or 0 for row in rows),
        "interactions_30d": sum(day.total for day in activity),
        "failed_30d": sum(day.failed for day in activity),
    }
    return Overview(
        customer, contacts, masked, rows, errors, tickets, grants, interactions, failures_only,
        events, activity, totals,
    )  # fmt: skip


def attention_first(rows: list[AgentRow]) -> list[AgentRow]:
    """The rows in the order a person should look at them: errored, unhealthy or degraded
    agents, then those with open errors, dead letters or a backlog (most first), then by name."""
    from agents.choices import Health

    def key(row: AgentRow) -> tuple:
        agent = row.agent
        troubled = agent.state == State.ERRORED or agent.health in (
            Health.UNHEALTHY,
            Health.DEGRADED,
        )
        return (not troubled, -row.open_errors, -(row.dead_letters or 0), -(row.backlog or 0),
                agent.name)  # fmt: skip

    return sorted(rows, key=key)


def _queue_figures(rows: list[AgentRow]) -> None:
    """Each agent's stream figures, one Redis pipeline for all (none when Redis is away)."""
    if not rows:
        return
    refs = [catalog.for_agent(row.agent) for row in rows]
    looks = figures.look(refs, catalog.agent_redis(), None)
    for row, look in zip(rows, looks, strict=True):
        row.queue = look


def _activity(customer: Customer, now: datetime) -> list[Day]:
    """The last ACTIVITY_DAYS days (UTC), from the per-day counts the ingester keeps."""
    start = (
        (now - timedelta(days=ACTIVITY_DAYS - 1))
        .astimezone(UTC)
        .replace(hour=0, minute=0, second=0, microsecond=0)
    )
    by_day = {
        row.day: (row.succeeded, row.failed)
        for row in InteractionDay.objects.filter(customer=customer, day__gte=start.date())
    }
    days = []
    for offset in range(ACTIVITY_DAYS):
        day = start + timedelta(days=offset)
        ok, bad = by_day.get(day.date(), (0, 0))
        days.append(Day(day, ok, bad))
    return days


def _events(agents: list[Agent], since: datetime) -> list[Event]:
    """Transitions, upgrades, config changes and errors of ``agents`` since ``since``, newest
    first (at most EVENTS): four queries."""
    if not agents:
        return []
    slugs = {agent.pk: agent.slug for agent in agents}
    names = {agent.slug: agent.name for agent in agents}
    events: list[Event] = []
    for t in AgentTransition.objects.filter(agent__in=agents, at__gte=since).order_by("-at")[
        :EVENTS
    ]:
        slug = slugs[t.agent_id]
        kind = "crash" if t.action == "fail" else "deploy" if t.action == "deploy" else "lifecycle"
        text = f"{names[slug]}: {t.action} ({t.from_state} → {t.to_state}) by {t.actor}"
        if t.reason:
            text += f": {t.reason[:120]}"
        events.append(
            Event(t.at, kind, slug, text, reverse("agents:detail", args=[slug]), t.action == "fail")
        )
    for u in Upgrade.objects.filter(agent__in=agents, created_at__gte=since).order_by(
        "-created_at"
    )[:EVENTS]:
        slug = slugs[u.agent_id]
        text = (
            f"{names[slug]}: {u.strategy} upgrade {u.from_version} → {u.to_version}, "
            f"{u.get_status_display().lower()}"
        )
        events.append(
            Event(
                u.started_at or u.created_at,
                "upgrade",
                slug,
                text,
                reverse("servicing:upgrade", args=[u.pk]),
                u.status in ("rolled_back", "failed"),
            )  # fmt: skip
        )
    for entry in AuditEntry.objects.filter(
        target__in=list(names), action__in=CONFIG_ACTIONS, at__gte=since
    ).order_by("-at")[:EVENTS]:
        text = f"{names[entry.target]}: {entry.action.removeprefix('agent.')} by {entry.actor}"
        events.append(
            Event(
                entry.at,
                "config",
                entry.target,
                text,
                reverse("agents:detail", args=[entry.target]),
            )
        )
    for error in AgentError.objects.filter(agent__in=agents, occurred_at__gte=since).order_by(
        "-occurred_at"
    )[:EVENTS]:
        slug = slugs[error.agent_id]
        events.append(
            Event(
                error.occurred_at,
                "error",
                slug,
                f"{names[slug]}: {error.summary[:160]} ({error.get_status_display().lower()})",
                reverse("agents:detail", args=[slug]),
                error.is_open,
            )  # fmt: skip
        )
    events.sort(key=lambda event: event.at, reverse=True)
    return events[:EVENTS]


def activity_bars(days: list[Day], height: float = 58.0) -> list[dict]:
    """SVG geometry of the activity chart: one 8-wide bar per day (10 apart), failures stacked
    on top of successes, scaled to the busiest day."""
    peak = max((day.total for day in days), default=0) or 1
    bars = []
    for index, day in enumerate(days):
        ok_h = round(day.succeeded / peak * height, 2)
        bad_h = round(day.failed / peak * height, 2)
        bars.append({
            "day": day.day, "ok": day.succeeded, "bad": day.failed, "x": index * 10 + 1,
            "ok_y": round(60 - ok_h, 2), "ok_h": ok_h,
            "bad_y": round(60 - ok_h - bad_h, 2), "bad_h": bad_h,
        })  # fmt: skip
    return bars


def timeline(overview: Overview) -> list[tuple[str, Any]]:
    """Interactions and events in one list, newest first: ("interaction", row) / ("event", e)."""
    items: list[tuple[datetime, str, Any]] = [
        (i.at, "interaction", i) for i in overview.interactions
    ]
    items += [(e.at, "event", e) for e in overview.events]
    items.sort(key=lambda item: item[0], reverse=True)
    return [(kind, value) for _, kind, value in items]
