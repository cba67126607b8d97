"""What the Logs, Events and Alerts pages share: who may look, which agent the page shows, and
the filters in the URL (a bad one is a sentence on the page, answered 400)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from agents.models import Agent
from agents.services import require_viewer
from observability import context as agent_context
from portal.actors import Actor
from portal.htmx import htmx_partial
from portal.refusals import BadRequest

RANGES = {
    "15m": ("Last 15 min", timedelta(minutes=15)),
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 h", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
RANGE_CHOICES = [
    ("", "Any time"),
    *((key, label) for key, (label, _) in RANGES.items()),
    ("custom", "Custom…"),
]
# Parameters that say where in a list a page starts: they do not survive a change of filter.
CURSORS = ("before", "after", "page", "day")


class FilterError(BadRequest, ValueError):
    """A filter value the page cannot use; the message says what to write instead. A ``BadRequest``
    (400) at every door; still the ``ValueError`` it always was."""


def viewer(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def context_of(
    request: HttpRequest, actor: Actor, *, remember: bool = True
) -> agent_context.Resolved:
    """The agent the page shows; a slug that names no agent becomes a message. Only a page
    someone opens remembers the choice: its htmx refreshes (polls, live updates, filters) and
    downloads read it, so a tab left open cannot undo a choice made in another tab."""
    if not remember or htmx_partial(request):
        return agent_context.Resolved(agent_context.peek(request))
    resolved = agent_context.resolve(request, actor)
    if resolved.problem:
        messages.warning(request, resolved.problem)
    return resolved


def shown(request: HttpRequest, agent: Agent | None) -> dict:
    """The "Showing: WowCache ✕" chip, and the URLs that keep the page's filters."""
    return {
        "shown_agent": agent,
        "clear_context_url": agent_context.with_agent(request, None),
        "agent_param": agent.slug if agent else agent_context.ALL,
    }


def query(request: HttpRequest, **changes: object) -> str:
    """The request's query string without its cursors, with ``changes`` applied."""
    params = request.GET.copy()
    for cursor in CURSORS:
        params.pop(cursor, None)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return params.urlencode()


@dataclass(frozen=True)
class TimeRange:
    key: str
    since: datetime | None
    until: datetime | None
    since_text: str
    until_text: str


def time_range(request: HttpRequest) -> TimeRange:
    key = request.GET.get("range", "").strip()
    since_text = request.GET.get("from", "").strip()
    until_text = request.GET.get("until", "").strip()
    if key in RANGES:
        return TimeRange(key, timezone.now() - RANGES[key][1], None, "", "")
    if key not in ("", "custom"):
        choices = ", ".join(RANGES)
        raise FilterError(f"Unknown time range “{key}”: choose {choices} or custom.")
    since = _moment(since_text, "start")
    until = _moment(until_text, "end")
    if since and until and since >= until:
        raise FilterError("The start of the time range is not before its end: swap them.")
    custom = "custom" if (since or until or key == "custom") else ""
    return TimeRange(custom, since, until, since_text, until_text)


def _moment(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"The {name} of the time range, “{text}”, is not a date and time: "
            "write it as 2026-11-21 14:30."
        ) from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def choice(request: HttpRequest, name: str, choices: list[str], label: str) -> str:
    value = request.GET.get(name, "").strip()
    if value and value not in choices:
        raise FilterError(f"Unknown {label} “{value}”: choose one of {', '.join(choices)}.")
    return value


def cursor_id(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "").strip()
    if not value:
        return None
    if not value.isdecimal() or len(value) > 18:
        raise FilterError(f"{name}=“{value}” is not a position in the list: use the page links.")
    return int(value)


def answer(request: HttpRequest, template: str, context: dict, problem: str = "") -> HttpResponse:
    """The page (or partial) with a bad filter's message: 400, so scripts notice."""
    context["problem"] = problem
    return render(request, template, context, status=400 if problem else 200)
