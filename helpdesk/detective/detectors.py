"""One detector per root cause: ``detector(signals, symptom) -> Candidate | None``.

A detector proposes its cause only when the signals hold evidence for it, and says how strong
that evidence is (``score``, about 0 to 1): figures past a threshold, events in the right
order, log lines. Where another cause explains the same evidence better (a backlog behind an
agent that crashed, dead letters after a config change), the weaker reading is scored down, so
the root cause outranks its consequences. The symptom's words weight the scores afterwards
(``helpdesk.detective.ranking``); they never make a cause up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings

from agents.models import State
from helpdesk.detective import evidence as ev
from helpdesk.detective.evidence import Candidate, line
from helpdesk.detective.signals import AgentSignals, Signals
from helpdesk.detective.symptoms import Symptom
from helpdesk.models import SubscriptionStatus

BACKLOG_MIN = 100
LAG_MIN_SECONDS = 120
DRAIN_SECONDS = 300
MAX_REPLICAS = 20
SLOW_P95_MS = 2000
CHANGE_WINDOW = timedelta(hours=24)
UPGRADE_WINDOW = timedelta(days=3)
STORM_MIN = 20
MEMORY_HIGH = 90.0
CPU_HIGH = 85.0

Detector = Callable[[Signals, Symptom], Candidate | None]


def _best(candidates: list[Candidate | None]) -> Candidate | None:
    found = [c for c in candidates if c is not None and c.score > 0]
    return max(found, key=lambda c: c.score) if found else None


def _per_agent(check: Callable[[Signals, AgentSignals], Candidate | None]) -> Detector:
    def detector(signals: Signals, symptom: Symptom) -> Candidate | None:
        return _best([check(signals, a) for a in signals.agents])

    detector.__name__ = check.__name__
    detector.__doc__ = check.__doc__
    return detector


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


# --- the queue ---------------------------------------------------------------------------------


def _scale_target(a: AgentSignals, backlog: int) -> tuple[int, str]:
    """Replicas that drain the backlog in DRAIN_SECONDS while keeping up with the inflow, from
    the measured throughput per replica; and how it was worked out."""
    replicas = max(1, a.agent.replicas)
    q = a.queue
    throughput = a.metric.throughput if a.metric is not None else None
    if not throughput and q is not None and q.out_rate:
        throughput = q.out_rate
    measured_inflow = q.in_rate if q is not None else None
    inflow = measured_inflow or 0.0
    if throughput and throughput > 0:
        per_replica = throughput / replicas
        needed = (inflow + backlog / DRAIN_SECONDS) / per_replica
        target = math.ceil(needed)
        said_inflow = (
            f"inflow {inflow:.2f}/s" if measured_inflow is not None else "inflow not measured"
        )
        how = (
            f"{per_replica:.2f} tasks/s per replica; {said_inflow}, plus the backlog drained "
            f"in {DRAIN_SECONDS // 60} min, needs {needed:.1f} replicas"
        )
    else:
        target = replicas * 2
        how = "no throughput measured: doubling"
    if target <= replicas:
        how += f"; at least one more than the {replicas} that let it pile up"
    return int(_clamp(target, replicas + 1, MAX_REPLICAS)), how


def _queue_backlog(signals: Signals, a: AgentSignals) -> Candidate | None:
    """Work waits on the agent's stream faster than its replicas take it."""
    q = a.queue
    if q is None or q.error:
        return None
    backlog, lag = q.pending, q.lag_seconds or 0.0
    if backlog < BACKLOG_MIN and lag < LAG_MIN_SECONDS:
        return None
    score = 0.4 + 0.3 * math.log10(max(backlog, 1) / BACKLOG_MIN) + (0.1 if lag >= 300 else 0.0)
    score = _clamp(score, 0.35, 1.0)
    consuming = a.agent.state == State.RUNNING and (not q.group_exists or q.consumers)
    if not consuming:
        score *= 0.3  # nobody reads the stream: the backlog is a consequence
    if ev.had_oom(a, signals.at) or ev.recent_crashes(a, signals.at):
        score *= 0.5
    agent = a.agent
    target, how = _scale_target(a, backlog)
    items = [
        line(f"{backlog:,} messages waiting on {q.name}", backlog, ev.queue_link(agent)),
        line(f"Oldest waiting message {lag:,.0f} s old", round(lag)),
        line(
            f"{len(q.consumers)} consumer(s), {q.in_flight} message(s) in flight",
            len(q.consumers),
        ),
    ]
    if a.metric is not None and a.metric.throughput:  # 0: not measured yet, not a stall
        items.append(
            line(f"Throughput {a.metric.throughput:.2f} tasks/s over {agent.replicas} replica(s)",
                 round(a.metric.throughput, 3))
        )  # fmt: skip
    items.append(line(f"Scale: {how}", target))
    return Candidate(
        "queue_backlog",
        f"Queue backlog on {agent.name} ({backlog:,} messages)",
        score,
        items,
        ev.fix(
            "scale-agent",
            agent.slug,
            f"Scale {agent.name} {agent.replicas} → {target}",
            replicas=target,
        ),  # fmt: skip
        agent.slug,
    )


