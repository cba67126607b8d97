"""``manage.py agents``: the agent registry and lifecycle for on-call engineers.

agents list [--state S] [--json]
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
(the errors subcommands live in agents/management/errors_cli.py)
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from agents import bulk, services
from agents.management.errors_cli import ErrorCommands, add_error_arguments
from agents.management.inline import InlineJob
from agents.models import ACTIONS, Agent, BulkItem, BulkOperation, Operation, State
from portal.actors import Actor

STATE_STYLES = {
    State.RUNNING: "green",
    State.ERRORED: "red",
    State.SUSPENDED: "yellow",
    State.STOPPED: "bright_black",
    State.REVOKED: "bright_black strike",
}
PICKUP_HINT_SECONDS = 10
BULK_POLL_SECONDS = 0.3
BULK_VERBS = ["show", "list", "cancel", "retry", "rollback"]
BULK_RESULT_STYLES = {
    BulkItem.Status.SUCCEEDED: "green",
    BulkItem.Status.FAILED: "red",
    BulkItem.Status.SKIPPED: "yellow",
    BulkOperation.Status.PARTIAL: "red",
    BulkOperation.Status.CANCELLED: "yellow",
}


class Command(ErrorCommands, BaseCommand):
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
        self._add_bulk_arguments(sub)
        add_error_arguments(sub)

    def _add_bulk_arguments(self, sub) -> None:
        """``agents bulk <action> ...`` and ``agents bulk <show|list|cancel|retry|rollback>``: the
        sub-verbs are not bulk actions, so one level of subcommands serves both."""
        parser = sub.add_parser(
            "bulk",
            help="One action on many agents: preview, progress bar, summary; retry, roll back.",
        )
        bulk_sub = parser.add_subparsers(
            dest="bulk_command",
            required=True,
            metavar="{" + ",".join(bulk.BULK_ACTIONS + BULK_VERBS) + "}",
        )
        parallel_help = (
            "Agents worked on at once (default BULK_DEFAULT_PARALLELISM, at most "
            "BULK_MAX_PARALLELISM)."
        )
        for action in bulk.BULK_ACTIONS:
            aliases = [action.replace("_", "-")] if "_" in action else []
            run = bulk_sub.add_parser(
                action,
                aliases=aliases,
                help=f"{bulk.BULK_ACTION_LABELS[action]} the agents named or chosen by a filter.",
            )
            run.add_argument("slugs", nargs="*", metavar="slug")
            run.add_argument("--all", dest="all_agents", action="store_true", help="Every agent.")
            run.add_argument("--state", help="Every agent in this state, e.g. ERRORED.")
            run.add_argument("--tier", help="Every agent of this tier, e.g. platform.")
            run.add_argument("--parallel", type=int, default=None, help=parallel_help)
            run.add_argument(
                "--dry-run", action="store_true", help="Show what would happen; change nothing."
            )
            run.add_argument(
                "--yes",
                action="store_true",
                help="Confirm without typing the phrase (revoke, stopping every running agent).",
            )
            run.add_argument("--reason", default="", help="Why; kept in the audit trail.")
            self._add_bulk_run_options(run)
        show = bulk_sub.add_parser("show", help="A bulk operation's status and every agent's item.")
        show.add_argument("bulk_id", type=int, metavar="id")
        show.add_argument("--json", action="store_true")
        listing = bulk_sub.add_parser("list", help="Recent bulk operations, newest first.")
        listing.add_argument("--limit", type=int, default=20)
        listing.add_argument("--status", help="Only those with this status, e.g. partial.")
        listing.add_argument("--json", action="store_true")
        cancel = bulk_sub.add_parser(
            "cancel", help="Cancel: agents in progress finish, the pending ones are skipped."
        )
        cancel.add_argument("bulk_id", type=int, metavar="id")
        retry = bulk_sub.add_parser("retry", help="Run the action again on the agents that failed.")
        retry.add_argument("bulk_id", type=int, metavar="id")
        retry.add_argument("--parallel", type=int, default=None, help=parallel_help)
        self._add_bulk_run_options(retry)
        rollback = bulk_sub.add_parser(
            "rollback", help="Return the agents a bulk operation changed to their earlier states."
        )
        rollback.add_argument("bulk_id", type=int, metavar="id")
        rollback.add_argument(
            "--dry-run", action="store_true", help="Show what would happen; change nothing."
        )
        rollback.add_argument("--parallel", type=int, default=None, help=parallel_help)
        self._add_bulk_run_options(rollback)

    @staticmethod
    def _add_bulk_run_options(parser) -> None:
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Run it in this process instead of a worker (worker down).",
        )
        parser.add_argument(
            "--no-wait", action="store_true", help="Print the operation's id and return at once."
        )
        parser.add_argument(
            "--json", action="store_true", help="JSON instead of tables (preview or summary)."
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

    def _undo(self, operation_id: str, **options) -> None:
        try:
            operation = Operation.objects.select_related("agent").get(pk=UUID(operation_id))
        except (ValueError, Operation.DoesNotExist):
            raise CommandError(
                f"There is no operation {operation_id!r}; `agents history <slug>` lists them."
            ) from None
        try:
            undone = services.undo_operation(operation, Actor.command("agents undo"))
        except PermissionDenied as denied:
            raise CommandError(str(denied)) from None
        except services.ActionRefused as refused:
            raise CommandError(refused.message) from None
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

    # --- bulk operations ---------------------------------------------------------------------

    def _bulk(self, bulk_command: str, **options) -> None:
        verb = bulk_command.replace("-", "_")
        if verb in bulk.BULK_ACTIONS:
            self._bulk_run(verb, **options)
        else:
            getattr(self, f"_bulk_{verb}")(**options)

    def _bulk_run(
        self,
        action: str,
        slugs: list[str],
        all_agents: bool,
        state: str | None,
        tier: str | None,
        parallel: int | None,
        dry_run: bool,
        yes: bool,
        reason: str,
        inline: bool,
        no_wait: bool,
        json: bool,
        **options,
    ) -> None:
        _check_wait_options(inline, no_wait)
        actor = Actor.command(f"agents bulk {action}")
        choice = {"targets": slugs, "filter": _bulk_filter(all_agents, state, tier)}
        plan = _bulk_call(bulk.preview_bulk, action, actor, parallelism=parallel, **choice)
        if dry_run:
            self._print_plan(plan, json=json)
            return
        confirm = self._confirm(plan, yes)
        operation = _bulk_call(
            bulk.create_bulk_operation, action, actor, parallelism=parallel, confirm=confirm,
            reason=reason, enqueue=not inline, **choice,
        )  # fmt: skip
        self._follow(operation, actor, inline=inline, no_wait=no_wait, json=json)

    def _bulk_show(self, bulk_id: int, json: bool, **options) -> None:
        operation = _bulk_operation(bulk_id)
        summary = bulk.bulk_summary(operation)
        summary["estimate_seconds_left"] = bulk.estimate_seconds_left(operation)
        if json:
            self.stdout.write(_dumps(summary))
            return
        self._print_summary(summary)

    def _bulk_list(self, limit: int, status: str | None, json: bool, **options) -> None:
        operations = BulkOperation.objects.all()
        if status:
            if status.lower() not in BulkOperation.Status.values:
                raise CommandError(
                    f"--status {status!r} is not a bulk status; use one of "
                    f"{', '.join(BulkOperation.Status.values)}."
                )
            operations = operations.filter(status=status.lower())
        operations = list(operations[: max(1, limit)])
        if json:
            self.stdout.write(_dumps([_bulk_row(operation) for operation in operations]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "ACTION", "KIND", "STATUS", "DONE", "FAILED", "SKIPPED", "BY", "WHEN"):
            table.add_column(column)
        for operation in operations:
            table.add_row(
                str(operation.pk), operation.action, operation.kind,
                Text(operation.status, style=BULK_RESULT_STYLES.get(operation.status, "")),
                f"{operation.done}/{operation.total}", str(operation.failed),
                str(operation.skipped), operation.actor, f"{operation.requested_at:%Y-%m-%d %H:%M:%S}",
            )  # fmt: skip
        self.console.print(table)

    def _bulk_cancel(self, bulk_id: int, **options) -> None:
        operation = _bulk_operation(bulk_id)
        operation = _bulk_call(
            bulk.cancel_bulk_operation, operation, Actor.command("agents bulk cancel")
        )
        if operation.is_finished:
            self.console.print(
                f"Bulk operation #{operation.pk} {operation.status}: nothing was running it, "
                "its pending agents are skipped."
            )
        else:
            self.console.print(
                f"Bulk operation #{operation.pk}: cancel requested; agents in progress finish, "
                "the pending ones are skipped."
            )

    def _bulk_retry(
        self, bulk_id: int, parallel: int | None, inline: bool, no_wait: bool, json: bool, **options
    ) -> None:
        _check_wait_options(inline, no_wait)
        actor = Actor.command("agents bulk retry")
        operation = _bulk_call(
            bulk.retry_failed, _bulk_operation(bulk_id), actor, parallelism=parallel,
            enqueue=not inline,
        )  # fmt: skip
        self._follow(operation, actor, inline=inline, no_wait=no_wait, json=json)

    def _bulk_rollback(
        self,
        bulk_id: int,
        dry_run: bool,
        parallel: int | None,
        inline: bool,
        no_wait: bool,
        json: bool,
        **options,
    ) -> None:
        _check_wait_options(inline, no_wait)
        original = _bulk_operation(bulk_id)
        if dry_run:
            plan = _bulk_call(bulk.plan_rollback, original, parallelism=parallel)
            self._print_plan(plan, json=json)
            return
        actor = Actor.command("agents bulk rollback")
        operation = _bulk_call(
            bulk.roll_back, original, actor, parallelism=parallel, enqueue=not inline
        )
        self._follow(operation, actor, inline=inline, no_wait=no_wait, json=json)

    def _confirm(self, plan: bulk.BulkPlan, yes: bool) -> str:
        """The typed phrase a dangerous plan needs: asked for at a terminal, implied by --yes."""
        phrase = plan.confirmation_phrase
        if not phrase or yes:
            return phrase
        count = len(plan.changing)
        if not sys.stdin.isatty():
            raise CommandError(
                f"This {plan.label.lower()} changes {count} agents and must be confirmed by typing "
                f"“{phrase}”; run it at a terminal, or pass --yes. Nothing was done."
            )
        self._print_plan(plan, console=self.err)
        self.err.print(f"Type “{phrase}” to confirm: ", end="")
        try:
            typed = input()
        except EOFError:
            typed = ""
        if typed.strip().lower() != phrase:
            raise CommandError(f"Not confirmed (“{phrase}” was not typed); nothing was done.")
        return phrase

    def _follow(
        self,
        operation: BulkOperation,
        actor: Actor,
        *,
        inline: bool,
        no_wait: bool,
        json: bool,
    ) -> None:
        """Return at once (--no-wait), or watch the operation to its end and report on it."""
        if no_wait:
            self.stdout.write(str(operation.pk))
            self.err.print(
                f"Bulk operation #{operation.pk} ({operation.action}) queued; "
                f"`manage.py agents bulk show {operation.pk}` follows it."
            )
            return
        runner = (
            InlineJob(f"bulk-{operation.pk}-inline", partial(bulk.run_bulk_operation, operation.pk))
            if inline
            else None
        )
        if runner is not None:
            runner.start()
        operation = self._watch(operation, actor, runner)
        summary = bulk.bulk_summary(operation)
        if json:
            self.stdout.write(_dumps(summary))
        else:
            self._print_summary(summary)
        if operation.status != BulkOperation.Status.SUCCEEDED:
            raise CommandError(
                f"Bulk operation #{operation.pk} {operation.get_status_display().lower()}: "
                f"{_totals(summary)}"
                + (
                    f" `manage.py agents bulk retry {operation.pk}` retries the failed ones."
                    if operation.failed
                    else ""
                )
            )

    def _watch(
        self, operation: BulkOperation, actor: Actor, runner: InlineJob | None
    ) -> BulkOperation:
        """A progress bar (on stderr) until the operation finishes, from the database."""
        label = _bulk_title(operation.pk, operation.action, operation.kind, operation.follows_id)
        started = time.monotonic()
        hinted = cancelling = False
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.err,
        )
        with progress:
            task = progress.add_task(label, total=operation.total or 1, counts="")
            while True:
                try:
                    operation.refresh_from_db()
                    progress.update(
                        task,
                        completed=operation.done,
                        description=f"{label}: {operation.status}",
                        counts=_progress_counts(operation),
                    )
                    if operation.is_finished:
                        break
                    if runner is not None and runner.error is not None:
                        break
                    elapsed = time.monotonic() - started
                    if (
                        runner is None
                        and operation.status == BulkOperation.Status.PENDING
                        and elapsed > PICKUP_HINT_SECONDS
                        and not hinted
                    ):
                        progress.console.print(
                            "[yellow]No worker has picked this up yet. Is the portal running "
                            "(`manage.py up`)? Use --inline to run it here.[/]"
                        )
                        hinted = True
                    time.sleep(BULK_POLL_SECONDS)
                except KeyboardInterrupt:
                    if runner is None or cancelling:
                        raise CommandError(
                            f"Stopped watching bulk operation #{operation.pk}; it goes on. "
                            f"`manage.py agents bulk show {operation.pk}` follows it, "
                            f"`agents bulk cancel {operation.pk}` stops it."
                        ) from None
                    # This process is the runner: cancel, and let the agents in progress finish.
                    progress.console.print(
                        "[yellow]Cancelling: agents in progress finish, the rest are skipped. "
                        "Ctrl-C again to stop watching.[/]"
                    )
                    _bulk_call(bulk.cancel_bulk_operation, operation, actor)
                    cancelling = True
        if runner is not None:
            runner.join()
            if runner.error is not None:
                raise CommandError(
                    f"Bulk operation #{operation.pk} stopped on an unexpected error: "
                    f"{runner.error!r}; `manage.py agents bulk show {operation.pk}` shows where."
                )
        return operation

    def _print_plan(
        self, plan: bulk.BulkPlan, *, json: bool = False, console: Console | None = None
    ) -> None:
        if json:
            self.stdout.write(_dumps(plan.as_dict()))
            return
        console = console or self.console
        console.print(
            f"{plan.label}: {len(plan.changing)} will change, {len(plan.skipped)} skipped; "
            f"parallelism {plan.parallelism}."
        )
        table = Table(box=None, header_style="bold")
        for column in ("AGENT", "STATE", "STEPS", "RESULT", "AFFECTED DEPENDENTS"):
            table.add_column(column)
        for item in plan.items:
            if item.will_change:
                result = Text(f"→ {item.to_state}", style="green")
            else:
                result = Text(f"skip ({item.code}): {item.message}", style="yellow")
            table.add_row(
                item.agent.slug,
                Text(item.agent.state, style=STATE_STYLES.get(item.agent.state, "")),
                " → ".join(item.steps) or "-",
                result,
                ", ".join(a.slug for a in item.affected_dependents) or "-",
            )
        console.print(table)
        if plan.affected_dependents:
            console.print(
                "Running agents that lose a dependency: "
                + ", ".join(a.slug for a in plan.affected_dependents)
                + "."
            )
        if plan.confirmation_phrase:
            console.print(f"Needs typed confirmation: “{plan.confirmation_phrase}” (or --yes).")

    def _print_summary(self, summary: dict) -> None:
        table = Table(box=None, header_style="bold")
        for column in ("AGENT", "RESULT", "STEPS", "STATE", "SECONDS", "ERROR / SKIP REASON"):
            table.add_column(column)
        for item in summary["items"]:
            steps = " → ".join(item["steps"]) or "-"
            if item["steps"] and item["steps_done"] < len(item["steps"]):
                steps += f" ({item['steps_done']}/{len(item['steps'])} done)"
            seconds = item["duration_seconds"]
            table.add_row(
                item["agent"],
                Text(item["status"], style=BULK_RESULT_STYLES.get(item["status"], "")),
                steps,
                item["to_state"] or item["from_state"],
                "-" if seconds is None else f"{seconds:.1f}",
                item["message"] or "",
            )
        self.console.print(table)
        title = _bulk_title(summary["id"], summary["action"], summary["kind"], summary["follows"])
        self.console.print(f"{title}: {summary['status']}; {_totals(summary)}")

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


def _bulk_call(function, *args, **kwargs):
    """Call a bulk service; a refusal becomes a CommandError with its sentence."""
    try:
        return function(*args, **kwargs)
    except PermissionDenied as denied:
        raise CommandError(str(denied)) from None
    except services.ActionRefused as refused:
        raise CommandError(refused.message) from None


def _bulk_filter(all_agents: bool, state: str | None, tier: str | None) -> dict:
    chosen: dict = {"all": True} if all_agents else {}
    if state:
        chosen["state"] = state
    if tier:
        chosen["tier"] = tier
    return chosen


def _check_wait_options(inline: bool, no_wait: bool) -> None:
    if inline and no_wait:
        raise CommandError(
            "--inline runs the operation in this process, which must wait for it: "
            "drop --no-wait (or --inline, to hand it to a worker)."
        )


def _bulk_operation(bulk_id: int) -> BulkOperation:
    try:
        return BulkOperation.objects.get(pk=bulk_id)
    except BulkOperation.DoesNotExist:
        raise CommandError(
            f"There is no bulk operation #{bulk_id}; `manage.py agents bulk list` lists them."
        ) from None


def _bulk_row(operation: BulkOperation) -> dict:
    return {
        "id": operation.pk,
        "action": operation.action,
        "kind": operation.kind,
        "status": operation.status,
        "total": operation.total,
        "succeeded": operation.succeeded,
        "failed": operation.failed,
        "skipped": operation.skipped,
        "actor": operation.actor,
        "requested_at": operation.requested_at,
        "duration_seconds": operation.duration_seconds,
    }


def _progress_counts(operation: BulkOperation) -> str:
    text = (
        f"[green]✓ {operation.succeeded}[/] [red]✗ {operation.failed}[/] "
        f"[yellow]↷ {operation.skipped}[/]"
    )
    left = bulk.estimate_seconds_left(operation)
    return text + (f" ~{left:.0f} s left" if left else "")


def _bulk_title(pk: int, action: str, kind: str, follows: int | None) -> str:
    """ "#7 Deploy and start", "#8 Deploy and start (retry of #7)", "#9 Roll back of #7"."""
    title = f"#{pk} {bulk.BULK_ACTION_LABELS.get(action, action)}"
    if kind == BulkOperation.Kind.RETRY:
        return f"{title} (retry of #{follows})"
    if kind == BulkOperation.Kind.ROLLBACK:
        return f"{title} of #{follows}"
    return title


def _totals(summary: dict) -> str:
    counts = summary["counts"]
    took = summary["duration_seconds"]
    return (
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, {counts['skipped']} skipped "
        f"of {counts['total']}" + (f" in {took:.1f} s." if took is not None else ".")
    )


def _dumps(value) -> str:
    return json.dumps(value, indent=2, default=str)
