"""Alert rules and their alerts.

Beat evaluates every enabled rule on an interval. Evaluation reads only the database (metric
samples, agent states), so it holds no memory between runs: a rule "for 5 min" asks whether
every sample of the last five minutes broke the threshold. A rule whose condition holds fires
one alert per agent; while that alert is open (firing or acknowledged) later evaluations only
update its value, and the database refuses a second open alert for the same rule and agent.
When the condition clears, the alert resolves by itself. A person may acknowledge, silence (no
notifications until a time) or resolve it; resolving while the condition still holds keeps the
rule quiet for that agent until the condition has cleared once.

Firing and resolving are told to every signed-in browser (a toast) and, when
``ALERT_WEBHOOK_URL`` is set, POSTed there as JSON by a retried Celery task.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from agents.models import Agent, State
from observability import events as event_log
from observability import slo, workflow_alerting
from observability.default_rules import DEFAULT_RULES
from observability.metrics import METRICS
from observability.models import Alert, AlertRule, Event, MetricSample, Severity
from observability.queues import alerting as queue_alerts
from portal import roles, work
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused
from portal.services import record_audit, refusals_audited

logger = logging.getLogger(__name__)

SILENCE_MAX = timedelta(days=7)
# The agents a rule watches: everything that exists and has not been revoked or never deployed.
WATCHED_STATES = [s for s in State.values if s not in (State.DRAFT, State.REVOKED)]
# Sent by name: the task lives in ``observability.jobs``, which reads this module.
WEBHOOK_TASK = "observability.send_alert_webhook"

_notifiers: list = []


class AlertActionError(Refused):
    """An acknowledge/resolve/silence that cannot be done, or a filter the search cannot use.

    ``invalid`` and ``invalid_duration`` mean the request itself is wrong (400); the other
    codes (``already_acknowledged``, ``resolved``) are about the alert as it is (409).
    """

    default_code = "invalid"
    status_by_code = {**Refused.status_by_code, "invalid": 400, "invalid_duration": 400}


def on_change(notifier):
    """Register ``notifier(alert, change)`` called after commit when an alert fires, is
    acknowledged, silenced or resolved (the real-time layer uses it for toasts)."""
    if notifier not in _notifiers:
        _notifiers.append(notifier)
    return notifier


def _notify(alert: Alert, change: str) -> None:
    if change == "resolved" and alert.is_silenced():
        return  # silenced: nobody asked to hear about it until the silence ends

    def deliver() -> None:
        for notifier in list(_notifiers):
            try:
                notifier(alert, change)
            except Exception:
                logger.exception("alert notifier %r failed", notifier)

    transaction.on_commit(deliver, robust=True)
    if settings.ALERT_WEBHOOK_URL and change in ("fired", "resolved"):
        transaction.on_commit(functools.partial(work.send, WEBHOOK_TASK, alert.pk, change))


# --- the rules every fleet starts with --------------------------------------------------------


def ensure_default_rules(actor: Actor) -> int:
    """Create the default rules that do not exist yet (by name; an Admin's edits are kept);
    answers how many were created. Audited."""
    with refusals_audited(actor, "alert_rule.create", target="the default rules"):
        actor.require(roles.MANAGE, "create the default alert rules")
    created = 0
    with transaction.atomic():
        for rule in DEFAULT_RULES:
            _, made = AlertRule.objects.get_or_create(name=rule["name"], defaults=rule)
            if made:
                created += 1
                record_audit(actor, "alert_rule.create", target=rule["name"], default=True)
    return created


def seed_step(actor: Actor, out) -> None:
    """``manage.py setup`` step: make sure the default alert rules exist."""
    if created := ensure_default_rules(actor):
        out.write(f"Created {created} default alert rule(s).")


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A rule's condition holding for one agent now."""

    agent: Agent
    value: float | None
    summary: str


def evaluate(now: datetime | None = None) -> dict[str, int]:
    """Evaluate every enabled rule once; answers counts of fired and resolved alerts."""
    now = now or timezone.now()
    counts = {"fired": 0, "resolved": 0}
    for rule in AlertRule.objects.filter(enabled=True).select_related("agent"):
        fired, resolved = evaluate_rule(rule, now)
        counts["fired"] += fired
        counts["resolved"] += resolved
    # A rule an Admin disabled watches nothing any more: its open alerts close.
    for alert in Alert.objects.filter(rule__enabled=False, status__in=Alert.OPEN):
        counts["resolved"] += _clear(alert, now, "The rule was disabled.")
    return counts


def evaluate_rule(rule: AlertRule, now: datetime | None = None) -> tuple[int, int]:
    now = now or timezone.now()
    if rule.kind == AlertRule.Kind.WORKFLOW:
        return _evaluate_workflow_rule(rule, now)
    scope = Agent.objects.filter(state__in=WATCHED_STATES)
    if rule.agent_id:
        scope = scope.filter(pk=rule.agent_id)
    agents = {agent.pk: agent for agent in scope}
    findings = {f.agent.pk: f for f in _findings(rule, agents, now)}
    fired = resolved = 0
    latest = _latest_alerts(rule)
    for agent_id, agent in agents.items():
        alert = latest.get(agent_id)
        finding = findings.get(agent_id)
        if finding is not None:
            fired += _hold(rule, agent, finding, alert, now)
        elif alert is not None:
            resolved += _clear(alert, now)
    # Alerts of agents that left the rule's scope (revoked, rule narrowed) close too.
    for agent_id, alert in latest.items():
        if agent_id not in agents:
            resolved += _clear(alert, now)
    return fired, resolved


def _evaluate_workflow_rule(rule: AlertRule, now: datetime) -> tuple[int, int]:
    """One alert per workflow run at risk of missing its deadline or past it, on the agent the
    run waits for; it resolves when the run finishes or is back on time."""
    found = {
        subject: Finding(agent, value, summary)
        for subject, (agent, value, summary) in workflow_alerting.findings(rule, now).items()
    }
    latest: dict[str, Alert] = {}
    candidates = rule.alerts.filter(
        Q(status__in=Alert.OPEN) | Q(status=Alert.Status.RESOLVED, cleared_at__isnull=True)
    ).order_by("fired_at")
    for alert in candidates:
        if alert.subject not in latest or alert.is_open:
            latest[alert.subject] = alert
    fired = resolved = 0
    for subject, finding in found.items():
        fired += _hold(rule, finding.agent, finding, latest.get(subject), now, subject=subject)
    for subject, alert in latest.items():
        if subject not in found:
            resolved += _clear(alert, now, "The run finished or is back on time.")
    return fired, resolved


def _latest_alerts(rule: AlertRule) -> dict[int, Alert]:
    """Each agent's open alert for the rule, or else its latest one not yet seen cleared."""
    latest: dict[int, Alert] = {}
    candidates = rule.alerts.filter(
        Q(status__in=Alert.OPEN) | Q(status=Alert.Status.RESOLVED, cleared_at__isnull=True)
    ).order_by("fired_at")
    for alert in candidates:
        if alert.agent_id not in latest or alert.is_open:
            latest[alert.agent_id] = alert
    return latest


def _hold(
    rule: AlertRule,
    agent: Agent,
    finding: Finding,
    alert: Alert | None,
    now: datetime,
    subject: str = "",
) -> int:
    if alert is not None and alert.is_open:
        # A workflow's alert keeps saying how late the run is; an agent's keeps its first words.
        fresh = {"summary": finding.summary[:300]} if subject else {}
        Alert.objects.filter(pk=alert.pk).update(last_seen_at=now, value=finding.value, **fresh)
        return 0
    if alert is not None:
        return 0  # resolved by a person while it still holds: quiet until it clears once
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule,
                agent=agent,
                subject=subject,
                severity=rule.severity,
                summary=finding.summary[:300],
                value=finding.value,
                fired_at=now,
                last_seen_at=now,
            )
            event_log.record(
                Event.Kind.ALERT, f"Alert fired: {alert.summary}", agent=agent,
                severity=rule.severity, actor="system:alerts", alert=alert.pk, rule=rule.name,
            )  # fmt: skip
            _notify(alert, "fired")
    except IntegrityError:
        return 0  # another evaluation fired it a moment ago
    logger.warning("alert fired: %s", alert.summary, extra={"agent": agent.slug})
    return 1


