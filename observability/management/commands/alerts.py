"""``manage.py alerts``: alerts and alert rules for on-call engineers.

alerts list [--status open|firing|acknowledged|resolved|all] [--agent SLUG] [--severity S]
            [--limit N] [--json]
alerts show <id> [--json]
alerts ack <id> [--note TEXT]
alerts resolve <id> [--note TEXT]
alerts silence <id> <minutes>
alerts evaluate
alerts rules [--json]

Exit status: 0 done, 1 refused or in conflict (already acknowledged or resolved), 2 bad input or
no such alert; the reason goes to stderr.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, Q
from django.utils import timezone
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.models import Agent
from observability import alerts
from observability.models import Alert, AlertRule, Severity
from observability.schemas import AlertOut, alert_out
from portal.actors import Actor

REFUSED = 1
BAD_INPUT = 2
STATUSES = ["open", *Alert.Status.values, "all"]
SEVERITY_STYLES = {Severity.CRITICAL: "red", Severity.WARNING: "yellow"}
STATUS_STYLES = {
    Alert.Status.FIRING: "red",
    Alert.Status.ACKNOWLEDGED: "yellow",
    Alert.Status.RESOLVED: "green",
}


class Command(BaseCommand):
    help = (
        "List, acknowledge, resolve and silence alerts; evaluate the rules once; list the rules. "
        "Exit status 1 when refused or already done, 2 for bad input or an unknown alert."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        listing = sub.add_parser("list", help="Alerts, newest first (open ones by default).")
        listing.add_argument(
            "--status", default="open", help=f"One of {', '.join(STATUSES)} (default open)."
        )
        listing.add_argument("--agent", help="Only this agent's (a slug).")
        listing.add_argument(
            "--severity", help=f"Only this severity: {', '.join(Severity.values)}."
        )
        listing.add_argument("--limit", type=int, default=50)
        listing.add_argument("--json", action="store_true", help="JSON (as the API answers).")
        show = sub.add_parser("show", help="One alert in full.")
        show.add_argument("alert_id", type=int, metavar="id")
        show.add_argument("--json", action="store_true")
        ack = sub.add_parser("ack", help="Acknowledge an alert: someone is on it.")
        ack.add_argument("alert_id", type=int, metavar="id")
        ack.add_argument("--note", default="", help="Kept in the audit trail.")
        resolve = sub.add_parser("resolve", help="Resolve an alert by hand.")
        resolve.add_argument("alert_id", type=int, metavar="id")
        resolve.add_argument("--note", default="", help="The resolution, kept on the alert.")
        silence = sub.add_parser("silence", help="No notifications about an alert for a while.")
        silence.add_argument("alert_id", type=int, metavar="id")
        silence.add_argument("minutes", type=int, help="From 1 to 10080 (7 days).")
        sub.add_parser("evaluate", help="Evaluate every enabled rule once; print what changed.")
        rules = sub.add_parser("rules", help="The alert rules and their conditions.")
        rules.add_argument("--json", action="store_true")

    def handle(self, *args, command: str, **options) -> None:
        out = self.stdout._out
        # Piped output (scripts, grep) gets wide lines rather than rich's 80-column wrapping.
        width = None if out.isatty() else 200
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        getattr(self, f"_{command}")(**options)

    # --- reading ------------------------------------------------------------------------------

    def _list(
        self,
        status: str,
        agent: str | None,
        severity: str | None,
        limit: int,
        json: bool,
        **options,
    ) -> None:
        status = status.lower()
        if status not in STATUSES:
            raise CommandError(
                f"--status {status!r} is not an alert status; use one of {', '.join(STATUSES)}.",
                returncode=BAD_INPUT,
            )
        if limit < 1:
            raise CommandError("--limit must be at least 1.", returncode=BAD_INPUT)
        try:
            found = alerts.search(
                agent=_agent(agent) if agent else None,
                status=None if status == "all" else status,
                severity=severity.lower() if severity else None,
            )
        except alerts.AlertActionError as problem:
            raise CommandError(problem.message, returncode=BAD_INPUT) from None
        found = list(found[:limit])
        if json:
            self.stdout.write(_dumps([_alert_json(alert) for alert in found]))
            return
        if not found:
            self.console.print("No open alerts." if status == "open" else "No alerts.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "SEVERITY", "STATUS", "AGENT"):
            table.add_column(column)
        table.add_column("SUMMARY", no_wrap=True, overflow="ellipsis", max_width=80)
        table.add_column("FIRED")
        table.add_column("BY")
        for alert in found:
            table.add_row(
                str(alert.pk), Text(alert.severity, style=SEVERITY_STYLES.get(alert.severity, "")),
                _status(alert), alert.agent.slug, Text(alert.summary), _when(alert.fired_at),
                _by_whom(alert),
            )  # fmt: skip
        self.console.print(table)

    def _show(self, alert_id: int, json: bool, **options) -> None:
        alert = _alert(alert_id)
        if json:
            self.stdout.write(_dumps(_alert_json(alert)))
            return
        say = self.console.print
        say(
            Text.assemble(
                (f"Alert #{alert.pk}", "bold"),
                f" on {alert.agent.slug} ({alert.agent.name}): ",
                (alert.severity, SEVERITY_STYLES.get(alert.severity, "")),
                ", ",
                _status(alert),
            )
        )
        say(f"Summary:   {alert.summary}", markup=False)
        say(f"Rule:      {alert.rule.name} ({alert.rule.condition})", markup=False)
        if alert.value is not None:
            say(f"Value:     {alert.value:g}")
        say(f"Fired:     {_when(alert.fired_at)}; last seen {_when(alert.last_seen_at)}")
        if alert.acknowledged_at:
            say(f"Acknowledged by {alert.acknowledged_by} at {_when(alert.acknowledged_at)}")
        if alert.silenced_until:
            state = "Silenced" if alert.is_silenced() else "Was silenced"
            say(f"{state} by {alert.silenced_by} until {_when(alert.silenced_until)}")
        if alert.resolved_at:
            say(f"Resolved by {_by_whom(alert)} at {_when(alert.resolved_at)}: {alert.resolution}")

    def _rules(self, json: bool, **options) -> None:
        rules = (
            AlertRule.objects.select_related("agent")
            .annotate(open_alerts=Count("alerts", filter=Q(alerts__status__in=Alert.OPEN)))
            .order_by("name")  # Meta.ordering does not apply to an aggregation
        )
        if json:
            self.stdout.write(
                _dumps(
                    [
                        {
                            "id": rule.pk,
                            "name": rule.name,
                            "kind": rule.kind,
                            "condition": rule.condition,
                            "severity": rule.severity,
                            "agent": rule.agent.slug if rule.agent_id else None,
                            "enabled": rule.enabled,
                            "open_alerts": rule.open_alerts,
                            "description": rule.description,
                        }
                        for rule in rules
                    ]
                )
            )
            return
        table = Table(box=None, header_style="bold")
        for column in ("NAME", "CONDITION", "SEVERITY", "AGENTS", "ENABLED", "OPEN"):
            table.add_column(column)
        for rule in rules:
            table.add_row(
                rule.name, rule.condition,
                Text(rule.severity, style=SEVERITY_STYLES.get(rule.severity, "")),
                rule.agent.slug if rule.agent_id else "all", "yes" if rule.enabled else "no",
                str(rule.open_alerts),
            )  # fmt: skip
        self.console.print(table)

    # --- acting -------------------------------------------------------------------------------

    def _ack(self, alert_id: int, note: str, **options) -> None:
        alert = _act(alerts.acknowledge, _alert(alert_id), Actor.command("alerts ack"), note)
        self.console.print(
            f"Alert #{alert.pk} ({alert.agent.slug}) acknowledged by {alert.acknowledged_by}.",
            markup=False,
        )

    def _resolve(self, alert_id: int, note: str, **options) -> None:
        alert = _act(alerts.resolve, _alert(alert_id), Actor.command("alerts resolve"), note)
        self.console.print(
            f"Alert #{alert.pk} ({alert.agent.slug}) resolved by {alert.resolved_by}: "
            f"{alert.resolution}",
            markup=False,
        )

    def _silence(self, alert_id: int, minutes: int, **options) -> None:
        alert = _act(
            alerts.silence,
            _alert(alert_id),
            Actor.command("alerts silence"),
            timedelta(minutes=minutes),
        )
        self.console.print(
            f"Alert #{alert.pk} ({alert.agent.slug}) silenced until {_when(alert.silenced_until)}.",
            markup=False,
        )

    def _evaluate(self, **options) -> None:
        rules = AlertRule.objects.filter(enabled=True).count()
        counts = alerts.evaluate()
        self.console.print(
            f"Evaluated {rules} rule{'s' if rules != 1 else ''}: "
            f"{counts['fired']} fired, {counts['resolved']} resolved."
        )


def _act(service, alert: Alert, actor: Actor, *args) -> Alert:
    """Call an alert service; a refusal becomes a CommandError with its sentence and status."""
    try:
        return service(alert, actor, *args)
    except PermissionDenied as denied:
        raise CommandError(str(denied), returncode=REFUSED) from None
    except alerts.AlertActionError as refused:
        # A refusal the API answers 400 means the input is wrong; the others are about the
        # alert's status.
        returncode = BAD_INPUT if refused.status == 400 else REFUSED
        raise CommandError(refused.message, returncode=returncode) from None


def _alert(alert_id: int) -> Alert:
    try:
        return Alert.objects.select_related("agent", "rule").get(pk=alert_id)
    except Alert.DoesNotExist:
        raise CommandError(
            f"There is no alert #{alert_id}; `manage.py alerts list --status all` lists them.",
            returncode=BAD_INPUT,
        ) from None


def _agent(slug: str) -> Agent:
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise CommandError(
            f"No agent called {slug!r}: use a slug such as wow-cache.", returncode=BAD_INPUT
        )
    return agent


def _status(alert: Alert) -> Text:
    text = Text(alert.status, style=STATUS_STYLES.get(alert.status, ""))
    if alert.is_open and alert.is_silenced():
        text.append(" (silenced)", style="bright_black")
    return text


def _by_whom(alert: Alert) -> str:
    """Who last acted on it: who resolved it (or "condition cleared"), or who acknowledged it."""
    if alert.status == Alert.Status.RESOLVED:
        return alert.resolved_by or "condition cleared"
    if alert.status == Alert.Status.ACKNOWLEDGED:
        return alert.acknowledged_by
    return "-"


def _alert_json(alert: Alert) -> dict:
    """The alert as the API answers it, so scripts can use either door."""
    return AlertOut.model_validate(alert_out(alert)).model_dump()


def _when(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}" if moment else "-"


def _dumps(value) -> str:
    return json.dumps(value, indent=2, cls=DjangoJSONEncoder)
