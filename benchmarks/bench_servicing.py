"""Servicing benchmark (the parts built so far): a hot config patch reaching every replica.

(a) WowCache running with three replicas (real agentd processes on the local runtime); a config
    patch through the service the page and the API call, from the call to every replica
    answering the new value on its own ``GET /config``; target < 1 s.

Each figure is the median of ``--runs`` patches. Run it with::

    .venv/bin/python benchmarks/bench_servicing.py            # 20 patches
    .venv/bin/python benchmarks/bench_servicing.py --smoke    # 3 (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def live_value(port: int, key: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as answer:
        return json.loads(answer.read()).get(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--smoke", "--quick", action="store_true", help="3 patches (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 3
    sys.path.insert(0, str(HERE))
    from _harness import django_environment, require_sample

    with django_environment():
        from agents import services
        from agents.models import Agent
        from portal.actors import Actor

        actor = Actor.command("bench")
        Agent.objects.filter(slug="wow-cache").update(replicas=args.replicas)
        cache = Agent.objects.get(slug="wow-cache")
        for action in ("provision", "deploy", "start"):
            operation = services.request_action(cache, action, actor, enqueue=False)
            if services.run_operation(str(operation.pk)).status != "succeeded":
                raise SystemExit(f"WowCache did not {action}")
        cache.refresh_from_db()
        ports = cache.runtime_details["ports"][: args.replicas]
        print(f"(a) a hot config patch to {len(ports)} replicas of WowCache ({args.runs} patches)")
        times = []
        for number in range(args.runs):
            value = 1000 + number
            began = time.perf_counter()
            applied = services.patch_config(cache, {"task_retry_ms": value}, actor)
            if not all(live_value(port, "task_retry_ms") == value for port in ports):
                raise SystemExit("a replica does not answer the new value")
            times.append(time.perf_counter() - began)
            if not applied.all_applied:
                raise SystemExit(f"not every replica took the patch: {applied.replicas}")
            cache.refresh_from_db()
        require_sample(times, "config patches")
        median = statistics.median(times) * 1000
        ok = median < 1000
        print(f"  median {median:.1f} ms, max {max(times) * 1000:.1f} ms, every replica answering "
              f"the new value (target < 1 s) → {'met' if ok else 'NOT MET'}")  # fmt: skip
        operation = services.request_action(cache, "stop", actor, enqueue=False)
        services.run_operation(str(operation.pk))


if __name__ == "__main__":
    main()
