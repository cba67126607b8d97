"""``manage.py servicing``: releases and pins, for on-call engineers and scripts.

servicing releases [--agent SLUG] [--json]
servicing publish VERSION --artifact IMAGE [--agent SLUG | --template KEY] [--changelog TEXT]
                  [--config JSON] [--json]
servicing bad|pin|unpin RELEASE --reason TEXT [--json]
servicing upgrade|upgrades|upgrade-show|promote|pause|resume|abort|rollback|scale|config ...
    (see ``servicing/management/upgrades_cli.py``)
servicing windows|window-add|window-remove|window-next ...
    (see ``servicing/management/windows_cli.py``)
each acting as ``--as USERNAME`` (with that user's role) or, by default, as the shell's Admin.

RELEASE is a release's id, or its version when one release has it (the fleet's when several
do). Every door calls the same ``servicing.services`` (windows: ``servicing.windows``);
``--json`` prints what the API answers (``servicing.schemas``, ``servicing.windows_api``).
Exit status: 0 done, 2 refused or bad input (a version that is not one, a release published
already, a role that may not, an unknown agent or release).
"""

from __future__ import annotations

import json as jsonlib
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portal.cli import add_common_options, command_actor, dumps, refusals_as_command_errors
from servicing import services
from servicing.management import upgrades_cli, windows_cli
from servicing.models import Release
from servicing.schemas import release_out, releases_out

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
        add_common_options(listing)
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
        add_common_options(publish)
        for action, text in (
            ("bad", "Mark a release bad (Operator); it is pinned too."),
            ("pin", "Pin a release (Admin): no upgrade takes an agent to it."),
            ("unpin", "Unpin a release (Admin)."),
        ):
            acting = sub.add_parser(action, help=text)
            acting.add_argument("release", metavar="RELEASE", help="Its id, or its version.")
            acting.add_argument("--reason", required=True, help="Why; kept in the audit trail.")
            add_common_options(acting)
        upgrades_cli.add_parsers(sub, add_common_options)
        windows_cli.add_parsers(sub, add_common_options)

    def handle(self, *args, command: str, **options) -> None:
        out = cast("TextIO", self.stdout._out)
        width = None if out.isatty() else 200  # piped: wide lines, not 80-column wrapping
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.actor = command_actor(f"servicing {command}", options.pop("as_user", None))
        with refusals_as_command_errors(REFUSED):
            if command in PIN_ACTIONS:
                self._act(command, **options)
            elif command in upgrades_cli.COMMANDS or command in windows_cli.COMMANDS:
                cli = upgrades_cli if command in upgrades_cli.COMMANDS else windows_cli
                status = cli.handle(self, command, options)
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
