"""Where an agent runs and how to reach it: the runtime it is placed on, the spec the runtime is
given, the runtime call behind each lifecycle action, and the probe of its health endpoints.

The lowest layer of the agents core above the models: services, errors and the monitor all
read it, and it reads none of them.
"""

from __future__ import annotations

from django.conf import settings

from agents.models import Agent, Health, State
from agents.runtimes import AgentSpec, Runtime, get_runtime
from agents.runtimes.probe import http_ok

PROBE_TIMEOUT_SECONDS = 1.5


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


def probe(agent: Agent) -> tuple[str, str]:
    """Health from every replica's /healthz (alive) and /readyz (ready for work)."""
    ports = agent.runtime_details.get("ports") or []
    if not ports:
        return Health.UNKNOWN, "no port known for this agent"
    problems = []
    alive = ready = 0
    for replica, port in enumerate(ports[: agent.replicas]):
        base = f"http://127.0.0.1:{port}"
        if http_ok(f"{base}/healthz", PROBE_TIMEOUT_SECONDS):
            alive += 1
            if http_ok(f"{base}/readyz", PROBE_TIMEOUT_SECONDS):
                ready += 1
            else:
                problems.append(f"replica {replica} not ready")
        else:
            problems.append(f"replica {replica} not answering /healthz")
    total = min(len(ports), agent.replicas)
    if ready == total:
        return Health.HEALTHY, ""
    if alive == total:
        return Health.DEGRADED, "; ".join(problems)
    return Health.UNHEALTHY, "; ".join(problems)