def _clear(alert: Alert, now: datetime, why: str = "The condition cleared.") -> int:
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.cleared_at is not None:
            return 0
        alert.cleared_at = now
        if not alert.is_open:
            alert.save(update_fields=["cleared_at"])
            return 0
        alert.status = Alert.Status.RESOLVED
        alert.resolved_at = now
        alert.resolution = why
        alert.save(update_fields=["cleared_at", "status", "resolved_at", "resolution"])
        event_log.record(
            Event.Kind.ALERT, f"Alert resolved ({why.rstrip('.').lower()}): {alert.summary}",
            agent=alert.agent, actor="system:alerts", alert=alert.pk,
        )  # fmt: skip
        _notify(alert, "resolved")
    return 1


def _findings(rule: AlertRule, agents: dict[int, Agent], now: datetime) -> list[Finding]:
    if rule.kind == AlertRule.Kind.STATE:
        return _state_findings(rule, agents, now)
    if rule.kind == AlertRule.Kind.HEARTBEAT:
        return _heartbeat_findings(rule, agents, now)
    if rule.kind == AlertRule.Kind.SLO:
        return [Finding(*found) for found in slo.findings(agents, now)]
    return _metric_findings(rule, agents, now)


def _state_findings(rule: AlertRule, agents: dict[int, Agent], now: datetime) -> list[Finding]:
    since = now - timedelta(seconds=rule.for_seconds)
    found = []
    for agent in agents.values():
        if agent.state == rule.state and agent.state_changed_at <= since:
            detail = f": {agent.health_detail}" if agent.health_detail else ""
            found.append(Finding(agent, None, f"{agent.name} is {agent.state}{detail}"))
    return found


