"""The runtime monitor: notices crashes as they happen, probes health, restarts by policy.

It runs as its own long-lived process (``manage.py monitor``, started by ``manage.py up``):

- an events thread per runtime reads the runtime's event stream (for the local runtime, the
  exits its shims publish to Redis) and moves a crashed agent to ERRORED at once; the stream
  position is kept in Redis, so events that arrive while the monitor is down are handled when
  it comes back;
- a probe thread runs every running replica's liveness and readiness probes when they fall
  due (``agents.probes``: HTTP, TCP or exec, each agent's own interval and thresholds; the
  defaults ``/healthz`` and ``/readyz`` every tick), records health, and once a tick reconciles
  what the runtime reports with the database (a process that vanished without an event is a
  crash too);
- the main thread carries out automatic restarts when they fall due (woken at once by a crash,
  so the first restart is not delayed by a poll).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from agents import errors, services
from agents.models import Agent, Health, State
from agents.probes.engine import Prober, Target
from agents.probes.schema import effective_probes
from agents.runtimes import Runtime, RuntimeEvent, RuntimeFailure

logger = logging.getLogger(__name__)

POSITION_KEY = "monitor:{runtime}:last_event_id"


class Monitor:
    def __init__(
        self, *, probe_interval: float | None = None, runtimes: list[str] | None = None
    ) -> None:
        self.probe_interval = probe_interval or settings.AGENT_PROBE_INTERVAL_SECONDS
        self.runtime_names = runtimes or runtimes_in_use()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._redis = redis.Redis.from_url(
            settings.REDIS_URL, decode_responses=True, socket_timeout=5
        )
        self._agent_redis = redis.Redis.from_url(
            settings.AGENT_REDIS_URL, decode_responses=True, socket_timeout=5
        )
        self._threads: list[threading.Thread] = []
        self._prober = Prober(self._redis)
        self._runtimes: dict[str, Runtime] = {}
        self._wake_seconds = float(self.probe_interval)

    # --- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``; each loop survives errors in the others."""
        for name in self.runtime_names:
            try:
                runtime = services.build_runtime(name)
                adopted = runtime.adopt()
            except RuntimeFailure as failure:
                # A misconfigured runtime must not keep the monitor from watching the others.
                logger.warning("cannot adopt agents on %s: %s", name, failure.message)
                continue
            if adopted:
                logger.info(
                    "re-adopted running agents: %s",
                    ", ".join(sorted(adopted)),
                    extra={"runtime": name},
                )
            thread = threading.Thread(
                target=self._events_loop, args=(name, runtime), name=f"events-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.reconcile()
        self.check_drift()
        prober = threading.Thread(target=self._probe_loop, name="probes", daemon=True)
        prober.start()
        self._threads.append(prober)
        logger.info(
            "monitor started",
            extra={"runtimes": self.runtime_names, "probe_interval": self.probe_interval},
        )
        try:
            self._restart_loop()
        finally:
            self.stop_event.set()
            for thread in self._threads:
                thread.join(timeout=5)
            connection.close()
            logger.info("monitor stopped")

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    # --- events ------------------------------------------------------------------------------

    def _events_loop(self, name: str, runtime: Runtime) -> None:
        key = POSITION_KEY.format(runtime=name)
        while not self.stop_event.is_set():
            try:
                since = self._redis.get(key)
                for event in runtime.events(since, self.stop_event):
                    self.handle_event(event, runtime_name=name)
                    if event.id:
                        self._redis.set(key, event.id)
            except redis.RedisError as exc:
                logger.warning(
                    "event stream unavailable (%s); retrying", exc, extra={"runtime": name}
                )
                self.stop_event.wait(1.0)
            except Exception:
                logger.exception("events loop failed; restarting it", extra={"runtime": name})
                self.stop_event.wait(1.0)
            finally:
                close_old_connections()
        connection.close()

    def handle_event(self, event: RuntimeEvent, runtime_name: str = "") -> None:
        if event.kind == "removed" and runtime_name:
            # Removed behind the portal's back (or by revoke): drift says which at once.
            services.check_drift(runtime_name)
            return
        if event.kind not in ("exited", "oom"):
            return
        if event.details.get("requested_stop"):
            return  # the portal stopped it (stop, restart, revoke): not a crash
        agent = Agent.objects.filter(slug=event.slug).first()
        if agent is None:
            return
        if not _is_current_process(agent, event):
            return  # a late exit of a process the agent no longer runs
        details = {
            "exit_code": event.exit_code,
            "signal": event.signal,
            "replica": event.replica,
            "oom": event.kind == "oom" or bool(event.details.get("oom")),
            "at": event.at,
            **{
                k: v for k, v in event.details.items() if k in ("pid", "log_tail", "uptime_seconds")
            },
        }
        if services.record_crash(agent, details):
            logger.warning(
                "%s crashed: %s", agent.name, services.describe_exit(details),
                extra={"agent": agent.slug, "exit_code": event.exit_code, "signal": event.signal},
            )  # fmt: skip
            self.wake.set()

    # --- automatic restarts -----------------------------------------------------------------

    def _restart_loop(self) -> None:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="restart") as pool:
            in_flight: set[int] = set()
            lock = threading.Lock()

            def restart(agent: Agent) -> None:
                try:
                    services.auto_restart(agent)
                except Exception:
                    logger.exception("automatic restart of %s failed", agent.slug)
                finally:
                    with lock:
                        in_flight.discard(agent.pk)
                    close_old_connections()
                    connection.close()
                    self.wake.set()

            while not self.stop_event.is_set():
                try:
                    for agent in services.due_restarts():
                        with lock:
                            if agent.pk in in_flight:
                                continue
                            in_flight.add(agent.pk)
                        pool.submit(restart, agent)
                    next_due = (
                        Agent.objects.filter(state=State.ERRORED, next_restart_at__isnull=False)
                        .order_by("next_restart_at")
                        .values_list("next_restart_at", flat=True)
                        .first()
                    )
                except Exception:
                    logger.exception("restart loop failed")
                    next_due = None
                finally:
                    close_old_connections()
                wait = 1.0
                if next_due is not None:
                    wait = min(wait, max(0.0, (next_due - timezone.now()).total_seconds()))
                self.wake.wait(wait)
                self.wake.clear()

    # --- probes and reconciliation ------------------------------------------------------------

    def _probe_loop(self) -> None:
        """Probes when they fall due (waking as often as the shortest interval an agent asks
        for, at most once a second), reconciliation and drift once a tick."""
        next_tick = time.monotonic() + self.probe_interval
        while not self.stop_event.wait(self._wake_seconds):
            try:
                tick = time.monotonic() >= next_tick - 0.05  # a wait may end a hair early
                self.probe_due(check_task_failures=tick)
                if tick:
                    next_tick = time.monotonic() + self.probe_interval
                    self.reconcile()
                    self.check_drift()
            except Exception:
                logger.exception("probe loop failed")
            finally:
                close_old_connections()
        connection.close()

    def probe_all(self) -> None:
        """One whole round now: every running agent's probes, whatever their intervals, and
        its dead-letter queue."""
        self._probe_round(due_only=False, check_task_failures=True)

    def probe_due(self, *, check_task_failures: bool = True, now: float | None = None) -> None:
        """The probes that are due (each agent's own interval; the defaults every tick)."""
        self._probe_round(due_only=True, check_task_failures=check_task_failures, now=now)

    def _probe_round(
        self, *, due_only: bool, check_task_failures: bool, now: float | None = None
    ) -> None:
        agents = list(Agent.objects.filter(state=State.RUNNING, pending_action=""))
        targets: list[Target] = []
        shortest = float(self.probe_interval)
        for agent in agents:
            runtime = self._runtime(agent.runtime)
            answer = None
            if _probes_itself(runtime):  # Kubernetes: the kubelet probes; it reads readiness
                try:
                    answer = runtime.probe(services.spec_for(agent), agent.runtime_details)
                except RuntimeFailure as failure:
                    answer = (Health.UNHEALTHY, failure.message)
            if answer is not None:
                services.record_health(agent, *answer)
                continue
            custom = bool(agent.probes)
            probes = effective_probes(agent.probes, settings.AGENT_PROBE_INTERVAL_SECONDS)
            if custom:
                shortest = min(shortest, *(p["interval_seconds"] for p in probes.values()))
            if not agent.runtime_details.get("ports"):
                services.record_health(agent, Health.UNKNOWN, "no port known for this agent")
                continue
            targets.append(Target(agent, runtime, probes, custom, float(self.probe_interval)))
        self._wake_seconds = max(1.0, min(float(self.probe_interval), shortest))
        for outcome in self._prober.run(targets, due_only=due_only, now=now):
            services.record_health(outcome.agent, outcome.health, outcome.detail)
        if check_task_failures:
            for agent in agents:
                try:
                    errors.check_task_failures(agent, self._agent_redis)
                except redis.RedisError as exc:
                    logger.info("cannot read the dead-letter queue of %s: %s", agent.slug, exc)

    def _runtime(self, name: str) -> Runtime:
        """The runtime called ``name``, built once for this monitor's probes."""
        runtime = self._runtimes.get(name)
        if runtime is None:
            runtime = self._runtimes[name] = services.build_runtime(name)
        return runtime

    def check_drift(self) -> None:
        for name in self.runtime_names:
            try:
                services.check_drift(name)
            except RuntimeFailure as failure:
                logger.warning("cannot check drift on %s: %s", name, failure.message)

    def reconcile(self) -> None:
        """Agents the database says are live but whose processes are gone have crashed."""
        for agent in Agent.objects.filter(
            state__in=[State.RUNNING, State.SUSPENDED], pending_action=""
        ):
            try:
                status = services.runtime_for(agent).status(services.spec_for(agent))
            except RuntimeFailure as failure:
                logger.warning("cannot read %s's status: %s", agent.slug, failure.message)
                continue
            gone = [
                replica
                for replica in status.replicas
                if replica.state in ("exited", "missing") and _gone_long_enough(agent, replica)
            ]
            if gone:
                replica = gone[0]
                details = {
                    "exit_code": replica.exit_code,
                    "signal": replica.signal,
                    "replica": replica.replica,
                    "reason": "missing" if replica.state == "missing" else "exited",
                    "found_by": "reconciliation",
                    "oom": bool(replica.oom or getattr(replica, "oom_killed", False)),
                }
                if services.record_crash(agent, details, source="reconciliation"):
                    self.wake.set()