# --- the process -------------------------------------------------------------------------------


def _crash(signals: Signals, a: AgentSignals) -> Candidate | None:
    """The agent's process ends on its own (errored, crash loop)."""
    now, agent = signals.at, a.agent
    crashes = ev.recent_crashes(a, now)
    crash_errors = [
        e for e in a.errors if e.source == "crash" and e.last_seen_at >= now - timedelta(hours=1)
    ]
    errored = agent.state == State.ERRORED
    if not (errored or crashes or crash_errors):
        return None
    score = (0.6 if errored else 0.35) + min(0.3, 0.1 * len(crashes))
    score += 0.1 if agent.restart_gave_up else 0.0
    if ev.had_oom(a, now):
        score *= 0.3
    rules = {e.rule for e in a.errors}
    changed = ev.changed_config_at(a, now, CHANGE_WINDOW)
    if rules & {"bad_config", "not_ready_after_config_change"} or (
        changed is not None and crashes and ev.follows(changed, min(t.at for t in crashes))
    ):
        score *= 0.5
    if "dependency_down" in rules:
        score *= 0.5
    items = [
        line(
            f"{agent.name} is {agent.get_state_display()}"
            + (f": {agent.health_detail}" if agent.health_detail else ""),
            agent.state,
            ev.agent_link(agent),
        ),  # fmt: skip
    ]
    if crashes:
        items.append(
            line(f"{len(crashes)} crash(es) in the last hour, the last {ev.ago(now, crashes[0].at)}",
                 len(crashes), reverse_history(agent.slug))
        )  # fmt: skip
    if agent.restart_attempts:
        items.append(line(f"{agent.restart_attempts} automatic restart attempt(s)",
                          agent.restart_attempts))  # fmt: skip
    for error in crash_errors[:2]:
        items.append(line(f"Root cause: {error.root_cause}", error.rule, ev.error_link(error.pk)))
    items += ev.log_tail(a)
    verb = "Restart" if errored else "Restart"
    return Candidate(
        "crash",
        f"{agent.name} crashed" + (" repeatedly" if len(crashes) >= 3 else ""),
        score,
        items,
        ev.fix("restart-agent", agent.slug, f"{verb} {agent.name}"),
        agent.slug,
    )


def reverse_history(slug: str) -> str:
    from django.urls import reverse

    return reverse("agents:history", args=[slug])


def _out_of_memory(signals: Signals, a: AgentSignals) -> Candidate | None:
    """The agent ran out of memory (killed by the OOM killer, or at its limit now)."""
    now, agent = signals.at, a.agent
    killed = ev.had_oom(a, now)
    percent = a.metric.memory_percent if a.metric is not None else None
    if not killed and (percent is None or percent < MEMORY_HIGH):
        return None
    score = 0.9 if killed else (0.6 if percent and percent >= 95 else 0.45)
    items = []
    if killed:
        items.append(line(f"{agent.name} was killed: out of memory", "oom", ev.agent_link(agent)))
    if percent is not None:
        used = (a.metric.memory_bytes or 0) / 2**20 if a.metric else 0
        items.append(
            line(f"Memory {used:,.0f} MiB of its {agent.memory_mb} MiB limit ({percent:.0f} %)",
                 round(percent, 1))
        )  # fmt: skip
    for error in a.errors:
        if error.rule == "out_of_memory":
            items.append(
                line(f"Root cause: {error.root_cause}", error.rule, ev.error_link(error.pk))
            )
            break
    items += ev.log_tail(a)
    raised = min(settings.AGENT_MEMORY_CEILING_MB, max(agent.memory_mb * 2, agent.memory_mb + 128))
    return Candidate(
        "out_of_memory",
        f"{agent.name} runs out of memory ({agent.memory_mb} MiB limit)",
        score,
        items,
        ev.fix("raise-memory", agent.slug,
               f"Raise {agent.name}'s memory {agent.memory_mb} → {raised} MiB and restart it",
               memory_mb=raised),
        agent.slug,
    )  # fmt: skip


