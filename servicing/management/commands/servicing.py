"""``manage.py servicing``: releases and pins, for on-call engineers and scripts.

servicing releases [--agent SLUG] [--json]
servicing publish VERSION --artifact IMAGE [--agent SLUG | --template KEY] [--changelog TEXT]
                  [--config JSON] [--json]
servicing bad|pin|unpin RELEASE --reason TEXT [--json]
servicing upgrade|upgrades|upgrade-show|promote|pause|resume|abort|rollback|scale|config ...
    (see ``servicing/management/upgrades_cli.py``)
servicing windows list [--agent SLUG | --tier TIER] [--json]
servicing windows add NAME --cron "0 2 * * *" --duration MINUTES [--timezone ZONE] [--deny]
                  [--agent SLUG | --tier TIER] [--disabled] [--reason TEXT] [--json]
servicing windows remove ID [--reason TEXT]
servicing windows next --agent SLUG [--at ISO-8601] [--json]
each acting as ``--as USERNAME`` (with that user's role) or, by default, as the shell's Admin.

RELEASE is a release's id, or its version when one release has it (the fleet's when several
do). Every door calls the same ``servicing.services`` (windows: ``servicing.windows``);
``--json`` prints what the API answers (``servicing.schemas``, ``servicing.windows_api``). Exit status: 0 done, 2 refused or bad input (a version that is not one,
a release published already, a role that may not, an unknown agent or release).
"""

from __future__ import annotations

import json as jsonlib
from typing import Any, TextIO, cast

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone as django_timezone
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portal.actors import Actor
from portal.cli import dumps, refusals_as_command_errors
from servicing import services, windows
from servicing.management import upgrades_cli
from servicing.models import MaintenanceWindow, Release, WindowKind
from servicing.schemas import release_out, releases_out
from servicing.windows_api import opening_out, window_out, windows_out

REFUSED = 2
PIN_ACTIONS = {"bad": services.mark_bad, "pin": services.pin, "unpin": services.unpin}
DONE = {"bad": "Marked {release} bad; it is pinned.", "pin": "Pinned {release}.",
        "unpin": "Unpinned {release}."}  # fmt: skip