# (slug, replica) → when reconciliation first saw an exit whose details were not yet known.
_UNEXPLAINED_EXITS: dict[tuple[str, int], float] = {}
EXIT_DETAILS_GRACE_SECONDS = 1.5


def _gone_long_enough(agent: Agent, replica) -> bool:
    """A replica that just exited may not have its exit code recorded yet, and its exit event
    (with the code) is on the way: leave it to the event for a moment, then act without it."""
    key = (agent.slug, replica.replica)
    if replica.state == "missing" or replica.exit_code is not None or replica.signal is not None:
        _UNEXPLAINED_EXITS.pop(key, None)
        return True
    first_seen = _UNEXPLAINED_EXITS.setdefault(key, time.monotonic())
    if time.monotonic() - first_seen >= EXIT_DETAILS_GRACE_SECONDS:
        _UNEXPLAINED_EXITS.pop(key, None)
        return True
    return False


def _probes_itself(runtime: Runtime) -> bool:
    """Whether the runtime answers health from its own view (it overrides ``probe``), rather
    than leaving the probes to the portal (the interface's default answers None)."""
    return type(runtime).probe is not Runtime.probe


def runtimes_in_use() -> list[str]:
    """The default runtime and every runtime an agent is registered on."""
    names = set(
        Agent.objects.exclude(state=State.REVOKED).values_list("runtime", flat=True).distinct()
    )
    names.add(settings.AGENT_RUNTIME)
    return sorted(names)


def _is_current_process(agent: Agent, event: RuntimeEvent) -> bool:
    """Whether the exit is of the process or container the agent runs now, as recorded in its
    runtime details (``pids``, ``container_ids``); a late exit of an earlier one is not."""
    for event_key, details_key in (("pid", "pids"), ("container_id", "container_ids")):
        value = event.details.get(event_key)
        current = agent.runtime_details.get(details_key)
        if value is not None and current:
            return str(value) in {str(item) for item in current}
    return True
