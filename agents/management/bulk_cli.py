"""``manage.py agents bulk`` subcommands: one action on many agents (mixed into the command).

agents bulk <action> (<slug>... | --all | --state S | --tier T) [--parallel N] [--dry-run] [--yes]
            [--reason TEXT] [--inline | --no-wait] [--json]
agents bulk show <id> [--json] | list [--limit N] [--status S] [--json] | cancel <id>
agents bulk retry <id> [--parallel N] [--inline | --no-wait] [--json]
agents bulk rollback <id> [--dry-run] [--parallel N] [--inline | --no-wait] [--json]

A run previews, asks for the typed confirmation a dangerous plan needs, then watches the job
with a progress bar and prints a summary; the exit status is non-zero unless every agent
succeeded. ``--json`` prints what the API answers (``agents.schemas``).
"""

from __future__ import annotations

import sys
from functools import partial

from django.core.management.base import CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents import bulk
from agents.models import BulkItem, BulkOperation, State
from agents.schemas import BulkOut, bulk_out, bulk_row_out, plan_out
from portal.actors import Actor
from portal.cli import InlineJob, JobProgress, dumps, refusals_as_command_errors, watch_job

STATE_STYLES = {
    State.RUNNING: "green",
    State.ERRORED: "red",
    State.SUSPENDED: "yellow",
    State.STOPPED: "bright_black",
    State.REVOKED: "bright_black strike",
}
BULK_POLL_SECONDS = 0.3
BULK_VERBS = ["show", "list", "cancel", "retry", "rollback"]
BULK_RESULT_STYLES = {
    BulkItem.Status.SUCCEEDED: "green",
    BulkItem.Status.FAILED: "red",
    BulkItem.Status.SKIPPED: "yellow",
    BulkOperation.Status.PARTIAL: "red",
    BulkOperation.Status.CANCELLED: "yellow",
}
PARALLEL_HELP = (
    "Agents worked on at once (default BULK_DEFAULT_PARALLELISM, at most BULK_MAX_PARALLELISM)."
)


def add_bulk_arguments(sub) -> None:
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
        run.add_argument("--parallel", type=int, default=None, help=PARALLEL_HELP)
        run.add_argument(
            "--dry-run", action="store_true", help="Show what would happen; change nothing."
        )
        run.add_argument(
            "--yes",
            action="store_true",
            help="Confirm without typing the phrase (revoke, stopping every running agent).",
        )
        run.add_argument("--reason", default="", help="Why; kept in the audit trail.")
        _add_run_options(run)
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
    retry.add_argument("--parallel", type=int, default=None, help=PARALLEL_HELP)
    _add_run_options(retry)
    rollback = bulk_sub.add_parser(
        "rollback", help="Return the agents a bulk operation changed to their earlier states."
    )
    rollback.add_argument("bulk_id", type=int, metavar="id")
    rollback.add_argument(
        "--dry-run", action="store_true", help="Show what would happen; change nothing."
    )
    rollback.add_argument("--parallel", type=int, default=None, help=PARALLEL_HELP)
    _add_run_options(rollback)


def _add_run_options(parser) -> None:
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