def _dependency_down(signals: Signals, a: AgentSignals) -> Candidate | None:
    """An agent the customer's agent needs is not running or not healthy."""
    if not ev.expected_up(a):
        return None
    down = [
        d for d in a.dependencies
        if d.state != State.RUNNING or d.health == "unhealthy"
    ]  # fmt: skip
    if not down:
        return None
    dep = down[0]
    mentions = [t for t in a.log_lines if dep.slug in t or "connection refused" in t.lower()]
    failing = a.traffic.failed
    score = 0.7 + (0.1 if mentions else 0.0) + (0.1 if failing else 0.0)
    if any(e.rule == "dependency_down" for e in a.errors):
        score += 0.1
    items = [
        line(f"{a.agent.name} depends on {dep.name}, which is {dep.get_state_display()}"
             f" ({dep.health})", dep.state, ev.agent_link(dep)),
    ]  # fmt: skip
    if failing:
        items.append(line(f"{failing} of {a.traffic.total} tasks failed in the last hour", failing))
    items += ev.log_lines(a, mentions[-3:])
    # The quick actions act on the customer's own agents only; a shared agent is brought back
    # from its page (the first evidence line links there).
    own = any(other.agent.pk == dep.pk for other in signals.agents)
    if own and dep.state == State.ERRORED:
        fix = ev.fix("restart-agent", dep.slug, f"Restart {dep.name}")
    else:
        fix = None
        items.append(line(f"Bring {dep.name} back from its page ({dep.get_state_display()})",
                          link=ev.agent_link(dep)))  # fmt: skip
    return Candidate(
        "dependency_down",
        f"{a.agent.name}'s dependency {dep.name} is down",
        _clamp(score),
        items,
        fix,
        a.agent.slug,
    )


# --- changes -----------------------------------------------------------------------------------


def _bad_config(signals: Signals, a: AgentSignals) -> Candidate | None:
    """A config change followed by failures."""
    now, agent = signals.at, a.agent
    changed = ev.changed_config_at(a, now, CHANGE_WINDOW)
    if changed is None:
        return None
    before, after, failed_after, rose = ev.failure_rise(a, changed)
    config_errors = [
        e for e in a.errors
        if e.classification == "configuration" or e.rule in ("bad_config", "not_ready_after_config_change")
    ]  # fmt: skip
    crashed_after = ev.crashes_after(a, now, changed)
    if not (rose or config_errors or crashed_after):
        return None
    onset = ev.failure_onset(a, changed) if rose else None
    score = 0.45 + (0.3 * _clamp((after - before) / 0.5) if rose else 0.0)
    score += 0.3 if config_errors else 0.0
    score += 0.15 if crashed_after else 0.0
    if not (ev.follows(changed, onset) or config_errors or crashed_after):
        score *= 0.5  # the failures began long after the change: a weak link
    if ev.had_oom(a, now):
        score *= 0.5
    items = [
        line(f"{agent.name}'s config changed {ev.ago(now, changed)}", changed.isoformat(),
             ev.agent_link(agent)),
    ]  # fmt: skip
    if rose:
        items.append(line(f"Failures since: {after:.0%} of tasks ({failed_after}), before: {before:.0%}",
                          round(after, 3)))  # fmt: skip
    if onset is not None:
        items.append(line(f"They began {ev.ago(onset, changed).removesuffix(' ago')} after the change",
                          round((onset - changed).total_seconds())))  # fmt: skip
    for error in config_errors[:2]:
        items.append(line(f"Root cause: {error.root_cause}", error.rule, ev.error_link(error.pk)))
    if crashed_after:
        items.append(line(f"{len(crashed_after)} crash(es) since the change", len(crashed_after)))
    items += ev.log_tail(a, 2)
    return Candidate(
        "bad_config", f"A config change broke {agent.name}", _clamp(score, 0, 1.1), items,
        ev.fix("rollback-config", agent.slug, f"Roll back {agent.name}'s config"), agent.slug,
    )  # fmt: skip


