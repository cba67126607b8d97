"""The upgrade endpoints: under an agent (upgrade, rollback, scale: mounted ahead of the agents
router, whose ``POST /agents/{slug}/{action}`` would take them) and under /servicing/upgrades
(list, one, and the commands promote, pause, resume, abort, rollback).

Each calls ``servicing.upgrades.requests``, which checks the role (Operator), audits, and
refuses with a sentence answered ``{"detail", "code"}``: 400 bad input, 403 role, 404 no such
agent or upgrade, 409 not now (pinned, under way, not running, outside the window).
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from portal import roles
from portal.actors import Actor
from portal.schemas import Problem
from servicing import services
from servicing.models import Upgrade, UpgradeStatus
from servicing.services import ServicingRefused
from servicing.upgrades import requests
from servicing.upgrades.schemas import (
    CommandIn,
    RollbackIn,
    RolloutIn,
    ScaleIn,
    ScaleOut,
    UpgradeIn,
    UpgradeOut,
    Upgrades,
    upgrade_out,
)

router = Router(tags=["servicing"])
agent_router = Router(tags=["servicing"])

READ = {400: Problem, 403: Problem, 404: Problem}
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem}
LIST_LIMIT = 200


@agent_router.post(
    "/agents/{slug}/upgrade",
    response={202: UpgradeOut, **ACT},
    summary="Upgrade an agent to target_version by a strategy (rolling, blue-green, canary)",
)
def upgrade_agent(request: HttpRequest, slug: str, payload: UpgradeIn):
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "upgrade agents")
    upgrade = requests.request_upgrade(
        actor, services.get_agent(slug), payload.target_version, payload.strategy,
        steps=payload.steps, gate_settings=payload.gates, replicas=payload.replicas,
        config=payload.config, allow_downgrade=payload.allow_downgrade,
        restore_data=payload.restore_data, override_window=payload.override_window,
    )  # fmt: skip
    return Status(202, upgrade_out(upgrade))


@agent_router.post(
    "/agents/{slug}/rollback",
    response={202: UpgradeOut, **ACT},
    summary="Roll an agent back: the upgrade under way, or the last one that finished",
)
def rollback_agent(request: HttpRequest, slug: str, payload: RollbackIn):
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "roll back agents")
    upgrade = requests.rollback_agent(
        actor, services.get_agent(slug), payload.reason, restore_data=payload.restore_data
    )
    return Status(202, upgrade_out(upgrade))


@agent_router.post(
    "/agents/{slug}/scale",
    response={200: ScaleOut, **ACT},
    summary="Change an agent's replica count, readiness-gated",
)
def scale_agent(request: HttpRequest, slug: str, payload: ScaleIn):
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "scale agents")
    return requests.scale(actor, services.get_agent(slug), payload.replicas)


@agent_router.post(
    "/agents/{slug}/config/rollout",
    response={202: UpgradeOut, **ACT},
    summary="Roll a config change out like a version: replica by replica, gated",
)
def rollout_config(request: HttpRequest, slug: str, payload: RolloutIn):
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "change an agent's config")
    upgrade = requests.rollout_config(
        actor, services.get_agent(slug), payload.config, gate_settings=payload.gates
    )
    return Status(202, upgrade_out(upgrade))


@router.get(
    "/servicing/upgrades",
    response={200: Upgrades, **READ},
    summary="Upgrades, newest first (?agent=slug, ?status=running|succeeded|rolled_back|...)",
)
def list_upgrades(request: HttpRequest, agent: str | None = None, status: str | None = None):
    Actor.from_request(request).require(roles.VIEW, "see upgrades")
    upgrades = Upgrade.objects.select_related("agent")
    if agent is not None:
        try:
            upgrades = upgrades.filter(agent=services.get_agent(agent))
        except ServicingRefused as unknown:
            raise ServicingRefused(f"agent: {unknown.message}", "invalid") from None
    if status is not None:
        if status not in UpgradeStatus.values:
            raise ServicingRefused(
                f"status {status[:30]!r} is not one; use {', '.join(UpgradeStatus.values)}.",
                "invalid",
            )
        upgrades = upgrades.filter(status=status)
    return {"upgrades": [upgrade_out(requests.sync(u)) for u in upgrades[:LIST_LIMIT]]}


@router.get(
    "/servicing/upgrades/{upgrade_id}",
    response={200: UpgradeOut, **READ},
    summary="One upgrade, with its measured steps (the A/B table)",
)
def get_upgrade(request: HttpRequest, upgrade_id: str):
    Actor.from_request(request).require(roles.VIEW, "see upgrades")
    return upgrade_out(requests.get_upgrade(upgrade_id))


@router.post(
    "/servicing/upgrades/{upgrade_id}/{action}",
    response={200: UpgradeOut, **ACT},
    summary="promote, pause, resume, abort or rollback a running upgrade",
)
def command_upgrade(request: HttpRequest, upgrade_id: str, action: str, payload: CommandIn):
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "steer upgrades")
    upgrade = requests.get_upgrade(upgrade_id)
    return upgrade_out(requests.command(actor, upgrade, action, payload.reason))
