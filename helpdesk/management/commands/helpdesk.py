"""``manage.py helpdesk``: the help desk for on-call engineers and scripts.

helpdesk search TEXT [--limit N] [--json]
helpdesk show CUSTOMER [--failures] [--json]
helpdesk load-demo [--customers N] [--json]
helpdesk diagnose|action|playbook|tickets ... (see each part's ``cli`` module)
each acting as ``--as USERNAME`` (with that user's role) or, by default, as the shell's Admin.

Every subcommand calls the same services as the pages and the API; ``--json`` prints what the
API answers. Exit status: 0 done, 2 refused or bad input (an unknown customer, a role that may
not, an agent that is not the customer's).
"""

from __future__ import annotations

from importlib import import_module
from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from helpdesk.apps import PARTS
from helpdesk.management import customers_cli
from portal.cli import REFUSED, add_common_options, command_actor, refusals_as_command_errors


def _modules() -> list:
    return [customers_cli] + [import_module(f"helpdesk.{part}.cli") for part in PARTS]


class Command(BaseCommand):
    help = (
        "The help desk: search customers, show one, load the demo data, diagnose, run quick "
        "actions and playbooks, sync tickets. Exit status 2 when refused or for bad input."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        for module in _modules():
            module.add_parsers(sub, add_common_options)

    def handle(self, *args, command: str, **options) -> None:
        out = cast("TextIO", self.stdout._out)
        width = None if out.isatty() else 200
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.actor = command_actor(f"helpdesk {command}", options.pop("as_user", None))
        module = next(m for m in _modules() if command in m.COMMANDS)
        with refusals_as_command_errors(REFUSED):
            status = module.handle(self, command, options)
        if status:
            raise CommandError(f"helpdesk {command} did not succeed.", returncode=status)
