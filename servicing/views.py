"""The Servicing pages: the version dashboard (every agent, its version per replica, what it may
go to, its last upgrade, pins and next window; select agents, then upgrade) and one page per
upgrade (its six steps, the traffic share, the A/B table, promote, pause, abort, roll back).

Views read the request, call ``servicing.services`` / ``servicing.upgrades.requests`` and
render; the upgrade page refreshes its live region every second while the upgrade runs.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent, State
from agents.runtimes.base import RuntimeFailure
from agents.services import require_viewer
from agents.workflows.models import StepRun
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast
from servicing import services, versions, windows
from servicing.models import ACTIVE_UPGRADE, Release, Strategy, Upgrade
from servicing.services import ServicingRefused
from servicing.upgrades import requests, traffic
from servicing.upgrades.gates import DEFAULT_GATES

STEP_IDS = ("plan", "backup", "deploy", "test", "cutover", "verify")


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _next_window(agent: Agent, now) -> str:
    opening = windows.next_opening(agent, now)
    if opening.open:
        return "open now"
    return opening.starts_at.strftime("%Y-%m-%d %H:%M UTC") if opening.starts_at else "none"


def _rows(actor: Actor) -> list[dict[str, Any]]:
    agents = list(Agent.objects.exclude(state=State.REVOKED).order_by("name"))
    active = {
        u.agent_id: requests.sync(u)
        for u in Upgrade.objects.filter(status__in=ACTIVE_UPGRADE).select_related("agent")
    }
    last: dict[int, Upgrade] = {}
    for upgrade in Upgrade.objects.exclude(status__in=ACTIVE_UPGRADE).order_by("-created_at"):
        last.setdefault(upgrade.agent_id, upgrade)
    releases = list(Release.objects.select_related("agent"))
    now = timezone.now()
    rows = []
    for agent in agents:
        applying = services.newest_first(
            r for r in releases if r.agent_id in (None, agent.pk) and
            (not r.template or r.template == (agent.template or "").partition("@")[0])
        )  # fmt: skip
        newest = applying[0].version if applying else ""
        pinned = sorted({r.version for r in applying if r.pinned})
        runs_version = versions.is_version(agent.version)
        available = sorted(
            {
                r.version
                for r in applying
                if not r.pinned
                and (not runs_version or versions.compare(r.version, agent.version) > 0)
            },
            key=lambda v: versions.parse(v).sort_key,
            reverse=True,
        )
        under_way = active.get(agent.pk)
        replicas = []
        if under_way is not None and agent.state == State.RUNNING:
            try:
                replicas = traffic.live_replicas(agent)
            except RuntimeFailure:
                replicas = []
        rows.append({
            "agent": agent, "newest": newest, "available": available, "pinned": pinned,
            "upgrade": under_way, "last": last.get(agent.pk), "replicas": replicas,
            "window": _next_window(agent, now),
        })  # fmt: skip
    return rows


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    rows = _rows(actor)
    targets = sorted(
        {r.version for r in Release.objects.filter(pinned=False)},
        key=lambda v: versions.parse(v).sort_key,
        reverse=True,
    )
    context = {
        "rows": rows,
        "targets": targets,
        "strategies": Strategy.choices,
        "default_steps": ",".join(str(s) for s in requests.DEFAULT_CANARY_STEPS),
        "gates": DEFAULT_GATES,
        "can_operate": actor.has(roles.OPERATE),
        "can_manage": actor.has(roles.MANAGE),
        "recent": Upgrade.objects.select_related("agent")[:15],
        "releases": services.newest_first(Release.objects.select_related("agent"))[:12],
        "under_way": [row for row in rows if row["upgrade"]],
    }
    if htmx_partial(request) and request.GET.get("region") == "under-way":
        return render(request, "servicing/_under_way.html", context)
    return render(request, "servicing/index.html", context)


def _gate_overrides(post) -> dict[str, float]:
    gates: dict[str, float] = {}
    for key in DEFAULT_GATES:
        text = (post.get(f"gate_{key}") or "").strip()
        if text:
            try:
                gates[key] = float(text) if "." in text else int(text)
            except ValueError:
                raise ServicingRefused(
                    f"gates.{key}: {text[:20]!r} is not a number.", "invalid"
                ) from None
    return gates


@require_POST
@answers_refusals(lambda *a, **k: reverse("servicing:index"))
def upgrade(request: HttpRequest) -> HttpResponse:
    """Upgrade the selected agents (one upgrade each, side by side)."""
    actor = _actor(request)
    actor.require(roles.OPERATE, "upgrade agents")
    slugs = [s for s in request.POST.getlist("agents") if s]
    if not slugs:
        raise ServicingRefused("Select at least one agent to upgrade.", "invalid")
    gates = _gate_overrides(request.POST)
    made, refused = [], []
    for slug in slugs[:100]:
        try:
            made.append(
                requests.request_upgrade(
                    actor,
                    services.get_agent(slug),
                    request.POST.get("target_version"),
                    request.POST.get("strategy") or Strategy.ROLLING,
                    steps=request.POST.get("steps"),
                    gate_settings=gates,
                    replicas=request.POST.get("replicas") or None,
                    allow_downgrade=request.POST.get("allow_downgrade") == "on",
                    restore_data=request.POST.get("restore_data") == "on",
                    override_window=request.POST.get("override_window", ""),
                )  # fmt: skip
            )
        except ServicingRefused as refusal:
            if len(slugs) == 1:
                raise
            refused.append(f"{slug}: {refusal.message}")
    for line in refused:
        messages.error(request, line)
    if len(made) == 1:
        return redirect("servicing:upgrade", made[0].pk)
    if made:
        messages.success(request, f"{len(made)} upgrade(s) started.")
    return redirect("servicing:index")


def _steps(upgrade: Upgrade) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], StepRun] = {}
    if upgrade.run_id:
        for row in StepRun.objects.filter(run_id=upgrade.run_id, current=True).order_by("position"):
            rows[(row.role, row.step_id)] = row
    steps = []
    for step_id in STEP_IDS:
        found = rows.get(("forward", step_id))
        steps.append({
            "id": step_id, "title": step_id.capitalize(),
            "status": found.status if found else "pending",
            "detail": (found.detail or found.error or found.log or "") if found else "",
        })  # fmt: skip
    undo = [row for (role, _), row in rows.items() if role == "compensation"]
    return steps + [
        {"id": row.step_id, "title": row.title, "status": row.status, "detail": row.error or "",
         "undo": True}
        for row in sorted(undo, key=lambda r: r.position)
    ]  # fmt: skip


def _detail_context(actor: Actor, upgrade: Upgrade) -> dict[str, Any]:
    replicas = []
    if upgrade.active:
        try:
            replicas = traffic.live_replicas(upgrade.agent)
        except RuntimeFailure:
            replicas = []
    table = [row for row in upgrade.measurements if row.get("old") is not None or row.get("new")]
    return {
        "upgrade": upgrade,
        "agent": upgrade.agent,
        "steps": _steps(upgrade),
        "replicas": replicas,
        "table": table,
        "events": [row for row in upgrade.measurements if row.get("note")],
        "can_operate": actor.has(roles.OPERATE),
        "route": traffic.current_route(upgrade.agent) if upgrade.active else None,
    }


@require_GET
def upgrade_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    try:
        upgrade = requests.get_upgrade(pk)
    except ServicingRefused as missing:
        raise Http404(missing.message) from None
    context = _detail_context(actor, upgrade)
    if htmx_partial(request):
        return render(request, "servicing/_upgrade_live.html", context)
    return render(request, "servicing/upgrade.html", context)


@require_POST
@answers_refusals(lambda pk, action: reverse("servicing:upgrade", args=[pk]))
def command(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    actor = _actor(request)
    upgrade = requests.get_upgrade(pk)
    requests.command(actor, upgrade, action, request.POST.get("reason", ""))
    said = {
        "promote": "Promoted: the upgrade goes on to its next step.",
        "pause": "Paused: traffic stays where it is.",
        "resume": "Resumed.",
        "abort": "Aborting: traffic goes back to the old version.",
        "rollback": "Rolling back: traffic goes back to the old version.",
    }[action]
    if htmx_partial(request):
        return toast(request, said)
    messages.success(request, said)
    return redirect("servicing:upgrade", pk)


@require_POST
@answers_refusals(lambda *a, **k: reverse("servicing:index"))
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    actor = _actor(request)
    upgrade = requests.rollback_agent(
        actor, services.get_agent(slug), request.POST.get("reason", ""),
        restore_data=request.POST.get("restore_data") == "on",
    )  # fmt: skip
    return redirect("servicing:upgrade", upgrade.pk)


@require_POST
@answers_refusals(lambda *a, **k: reverse("servicing:index"))
def scale(request: HttpRequest, slug: str) -> HttpResponse:
    actor = _actor(request)
    result = requests.scale(actor, services.get_agent(slug), request.POST.get("replicas"))
    said = f"{slug} runs {result['replicas']} replica(s) ({result['seconds']} s)."
    if htmx_partial(request):
        response = toast(request, said)
        response["HX-Trigger"] = "servicing-changed"
        return response
    messages.success(request, said)
    return redirect("servicing:index")
