"""Servicing's API: releases under /api/platform/servicing, and an agent's versions at
/api/platform/agents/{slug}/versions.

Reading needs a role. Publishing, pinning and unpinning need Admin, marking a release bad
Operator; each calls one function of ``servicing.services``, which checks the role, writes the
audit entry and refuses with a sentence answered ``{"detail", "code"}`` by ``portal.api``'s one
handler: 400 bad input (a version that is not one, config changes agentd would refuse, a filter
naming no agent), 403 role, 404 no such release or agent, 409 a version published already, a
release pinned (or not) already. Schemas: ``servicing.schemas``.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from portal import roles
from portal.actors import Actor
from portal.schemas import Problem
from servicing import services
from servicing.schemas import (
    AgentVersions,
    ReasonIn,
    ReleaseIn,
    ReleaseOut,
    Releases,
    release_out,
    releases_out,
    versions_out,
)
from servicing.services import ServicingRefused

router = Router(tags=["servicing"])
# The routes under an agent's path, mounted ahead of the agents app's router: its
# ``POST /agents/{slug}/{action}`` would otherwise take ``/agents/{slug}/versions`` (a 405).
agent_router = Router(tags=["servicing"])

ROOT = "/servicing"
READ = {400: Problem, 403: Problem, 404: Problem}
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem}


@agent_router.get(
    "/agents/{slug}/versions",
    response={200: AgentVersions, **READ},
    summary="An agent's version, the versions it may go to, the changelog and the pinned ones",
)
def agent_versions(request: HttpRequest, slug: str):
    return versions_out(services.versions_of(services.get_agent(slug)))


@router.get(
    f"{ROOT}/releases",
    response={200: Releases, **READ},
    summary="The releases, newest version first (?agent=slug: those that apply to that agent)",
)
def list_releases(request: HttpRequest, agent: str | None = None):
    chosen = None
    if agent is not None:
        try:
            chosen = services.get_agent(agent)
        except ServicingRefused as unknown:
            # A filter naming no agent is bad input (400), not a missing page.
            raise ServicingRefused(f"agent: {unknown.message}", "invalid") from None
    return releases_out(services.list_releases(Actor.from_request(request), chosen))


@router.post(
    f"{ROOT}/releases",
    response={201: ReleaseOut, **ACT},
    summary="Publish a release for the fleet, one template (template) or one agent (agent)",
)
def publish_release(request: HttpRequest, payload: ReleaseIn):
    actor = Actor.from_request(request)
    actor.require(roles.MANAGE, "publish a release")  # before saying which agents exist
    agent = None
    if payload.agent is not None:
        try:
            agent = services.get_agent(payload.agent)
        except ServicingRefused as unknown:
            raise ServicingRefused(f"agent: {unknown.message}", "invalid") from None
    release = services.publish(
        actor, payload.version, payload.artifact, changelog=payload.changelog,
        config_changes=payload.config_changes, agent=agent, template=payload.template,
    )  # fmt: skip
    return Status(201, release_out(release))


@router.get(
    f"{ROOT}/releases/{{release_id}}",
    response={200: ReleaseOut, **READ},
    summary="One release",
)
def get_release(request: HttpRequest, release_id: str):
    return release_out(services.get_release(release_id))


@router.post(
    f"{ROOT}/releases/{{release_id}}/bad",
    response={200: ReleaseOut, **ACT},
    summary="Mark a release bad (Operator); it is pinned too",
)
def mark_bad(request: HttpRequest, release_id: str, payload: ReasonIn):
    release = services.get_release(release_id)
    return release_out(services.mark_bad(Actor.from_request(request), release, payload.reason))


@router.post(
    f"{ROOT}/releases/{{release_id}}/pin",
    response={200: ReleaseOut, **ACT},
    summary="Pin a release (Admin): no upgrade may take an agent to it",
)
def pin(request: HttpRequest, release_id: str, payload: ReasonIn):
    release = services.get_release(release_id)
    return release_out(services.pin(Actor.from_request(request), release, payload.reason))


@router.post(
    f"{ROOT}/releases/{{release_id}}/unpin",
    response={200: ReleaseOut, **ACT},
    summary="Unpin a release (Admin, with a reason)",
)
def unpin(request: HttpRequest, release_id: str, payload: ReasonIn):
    release = services.get_release(release_id)
    return release_out(services.unpin(Actor.from_request(request), release, payload.reason))