def _heartbeat_findings(rule: AlertRule, agents: dict[int, Agent], now: datetime) -> list[Finding]:
    """RUNNING agents that have not answered a scrape for ``for_seconds`` (at least two
    scrape intervals), counted from when they started running."""
    silence = timedelta(seconds=max(rule.for_seconds, 2 * settings.METRICS_SCRAPE_INTERVAL_SECONDS))
    running = {
        pk: agent
        for pk, agent in agents.items()
        if agent.state == State.RUNNING
        and not agent.pending_action
        and agent.state_changed_at <= now - silence
    }
    last_up = dict(
        MetricSample.objects.filter(agent_id__in=list(running), step=MetricSample.RAW, up__gt=0)
        .values("agent_id")
        .annotate(at=Max("ts"))
        .values_list("agent_id", "at")
    )
    found = []
    for pk, agent in running.items():
        seen = last_up.get(pk)
        if seen is None or seen <= now - silence:
            since = f"since {timezone.localtime(seen):%H:%M:%S}" if seen else "since it started"
            found.append(Finding(agent, None, f"{agent.name}: no heartbeat {since}"))
    return found


def _metric_findings(rule: AlertRule, agents: dict[int, Agent], now: datetime) -> list[Finding]:
    """Agents whose every sample of the last ``for_seconds`` broke the threshold; the samples
    must reach back that far (give or take one scrape), so one bad sample does not fire a
    five-minute rule."""
    if rule.metric in queue_alerts.QUEUE_COLUMNS:
        return [Finding(*found) for found in queue_alerts.findings(rule, agents, now)]
    interval = settings.METRICS_SCRAPE_INTERVAL_SECONDS
    span = max(rule.for_seconds, interval)
    if rule.metric == "memory_percent":
        value = 100.0 * F("memory_bytes") / F("memory_limit_bytes")
        samples = MetricSample.objects.filter(memory_limit_bytes__gt=0)
    else:
        value = F(rule.metric)
        samples = MetricSample.objects.all()
    samples = samples.filter(
        step=MetricSample.RAW,
        agent_id__in=list(agents),
        ts__gt=now - timedelta(seconds=span + interval),
        ts__lte=now,
    ).annotate(value=value)
    rows = (
        samples.filter(value__isnull=False)
        .values("agent_id")
        .annotate(low=Min("value"), high=Max("value"), first=Min("ts"), last=Max("ts"))
    )
    label = AlertRule.Metric(rule.metric).label
    unit = "%" if "%" in label else (" ms" if "ms" in label else "")
    name = label.split(" (")[0]
    found = []
    for row in rows:
        covered = row["first"] <= now - timedelta(seconds=rule.for_seconds) + timedelta(
            seconds=interval
        )
        if rule.for_seconds and not covered:
            continue
        holds = (
            row["low"] > rule.threshold
            if rule.operator == AlertRule.Operator.ABOVE
            else row["high"] < rule.threshold
        )
        if not holds:
            continue
        agent = agents[row["agent_id"]]
        latest = (
            samples.filter(agent_id=agent.pk, value__isnull=False)
            .order_by("-ts")
            .values_list("value", flat=True)
            .first()
        )
        summary = (
            f"{agent.name}: {name} {latest:.1f}{unit} "
            f"{rule.get_operator_display()} {rule.threshold:g}{unit}"
            + (f" for {rule.for_seconds // 60} min" if rule.for_seconds >= 60 else "")
        )
        found.append(Finding(agent, latest, summary))
    return found