def _bad_version(signals: Signals, a: AgentSignals) -> Candidate | None:
    """An upgrade followed by failures or slowness."""
    now, agent = signals.at, a.agent
    upgrade, moment = ev.upgraded_at(a, now, UPGRADE_WINDOW)
    if upgrade is None:
        return None
    before, after, failed_after, rose = ev.failure_rise(a, moment)
    slow_before, slow_after = a.latency_before(moment), a.latency_since(moment)
    slower = bool(
        slow_before and slow_after and slow_after >= 2 * slow_before and slow_after >= 500
    )
    crashed_after = ev.crashes_after(a, now, moment)
    if not (rose or slower or crashed_after):
        return None
    onset = ev.failure_onset(a, moment) if rose else None
    score = 0.45 + (0.3 * _clamp((after - before) / 0.5) if rose else 0.0)
    score += 0.2 if slower else 0.0
    score += 0.15 if crashed_after else 0.0
    if rose and not (ev.follows(moment, onset) or slower or crashed_after):
        score *= 0.5  # the failures began long after the upgrade: a weak link
    link = ev.upgrade_link(upgrade.pk)
    items = [
        line(f"Upgraded {upgrade.from_version} → {upgrade.to_version} {ev.ago(now, moment)}",
             upgrade.to_version, link),
    ]  # fmt: skip
    if rose:
        items.append(line(f"Failures since: {after:.0%} ({failed_after}), before: {before:.0%}",
                          round(after, 3)))  # fmt: skip
    if slower:
        items.append(line(f"Mean latency since: {slow_after:,.0f} ms, before: {slow_before:,.0f} ms",
                          round(slow_after or 0)))  # fmt: skip
    if crashed_after:
        items.append(line(f"{len(crashed_after)} crash(es) since the upgrade", len(crashed_after)))
    items += ev.log_tail(a, 2)
    return Candidate(
        "bad_version",
        f"Version {upgrade.to_version} of {agent.name} misbehaves",
        _clamp(score, 0, 1.1),
        items,
        ev.fix("rollback-version", agent.slug,
               f"Roll back {agent.name} {upgrade.to_version} → {upgrade.from_version}"),
        agent.slug,
    )  # fmt: skip


# --- failing work ------------------------------------------------------------------------------


def _dead_letter_storm(signals: Signals, a: AgentSignals) -> Candidate | None:
    """Many of the customer's tasks fail every retry and pile up in the dead letters."""
    now, agent = signals.at, a.agent
    mine = a.customer_dead_letters
    failed = a.traffic.failed
    count = max(mine, failed)
    if count < STORM_MIN:
        return None
    score = _clamp(0.45 + 0.25 * math.log10(count / STORM_MIN), 0.45, 0.85)
    if ev.recent_change_explains(a, now):
        score *= 0.45  # a change explains the failures better
    failing_text = " ".join(e for slug, e, _ in signals.failing_errors if slug == agent.slug)
    if ev.AUTH_PATTERN.search(failing_text):
        score *= 0.5
    if not ev.expected_up(a) or any(d.state != State.RUNNING for d in a.dependencies):
        score *= 0.5
    link = ev.queue_link(agent)
    items = [
        line(f"{a.dead_letters:,} dead letters on {agent.name}, about {mine:,} of them this customer's",
             mine, link),
        line(f"{failed} of the customer's {a.traffic.total} tasks failed in the last hour", failed),
    ]  # fmt: skip
    for group in a.letter_groups[:3]:
        items.append(line(f"{group.count:,} × {group.label}", group.count, link))
    return Candidate(
        "dead_letter_storm",
        f"Dead-letter storm on {agent.name} ({count:,} failed tasks)",
        score,
        items,
        ev.fix("redrive-dead-letters", agent.slug, f"Redrive the customer's dead letters on {agent.name}"),
        agent.slug,
    )  # fmt: skip


