"""``manage.py slo list|set``: availability objectives, their error budgets and burn rates.

manage.py slo list [--json]
manage.py slo set wow-event 99.95
manage.py slo set wow-event clear      # back to the default (SLO_DEFAULT_OBJECTIVES), if any
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from observability import slo
from portal.cli import REFUSED, add_common_options, command_actor, dumps, refusals_as_command_errors


class Command(BaseCommand):
    help = "List the agents' availability objectives (30 days) or set one."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{list,set}")
        listing = sub.add_parser("list", help="Objective, availability, budget left, burn rates.")
        add_common_options(listing)
        setting = sub.add_parser("set", help="Set an agent's objective (percent) or clear it.")
        setting.add_argument("slug")
        setting.add_argument("objective", help="50 to 99.999, or 'clear'.")
        add_common_options(setting)

    def handle(self, *args, subcommand: str, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            getattr(self, f"_{subcommand}")(**options)

    def _list(self, json: bool, **options) -> None:
        found = [status.as_dict() for status in slo.fleet_statuses()]
        if json:
            self.stdout.write(dumps({"slos": found}))
            return
        if not found:
            self.stdout.write("No agent has an availability objective.")
        for row in found:
            left = row["budget_left_percent"]
            burns = " ".join(
                f"{w} {v if v is not None else '-'}" for w, v in row["burn_rates"].items()
            )
            self.stdout.write(
                f"{row['agent']:<24} objective {row['objective']} %  available "
                f"{row['availability'] if row['availability'] is not None else '-'} %  budget left "
                f"{left if left is not None else '-'} %  burn {burns}"
                + (f"  BURNING {row['alerting']}" if row["alerting"] else "")
            )

    def _set(self, slug: str, objective: str, json: bool, as_user: str | None, **options) -> None:
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None:
            raise CommandError(f"No agent {slug[:60]!r}.", returncode=REFUSED)
        value = None if objective.strip().lower() == "clear" else objective
        slo.set_objective(agent, value, command_actor("slo set", as_user))
        found = slo.statuses([agent])
        if json:
            self.stdout.write(dumps({"slo": found[0].as_dict() if found else None}))
        else:
            self.stdout.write(
                f"{agent.name}: "
                + (f"objective {found[0].objective} %" if found else "no objective")
            )
