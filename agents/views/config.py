"""The config panel on an agent's page: its live config, a hot patch, and a roll-back."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from agents import services
from agents.models import Agent
from agents.views.shared import get_agent_or_404
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals
from portal.refusals import Refused

PANEL = "agents/config_panel.html"


def panel_context(agent: Agent, actor: Actor, **more) -> dict:
    return {
        "agent": agent,
        "config_json": json.dumps(agent.config or {}, indent=2, sort_keys=True),
        "previous_json": (
            json.dumps(agent.previous_config, indent=2, sort_keys=True)
            if agent.previous_config is not None
            else ""
        ),
        "can_change_config": actor.has(roles.OPERATE),
        "patch_text": "",
        **more,
    }


def _detail_url(slug: str, *args, **kwargs) -> str:
    return f"/agents/{slug}/"


@require_POST
@answers_refusals(_detail_url)
def patch(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    text = request.POST.get("patch", "")
    try:
        body = json.loads(text or "{}")
    except ValueError as exc:
        return _panel(
            request, agent, actor, 400, problem=f"The patch is not JSON: {exc}.", patch_text=text
        )
    try:
        applied = services.patch_config(agent, body, actor)
    except Refused as refused:
        if refused.status != 400:
            raise
        return _panel(request, agent, actor, 400, problem=refused.message, patch_text=text)
    return _panel(request, applied.agent, actor, 200, outcome=applied)


@require_POST
@answers_refusals(_detail_url)
def roll_back(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    applied = services.roll_back_config(get_agent_or_404(slug), actor)
    return _panel(request, applied.agent, actor, 200, outcome=applied, rolled_back=True)


def _panel(request, agent, actor, status, **more) -> HttpResponse:
    return render(request, PANEL, panel_context(agent, actor, **more), status=status)