def _slow_performance(signals: Signals, a: AgentSignals) -> Candidate | None:
    """Tasks take long: high p95 latency, or a latency several times what it was."""
    now, agent = signals.at, a.agent
    p95 = a.traffic.p95_ms
    metric_p95 = a.metric.latency_p95_ms if a.metric is not None else None
    worst = max(p95 or 0.0, metric_p95 or 0.0)
    recent, earlier = (
        a.latency_since(now - timedelta(minutes=30)),
        a.latency_before(now - timedelta(hours=1)),
    )
    jumped = bool(recent and earlier and recent >= 3 * earlier and recent >= 500)
    if worst < SLOW_P95_MS and not jumped:
        return None
    score = _clamp(
        0.4 + 0.3 * math.log10(max(worst, 1) / SLOW_P95_MS + 1) / math.log10(2) * 0.5, 0.4, 0.8
    )
    score += 0.1 if jumped else 0.0
    cpu = a.metric.cpu_percent if a.metric is not None else None
    if cpu is not None and cpu >= CPU_HIGH:
        score += 0.1
    if ev.upgraded_at(a, now, timedelta(hours=6))[0] is not None:
        score *= 0.6
    if a.queue is not None and a.queue.pending >= BACKLOG_MIN * 5:
        score *= 0.6
    items = []
    if p95 is not None:
        items.append(line(f"p95 latency {p95:,.0f} ms over the customer's {a.traffic.total} tasks "
                          "in the last hour", round(p95), ev.agent_link(agent)))  # fmt: skip
    if metric_p95 is not None:
        items.append(line(f"Agent-wide p95 latency {metric_p95:,.0f} ms", round(metric_p95)))
    if jumped:
        items.append(
            line(
                f"Mean latency {recent:,.0f} ms now, {earlier:,.0f} ms earlier", round(recent or 0)
            )
        )
    if cpu is not None:
        items.append(line(f"CPU {cpu:.0f} %", round(cpu, 1)))
    replicas = max(1, agent.replicas)
    if cpu is not None and cpu >= 70:
        target = min(MAX_REPLICAS, max(replicas + 1, math.ceil(replicas * cpu / 60)))
        fix = ev.fix(
            "scale-agent", agent.slug, f"Scale {agent.name} {replicas} → {target}", replicas=target
        )
    else:
        fix = ev.fix("restart-agent", agent.slug, f"Restart {agent.name}")
    return Candidate("slow_performance", f"{agent.name} is slow (p95 {worst:,.0f} ms)",
                     score, items, fix, agent.slug)  # fmt: skip


def _auth_errors(signals: Signals, a: AgentSignals) -> Candidate | None:
    """Tasks or log lines fail on credentials: 401/403, invalid or expired keys and tokens."""
    now, agent = signals.at, a.agent
    errors = [
        e
        for slug, e, _ in signals.failing_errors
        if slug == agent.slug and ev.AUTH_PATTERN.search(e)
    ]
    logs = [t for t in a.log_lines if ev.AUTH_PATTERN.search(t)]
    if not errors and not logs:
        return None
    score = 0.55 + 0.06 * min(5, len(errors)) + 0.04 * min(3, len(logs))
    items = [line(f"Failed task: {text[:200]}", link=ev.agent_link(agent)) for text in errors[:3]]
    items += ev.log_lines(a, logs[-2:])
    if a.traffic.failed:
        items.append(line(f"{a.traffic.failed} of {a.traffic.total} tasks failed in the last hour",
                          a.traffic.failed))  # fmt: skip
    if ev.changed_config_at(a, now, CHANGE_WINDOW) is not None:
        fix = ev.fix(
            "rollback-config", agent.slug, f"Roll back {agent.name}'s config (credentials)"
        )
    else:
        fix = ev.fix("restart-agent", agent.slug, f"Restart {agent.name} to reload its credentials")
    return Candidate("auth_errors", f"{agent.name} is refused by what it calls (authentication)",
                     _clamp(score), items, fix, agent.slug)  # fmt: skip


def _agent_stopped(signals: Signals, a: AgentSignals) -> Candidate | None:
    """Someone stopped or suspended the agent."""
    agent = a.agent
    if agent.state not in (State.STOPPED, State.SUSPENDED):
        return None
    by = next((t for t in a.transitions if t.to_state == agent.state), None)
    person = by is not None and by.actor_kind != "system"
    score = 0.85 if person else 0.65
    items = [line(f"{agent.name} is {agent.get_state_display()} since {ev.ago(signals.at, agent.state_changed_at)}",
                  agent.state, ev.agent_link(agent))]  # fmt: skip
    if by is not None:
        items.append(line(f"{by.action} by {by.actor}" + (f": {by.reason}" if by.reason else ""),
                          by.actor, reverse_history(agent.slug)))  # fmt: skip
    verb = "Resume" if agent.state == State.SUSPENDED else "Start"
    return Candidate("agent_stopped", f"{agent.name} was {agent.get_state_display().lower()}",
                     score, items, ev.fix("start-agent", agent.slug, f"{verb} {agent.name}"),
                     agent.slug)  # fmt: skip