# --- people acting on alerts ------------------------------------------------------------------


def acknowledge(alert: Alert, actor: Actor, note: str = "") -> Alert:
    """Say someone is on it: the alert stays open and stops being "firing"."""

    def change(alert: Alert, now: datetime) -> list[str]:
        if alert.status == Alert.Status.ACKNOWLEDGED:
            raise AlertActionError(
                f"Alert #{alert.pk} was already acknowledged by {alert.acknowledged_by}.",
                "already_acknowledged",
            )
        alert.status = Alert.Status.ACKNOWLEDGED
        alert.acknowledged_at, alert.acknowledged_by = now, actor.label
        return ["status", "acknowledged_at", "acknowledged_by"]

    return _act(alert, actor, "acknowledge", change, note=note)


def resolve(alert: Alert, actor: Actor, note: str = "") -> Alert:
    """Close the alert by hand; if its condition still holds the rule stays quiet for this
    agent until the condition has cleared once."""

    def change(alert: Alert, now: datetime) -> list[str]:
        alert.status = Alert.Status.RESOLVED
        alert.resolved_at, alert.resolved_by = now, actor.label
        alert.resolution = (note or "Resolved by hand.")[:300]
        return ["status", "resolved_at", "resolved_by", "resolution"]

    return _act(alert, actor, "resolve", change, note=note)


