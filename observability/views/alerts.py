"""The Alerts page, an alert's address, and the buttons that acknowledge, silence or resolve."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from observability import alerts
from observability.models import Alert, Severity
from observability.views.shared import (
    FilterError,
    answer,
    choice,
    context_of,
    query,
    shown,
    viewer,
)
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial, refusal, safe_next, toast

ALERT_PAGE_SIZE = 50
SILENCE_CHOICES = [(15, "15 min"), (60, "1 h"), (240, "4 h"), (1440, "24 h")]
ALERT_TABS = [
    ("open", "Open"),
    ("acknowledged", "Acknowledged"),
    ("resolved", "Resolved"),
    ("all", "All"),
]


def _describe_alert(alert: Alert, now: datetime) -> Alert:
    alert.unit = alerts.rule_metric_unit(alert.rule.metric) if alert.rule.metric else ""
    alert.silenced = alert.is_silenced(now)
    alert.fired_ago = ago(alert.fired_at, now)
    alert.seen_ago = ago(alert.last_seen_at, now)
    alert.acknowledged_ago = ago(alert.acknowledged_at, now)
    alert.resolved_ago = ago(alert.resolved_at, now)
    return alert


def ago(moment: datetime | None, now: datetime) -> str:
    """ "just now", "40 s ago", "3 min ago", "2 h 5 min ago", "3 days ago"."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    days = hours // 24
    return f"{days} day{'s' if days != 1 else ''} ago"


def _alert_filters(request: HttpRequest) -> dict:
    return {
        "status": choice(request, "status", [key for key, _ in ALERT_TABS], "status") or "open",
        "severity": choice(request, "severity", Severity.values, "severity"),
    }


@require_GET
@vary_on_headers("HX-Request")
def alert_list(request: HttpRequest) -> HttpResponse:
    actor = viewer(request)
    resolved = context_of(request, actor)
    if resolved.redirect_to:
        return redirect(resolved.redirect_to)
    agent = resolved.agent
    partial = htmx_partial(request)
    context = {
        **shown(request, agent),
        "tabs": [(key, label, "?" + query(request, status=key)) for key, label in ALERT_TABS],
        "severities": Severity.choices,
        "silence_choices": SILENCE_CHOICES,
        "can_act": actor.has(roles.OPERATE),
        "filters": {"status": "open", "severity": ""},
        "page": None,
        "open_counts": alerts.open_counts(agent),
        "next_url": request.get_full_path(),
    }
    context["open_total"] = sum(context["open_counts"].values())
    try:
        filters = _alert_filters(request)
        context["filters"] = filters
        found = alerts.search(
            agent=agent,
            status=None if filters["status"] == "all" else filters["status"],
            severity=filters["severity"] or None,
        )
    except (FilterError, alerts.AlertActionError) as problem:
        template = "observability/alerts.html#results" if partial else "observability/alerts.html"
        return answer(request, template, context, str(problem))
    page = Paginator(found, ALERT_PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    for alert in page:
        _describe_alert(alert, now)
    context["page"] = page
    context["page_query"] = query(request)
    if partial:
        return render(request, "observability/alerts.html#results", context)
    return render(request, "observability/alerts.html", context)


@require_GET
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """An alert's address (toasts, webhooks, the API): its agent's alerts, scrolled to it."""
    viewer(request)
    alert = _get_alert(pk)
    status = "open" if alert.is_open else "resolved"
    params = urlencode({"agent": alert.agent.slug, "status": status})
    return redirect(f"{reverse('observability:alerts')}?{params}#alert-{alert.pk}")


def _get_alert(pk: int) -> Alert:
    alert = Alert.objects.select_related("agent", "rule").filter(pk=pk).first()
    if alert is None:
        raise Http404(f"There is no alert #{pk}.")
    return alert


@require_POST
def alert_action(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    """Acknowledge, silence or resolve one alert (Operators; the service refuses others).

    A refusal says why: a toast for htmx (portal.js lets a 4xx toast in for forms marked
    data-refusal-toast), otherwise the 403 page for a role, or a message back on the page.
    """
    actor = Actor.from_request(request)
    alert = _get_alert(pk)
    note = request.POST.get("note", "").strip()[:300]
    try:
        if verb == "acknowledge":
            alert = alerts.acknowledge(alert, actor, note)
            done = f"Alert #{alert.pk} acknowledged: {alert.summary}"
        elif verb == "resolve":
            alert = alerts.resolve(alert, actor, note)
            done = f"Alert #{alert.pk} resolved: {alert.summary}"
        elif verb == "silence":
            minutes = _silence_minutes(request.POST.get("minutes", ""))
            alert = alerts.silence(alert, actor, timedelta(minutes=minutes))
            until = timezone.localtime(alert.silenced_until)
            done = f"Alert #{alert.pk} silenced until {until:%H:%M}: {alert.summary}"
        else:
            raise Http404(f"{verb!r} is not something to do to an alert.")
    except PermissionDenied as denied:
        if not htmx_partial(request):
            raise
        return toast(request, str(denied), "error", status=403)
    except alerts.AlertActionError as refused:
        # The page answers every alert refusal 409, a bad duration too (the API tells 400 apart).
        back = reverse("observability:alerts")
        return refusal(request, refused.message, status=409, fallback=back)
    if htmx_partial(request):
        context = {
            "alert": _describe_alert(alert, timezone.now()),
            "can_act": actor.has(roles.OPERATE),
            "silence_choices": SILENCE_CHOICES,
            "next_url": safe_next(request),
            "toast": done,
            "toast_level": "success",
        }
        return render(request, "observability/alerts.html#alert-result", context)
    messages.success(request, done)
    return redirect(safe_next(request, reverse("observability:alerts")))


def _silence_minutes(value: str) -> int:
    allowed = {minutes for minutes, _ in SILENCE_CHOICES}
    if not value.isdecimal() or int(value) not in allowed:
        raise alerts.AlertActionError("Silence for 15 min, 1 h, 4 h or 24 h.", "invalid_duration")
    return int(value)
