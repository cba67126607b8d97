"""Diagnosis quality of the Issue Detective on a labelled set of injected faults.

Each case is a customer of its own with two to four agents, steady traffic and calm metrics,
plus noise (healthy agents beside, old resolved errors and restarts, other customers' dead
letters, a short queue), and one injected fault whose cause is the label: the five playbook
situations (agent not responding, slow performance, authentication errors, trial not
activating, payment failures) through their causes, and crash, out of memory, dependency down,
bad config, bad version, queue backlog, dead-letter storm, agent stopped. Faults are written
into the real stores the detective reads (PostgreSQL rows: agents, errors, transitions, metric
samples, log lines, upgrades, interactions, customers; Redis: task streams with their consumer
group, dead letters with their group counts), with magnitudes drawn at random from ``--seed``;
some cases carry a second plausible cause (a backlog behind a crash, dead letters after a
config change, a backlog beside a failed payment). Symptoms are phrased several ways, and a
category is picked for some.

Prints top-1 and top-3 accuracy, accuracy per cause, the calibration (mean stated confidence of
right and of wrong top answers, and per confidence band the share right), and the median and
p95 diagnosis time. Target: top-1 right in at least 90 %.

    .venv/bin/python benchmarks/helpdesk_quality.py [--cases 60] [--seed 7] [--learn]

``--learn`` records each verdict as an operator would (right, or wrong with the actual cause),
so later confidences use the track record; the headline run does not. Runs on a private
PostgreSQL and Redis (``_harness.django_environment``), deleted afterwards. ``run(...)`` is the
same measurement for a caller that has Django set up already (benchmarks/bench_helpdesk.py).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from _harness import django_environment, percentile, require_sample

TARGET_TOP1 = 0.90

SYMPTOMS: dict[str, list[str]] = {
    "not_responding": [
        "agent not responding", "our assistant stopped answering", "nothing happens when we send tasks",
        "the bot is down since this morning", "requests just hang, no reply", "tasks are stuck",
        "agent does not respond to anything",
    ],
    "slow": [
        "everything is slow", "responses take ages", "latency went through the roof",
        "tasks take minutes to finish", "the agent got really sluggish",
    ],
    "auth": [
        "authentication errors", "we get 401 errors", "login fails for our integration",
        "access denied when the agent calls our API", "credentials rejected",
    ],
    "trial": [
        "trial not activating", "we signed up but nothing works", "can't get started with the trial",
        "our trial never started", "onboarding seems broken",
    ],
    "payment": [
        "payment failures", "our card was declined", "billing says payment failed",
        "we cannot pay the invoice", "subscription payment problem",
    ],
    "failing": [
        "tasks keep failing", "lots of errors since this morning", "jobs fail every time",
        "half our requests error out", "things broke after yesterday",
    ],
}  # fmt: skip
CATEGORY_OF = {
    "not_responding": "agent_not_responding", "slow": "slow_performance",
    "auth": "authentication_errors", "trial": "trial_not_activating", "payment": "payment_failures",
}  # fmt: skip
MUNDANE_ERRORS = [
    "ValueError: missing field 'email'",
    "KeyError: 'sku'",
    "TimeoutError: upstream 30 s",
]
AUTH_ERRORS = [
    "HTTPError: 401 Unauthorized from api.partner.example",
    "HTTPError: 403 Forbidden: token lacks scope",
    "AuthError: invalid api key for crm.example",
    "PermissionError: credentials expired",
]


@dataclass
class Case:
    number: int
    cause: str
    symptom: str
    category: str
    second: str = ""  # a second plausible cause injected
    customer: object = None


@dataclass
class Result:
    case: Case
    top: str
    top3: list[str]
    confidence: float
    elapsed_ms: float
    causes: list[dict] = field(default_factory=list)

    @property
    def right(self) -> bool:
        return self.top == self.case.cause


class World:
    """Writes a case's customer, its agents and their noise; hands the fault injector what it
    needs."""

    def __init__(self, client, rng: random.Random, prefix: str = "quality") -> None:
        from tests.helpdesk import detective_kit as kit

        self.kit, self.client, self.rng, self.prefix = kit, client, rng, prefix
        self.dependency = kit.agent(
            None, f"{prefix}-shared-store", name=f"{prefix.title()} Shared Store"
        )

    def customer(self, case: Case):
        from agents.models import State

        kit, rng = self.kit, self.rng
        owner = kit.customer(
            f"{self.prefix}-{case.number}", f"{self.prefix.title()} Customer {case.number}"
        )
        agents = []
        for index in range(rng.randint(2, 4)):
            made = kit.agent(owner, f"{self.prefix}-{case.number}-a{index}", replicas=rng.randint(1, 3),
                             memory_mb=rng.choice([256, 512, 1024]))  # fmt: skip
            if rng.random() < 0.5:
                made.dependencies.add(self.dependency)
            kit.traffic(owner, made, count=rng.randint(40, 150), failure_share=rng.uniform(0, 0.03),
                        latency_ms=(rng.randint(30, 120), rng.randint(200, 600)),
                        error=rng.choice(MUNDANE_ERRORS), rng=rng)  # fmt: skip
            kit.idle_stream(self.client, made, consumers=made.replicas)
            kit.metric(made, cpu=rng.uniform(5, 55), memory_percent=rng.uniform(20, 75),
                       throughput=rng.uniform(0.5, 4), p95_ms=rng.uniform(150, 900))  # fmt: skip
            agents.append(made)
        # Noise that must not be taken for a cause.
        noisy = rng.choice(agents)
        if rng.random() < 0.5:
            kit.error(noisy, "killed", ago=timedelta(days=rng.randint(2, 9)), status="resolved")
        if rng.random() < 0.4:
            kit.transition(
                noisy,
                "restart",
                State.RUNNING,
                State.RUNNING,
                ago=timedelta(hours=rng.randint(6, 40)),
            )
        if rng.random() < 0.4:
            kit.dead_letters(self.client, rng.choice(agents), 0, customer_key=owner.key,
                             error="x", others=rng.randint(20, 300))  # fmt: skip
        if rng.random() < 0.3:
            target = rng.choice(agents)
            self.client.delete(f"agents:{target.slug}:tasks")
            kit.backlog(self.client, target, rng.randint(1, 40), oldest=timedelta(seconds=rng.randint(5, 60)),
                        consumers=target.replicas)  # fmt: skip
        if rng.random() < 0.3:
            kit.log(
                noisy,
                "warning: retrying a slow call",
                level=30,
                ago=timedelta(minutes=rng.randint(5, 100)),
            )
        if rng.random() < 0.2:
            kit.change_config(rng.choice(agents), ago=timedelta(days=rng.randint(2, 6)))
        # Recent changes that went well, busy but healthy agents, an account with a past hiccup.
        if rng.random() < 0.25:
            kit.change_config(rng.choice(agents), ago=timedelta(minutes=rng.randint(30, 600)))
        if rng.random() < 0.2:
            kit.upgrade(
                rng.choice(agents), to_version="1.2.1", ago=timedelta(hours=rng.randint(1, 30))
            )
        if rng.random() < 0.3:
            kit.metric(rng.choice(agents), cpu=rng.uniform(60, 80), memory_percent=rng.uniform(70, 88),
                       ago=timedelta(seconds=10))  # fmt: skip
        if rng.random() < 0.2:
            from django.utils import timezone

            owner.last_payment_failed_at = timezone.now() - timedelta(days=rng.randint(45, 200))
            owner.save()
        if rng.random() < 0.15:
            # A crash hours ago, restarted since.
            kit.transition(
                noisy, "fail", State.RUNNING, State.ERRORED, ago=timedelta(hours=rng.randint(3, 20))
            )
            kit.transition(noisy, "restart", State.ERRORED, State.RUNNING, ago=timedelta(hours=2))
        case.customer = owner
        return owner, agents


# --- the faults --------------------------------------------------------------------------------


def _backlog(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    w.client.delete(f"agents:{target.slug}:tasks")
    w.kit.backlog(w.client, target, w.rng.randint(300, 5000), oldest=timedelta(minutes=w.rng.randint(4, 40)),
                  consumers=target.replicas, customer_key=owner.key)  # fmt: skip
    w.kit.metric(
        target,
        cpu=w.rng.uniform(60, 95),
        throughput=w.rng.uniform(0.3, 3),
        ago=timedelta(seconds=5),
    )


def _crash(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    w.kit.crash(target, times=w.rng.randint(1, 5), exit_code=w.rng.choice([1, 70, 134, 139]))
    w.kit.log(target, w.rng.choice(["Traceback (most recent call last): ZeroDivisionError",
                                    "fatal: segmentation fault in handler", "panic: nil map"]))  # fmt: skip
    if w.rng.random() < 0.4:  # the backlog it leaves behind
        case.second = "queue_backlog"
        w.client.delete(f"agents:{target.slug}:tasks")
        w.kit.backlog(w.client, target, w.rng.randint(200, 2000), consumers=0)


def _oom(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    if w.rng.random() < 0.6:
        w.kit.crash(target, oom=True, times=w.rng.randint(1, 3))
    else:
        w.kit.metric(target, memory_percent=w.rng.uniform(92, 99.5), ago=timedelta(seconds=5))
        w.kit.log(target, "warning: memory pressure, gc took 900 ms", level=30)


def _dependency(w: World, owner, agents, case: Case) -> None:
    from agents.models import State

    target = w.rng.choice(agents)
    down = w.kit.agent(
        None, f"{w.prefix}-{case.number}-dep", state=w.rng.choice([State.STOPPED, State.ERRORED])
    )
    target.dependencies.add(down)
    w.kit.traffic(owner, target, since=timedelta(minutes=w.rng.randint(10, 50)), count=w.rng.randint(10, 40),
                  failure_share=w.rng.uniform(0.3, 0.9), error=f"ConnectionError: {down.slug}:6379 refused",
                  rng=w.rng)  # fmt: skip
    if w.rng.random() < 0.7:
        w.kit.log(target, f"ConnectionError: connection refused {down.slug}:6379")
    if w.rng.random() < 0.3:
        case.second = "queue_backlog"
        w.client.delete(f"agents:{target.slug}:tasks")
        w.kit.backlog(w.client, target, w.rng.randint(150, 900), consumers=target.replicas)


def _bad_config(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    minutes = w.rng.randint(20, 150)
    w.kit.change_config(target, ago=timedelta(minutes=minutes), change={"task_timeout_seconds": 1})
    error = w.rng.choice(["TimeoutError: task exceeded 1 s", "ValueError: template 'v2' missing"])
    w.kit.traffic(owner, target, since=timedelta(minutes=minutes - 2), count=w.rng.randint(20, 80),
                  failure_share=w.rng.uniform(0.35, 0.9), error=error, rng=w.rng)  # fmt: skip
    if w.rng.random() < 0.5:
        case.second = "dead_letter_storm"
        w.kit.dead_letters(
            w.client, target, w.rng.randint(30, 400), customer_key=owner.key, error=error
        )


def _bad_version(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    minutes = w.rng.randint(20, 170)
    w.kit.upgrade(target, to_version=f"1.{w.rng.randint(3, 9)}.0", ago=timedelta(minutes=minutes))
    if w.rng.random() < 0.7:
        w.kit.traffic(owner, target, since=timedelta(minutes=minutes - 2), count=w.rng.randint(20, 80),
                      failure_share=w.rng.uniform(0.3, 0.8), error="AttributeError: 'NoneType' has no 'id'",
                      rng=w.rng)  # fmt: skip
    else:
        w.kit.traffic(owner, target, since=timedelta(minutes=minutes - 2), count=w.rng.randint(30, 80),
                      latency_ms=(1500, 6000), rng=w.rng)  # fmt: skip


def _storm(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    error = w.rng.choice(
        ["KeyError: 'customer_ref' in payload", "SchemaError: field 'total' must be a number"]
    )
    w.kit.dead_letters(w.client, target, w.rng.randint(40, 800), customer_key=owner.key, error=error,
                       others=w.rng.randint(0, 100))  # fmt: skip
    w.kit.traffic(owner, target, since=timedelta(minutes=50), count=w.rng.randint(20, 60),
                  failure_share=w.rng.uniform(0.2, 0.7), error=error, rng=w.rng)  # fmt: skip


def _slow(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    w.kit.traffic(owner, target, since=timedelta(minutes=w.rng.randint(20, 55)), count=w.rng.randint(20, 60),
                  latency_ms=(w.rng.randint(2000, 4000), w.rng.randint(5000, 12000)), rng=w.rng)  # fmt: skip
    w.kit.metric(
        target,
        cpu=w.rng.uniform(50, 99),
        p95_ms=w.rng.uniform(3000, 9000),
        ago=timedelta(seconds=5),
    )


def _auth(w: World, owner, agents, case: Case) -> None:
    target = w.rng.choice(agents)
    error = w.rng.choice(AUTH_ERRORS)
    w.kit.traffic(owner, target, since=timedelta(minutes=w.rng.randint(10, 50)), count=w.rng.randint(10, 50),
                  failure_share=w.rng.uniform(0.3, 0.95), error=error, rng=w.rng)  # fmt: skip
    if w.rng.random() < 0.5:
        w.kit.log(target, error)


def _trial(w: World, owner, agents, case: Case) -> None:
    from django.utils import timezone

    from agents.models import State
    from helpdesk.models import SubscriptionStatus

    owner.status = SubscriptionStatus.TRIALING
    how = w.rng.choice(["expired", "never_deployed", "never_started"])
    owner.trial_ends_at = timezone.now() + timedelta(days=w.rng.randint(3, 12))
    if how == "expired":
        owner.trial_ends_at = timezone.now() - timedelta(days=w.rng.randint(1, 10))
    elif how == "never_started":
        owner.trial_started_at = None
    else:
        for made in agents:
            w.kit.set_fields(made, state=w.rng.choice([State.DRAFT, State.PROVISIONED]))
    owner.save()


def _payment(w: World, owner, agents, case: Case) -> None:
    from django.utils import timezone

    from helpdesk.models import SubscriptionStatus

    owner.last_payment_failed_at = timezone.now() - timedelta(hours=w.rng.randint(1, 150))
    if w.rng.random() < 0.5:
        owner.status = SubscriptionStatus.PAST_DUE
    owner.save()
    if w.rng.random() < 0.4:  # an unrelated backlog beside it
        case.second = "queue_backlog"
        target = w.rng.choice(agents)
        w.client.delete(f"agents:{target.slug}:tasks")
        w.kit.backlog(w.client, target, w.rng.randint(150, 600), consumers=target.replicas)


def _stopped(w: World, owner, agents, case: Case) -> None:
    from agents.models import State
    from portal.actors import Actor

    target = w.rng.choice(agents)
    to = w.rng.choice([State.STOPPED, State.SUSPENDED])
    w.kit.transition(target, "stop" if to == State.STOPPED else "suspend", State.RUNNING, to,
                     ago=timedelta(minutes=w.rng.randint(5, 300)), actor=Actor.command("ops-script"),
                     reason=w.rng.choice(["maintenance", "cost saving", ""]))  # fmt: skip
    w.kit.set_fields(target, state=to)


# cause -> (injector, symptom families to phrase it with)
SCENARIOS: dict[str, tuple[Callable, list[str]]] = {
    "queue_backlog": (_backlog, ["not_responding", "slow"]),
    "crash": (_crash, ["not_responding", "failing"]),
    "out_of_memory": (_oom, ["not_responding", "failing"]),
    "dependency_down": (_dependency, ["not_responding", "failing"]),
    "bad_config": (_bad_config, ["failing", "not_responding"]),
    "bad_version": (_bad_version, ["failing", "slow"]),
    "dead_letter_storm": (_storm, ["failing", "not_responding"]),
    "slow_performance": (_slow, ["slow"]),
    "auth_errors": (_auth, ["auth"]),
    "trial_not_activating": (_trial, ["trial"]),
    "payment_failure": (_payment, ["payment"]),
    "agent_stopped": (_stopped, ["not_responding"]),
}


def plan(cases: int, rng: random.Random) -> list[Case]:
    causes = list(SCENARIOS)
    planned = []
    for number in range(cases):
        cause = causes[number % len(causes)]
        family = rng.choice(SCENARIOS[cause][1])
        category = CATEGORY_OF.get(family, "") if rng.random() < 0.3 else ""
        planned.append(Case(number, cause, rng.choice(SYMPTOMS[family]), category))
    rng.shuffle(planned)
    return planned


def run(
    cases: int = 60,
    seed: int = 7,
    learn: bool = False,
    verbose: bool = False,
    prefix: str = "quality",
) -> dict:
    """Inject, diagnose and score ``cases`` faults (Django set up and migrated). Customers and
    agents are named ``<prefix>-<n>``: call again with another prefix in the same database."""
    from helpdesk.detective import services
    from observability.queues.catalog import agent_redis
    from portal.actors import Actor

    rng = random.Random(seed)
    client = agent_redis()
    world = World(client, rng, prefix)
    operator = Actor.command("helpdesk-quality")
    results: list[Result] = []
    for case in plan(cases, rng):
        owner, agents = world.customer(case)
        SCENARIOS[case.cause][0](world, owner, agents, case)
        diagnosis = services.diagnose(operator, owner, case.symptom, case.category)
        top3 = [c["cause"] for c in diagnosis.causes[:3]]
        result = Result(
            case,
            diagnosis.top_cause,
            top3,
            diagnosis.confidence,
            diagnosis.elapsed_ms,
            diagnosis.causes,
        )
        results.append(result)
        if learn and diagnosis.top_cause:
            services.record_verdict(operator, diagnosis, "right" if result.right else "wrong",
                                    "" if result.right else case.cause)  # fmt: skip
        if verbose and not result.right:
            print(f"  miss #{case.number}: {case.cause} ({case.symptom!r}"
                  f"{', ' + case.category if case.category else ''}) → "
                  + ", ".join(f"{c['cause']} {c['confidence']:.2f}" for c in diagnosis.causes[:3]))  # fmt: skip
    return summarise(results)


def summarise(results: list[Result]) -> dict:
    require_sample(results, "diagnoses")
    right = [r for r in results if r.right]
    wrong = [r for r in results if not r.right]
    per_cause: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        per_cause[r.case.cause].append(r.right)
    bands: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        low = min(0.8, int(r.confidence * 5) / 5)
        bands[f"{low:.1f}-{low + 0.2:.1f}"].append(r.right)
    times = [r.elapsed_ms for r in results]
    return {
        "cases": len(results),
        "top1": len(right) / len(results),
        "top3": sum(r.case.cause in r.top3 for r in results) / len(results),
        "per_cause": {cause: (sum(v), len(v)) for cause, v in sorted(per_cause.items())},
        "confidence_right": statistics.mean(r.confidence for r in right) if right else None,
        "confidence_wrong": statistics.mean(r.confidence for r in wrong) if wrong else None,
        "bands": {band: (sum(v), len(v)) for band, v in sorted(bands.items())},
        "two_causes": (
            sum(r.right for r in results if r.case.second),
            sum(bool(r.case.second) for r in results),
        ),
        "median_ms": statistics.median(times),
        "p95_ms": percentile(times, 95),
        "misses": Counter(f"{r.case.cause}→{r.top or 'none'}" for r in wrong),
    }


def report(figures: dict) -> bool:
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.1f} %"

    met = figures["top1"] >= TARGET_TOP1
    print(f"Issue Detective quality: {figures['cases']} injected faults")
    print(f"  top-1 accuracy   {pct(figures['top1'])}  (target ≥ {TARGET_TOP1 * 100:.0f} %: "
          f"{'met' if met else 'NOT met'})")  # fmt: skip
    print(f"  top-3 accuracy   {pct(figures['top3'])}")
    right, total = figures["two_causes"]
    print(f"  with a second plausible cause: {right} of {total} right")
    print("  per cause:")
    for cause, (hits, n) in figures["per_cause"].items():
        print(f"    {cause:<22} {hits:>3} / {n:<3} {hits / n * 100:5.1f} %")
    print("  calibration (stated confidence of the top cause):")
    print(f"    mean when right  {pct(figures['confidence_right'])}")
    print(f"    mean when wrong  {pct(figures['confidence_wrong'])}")
    for band, (hits, n) in figures["bands"].items():
        print(f"    stated {band}: {hits} of {n} right ({hits / n * 100:.0f} %)")
    if figures["misses"]:
        print("  misses: " + ", ".join(f"{k} ×{v}" for k, v in figures["misses"].most_common()))
    print(
        f"  diagnosis time   median {figures['median_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms"
    )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60, help="injected faults (at least 50)")
    parser.add_argument("--seed", type=int, default=7, help="draws the magnitudes and phrasings")
    parser.add_argument("--learn", action="store_true", help="record each verdict as it comes")
    parser.add_argument("--verbose", action="store_true", help="print each miss")
    args = parser.parse_args()
    with django_environment():
        figures = run(args.cases, args.seed, args.learn, args.verbose)
    if not report(figures):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