class BulkCommands:
    """The handlers; ``Command.handle`` dispatches ``bulk`` to ``_bulk``."""

    console: Console
    err: Console

    def _bulk(self, bulk_command: str, **options) -> None:
        verb = bulk_command.replace("-", "_")
        if verb in bulk.BULK_ACTIONS:
            self._bulk_run(verb, **options)
        else:
            getattr(self, f"_bulk_{verb}")(**options)

    # --- running -------------------------------------------------------------------------------

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
        with refusals_as_command_errors():
            plan = bulk.preview_bulk(action, actor, parallelism=parallel, **choice)
        if dry_run:
            self._print_plan(plan, json=json)
            return
        confirm = self._confirm(plan, yes)
        with refusals_as_command_errors():
            operation = bulk.create_bulk_operation(
                action, actor, parallelism=parallel, confirm=confirm, reason=reason,
                enqueue=not inline, **choice,
            )  # fmt: skip
        self._follow(operation, actor, inline=inline, no_wait=no_wait, json=json)

    def _bulk_retry(
        self, bulk_id: int, parallel: int | None, inline: bool, no_wait: bool, json: bool, **options
    ) -> None:
        _check_wait_options(inline, no_wait)
        actor = Actor.command("agents bulk retry")
        with refusals_as_command_errors():
            operation = bulk.retry_failed(
                _bulk_operation(bulk_id), actor, parallelism=parallel, enqueue=not inline
            )
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
            with refusals_as_command_errors():
                plan = bulk.plan_rollback(original, parallelism=parallel)
            self._print_plan(plan, json=json)
            return
        actor = Actor.command("agents bulk rollback")
        with refusals_as_command_errors():
            operation = bulk.roll_back(original, actor, parallelism=parallel, enqueue=not inline)
        self._follow(operation, actor, inline=inline, no_wait=no_wait, json=json)

    def _bulk_cancel(self, bulk_id: int, **options) -> None:
        with refusals_as_command_errors():
            operation = bulk.cancel_bulk_operation(
                _bulk_operation(bulk_id), Actor.command("agents bulk cancel")
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
        self, operation: BulkOperation, actor: Actor, *, inline: bool, no_wait: bool, json: bool
    ) -> None:
        """Return at once (--no-wait), or watch the operation to its end and report on it."""
        if no_wait:
            self.stdout.write(str(operation.pk))
            self.err.print(
                f"Bulk operation #{operation.pk} ({operation.action}) queued; "
                f"`manage.py agents bulk show {operation.pk}` follows it."
            )
            return
        runner = None
        if inline:
            runner = InlineJob(
                f"bulk-{operation.pk}-inline", partial(bulk.run_bulk_operation, operation.pk)
            )
            runner.start()
        exit_status = self._watch(operation, actor, runner)
        summary = bulk_out(operation)
        if json:
            self.stdout.write(dumps(summary))
        else:
            self._print_summary(summary)
        if exit_status:
            raise CommandError(
                f"Bulk operation #{operation.pk} {operation.get_status_display().lower()}: "
                f"{_totals(summary)}"
                + (
                    f" `manage.py agents bulk retry {operation.pk}` retries the failed ones."
                    if operation.failed
                    else ""
                )
            )

    def _watch(self, operation: BulkOperation, actor: Actor, runner: InlineJob | None) -> int:
        """A progress bar (on stderr) until the operation finishes; its exit status. The first
        Ctrl-C cancels an operation this process runs, the next stops watching."""
        cancelling = False

        def poll() -> JobProgress:
            operation.refresh_from_db()
            return JobProgress(
                status=operation.status,
                finished=operation.is_finished or (runner is not None and runner.error is not None),
                succeeded=operation.status == BulkOperation.Status.SUCCEEDED,
                picked_up=runner is not None or operation.status != BulkOperation.Status.PENDING,
                done=operation.done,
                total=operation.total,
                counts=_progress_counts(operation),
            )

        def cancel() -> bool:
            nonlocal cancelling
            if runner is None or cancelling:
                return False
            self.err.print(
                "[yellow]Cancelling: agents in progress finish, the rest are skipped. "
                "Ctrl-C again to stop watching.[/]"
            )
            with refusals_as_command_errors():
                bulk.cancel_bulk_operation(operation, actor)
            cancelling = True
            return True

        try:
            exit_status = watch_job(
                poll,
                console=self.err,
                label=_bulk_title(
                    operation.pk, operation.action, operation.kind, operation.follows_id
                ),
                no_worker_hint="Use --inline to run it here.",
                on_interrupt=cancel,
                poll_seconds=BULK_POLL_SECONDS,
            )
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped watching bulk operation #{operation.pk}; it goes on. "
                f"`manage.py agents bulk show {operation.pk}` follows it, "
                f"`agents bulk cancel {operation.pk}` stops it."
            ) from None
        if runner is not None and (error := runner.finish()) is not None:
            raise CommandError(
                f"Bulk operation #{operation.pk} stopped on an unexpected error: "
                f"{error!r}; `manage.py agents bulk show {operation.pk}` shows where."
            )
        return exit_status

    # --- reading -------------------------------------------------------------------------------

    def _bulk_show(self, bulk_id: int, json: bool, **options) -> None:
        summary = bulk_out(_bulk_operation(bulk_id))
        if json:
            self.stdout.write(dumps(summary))
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
            self.stdout.write(dumps([bulk_row_out(operation) for operation in operations]))
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

    def _print_plan(
        self, plan: bulk.BulkPlan, *, json: bool = False, console: Console | None = None
    ) -> None:
        if json:
            self.stdout.write(dumps(plan_out(plan)))
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

    def _print_summary(self, summary: BulkOut) -> None:
        table = Table(box=None, header_style="bold")
        for column in ("AGENT", "RESULT", "STEPS", "STATE", "SECONDS", "ERROR / SKIP REASON"):
            table.add_column(column)
        for item in summary.items:
            steps = " → ".join(item.steps) or "-"
            if item.steps and item.steps_done < len(item.steps):
                steps += f" ({item.steps_done}/{len(item.steps)} done)"
            seconds = item.duration_seconds
            table.add_row(
                item.agent,
                Text(item.status, style=BULK_RESULT_STYLES.get(item.status, "")),
                steps,
                item.to_state or item.from_state,
                "-" if seconds is None else f"{seconds:.1f}",
                item.message or "",
            )
        self.console.print(table)
        title = _bulk_title(summary.id, summary.action, summary.kind, summary.follows)
        self.console.print(f"{title}: {summary.status}; {_totals(summary)}")


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


def _totals(summary: BulkOut) -> str:
    counts = summary.counts
    took = summary.duration_seconds
    return (
        f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.skipped} skipped "
        f"of {counts.total}" + (f" in {took:.1f} s." if took is not None else ".")
    )