def silence(alert: Alert, actor: Actor, duration: timedelta) -> Alert:
    """No notifications about this alert until ``duration`` has passed; it stays visible."""

    def change(alert: Alert, now: datetime) -> list[str]:
        if duration < timedelta(minutes=1) or duration > SILENCE_MAX:
            raise AlertActionError(
                "Silence an alert for between one minute and 7 days.", "invalid_duration"
            )
        alert.silenced_until, alert.silenced_by = now + duration, actor.label
        return ["silenced_until", "silenced_by"]

    return _act(alert, actor, "silence", change, minutes=int(duration.total_seconds() // 60))


def _act(alert: Alert, actor: Actor, verb: str, change, **detail) -> Alert:
    try:
        actor.require(roles.OPERATE, f"{verb} alerts")
        with transaction.atomic():
            alert = (
                Alert.objects.select_for_update().select_related("agent", "rule").get(pk=alert.pk)
            )
            if not alert.is_open:
                raise AlertActionError(
                    f"Alert #{alert.pk} is already resolved"
                    + (f" by {alert.resolved_by}" if alert.resolved_by else "")
                    + "; there is nothing to "
                    + verb
                    + ".",
                    "resolved",
                )
            now = timezone.now()
            fields = change(alert, now)
            alert.save(update_fields=fields)
            record_audit(actor, f"alert.{verb}", target=alert.agent.slug, alert=alert.pk, **detail)
            past = {"acknowledge": "acknowledged", "resolve": "resolved", "silence": "silenced"}
            suffix = (
                f" until {timezone.localtime(alert.silenced_until):%Y-%m-%d %H:%M}"
                if verb == "silence"
                else ""
            )
            event_log.record(
                Event.Kind.ALERT, f"Alert {past[verb]}{suffix} by {actor.label}: {alert.summary}",
                agent=alert.agent, actor=actor.label, alert=alert.pk,
            )  # fmt: skip
            _notify(alert, past[verb])
        return alert
    except (AlertActionError, PermissionDenied) as refused:
        record_audit(
            actor, f"alert.{verb}", target=alert.agent.slug if alert.agent_id else "",
            outcome=AuditEntry.Outcome.REFUSED, alert=alert.pk,
            reason=getattr(refused, "message", str(refused)),
        )  # fmt: skip
        raise


# --- reading ----------------------------------------------------------------------------------


def search(
    *,
    agent: Agent | None = None,
    status: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
):
    """Alerts newest first. ``status`` is firing, acknowledged, resolved, or ``open`` (firing
    or acknowledged)."""
    query = Alert.objects.select_related("agent", "rule")
    if agent is not None:
        query = query.filter(agent=agent)
    if status:
        if status == "open":
            query = query.filter(status__in=Alert.OPEN)
        elif status in Alert.Status.values:
            query = query.filter(status=status)
        else:
            raise AlertActionError(
                f"Unknown alert status {status!r}: choose open, {', '.join(Alert.Status.values)}."
            )
    if severity:
        if severity not in Severity.values:
            raise AlertActionError(
                f"Unknown severity {severity!r}: choose one of {', '.join(Severity.values)}."
            )
        query = query.filter(severity=severity)
    if since and until and since > until:
        raise AlertActionError("The start of the time range is after its end: swap them.")
    if since:
        query = query.filter(fired_at__gte=since)
    if until:
        query = query.filter(fired_at__lte=until)
    return query.order_by("-fired_at", "-id")


def open_counts(agent: Agent | None = None) -> dict[str, int]:
    """Open alerts by severity (for badges)."""
    query = Alert.objects.filter(status__in=Alert.OPEN)
    if agent is not None:
        query = query.filter(agent=agent)
    counts = {severity: 0 for severity in Severity.values}
    for severity in query.values_list("severity", flat=True):
        counts[severity] += 1
    return counts


def rule_metric_unit(metric: str) -> str:
    return {
        "error_rate": "%",
        "memory_percent": "%",
        "cpu_percent": "%",
        "queue_lag_seconds": "s",
        "queue_oldest_seconds": "s",
        "dlq_inflow": "/min",
    }.get(metric, "ms" if metric.endswith("_ms") else "")


assert set(AlertRule.Metric.values) <= set(METRICS) | set(queue_alerts.QUEUE_COLUMNS), (
    "every rule metric must be a series"
)


def webhook_payload(alert: Alert, change: str) -> dict:
    return {
        "alert": alert.pk,
        "change": change,
        "status": alert.status,
        "severity": alert.severity,
        "rule": alert.rule.name,
        "condition": alert.rule.condition,
        "agent": alert.agent.slug,
        "summary": alert.summary,
        "value": alert.value,
        "fired_at": alert.fired_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "resolved_by": alert.resolved_by or None,
    }
