"""Crash → RUNNING again, on the local runtime, with the real monitor and real agent processes.

Each run SIGKILLs WowCache's agentd and measures until the agent is RUNNING again with a new
process that answers /healthz. Between runs the agent is left healthy until the monitor has
reset its restart counter, so every run is a "first crash" (no accumulated backoff).

    .venv/bin/python benchmarks/bench_crash_recovery.py [--runs 5] [--smoke]   # --smoke: 1 run

Goal (issue 3): median under 2 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time
import urllib.request

from _harness import django_environment, require_sample, summary

GOAL_SECONDS = 2.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one run (CI: that it still works)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1

    with django_environment(AGENT_RESTART_RESET_SECONDS="1", AGENT_PROBE_INTERVAL_SECONDS="1"):
        from agents import services
        from agents.models import Agent, State
        from agents.monitor import Monitor
        from portal.actors import Actor

        actor = Actor.command("benchmark")
        agent = Agent.objects.get(slug="wow-cache")
        for action in ("provision", "deploy", "start"):
            operation = services.request_action(agent, action, actor, enqueue=False)
            finished = services.run_operation(str(operation.pk))
            if finished.status != "succeeded":
                raise SystemExit(f"{action} wow-cache failed: {finished.error}")
        monitor = Monitor(probe_interval=1)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        time.sleep(0.5)

        timings, detections = [], []
        for run in range(1, args.runs + 1):
            _wait(lambda: Agent.objects.get(slug="wow-cache").restart_attempts == 0, 30)
            agent.refresh_from_db()
            old_pid = agent.runtime_details["pids"][0]
            crashes_before = agent.transitions.filter(action="fail").count()
            started = time.perf_counter()
            os.kill(old_pid, signal.SIGKILL)
            _wait(lambda n=crashes_before: agent.transitions.filter(action="fail").count() > n, 10)
            detected = time.perf_counter() - started
            _wait(lambda pid=old_pid: _recovered(Agent, State, pid), 30, interval=0.005)
            elapsed = time.perf_counter() - started
            timings.append(elapsed)
            detections.append(detected)
            print(
                f"run {run}: crash detected (ERRORED) after {detected * 1000:.0f} ms, RUNNING again after {elapsed:.3f} s"
            )

        monitor.stop()
        thread.join(timeout=10)

    require_sample(timings, "crash recovery")
    median = statistics.median(timings)
    print()
    print(f"crash → ERRORED:          {summary([d * 1000 for d in detections], 'ms')}")
    print(f"crash → RUNNING again:    {summary(timings)}")
    print(f"goal: median < {GOAL_SECONDS:.1f} s → {'met' if median < GOAL_SECONDS else 'NOT met'}")
    print(
        "(includes the first automatic-restart backoff, AGENT_RESTART_BACKOFF_MS, default 500 ms)"
    )


def _recovered(agent_model, state, old_pid: int) -> bool:
    """RUNNING again, with a new process that answers /healthz."""
    current = agent_model.objects.get(slug="wow-cache")
    pids = current.runtime_details.get("pids") or []
    if current.state != state.RUNNING or not pids or pids[0] == old_pid:
        return False
    port = current.runtime_details["ports"][0]
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s")


if __name__ == "__main__":
    main()
