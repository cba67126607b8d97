"""``manage.py agents``: the agent registry and lifecycle for on-call engineers.

agents list [--state S] [--tier T] [--health H] [--json]
agents show <slug> [--json]
agents history <slug> [--limit N]
agents seed
agents <provision|deploy|start|stop|suspend|resume|restart|revoke> <slug>... [--wait] [--reason TEXT]
agents bulk <action> (<slug>... | --all | --state S | --tier T) [--parallel N] [--dry-run] [--yes]
            [--reason TEXT] [--inline | --no-wait] [--json]
agents bulk show <id> [--json] | list [--limit N] [--status S] [--json] | cancel <id>
agents bulk retry <id> [--parallel N] [--inline | --no-wait] [--json]
agents bulk rollback <id> [--dry-run] [--parallel N] [--inline | --no-wait] [--json]
agents errors [--open] [--agent SLUG] [--class C] [--json] | errors <show|ignore> <id>
agents errors patterns | errors stats
agents recover <error-id> <action> [--inline | --no-wait]
agents auto-recovery [on | off | status]
(the bulk subcommands live in agents/management/bulk_cli.py, the errors ones in errors_cli.py)

``--json`` prints what the API answers (``agents.schemas``); ``list --json`` a short form of it.
"""

from __future__ import annotations

from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents import services
from agents.management.bulk_cli import STATE_STYLES, BulkCommands, add_bulk_arguments
from agents.management.errors_cli import ErrorCommands, add_error_arguments
from agents.models import ACTIONS, Agent, Operation
from agents.schemas import agent_out
from portal import extensions
from portal.actors import Actor
from portal.cli import JobProgress, dumps, refusals_as_command_errors, watch_job
from portal.refusals import BadFilter

# What ``list --json`` prints of each agent (the API's fields the table shows, and the tier),
# with ``"pending_action": null`` when nothing is pending, as it always has.
LIST_FIELDS = ("slug", "name", "state", "health", "pending_action", "runtime", "version", "tier")
# The exit status for a filter that names nothing (the API answers it 400, the page names it):
# 2, a usage error, as argparse gives for an option it cannot parse.
BAD_FILTER = 2
OPERATION_POLL_SECONDS = 0.2


def publish_built_release(image_version: str, tag: str, actor: Actor) -> str:
    """After a build: publish the image ``tag`` as the fleet-wide release ``image_version``,
    unless that release exists. Servicing does it (agents may not import it), registered as the
    ``publish_built_image`` lookup; answers its sentence, or "" when no app publishes releases."""
    return extensions.lookup(
        "publish_built_image", default="", actor=actor, version=image_version, artifact=tag
    )


class Command(BulkCommands, ErrorCommands, BaseCommand):
    help = (
        "List, inspect and operate agents: list, show, history, seed, the eight lifecycle actions, "
        "bulk operations on many agents at once, errors and their one-click recoveries."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(
            dest="command",
            required=True,
            metavar="{list,show,history,seed,undo,bulk,build-image,errors,error,recover,auto-recovery,"
            + ",".join(ACTIONS)
            + "}",
        )
        listing = sub.add_parser("list", help="List agents.")
        listing.add_argument("--state", help="Only agents in this state, e.g. RUNNING.")
        listing.add_argument("--tier", help="Only agents of this tier, e.g. platform.")
        listing.add_argument("--health", help="Only agents of this health, e.g. unhealthy.")
        listing.add_argument("--json", action="store_true", help="JSON instead of a table.")
        show = sub.add_parser("show", help="Everything about one agent.")
        show.add_argument("slug")
        show.add_argument("--json", action="store_true")
        history = sub.add_parser("history", help="An agent's transitions, newest first.")
        history.add_argument("slug")
        history.add_argument("--limit", type=int, default=20)
        sub.add_parser("seed", help="Register the 14 Platform CoE agents (idempotent).")
        undo = sub.add_parser(
            "undo",
            help="Undo a recent stop, start, suspend or resume by its operation id "
            "(within ACTION_UNDO_SECONDS).",
        )
        undo.add_argument("operation_id", metavar="operation-id")
        build = sub.add_parser(
            "build-image",
            help="Build the agent image waooaw/agentd:<version> on the Docker engine and publish "
            "it as the fleet's release <version> (unless that release exists).",
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
        add_bulk_arguments(sub)
        add_error_arguments(sub)

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

    def _list(
        self, state: str | None, tier: str | None, health: str | None, json: bool, **options
    ) -> None:
        try:
            agents = Agent.objects.prefetch_related("dependencies").filtered(
                state=state, tier=tier, health=health
            )
        except BadFilter as bad:
            raise CommandError(bad.spelled(f"--{bad.field} "), returncode=BAD_FILTER) from None
        if json:
            self.stdout.write(dumps([_listed(agent) for agent in agents]))
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
        summary = agent_out(agent).model_dump() | {
            "dependents": sorted(d.slug for d in agent.dependents.all()),
            "resources": {"cpu_millicores": agent.cpu_millicores, "memory_mb": agent.memory_mb},
            "runtime_details": agent.runtime_details,
            "last_exit": agent.last_exit,
        }
        if json:
            self.stdout.write(dumps(summary))
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
        # Here, not at the top: the Docker SDK is loaded only by the command that builds.
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
        # On stderr: stdout stays the tag alone, for scripts that read it.
        published = publish_built_release(image_version, tag, Actor.command("agents build-image"))
        if published:
            self.stderr.write(published)

    def _seed(self, **options) -> None:
        created, links = services.seed_platform_agents(Actor.command("agents seed"))
        self.stdout.write(f"{created} agent(s) registered, {links} dependency link(s) added.")

    # --- acting ------------------------------------------------------------------------------

    def _undo(self, operation_id: str, **options) -> None:
        try:
            operation = Operation.objects.select_related("agent").get(pk=UUID(operation_id))
        except (ValueError, Operation.DoesNotExist):
            raise CommandError(
                f"There is no operation {operation_id!r}; `agents history <slug>` lists them."
            ) from None
        with refusals_as_command_errors():
            undone = services.undo_operation(operation, Actor.command("agents undo"))
        self.console.print(undone.message)
        if undone.operation is not None:
            self.console.print(f"→ operation {undone.operation.pk}")

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
        agents = services.in_action_order(action, agents)
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
        """A spinner (on stderr) until a worker has carried the operation out."""

        def poll() -> JobProgress:
            operation.refresh_from_db()
            return JobProgress(
                status=operation.status,
                finished=operation.is_finished,
                succeeded=operation.status == Operation.Status.SUCCEEDED,
                picked_up=operation.status != Operation.Status.PENDING,
            )

        watch_job(
            poll,
            console=self.err,
            label=f"{operation.action} {operation.agent.slug}",
            no_worker_hint="Use --inline to carry it out here.",
            poll_seconds=OPERATION_POLL_SECONDS,
        )
        return operation

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


def _listed(agent: Agent) -> dict:
    out = agent_out(agent)
    return {field: getattr(out, field) for field in LIST_FIELDS} | {
        "pending_action": out.pending_action or None
    }