class Command(BaseCommand):
    help = (
        "Releases of agentd and their pins: list them (all, or those of an agent), publish one, "
        "mark one bad (it is pinned too), pin or unpin one. Exit status 2 when refused or for "
        "bad input."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        listing = sub.add_parser("releases", help="The releases, newest version first.")
        listing.add_argument("--agent", metavar="SLUG", help="Only those that apply to it.")
        _common(listing)
        publish = sub.add_parser("publish", help="Publish a release (Admin).")
        publish.add_argument("version", help="MAJOR.MINOR.PATCH, e.g. 1.1.0 or 1.1.0-rc.1.")
        publish.add_argument("--artifact", required=True,
                             help="The image, e.g. waooaw/agentd:1.1.0 ('local': agentd here).")  # fmt: skip
        scope = publish.add_mutually_exclusive_group()
        scope.add_argument("--agent", metavar="SLUG", help="For this agent only.")
        scope.add_argument("--template", metavar="KEY", default="",
                           help="For the agents of this factory template only.")  # fmt: skip
        publish.add_argument("--changelog", default="", help="What changed.")
        publish.add_argument("--config", metavar="JSON", default=None,
                             help="agentd config keys it changes by default, as a JSON object.")  # fmt: skip
        _common(publish)
        for action, text in (
            ("bad", "Mark a release bad (Operator); it is pinned too."),
            ("pin", "Pin a release (Admin): no upgrade takes an agent to it."),
            ("unpin", "Unpin a release (Admin)."),
        ):
            acting = sub.add_parser(action, help=text)
            acting.add_argument("release", metavar="RELEASE", help="Its id, or its version.")
            acting.add_argument("--reason", required=True, help="Why; kept in the audit trail.")
            _common(acting)
        upgrades_cli.add_parsers(sub, _common)
        _add_window_parsers(sub)

    def handle(self, *args, command: str, **options) -> None:
        out = cast("TextIO", self.stdout._out)
        width = None if out.isatty() else 200  # piped: wide lines, not 80-column wrapping
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.actor = _actor(f"servicing {command}", options.pop("as_user", None))
        with refusals_as_command_errors(REFUSED):
            if command in PIN_ACTIONS:
                self._act(command, **options)
            elif command == "windows":
                getattr(self, f"_windows_{options.pop('windows_command')}")(**options)
            elif command in upgrades_cli.COMMANDS:
                status = upgrades_cli.handle(self, command, options)
                if status:
                    raise CommandError(f"servicing {command} did not succeed.", returncode=status)
            else:
                getattr(self, f"_{command}")(**options)

    def _releases(self, agent: str | None, json: bool, **options) -> None:
        chosen = None if agent is None else services.get_agent(agent)
        releases = services.list_releases(self.actor, chosen)
        if json:
            self.stdout.write(dumps(releases_out(releases)))
            return
        if not releases:
            self.console.print("No releases yet; `manage.py servicing publish` adds one.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "VERSION", "SCOPE", "ARTIFACT", "PUBLISHED", "BY", "STATE"):
            table.add_column(column)
        for release in releases:
            table.add_row(
                str(release.pk), release.version, release.scope_label, release.artifact,
                f"{release.published_at:%Y-%m-%d %H:%M}", release.published_by, _state(release),
            )  # fmt: skip
        self.console.print(table)

    def _publish(self, version: str, artifact: str, agent: str | None, template: str,
                 changelog: str, config: str | None, json: bool, **options) -> None:  # fmt: skip
        chosen = None if agent is None else services.get_agent(agent)
        release = services.publish(
            self.actor, version, artifact, changelog=changelog,
            config_changes=_config(config), agent=chosen, template=template,
        )  # fmt: skip
        if json:
            self.stdout.write(dumps(release_out(release)))
            return
        self.console.print(
            f"Published release {release.version} for {_scope(release)} (#{release.pk}, "
            f"{release.artifact}).",
            markup=False,
        )

    def _act(self, action: str, release: str, reason: str, json: bool, **options) -> None:
        found = services.find_release(release)
        changed = PIN_ACTIONS[action](self.actor, found, reason)
        if json:
            self.stdout.write(dumps(release_out(changed)))
            return
        label = f"{changed.version} ({_scope(changed)}, #{changed.pk})"
        self.console.print(DONE[action].format(release=label), markup=False)

    # --- maintenance windows ---------------------------------------------------------------

    def _windows_list(self, agent: str | None, tier: str | None, json: bool, **options) -> None:
        chosen = None if agent is None else services.get_agent(agent)
        found = windows.list_windows(self.actor, chosen, tier)
        if json:
            self.stdout.write(dumps(windows_out(found)))
            return
        if not found:
            self.console.print("No maintenance windows: agents may be upgraded at any time. "
                               "`manage.py servicing windows add` adds one.")  # fmt: skip
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "NAME", "KIND", "CRON", "ZONE", "MINUTES", "SCOPE", "ENABLED"):
            table.add_column(column)
        for window in found:
            table.add_row(
                str(window.pk), window.name, window.kind, window.cron, window.timezone,
                str(window.duration_minutes), window.scope_label,
                "yes" if window.enabled else Text("no", "yellow"),
            )  # fmt: skip
        self.console.print(table)

    def _windows_add(self, name: str, cron: str, duration: str, timezone: str, deny: bool,
                     agent: str | None, tier: str, disabled: bool, reason: str, json: bool,
                     **options) -> None:  # fmt: skip
        window = windows.create_window(
            self.actor, name=name, kind=WindowKind.DENY if deny else WindowKind.ALLOW, cron=cron,
            duration_minutes=duration, timezone=timezone, agent=agent or "", tier=tier,
            enabled=not disabled, reason=reason,
        )  # fmt: skip
        if json:
            self.stdout.write(dumps(window_out(window)))
            return
        self.console.print(f"Added {_window_label(window)}.", markup=False)

    def _windows_remove(self, window: str, reason: str, **options) -> None:
        found = windows.get_window(window)
        label = _window_label(found)
        windows.delete_window(self.actor, found, reason)
        self.console.print(f"Removed {label}.", markup=False)

    def _windows_next(self, agent: str, at: str | None, json: bool, **options) -> None:
        chosen = services.get_agent(agent)
        moment = windows.parse_moment(at) if at is not None else django_timezone.now()
        opening = windows.next_opening(chosen, moment)
        if json:
            self.stdout.write(dumps(opening_out(chosen.slug, moment, opening)))
            return
        state = "open now" if opening.open else "closed"
        self.console.print(f"{chosen.slug}: {state}: {opening.explanation}.", markup=False)


def _add_window_parsers(sub) -> None:
    group = sub.add_parser("windows", help="Maintenance windows: when upgrades may run.")
    windows_sub = group.add_subparsers(dest="windows_command", required=True)
    listing = windows_sub.add_parser("list", help="The windows (any role).")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("--agent", metavar="SLUG", help="Those that apply to this agent.")
    scope.add_argument("--tier", default=None, help="The fleet's and this tier's.")
    _common(listing)
    add = windows_sub.add_parser("add", help="Add a window (Admin).")
    add.add_argument("name")
    add.add_argument("--cron", required=True,
                     help="When it opens: minute hour day month weekday, e.g. '0 2 * * *'.")  # fmt: skip
    add.add_argument("--duration", required=True, metavar="MINUTES",
                     help="How long it stays open, 1 to 10080 minutes.")  # fmt: skip
    add.add_argument("--timezone", default="UTC", help="IANA name, e.g. Europe/Paris.")
    add.add_argument("--deny", action="store_true", help="No upgrades then (wins over allow).")
    scope = add.add_mutually_exclusive_group()
    scope.add_argument("--agent", metavar="SLUG", help="For this agent only.")
    scope.add_argument("--tier", default="", help="For the agents of this tier only.")
    add.add_argument("--disabled", action="store_true", help="Added, but not applied yet.")
    add.add_argument("--reason", default="", help="Why; kept with it and in the audit trail.")
    _common(add)
    remove = windows_sub.add_parser("remove", help="Remove a window (Admin).")
    remove.add_argument("window", metavar="ID", help="Its id (`servicing windows list`).")
    remove.add_argument("--reason", default="", help="Why; kept in the audit trail.")
    _common(remove)
    upcoming = windows_sub.add_parser(
        "next", help="Whether an agent may be upgraded now, else when its window opens."
    )
    upcoming.add_argument("--agent", required=True, metavar="SLUG")
    upcoming.add_argument("--at", default=None, metavar="ISO-8601",
                          help="Ask about this time instead of now, e.g. 2026-12-05T02:00+01:00.")  # fmt: skip
    _common(upcoming)


def _window_label(window: MaintenanceWindow) -> str:
    return (f"{window.kind} window '{window.name}' (#{window.pk}: {window.cron} "
            f"{window.timezone}, {window.duration_minutes} min, {window.scope_label})")  # fmt: skip


def _common(parser) -> None:
    parser.add_argument("--as", dest="as_user", default=None, metavar="USERNAME",
                        help="Act as this user, with their role (default: the shell's Admin).")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="JSON, as the API answers.")


def _actor(name: str, username: str | None) -> Actor:
    if username is None:
        return Actor.command(name)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user {username[:60]!r}; --as takes a username.", returncode=REFUSED)
    return Actor.command(name, user=user)


def _config(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError as error:
        raise CommandError(
            f"--config is not JSON ({error}); give an object such as '{{\"task_block_ms\": 500}}'.",
            returncode=REFUSED,
        ) from None


def _scope(release: Release) -> str:
    label = release.scope_label
    return "the fleet" if label == "fleet" else label


def _state(release: Release) -> Text:
    if release.bad:
        return Text(f"bad, pinned: {release.pinned_reason}" if release.pinned else "bad", "red")
    if release.pinned:
        return Text(f"pinned: {release.pinned_reason}", "yellow")
    return Text("-")
