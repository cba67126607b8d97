"""``manage.py events``: the event log, newest first.

events [--agent SLUG] [--kind K] [--severity S] [--text WORDS] [--limit N] [--json]

Exit status 2 for a filter the event log cannot answer (the reason on stderr).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from rich.console import Console
from rich.table import Table
from rich.text import Text

from observability import events
from observability.models import Event, Severity
from observability.schemas import EventOut, event_out

BAD_INPUT = 2
LIMIT_MAX = 500
SEVERITY_STYLES = {Severity.CRITICAL: "red", Severity.WARNING: "yellow"}


class Command(BaseCommand):
    help = (
        "Recent events, newest first: lifecycle transitions, health changes, drift, "
        "configuration changes, errors and alerts."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--agent", help="Only this agent's (a slug).")
        parser.add_argument("--kind", help=f"Only this kind: {', '.join(Event.Kind.values)}.")
        parser.add_argument("--severity", help=f"Only this severity: {', '.join(Severity.values)}.")
        parser.add_argument("--text", help="Only events whose summary contains this.")
        parser.add_argument(
            "--limit", type=int, default=50, help=f"How many (default 50, at most {LIMIT_MAX})."
        )
        parser.add_argument("--json", action="store_true", help="JSON (as the API answers).")

    def handle(
        self,
        *args,
        agent: str | None,
        kind: str | None,
        severity: str | None,
        text: str | None,
        limit: int,
        json: bool,
        **options,
    ) -> None:
        if not 1 <= limit <= LIMIT_MAX:
            raise CommandError(
                f"--limit {limit} is out of range; give a whole number from 1 to {LIMIT_MAX}.",
                returncode=BAD_INPUT,
            )
        try:
            page = events.search(
                agent=agent or None,
                kind=kind.lower() if kind else None,
                severity=severity.lower() if severity else None,
                text=text,
                limit=limit,
            )
        except events.EventQueryError as problem:
            raise CommandError(str(problem), returncode=BAD_INPUT) from None
        if json:
            rows = [EventOut.model_validate(event_out(e)).model_dump() for e in page.events]
            self.stdout.write(_dumps(rows))
            return
        out = self.stdout._out
        console = Console(
            file=out, highlight=False, soft_wrap=True, width=None if out.isatty() else 200
        )
        if not page.events:
            console.print("No events.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("WHEN", "SEVERITY", "KIND", "AGENT"):
            table.add_column(column)
        table.add_column("WHAT HAPPENED", no_wrap=True, overflow="ellipsis", max_width=100)
        table.add_column("BY")
        for event in page.events:
            table.add_row(
                f"{timezone.localtime(event.ts):%Y-%m-%d %H:%M:%S}",
                Text(event.severity, style=SEVERITY_STYLES.get(event.severity, "")),
                event.kind, event.agent.slug if event.agent_id else "-", Text(event.summary),
                event.actor or "-",
            )  # fmt: skip
        console.print(table)


def _dumps(value) -> str:
    return json.dumps(value, indent=2, cls=DjangoJSONEncoder)
