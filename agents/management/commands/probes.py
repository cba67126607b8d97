"""``manage.py probes show|set|reset``: an agent's liveness and readiness probes.

manage.py probes show wow-cache [--json]
manage.py probes set wow-cache '{"liveness": {"kind": "tcp", "failure_threshold": 3}}' [--as USERNAME] [--json]
manage.py probes set wow-cache @probes.json          # the document from a file
manage.py probes reset wow-cache                     # back to the defaults

The document is the API's (``PUT /api/platform/agents/{slug}/probes``): a probe left out, or a
setting left out of a probe, takes its default. A refused value exits with status 2 and the
sentence naming the field; nothing is changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from agents.probes import services
from agents.probes.schema import PROBES, describe
from agents.services import require_viewer
from portal.cli import REFUSED, add_common_options, command_actor, dumps, refusals_as_command_errors


class Command(BaseCommand):
    help = "Show or change an agent's liveness and readiness probes (HTTP, TCP or exec)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{show,set,reset}")
        show = sub.add_parser("show", help="The probes in use and the latest view of each replica.")
        show.add_argument("slug")
        add_common_options(show)
        setting = sub.add_parser("set", help="Replace the probes with a JSON document.")
        setting.add_argument("slug")
        setting.add_argument(
            "document", help='JSON, e.g. \'{"liveness": {"kind": "tcp"}}\', or @FILE to read it.'
        )
        add_common_options(setting)
        reset = sub.add_parser("reset", help="Back to the default probes.")
        reset.add_argument("slug")
        add_common_options(reset)

    def handle(self, *args, subcommand: str, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            getattr(self, f"_{subcommand}")(**options)

    def _show(self, slug: str, json: bool, as_user: str | None, **options) -> None:
        agent = _agent(slug)
        require_viewer(command_actor("probes show", as_user))
        self._print(agent, json)

    def _set(self, slug: str, document: str, json: bool, as_user: str | None, **options) -> None:
        agent = _agent(slug)
        saved = services.set_probes(agent, _read(document), command_actor("probes set", as_user))
        self._print(saved, json)

    def _reset(self, slug: str, json: bool, as_user: str | None, **options) -> None:
        agent = _agent(slug)
        saved = services.set_probes(agent, {}, command_actor("probes reset", as_user))
        self._print(saved, json)

    def _print(self, agent: Agent, as_json: bool) -> None:
        shown = {**services.probes_of(agent), "replicas": services.replica_status(agent)}
        if as_json:
            self.stdout.write(dumps(shown))
            return
        origin = "its own" if shown["custom"] else "the defaults"
        self.stdout.write(f"{agent.name} ({agent.runtime}): {origin}")
        for which in PROBES:
            probe = shown[which]
            every = f"every {probe['interval_seconds']} s" if shown["custom"] else "every tick"
            self.stdout.write(
                f"  {which:<10} {describe(probe)}, {every}, timeout {probe['timeout_seconds']:g} s, "
                f"fails after {probe['failure_threshold']}, passes after "
                f"{probe['success_threshold']}"
            )
        for row in shown["replicas"]:
            parts = []
            for which in PROBES:
                result = row[which]
                word = "passing" if result["ok"] else "failing"
                why = f" ({result['reason']})" if result["reason"] and result["failures"] else ""
                parts.append(f"{which} {word}{why}")
            self.stdout.write(f"  replica {row['replica']}: " + "; ".join(parts))
        self.stdout.write(f"Changes take effect {shown['takes_effect']}.")


def _agent(slug: str) -> Agent:
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise CommandError(
            f"No agent {slug[:60]!r}; manage.py agents list names them.", returncode=REFUSED
        )
    return agent


def _read(document: str) -> Any:
    text = document
    if document.startswith("@"):
        try:
            text = Path(document[1:]).read_text()
        except OSError as error:
            raise CommandError(
                f"Cannot read {document[1:]}: {error.strerror}.", returncode=REFUSED
            ) from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise CommandError(f"The probes are not JSON: {error}.", returncode=REFUSED) from None