# --- the account -------------------------------------------------------------------------------


def trial_not_activating(signals: Signals, symptom: Symptom) -> Candidate | None:
    """A trial that expired, never started, or whose agents were never deployed."""
    customer, now = signals.customer, signals.at
    if customer.status not in (SubscriptionStatus.TRIALING, SubscriptionStatus.EXPIRED):
        return None
    items, score, fix = [], 0.0, None
    expired = customer.status == SubscriptionStatus.EXPIRED or (
        customer.trial_ends_at is not None and customer.trial_ends_at <= now
    )
    never_deployed = not signals.agents or all(
        a.agent.state in (State.DRAFT, State.PROVISIONED) for a in signals.agents
    )
    if expired:
        score = 0.9
        items.append(line(f"The trial ended {ev.ago(now, customer.trial_ends_at)}",
                          customer.trial_ends_at.isoformat() if customer.trial_ends_at else None))  # fmt: skip
        fix = ev.fix("reset-trial", "", "Reset the trial (14 days)", days=14)
    if customer.trial_started_at is None:
        score = max(score, 0.75)
        items.append(line("The trial never started (no start date)", None))
    if never_deployed:
        score = max(score, 0.75)
        states = ", ".join(f"{a.agent.name}: {a.agent.get_state_display()}" for a in signals.agents)
        items.append(
            line(f"No agent was ever deployed ({states or 'no agents'})", len(signals.agents))
        )
    if not items:
        return None
    fix = fix or ev.fix("resend-email", "", "Resend the welcome (activation) email", kind="welcome")
    return Candidate("trial_not_activating", f"{customer.company_name}'s trial is not active",
                     score, items, fix)  # fmt: skip


def payment_failure(signals: Signals, symptom: Symptom) -> Candidate | None:
    """The last payment failed or the subscription is past due."""
    customer, now = signals.customer, signals.at
    failed = customer.last_payment_failed_at
    recent = failed is not None and failed >= now - timedelta(days=30)
    past_due = customer.status == SubscriptionStatus.PAST_DUE
    if not (recent or past_due):
        return None
    score = 0.9 if past_due else (0.75 if failed and failed >= now - timedelta(days=7) else 0.5)
    items = []
    if past_due:
        items.append(line("The subscription is past due", customer.status))
    if failed is not None:
        items.append(line(f"The last payment failed {ev.ago(now, failed)}", failed.isoformat()))
    return Candidate("payment_failure", f"{customer.company_name}'s payment failed", score, items,
                     ev.fix("resend-email", "", "Resend the payment-failed email",
                            kind="payment-failed"))  # fmt: skip


DETECTORS: dict[str, Detector] = {
    "queue_backlog": _per_agent(_queue_backlog),
    "crash": _per_agent(_crash),
    "out_of_memory": _per_agent(_out_of_memory),
    "dependency_down": _per_agent(_dependency_down),
    "bad_config": _per_agent(_bad_config),
    "bad_version": _per_agent(_bad_version),
    "dead_letter_storm": _per_agent(_dead_letter_storm),
    "slow_performance": _per_agent(_slow_performance),
    "auth_errors": _per_agent(_auth_errors),
    "trial_not_activating": trial_not_activating,
    "payment_failure": payment_failure,
    "agent_stopped": _per_agent(_agent_stopped),
}

CAUSE_TITLES = {
    "queue_backlog": "Queue backlog",
    "crash": "Crash",
    "out_of_memory": "Out of memory",
    "dependency_down": "Dependency down",
    "bad_config": "Bad config change",
    "bad_version": "Bad version",
    "dead_letter_storm": "Dead-letter storm",
    "slow_performance": "Slow performance",
    "auth_errors": "Authentication errors",
    "trial_not_activating": "Trial not activating",
    "payment_failure": "Payment failure",
    "agent_stopped": "Agent stopped",
}


def detect(signals: Signals, symptom: Symptom) -> list[Candidate]:
    """Every cause with evidence (unranked)."""
    found = []
    for detector in DETECTORS.values():
        candidate = detector(signals, symptom)
        if candidate is not None and candidate.evidence:
            found.append(candidate)
    return found
