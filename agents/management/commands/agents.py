"""``manage.py agents``: the agent registry and lifecycle for on-call engineers.

agents list [--state S] [--json]
agents show <slug> [--json]
agents history <slug> [--limit N]
agents seed
agents <provision|deploy|start|stop|suspend|resume|restart|revoke> <slug>... [--wait] [--reason TEXT]
"""

from __future__ import annotations

import json
import time

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents import services
from agents.models import ACTIONS, Agent, Operation, State
from portal.actors import Actor

STATE_STYLES = {
    State.RUNNING: "green",
    State.ERRORED: "red",
    State.SUSPENDED: "yellow",
    State.STOPPED: "bright_black",
    State.REVOKED: "bright_black strike",
}
PICKUP_HINT_SECONDS = 10


class Command(BaseCommand):
    help = "List, inspect and operate agents: list, show, history, seed, and the eight lifecycle actions."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(
            dest="command",
            required=True,
            metavar="{list,show,history,seed," + ",".join(ACTIONS) + "}",
        )
        listing = sub.add_parser("list", help="List agents.")
        listing.add_argument("--state", help="Only agents in this state, e.g. RUNNING.")
        listing.add_argument("--json", action="store_true", help="JSON instead of a table.")
        show = sub.add_parser("show", help="Everything about one agent.")
        show.add_argument("slug")
        show.add_argument("--json", action="store_true")
        history = sub.add_parser("history", help="An agent's transitions, newest first.")
        history.add_argument("slug")
        history.add_argument("--limit", type=int, default=20)
        sub.add_parser("seed", help="Register the 14 Platform CoE agents (idempotent).")
        build = sub.add_parser(
            "build-image",
            help="Build the agent image waooaw/agentd:<version> on the Docker engine.",
        )
        build.add_argument(
            "--version",
            dest="image_version",
            default="1.0.0",
            help="Image tag (an agent's version).",
        )
        build.add_argument(
            "--base-image",
            default=None,
            help="Base image (AGENT_BASE_IMAGE; default python:3.12-slim).",
        )
        for action in ACTIONS:
            parser_for_action = sub.add_parser(
                action, help=f"{action.capitalize()} one or more agents."
            )
            parser_for_action.add_argument("slugs", nargs="+", metavar="slug")
            parser_for_action.add_argument("--reason", default="", help="Why; kept in the history.")
            parser_for_action.add_argument(
                "--wait", action="store_true", help="Show progress until it ends."
            )
            parser_for_action.add_argument(
                "--inline",
                action="store_true",
                help="Carry it out in this process instead of the worker (worker down).",
            )
            parser_for_action.add_argument(
                "--yes", action="store_true", help="Confirm when other agents depend on it."
            )
            if action == "start":
                parser_for_action.add_argument(
                    "--with-dependencies",
                    action="store_true",
                    help="Start what it depends on first.",
                )

    def handle(self, *args, command: str, **options) -> None:
        out = self.stdout._out
        # Piped output (scripts, grep) gets wide lines rather than rich's 80-column wrapping.
        width = None if out.isatty() else 200
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.err = Console(file=self.stderr._out, highlight=False, soft_wrap=True)
        if command in ACTIONS:
            self._act(command, **options)
        else:
            getattr(self, f"_{command.replace('-', '_')}")(**options)

    # --- reading --------------------------------------------------------------------------

    def _list(self, state: str | None, json: bool, **options) -> None:
        agents = Agent.objects.all()
        if state:
            if state.upper() not in State.values:
                raise CommandError(
                    f"--state {state!r} is not a state; use one of {', '.join(State.values)}."
                )
            agents = agents.filter(state=state.upper())
        if json:
            self.stdout.write(_dumps([_summary(agent) for agent in agents]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("SLUG", "NAME", "STATE", "HEALTH", "PENDING", "RUNTIME", "VERSION"):
            table.add_column(column)
        for agent in agents:
            table.add_row(
                agent.slug, agent.name, Text(agent.state, style=STATE_STYLES.get(agent.state, "")),
                agent.health, agent.pending_label or "-", agent.runtime, agent.version,
            )  # fmt: skip
        self.console.print(table)

    def _show(self, slug: str, json: bool, **options) -> None:
        agent = self._agent(slug)
        summary = _summary(agent) | {
            "description": agent.description,
            "capabilities": agent.capabilities,
            "owner_team": agent.owner_team,
            "dependencies": sorted(d.slug for d in agent.dependencies.all()),
            "dependents": sorted(d.slug for d in agent.dependents.all()),
            "resources": {"cpu_millicores": agent.cpu_millicores, "memory_mb": agent.memory_mb},
            "replicas": agent.replicas,
            "runtime_details": agent.runtime_details,
            "last_exit": agent.last_exit,
            "restart_attempts": agent.restart_attempts,
            "next_restart_at": agent.next_restart_at,
        }
        if json:
            self.stdout.write(_dumps(summary))
            return
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            self.stdout.write(f"{key:<{width}}  {value}")

    def _history(self, slug: str, limit: int, **options) -> None:
        agent = self._agent(slug)
        table = Table(box=None, header_style="bold")
        for column in ("WHEN", "ACTION", "FROM", "TO", "BY", "REASON"):
            table.add_column(column)
        for row in agent.transitions.all()[:limit]:
            table.add_row(
                f"{row.at:%Y-%m-%d %H:%M:%S}",
                row.action,
                row.from_state,
                row.to_state,
                row.actor,
                row.reason,
            )
        self.console.print(table)

    def _build_image(self, image_version: str, base_image: str | None, **options) -> None:
        from django.conf import settings

        from agents.runtimes import RuntimeFailure
        from agents.runtimes.images import build_agent_image, connect_engine

        try:
            tag = build_agent_image(
                connect_engine(settings.DOCKER_HOST),
                image_version,
                base_image or settings.AGENT_BASE_IMAGE,
                repository=settings.AGENT_IMAGE,
                on_output=lambda line: self.stderr.write(line.rstrip("\n")),
            )
        except RuntimeFailure as failure:
            raise CommandError(failure.message) from None
        self.stdout.write(tag)

    def _seed(self, **options) -> None:
        created, links = services.seed_platform_agents(Actor.command("agents seed"))
        self.stdout.write(f"{created} agent(s) registered, {links} dependency link(s) added.")

    # --- acting ------------------------------------------------------------------------------

    def _act(
        self,
        action: str,
        slugs: list[str],
        reason: str,
        wait: bool,
        inline: bool,
        yes: bool,
        **options,
    ) -> None:
        actor = Actor.command(f"agents {action}")
        agents = [self._agent(slug) for slug in dict.fromkeys(slugs)]
        if action in ("start", "deploy", "provision", "resume", "restart"):
            agents = services.dependency_order(agents)
        else:
            agents = list(reversed(services.dependency_order(agents)))
        failures = 0
        for agent in agents:
            try:
                operation = services.request_action(
                    agent, action, actor, reason=reason, confirm=yes,
                    with_dependencies=options.get("with_dependencies", False), enqueue=not inline,
                )  # fmt: skip
            except PermissionDenied as denied:
                raise CommandError(str(denied)) from None
            except services.ActionRefused as refused:
                self.err.print(f"[red]✗[/] {agent.slug}: {refused.message}")
                failures += 1
                continue
            if inline:
                operation = services.run_operation(str(operation.pk))
            elif wait:
                operation = self._wait(operation)
            else:
                self.console.print(f"→ {agent.slug}: {action} requested (operation {operation.pk})")
                continue
            failures += self._report(operation)
        if failures:
            raise CommandError(f"{failures} of {len(agents)} failed or were refused.")

    def _wait(self, operation: Operation) -> Operation:
        started = time.monotonic()
        hinted = False
        label = f"{operation.action} {operation.agent.slug}"
        with self.err.status(f"{label}: pending…") as status:
            while True:
                operation.refresh_from_db()
                if operation.is_finished:
                    return operation
                elapsed = time.monotonic() - started
                status.update(f"{label}: {operation.status}… {elapsed:.0f} s")
                if (
                    operation.status == Operation.Status.PENDING
                    and elapsed > PICKUP_HINT_SECONDS
                    and not hinted
                ):
                    self.err.print(
                        "[yellow]No worker has picked this up yet. Is the portal running (`manage.py up`)? "
                        "Use --inline to carry it out here.[/]"
                    )
                    hinted = True
                time.sleep(0.2)

    def _report(self, operation: Operation) -> int:
        operation.agent.refresh_from_db()
        took = (
            f" in {operation.duration_seconds:.1f} s"
            if operation.duration_seconds is not None
            else ""
        )
        if operation.status == Operation.Status.SUCCEEDED:
            self.console.print(
                f"[green]✓[/] {operation.agent.slug}: {operation.action} done{took}, now {operation.agent.state}"
            )
            return 0
        self.err.print(
            f"[red]✗[/] {operation.agent.slug}: {operation.action} failed{took}: {operation.error}"
        )
        return 1

    def _agent(self, slug: str) -> Agent:
        try:
            return services.get_agent(slug)
        except Agent.DoesNotExist as missing:
            raise CommandError(str(missing)) from None


def _summary(agent: Agent) -> dict:
    return {
        "slug": agent.slug,
        "name": agent.name,
        "state": agent.state,
        "health": agent.health,
        "pending_action": agent.pending_action or None,
        "runtime": agent.runtime,
        "version": agent.version,
        "tier": agent.tier,
    }


def _dumps(value) -> str:
    return json.dumps(value, indent=2, default=str)
