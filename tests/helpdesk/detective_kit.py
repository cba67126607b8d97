"""Faults written into the real stores the Issue Detective reads: agents and their links,
interactions, transitions, errors, metric samples, log lines, upgrades (PostgreSQL), and task
streams and dead letters (Redis), the way the portal and agentd write them. The detective's
tests and the quality benchmark (benchmarks/helpdesk_quality.py) share them."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

from django.utils import timezone

from agents.agentd import contract
from agents.models import Agent, AgentError, AgentTransition, State, Tier
from helpdesk.models import Customer, CustomerAgent, Interaction, Outcome, Plan, SubscriptionStatus
from observability.models import Level, LogEntry, MetricSample
from portal.actors import Actor
from portal.models import ActorStamped
from servicing.models import Strategy, Upgrade, UpgradeStatus

SYSTEM = Actor.system("monitor")


def customer(key: str, company: str = "", **fields) -> Customer:
    now = timezone.now()
    defaults = {
        "company_name": company or key.replace("-", " ").title(),
        "domain": f"{key}.example",
        "email": f"billing@{key}.example",
        "plan": Plan.PRO,
        "status": SubscriptionStatus.ACTIVE,
        "trial_started_at": now - timedelta(days=40),
        "trial_ends_at": now - timedelta(days=26),
    }
    return Customer.objects.create(key=key, **{**defaults, **fields})


def agent(owner: Customer | None, slug: str, *, state: str = State.RUNNING, **fields) -> Agent:
    values = {
        "name": slug.replace("-", " ").title(),
        "tier": Tier.CUSTOMER if owner is not None else Tier.PLATFORM,
        "health": "healthy" if state == State.RUNNING else "unknown",
        "replicas": 2,
        "memory_mb": 256,
        "version": "1.2.0",
        "state_changed_at": timezone.now() - timedelta(days=3),
        **fields,
    }
    made = Agent.objects.create(slug=slug, state=state, **values)
    if owner is not None:
        CustomerAgent.objects.create(customer=owner, agent=made)
    return made


def set_fields(target: Agent, **fields) -> Agent:
    Agent.objects.filter(pk=target.pk).update(**fields)
    return Agent.objects.get(pk=target.pk)


def traffic(
    owner: Customer,
    target: Agent,
    *,
    since: timedelta = timedelta(hours=3),
    until: timedelta = timedelta(0),
    count: int = 60,
    failure_share: float = 0.0,
    latency_ms: tuple[int, int] = (80, 300),
    error: str = "ValueError: bad input",
    rng: random.Random | None = None,
    version: str = "",
) -> int:
    """``count`` tasks done for ``owner`` by ``target``, spread evenly between ``since`` and
    ``until`` ago; ``failure_share`` of them dead-lettered with ``error``."""
    rng = rng or random.Random(0)
    now = timezone.now()
    start, end = now - since, now - until
    step = (end - start) / max(1, count)
    rows = []
    base = Interaction.objects.count()
    for number in range(count):
        failed = rng.random() < failure_share
        rows.append(
            Interaction(
                customer=owner, agent=target, agent_slug=target.slug,
                message_id=f"{int(time.time() * 1000)}-{base + number}",
                kind="task", outcome=Outcome.DEAD_LETTERED if failed else Outcome.SUCCEEDED,
                latency_ms=rng.randint(*latency_ms), error=error if failed else "",
                attempts=3 if failed else 1, version=version or target.version,
                at=start + step * number + timedelta(seconds=rng.random()),
            )
        )  # fmt: skip
    Interaction.objects.bulk_create(rows)
    return len(rows)


def metric(target: Agent, *, cpu: float = 20.0, memory_percent: float = 40.0,
           throughput: float | None = 2.0, p95_ms: float | None = 250.0,
           ago: timedelta = timedelta(seconds=20)) -> MetricSample:  # fmt: skip
    limit = target.memory_mb * 2**20
    return MetricSample.objects.create(
        agent=target, ts=timezone.now() - ago, up=1.0 if target.state == State.RUNNING else 0.0,
        cpu_percent=cpu, memory_bytes=limit * memory_percent / 100, memory_limit_bytes=limit,
        throughput=throughput, latency_p95_ms=p95_ms, error_rate=0.0,
    )  # fmt: skip


def transition(target: Agent, action: str, from_state: str, to_state: str, *, ago: timedelta,
               actor: Actor = SYSTEM, reason: str = "", details: dict | None = None) -> AgentTransition:  # fmt: skip
    return AgentTransition.objects.create(
        agent=target, action=action, from_state=from_state, to_state=to_state,
        at=timezone.now() - ago, reason=reason, details=details or {}, **ActorStamped.stamp(actor),
    )  # fmt: skip


def error(target: Agent, rule: str, *, classification: str = "transient", source: str = "crash",
          root_cause: str = "", ago: timedelta = timedelta(minutes=5),
          status: str = AgentError.Status.OPEN) -> AgentError:  # fmt: skip
    moment = timezone.now() - ago
    return AgentError.objects.create(
        agent=target, occurred_at=moment, last_seen_at=moment, source=source,
        summary=root_cause or rule, classification=classification, rule=rule,
        root_cause=root_cause or f"{target.name}: {rule}", signature=f"{target.slug}:{rule}",
        pattern=rule, status=status,
    )  # fmt: skip


def crash(target: Agent, *, times: int = 1, oom: bool = False, exit_code: int = 1,
          within: timedelta = timedelta(minutes=40), rule: str = "exited") -> Agent:  # fmt: skip
    """The agent crashed ``times`` times (the last one left it ERRORED), as the monitor records
    it: transitions, last exit, health, an open error."""
    details = {"exit_code": None if oom else exit_code, "signal": 9 if oom else None, "oom": oom}
    for number in range(times):
        ago = within * (times - number) / (times + 1)
        transition(target, "fail", State.RUNNING, State.ERRORED, ago=ago, details=details,
                   reason="killed: out of memory" if oom else f"process exited with code {exit_code}")  # fmt: skip
        if number < times - 1:
            transition(
                target, "restart", State.ERRORED, State.RUNNING, ago=ago - timedelta(seconds=30)
            )
    rule = "out_of_memory" if oom else rule
    error(target, rule, classification="resource" if oom else "transient",
          root_cause="killed: out of memory" if oom else f"exited with code {exit_code}",
          ago=timedelta(minutes=2))  # fmt: skip
    return set_fields(
        target, state=State.ERRORED, health="unhealthy", last_exit=details,
        health_detail="killed: out of memory" if oom else f"process exited with code {exit_code}",
        restart_attempts=times, state_changed_at=timezone.now() - within / (times + 1),
    )  # fmt: skip


def change_config(target: Agent, *, ago: timedelta, change: dict | None = None) -> Agent:
    previous = dict(target.config or {})
    config = {**previous, **(change or {"task_timeout_seconds": 1})}
    return set_fields(target, config=config, previous_config=previous,
                      config_changed_at=timezone.now() - ago)  # fmt: skip


def upgrade(target: Agent, *, to_version: str, ago: timedelta,
            status: str = UpgradeStatus.SUCCEEDED) -> Upgrade:  # fmt: skip
    made = Upgrade.objects.create(
        agent=target, from_version=target.version, to_version=to_version,
        strategy=Strategy.ROLLING, status=status, requested_by="admin",
        started_at=timezone.now() - ago - timedelta(minutes=3), finished_at=timezone.now() - ago,
    )  # fmt: skip
    set_fields(target, version=to_version)
    return made


def log(target: Agent, message: str, *, level: int = Level.ERROR,
        ago: timedelta = timedelta(minutes=3)) -> LogEntry:  # fmt: skip
    return LogEntry.objects.create(agent=target, ts=timezone.now() - ago, level=level,
                                   message=message, event="task_failed")  # fmt: skip


def _stream_id(moment: datetime, sequence: int) -> str:
    return f"{int(moment.timestamp() * 1000)}-{sequence}"


def backlog(client, target: Agent, count: int, *, oldest: timedelta = timedelta(minutes=10),
            consumers: int = 2, customer_key: str = "") -> None:  # fmt: skip
    """``count`` tasks waiting on the agent's stream, the oldest ``oldest`` ago, read by a
    consumer group with ``consumers`` replicas that took none of them yet."""
    stream = contract.task_stream(target.slug)
    now = timezone.now()
    pipe = client.pipeline(transaction=False)
    for number in range(count):
        moment = now - oldest + (oldest * number / max(1, count))
        fields = {"payload": '{"kind": "task"}', "producer": f"customer:{customer_key or 'x'}"}
        if customer_key:
            fields[contract.FIELD_CUSTOMER] = customer_key
        pipe.xadd(stream, fields, id=_stream_id(moment, number))
    pipe.execute()
    client.xgroup_create(stream, contract.CONSUMER_GROUP, id="0", mkstream=True)
    for replica in range(consumers):
        client.xgroup_createconsumer(stream, contract.CONSUMER_GROUP,
                                     contract.consumer_name(target.slug, replica))  # fmt: skip


def idle_stream(client, target: Agent, *, consumers: int = 2) -> None:
    """An empty stream with its group and consumers: a healthy queue."""
    stream = contract.task_stream(target.slug)
    client.xgroup_create(stream, contract.CONSUMER_GROUP, id="$", mkstream=True)
    for replica in range(consumers):
        client.xgroup_createconsumer(stream, contract.CONSUMER_GROUP,
                                     contract.consumer_name(target.slug, replica))  # fmt: skip


def dead_letters(client, target: Agent, count: int, *, customer_key: str, error: str,
                 others: int = 0, other_error: str = "KeyError: 'sku'") -> None:  # fmt: skip
    """``count`` dead letters of ``customer_key`` (and ``others`` of other customers) on the
    agent's dead-letter stream, with agentd's group counts and labels."""
    queue = contract.dead_letters(target.slug)
    pipe = client.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    for number, (who, text) in enumerate(
        [(customer_key, error)] * count + [("someone-else", other_error)] * others
    ):
        fingerprint, label = contract.error_fingerprint(text)
        pipe.xadd(queue, {
            contract.FIELD_CUSTOMER: who, contract.DLQ_ERROR: text, contract.DLQ_FAILURES: "3",
            contract.DLQ_ORIGINAL_ID: f"{now_ms - 60_000}-{number}",
            contract.DLQ_FINGERPRINT: fingerprint, contract.DLQ_LAST_FAILED_AT: str(now_ms),
            "payload": "{}",
        })  # fmt: skip
        pipe.hincrby(contract.dead_letter_groups(target.slug), fingerprint, 1)
        pipe.hset(contract.dead_letter_labels(target.slug), fingerprint, label)
    pipe.execute()
