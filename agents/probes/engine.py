"""A round of probes for the monitor, with Kubernetes' thresholds.

Each round takes the running agents the portal probes itself (local and Docker; the kubelet
probes Kubernetes pods), runs the probes that are due on every replica, in parallel, and
updates each replica's verdicts: alive (liveness) and ready (readiness). A verdict turns to
failing only after ``failure_threshold`` failures in a row and back after ``success_threshold``
passes in a row. The agent's health follows: every replica alive and ready is healthy, alive
but some not ready degraded, any not alive unhealthy.

The counts live in Redis, one small JSON value per agent (``monitor:probes:<slug>``), read
with one MGET and written with one pipeline per round, so a round costs the same per agent
whatever the thresholds, and a monitor that restarts carries on counting. A value is reset
when what it counted no longer holds: other settings, other processes, other ports. If Redis
does not answer, the counts are kept in the monitor's memory meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from agents.models import Agent, Health
from agents.probes.checks import CheckResult, run_check
from agents.probes.schema import PROBES, describe
from agents.runtimes import Runtime

logger = logging.getLogger(__name__)

STATE_KEY = "monitor:probes:{slug}"
STATE_TTL_SECONDS = 24 * 3600
MAX_WORKERS = 16  # checks mostly wait (sockets, programs): many cost little CPU


@dataclass
class Target:
    """One agent to probe: its runtime, its effective probes, and the monitor's tick (how
    often the default probes run)."""

    agent: Agent
    runtime: Runtime
    probes: dict[str, dict[str, Any]]
    custom: bool
    tick: float

    @property
    def ports(self) -> list[int]:
        return list(self.agent.runtime_details.get("ports") or [])[: self.agent.replicas]

    def interval(self, which: str) -> float:
        return float(self.probes[which]["interval_seconds"]) if self.custom else self.tick


@dataclass(frozen=True)
class Outcome:
    agent: Agent
    health: str
    detail: str


def state_key(slug: str) -> str:
    return STATE_KEY.format(slug=slug)


def fingerprint(agent: Agent) -> str:
    """What the counts of ``agent`` are valid for: its settings, processes and ports."""
    details = agent.runtime_details or {}
    basis = [
        agent.probes or {},
        list(details.get("ports") or [])[: agent.replicas],
        details.get("pids"),
        details.get("container_ids"),
        agent.state_changed_at.isoformat() if agent.state_changed_at else None,
    ]
    return hashlib.sha1(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fresh_state(agent: Agent, replicas: int) -> dict[str, Any]:
    """Counts from nothing: a replica starts as the agent's health says (a RUNNING agent
    passed its readiness gate; a new setting does not make an unhealthy agent healthy)."""
    alive = agent.health != Health.UNHEALTHY
    ready = agent.health not in (Health.UNHEALTHY, Health.DEGRADED)
    return {
        "fp": fingerprint(agent),
        "at": {},
        "liveness": [[alive, 0, 0, ""] for _ in range(replicas)],
        "readiness": [[ready, 0, 0, ""] for _ in range(replicas)],
    }


class StateStore:
    """The counts per agent in Redis, with the monitor's memory as a stand-in while Redis is
    away."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.memory: dict[str, str] = {}

    def load(self, slugs: Sequence[str]) -> list[dict[str, Any] | None]:
        keys = [state_key(slug) for slug in slugs]
        try:
            raw = self.client.mget(keys) if keys else []
        except redis.RedisError as error:
            logger.info("probe counts read from memory: Redis did not answer (%s)", error)
            raw = [self.memory.get(key) for key in keys]
        return [_parse(value) for value in raw]

    def save(self, states: dict[str, dict[str, Any]]) -> None:
        encoded = {state_key(slug): json.dumps(state) for slug, state in states.items()}
        self.memory.update(encoded)
        if not encoded:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in encoded.items():
                pipe.set(key, value, ex=STATE_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as error:
            logger.info("probe counts kept in memory: Redis did not answer (%s)", error)


def _parse(value: object) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _checker() -> ThreadPoolExecutor:
    """The process's threads for checks, started once (probes wait on sockets and programs,
    so a few threads cover many replicas)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="probe")
        return _pool


class Prober:
    """Runs rounds of probes (``run``) and keeps their counts (``store``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.store = StateStore(client)
        self._lock = threading.Lock()

    def run(
        self, targets: Sequence[Target], *, due_only: bool = False, now: float | None = None
    ) -> list[Outcome]:
        """Probe what is due (everything unless ``due_only``) and answer the health of every
        agent probed, with the detail that explains it."""
        now = time.time() if now is None else now
        with self._lock:  # one round at a time: the counts are read, updated and written back
            return self._run(targets, due_only, now)

    def _run(self, targets: Sequence[Target], due_only: bool, now: float) -> list[Outcome]:
        stored = self.store.load([target.agent.slug for target in targets])
        states: dict[str, dict[str, Any]] = {}
        jobs: list[tuple[Target, str, int, int]] = []
        probed: list[Target] = []
        for target, state in zip(targets, stored, strict=True):
            ports = target.ports
            if not ports:
                continue
            if state is None or state.get("fp") != fingerprint(target.agent):
                state = fresh_state(target.agent, len(ports))
            due = [
                which
                for which in PROBES
                if not due_only or _is_due(state["at"].get(which), target.interval(which), now)
            ]
            if not due:
                continue
            for which in due:
                state["at"][which] = now
                jobs += [(target, which, replica, port) for replica, port in enumerate(ports)]
            states[target.agent.slug] = state
            probed.append(target)
        results = list(_checker().map(_check, jobs)) if jobs else []
        for (target, which, replica, _), result in zip(jobs, results, strict=True):
            probe = target.probes[which]
            _count(states[target.agent.slug][which][replica], result, probe)
        self.store.save(states)
        return [_outcome(target, states[target.agent.slug]) for target in probed]


def _check(job: tuple[Target, str, int, int]) -> CheckResult:
    target, which, replica, port = job
    try:
        return run_check(
            target.probes[which],
            runtime=target.runtime,
            slug=target.agent.slug,
            replica=replica,
            port=port,
        )
    except Exception as error:  # a probe that breaks fails; it never stops the round
        logger.exception("the %s probe of %s failed to run", which, target.agent.slug)
        return CheckResult(False, f"the probe could not run: {type(error).__name__}")


def _is_due(last: float | None, interval: float, now: float) -> bool:
    # A little early rather than a whole tick late: the loop wakes on its own schedule.
    return last is None or now >= last + interval - min(0.5, interval / 4)


def _count(verdict: list[Any], result: CheckResult, probe: dict[str, Any]) -> None:
    """One check into a replica's verdict ``[ok, passes in a row, failures in a row, why]``."""
    if result.ok:
        verdict[1] += 1
        verdict[2] = 0
        if not verdict[0] and verdict[1] >= probe["success_threshold"]:
            verdict[0], verdict[3] = True, ""
    else:
        verdict[1] = 0
        verdict[2] += 1
        verdict[3] = result.reason
        if verdict[0] and verdict[2] >= probe["failure_threshold"]:
            verdict[0] = False


def _outcome(target: Target, state: dict[str, Any]) -> Outcome:
    problems: list[str] = []
    alive_count = ready_count = 0
    replicas = len(state["liveness"])
    for replica in range(replicas):
        alive = state["liveness"][replica]
        ready = state["readiness"][replica]
        if not alive[0]:
            problems.append(not_alive(replica, target.probes["liveness"], target.custom, alive[3]))
            continue
        alive_count += 1
        if ready[0]:
            ready_count += 1
        else:
            problems.append(not_ready(replica, target.probes["readiness"], target.custom, ready[3]))
    if ready_count == replicas:
        return Outcome(target.agent, Health.HEALTHY, "")
    health = Health.DEGRADED if alive_count == replicas else Health.UNHEALTHY
    return Outcome(target.agent, health, "; ".join(problems))


def not_alive(replica: int, probe: dict[str, Any], custom: bool, why: str) -> str:
    """The health detail of a replica failing its liveness probe."""
    if not custom:
        return f"replica {replica} not answering {probe['path']}"  # the words they always had
    return f"replica {replica} failing its liveness probe ({describe(probe)}): {why}"


def not_ready(replica: int, probe: dict[str, Any], custom: bool, why: str) -> str:
    """The health detail of a replica alive but failing its readiness probe ("not ready" is
    what the error rules recognise)."""
    if not custom:
        return f"replica {replica} not ready"
    return f"replica {replica} not ready ({describe(probe)}): {why}"
