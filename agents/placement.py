"""Where an agent runs and how to reach it: the runtime it is placed on, the spec the runtime is
given, the runtime call behind each lifecycle action, and the probe of its health endpoints.

The lowest layer of the agents core above the models: services, errors and the monitor all
read it, and it reads none of them.
"""

from __future__ import annotations

from django.conf import settings

from agents.models import Agent, Health, State
from agents.probes.checks import run_check
from agents.probes.engine import not_alive, not_ready
from agents.probes.schema import effective_probes
from agents.runtimes import AgentSpec, Runtime, get_runtime


def build_runtime(name: str) -> Runtime:
    """The runtime called ``name``, configured from settings."""
    if name == "local":
        return get_runtime("local", root=settings.AGENT_ROOT, redis_url=settings.AGENT_REDIS_URL)
    if name == "docker":
        return get_runtime(
            "docker",
            base_url=settings.DOCKER_HOST,
            image=settings.AGENT_IMAGE,
            redis_url=settings.AGENT_REDIS_URL,
            network=settings.AGENT_DOCKER_NETWORK,
        )
    if name == "kubernetes":
        return get_runtime(
            "kubernetes",
            namespace=settings.KUBERNETES_NAMESPACE,
            image=settings.AGENT_IMAGE,
            redis_url=settings.KUBERNETES_AGENT_REDIS_URL,
            redis_secret=settings.KUBERNETES_AGENT_REDIS_SECRET,
            in_cluster=settings.KUBERNETES_IN_CLUSTER,
        )
    return get_runtime(name)


def runtime_for(agent: Agent) -> Runtime:
    return build_runtime(agent.runtime)


def spec_for(agent: Agent) -> AgentSpec:
    env = {str(name): str(value) for name, value in (agent.environment or {}).items()}
    if agent.pk:
        env.update(agent.secrets.values_list("name", "value"))
    return AgentSpec(
        slug=agent.slug,
        name=agent.name,
        version=agent.version,
        replicas=agent.replicas,
        config=dict(agent.config),
        cpu_millicores=agent.cpu_millicores,
        memory_mb=agent.memory_mb,
        env=env,
        redis_url=settings.AGENT_REDIS_URL,
        ports=tuple(agent.runtime_details.get("ports", ())),
        grace_seconds=settings.AGENT_STOP_GRACE_SECONDS,
        ready_timeout=settings.AGENT_READY_TIMEOUT_SECONDS,
        probes=dict(agent.probes or {}),
    )


def runtime_effect(agent: Agent, action: str) -> dict:
    runtime, spec = runtime_for(agent), spec_for(agent)
    if action == "provision":
        return runtime.provision(spec)
    if action == "deploy":
        return runtime.deploy(spec)
    if action == "start":
        return runtime.start(spec)
    if action == "stop":
        return runtime.stop(spec)
    if action == "suspend":
        return runtime.suspend(spec)
    if action == "resume":
        return runtime.resume(spec)
    if action == "restart":
        if agent.state == State.RUNNING and spec.replicas > 1:
            # Zero downtime: one replica at a time, never fewer ready than before.
            return runtime.rolling_restart(spec)
        return runtime.restart(spec)
    if action == "revoke":
        return runtime.remove(spec, purge=True)
    raise ValueError(f"unknown action {action!r}")


def probe(agent: Agent, runtime: Runtime | None = None) -> tuple[str, str]:
    """Health now, from one check of each replica with the agent's probes (its own settings,
    or ``GET /healthz`` and ``GET /readyz`` expecting 200): every replica alive and ready is
    healthy, alive but some not ready degraded, any not alive unhealthy. No thresholds: one
    look, for those who wait for an agent (a recovery, a creation); the monitor counts failures
    in a row (``agents.probes.engine``)."""
    ports = list(agent.runtime_details.get("ports") or [])[: agent.replicas]
    if not ports:
        return Health.UNKNOWN, "no port known for this agent"
    runtime = runtime or runtime_for(agent)
    probes = effective_probes(agent.probes, settings.AGENT_PROBE_INTERVAL_SECONDS)
    custom = bool(agent.probes)
    problems = []
    alive = ready = 0
    for replica, port in enumerate(ports):
        where = {"runtime": runtime, "slug": agent.slug, "replica": replica, "port": port}
        liveness = run_check(probes["liveness"], **where)
        if not liveness.ok:
            problems.append(not_alive(replica, probes["liveness"], custom, liveness.reason))
            continue
        alive += 1
        readiness = run_check(probes["readiness"], **where)
        if readiness.ok:
            ready += 1
        else:
            problems.append(not_ready(replica, probes["readiness"], custom, readiness.reason))
    if ready == len(ports):
        return Health.HEALTHY, ""
    if alive == len(ports):
        return Health.DEGRADED, "; ".join(problems)
    return Health.UNHEALTHY, "; ".join(problems)
