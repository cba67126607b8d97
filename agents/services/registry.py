"""The registry of agents: the 14 Platform CoE agents seeded, settings changed, the fixes a recovery applies to an agent's settings."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import events
from agents.catalog import PLATFORM_AGENTS
from agents.models import (
    Agent,
    Tier,
)
from agents.placement import runtime_for, spec_for
from agents.services.graph import dependency_order
from agents.services.refusals import ActionRefused
from agents.services.supervision import jsonable
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

logger = logging.getLogger(__name__)


# --- the registry ------------------------------------------------------------------------


@audits_refusals("agents.seed")
def seed_platform_agents(actor: Actor) -> tuple[int, int]:
    """Register the 14 Platform CoE agents in DRAFT. Idempotent: existing agents keep their
    state and settings; only missing agents and missing dependency links are added.

    Returns (created, links added).
    """
    actor.require(roles.MANAGE, "seed the agent registry")
    created = links = 0
    filled: list[str] = []
    with transaction.atomic():
        by_slug = {}
        for definition in PLATFORM_AGENTS:
            agent, was_created = Agent.objects.get_or_create(
                slug=definition.slug,
                defaults={
                    "name": definition.name,
                    "description": definition.description,
                    "tier": Tier.PLATFORM,
                    "capabilities": definition.capabilities,
                    "owner_team": definition.owner_team,
                    "cpu_millicores": definition.cpu_millicores,
                    "memory_mb": definition.memory_mb,
                    "runtime": settings.AGENT_RUNTIME,
                    "config": copy.deepcopy(definition.config),
                },
            )
            created += was_created
            by_slug[definition.slug] = agent
            # Agents registered before the catalog had forwarding get it once; an operator who
            # wants none sets "forward": [] (a missing key is filled again at the next seed).
            if not was_created and "forward" in definition.config and "forward" not in agent.config:
                agent.config = {
                    **agent.config,
                    "forward": copy.deepcopy(definition.config["forward"]),
                }
                agent.save(update_fields=["config", "updated_at"])
                filled.append(agent.slug)
        for definition in PLATFORM_AGENTS:
            agent = by_slug[definition.slug]
            existing = set(agent.dependencies.values_list("slug", flat=True))
            missing = [by_slug[slug] for slug in definition.depends_on if slug not in existing]
            if missing:
                agent.dependencies.add(*missing)
                links += len(missing)
        dependency_order(Agent.objects.prefetch_related("dependencies"))  # refuses a cycle
        if created or links or filled:
            record_audit(
                actor, "agents.seed", target="platform", created=created, links=links,
                forwarding_added=filled,
            )  # fmt: skip
    return created, links


def seed_step(actor: Actor, out) -> None:
    """``manage.py setup`` step: make sure the registry holds the 14 Platform CoE agents."""
    created, _ = seed_platform_agents(actor)
    if created:
        out.write(f"Registered {created} Platform CoE agent(s).")


def require_viewer(actor: Actor) -> None:
    if not actor.has(roles.VIEW):
        raise PermissionDenied("You need a role to see agents. Ask an Admin.")


@audits_refusals("agent.edit", target="agent")
def update_agent_settings(agent: Agent, changed: list[str], actor: Actor) -> Agent:
    """Save edits to an agent's registry fields (not its state), made in the admin."""
    actor.require(roles.MANAGE, "edit agents")
    with transaction.atomic():
        if "config" in changed:
            before = Agent.objects.filter(pk=agent.pk).values_list("config", flat=True).first()
            if before is not None and before != agent.config:
                agent.previous_config, agent.config_changed_at = before, timezone.now()
        agent.save()
        record_audit(
            actor, "agent.edit", target=agent.slug,
            changes={name: jsonable(getattr(agent, name, None)) for name in changed},
        )  # fmt: skip
        events.emit("registry", agent, changed=changed, actor=actor.label)
    return agent


# --- recoveries that change settings (offered by agents.errors) -----------------------------------


@audits_refusals("agent.config.rollback", target="agent")
def rollback_config(agent: Agent, actor: Actor) -> Agent:
    """Put back the config the agent had before its last change (an Operator's recovery)."""
    actor.require(roles.OPERATE, "roll back an agent's config")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.previous_config is None:
            raise ActionRefused(f"{agent.name} has no earlier config to go back to.", code="none")
        # The config replaced is kept in the audit entry, not offered back as "previous".
        bad, agent.config = agent.config, agent.previous_config
        agent.previous_config, agent.config_changed_at = None, timezone.now()
        agent.save(update_fields=["config", "previous_config", "config_changed_at", "updated_at"])
        record_audit(
            actor, "agent.config.rollback", target=agent.slug, config=agent.config, replaced=bad
        )
        events.emit("registry", agent, changed=["config"], actor=actor.label)
    return agent


@audits_refusals("agent.ports", target="agent")
def pick_new_ports(agent: Agent, actor: Actor) -> list[int]:
    """Move the agent to free ports (its own are held by someone else); audited."""
    actor.require(roles.OPERATE, "give an agent new ports")
    runtime = runtime_for(agent)
    ports = runtime.reassign_ports(spec_for(agent))
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        old = agent.runtime_details.get("ports")
        agent.runtime_details = {**agent.runtime_details, "ports": ports}
        agent.save(update_fields=["runtime_details", "updated_at"])
        record_audit(actor, "agent.ports", target=agent.slug, ports=ports, replaced=old)
    return ports


