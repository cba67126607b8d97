"""The help desk API's shapes (customers); the parts keep theirs beside their routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import cast

from django.urls import reverse
from ninja import Schema

from helpdesk import overview
from helpdesk.customers import Hit


class CustomerHit(Schema):
    customer_id: str
    company_name: str
    email: str
    domain: str
    agents_count: int
    status: str
    plan: str
    matched: str
    matched_text: str
    score: float


class SearchResults(Schema):
    customers: list[CustomerHit]


def search_out(hits: list[Hit]) -> dict:
    return {
        "customers": [
            {
                "customer_id": hit.customer.key,
                "company_name": hit.customer.company_name,
                "email": hit.customer.email,
                "domain": hit.customer.domain,
                "agents_count": hit.agents_count,
                "status": hit.customer.status,
                "plan": hit.customer.plan,
                "matched": hit.matched,
                "matched_text": hit.matched_text,
                "score": round(hit.score, 3),
            }
            for hit in hits
        ]
    }


class ContactOut(Schema):
    name: str
    email: str
    title: str
    primary: bool


class CustomerOut(Schema):
    customer_id: str
    company_name: str
    domain: str
    email: str
    plan: str
    status: str
    seats: int
    monthly_amount_cents: int
    trial_started_at: datetime | None
    trial_ends_at: datetime | None
    trial_days_left: int | None
    trial_resets: int
    last_payment_failed_at: datetime | None
    created_at: datetime
    contacts: list[ContactOut]
    contacts_masked: bool


class AgentOut(Schema):
    slug: str
    name: str
    state: str
    health: str
    version: str
    replicas: int
    template: str
    backlog: int | None
    lag_seconds: float | None
    dead_letters: int | None
    open_errors: int
    queue_error: str


class IssueOut(Schema):
    kind: str  # error, ticket
    title: str
    agent: str
    status: str
    at: datetime
    link: str


class InteractionOut(Schema):
    at: datetime
    agent: str
    kind: str
    outcome: str
    latency_ms: int
    attempts: int
    error: str
    version: str
    message_id: str


class EventOut(Schema):
    at: datetime
    kind: str
    agent: str
    text: str
    link: str
    bad: bool


class DayOut(Schema):
    day: date
    succeeded: int
    failed: int


class GrantOut(Schema):
    id: int
    username: str
    role: str
    expires_at: datetime
    reason: str


class Overview(Schema):
    customer: CustomerOut
    agents: list[AgentOut]
    recent_issues: list[IssueOut]
    interactions: list[InteractionOut]
    events: list[EventOut]
    activity: list[DayOut]
    grants: list[GrantOut]
    totals: dict[str, int]


def overview_out(view: overview.Overview) -> dict:
    c = view.customer
    issues = [
        {"kind": "error", "title": e.summary, "agent": e.agent.slug, "status": e.status,
         "at": e.last_seen_at, "link": reverse("agents:detail", args=[e.agent.slug])}
        for e in view.errors
    ] + [
        {"kind": "ticket", "title": f"{t.number} {t.subject}", "agent": "", "status": t.status,
         "at": t.created_at, "link": t.url}
        for t in view.tickets if t.open
    ]  # fmt: skip
    issues.sort(key=lambda issue: cast("datetime", issue["at"]), reverse=True)
    return {
        "customer": {
            "customer_id": c.key, "company_name": c.company_name, "domain": c.domain,
            "email": c.email, "plan": c.plan, "status": c.status, "seats": c.seats,
            "monthly_amount_cents": c.monthly_amount_cents,
            "trial_started_at": c.trial_started_at, "trial_ends_at": c.trial_ends_at,
            "trial_days_left": view.trial_days_left, "trial_resets": c.trial_resets,
            "last_payment_failed_at": c.last_payment_failed_at, "created_at": c.created_at,
            "contacts": [
                {"name": p.name, "email": p.email, "title": p.title, "primary": p.primary}
                for p in view.contacts
            ],
            "contacts_masked": view.masked,
        },
        "agents": [
            {
                "slug": r.agent.slug, "name": r.agent.name, "state": r.agent.state,
                "health": r.agent.health, "version": r.agent.version,
                "replicas": r.agent.replicas, "template": r.agent.template,
                "backlog": r.backlog, "dead_letters": r.dead_letters,
                "lag_seconds": None if r.queue is None else r.queue.lag_seconds,
                "open_errors": r.open_errors,
                "queue_error": "" if r.queue is None else r.queue.error,
            }
            for r in view.agents
        ],
        "recent_issues": issues,
        "interactions": [
            {"at": i.at, "agent": i.agent_slug, "kind": i.kind, "outcome": i.outcome,
             "latency_ms": i.latency_ms, "attempts": i.attempts, "error": i.error,
             "version": i.version, "message_id": i.message_id}
            for i in view.interactions
        ],
        "events": [
            {"at": e.at, "kind": e.kind, "agent": e.agent, "text": e.text, "link": e.link,
             "bad": e.bad}
            for e in view.events
        ],
        "activity": [
            {"day": d.day.date(), "succeeded": d.succeeded, "failed": d.failed}
            for d in view.activity
        ],
        "grants": [
            {"id": g.pk, "username": g.grantee.get_username(), "role": g.role,
             "expires_at": g.expires_at, "reason": g.reason}
            for g in view.grants
        ],
        "totals": view.totals,
    }  # fmt: skip
