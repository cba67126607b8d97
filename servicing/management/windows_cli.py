"""``manage.py servicing``'s maintenance window subcommands, for on-call engineers and scripts:

servicing windows [--agent SLUG | --tier TIER] [--json]
servicing window-add NAME --cron "0 2 * * *" --duration MINUTES [--timezone ZONE]
                     [--kind allow|deny] [--tier TIER | --agent SLUG] [--disabled]
                     [--reason TEXT] [--json]
servicing window-remove ID --reason TEXT
servicing window-next SLUG [--at ISO-8601] [--json]

Every subcommand calls ``servicing.windows`` (Admin for changes, any role for reading; the
refusal names the field, exit status 2), as the API and the admin do; ``--json`` prints what
the API answers (``servicing.windows_api``).
"""

from __future__ import annotations

import argparse
from typing import Any

from django.utils import timezone as django_timezone
from rich.table import Table
from rich.text import Text

from portal.cli import dumps
from servicing import services, windows
from servicing.models import MaintenanceWindow, WindowKind
from servicing.windows_api import opening_out, window_out, windows_out

COMMANDS = ("windows", "window-add", "window-remove", "window-next")


def add_parsers(sub, common) -> None:
    listing = sub.add_parser("windows", help="Maintenance windows: when upgrades may run.")
    listing.add_argument(
        "what", nargs="?", choices=("list",), default="list", help=argparse.SUPPRESS
    )  # ``windows list``: the same as ``windows``
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("--agent", metavar="SLUG", help="Those that apply to this agent.")
    scope.add_argument("--tier", default=None, help="The fleet's and this tier's.")
    common(listing)
    add = sub.add_parser("window-add", help="Add a maintenance window (Admin).")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--cron", required=True,
                     help="When it opens: minute hour day month weekday, e.g. '0 2 * * *'.")  # fmt: skip
    add.add_argument("--duration", required=True, metavar="MINUTES",
                     help=f"How long it stays open, 1 to {windows.MAX_DURATION_MINUTES} minutes.")  # fmt: skip
    add.add_argument("--timezone", default="UTC", help="IANA name, e.g. Europe/Paris.")
    add.add_argument("--kind", default=WindowKind.ALLOW, choices=WindowKind.values,
                     help="allow (upgrades run then) or deny (never then; wins over allow).")  # fmt: skip
    scope = add.add_mutually_exclusive_group()
    scope.add_argument("--tier", default="", help="For the agents of this tier only.")
    scope.add_argument("--agent", metavar="SLUG", default="", help="For this agent only.")
    add.add_argument("--disabled", action="store_true", help="Added, but not applied yet.")
    add.add_argument("--reason", default="", help="Why; kept with it and in the audit trail.")
    common(add)
    remove = sub.add_parser("window-remove", help="Remove a maintenance window (Admin).")
    remove.add_argument("window", metavar="ID", help="Its id (`servicing windows`).")
    remove.add_argument("--reason", required=True, help="Why; kept in the audit trail.")
    common(remove)
    upcoming = sub.add_parser(
        "window-next", help="Whether an agent may be upgraded now, else when its window opens."
    )
    upcoming.add_argument("agent", metavar="SLUG")
    upcoming.add_argument("--at", default=None, metavar="ISO-8601",
                          help="Ask about this time instead of now, e.g. 2026-12-05T02:00+01:00.")  # fmt: skip
    common(upcoming)


def handle(command, name: str, options: dict[str, Any]) -> int:
    """Run subcommand ``name``; answers the exit status (0 done). A refusal raises
    ``ServicingRefused`` (or ``PermissionDenied``), which the command turns into exit status 2."""
    return globals()[f"_{name.replace('-', '_')}"](command, **options)


def _windows(command, agent: str | None, tier: str | None, json: bool, **options) -> int:
    chosen = None if agent is None else services.get_agent(agent)
    found = windows.list_windows(command.actor, chosen, tier)
    if json:
        command.stdout.write(dumps(windows_out(found)))
        return 0
    if not found:
        command.console.print("No maintenance windows: agents may be upgraded at any time. "
                              "`manage.py servicing window-add` adds one.")  # fmt: skip
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "KIND", "CRON", "ZONE", "MINUTES", "SCOPE", "ENABLED"):
        table.add_column(column)
    for window in found:
        table.add_row(
            str(window.pk), Text(window.name), window.kind, Text(window.cron),
            window.timezone, str(window.duration_minutes), window.scope_label,
            "yes" if window.enabled else Text("no", "yellow"),
        )  # fmt: skip
    command.console.print(table)
    return 0


def _window_add(command, name: str, cron: str, duration: str, timezone: str, kind: str,
                tier: str, agent: str, disabled: bool, reason: str, json: bool,
                **options) -> int:  # fmt: skip
    window = windows.create_window(
        command.actor, name=name, kind=kind, cron=cron, duration_minutes=duration,
        timezone=timezone, tier=tier, agent=agent, enabled=not disabled, reason=reason,
    )  # fmt: skip
    if json:
        command.stdout.write(dumps(window_out(window)))
        return 0
    command.console.print(f"Added {_label(window)}.", markup=False)
    return 0


def _window_remove(command, window: str, reason: str, json: bool, **options) -> int:
    found = windows.get_window(window)
    label = _label(found)
    windows.delete_window(command.actor, found, reason)
    if json:
        command.stdout.write(dumps({"deleted": found.pk}))
        return 0
    command.console.print(f"Removed {label}.", markup=False)
    return 0


def _window_next(command, agent: str, at: str | None, json: bool, **options) -> int:
    chosen = services.get_agent(agent)
    moment = windows.parse_moment(at) if at is not None else django_timezone.now()
    opening = windows.next_opening(chosen, moment)
    if json:
        applying = windows.windows_for(chosen)
        command.stdout.write(dumps(opening_out(chosen.slug, moment, opening, applying)))
        return 0
    state = "open now" if opening.open else "closed"
    command.console.print(f"{chosen.slug}: {state}: {opening.explanation}.", markup=False)
    return 0


def _label(window: MaintenanceWindow) -> str:
    return (f"{window.kind} window '{window.name}' (#{window.pk}: {window.cron} "
            f"{window.timezone}, {window.duration_minutes} min, {window.scope_label})")  # fmt: skip