@audits_refusals("agent.memory", target="agent")
def set_memory_limit(agent: Agent, memory_mb: int, actor: Actor) -> Agent:
    """Raise an agent's memory limit up to AGENT_MEMORY_CEILING_MB (an Operator's recovery)."""
    actor.require(roles.OPERATE, "raise an agent's memory limit")
    ceiling = settings.AGENT_MEMORY_CEILING_MB
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if memory_mb <= agent.memory_mb or memory_mb > ceiling:
            raise ActionRefused(
                f"{agent.name} has {agent.memory_mb} MiB; a raise must be above that and at most "
                f"{ceiling} MiB (AGENT_MEMORY_CEILING_MB).",
                code="ceiling",
            )
        before, agent.memory_mb = agent.memory_mb, memory_mb
        agent.save(update_fields=["memory_mb", "updated_at"])
        record_audit(actor, "agent.memory", target=agent.slug, memory_mb=memory_mb, was=before)
        events.emit("registry", agent, changed=["memory_mb"], actor=actor.label)
    return agent


# --- agents made by the factory ------------------------------------------------------------


@dataclass(frozen=True)
class NewAgent:
    """Everything a new agent is registered with (the factory checked it all before)."""

    slug: str
    name: str
    description: str = ""
    tier: str = Tier.CUSTOMER
    owner_team: str = ""
    capabilities: tuple[str, ...] = ()
    specializations: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    cpu_millicores: int = 100
    memory_mb: int = 128
    storage_mb: int = 0
    replicas: int = 1
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    template: str = ""


@audits_refusals("agent.create", target="new")
def register_agent(new: NewAgent, actor: Actor) -> Agent:
    """Add an agent to the registry in DRAFT, with its dependencies and secrets.

    Refuses (``ActionRefused``, code ``conflict``) a slug or name already taken and a dependency
    that is not registered; nothing is saved then.
    """
    actor.require(roles.OPERATE, "create agents")
    with transaction.atomic():
        if Agent.objects.filter(slug=new.slug).exists():
            raise ActionRefused(f"An agent with the slug {new.slug} exists already.", "conflict")
        if Agent.objects.filter(name__iexact=new.name).exists():
            raise ActionRefused(f"An agent named {new.name} exists already.", "conflict")
        dependencies = list(
            Agent.objects.filter(slug__in=new.dependencies).exclude(state="REVOKED")
        )
        missing = sorted(set(new.dependencies) - {d.slug for d in dependencies})
        if missing:
            raise ActionRefused(
                f"No registered agent has the slug {', '.join(missing)}; pick dependencies "
                "from the registry.",
                "invalid",
            )
        try:
            with transaction.atomic():  # a savepoint: a racing twin must not break the caller's
                agent = _create_agent(new)
        except IntegrityError:
            raise ActionRefused(
                f"An agent with the slug {new.slug} or the name {new.name} was just registered "
                "by someone else; pick another.",
                "conflict",
            ) from None
        agent.dependencies.set(dependencies)
        for name, value in new.secrets.items():
            agent.secrets.create(name=name, value=value)
        record_audit(
            actor, "agent.create", target=agent.slug, template=new.template, tier=new.tier,
            dependencies=sorted(new.dependencies), secrets=sorted(new.secrets),
        )  # fmt: skip
        events.emit("registry", agent, changed=["created"], actor=actor.label)
    return agent


def _create_agent(new: NewAgent) -> Agent:
    return Agent.objects.create(
        slug=new.slug, name=new.name, description=new.description, tier=new.tier,
        owner_team=new.owner_team, capabilities=list(new.capabilities),
        specializations=list(new.specializations), cpu_millicores=new.cpu_millicores,
        memory_mb=new.memory_mb, storage_mb=new.storage_mb, replicas=new.replicas,
        runtime=settings.AGENT_RUNTIME, config=copy.deepcopy(new.config),
        environment=dict(new.environment), template=new.template,
    )  # fmt: skip


@audits_refusals("agent.release", target="agent")
def release_agent(agent: Agent, actor: Actor, why: str) -> str:
    """Take back an agent that a creation made and then undid: one never provisioned is deleted;
    one that was (it has a history) must be REVOKED already, and gives up its slug and name
    (``<slug>-undone-<id>``), so the registry keeps its history and a new try may use them.

    Answers what was done."""
    actor.require(roles.OPERATE, "remove agents")
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        if locked.state == "DRAFT" and not locked.transitions.exists():
            slug = locked.slug
            locked.delete()
            record_audit(actor, "agent.delete", target=slug, why=why)
            return f"Deleted {slug} (it was never provisioned)."
        if locked.state != "REVOKED":
            raise ActionRefused(
                f"{locked.name} is {locked.state}; revoke it before releasing its name.", "conflict"
            )
        old_slug, old_name = locked.slug, locked.name
        suffix = f"-undone-{locked.pk}"
        locked.slug = old_slug[: 63 - len(suffix)] + suffix
        locked.name = old_name[: 100 - len(f" (undone #{locked.pk})")] + f" (undone #{locked.pk})"
        locked.save(update_fields=["slug", "name", "updated_at"])
        locked.secrets.all().delete()
        record_audit(actor, "agent.release", target=old_slug, renamed_to=locked.slug, why=why)
        events.emit("registry", locked, changed=["slug", "name"], actor=actor.label)
        return f"Revoked {old_slug} and renamed it {locked.slug}, so the name is free again."
